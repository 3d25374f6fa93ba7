"""Building blocks shared by backbones and heads."""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models import atrous_conv


def conv(features, kernel, stride=1, dilation=1, dtype=jnp.float32, name=None):
  if dilation > 1 or kernel == 1 or stride == 1:  # same parameters; lowered per backend (XLA:CPU's are slow)
    return atrous_conv.Conv(features, kernel, stride, dilation, dtype, name=name)
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
    if not train and self.has_variable("params", "bias"):  # the BN folded into the conv (models/fold_bn.py)
      x = x + self.get_variable("params", "bias").astype(x.dtype)
    else:
      x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                       dtype=self.dtype, name="bn")(x)
    return nn.relu(x) if self.relu else x


def resize(x, size, method="bilinear", align_corners=False):
  """Resizes NHWC `x` to spatial `size` = (H, W).

  Bilinear uses half-pixel centres (PyTorch `align_corners=False`) and no
  antialiasing, as segmentation toolboxes do when up- and downsampling logits.
  `align_corners=True` maps corner pixel to corner pixel instead (PyTorch's
  `align_corners=True`, which some checkpoints were trained with).
  """
  if tuple(x.shape[1:3]) == tuple(size):
    return x
  if align_corners and method == "bilinear":
    return _resize_align_corners(x, size)
  if method == "bilinear" and resize_lowering() == "lerp":
    return _resize_lerp(x, tuple(size))
  return jax.image.resize(x, (x.shape[0], *size, x.shape[3]), method=method, antialias=False)


def resize_lowering(backend=None):
  """'lerp' or 'xla' for the half-pixel bilinear resize on `backend`: XLA's
  jax.image.resize is one matmul per axis with an interpolation matrix, and on
  XLA:CPU transposes the output for it (a 64x128 -> 512x1024 resize of 19 channels:
  about 3x the time of the two-tap form below, measured on a 2-core CPU).
  JAXSEG_RESIZE=xla|lerp|auto forces one."""
  return atrous_conv.cpu_lowering("JAXSEG_RESIZE", "lerp", backend)


def _half_pixel_taps(n_in, n_out):
  """(lo, hi, weight of hi) per output pixel i: it samples input position
  (i + 0.5) * n_in / n_out - 0.5, clamped to the image (PyTorch's align_corners=False;
  the scale in float32 and the position rounded once to float32, as PyTorch and XLA
  compute it: other roundings move weights by an ulp of the position, 1e-5 of a logit)."""
  scale = np.float64(np.float32(n_in) / np.float32(n_out))
  pos = np.clip((scale * (np.arange(n_out) + 0.5) - 0.5).astype(np.float32), 0, n_in - 1)
  lo = np.floor(pos).astype(np.int32)
  return lo, np.minimum(lo + 1, n_in - 1), (pos - lo).astype(np.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _resize_lerp(x, size):
  """jax.image.resize(bilinear, no antialias) as two taps per axis, x[lo] (1 - w) + x[hi] w.
  Its gradient is jax.image.resize's own (the same linear map, transposed)."""
  for axis, n_out in zip((1, 2), size):
    lo, hi, w = _half_pixel_taps(x.shape[axis], n_out)
    w = jnp.asarray(w, x.dtype).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    x = jnp.take(x, lo, axis=axis) * (1 - w) + jnp.take(x, hi, axis=axis) * w
  return x


def _resize_lerp_grad(size, x, g):
  _, vjp = jax.vjp(lambda x: jax.image.resize(x, (x.shape[0], *size, x.shape[3]), "bilinear", antialias=False), x)
  return vjp(g)


_resize_lerp.defvjp(lambda x, size: (_resize_lerp(x, size), x), _resize_lerp_grad)


def _resize_align_corners(x, size):
  """Bilinear with output pixel i sampling input position i * (n_in - 1) / (n_out - 1)."""
  for axis, n_out in zip((1, 2), size):
    n_in = x.shape[axis]
    pos = jnp.linspace(0.0, n_in - 1.0, n_out)  # one output pixel samples position 0
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, n_in - 1)
    w = (pos - lo).astype(x.dtype).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    x = jnp.take(x, lo, axis=axis) * (1 - w) + jnp.take(x, hi, axis=axis) * w
  return x
