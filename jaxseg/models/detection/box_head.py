"""The box branch: RoI features -> two FC 1024 (or 4 conv + 1 FC) -> class logits and
class-specific deltas.

Mask R-CNN setting (torchvision's TwoMLPHead + FastRCNNPredictor): each RoI is RoIAligned
7 x 7 from its own FPN level (pooling.assign_levels), then

  x = ReLU(fc6(flatten(roi)));  x = ReLU(fc7(x));  logits = cls_score(x);  deltas = bbox_pred(x)

PANet (Sec. 3.2, adaptive feature pooling): each RoI is RoIAligned from every level N2..N5,
each level's grid goes through its own fc6 + ReLU, the levels are fused by max (or sum),
then fc7 and the predictor as above (the authors' roi_2mlp_head_gn_adp; with norm="gn"
GroupNorm (32 groups) follows fc6 (per level, before the fusion) and fc7, as theirs).

The conv head `layers="4conv1fc"` (torchvision's FastRCNNConvFCHead of the v2 Mask R-CNN,
Detectron's roi_Xconv1fc_head with 4 stacked convs):

  x = ReLU(norm(conv_i(x))), i = 1..4  (conv3x3 256);   x = ReLU(fc6(flatten(x)))  (FC 1024)

norm "bn" (torchvision v2's BatchNorm2d) or "gn" (Detectron's GN head); the convs then have
no bias. With adaptive pooling conv1 runs on each level with its own weights and the levels
are fused after it (then conv2..4): the authors' roi_Xconv1fc_gn_head_panet
(ShuLiu1993/PANet, lib/modeling/fast_rcnn_heads.py: `conv1_head[i]` per level, torch.max
over the levels, then the shared `convs` and `fc`), the box head of their
e2e_panet_R-50-FPN_2x_mask.yaml. Convs start from Kaiming-normal(fan_out) (torchvision's).

The predictor has K + 1 outputs and 4 (K + 1) deltas, index 0 the background, as
torchvision's and Detectron's (the background's four deltas are never trained); so a
torchvision checkpoint maps 1:1. Parameter names: `fc6` (Mask R-CNN: a Dense; PANet: the
FusedFC with `fc6/fc1_level{0..3}`), `fc7`, `cls_score`, `bbox_pred`; the conv head's
`conv1`..`conv4` (ConvNorm: `conv`, `norm`; adaptive: the FusedConv `conv1/conv1_level{i}`)
and `fc6`. Flattening is NHWC (7, 7, C): a torchvision fc6 weight, flattened (C, 7, 7), is
permuted on import.
Initialisation as Detectron's: cls_score N(0, 0.01), bbox_pred N(0, 0.001), zero biases.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models.detection.pooling import FusedConv, FusedFC
from jaxseg.models.necks.fpn import ConvNorm

LAYERS = ("2fc", "4conv1fc")
MSRA = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class BoxHead(nn.Module):
  """(R, 7, 7, C) pooled from one level, or (L, R, 7, 7, C) from every level (adaptive)
  -> (class logits (R, K + 1), deltas (R, K + 1, 4)), both float32."""
  num_classes: int  # K, without the background
  representation: int = 1024
  adaptive: bool = True
  fusion: str = "max"
  norm: str = "none"  # "gn": GroupNorm(32) after fc6 and fc7 (2fc) or the convs; "bn": the convs (4conv1fc)
  layers: str = "2fc"  # "2fc" | "4conv1fc"
  conv_channels: int = 256
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pooled, train: bool = False):
    if self.layers not in LAYERS:
      raise ValueError(f"model.head.box_head_layers must be one of {LAYERS}, got '{self.layers}'")
    if self.norm not in ("none", "gn", "bn") or (self.norm == "bn" and self.layers == "2fc"):
      raise ValueError(f"model.head.head_norm '{self.norm}' with the box head '{self.layers}': the 2fc head "
                       f"takes 'none' or 'gn', the 4conv1fc head 'none', 'gn' or 'bn'")
    if self.layers == "4conv1fc":
      x = self.convs(pooled, train)
      x = nn.relu(nn.Dense(self.representation, dtype=self.dtype, name="fc6")(x.reshape(x.shape[0], -1)))
    else:
      x = self.two_fc(pooled)
    k1 = self.num_classes + 1
    logits = nn.Dense(k1, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype, name="cls_score")(x)
    deltas = nn.Dense(4 * k1, kernel_init=nn.initializers.normal(0.001), dtype=self.dtype, name="bbox_pred")(x)
    return logits.astype(jnp.float32), deltas.reshape(-1, k1, 4).astype(jnp.float32)

  def two_fc(self, pooled):
    gn = lambda name: nn.GroupNorm(num_groups=32, epsilon=1e-5, dtype=self.dtype, name=name)
    if self.adaptive:
      x = FusedFC(self.representation, self.fusion, self.dtype, self.norm, name="fc6")(pooled)
    else:
      x = nn.Dense(self.representation, dtype=self.dtype, name="fc6")(pooled.reshape(pooled.shape[0], -1))
      x = nn.relu(gn("fc6_norm")(x) if self.norm == "gn" else x)
    x = nn.Dense(self.representation, dtype=self.dtype, name="fc7")(x)
    return nn.relu(gn("fc7_norm")(x) if self.norm == "gn" else x)

  def convs(self, pooled, train):
    kw = dict(norm=self.norm, bn_momentum=self.bn_momentum, dtype=self.dtype, kernel_init=MSRA)
    c = self.conv_channels
    if self.adaptive:  # conv1 per level, fused after it (the authors' roi_Xconv1fc_gn_head_panet)
      x = FusedConv(c, fusion=self.fusion, name="conv1", **kw)(pooled, train)
    else:
      x = ConvNorm(c, 3, relu=True, name="conv1", **kw)(pooled, train)
    for i in (2, 3, 4):
      x = ConvNorm(c, 3, relu=True, name=f"conv{i}", **kw)(x, train)
    return x
