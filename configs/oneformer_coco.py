"""OneFormer on COCO panoptic (Jain et al., CVPR 2023, "OneFormer: One Transformer to
Rule Universal Image Segmentation"), trained once, evaluated on all three tasks.

Schedule reproduced (the authors' configs/coco/oneformer_R50_bs16_50ep.yaml and
Base-COCO-UnifiedSegmentation.yaml): R-50, 150 queries, 368,750 iterations at batch 16
(50 epochs), AdamW lr 1e-4, weight decay 0.05, backbone lr x0.1, gradient clipping 0.01
(jaxseg.presets.oneformer), but a step schedule, not poly: detectron2's default
WarmupMultiStepLR, lr x0.1 at 327,778 and 355,092 (the config's STEPS), the 10 warmup
steps at factor 1.0 (no change); large-scale jitter: scale 0.1..2.0 of the fit into
1024 x 1024, a 1024 x 1024 crop, flip (no colour augmentation); the task drawn per
image. Evaluation on the 5,000 val images resized to short side 800, long side <= 1333
(detectron2's test size) and scored at their stored size (at most 640 x 640,
input.eval_label_size: the mask logits resized back before the inference, as the
authors' sem_seg_postprocess), single scale: PQ (object mask threshold 0.8, overlap 0.8),
mask AP and mIoU. Reported (the authors' README, Swin-L, 100 epochs, PQ / PQth / PQst /
AP / mIoU): 57.9 / 64.4 / 48.0 / 49.0 / 67.4.

Variants (--config configs/oneformer_coco.py:NAME): `:swin_l` the authors' Swin-L config
(oneformer_swin_large_bs16_100ep.yaml: 150 queries, 737,500 iterations, lr x0.1 at
655,556 and 735,184); `:tiny` the smoke variant on panoptic `shapes`.
"""
from jaxseg import presets
from jaxseg.config import base_config


def swin_l(c):
  presets.oneformer_swin_l(c, queries=150)
  c.train.steps = 737500
  c.optim.decay_steps = (655556, 735184)


def tiny(c):
  """presets.oneformer_tiny with COCO's step schedule at the same fractions of its 1,000
  steps (set optim.decay_steps with train.steps)."""
  presets.oneformer_tiny(c)
  c.optim.update(dict(schedule="step", decay_steps=(890, 960)))


def get_config(variant=""):
  c = base_config()
  presets.oneformer(c, "coco_panoptic", 133, steps=368750, object_mask_threshold=0.8)
  c.optim.update(dict(schedule="step", decay_steps=(327778, 355092), decay_gamma=0.1))
  c.input.update(dict(crop_size=(1024, 1024), scale_mode="fit", scale_range=(0.1, 2.0), scale_step=0.0,
                      photometric=False, eval_short_side=800, eval_long_side=1333, eval_size=(1344, 1344),
                      eval_label_size=(640, 640)))
  return presets.variants(c, variant, "configs/oneformer_coco.py", {"swin_l": swin_l, "tiny": tiny})
