"""DeepLabv3 + MCIBI on Cityscapes (Jin et al., ICCV 2021).

Schedule reproduced (paper): ResNet-101 dilated to output stride 8 (deep stem), ASPP
as the within-image context, feature memory 19 x 512 with momentum 0.9 poly-annealed;
loss CE(O) + 0.4 CE(W) + 1.0 CE(O_M) + 0.4 aux; SGD momentum 0.9, lr 0.01 with poly
0.9, weight decay 5e-4, batch 16 (the paper's MCIBI batch), crop 512x1024, random
scale 0.5-2.0, flip, photometric distortion; 80K iterations (the toolbox's
Cityscapes schedule) on the 2,975 fine train images; sliding-window evaluation on
the 500 val images. Reported: Cityscapes test 82.10 mIoU (R-101, trained on train+val).

Variants (--config configs/mcibi_cityscapes.py:NAME): plain: single-scale evaluation;
`:ms` scales {0.5, ..., 1.75} + flip; `:tiny` smoke variant on `shapes`.
"""
from jaxseg import presets
from jaxseg.config import base_config


def get_config(variant=""):
  c = base_config()
  presets.dataset(c, "cityscapes")
  presets.augment(c, (512, 1024), photometric=True, cat_max_ratio=0.75)
  presets.resnet(c, 101)
  presets.mcibi(c)
  presets.sgd_poly(c, lr=0.01, steps=80000, eval_every=8000, weight_decay=5e-4)
  presets.slide(c, (512, 1024), (341, 683), batch_size=2)
  return presets.variants(c, variant, "configs/mcibi_cityscapes.py")
