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
softmax(rowmax - X X^T), hence the head's cam_variant = "official". Whole-image inference
on the 1,449 val images (padded here; the toolbox resizes them).
Reported val mIoU (toolbox, R-50): 74.45 ss / 75.69 ms+f.

Variants (--config configs/danet_voc.py:NAME): plain: single-scale evaluation; `:ms`
scales {0.5, ..., 1.75} + flip; `:tiny` smoke variant: the same head, tiny, on `shapes`.
"""
from jaxseg import presets
from jaxseg.config import aux_head, base_config, head, tiny_variant


def get_config(variant=""):
  c = base_config()
  presets.dataset(c, "voc_aug")
  presets.augment(c, (512, 512), photometric=True, cat_max_ratio=0.75)
  presets.resnet(c, 50)
  c.model.head = head("danet", cam_variant="official")
  c.model.aux_heads = dict(aux=aux_head(channels=256))
  c.loss.weights = dict(seg=1.0, pam=1.0, cam=1.0, aux=0.4)
  presets.sgd_poly(c, lr=0.01, steps=20000, eval_every=2000, weight_decay=5e-4)
  c.optim.decay_norm_and_bias = True  # the toolbox decays every parameter
  c.eval.update(dict(mode="whole", batch_size=8))
  return presets.variants(c, variant, "configs/danet_voc.py", {"tiny": _tiny})


def _tiny(c):
  """jaxseg.config.tiny_variant around this head, with the blockwise position
  attention the full-size config runs, over 16-key blocks (the 64x64 crops give
  N = 64 positions at OS8)."""
  tiny_variant(c)
  c.model.attention_blocked_threshold = 0
  c.model.attention_block_size = 16
