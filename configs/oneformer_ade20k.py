"""OneFormer on ADE20K panoptic (Jain et al., CVPR 2023, "OneFormer: One Transformer to
Rule Universal Image Segmentation"), trained once, evaluated on all three tasks.

Schedule reproduced (the authors' configs/ade20k/oneformer_R50_bs16_160k.yaml and
Base-ADE20K-UnifiedSegmentation.yaml): R-50, 150 queries, 160K iterations at batch 16,
AdamW lr 1e-4, weight decay 0.05, backbone lr x0.1, poly 0.9, gradient clipping 0.01
(jaxseg.presets.oneformer); the short side drawn from {int(0.1 x 512 x k), k = 5..20}
(256..1024) under a long side of 2048, a 512 x 512 crop, SSD colour augmentation, flip;
the task drawn per image (semantic / instance / panoptic, 1/3 each). Evaluation on the
2,000 val images resized to short side 512 (long side <= 2048) and scored at their
stored size (the mask logits resized back before the inference, as the authors'
sem_seg_postprocess), single scale: PQ
(object mask threshold 0.5, overlap 0.8: ADE20K's), mask AP and mIoU. Reported (the
authors' README, Swin-L at 640 x 640, PQ / AP / mIoU ss / ms+flip): 49.8 / 35.9 / 57.0 / 57.7.

Variants (--config configs/oneformer_ade20k.py:NAME): `:swin_l` the authors' Swin-L
config (oneformer_swin_large_bs16_160k.yaml: 250 queries, crop 640 x 640, short side
320..1280 under 2560, test short side 640); `:tiny` the smoke variant on panoptic
`shapes`.
"""
from jaxseg import presets
from jaxseg.config import base_config


def ade20k_input(c, size):
  """Short side in {0.1 x size x k : k = 5..20} (the authors' "choice"), long side <= 4
  size, a size x size crop; evaluation at short side size, long side <= 4 size, scored
  at the stored size (the ground truth on the semantic ADE20K configs' 2048 x 2048 label
  canvas, jaxseg.presets.dataset)."""
  c.input.update(dict(crop_size=(size, size), scale_mode="short_side", short_side_range=(size // 2, 2 * size),
                      short_side_step=size / 10, max_long_side=4 * size, eval_short_side=size,
                      eval_long_side=4 * size, eval_size=(4 * size, 4 * size),
                      eval_label_size=(2048, 2048)))


def swin_l(c):
  presets.oneformer_swin_l(c, queries=250)
  ade20k_input(c, 640)


def get_config(variant=""):
  c = base_config()
  presets.oneformer(c, "ade20k_panoptic", 150, steps=160000, object_mask_threshold=0.5)
  ade20k_input(c, 512)
  return presets.variants(c, variant, "configs/oneformer_ade20k.py",
                          {"swin_l": swin_l, "tiny": presets.oneformer_tiny})
