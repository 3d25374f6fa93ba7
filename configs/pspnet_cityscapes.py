"""PSPNet on Cityscapes (Zhao et al. 2017, "Pyramid Scene Parsing Network").

Schedule reproduced (paper and author code): ResNet-101 with the deep stem,
dilated to output stride 8; pyramid pooling with average pools to bins (1, 2, 3, 6),
each reduced to 512 channels; auxiliary FCN loss on layer3 with weight 0.4; SGD
momentum 0.9, lr 0.01 with poly 0.9, weight decay 1e-4, batch 16 with SyncBN (global
BN here), crop 713, 90K iterations on the 2,975 fine train images; random scale
0.5-2.0, flip, random rotation (+-10 degrees) and Gaussian blur (5x5, p 0.5 each, the
author code's). Evaluation by sliding 713 windows (stride 2/3
of the window) over the full 1024x2048 val images (500, 19 classes).
Reported val mIoU (author code, ss / ms): PSP-101 78.63 / 79.29 (PSP-50 77.30 / 78.38
with --config.model.backbone.depth=50).

Variants (--config configs/pspnet_cityscapes.py:NAME): plain: single-scale evaluation;
`:ms` scales {0.5, ..., 1.75} + flip; `:tiny` smoke variant: the same head, tiny, on
`shapes`.
"""
from jaxseg import presets
from jaxseg.config import aux_head, base_config, head


def get_config(variant=""):
  c = base_config()
  presets.dataset(c, "cityscapes")
  presets.augment(c, (713, 713))
  presets.pspnet_augment(c)  # rotation +-10 degrees, Gaussian blur
  presets.resnet(c, 101)  # PSPNet has no multi-grid
  c.model.head = head("psp", channels=512, bins=(1, 2, 3, 6))
  c.model.aux_heads = dict(aux=aux_head(channels=256))
  c.loss.weights = dict(seg=1.0, aux=0.4)
  presets.sgd_poly(c, lr=0.01, steps=90000, eval_every=10000)
  presets.slide(c, (713, 713), (476, 476), batch_size=2)
  return presets.variants(c, variant, "configs/pspnet_cityscapes.py")
