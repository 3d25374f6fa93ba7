"""STDC2 on Cityscapes (Fan et al., CVPR 2021): configs/stdc1_cityscapes.py's schedule
with the STDC2 backbone ([4, 5, 3] STDC modules in stages 3-5).

Reported Cityscapes test mIoU / FPS (GTX 1080Ti, TensorRT): STDC2-Seg50 73.4 / 188.6,
STDC2-Seg75 76.8 / 97.0.

Variants (--config configs/stdc2_cityscapes.py:NAME): plain: Seg50 (512x1024 inference
input); `:seg75` Seg75 (768x1536); `:tiny` smoke variant on `shapes`.
"""
import importlib.util
import os


def get_config(variant=""):
  # The sibling file by path: configs/ is not a package, and this file must load on its own.
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stdc1_cityscapes.py")
  spec = importlib.util.spec_from_file_location("stdc1_cityscapes", path)
  stdc1 = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(stdc1)
  return stdc1.get_config(variant, backbone="stdc2")
