"""Building blocks shared by backbones and heads."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def conv(features, kernel, stride=1, dilation=1, dtype=jnp.float32, name=None):
  pad = dilation * (kernel - 1) // 2
  return nn.Conv(features, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
                 kernel_dilation=dilation, use_bias=False, dtype=dtype, name=name,
                 kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))


class ConvBN(nn.Module):
  """conv -> BN (-> ReLU): the unit every head and backbone here is built from."""
  features: int
  kernel: int = 3
  stride: int = 1
  dilation: int = 1
  relu: bool = True
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = conv(self.features, self.kernel, self.stride, self.dilation, self.dtype, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                     dtype=self.dtype, name="bn")(x)
    return nn.relu(x) if self.relu else x


def resize(x, size, method="bilinear"):
  """Resizes NHWC `x` to spatial `size` = (H, W).

  Bilinear uses half-pixel centres (PyTorch `align_corners=False`) and no
  antialiasing, as segmentation toolboxes do when up- and downsampling logits.
  """
  if tuple(x.shape[1:3]) == tuple(size):
    return x
  return jax.image.resize(x, (x.shape[0], *size, x.shape[3]), method=method, antialias=False)
