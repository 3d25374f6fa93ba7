"""STDC networks (Fan et al., CVPR 2021, "Rethinking BiSeNet For Real-time Semantic
Segmentation"): Short-Term Dense Concatenate modules stacked in five stages.

An STDC module with N output channels and n blocks: block 1 is a 1x1 ConvBNReLU to
N/2, blocks i = 2..n-1 are 3x3 ConvBNReLUs to N/2^i, block n repeats N/2^(n-1), and
the output concatenates all blocks: N/2 + N/4 + ... + N/2^(n-1) + N/2^(n-1) = N. In a
stride-2 module a depthwise 3x3 stride-2 conv + BN follows block 1, and block 1's
output joins the concatenation through a 3x3 stride-2 average pool.

Stages 1-2 are plain stride-2 ConvBNReLUs (width/2 and width channels), stages 3-5
stack STDC modules (the first with stride 2) of width 4x, 8x and 16x the base width.
STDC1 has [2, 2, 2] modules in stages 3-5, STDC2 [4, 5, 3].
Features by output stride, named as ResNet's: "c1" 1/4, "c2" 1/8, "c3" 1/16, "c4" 1/32.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.errors import ConfigError
from jaxseg.models.atrous_conv import DepthwiseConv
from jaxseg.models.layers import ConvBN

# model.backbone.name -> STDC modules in stages 3, 4, 5
STDC_LAYERS = {"stdc1": (2, 2, 2), "stdc2": (4, 5, 3)}


def block_widths(features, blocks):
  """Output channels of the n blocks of an STDC module: N/2, N/4, ..., N/2^(n-1), N/2^(n-1)."""
  if blocks < 2 or features % 2 ** (blocks - 1):
    raise ConfigError(f"an STDC module of {features} channels cannot have {blocks} blocks "
                      f"(needs blocks >= 2 and channels divisible by {2 ** (blocks - 1)})")
  widths = [features // 2 ** i for i in range(1, blocks)]
  return widths + [widths[-1]]


class STDCModule(nn.Module):
  features: int  # N
  stride: int = 1
  blocks: int = 4
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)
    widths = block_widths(self.features, self.blocks)
    first = ConvBN(widths[0], 1, **kw, name="block1")(x, train)
    y, skip = first, first
    if self.stride == 2:
      # The stride-2 module downsamples block 1's output by a depthwise 3x3 conv + BN
      # (for the next block) and by a 3x3 average pool (for the concatenation).
      y = DepthwiseConv(3, 2, self.dtype, name="downsample_conv")(first)
      y = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                       dtype=self.dtype, name="downsample_bn")(y)
      skip = nn.avg_pool(first, (3, 3), (2, 2), padding=((1, 1), (1, 1)))  # zeros count, as PyTorch
    outs = [skip]
    for i, width in enumerate(widths[1:], start=2):
      y = ConvBN(width, 3, **kw, name=f"block{i}")(y, train)
      outs.append(y)
    return jnp.concatenate(outs, axis=-1)  # x_out = F(x_1, x_2, ..., x_n), concatenation


class STDCNet(nn.Module):
  """The STDC backbone: {"c1", "c2", "c3", "c4"} at output strides 4, 8, 16, 32."""
  layers: Sequence[int] = (2, 2, 2)
  width: int = 64
  blocks: int = 4
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)
    x = ConvBN(self.width // 2, 3, 2, **kw, name="stage1")(x, train)  # 1/2
    x = ConvBN(self.width, 3, 2, **kw, name="stage2")(x, train)  # 1/4
    features = {"c1": x}
    for s, num_modules in enumerate(self.layers):  # stages 3, 4, 5 at 1/8, 1/16, 1/32
      for m in range(num_modules):
        x = STDCModule(self.width * 4 * 2 ** s, 2 if m == 0 else 1, self.blocks, **kw,
                       name=f"stage{s + 3}_{m}")(x, train)
      features[f"c{s + 2}"] = x
    return features


class STDCClassifier(nn.Module):
  """STDC with the ImageNet head used to pretrain it (paper Table 1, stage 6): 1x1
  ConvBNReLU to max(1024, 16 x width), global pool, FC + BN + ReLU, dropout 0.2, FC to
  the classes. The segmentor takes the "backbone" subtree of its parameters."""
  layers: Sequence[int] = (2, 2, 2)
  width: int = 64
  num_classes: int = 1000
  dropout: float = 0.2
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)
    x = STDCNet(self.layers, self.width, **kw, name="backbone")(x, train)["c4"]
    channels = max(1024, self.width * 16)
    x = ConvBN(channels, 1, **kw, name="conv_last")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(channels, use_bias=False, dtype=self.dtype, name="fc")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                             dtype=self.dtype, name="fc_bn")(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, use_bias=False, dtype=self.dtype, name="classifier")(x)
