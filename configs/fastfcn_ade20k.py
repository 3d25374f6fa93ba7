"""FastFCN (JPU + PSP head) on ADE20K (Wu et al. 2019, "FastFCN: Rethinking Dilated
Convolution in the Backbone for Semantic Segmentation").

Schedule reproduced (paper and official code): ResNet-50 with the deep stem and
NO dilation (output stride 32, also at evaluation); the Joint Pyramid Upsampling neck
on c2, c3, c4 (512 channels per level, separable convs with dilation 1, 2, 4, 8, 2048
channels out at OS8) replaces c4; the PSP head on it, and the FCN auxiliary head on
c3 with weight 0.2 (the official code's --aux default); SGD momentum 0.9, lr 0.01 with
poly 0.9, weight decay 1e-4, neck and heads at lr x10, batch 16, crop 480, random
scale 0.5-2.0 and flip, 120 epochs on the 20,210 train images =
120 * 20210 / 16 = 151,575 steps. The official code's base size 520 (the random
scale multiplies a short side of 520) and Gaussian blur (random sigma in (0, 1), p 0.5). Evaluation by sliding 480 windows on the 2,000 val images (150
classes) resized to short side 512, the benchmark's standard protocol (the official
code resizes the long side to 520 instead: --config.input.eval_short_side=0
--config.input.eval_long_side=520). mIoU is counted at the stored label size.
Reported: the paper's ADE20K figures (val ms: R-50 42.75, R-101 44.34) are for the
EncNet head with JPU (the `:encnet` variant); the PSP head with JPU is reported on
PASCAL Context (see configs/fastfcn_pascal_context.py) and, in the toolbox table,
on Cityscapes (79.26 ss / 80.86 ms+f).

Variants (--config configs/fastfcn_ade20k.py:NAME): plain: single-scale evaluation;
`:ms` scales {0.5, ..., 1.75} + flip; `:tiny` smoke variant: the same neck and head,
tiny, on `shapes`; `:encnet` the EncNet head (Context Encoding Module, SE loss 0.2);
`:aspp` the DeepLabv3 head.
Variants combine with ',': `:encnet,ms`, `:encnet,tiny`.
"""
from jaxseg import presets
from jaxseg.config import base_config


def get_config(variant=""):
  c = base_config()
  presets.dataset(c, "ade20k")
  presets.augment(c, (480, 480))
  presets.fastfcn(c)
  presets.sgd_poly(c, lr=0.01, steps=151575, eval_every=15000)  # 120 epochs
  presets.slide(c, (480, 480), (320, 320), batch_size=8)
  return presets.variants(c, variant, "configs/fastfcn_ade20k.py", presets.FASTFCN_HEADS)
