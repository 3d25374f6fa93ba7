"""DANet on Cityscapes (Fu et al. 2019, "Dual Attention Network for Scene Segmentation").

Schedule reproduced (paper and official training command): ResNet-101 with
the deep stem, dilated to output stride 8 with multi-grid in layer4 (the official
"--multi-dilation 4 8 16" = unit rates (1, 2, 4) times the stage rate 4 here); the
DANet head on c4 (position + channel attention, sum fusion) with the PAM-only and
CAM-only outputs also supervised (loss weights 1:1:1, as the official code), no FCN
auxiliary head; SGD momentum 0.9, lr 0.01 (the paper; the official command uses
0.003) with poly 0.9, weight decay 1e-4, head lr x10, batch 8, crop 768, random scale
0.75-2.0 and flip, on the 2,975 fine train images. The notes give no iteration count:
the official command trains 240 epochs at batch 8, i.e. 240 * 2975 / 8 = 89,250 steps.
Evaluation by sliding 768 windows over the full 1024x2048 val images (500, 19 classes).
Reported val mIoU (R-101): 79.93 ss / 81.49 ms; paper ablation (R-50): FCN 70.03 ->
PAM 75.74 / CAM 74.28 / both 76.34.

At crop 768 the position attention has N = 96 * 96 = 9,216 positions, so its 8 x N x N
matrix (2.7 GB in fp32) exceeds model.attention_blocked_threshold and PAM runs blockwise.
The paper's channel attention is softmax(X X^T); the official code's
softmax(rowmax - X X^T) is --config.model.head.cam_variant=official.

Variants (--config configs/danet_cityscapes.py:NAME): plain: single-scale evaluation;
`:ms` scales {0.5, ..., 1.75} + flip; `:tiny` smoke variant: the same head, tiny, on
`shapes`.
"""
from jaxseg import presets
from jaxseg.config import base_config, head, tiny_variant


def get_config(variant=""):
  c = base_config()
  presets.dataset(c, "cityscapes")
  presets.augment(c, (768, 768), scale_range=(0.75, 2.0))
  presets.resnet(c, 101, multi_grid=(1, 2, 4))  # layer4 rates (4, 8, 16) at OS8
  c.model.head = head("danet", cam_variant="paper")
  c.model.aux_heads = {}  # DANet's extra supervision is the PAM and CAM outputs
  c.loss.weights = dict(seg=1.0, pam=1.0, cam=1.0)
  c.optim.head_lr_mult = 10.0
  presets.sgd_poly(c, lr=0.01, steps=89250, eval_every=10000, batch_size=8)
  presets.slide(c, (768, 768), (512, 512), batch_size=2)
  return presets.variants(c, variant, "configs/danet_cityscapes.py", {"tiny": _tiny})


def _tiny(c):
  """jaxseg.config.tiny_variant around this head, with the blockwise position
  attention the full-size config runs, over 16-key blocks (the 64x64 crops give
  N = 64 positions at OS8)."""
  tiny_variant(c)
  c.model.attention_blocked_threshold = 0
  c.model.attention_block_size = 16
