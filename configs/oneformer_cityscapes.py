"""OneFormer on Cityscapes (Jain et al., CVPR 2023, "OneFormer: One Transformer to Rule
Universal Image Segmentation"), trained once, evaluated on all three tasks.

Schedule reproduced (the authors' configs/cityscapes/oneformer_R50_bs16_90k.yaml and
Base-Cityscapes-UnifiedSegmentation.yaml): R-50 with SyncBN (BatchNorm over the global
batch), 150 queries, 90K iterations at batch 16, AdamW lr 1e-4, weight decay 0.05,
backbone lr x0.1, poly 0.9, gradient clipping 0.01 (jaxseg.presets.oneformer); the short
side drawn from {int(0.1 x 1024 x k), k = 5..20} (512..2048) under a long side of 4096,
a 512 x 1024 crop, SSD colour augmentation, flip; the task drawn per image. Evaluation
on the 500 val images at full resolution (1024 x 2048), single scale: PQ (object mask
threshold 0.8, overlap 0.8), mask AP and mIoU. Reported (the authors' README, Swin-L,
PQ / AP / mIoU ss / ms+flip): 67.2 / 45.6 / 83.0 / 84.4.

Variants (--config configs/oneformer_cityscapes.py:NAME): `:swin_l` the authors' Swin-L
config (oneformer_swin_large_bs16_90k.yaml: 250 queries); `:tiny` the smoke variant on
panoptic `shapes`.
"""
from jaxseg import presets
from jaxseg.config import base_config


def get_config(variant=""):
  c = base_config()
  presets.oneformer(c, "cityscapes/panoptic", 19, steps=90000, object_mask_threshold=0.8)
  c.train.frozen_bn = ()  # NORM: SyncBN
  c.input.update(dict(crop_size=(512, 1024), scale_mode="short_side", short_side_range=(512, 2048),
                      short_side_step=102.4, max_long_side=4096, eval_size=(1024, 2048),
                      eval_label_size=(1024, 2048)))
  return presets.variants(c, variant, "configs/oneformer_cityscapes.py",
                          {"swin_l": lambda c: presets.oneformer_swin_l(c, queries=250),
                           "tiny": presets.oneformer_tiny})
