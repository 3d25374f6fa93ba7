"""PSPNet on ADE20K (Zhao et al. 2017, "Pyramid Scene Parsing Network").

Schedule reproduced (paper and author code): ResNet-50 with the deep stem (the
author release's ADE20K model), dilated to output stride 8; pyramid pooling with
average pools to bins (1, 2, 3, 6), each reduced to 512 channels; auxiliary FCN loss on
layer3 with weight 0.4; SGD momentum 0.9, lr 0.01 with poly 0.9, weight decay 1e-4,
batch 16 with SyncBN (global BN here), crop 473, 150K iterations on the 20,210 train
images; random scale 0.5-2.0, flip, random rotation (+-10 degrees) and Gaussian
blur (5x5, p 0.5 each, the author code's). Evaluation by sliding 473
windows on the 2,000 val images (150 classes) resized to short side 512, the
benchmark's standard protocol (the author code resizes the long side to 512 instead:
--config.input.eval_short_side=0 --config.input.eval_long_side=512). mIoU is counted
at the stored label size (the prediction resized back).
Reported val mIoU (author code, ss / ms): PSP-50 41.89 / 42.84 (PSP-101 43.10 / 44.15
with --config.model.backbone.depth=101).

Variants (--config configs/pspnet_ade20k.py:NAME): plain: single-scale evaluation; `:ms`
scales {0.5, ..., 1.75} + flip; `:tiny` smoke variant: the same head, tiny, on `shapes`.
"""
from jaxseg import presets
from jaxseg.config import aux_head, base_config, head


def get_config(variant=""):
  c = base_config()
  presets.dataset(c, "ade20k")
  presets.augment(c, (473, 473))
  presets.pspnet_augment(c)  # rotation +-10 degrees, Gaussian blur
  presets.resnet(c, 50)  # PSPNet has no multi-grid
  c.model.head = head("psp", channels=512, bins=(1, 2, 3, 6))
  c.model.aux_heads = dict(aux=aux_head(channels=256))
  c.loss.weights = dict(seg=1.0, aux=0.4)
  presets.sgd_poly(c, lr=0.01, steps=150000, eval_every=10000)
  presets.slide(c, (473, 473), (316, 316), batch_size=8)
  return presets.variants(c, variant, "configs/pspnet_ade20k.py")
