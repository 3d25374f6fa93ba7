"""timm ResNets: resnet18 ... resnet152 (7x7 stem, torchvision's key names) and the
deep-stem resnet50c/101c/152c (three 3x3 convs, the ResNetV1c stem). A pretrained
tag is ignored: "resnet50.a1_in1k" is resnet50. ResNet-D/S/T variants (average-pool
downsampling, tiered stems) have no jaxseg counterpart and are refused.

And Swin (--arch swin_*, e.g. swin_large_patch4_window12_384): timm's key names, which
are the Microsoft release's and, under "backbone.", the Mask2Former / OneFormer authors'
D2SwinTransformer's (whose stage output norms are norm0..norm3). The fused qkv projection
is split into query, key, value; timm >= 0.9 files merge at the start of stages 1-3
(layers.{s}.downsample), the original ones at the end of stages 0-2: both are read.
"""
from __future__ import annotations

import math
import re

import numpy as np

from jaxseg.convert.io import ConversionError
from jaxseg.convert.tables import Arch, backbone_keys, classifier_arch, parse_depth, resnet_rows, shape
from jaxseg.convert.torchvision import RESNET
from jaxseg.convert.transformers import swin_output_norms

# timm.models.resnet with stem_type="deep": conv1 = Sequential(conv, BN, ReLU, conv, BN,
# ReLU, conv) and the last BN is bn1.
RESNET_DEEP_STEM = [
    ("conv1.0", "backbone/stem1/conv", "conv"),
    ("conv1.1", "backbone/stem1/bn", "bn"),
    ("conv1.3", "backbone/stem2/conv", "conv"),
    ("conv1.4", "backbone/stem2/bn", "bn"),
    ("conv1.6", "backbone/stem3/conv", "conv"),
    ("bn1", "backbone/stem3/bn", "bn"),
    *resnet_rows(),
]

KNOWN = "resnet18/34/50/101/152, resnet50c/101c/152c"


def arch(name, classifier=False):
  base = name.split(".")[0]  # drop the pretrained tag
  if base.startswith("swin"):
    if classifier:
      raise ConversionError(f"--classifier: --arch {name}: only ImageNet ResNets convert with their classifier")
    return swin_arch(name)
  m = re.fullmatch(r"(tv_)?resnet(?P<depth>\d+)(?P<variant>[a-z]*)", base)
  if m and m.group("variant") not in ("", "c"):
    raise ConversionError(f"--arch {name}: timm's ResNet-{m.group('variant').upper()} variant "
                          f"(average-pool downsample or tiered stem) is not jaxseg's ResNet; known: {KNOWN}")
  depth = parse_depth(name, m, KNOWN)
  if m.group("variant") == "c":
    keys = lambda sd: backbone_keys(depth, shape(sd, "bn1.weight")[0], "deep")
    if classifier:
      return classifier_arch(name, RESNET_DEEP_STEM, "fc", keys)
    return Arch(name, RESNET_DEEP_STEM, keys, skip=(r"fc\..*",), backbone_only=True)
  if classifier:
    return classifier_arch(name, RESNET, "fc", lambda sd: backbone_keys(depth, shape(sd, "conv1.weight")[0], "7x7"))
  return Arch(name, RESNET, lambda sd: backbone_keys(depth, shape(sd, "conv1.weight")[0], "7x7"),
              skip=(r"fc\..*",), backbone_only=True)


_BLOCK, _OURS = "layers.{s}.blocks.{b}.", "backbone/stage{s+1}_block{b}/"
SWIN = [
    ("patch_embed.proj", "backbone/patch_embed", "conv"),
    ("patch_embed.norm", "backbone/patch_norm", "layernorm"),
    (_BLOCK + "norm1", _OURS + "norm1", "layernorm"),
    (_BLOCK + "attn.qkv", _OURS + "attn/qkv", "linear"),  # split by swin_fixup
    (_BLOCK + "attn", _OURS + "attn", "rel_bias"),
    (_BLOCK + "attn.proj", _OURS + "attn/proj", "linear"),
    (_BLOCK + "norm2", _OURS + "norm2", "layernorm"),
    (_BLOCK + "mlp.fc1", _OURS + "fc1", "linear"),
    (_BLOCK + "mlp.fc2", _OURS + "fc2", "linear"),
    ("layers.{s}.downsample.norm", "backbone/merge{s+1}/norm", "layernorm"),  # the original layout;
    ("layers.{s}.downsample.reduction", "backbone/merge{s+1}/reduction", "linear"),  # swin_fixup shifts timm's
    ("norm{s}", "backbone/norm{s+1}", "layernorm"),  # D2SwinTransformer's stage output norms
]


def swin_keys(sd):
  width, _, patch, _ = shape(sd, "patch_embed.proj.weight")
  if patch != 4:
    raise ConversionError(f"patch_embed.proj.weight: patch size {patch}, jaxseg's Swin has 4")
  blocks = {}
  for k in sd:
    m = re.fullmatch(r"layers\.(\d+)\.blocks\.(\d+)\.norm1\.weight", k)
    if m:
      blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
  depths = tuple(len(blocks.get(s, ())) for s in range(4))
  if sorted(blocks) != [0, 1, 2, 3] or any(blocks[s] != set(range(depths[s])) for s in range(4)):
    raise ConversionError(f"expected 4 stages of blocks 0..n-1 under layers., found "
                          f"{ {s: sorted(b) for s, b in sorted(blocks.items())} }")
  tables = [shape(sd, f"layers.{s}.blocks.0.attn.relative_position_bias_table") for s in range(4)]
  return {"model.backbone.name": "swin", "model.backbone.width": int(width),
          "model.backbone.swin_depths": depths, "model.backbone.swin_heads": tuple(int(t[1]) for t in tables),
          "model.backbone.swin_window": (math.isqrt(int(tables[0][0])) + 1) // 2,  # (2M - 1)^2 rows
          "model.backbone.output_stride": 32, "model.eval_output_stride": 32}


def swin_fixup(out):
  """qkv (C, 3C) -> query, key, value (C, C) each, in that order (timm reshapes the 3C
  outputs as (3, heads, head dim)); timm >= 0.9's merge before stage s is our merge{s}
  (the table wrote merge{s+1}); the stage output norms a classification checkpoint lacks
  start as LayerNorm's initialisation."""
  for key in [k for k in out if "/attn/qkv/" in k]:
    value, src = out.pop(key)
    for part, name in zip(np.split(value, 3, axis=-1), ("query", "key", "value")):
      out[key.replace("/qkv/", f"/{name}/")] = (part, src)
  if "params/backbone/merge4/reduction/kernel" in out:  # timm >= 0.9: layers.1-3.downsample
    for k in sorted(k for k in out if k.startswith("params/backbone/merge")):
      stage = int(k[len("params/backbone/merge")])
      value = out.pop(k)
      out[k.replace(f"merge{stage}", f"merge{stage - 1}", 1)] = value
  swin_output_norms(out)


def swin_arch(name):
  return Arch(name, SWIN, swin_keys, fixup=swin_fixup, backbone_only=True, strip_prefix="backbone.",
              skip=(r"head\..*", r"norm\.(weight|bias)", r".*\.attn_mask"))  # classifier, final norm, buffers
