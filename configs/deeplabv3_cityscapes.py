"""DeepLabv3 on Cityscapes (Chen et al. 2017, Appendix C).

Schedule reproduced: the VOC protocol (ResNet-101, multi-grid (1, 2, 4), batch 16,
lr 0.007 poly 0.9, OS16 training with BN decay 0.9997, scale 0.5-2.0, flip) with 90K
iterations and crop 769 on the 2,975 train_fine images; whole-image inference at
OS8 on the 500 val images. Reported val mIoU: 77.23 (OS16), 77.82 (OS8),
79.30 (OS8 + scales {0.75, 1, 1.25} + flip).

Variants (--config configs/deeplabv3_cityscapes.py:NAME): plain: single-scale
evaluation; `:ms` scales {0.75, 1, 1.25} + flip.
"""
from jaxseg import presets
from jaxseg.config import base_config


def get_config(variant=""):
  c = base_config()
  presets.dataset(c, "cityscapes")
  presets.augment(c, (769, 769), scale_step=0.25)
  presets.resnet(c, 101, output_stride=16, multi_grid=(1, 2, 4), stem="7x7", eval_output_stride=8)
  c.model.aux_heads = {}  # DeepLabv3 has no auxiliary loss
  c.loss.weights = dict(seg=1.0)
  c.model.bn_momentum = 0.9997
  presets.sgd_poly(c, lr=0.007, steps=90000, eval_every=10000)
  c.eval.update(dict(mode="whole", batch_size=2))  # the paper runs inference on the whole image
  return presets.variants(c, variant, "configs/deeplabv3_cityscapes.py",
                          {"ms": lambda c: c.eval.update(dict(scales=(0.75, 1.0, 1.25), flip=True))})
