"""DeepLabv3 on PASCAL VOC 2012 (Chen et al. 2017, "Rethinking Atrous Convolution").

Schedule reproduced (paper Sec. 4): ResNet-101, multi-grid (1, 2, 4), train_aug
(10,582 images), batch 16, crop 513, SGD momentum 0.9, lr 0.007 with poly 0.9,
30K iterations at output stride 16 with BN trained (decay 0.9997), random scale
0.5-2.0 in steps of 0.25 and flip; evaluation at output stride 8 on the 1,449 val
images. Reported val mIoU: 77.21 (OS16), 78.51 (OS8), 79.45 (+ms), 79.77 (+flip).

The paper's second stage (`:stage2`): from the first stage's weights, batch
normalisation frozen (running statistics used, not updated; scale and bias fixed),
output stride 8 in training too, lr 0.001 poly for 30K more iterations. The paper runs
it on the official trainval set for its test-server entry; voc_aug has no trainval
split, so this stage fine-tunes on train_aug and stays comparable on val. Two
commands give the full schedule:

  python -m jaxseg.main --config configs/deeplabv3_voc.py --workdir runs/dlv3
  python -m jaxseg.main --config configs/deeplabv3_voc.py:stage2 --workdir runs/dlv3_stage2 \
      --config.model.init_from=runs/dlv3

Variants (--config configs/deeplabv3_voc.py:NAME): plain: single-scale evaluation; `:ms`
scales {0.5, ..., 1.75} + flip; `:stage2` the frozen-BN OS8 stage (combine: `stage2,ms`).
"""
from jaxseg import presets
from jaxseg.config import base_config


def get_config(variant=""):
  c = base_config()
  presets.dataset(c, "voc_aug")
  presets.augment(c, (513, 513), scale_step=0.25)  # the paper uses scale + flip only
  c.input.eval_size = (513, 513)
  # the original ResNet the paper fine-tunes, OS16 in training and OS8 at evaluation
  presets.resnet(c, 101, output_stride=16, multi_grid=(1, 2, 4), stem="7x7", eval_output_stride=8)
  c.model.aux_heads = {}  # DeepLabv3 has no auxiliary loss
  c.loss.weights = dict(seg=1.0)
  c.model.bn_momentum = 0.9997
  presets.sgd_poly(c, lr=0.007, steps=30000, eval_every=5000, ckpt_every=1000)
  c.eval.batch_size = 8
  return presets.variants(c, variant, "configs/deeplabv3_voc.py", {"stage2": _stage2})


def _stage2(c):
  c.model.backbone.output_stride = 8
  c.model.init_from = "runs/dlv3"  # the first stage's work dir
  c.train.frozen_bn = ("",)  # every BatchNorm
  c.train.frozen_bn_affine = True
  c.optim.lr = 0.001
