"""PSPNet-R50 fine-tuned on PASCAL VOC 2012 aug from a PSSL pretraining (Li et al.
2022). PSSL changes nothing downstream but the initial weights (PaddleSeg
configs/pssl/README.md, "Downstream Tasks": the config of the model with `pretrained`
set), so this is PaddleSeg's configs/pspnet/pspnet_resnet50_os8_voc12aug_512x512_40k.yml
(on configs/_base_/pascal_voc12aug.yml, PaddleSeg's PSPNet-R50 baseline: 80.76 val
mIoU from ImageNet weights) with the model of configs/pssl_pspnet_imagenet.py, so that
everything but the 1001-class classifiers loads:

  model  ResNet-50 (deep stem), output stride 8, PPM bins (1, 2, 3, 6), auxiliary FCN
         head on c3, CE 1 : 0.4, align_corners False
  data   voc_aug train_aug (10,582 images); scale 0.5-2.0 in steps of 0.25, crop 512
         (padded), flip, photometric distortion (PaddleSeg's RandomDistort 0.4 jitter);
         none of PSPNet's own rotation and blur
  optim  SGD momentum 0.9, weight decay 4e-5, lr 0.01, poly 0.9 to 0 over 40K
         iterations, no warmup, every module at lr x1; global batch 16 (4 per GPU in
         the config, 4 GPUs assumed)
  eval   the 1,449 val images padded to 512x512, whole-image inference

  python -m jaxseg.main --config configs/pssl_pspnet_voc_finetune.py --workdir runs/pspnet_voc_pssl \\
      --config.model.init_from=runs/pssl_pspnet     (the work dir of configs/pssl_pspnet_imagenet.py)

WORKDIR/init_from.json lists what was loaded (all but decode_head/classifier and
aux_heads_aux/classifier). Without init_from this trains from scratch; the baseline
starts from ImageNet weights with --config.model.init_from_prefix=backbone.

Variants: `:ms` multi-scale + flip evaluation; `:tiny` smoke variant on `shapes`.
"""
import importlib.util
import os

from jaxseg import presets


def sibling(name):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def paddleseg_pspnet(c, dataset, steps, eval_every):
  """PaddleSeg's PSPNet-R50 downstream recipe on `dataset` (its _base_ dataset yml)."""
  presets.dataset(c, dataset)
  presets.augment(c, (512, 512), scale_range=(0.5, 2.0), scale_step=0.25, photometric=True)
  c.input.update(dict(rotate_degrees=0.0, blur_prob=0.0))
  presets.sgd_poly(c, lr=0.01, steps=steps, eval_every=eval_every, batch_size=16, weight_decay=4e-5)
  c.optim.update(dict(warmup_steps=0, head_lr_mult=1.0))
  c.optim.lr_mults = ()
  return c


def get_config(variant=""):
  c = sibling("pspnet_voc").get_config()  # the model of configs/pssl_pspnet_imagenet.py ...
  presets.resnet(c, 50)  # ... at depth 50
  paddleseg_pspnet(c, "voc_aug", steps=40000, eval_every=4000)
  c.eval.update(dict(mode="whole", scales=(1.0,), flip=False, batch_size=8))
  return presets.variants(c, variant, "configs/pssl_pspnet_voc_finetune.py")
