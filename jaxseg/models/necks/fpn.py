"""Feature Pyramid Network (Lin et al. 2017) and PANet's bottom-up path augmentation
(Liu et al. 2018, Sec. 3.1), on the ResNet feature dict (c1..c4 at strides 4..32).

FPN, torchvision's FeaturePyramidNetwork + LastLevelMaxPool:
  inner_5 = lateral_5(c4);  inner_i = lateral_i(c_{i-1}) + nearest_up(inner_{i+1})  (1x1 laterals)
  P_i = output_i(inner_i)  (3x3), i = 2..5;   P6 = P5[::2, ::2]  (max-pool, kernel 1, stride 2)

Bottom-up path (PANet Fig. 2; "all convolutional layers are followed by a ReLU"):
  N2 = P2,   N_{i+1} = ReLU(conv3x3(ReLU(conv3x3_stride2(N_i)) + P_{i+1})),  i = 2..4
and N6 = N5[::2, ::2] as the authors' code builds its extra level. With a norm the order
is conv -> norm -> ReLU inside each step (the authors' GN configuration; their convs
there keep a bias). Their code without GN has no ReLU in this path, against the paper:
`bottom_up_relu=False` gives that variant.

Norm "none" | "bn" | "gn" (GroupNorm, 32 groups, PANet's reimplementation); with a norm
the FPN convs have no bias (torchvision's v2 / the authors' GN FPN). Convs start from
Kaiming-uniform(a=1) with zero bias, torchvision's FPN initialisation.

Adds "p2".."p6" to the feature dict, and "n2".."n6" with `bottom_up`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

NORMS = ("none", "bn", "gn")
INPUTS = ("c1", "c2", "c3", "c4")  # strides 4, 8, 16, 32 -> P2..P5


def nearest_resize(x, size):
  """NHWC nearest resize: output i reads input floor(i * n_in / n_out) on each axis
  (PyTorch's F.interpolate(mode="nearest")); exactly 2x upsampling for even sizes."""
  for axis, n_out in zip((1, 2), size):
    n_in = x.shape[axis]
    if n_in != n_out:
      x = jnp.take(x, np.arange(n_out) * n_in // n_out, axis=axis)
  return x


def subsample(x):
  """max_pool2d(kernel 1, stride 2): every other pixel, starting at the first."""
  return x[:, ::2, ::2]


class ConvNorm(nn.Module):
  """conv (kxk, stride) -> norm (none / bn / gn) -> optional ReLU."""
  features: int
  kernel: int
  stride: int = 1
  norm: str = "none"
  relu: bool = False
  bias: bool | None = None  # None: a bias only without a norm
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  kernel_init: Any = None  # None: Kaiming-uniform(a=1), torchvision's FPN initialisation

  @nn.compact
  def __call__(self, x, train: bool):
    pad = (self.kernel - 1) // 2
    init = self.kernel_init or nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
    bias = self.norm == "none" if self.bias is None else self.bias
    x = nn.Conv(self.features, (self.kernel, self.kernel), strides=self.stride,
                padding=((pad, pad), (pad, pad)), use_bias=bias, dtype=self.dtype,
                kernel_init=init, name="conv")(x)
    if self.norm == "bn":
      x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                       dtype=self.dtype, name="norm")(x)
    elif self.norm == "gn":
      x = nn.GroupNorm(num_groups=32, epsilon=1e-5, dtype=self.dtype, name="norm")(x)
    return nn.relu(x) if self.relu else x


class FPN(nn.Module):
  channels: int = 256
  norm: str = "none"
  bottom_up: bool = False  # PANet's path augmentation
  bottom_up_relu: bool = True
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, train: bool):
    if self.norm not in NORMS:
      raise ValueError(f"model.neck.norm must be one of {NORMS}, got '{self.norm}'")
    missing = [k for k in INPUTS if k not in features]
    if missing:
      raise ValueError(f"FPN needs backbone features {INPUTS}, missing {missing}")
    kw = dict(norm=self.norm, bn_momentum=self.bn_momentum, dtype=self.dtype)
    c = self.channels
    inner = ConvNorm(c, 1, **kw, name="lateral5")(features["c4"], train)
    p = {5: ConvNorm(c, 3, **kw, name="output5")(inner, train)}
    for level in (4, 3, 2):  # top-down: inner_i = lateral(c) + up(inner_{i+1})
      lateral = ConvNorm(c, 1, **kw, name=f"lateral{level}")(features[INPUTS[level - 2]], train)
      inner = lateral + nearest_resize(inner, lateral.shape[1:3])
      p[level] = ConvNorm(c, 3, **kw, name=f"output{level}")(inner, train)
    p[6] = subsample(p[5])
    out = {**features, **{f"p{i}": p[i] for i in range(2, 7)}}
    if not self.bottom_up:
      return out
    relu = self.bottom_up_relu
    bkw = dict(kw, relu=relu, bias=True)
    n = {2: p[2]}  # N2 = P2
    for level in (2, 3, 4):  # N_{i+1} = ReLU(conv(ReLU(conv_s2(N_i)) + P_{i+1}))
      down = ConvNorm(c, 3, 2, **bkw, name=f"down{level}")(n[level], train)
      n[level + 1] = ConvNorm(c, 3, **bkw, name=f"fuse{level + 1}")(down + p[level + 1], train)
    n[6] = subsample(n[5])
    return {**out, **{f"n{i}": n[i] for i in range(2, 7)}}
