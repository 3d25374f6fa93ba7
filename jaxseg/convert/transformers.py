"""Hugging Face transformers ResNet (ResNetModel, or ResNetForImageClassification
whose keys start with "resnet."), e.g. microsoft/resnet-50: the torchvision network
under other names. Stage s counts from 0 and layer k of a block from 0; the stride is
on the 3x3 conv (downsample_in_bottleneck=False, the default of these checkpoints).
"""
from __future__ import annotations

import re

from jaxseg.convert.tables import Arch, backbone_keys, classifier_arch, parse_depth, shape

RESNET = [
    ("embedder.embedder.convolution", "backbone/stem/conv", "conv"),
    ("embedder.embedder.normalization", "backbone/stem/bn", "bn"),
    ("encoder.stages.{s}.layers.{b}.shortcut.convolution", "backbone/layer{s+1}_{b}/downsample/conv", "conv"),
    ("encoder.stages.{s}.layers.{b}.shortcut.normalization", "backbone/layer{s+1}_{b}/downsample/bn", "bn"),
    ("encoder.stages.{s}.layers.{b}.layer.{k}.convolution", "backbone/layer{s+1}_{b}/conv{k+1}/conv", "conv"),
    ("encoder.stages.{s}.layers.{b}.layer.{k}.normalization", "backbone/layer{s+1}_{b}/conv{k+1}/bn", "bn"),
]


def arch(name, classifier=False):
  m = re.fullmatch(r"(microsoft/)?resnet-?(?P<depth>\d+)", name)
  depth = parse_depth(name, m, "resnet-18/34/50/101/152 (as microsoft/resnet-50)")
  keys = lambda sd: backbone_keys(depth, shape(sd, "embedder.embedder.convolution.weight")[0], "7x7")
  if classifier:  # ResNetForImageClassification: classifier = Sequential(Flatten, Linear)
    return classifier_arch(name, RESNET, "classifier.1", keys, strip_prefix="resnet.")
  return Arch(name, RESNET, keys, skip=(r"classifier\..*",), strip_prefix="resnet.", backbone_only=True)
