"""Segmentor = backbone (+ neck) + decode head + auxiliary heads.

`Segmentor(...)(images, train)` takes normalised NHWC float images and returns a dict
of logits at feature resolution: "seg" from the decode head, plus one entry per
auxiliary head ("aux"). Losses and inference resize them to the label/image size.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.errors import ConfigError
from jaxseg.models.backbones.resnet import ResNet
from jaxseg.models.heads.aspp import DeepLabV3Head, scaled_rates
from jaxseg.models.heads.fcn import FCNHead


class Segmentor(nn.Module):
  backbone: nn.Module
  decode_head: nn.Module
  aux_heads: dict[str, nn.Module]

  @nn.compact
  def __call__(self, images, train: bool = False):
    features = self.backbone(images, train)
    outputs = {"seg": self.decode_head(features, train)}
    if train:  # auxiliary heads only supervise training; inference skips them
      for name, head in self.aux_heads.items():
        outputs[name] = head(features, train)
    return outputs


def build_model(config, output_stride: int | None = None) -> Segmentor:
  """The segmentor described by `config.model`, optionally at another output stride
  (same parameters: only strides, dilations and ASPP rates change)."""
  m = config.model
  num_classes = config.dataset.num_classes
  os_ = output_stride or m.backbone.output_stride
  dtype = jnp.dtype(m.dtype)
  common = dict(bn_momentum=m.bn_momentum, dtype=dtype)
  backbone = ResNet(depth=m.backbone.depth, width=m.backbone.width, stem=m.backbone.stem,
                    output_stride=os_, multi_grid=tuple(m.backbone.multi_grid),
                    contract_dilation=m.backbone.contract_dilation,
                    extra_blocks=m.backbone.extra_blocks, **common)
  if m.decode_head != "aspp":
    raise ConfigError(f"config key model.decode_head: unknown head '{m.decode_head}' (known: aspp)")
  head = DeepLabV3Head(num_classes, m.head_channels, scaled_rates(m.aspp_rates, os_),
                       m.dropout, **common)
  aux = {}
  if m.aux_head:
    aux["aux"] = FCNHead(num_classes, m.aux_channels, "c3", m.dropout, **common)
  return Segmentor(backbone, head, aux)
