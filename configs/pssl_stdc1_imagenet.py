"""STDC1-Seg pretrained on ImageNet's PSSL pseudo labels (Li et al. 2022), PaddleSeg's
configs/pssl/stdc1_seg_pssl.yml.

configs/stdc1_cityscapes.py's model (STDC1 backbone, context path, FFM, the two
auxiliary heads), trained with the released pretraining recipe
(jaxseg.presets.pssl_pretraining: 1001 classes, background CE weight 0.1, crop 256
after short side 256 x 0.5-2.0, flip, SGD lr 0.01 constant, weight decay 4e-5,
backbone x0.1 and everything else x1, batch 96, 66,725 iterations = the epoch-5
checkpoint, no evaluation). What differs from the Cityscapes schedule besides: plain
weighted CE (no OHEM) on the output and the two auxiliary heads, 1:1:1 (the released
loss coefficients), no detail head (the released config has no detail loss), no
warmup. The released run starts from the ImageNet-trained STDCNet1 backbone: pass it
with --config.model.init_from=DIR --config.model.init_from_prefix=backbone.

Variants: `:released` (PaddleSeg's released labels, imagenet_pssl/released); `:tiny`.
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


def get_config(variant="", backbone="stdc1"):
  c = sibling("stdc1_cityscapes").get_config(backbone=backbone)
  presets.pssl_pretraining(c)
  c.model.head.detail_head = False
  c.loss.weights = dict(seg=1.0, aux16=1.0, aux32=1.0)
  return presets.variants(c, variant, f"configs/pssl_{backbone}_imagenet.py", sibling("pssl_pspnet_imagenet").PSSL_VARIANTS)
