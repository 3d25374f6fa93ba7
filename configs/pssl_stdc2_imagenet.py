"""STDC2-Seg pretrained on ImageNet's PSSL pseudo labels (Li et al. 2022), PaddleSeg's
configs/pssl/stdc2_seg_pssl.yml: configs/pssl_stdc1_imagenet.py with the STDC2
backbone (the released run starts from the ImageNet-trained STDCNet2).

Variants: `:released` (PaddleSeg's released labels); `:tiny` smoke variant.
"""
import importlib.util
import os


def get_config(variant=""):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pssl_stdc1_imagenet.py")
  spec = importlib.util.spec_from_file_location("pssl_stdc1_imagenet", path)
  stdc1 = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(stdc1)
  return stdc1.get_config(variant, backbone="stdc2")
