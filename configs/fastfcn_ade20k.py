"""FastFCN (JPU + PSP head) on ADE20K (Wu et al. 2019, "FastFCN: Rethinking Dilated
Convolution in the Backbone for Semantic Segmentation").

Schedule reproduced (paper and official code): ResNet-50 with the deep stem and
NO dilation (output stride 32, also at evaluation); the Joint Pyramid Upsampling neck
on c2, c3, c4 (512 channels per level, separable convs with dilation 1, 2, 4, 8, 2048
channels out at OS8) replaces c4; the PSP head on it, and the FCN auxiliary head on
c3 with weight 0.2 (the official code's --aux default); SGD momentum 0.9, lr 0.01 with
poly 0.9, weight decay 1e-4, neck and heads at lr x10, batch 16, crop 480, random
scale 0.5-2.0 and flip, 120 epochs on the 20,210 train images =
120 * 20210 / 16 = 151,575 steps. Not reproduced: the official "base size 520"
(scales are relative to each image here, as in the other configs) and the Gaussian
blur with p = 0.5. Evaluation by sliding 480 windows on the 2,000 val images (150
classes) resized to short side 512, the benchmark's standard protocol (the official
code resizes the long side to 520 instead: --config.input.eval_short_side=0
--config.input.eval_long_side=520). mIoU is counted on the labels resized alike.
Reported: the paper's ADE20K figures (val ms: R-50 42.75, R-101 44.34) are for the
EncNet head with JPU (the `:encnet` variant); the PSP head with JPU is reported on
PASCAL Context (see configs/fastfcn_pascal_context.py) and, in the toolbox table,
on Cityscapes (79.26 ss / 80.86 ms+f).

  --config configs/fastfcn_ade20k.py        single-scale evaluation
  --config configs/fastfcn_ade20k.py:ms     scales {0.5, ..., 1.75} + flip
  --config configs/fastfcn_ade20k.py:tiny   smoke variant: the same neck and head, tiny, on `shapes`
  --config configs/fastfcn_ade20k.py:encnet the EncNet head (Context Encoding Module, SE loss 0.2)
  --config configs/fastfcn_ade20k.py:aspp   the DeepLabv3 head
Variants combine with ',': `:encnet,ms`, `:encnet,tiny`.
"""
from jaxseg.config import base_config, tiny_variant


def get_config(variant=""):
  c = base_config()
  c.dataset.name = "ade20k"
  c.dataset.train_split = "train"
  c.dataset.eval_split = "val"
  c.dataset.num_classes = 150
  c.input.crop_size = (480, 480)
  c.input.scale_range = (0.5, 2.0)
  c.input.scale_step = 0.0
  c.input.photometric = False
  c.input.cat_max_ratio = 1.0
  # ADE20K protocol: each val image resized to short side 512 (label: nearest), then
  # padded to this canvas; the rare image more elongated than 2:1 is shrunk to fit it
  # (the toolboxes cap the long side at 2048: eval_size (2048, 2048) matches that
  # exactly, at about 4x the evaluation cost).
  c.input.eval_short_side = 512
  c.input.eval_size = (1024, 1024)
  c.model.backbone.depth = 50
  c.model.backbone.stem = "deep"
  c.model.backbone.output_stride = 32  # the point of FastFCN: no dilated convolutions
  c.model.backbone.multi_grid = ()
  c.model.eval_output_stride = 32
  c.model.neck = "jpu"
  c.model.jpu_channels = 512
  c.model.decode_head = "psp"
  c.model.head_channels = 512
  c.model.psp_bins = (1, 2, 3, 6)
  c.model.dropout = 0.1
  c.model.aux_head = True
  c.model.aux_channels = 256
  c.loss.aux_weight = 0.2
  c.optim.lr = 0.01
  c.optim.power = 0.9
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.head_lr_mult = 10.0  # everything outside params/backbone: the JPU and the heads
  c.train.batch_size = 16
  c.train.steps = 151575
  c.train.eval_every = 15000
  c.train.ckpt_every = 2000
  c.eval.mode = "slide"
  c.eval.crop_size = (480, 480)
  c.eval.stride = (320, 320)
  c.eval.batch_size = 8
  for token in filter(None, variant.split(",")):
    if token == "ms":
      c.eval.scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
      c.eval.flip = True
    elif token == "encnet":  # the paper's main head: Context Encoding + SE loss 0.2
      c.model.decode_head = "encnet"
      c.model.encnet_codewords = 32
      c.loss.se_weight = 0.2
    elif token == "aspp":  # DeepLabv3's head on the JPU (rates 12, 24, 36 at OS8)
      c.model.decode_head = "aspp"
      c.model.head_channels = 256
    elif token == "tiny":
      _tiny(c)
    else:
      raise ValueError(f"unknown variant '{token}' of configs/fastfcn_ade20k.py (known: ms, encnet, aspp, tiny; "
                       "combine with ',', e.g. encnet,tiny)")
  return c


def _tiny(c):
  """configs/quickstart.py-sized smoke settings (jaxseg.config.tiny_variant) around
  this config's head."""
  tiny_variant(c)
