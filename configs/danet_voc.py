"""DANet on PASCAL VOC 2012 aug, with the toolbox schedule (Fu et al. 2019,
"Dual Attention Network for Scene Segmentation").

The paper reports no VOC result; this reproduces the widely used toolbox's DANet
R-50 entry (PAPERS.md, "Reference figures"): ResNet-50 V1c (deep stem) dilated to
output stride 8, no multi-grid; the DANet head on c4 with the fused, PAM-only and
CAM-only outputs each supervised with weight 1, plus an FCN auxiliary head on layer3
(256 channels) with weight 0.4; SGD momentum 0.9, lr 0.01 with poly 0.9, weight decay
5e-4, batch 16 (SyncBN: global BN here), crop 512x512, 20K iterations on train_aug
(10,582 images); random scale 0.5-2.0, crop with cat_max_ratio 0.75, flip,
photometric distortion. The toolbox's channel attention is the official code's
softmax(rowmax - X X^T), hence danet_cam_variant = "official". Whole-image inference
on the 1,449 val images (padded here; the toolbox resizes them).
Reported val mIoU (toolbox, R-50): 74.45 ss / 75.69 ms+f.

  --config configs/danet_voc.py        single-scale evaluation
  --config configs/danet_voc.py:ms     scales {0.5, ..., 1.75} + flip
  --config configs/danet_voc.py:tiny   smoke variant: the same head, tiny, on `shapes`
"""
from jaxseg.config import base_config, tiny_variant


def get_config(variant=""):
  c = base_config()
  c.dataset.name = "voc_aug"
  c.dataset.train_split = "train_aug"
  c.dataset.eval_split = "val"
  c.dataset.num_classes = 21
  c.input.crop_size = (512, 512)
  c.input.scale_range = (0.5, 2.0)
  c.input.scale_step = 0.0
  c.input.photometric = True
  c.input.cat_max_ratio = 0.75
  c.input.eval_size = (512, 512)  # VOC images are at most 500x500
  c.model.backbone.depth = 50
  c.model.backbone.stem = "deep"
  c.model.backbone.output_stride = 8
  c.model.backbone.multi_grid = ()
  c.model.eval_output_stride = 8
  c.model.decode_head = "danet"
  c.model.danet_cam_variant = "official"
  c.model.dropout = 0.1
  c.model.aux_head = True
  c.model.aux_channels = 256
  c.loss.aux_weight = 0.4
  c.loss.pam_weight = 1.0
  c.loss.cam_weight = 1.0
  c.optim.lr = 0.01
  c.optim.power = 0.9
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.decay_norm_and_bias = True  # the toolbox decays every parameter
  c.train.batch_size = 16
  c.train.steps = 20000
  c.train.eval_every = 2000
  c.train.ckpt_every = 2000
  c.eval.mode = "whole"
  c.eval.batch_size = 8
  if variant == "ms":
    c.eval.scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    c.eval.flip = True
  elif variant == "tiny":
    _tiny(c)
  elif variant:
    raise ValueError(f"unknown variant '{variant}' of configs/danet_voc.py (known: ms, tiny)")
  return c


def _tiny(c):
  """configs/quickstart.py-sized smoke settings (jaxseg.config.tiny_variant) around
  this config's head."""
  tiny_variant(c)
  # The blockwise position attention, as the full-size config runs it, over 16-key
  # blocks (the 64x64 crops give N = 64 positions at OS8).
  c.model.danet_blocked_threshold = 0
  c.model.danet_block_size = 16
