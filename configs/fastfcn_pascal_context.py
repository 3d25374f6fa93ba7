"""FastFCN (JPU + PSP head) on PASCAL Context, 59 classes (Wu et al. 2019, "FastFCN:
Rethinking Dilated Convolution in the Backbone for Semantic Segmentation").

Schedule reproduced (paper and official code): ResNet-50 with the deep stem and
NO dilation (output stride 32, also at evaluation); the Joint Pyramid Upsampling neck
on c2, c3, c4 (512 channels per level, separable convs with dilation 1, 2, 4, 8, 2048
channels out at OS8) replaces c4; the PSP head on it, and the FCN auxiliary head on
c3 with weight 0.2 (the official code's --aux default); SGD momentum 0.9, lr 0.001 with
poly 0.9, weight decay 1e-4, neck and heads at lr x10, batch 16, crop 480, random
scale 0.5-2.0 and flip, 80 epochs on the 4,998 train images =
80 * 4998 / 16 = 24,990 steps. The official code's base size 520 (the random
scale multiplies a short side of 520) and Gaussian blur (random sigma in (0, 1), p 0.5). Evaluation by sliding 480 windows on the val images (59 classes).
Reported (R-50, mIoU / FPS): PSP 50.58 / 18.08 with the dilated OS8 backbone ->
50.89 / 28.48 with JPU on OS32, the claim to reproduce: the same accuracy for less
compute (EncNet 49.91 -> 51.05 with `:encnet`, DeepLabV3 49.19 -> 50.07 with `:aspp`).

Variants (--config configs/fastfcn_pascal_context.py:NAME): plain: single-scale
evaluation; `:ms` scales {0.5, ..., 1.75} + flip; `:tiny` smoke variant: the same neck
and head, tiny, on `shapes`; `:encnet` the EncNet head (Context Encoding Module, SE loss
0.2); `:aspp` the DeepLabv3 head.
Variants combine with ',': `:encnet,ms`, `:encnet,tiny`.
"""
from jaxseg import presets
from jaxseg.config import base_config


def get_config(variant=""):
  c = base_config()
  presets.dataset(c, "pascal_context/59")
  presets.augment(c, (480, 480))
  presets.fastfcn(c)
  presets.sgd_poly(c, lr=0.001, steps=24990, eval_every=2000)
  presets.slide(c, (480, 480), (320, 320), batch_size=8)
  return presets.variants(c, variant, "configs/fastfcn_pascal_context.py", presets.FASTFCN_HEADS)
