"""PSPNet on Cityscapes (Zhao et al. 2017, "Pyramid Scene Parsing Network").

Schedule reproduced (paper and author code): ResNet-101 with the deep stem,
dilated to output stride 8; pyramid pooling with average pools to bins (1, 2, 3, 6),
each reduced to 512 channels; auxiliary FCN loss on layer3 with weight 0.4; SGD
momentum 0.9, lr 0.01 with poly 0.9, weight decay 1e-4, batch 16 with SyncBN (global
BN here), crop 713, 90K iterations on the 2,975 fine train images; random scale
0.5-2.0 and flip. Not reproduced: random rotation (+-10 degrees) and Gaussian blur,
which the pipeline does not implement. Evaluation by sliding 713 windows (stride 2/3
of the window) over the full 1024x2048 val images (500, 19 classes).
Reported val mIoU (author code, ss / ms): PSP-101 78.63 / 79.29 (PSP-50 77.30 / 78.38
with --config.model.backbone.depth=50).

  --config configs/pspnet_cityscapes.py        single-scale evaluation
  --config configs/pspnet_cityscapes.py:ms     scales {0.5, ..., 1.75} + flip
  --config configs/pspnet_cityscapes.py:tiny   smoke variant: the same head, tiny, on `shapes`
"""
from jaxseg.config import base_config, tiny_variant


def get_config(variant=""):
  c = base_config()
  c.dataset.name = "cityscapes"
  c.dataset.train_split = "train"
  c.dataset.eval_split = "val"
  c.dataset.num_classes = 19
  c.input.crop_size = (713, 713)
  c.input.scale_range = (0.5, 2.0)
  c.input.scale_step = 0.0
  c.input.photometric = False
  c.input.cat_max_ratio = 1.0
  c.input.eval_size = (1024, 2048)
  c.model.backbone.depth = 101
  c.model.backbone.stem = "deep"
  c.model.backbone.output_stride = 8
  c.model.backbone.multi_grid = ()  # PSPNet has no multi-grid
  c.model.eval_output_stride = 8
  c.model.decode_head = "psp"
  c.model.head_channels = 512
  c.model.psp_bins = (1, 2, 3, 6)
  c.model.psp_pooling = "avg"
  c.model.psp_reduction = True
  c.model.dropout = 0.1
  c.model.aux_head = True
  c.model.aux_channels = 256
  c.loss.aux_weight = 0.4
  c.optim.lr = 0.01
  c.optim.power = 0.9
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.train.batch_size = 16
  c.train.steps = 90000
  c.train.eval_every = 10000
  c.train.ckpt_every = 2000
  c.eval.mode = "slide"
  c.eval.crop_size = (713, 713)
  c.eval.stride = (476, 476)
  c.eval.batch_size = 2
  if variant == "ms":
    c.eval.scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    c.eval.flip = True
  elif variant == "tiny":
    _tiny(c)
  elif variant:
    raise ValueError(f"unknown variant '{variant}' of configs/pspnet_cityscapes.py (known: ms, tiny)")
  return c


def _tiny(c):
  """configs/quickstart.py-sized smoke settings (jaxseg.config.tiny_variant) around
  this config's head."""
  tiny_variant(c)
