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
matrix (2.7 GB in fp32) exceeds model.danet_blocked_threshold and PAM runs blockwise.
The paper's channel attention is softmax(X X^T); the official code's
softmax(rowmax - X X^T) is --config.model.danet_cam_variant=official.

  --config configs/danet_cityscapes.py        single-scale evaluation
  --config configs/danet_cityscapes.py:ms     scales {0.5, ..., 1.75} + flip
  --config configs/danet_cityscapes.py:tiny   smoke variant: the same head, tiny, on `shapes`
"""
from jaxseg.config import base_config, tiny_variant


def get_config(variant=""):
  c = base_config()
  c.dataset.name = "cityscapes"
  c.dataset.train_split = "train"
  c.dataset.eval_split = "val"
  c.dataset.num_classes = 19
  c.input.crop_size = (768, 768)
  c.input.scale_range = (0.75, 2.0)
  c.input.scale_step = 0.0
  c.input.photometric = False
  c.input.cat_max_ratio = 1.0
  c.input.eval_size = (1024, 2048)
  c.model.backbone.depth = 101
  c.model.backbone.stem = "deep"
  c.model.backbone.output_stride = 8
  c.model.backbone.multi_grid = (1, 2, 4)  # layer4 rates (4, 8, 16) at OS8
  c.model.eval_output_stride = 8
  c.model.decode_head = "danet"
  c.model.danet_cam_variant = "paper"
  c.model.dropout = 0.1
  c.model.aux_head = False  # DANet's extra supervision is the PAM and CAM outputs
  c.loss.pam_weight = 1.0
  c.loss.cam_weight = 1.0
  c.optim.lr = 0.01
  c.optim.power = 0.9
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.head_lr_mult = 10.0
  c.train.batch_size = 8
  c.train.steps = 89250
  c.train.eval_every = 10000
  c.train.ckpt_every = 2000
  c.eval.mode = "slide"
  c.eval.crop_size = (768, 768)
  c.eval.stride = (512, 512)
  c.eval.batch_size = 2
  if variant == "ms":
    c.eval.scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    c.eval.flip = True
  elif variant == "tiny":
    _tiny(c)
  elif variant:
    raise ValueError(f"unknown variant '{variant}' of configs/danet_cityscapes.py (known: ms, tiny)")
  return c


def _tiny(c):
  """configs/quickstart.py-sized smoke settings (jaxseg.config.tiny_variant) around
  this config's head."""
  tiny_variant(c)
  # The blockwise position attention, as the full-size config runs it, over 16-key
  # blocks (the 64x64 crops give N = 64 positions at OS8).
  c.model.danet_blocked_threshold = 0
  c.model.danet_block_size = 16
