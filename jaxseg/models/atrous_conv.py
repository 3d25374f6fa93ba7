"""Dilated ("atrous") convolution with a lowering chosen per backend and shape.

XLA:CPU lowers a dilated convolution to one whose cost grows with the rate (the
dilated kernel is as expensive as a dense kernel of size (k-1)*d+1 over the padded
image), while the convolution itself only needs k*k taps. On CPU the taps form is
used instead where it is faster:

  y[i, j] = sum_{a,b} x[i + (a-c)*d, j + (b-c)*d] @ W[a, b],   c = (k-1)/2

one matmul over channels per tap (a, b), each over only the output window where
the shifted input lies inside the image (zero padding contributes nothing), added
into that window. At a rate >= the input size every off-centre tap falls outside
the image and the convolution is the 1x1 centre tap alone. Measured on a 2-core
CPU (benchmarks/atrous_conv_speed.py) XLA's forward stays faster at small rates
(ResNet stages at rate 2-4) and the taps win from rate 8 (ASPP's 12/24/36), while
the kernel gradient of the taps form wins at every rate > 1; `dilated_conv`
therefore runs the faster forward, the input gradient (the same convolution of the
cotangent with the flipped kernel) lowered as the forward, and always the taps'
kernel gradient (the convolution is bilinear: its gradients need only x, the kernel
and the cotangent). GPU and TPU keep XLA's convolution both ways (their
convolution kernels take the dilation natively).

The parameter is `kernel` of shape (k, k, in, out), as flax.linen.Conv's, so
checkpoints and imported weights do not depend on the lowering.

JAXSEG_DILATED_CONV=xla|taps|mixed|auto (default auto) forces a lowering on any
backend, for benchmarks and tests ("xla": XLA's convolutions throughout).

Undilated 3x3 convolutions (stride 1) keep XLA's forward; with >= 128 channels their
gradients are the taps' too (XLA:CPU's kernel gradient, a convolution over the
whole image with the cotangent as its window, measured 1.5-2x slower at the 3x3
1024->256 of the auxiliary FCN head and the 3x3s of the heads; at 64 channels a tie).

1x1 convolutions (ResNet's bottleneck and downsample convs, most of its FLOPs) go
through here too: XLA:CPU hands them to its convolution library, 3-5x slower than
the same contraction as a matmul forward and 5-10x slower backward (measured on a
2-core CPU at ResNet-50's OS8 shapes), so on CPU they are a matmul over channels
(strided: of the strided input). JAXSEG_POINTWISE_CONV=xla|matmul|auto forces one.

Depthwise 3x3 convolutions (STDC's stride-2 downsampling) are grouped convolutions
with one channel per group, which XLA:CPU runs 5-15x slower forward and about 3x
slower in the gradients than the same sum written as nine shifted (strided) slices
of the padded input scaled per channel, one fused elementwise pass (measured on a
2-core CPU at STDC1's 512x1024 shapes). JAXSEG_DEPTHWISE_CONV=xla|taps|auto forces one.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

LOWERINGS = ("auto", "xla", "taps", "mixed")
TAPS_FORWARD_FROM_RATE = 8
TAPS_GRADIENTS_FROM_CHANNELS = 128  # undilated: XLA's kernel gradient, below


def lowering(dilation, stride, backend=None, channels=None):
  """'taps', 'xla' or 'mixed' (XLA forward, taps gradients) for a convolution with
  this dilation and stride, `channels` the fewer of its input and output channels,
  on `backend`."""
  forced = os.environ.get("JAXSEG_DILATED_CONV", "auto")
  if forced not in LOWERINGS:
    raise ValueError(f"JAXSEG_DILATED_CONV must be one of {LOWERINGS}, got '{forced}'")
  if stride != 1:
    return "xla"
  if forced != "auto":
    return forced
  if (backend or jax.default_backend()) != "cpu":
    return "xla"
  if dilation == 1:
    return "mixed" if channels is not None and channels >= TAPS_GRADIENTS_FROM_CHANNELS else "xla"
  return "taps" if dilation >= TAPS_FORWARD_FROM_RATE else "mixed"


def cpu_lowering(env, cpu_form, backend=None):
  """`cpu_form` on CPU, 'xla' elsewhere; the environment variable `env` (auto | xla |
  `cpu_form`) forces one."""
  forced = os.environ.get(env, "auto")
  if forced not in ("auto", "xla", cpu_form):
    raise ValueError(f"{env} must be auto, xla or {cpu_form}, got '{forced}'")
  if forced != "auto":
    return forced
  return cpu_form if (backend or jax.default_backend()) == "cpu" else "xla"


def pointwise_lowering(backend=None):
  """'matmul' or 'xla' for a 1x1 convolution on `backend`."""
  return cpu_lowering("JAXSEG_POINTWISE_CONV", "matmul", backend)


def depthwise_lowering(backend=None):
  """'taps' or 'xla' for a depthwise convolution on `backend`."""
  return cpu_lowering("JAXSEG_DEPTHWISE_CONV", "taps", backend)


def xla_depthwise_conv(x, kernel, stride=1):
  """The direct depthwise convolution, kernel (k, k, 1, channels), zero padding (k-1)/2."""
  pad = (kernel.shape[0] - 1) // 2
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=x.shape[-1])


def tap_depthwise_conv(x, kernel, stride=1):
  """Equal to xla_depthwise_conv: y[i, j] = sum_{a,b} xpad[s*i + a, s*j + b] * W[a, b],
  each tap a strided slice of the padded input (XLA fuses the nine into one pass)."""
  k = kernel.shape[0]
  if kernel.shape[1] != k or k % 2 == 0 or kernel.shape[2] != 1 or kernel.shape[3] != x.shape[-1]:
    raise ValueError(f"a depthwise convolution of {x.shape[-1]} channels needs an odd square kernel "
                     f"(k, k, 1, {x.shape[-1]}), got {kernel.shape}")
  _, h, w, _ = x.shape
  pad = (k - 1) // 2
  ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  y = jnp.zeros((x.shape[0], ho, wo, x.shape[-1]), jnp.float32)  # summed in float32, rounded once
  for a in range(k):
    for b in range(k):
      tap = xp[:, a:a + stride * (ho - 1) + 1:stride, b:b + stride * (wo - 1) + 1:stride]
      y = y + tap.astype(jnp.float32) * kernel[a, b, 0].astype(jnp.float32)
  return y.astype(jnp.result_type(x, kernel))


def pointwise_conv(x, kernel, stride=1):
  """The 1x1 convolution (kernel (1, 1, in, out)) as a matmul over channels."""
  if stride != 1:  # no padding: the output samples every stride-th input pixel
    x = x[:, ::stride, ::stride]
  return _matmul_conv(x, kernel)


@jax.custom_vjp
def _matmul_conv(x, kernel):
  y = jnp.dot(x.reshape(-1, x.shape[-1]), kernel[0, 0], preferred_element_type=jnp.float32)
  return y.reshape(*x.shape[:-1], -1).astype(jnp.result_type(x, kernel))  # rounded once, as the direct conv


def _matmul_conv_grads(residuals, g):
  """dx = g W^T; dW = x^T g with the operand of fewer channels transposed (see _transposed)."""
  x, kernel = residuals
  x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]).astype(x.dtype)
  dx = jnp.dot(g2, kernel[0, 0].T, preferred_element_type=jnp.float32).reshape(x.shape)
  if x2.shape[1] <= g2.shape[1]:
    dk = jnp.dot(_transposed(x2), g2, preferred_element_type=jnp.float32)
  else:
    dk = jnp.dot(_transposed(g2), x2, preferred_element_type=jnp.float32).T
  return dx.astype(x.dtype), dk[None, None].astype(kernel.dtype)


_matmul_conv.defvjp(lambda x, kernel: (_matmul_conv(x, kernel), (x, kernel)), _matmul_conv_grads)


def _transposed(a):
  """`a` with its last axis moved first, materialised once.

  A kernel gradient sum_p x[p]^T g[p] contracts over pixels, the major axis of both
  NHWC operands, and XLA:CPU's matmul reads its left operand with the contracted
  axis minor: XLA copies one operand transposed, per tap of a tap-form convolution,
  and picks the operand itself (often the one with more channels). A transposing
  copy costs about as much as the matmul on CPU (strided reads), so the operand with
  fewer channels is transposed here once, behind a barrier that keeps XLA from
  folding the transpose back into each matmul; windows of it are then plain slices.
  """
  return jax.lax.optimization_barrier(jnp.moveaxis(a, -1, 0))


def xla_conv(x, kernel, dilation, stride=1):
  """The direct convolution, 'same' zero padding d*(k-1)/2 on each side (NHWC, HWIO)."""
  k = kernel.shape[0]
  pad = dilation * (k - 1) // 2
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                      rhs_dilation=(dilation, dilation),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _windows(k, dilation, h, w):
  """(tap (a, b), output rows, output cols, row/col offset) of every tap that lands in the image."""
  c = (k - 1) // 2
  for a in range(k):
    for b in range(k):
      oy, ox = (a - c) * dilation, (b - c) * dilation
      if abs(oy) < h and abs(ox) < w:  # else this tap only ever reads padding
        yield (a, b), slice(max(0, -oy), min(h, h - oy)), slice(max(0, -ox), min(w, w - ox)), oy, ox


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def tap_conv(x, kernel, dilation):
  """Equal to xla_conv(x, kernel, dilation) at stride 1: one matmul per in-image tap."""
  return _tap_forward(x, kernel, dilation)


def _tap_forward(x, kernel, dilation):
  k = kernel.shape[0]
  if kernel.shape[1] != k or k % 2 == 0:
    raise ValueError(f"tap_conv needs an odd square kernel, got {kernel.shape[:2]}")
  _, h, w, _ = x.shape
  c = (k - 1) // 2
  # Partial sums in float32, rounded once at the end as a direct convolution does (nine
  # bfloat16 roundings of the partial sums cost a bf16 training run points of mIoU).
  y = jnp.einsum("nhwi,io->nhwo", x, kernel[c, c], preferred_element_type=jnp.float32)  # centre: everywhere
  for (a, b), rows, cols, oy, ox in _windows(k, dilation, h, w):
    if (a, b) != (c, c):
      shifted = x[:, rows.start + oy:rows.stop + oy, cols.start + ox:cols.stop + ox]
      y = y.at[:, rows, cols].add(jnp.einsum("nhwi,io->nhwo", shifted, kernel[a, b],
                                             preferred_element_type=jnp.float32))
  return y.astype(jnp.result_type(x, kernel))


def _tap_grads(dilation, residuals, g, forward=_tap_forward):
  """Gradients of the taps form, accumulated in float32 like its forward: the input's
  is the same convolution of the cotangent with the flipped, transposed kernel (run by
  `forward`); the kernel's, one matmul per tap over that tap's window,

    dL/dW[a, b] = sum_{n, p in window} x[n, p + off_ab]^T g[n, p],

  its left operand the one of fewer channels, transposed once for all taps."""
  x, kernel = residuals
  k, (_, h, w, cin), cout = kernel.shape[0], x.shape, kernel.shape[3]
  g = g.astype(x.dtype)
  dx = forward(g, jnp.swapaxes(kernel[::-1, ::-1], 2, 3), dilation)
  x_left = cin <= cout  # the transposed operand: x (dW[a, b] = x^T g) or g (dW[a, b]^T = g^T x)
  left = _transposed(x if x_left else g)  # (channels, n, h, w)
  taps = {}
  for (a, b), rows, cols, oy, ox in _windows(k, dilation, h, w):
    x_rows, x_cols = slice(rows.start + oy, rows.stop + oy), slice(cols.start + ox, cols.stop + ox)
    if x_left:
      lhs, rhs = left[:, :, x_rows, x_cols], g[:, rows, cols]
    else:
      lhs, rhs = left[:, :, rows, cols], x[:, x_rows, x_cols]
    taps[a, b] = jnp.dot(lhs.reshape(lhs.shape[0], -1), rhs.reshape(-1, rhs.shape[-1]),
                         preferred_element_type=jnp.float32)
  zero = jnp.zeros((cin, cout) if x_left else (cout, cin), jnp.float32)  # taps that only read padding
  dk = jnp.stack([jnp.stack([taps.get((a, b), zero) for b in range(k)]) for a in range(k)])
  dk = dk if x_left else jnp.swapaxes(dk, 2, 3)  # (k, k, cout, cin): one small transpose for all taps
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


tap_conv.defvjp(lambda x, kernel, dilation: (_tap_forward(x, kernel, dilation), (x, kernel)), _tap_grads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def mixed_conv(x, kernel, dilation):
  """XLA's forward, the taps form's gradients."""
  return xla_conv(x, kernel, dilation)


def _mixed_forward(x, kernel, dilation):
  return xla_conv(x, kernel, dilation), (x, kernel)


mixed_conv.defvjp(_mixed_forward, functools.partial(_tap_grads, forward=xla_conv))


def dilated_conv(x, kernel, dilation, stride=1):
  """The 'same'-padded convolution, lowered as `lowering` (1x1: `pointwise_lowering`)
  says for this backend."""
  if kernel.shape[0] == 1 and pointwise_lowering() == "matmul":
    return pointwise_conv(x, kernel, stride)
  form = lowering(dilation, stride, channels=min(kernel.shape[2:]))
  if form == "taps":
    return tap_conv(x, kernel, dilation)
  if form == "mixed":
    return mixed_conv(x, kernel, dilation)
  return xla_conv(x, kernel, dilation, stride)


class DepthwiseConv(nn.Module):
  """A bias-free depthwise k x k convolution, padding (k-1)/2, lowered per backend; the
  parameter as flax.linen.Conv(features, feature_group_count=features)'s: `kernel`
  (k, k, 1, channels), initialised as that one's."""
  kernel_size: int = 3
  stride: int = 1
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (k, k, 1, x.shape[-1]), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if depthwise_lowering() == "taps":
      return tap_depthwise_conv(x, kernel, self.stride)
    return xla_depthwise_conv(x, kernel, self.stride)


class Conv(nn.Module):
  """A bias-free k x k convolution with 'same' padding d*(k-1)/2, lowered per backend
  (the parameter as flax.linen.Conv's: checkpoints do not depend on the lowering)."""
  features: int
  kernel_size: int
  stride: int = 1
  dilation: int = 1
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    return dilated_conv(x, kernel, self.dilation, self.stride)
