"""jaxseg.convert --from mmseg against the real mmsegmentation (1.x): each model is
built by mmseg itself from its own config file (with small widths, the only
override), given random weights, random BN running statistics and non-zero
attention / encoding scales, saved as mmseg saves it, converted, and its logits
compared with mmseg's EncoderDecoder.encode_decode on odd-sized images.

mmseg imports `mmcv.ops` when its package loads; mmcv-lite (the CPU-only mmcv)
has no compiled ops, and none of these models calls one, so a stand-in module takes
its place (any call would raise).
"""
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxseg.convert
from jaxseg import sharding
from jaxseg.api import Segmenter
from jaxseg.config import IMAGENET_MEAN, IMAGENET_STD
from jaxseg.convert.io import read_state_dict
from jaxseg.models.segmentor import build_model
from tests import torch_reference as R

TOL = 1e-4  # max |ours - theirs| / max |theirs|
IMAGES = np.random.RandomState(3).randint(0, 256, (2, 97, 131, 3)).astype(np.uint8)


def _mmcv_ops_stand_in():
  ops = types.ModuleType("mmcv.ops")

  def missing(name):
    if name.startswith("__"):
      raise AttributeError(name)

    def call(*args, **kwargs):
      raise RuntimeError(f"mmcv.ops.{name} is not in mmcv-lite; the parity tests do not use it")
    return call
  ops.__getattr__ = missing
  return ops


pytest.importorskip("mmcv", reason="the reference is the real mmsegmentation (mmcv-lite)")
if "mmcv.ops" not in sys.modules:
  try:
    import mmcv.ops  # noqa: F401  (the full mmcv)
  except ImportError:
    sys.modules["mmcv.ops"] = _mmcv_ops_stand_in()
mmseg = pytest.importorskip("mmseg", reason="the reference is the real mmsegmentation")
pytest.importorskip("mmseg.models", reason="mmseg.models needs ftfy and regex, which mmsegmentation does not declare")
from mmengine.config import Config  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402
from mmseg.utils import register_all_modules  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(mmseg.__file__), ".mim", "configs")


def resnet(width=8):
  """ResNetV1c-50 at 1/8 of its width: stages give 4 * (8, 16, 32, 64) channels."""
  return dict(stem_channels=width, base_channels=width)


C2, C3, C4 = 64, 128, 256  # the c2, c3, c4 channels of resnet()
JPU = dict(in_channels=(C2, C3, C4), mid_channels=16)  # output 4 * 16 = 64
AUX = dict(in_channels=C3, channels=32)

# name: (mmseg config file, overrides, jaxseg --arch)
MODELS_UNDER_TEST = {
    "deeplabv3": ("deeplabv3/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py",
                  dict(backbone=resnet(), decode_head=dict(in_channels=C4, channels=32), auxiliary_head=AUX),
                  "deeplabv3_r50-d8"),
    "deeplabv3-d16": ("deeplabv3/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py",  # mmseg has no such config:
                      dict(backbone=dict(resnet(), strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)),  # OS16 by hand
                           decode_head=dict(in_channels=C4, channels=32, dilations=(1, 6, 12, 18)),
                           auxiliary_head=AUX),
                      "deeplabv3_r50-d16"),
    "deeplabv3-d16-mg124": ("deeplabv3/deeplabv3_r101-d16-mg124_4xb2-80k_cityscapes-512x1024.py",
                            dict(backbone=dict(resnet(), depth=50), decode_head=dict(in_channels=C4, channels=32),
                                 auxiliary_head=AUX),
                            "deeplabv3_r50-d16-mg124"),
    "fcn-d6-d16": ("fcn/fcn-d6_r50-d16_4xb2-80k_cityscapes-512x1024.py",
                   dict(backbone=resnet(), decode_head=dict(in_channels=C4, channels=32), auxiliary_head=AUX),
                   "fcn-d6_r50-d16"),
    "pspnet": ("pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py",
               dict(backbone=resnet(), decode_head=dict(in_channels=C4, channels=C4 // 4), auxiliary_head=AUX),
               "pspnet_r50-d8"),
    "danet": ("danet/danet_r50-d8_4xb2-80k_cityscapes-512x1024.py",
              dict(backbone=resnet(), decode_head=dict(in_channels=C4, channels=C4 // 4, pam_channels=C4 // 32),
                   auxiliary_head=AUX),
              "danet_r50-d8"),
    "fcn": ("fcn/fcn_r50-d8_4xb2-80k_cityscapes-512x1024.py",
            dict(backbone=resnet(), decode_head=dict(in_channels=C4, channels=32), auxiliary_head=AUX),
            "fcn_r50-d8"),
    "fastfcn-psp": ("fastfcn/fastfcn_r50-d32_jpu_psp_4xb2-80k_cityscapes-512x1024.py",
                    dict(backbone=resnet(), neck=JPU, decode_head=dict(in_channels=64, channels=16),
                         auxiliary_head=AUX),
                    "fastfcn_r50-d32_jpu_psp"),
    "fastfcn-enc": ("fastfcn/fastfcn_r50-d32_jpu_enc_4xb2-80k_cityscapes-512x1024.py",
                    dict(backbone=resnet(), neck=JPU, decode_head=dict(in_channels=[C2, C3, 64], channels=16,
                                                                       num_codes=8),
                         auxiliary_head=AUX),
                    "fastfcn_r50-d32_jpu_enc"),
    "fastfcn-aspp": ("fastfcn/fastfcn_r50-d32_jpu_aspp_4xb2-80k_cityscapes-512x1024.py",
                     dict(backbone=resnet(), neck=JPU, decode_head=dict(in_channels=64, channels=16),
                          auxiliary_head=AUX),
                     "fastfcn_r50-d32_jpu_aspp"),
    "stdc1": ("stdc/stdc1_4xb12-80k_cityscapes-512x1024.py", None, "stdc1_seg"),
    "stdc2": ("stdc/stdc2_4xb12-80k_cityscapes-512x1024.py", None, "stdc2_seg"),
}


def stdc_overrides(cfg):
  """STDC at 1/8 of its width: stage channels (4, 8, 32, 64, 128), context path 16."""
  b = cfg.model.backbone
  b.backbone_cfg.channels = (4, 8, 32, 64, 128)
  b.last_in_channels = (128, 64)
  b.out_channels = 16
  b.ffm_cfg = dict(in_channels=32 + 16, out_channels=32, scale_factor=4)
  cfg.model.decode_head.update(in_channels=32, channels=32)
  for head in cfg.model.auxiliary_head[:2]:
    head.update(in_channels=16, channels=8)
  cfg.model.auxiliary_head[2].update(in_channels=32, channels=8)


def build_mmseg(name):
  path, overrides, _ = MODELS_UNDER_TEST[name]
  cfg = Config.fromfile(os.path.join(CONFIGS, path))
  cfg.model.pretrained = None
  cfg.model.pop("data_preprocessor")  # the tests normalise as jaxseg does, then call encode_decode
  if overrides is None:
    stdc_overrides(cfg)
  else:
    cfg.merge_from_dict({f"model.{k}": v for k, v in overrides.items()})
  register_all_modules()
  return MODELS.build(cfg.model)


def torch_input(images):
  """RGB normalised as jaxseg's Segmenter does it (mmseg's data preprocessor: the same
  mean / std, after its BGR -> RGB swap)."""
  x = (images.astype(np.float32) - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
  return torch.from_numpy(x).permute(0, 3, 1, 2)


@pytest.mark.parametrize("name", list(MODELS_UNDER_TEST))
def test_converted_mmseg_model_computes_mmsegs_logits(name, tmp_path):
  model = R.randomize(build_mmseg(name), seed=len(name))
  sd = model.state_dict()
  path = str(tmp_path / f"{name}.pth")
  torch.save({"meta": {"mmseg_version": mmseg.__version__}, "state_dict": sd}, path)
  arch = MODELS_UNDER_TEST[name][2]

  config, variables, converted = jaxseg.convert.convert_state_dict(read_state_dict(path), "mmseg", arch)
  ours = Segmenter(config, variables, 0, sharding.make_mesh()).logits(IMAGES)
  x = torch_input(IMAGES)
  with torch.no_grad():
    theirs = model.encode_decode(x, [dict(img_shape=x.shape[2:])] * len(x)).permute(0, 2, 3, 1).numpy()

  assert ours.shape == theirs.shape
  scale = float(np.abs(theirs).max())
  rel = float(np.abs(ours - theirs).max()) / scale
  print(f"\n[mmseg {mmseg.__version__} {name}] max relative diff {rel:.2e} (max |logit| {scale:.2f})")
  assert scale > 0.1  # not a comparison of near-zero maps
  assert rel <= TOL
  # Every tensor converted, or a BN counter, or STDC's training-only detail head.
  assert set(converted["loaded"]) | set(converted["skipped"]) == set(sd)
  assert all(k.endswith("num_batches_tracked") or k.startswith("auxiliary_head.2.") for k in converted["skipped"])


# name: (model of MODELS_UNDER_TEST whose checkpoint holds the backbone, --arch, features compared)
BACKBONES = {
    "resnet50_v1c": ("pspnet", "resnet50_v1c", ("c1", "c2", "c3", "c4")),
    "stdc1": ("stdc1", "stdc1", ("c2", "c3", "c4")),  # STDCNet's outputs at 1/8, 1/16, 1/32
    "stdc2": ("stdc2", "stdc2", ("c2", "c3", "c4")),
}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_from_an_mmseg_segmentation_checkpoint(name, tmp_path):
  """A backbone --arch reads the backbone of a whole-model checkpoint; ResNetV1c is the
  ImageNet one (strides, no dilation), built by mmseg from the model's own backbone
  config with those settings."""
  source_model, arch, keys = BACKBONES[name]
  model = R.randomize(build_mmseg(source_model), seed=len(name))
  path = str(tmp_path / f"{name}.pth")
  torch.save({"state_dict": model.state_dict()}, path)
  config, variables, converted = jaxseg.convert.convert_state_dict(read_state_dict(path), "mmseg", arch)
  assert converted["backbone_only"] and any(k.startswith("decode_head.") for k in converted["skipped"])

  if name.startswith("resnet"):
    reference = MODELS.build(dict(type="ResNetV1c", depth=50, out_indices=(0, 1, 2, 3), **resnet()))
    reference.load_state_dict(model.backbone.state_dict())
    reference.eval()  # (mmseg's ResNet.train returns None: not chained)
  else:
    reference = model.backbone.backbone
  x = torch_input(IMAGES)
  with torch.no_grad():
    theirs = [t.permute(0, 2, 3, 1).numpy() for t in reference(x)]
  backbone = build_model(config).backbone
  normalised = (jnp.asarray(IMAGES, jnp.float32) - jnp.float32(IMAGENET_MEAN)) / jnp.float32(IMAGENET_STD)
  feats = jax.jit(lambda v, x: backbone.apply(v, x, train=False))(
      {c: variables[c]["backbone"] for c in ("params", "batch_stats")}, normalised)
  for key, t in zip(keys, theirs):
    scale = float(np.abs(t).max())
    rel = float(np.abs(np.asarray(feats[key]) - t).max()) / scale
    print(f"\n[mmseg {mmseg.__version__} {name} {key}] max relative diff {rel:.2e} (max |value| {scale:.2f})")
    assert scale > 0.1 and rel <= TOL
