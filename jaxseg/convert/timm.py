"""timm ResNets: resnet18 ... resnet152 (7x7 stem, torchvision's key names) and the
deep-stem resnet50c/101c/152c (three 3x3 convs, the ResNetV1c stem). A pretrained
tag is ignored: "resnet50.a1_in1k" is resnet50. ResNet-D/S/T variants (average-pool
downsampling, tiered stems) have no jaxseg counterpart and are refused.
"""
from __future__ import annotations

import re

from jaxseg.convert.io import ConversionError
from jaxseg.convert.tables import Arch, backbone_keys, classifier_arch, parse_depth, resnet_rows, shape
from jaxseg.convert.torchvision import RESNET

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
