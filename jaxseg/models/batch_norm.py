"""Training-mode BatchNorm with a hand-written gradient: two passes each way.

Over the M = N*H*W values of a channel (the global batch: under jit on a sharded batch
the sums below are all-reduced by XLA, as for flax's BatchNorm):

  mean = sum x / M,  var = sum x^2 / M - mean^2,  inv = 1 / sqrt(var + eps)
  y = (x - mean) * inv * scale + bias                                   (forward)
  dbias = sum dy,  dscale = sum dy * xhat,   xhat = (x - mean) * inv
  dx = scale * inv / M * (M dy - dbias - xhat * dscale)                 (backward)

The forward reads x twice (both statistics in one float32 pass, then the normalise
pass), the backward reads (dy, x) twice (both sums in one pass, then dx). JAX's
autodiff of flax's BatchNorm leaves XLA about ten passes over the activation per BN
in a training step (measured in the DeepLabv3-R50 HLO on CPU), each a full read of a
tensor that does not fit in cache. The statistics are returned too (flax's running
averages), and their cotangents, zero in training, are still honoured:
d mean / dx = 1 / M, d var / dx = 2 (x - mean) / M.

`BatchNorm` is flax.linen.BatchNorm with the same variables, options and running
averages (frozen_bn's interceptor still recognises it); it takes this path in
training on CPU, where the gain was measured, and flax's otherwise. Masked, pmean'd
(axis_name) or scale/bias-free BatchNorms keep flax's. JAXSEG_BATCH_NORM=flax|fused|auto
forces one.
"""
from __future__ import annotations

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp


def batch_norm_lowering(backend=None):
  """'fused' (this module's gradient) or 'flax' for a training-mode BatchNorm on `backend`."""
  forced = os.environ.get("JAXSEG_BATCH_NORM", "auto")
  if forced not in ("auto", "flax", "fused"):
    raise ValueError(f"JAXSEG_BATCH_NORM must be auto, flax or fused, got '{forced}'")
  if forced != "auto":
    return forced
  return "fused" if (backend or jax.default_backend()) == "cpu" else "flax"


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x, scale, bias, epsilon, dtype):
  """(y, mean, var) of channels-last `x` normalised by its own statistics over every
  axis but the last; y in `dtype`, the statistics in float32."""
  return _forward(x, scale, bias, epsilon, dtype)[0]


def _stats(x):
  x32 = x.astype(jnp.float32)
  axes = tuple(range(x.ndim - 1))
  mean, mean2 = jnp.mean(x32, axes), jnp.mean(jnp.square(x32), axes)  # one pass: sibling reductions
  return mean, jnp.maximum(0.0, mean2 - jnp.square(mean))  # flax's fast variance, clipped as there


def _forward(x, scale, bias, epsilon, dtype):
  mean, var = _stats(x)
  inv = jax.lax.rsqrt(var + epsilon)
  a = inv * scale.astype(jnp.float32)
  y = (x.astype(jnp.float32) - mean) * a + bias.astype(jnp.float32)
  return (y.astype(dtype), mean, var), (x, scale, mean, inv)


def _backward(epsilon, dtype, residuals, cotangents):
  x, scale, mean, inv = residuals
  dy, dmean, dvar = cotangents
  m = x.size // x.shape[-1]
  axes = tuple(range(x.ndim - 1))
  x32, dy32 = x.astype(jnp.float32), dy.astype(jnp.float32)
  xhat = (x32 - mean) * inv
  dbias, dscale = jnp.sum(dy32, axes), jnp.sum(dy32 * xhat, axes)  # one pass over (dy, x)
  s = scale.astype(jnp.float32) * inv
  dx = s / m * (m * dy32 - dbias - xhat * dscale) + dmean / m + dvar * 2 / m * (x32 - mean)
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


batch_norm_train.defvjp(_forward, _backward)


class BatchNorm(nn.BatchNorm):
  """flax.linen.BatchNorm, its training mode through `batch_norm_train` where
  `batch_norm_lowering` says so (see the module docstring)."""

  @nn.compact
  def __call__(self, x, use_running_average=None, *, mask=None):
    use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
    if (use_running_average or mask is not None or self.axis_name is not None or self.axis not in (-1, x.ndim - 1)
        or not (self.use_scale and self.use_bias) or not self.use_fast_variance
        or not self.force_float32_reductions or batch_norm_lowering() != "fused"):
      return super().__call__(x, use_running_average, mask=mask)
    features = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), features)
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
    scale = self.param("scale", self.scale_init, features, self.param_dtype)
    bias = self.param("bias", self.bias_init, features, self.param_dtype)
    dtype = jnp.dtype(self.dtype or jnp.result_type(x, scale, bias))  # flax's output dtype
    y, mean, var = batch_norm_train(x, scale, bias, float(self.epsilon), dtype)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y
