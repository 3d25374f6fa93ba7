"""DeepLabv3 head: Atrous Spatial Pyramid Pooling (Chen et al. 2017, Sec. 3.3).

ASPP = [1x1 conv, 3x3 conv rate r1, r2, r3, image pooling], each 256 channels with
BN + ReLU, concatenated, projected by a 1x1 conv (256, BN, ReLU), then the 1x1
classifier. The rates (6, 12, 18) are for output stride 16 and double at OS8.
Two options reproduce other toolboxes' heads: a 3x3 projection (mmsegmentation's
"bottleneck") and an extra 3x3 conv + BN + ReLU between ASPP and the classifier
(torchvision's DeepLabHead).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.errors import ConfigError
from jaxseg.models.layers import ConvBN


def scaled_rates(rates: Sequence[int], output_stride: int) -> tuple[int, ...]:
  """(6, 12, 18) at OS16 -> (12, 24, 36) at OS8, (3, 6, 9) at OS32."""
  return tuple(max(1, r * 16 // output_stride) for r in rates)


class ASPP(nn.Module):
  channels: int = 256
  rates: Sequence[int] = (6, 12, 18)
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  project_kernel: int = 1  # 3 in mmsegmentation

  @nn.compact
  def __call__(self, x, train: bool, extra=()):
    """`extra`: further branches (B, h, w, C) computed by the caller, concatenated
    before the projection (Gated-SCNN's edge branch)."""
    kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)
    branches = [ConvBN(self.channels, 1, **kw, name="conv1x1")(x, train)]
    for i, rate in enumerate(self.rates):
      branches.append(ConvBN(self.channels, 3, dilation=rate, **kw, name=f"atrous{i}")(x, train))
    # Image-level features: global average pool -> 1x1 conv + BN + ReLU -> upsample
    # (bilinear from a 1x1 map is a broadcast).
    pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
    pooled = ConvBN(self.channels, 1, **kw, name="image_pool")(pooled, train)
    branches.append(jnp.broadcast_to(pooled, branches[0].shape))
    x = jnp.concatenate(branches + list(extra), axis=-1)
    return ConvBN(self.channels, self.project_kernel, **kw, name="project")(x, train)


class DeepLabV3Head(nn.Module):
  num_classes: int
  channels: int = 256
  rates: Sequence[int] = (6, 12, 18)  # already scaled to the output stride
  dropout: float = 0.1
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  project_kernel: int = 1
  extra_conv: bool = False  # torchvision: 3x3 conv + BN + ReLU after ASPP's dropout

  @nn.compact
  def __call__(self, features, train: bool, batch=None):
    x = ASPP(self.channels, self.rates, self.bn_momentum, self.dtype, self.project_kernel,
             name="aspp")(features["c4"], train)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    if self.extra_conv:
      x = ConvBN(self.channels, 3, bn_momentum=self.bn_momentum, dtype=self.dtype, name="extra_conv")(x, train)
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)


# model.head of name "aspp": its keys with their defaults (jaxseg.config.head)
CONFIG = dict(
    channels=256,
    rates=(6, 12, 18),  # at output stride 16; scaled by 16 / OS
    project_kernel=1,  # the projection conv: 1 (paper, torchvision) or 3 (mmsegmentation)
    extra_conv=False,  # torchvision's DeepLabHead: 3x3 conv + BN + ReLU before the classifier
)
LOSSES = {}  # the output "seg" takes the cross-entropy


def build(h, config, output_stride, common):
  """The head of `h` (model.head) on a c4 at `output_stride`."""
  if h.project_kernel not in (1, 3):
    raise ConfigError(f"config key model.head.project_kernel must be 1 or 3, got {h.project_kernel}")
  m = config.model
  return DeepLabV3Head(config.dataset.num_classes, h.channels, scaled_rates(h.rates, output_stride), m.dropout,
                       **common, project_kernel=h.project_kernel, extra_conv=h.extra_conv)
