"""FastFCN neck: Joint Pyramid Upsampling (Wu et al. 2019).

On a backbone that is NOT dilated (OS32), c2, c3, c4 (OS8, 16, 32) each go through a
3x3 conv to 512 (+ BN + ReLU), are upsampled to c2's size and concatenated (1536);
four parallel separable convs with dilation 1, 2, 4, 8 (depthwise 3x3 -> BN ->
pointwise 1x1 to 512 -> BN + ReLU) read the concatenation, and their outputs are
concatenated (2048 at OS8). The result replaces c4, so any head that reads c4 (PSP,
ASPP) runs on it; the other features are kept (the auxiliary head stays on c3).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models.layers import ConvBN, resize


class SeparableConv(nn.Module):
  """Depthwise 3x3 (dilated) -> BN -> pointwise 1x1 -> BN + ReLU."""
  features: int
  dilation: int = 1
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    d, c = self.dilation, x.shape[-1]
    bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                                   epsilon=1e-5, dtype=self.dtype, name=name)
    x = nn.Conv(c, (3, 3), padding=((d, d), (d, d)), kernel_dilation=d, feature_group_count=c,
                use_bias=False, dtype=self.dtype, name="depthwise")(x)
    x = bn("depthwise_bn")(x)  # no ReLU between depthwise and pointwise, as the official code
    return ConvBN(self.features, 1, bn_momentum=self.bn_momentum, dtype=self.dtype,
                  name="pointwise")(x, train)


class JPU(nn.Module):
  channels: int = 512
  dilations: Sequence[int] = (1, 2, 4, 8)
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  align_corners: bool = False  # of the upsampling (see layers.resize)

  @nn.compact
  def __call__(self, features, train: bool):
    kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)
    size = features["c2"].shape[1:3]
    # y_c = [up(conv(c4)), up(conv(c3)), conv(c2)]: every level in one 512-d embedding at OS8
    ys = [resize(ConvBN(self.channels, 3, **kw, name=f"conv_{k}")(features[k], train), size,
                 align_corners=self.align_corners)
          for k in ("c4", "c3", "c2")]
    y = jnp.concatenate(ys, axis=-1)
    # Dilation 1 relates each position to its neighbours at OS8; 2, 4, 8 reach the
    # positions the coarser levels were computed from (the paper's h-hat mapping).
    y = jnp.concatenate([SeparableConv(self.channels, d, **kw, name=f"dilation{d}")(y, train)
                         for d in self.dilations], axis=-1)
    return {**features, "c4": y}


# model.neck of name "jpu": its keys with their defaults (jaxseg.config.neck)
CONFIG = dict(channels=512)  # per level, 4 x channels out
OUTPUT_STRIDE = 8  # of the c4 it hands the head: c2's


def build(n, config, common):
  return JPU(n.channels, **common, align_corners=config.model.align_corners)
