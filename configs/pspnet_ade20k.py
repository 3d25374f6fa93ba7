"""PSPNet on ADE20K (Zhao et al. 2017, "Pyramid Scene Parsing Network").

Schedule reproduced (paper and author code): ResNet-50 with the deep stem (the
author release's ADE20K model), dilated to output stride 8; pyramid pooling with
average pools to bins (1, 2, 3, 6), each reduced to 512 channels; auxiliary FCN loss on
layer3 with weight 0.4; SGD momentum 0.9, lr 0.01 with poly 0.9, weight decay 1e-4,
batch 16 with SyncBN (global BN here), crop 473, 150K iterations on the 20,210 train
images; random scale 0.5-2.0 and flip. Not reproduced: random rotation (+-10 degrees)
and Gaussian blur, which the pipeline does not implement. Evaluation by sliding 473
windows on the 2,000 val images (150 classes) resized to short side 512, the
benchmark's standard protocol (the author code resizes the long side to 512 instead:
--config.input.eval_short_side=0 --config.input.eval_long_side=512). mIoU is counted
on the labels resized alike.
Reported val mIoU (author code, ss / ms): PSP-50 41.89 / 42.84 (PSP-101 43.10 / 44.15
with --config.model.backbone.depth=101).

  --config configs/pspnet_ade20k.py        single-scale evaluation
  --config configs/pspnet_ade20k.py:ms     scales {0.5, ..., 1.75} + flip
  --config configs/pspnet_ade20k.py:tiny   smoke variant: the same head, tiny, on `shapes`
"""
from jaxseg.config import base_config, tiny_variant


def get_config(variant=""):
  c = base_config()
  c.dataset.name = "ade20k"
  c.dataset.train_split = "train"
  c.dataset.eval_split = "val"
  c.dataset.num_classes = 150
  c.input.crop_size = (473, 473)
  c.input.scale_range = (0.5, 2.0)
  c.input.scale_step = 0.0
  c.input.photometric = False  # the paper's extra augmentations are rotation and blur
  c.input.cat_max_ratio = 1.0
  # ADE20K protocol: each val image resized to short side 512 (label: nearest), then
  # padded to this canvas; the rare image more elongated than 2:1 is shrunk to fit it
  # (the toolboxes cap the long side at 2048: eval_size (2048, 2048) matches that
  # exactly, at about 4x the evaluation cost).
  c.input.eval_short_side = 512
  c.input.eval_size = (1024, 1024)
  c.model.backbone.depth = 50
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
  c.train.steps = 150000
  c.train.eval_every = 10000
  c.train.ckpt_every = 2000
  c.eval.mode = "slide"
  c.eval.crop_size = (473, 473)
  c.eval.stride = (316, 316)
  c.eval.batch_size = 8
  if variant == "ms":
    c.eval.scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    c.eval.flip = True
  elif variant == "tiny":
    _tiny(c)
  elif variant:
    raise ValueError(f"unknown variant '{variant}' of configs/pspnet_ade20k.py (known: ms, tiny)")
  return c


def _tiny(c):
  """configs/quickstart.py-sized smoke settings (jaxseg.config.tiny_variant) around
  this config's head."""
  tiny_variant(c)
