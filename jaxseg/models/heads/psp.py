"""PSPNet head: Pyramid Pooling Module (Zhao et al. 2017, Sec. 3.2).

c4 (C channels) is pooled to n x n bins for n in (1, 2, 3, 6); each pooled map goes
through a 1x1 conv to C/4 (+ BN + ReLU), is upsampled bilinearly back to c4's size
and concatenated with c4 (2C channels); a 3x3 conv (512, BN, ReLU), dropout 0.1 and
the 1x1 classifier follow. The paper's ablation switches: max instead of average
pooling, and no dimension reduction (C channels per branch instead of C/4).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.errors import ConfigError
from jaxseg.models.layers import ConvBN, resize


def adaptive_bins(size: int, n: int) -> list[tuple[int, int]]:
  """[start, end) of the n bins adaptive pooling splits `size` into (PyTorch's rule):
  bin i spans [floor(i * L / n), ceil((i + 1) * L / n)), so neighbouring bins overlap
  when L is not a multiple of n, and every bin is non-empty even when n > L."""
  return [(i * size // n, -(-(i + 1) * size // n)) for i in range(n)]


def adaptive_pool(x, bins: int, pooling: str = "avg"):
  """(B, H, W, C) -> (B, bins, bins, C) adaptive average or max pooling.

  A bin is a rectangle (row range x column range), and both the mean and the max
  over a rectangle can be taken rows first, then columns; so the pooling is two
  passes of `bins` static slices each, traced once per shape.
  """
  reduce = {"avg": jnp.mean, "max": jnp.max}[pooling]
  for axis in (1, 2):
    parts = [reduce(jax.lax.slice_in_dim(x, lo, hi, axis=axis), axis=axis, keepdims=True)
             for lo, hi in adaptive_bins(x.shape[axis], bins)]
    x = jnp.concatenate(parts, axis=axis)
  return x


class PyramidPooling(nn.Module):
  """[x, up(conv(pool_1(x))), up(conv(pool_2(x))), ...] concatenated on channels."""
  bins: Sequence[int] = (1, 2, 3, 6)
  pooling: str = "avg"
  reduction: bool = True  # C / len(bins) channels per branch (C/4 in the paper); else C
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  align_corners: bool = False  # of the upsampling (see layers.resize)

  @nn.compact
  def __call__(self, x, train: bool):
    size, channels = x.shape[1:3], x.shape[-1]
    branch_channels = channels // len(self.bins) if self.reduction else channels
    outs = [x]
    for n in self.bins:
      y = adaptive_pool(x, n, self.pooling)
      y = ConvBN(branch_channels, 1, bn_momentum=self.bn_momentum, dtype=self.dtype,
                 name=f"bin{n}")(y, train)
      outs.append(resize(y, size, align_corners=self.align_corners))
    return jnp.concatenate(outs, axis=-1)


class PSPHead(nn.Module):
  num_classes: int
  channels: int = 512
  bins: Sequence[int] = (1, 2, 3, 6)
  pooling: str = "avg"
  reduction: bool = True
  dropout: float = 0.1
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  align_corners: bool = False

  @nn.compact
  def __call__(self, features, train: bool, batch=None):
    kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)
    x = PyramidPooling(tuple(self.bins), self.pooling, self.reduction, **kw,
                       align_corners=self.align_corners, name="ppm")(features["c4"], train)
    x = ConvBN(self.channels, 3, **kw, name="bottleneck")(x, train)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)


# model.head of name "psp": its keys with their defaults (jaxseg.config.head)
CONFIG = dict(
    channels=512,  # of the 3x3 conv after the pyramid
    bins=(1, 2, 3, 6),
    pooling="avg",  # "avg" or "max" (the paper's ablation: avg is better)
    reduction=True,  # 1x1 conv to C / len(bins) per branch; False keeps C
)
LOSSES = {}  # the output "seg" takes the cross-entropy


def build(h, config, output_stride, common):
  if h.pooling not in ("avg", "max"):
    raise ConfigError(f"config key model.head.pooling must be 'avg' or 'max', got '{h.pooling}'")
  if not h.bins or any(int(n) != n or n < 1 for n in h.bins):
    raise ConfigError(f"config key model.head.bins must be positive integers, got {tuple(h.bins)}")
  m = config.model
  return PSPHead(config.dataset.num_classes, h.channels, tuple(int(n) for n in h.bins), h.pooling, h.reduction,
                 m.dropout, **common, align_corners=m.align_corners)
