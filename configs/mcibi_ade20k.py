"""DeepLabv3 + MCIBI on ADE20K (Jin et al., ICCV 2021, "Mining Contextual Information
Beyond Image for Semantic Segmentation").

Schedule reproduced (paper): ResNet-50 dilated to output stride 8 (deep stem, as the
authors' toolbox), ASPP as the within-image context; feature memory of 150 x 512 rows
updated with momentum 0.9 poly-annealed (power 0.9); loss CE(O) + 0.4 CE(W) +
1.0 CE(O_M) + 0.4 aux; SGD momentum 0.9, lr 0.01 with poly 0.9, weight decay 5e-4,
batch 16, crop 512, random scale 0.5-2.0, flip, photometric distortion; 160K
iterations (the toolbox's ADE20K schedule). Sliding-window evaluation on the 2,000
val images resized to short side 512 (the toolbox's protocol; mIoU counted at the
stored label size, the prediction resized back). Reported val mIoU (ss / ms+flip): R-50 44.39 / 45.97,
R-101 45.66 / 47.27 (--config.model.backbone.depth=101).

Variants (--config configs/mcibi_ade20k.py:NAME): plain: single-scale evaluation; `:ms`
scales {0.5, ..., 1.75} + flip; `:tiny` smoke variant: the same head, tiny, on `shapes`.
"""
from jaxseg import presets
from jaxseg.config import base_config


def get_config(variant=""):
  c = base_config()
  presets.dataset(c, "ade20k")
  presets.augment(c, (512, 512), photometric=True, cat_max_ratio=0.75)
  presets.resnet(c, 50)
  presets.mcibi(c)
  presets.sgd_poly(c, lr=0.01, steps=160000, eval_every=16000, weight_decay=5e-4)
  presets.slide(c, (512, 512), (341, 341), batch_size=8)
  return presets.variants(c, variant, "configs/mcibi_ade20k.py")
