"""PSPNet on PASCAL VOC 2012 aug (Zhao et al. 2017, "Pyramid Scene Parsing Network").

Schedule reproduced (paper and author code): ResNet-101 with the deep stem,
dilated to output stride 8; pyramid pooling with average pools to bins (1, 2, 3, 6),
each reduced to 2048/4 = 512 channels; auxiliary FCN loss on layer3 with weight 0.4;
SGD momentum 0.9, lr 0.01 with poly 0.9, weight decay 1e-4, batch 16 with SyncBN
(global BN here), crop 473, 30K iterations on train_aug (10,582 images); random scale
0.5-2.0, flip, random rotation (+-10 degrees) and Gaussian blur (5x5, p 0.5 each,
the author code's). Evaluation by sliding 473
windows (stride 2/3 of the window) on the 1,449 val images.
Reported val mIoU (author code, ss / ms): PSP-101 79.07 / 79.63 (PSP-50 77.05 / 78.02
with --config.model.backbone.depth=50).

Variants (--config configs/pspnet_voc.py:NAME): plain: single-scale evaluation; `:ms`
scales {0.5, ..., 1.75} + flip; `:tiny` smoke variant: the same head, tiny, on `shapes`.
"""
from jaxseg import presets
from jaxseg.config import aux_head, base_config, head


def get_config(variant=""):
  c = base_config()
  presets.dataset(c, "voc_aug")
  presets.augment(c, (473, 473))
  presets.pspnet_augment(c)  # rotation +-10 degrees, Gaussian blur
  presets.resnet(c, 101)  # PSPNet has no multi-grid
  # avg pooling beats max in the paper's ablation, and so does the reduction to C/4 per branch
  c.model.head = head("psp", channels=512, bins=(1, 2, 3, 6), pooling="avg", reduction=True)
  c.model.aux_heads = dict(aux=aux_head(channels=256))
  c.loss.weights = dict(seg=1.0, aux=0.4)  # the best aux weight of the paper's ablation
  presets.sgd_poly(c, lr=0.01, steps=30000, eval_every=5000, ckpt_every=1000)
  presets.slide(c, (473, 473), (316, 316), batch_size=8)
  return presets.variants(c, variant, "configs/pspnet_voc.py")
