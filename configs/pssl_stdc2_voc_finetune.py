"""STDC2-Seg50 fine-tuned on PASCAL VOC 2012 aug from a PSSL pretraining (Li et al.
2022; PaddleSeg configs/stdcseg/stdc2_seg_voc12aug_512x512_40k.yml, the baseline the
PSSL README improves on: 68.98 -> 74.49 val mIoU, ms + flip 69.99 -> 75.79).

configs/stdc2_cityscapes.py's model and losses (OHEM CE on the output and the two
auxiliary heads, detail loss on stage 3, 1:1:1:1) on voc_aug train_aug: crop 512 of
the image scaled by 0.5-2.0 in steps of 0.25, flip, photometric distortion; SGD
momentum 0.9, weight decay 4e-5, lr 0.01, poly 0.9 over 40K iterations, no warmup,
every module at lr x1 (the VOC config sets no multiplier); global batch 16 (4 per GPU
in the config; 4 GPUs assumed); whole-image evaluation of the val images padded to
512x512.

  python -m jaxseg.main --config configs/pssl_stdc2_voc_finetune.py --workdir runs/stdc2_voc_pssl \\
      --config.model.init_from=runs/pssl_stdc2     (the work dir of configs/pssl_stdc2_imagenet.py)

init_from loads everything of the pretraining but its 1001-class classifiers, which
stay at initialisation; WORKDIR/init_from.json lists what was loaded and skipped.
Without init_from this is the baseline (then pass ImageNet STDCNet2 weights with
--config.model.init_from_prefix=backbone, as the baseline does).

Variants: `:ms` multi-scale + flip evaluation; `:tiny` smoke variant on `shapes`.
"""
import importlib.util
import os

from jaxseg import presets


def get_config(variant=""):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stdc1_cityscapes.py")
  spec = importlib.util.spec_from_file_location("stdc1_cityscapes", path)
  stdc = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(stdc)
  c = stdc.get_config(backbone="stdc2")
  presets.dataset(c, "voc_aug")
  presets.augment(c, (512, 512), scale_range=(0.5, 2.0), scale_step=0.25, photometric=True)
  presets.sgd_poly(c, lr=0.01, steps=40000, eval_every=4000, batch_size=16, weight_decay=4e-5)
  c.optim.update(dict(warmup_steps=0, poly_after_warmup=False))
  c.optim.lr_mults = ()
  c.eval.update(dict(mode="whole", scales=(1.0,), flip=False, batch_size=8))
  return presets.variants(c, variant, "configs/pssl_stdc2_voc_finetune.py", {"tiny": stdc._tiny})
