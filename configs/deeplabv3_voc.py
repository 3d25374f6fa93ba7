"""DeepLabv3 on PASCAL VOC 2012 (Chen et al. 2017, "Rethinking Atrous Convolution").

Schedule reproduced (paper Sec. 4): ResNet-101, multi-grid (1, 2, 4), train_aug
(10,582 images), batch 16, crop 513, SGD momentum 0.9, lr 0.007 with poly 0.9,
30K iterations at output stride 16 with BN trained (decay 0.9997), random scale
0.5-2.0 in steps of 0.25 and flip; evaluation at output stride 8 on the 1,449 val
images. Reported val mIoU: 77.21 (OS16), 78.51 (OS8), 79.45 (+ms), 79.77 (+flip).

  --config configs/deeplabv3_voc.py        single-scale evaluation
  --config configs/deeplabv3_voc.py:ms     scales {0.5, ..., 1.75} + flip
"""
from jaxseg.config import base_config


def get_config(variant=""):
  c = base_config()
  c.dataset.name = "voc_aug"
  c.dataset.train_split = "train_aug"
  c.dataset.eval_split = "val"
  c.dataset.num_classes = 21
  c.input.crop_size = (513, 513)
  c.input.scale_range = (0.5, 2.0)
  c.input.scale_step = 0.25
  c.input.photometric = False  # the paper uses scale + flip only
  c.input.cat_max_ratio = 1.0
  c.input.eval_size = (513, 513)  # VOC images are at most 500x500
  c.model.backbone.depth = 101
  c.model.backbone.stem = "7x7"  # the original ResNet the paper fine-tunes
  c.model.backbone.output_stride = 16
  c.model.backbone.multi_grid = (1, 2, 4)
  c.model.eval_output_stride = 8
  c.model.aux_head = False  # DeepLabv3 has no auxiliary loss
  c.model.bn_momentum = 0.9997
  c.optim.lr = 0.007
  c.optim.power = 0.9
  c.optim.weight_decay = 1e-4
  c.train.batch_size = 16
  c.train.steps = 30000
  c.train.eval_every = 5000
  c.train.ckpt_every = 1000
  c.eval.batch_size = 8
  if variant == "ms":
    c.eval.scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    c.eval.flip = True
  elif variant:
    raise ValueError(f"unknown variant '{variant}' of configs/deeplabv3_voc.py (known: ms)")
  return c
