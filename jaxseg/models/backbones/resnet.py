"""Atrous ResNet (He et al. 2016; atrous/multi-grid from DeepLabv3, Chen et al. 2017).

Output stride 8/16/32 is reached by replacing the stride of the last stages with
dilation, so the same parameters work at any output stride. Convolutions pad like
PyTorch (explicit symmetric padding), which keeps feature sizes at ceil(H / stride)
and lets torchvision / mmsegmentation weights compute the same function.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.errors import ConfigError
from jaxseg.models.layers import ConvBN

# depth -> (blocks per stage, bottleneck?)
DEPTHS = {
    10: ((1, 1, 1, 1), False),  # a tiny test depth
    14: ((1, 1, 1, 1), True),  # a tiny bottleneck test depth
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
}


class BasicBlock(nn.Module):
  features: int
  stride: int = 1
  dilation: int = 1  # of the first 3x3, which carries the stride
  dilation2: int = 0  # of the second 3x3 (0: same as the first)
  downsample: bool = False
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)
    y = ConvBN(self.features, 3, self.stride, self.dilation, **kw, name="conv1")(x, train)
    y = ConvBN(self.features, 3, 1, self.dilation2 or self.dilation, relu=False, **kw, name="conv2")(y, train)
    if self.downsample:
      x = ConvBN(self.features, 1, self.stride, relu=False, **kw, name="downsample")(x, train)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (stride, dilation) -> 1x1 x4; stride on the 3x3 as in torchvision."""
  features: int
  stride: int = 1
  dilation: int = 1
  dilation2: int = 0  # unused: one 3x3 only
  downsample: bool = False
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)
    y = ConvBN(self.features, 1, **kw, name="conv1")(x, train)
    y = ConvBN(self.features, 3, self.stride, self.dilation, **kw, name="conv2")(y, train)
    y = ConvBN(self.features * 4, 1, relu=False, **kw, name="conv3")(y, train)
    if self.downsample:
      x = ConvBN(self.features * 4, 1, self.stride, relu=False, **kw, name="downsample")(x, train)
    return nn.relu(x + y)


def stage_strides_and_rates(output_stride: int, num_stages: int = 4):
  """Per-stage (stride, dilation) for a network whose stem already has stride 4.

  Stages 2..4 would each halve the resolution; once the target output stride is
  reached the stride becomes 1 and the dilation doubles instead.
  """
  if output_stride not in (8, 16, 32):
    raise ConfigError(f"model.backbone.output_stride must be 8, 16 or 32, got {output_stride}")
  current, rate, out = 4, 1, []
  for i in range(num_stages):
    stride = 1 if i == 0 else 2
    if stride == 2 and current >= output_stride:
      rate *= 2
      stride = 1
    elif stride == 2:
      current *= 2
    out.append((stride, rate))
  return out


class ResNet(nn.Module):
  """Returns {"c1": .., "c2": .., "c3": .., "c4": ..}: the output of every stage.

  With `extra_blocks` > 0, cascaded copies of the last stage (DeepLabv3 blocks 5-7)
  follow it; each would have halved the resolution, so each doubles the rate, and
  "c4" is the output of the last of them.
  """
  depth: int = 50
  width: int = 64
  stem: str = "deep"
  output_stride: int = 16
  multi_grid: Sequence[int] = (1, 2, 4)  # () = none: the last stage is dilated like the others
  contract_dilation: bool = True
  extra_blocks: int = 0
  # () = the rates follow from output_stride (each stride removed doubles the rate);
  # else the rate of each of the four stages, on top of the strides output_stride
  # keeps. mmseg's FastFCN "r50-d32" backbone: (1, 1, 2, 4) at output stride 32; the
  # FastFCN authors' backbone is not dilated (their JPU replaces the dilation).
  dilations: Sequence[int] = ()
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.depth not in DEPTHS:
      raise ConfigError(f"model.backbone.depth must be one of {sorted(DEPTHS)}, got {self.depth}")
    sizes, bottleneck = DEPTHS[self.depth]
    block = Bottleneck if bottleneck else BasicBlock
    kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)

    if self.stem == "7x7":
      x = ConvBN(self.width, 7, 2, **kw, name="stem")(x, train)
    elif self.stem == "deep":
      x = ConvBN(self.width // 2, 3, 2, **kw, name="stem1")(x, train)
      x = ConvBN(self.width // 2, 3, 1, **kw, name="stem2")(x, train)
      x = ConvBN(self.width, 3, 1, **kw, name="stem3")(x, train)
    else:
      raise ConfigError(f"model.backbone.stem must be '7x7' or 'deep', got '{self.stem}'")
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))

    plan = stage_strides_and_rates(self.output_stride)
    if self.dilations:
      if len(self.dilations) != 4 or min(self.dilations) < 1:
        raise ConfigError(f"model.backbone.dilations must be () or four rates >= 1, got {tuple(self.dilations)}")
      plan = [(stride, rate) for (stride, _), rate in zip(plan, self.dilations)]
    # Cascaded blocks 5..7 continue the plan: no more stride, the rate keeps doubling.
    stages = [(i, n, *plan[i]) for i, n in enumerate(sizes)]
    stages += [(3, sizes[3], 1, plan[3][1] * 2 ** (j + 1)) for j in range(self.extra_blocks)]

    features, in_channels = {}, self.width
    for s, (i, num_blocks, stride, rate) in enumerate(stages):
      channels = self.width * 2 ** i
      last = i == 3
      for b in range(num_blocks):
        if last and self.multi_grid:  # multi-grid: unit rates (r1, r2, r3) multiply the stage rate
          dilation = rate * self.multi_grid[b % len(self.multi_grid)]
        elif b == 0 and self.contract_dilation and rate > 1:
          dilation = rate // 2  # the conv that had the stride keeps the previous rate
        else:
          dilation = rate
        x = block(channels, stride=stride if b == 0 else 1, dilation=dilation,
                  dilation2=max(dilation, rate),
                  downsample=b == 0 and (stride != 1 or in_channels != channels * block.expansion),
                  **kw, name=f"layer{s + 1}_{b}")(x, train)
        in_channels = channels * block.expansion
      features[f"c{min(s, 3) + 1}"] = x
    return features
