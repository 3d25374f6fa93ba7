"""DeepLabv3 on Cityscapes (Chen et al. 2017, Appendix C).

Schedule reproduced: the VOC protocol (ResNet-101, multi-grid (1, 2, 4), batch 16,
lr 0.007 poly 0.9, OS16 training with BN decay 0.9997, scale 0.5-2.0, flip) with 90K
iterations and crop 769 on the 2,975 train_fine images; whole-image inference at
OS8 on the 500 val images. Reported val mIoU: 77.23 (OS16), 77.82 (OS8),
79.30 (OS8 + scales {0.75, 1, 1.25} + flip).

  --config configs/deeplabv3_cityscapes.py      single-scale evaluation
  --config configs/deeplabv3_cityscapes.py:ms   scales {0.75, 1, 1.25} + flip
"""
from jaxseg.config import base_config


def get_config(variant=""):
  c = base_config()
  c.dataset.name = "cityscapes"
  c.dataset.train_split = "train"
  c.dataset.eval_split = "val"
  c.dataset.num_classes = 19
  c.input.crop_size = (769, 769)
  c.input.scale_range = (0.5, 2.0)
  c.input.scale_step = 0.25
  c.input.photometric = False
  c.input.cat_max_ratio = 1.0
  c.input.eval_size = (1024, 2048)
  c.model.backbone.depth = 101
  c.model.backbone.stem = "7x7"
  c.model.backbone.output_stride = 16
  c.model.backbone.multi_grid = (1, 2, 4)
  c.model.eval_output_stride = 8
  c.model.aux_head = False
  c.model.bn_momentum = 0.9997
  c.optim.lr = 0.007
  c.optim.power = 0.9
  c.optim.weight_decay = 1e-4
  c.train.batch_size = 16
  c.train.steps = 90000
  c.train.eval_every = 10000
  c.train.ckpt_every = 2000
  c.eval.mode = "whole"  # the paper runs inference on the whole image
  c.eval.batch_size = 2
  if variant == "ms":
    c.eval.scales = (0.75, 1.0, 1.25)
    c.eval.flip = True
  elif variant:
    raise ValueError(f"unknown variant '{variant}' of configs/deeplabv3_cityscapes.py (known: ms)")
  return c
