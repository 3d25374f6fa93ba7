"""The mask branch: RoI features 14 x 14 -> 28 x 28 per-class mask logits.

Mask R-CNN setting (torchvision's MaskRCNNHeads + MaskRCNNPredictor): the RoI from its own
FPN level, then

  x = ReLU(mask_fcn_i(x)), i = 1..4  (conv3x3 256);   x = ReLU(conv5_mask(x))  (deconv 2x2, stride 2)
  logits = mask_fcn_logits(x)  (conv1x1 -> K + 1 channels, index 0 the background, never trained)

PANet (Sec. 3.2 and 3.4, the authors' mask_rcnn_fcn_head_v1up4convs_gn_adp_ff):
  adaptive pooling: mask_fcn1 runs on each level N2..N5 with its own weights, fused by max
  (or sum); then mask_fcn2, mask_fcn3 and the FCN path mask_fcn4 -> conv5_mask -> logits;
  fully-connected fusion from mask_fcn3:
    f = ReLU(mask_fcn4_fc(x))  (conv3x3 256);  f = ReLU(mask_fcn5_fc(f))  (conv3x3, 128: half)
    fg = ReLU(mask_fc(flatten(f)))  (FC -> 28 x 28 = 784, a class-agnostic foreground)
    logits_k = logits_k + fg  for every class k   (Fig. 4: "fused by addition")
  The ReLU after mask_fc is the authors' code's. `norm="gn"` puts GroupNorm (32 groups)
  after every conv of the head, as their GN configuration (convs then have no bias);
  `norm="bn"` BatchNorm there, as torchvision's v2 MaskRCNNHeads (mask_fcn1..4).

Initialisation: convs and the deconv Kaiming-normal(fan_out) (torchvision; Detectron's
MSRAFill), mask_fc N(0, 0.01) (the authors'), zero biases. The deconv kernel is flax's
transpose_kernel layout (2, 2, out, in): a torchvision ConvTranspose2d weight (in, out, 2, 2)
maps by transposing to (2, 3, 1, 0), with no flip. mask_fc flattens NHWC (14, 14, 128).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models.detection.pooling import FusedConv
from jaxseg.models.necks.fpn import ConvNorm

MSRA = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class Deconv2x2(nn.Module):
  """ConvTranspose 2x2, stride 2, as one matmul: the 2x2 output cells of input pixel (i, j)
  are out[2i + a, 2j + b] = x[i, j] @ kernel[a, b]^T + bias, no two pixels overlapping.
  The parameters are flax's nn.ConvTranspose(transpose_kernel=True) ones, kernel (2, 2, out,
  in); XLA:CPU lowers that convolution's kernel gradient as a 14 x 14-window convolution,
  the slowest operation of the detector's training step (14% of it at the `:tiny` scale)."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", MSRA, (2, 2, self.features, x.shape[-1]), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    r, h, w, _ = x.shape
    y = jnp.einsum("rhwc,aboc->rhawbo", x.astype(self.dtype), kernel.astype(self.dtype))
    return y.reshape(r, 2 * h, 2 * w, self.features) + bias.astype(self.dtype)


class MaskHead(nn.Module):
  """(R, 14, 14, C) from one level, or (L, R, 14, 14, C) from every level (adaptive)
  -> mask logits (R, 28, 28, K + 1) float32."""
  num_classes: int  # K, without the background
  channels: int = 256
  adaptive: bool = True
  fusion: str = "max"
  fc_fusion: bool = True
  norm: str = "none"  # "none" | "gn" | "bn"
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pooled, train: bool):
    c = self.channels
    kw = dict(norm=self.norm, bn_momentum=self.bn_momentum, dtype=self.dtype, kernel_init=MSRA)
    conv = lambda features, name: ConvNorm(features, 3, relu=True, name=name, **kw)
    if self.adaptive:
      x = FusedConv(c, fusion=self.fusion, name="mask_fcn1", **kw)(pooled, train)
    else:
      x = conv(c, "mask_fcn1")(pooled, train)
    x = conv(c, "mask_fcn2")(x, train)
    x = conv(c, "mask_fcn3")(x, train)
    y = conv(c, "mask_fcn4")(x, train)
    y = nn.relu(Deconv2x2(c, dtype=self.dtype, name="conv5_mask")(y))
    logits = nn.Conv(self.num_classes + 1, (1, 1), kernel_init=MSRA, dtype=self.dtype,
                     name="mask_fcn_logits")(y).astype(jnp.float32)
    if not self.fc_fusion:
      return logits
    f = conv(c, "mask_fcn4_fc")(x, train)
    f = conv(c // 2, "mask_fcn5_fc")(f, train)
    r, h, w = logits.shape[:3]
    fg = nn.relu(nn.Dense(h * w, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype,
                          name="mask_fc")(f.reshape(r, -1)))
    return logits + fg.reshape(r, h, w, 1).astype(jnp.float32)  # the same foreground for every class
