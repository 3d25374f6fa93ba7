"""The box branch: RoI features -> two FC 1024 -> class logits and class-specific deltas.

Mask R-CNN setting (torchvision's TwoMLPHead + FastRCNNPredictor): each RoI is RoIAligned
7 x 7 from its own FPN level (pooling.assign_levels), then

  x = ReLU(fc6(flatten(roi)));  x = ReLU(fc7(x));  logits = cls_score(x);  deltas = bbox_pred(x)

PANet (Sec. 3.2, adaptive feature pooling): each RoI is RoIAligned from every level N2..N5,
each level's grid goes through its own fc6 + ReLU, the levels are fused by max (or sum),
then fc7 and the predictor as above (the authors' roi_2mlp_head ..._panet).

The predictor has K + 1 outputs and 4 (K + 1) deltas, index 0 the background, as
torchvision's and Detectron's (the background's four deltas are never trained); so a
torchvision checkpoint maps 1:1. Parameter names: `fc6` (Mask R-CNN: a Dense; PANet: the
FusedFC with `fc6/fc1_level{0..3}`), `fc7`, `cls_score`, `bbox_pred`. Flattening is NHWC
(7, 7, C): a torchvision fc6 weight, flattened (C, 7, 7), is permuted on import.
Initialisation as Detectron's: cls_score N(0, 0.01), bbox_pred N(0, 0.001), zero biases.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models.detection.pooling import FusedFC


class BoxHead(nn.Module):
  """(R, 7, 7, C) pooled from one level, or (L, R, 7, 7, C) from every level (adaptive)
  -> (class logits (R, K + 1), deltas (R, K + 1, 4)), both float32."""
  num_classes: int  # K, without the background
  representation: int = 1024
  adaptive: bool = True
  fusion: str = "max"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pooled):
    if self.adaptive:
      x = FusedFC(self.representation, self.fusion, dtype=self.dtype, name="fc6")(pooled)
    else:
      x = nn.relu(nn.Dense(self.representation, dtype=self.dtype, name="fc6")(
          pooled.reshape(pooled.shape[0], -1)))
    x = nn.relu(nn.Dense(self.representation, dtype=self.dtype, name="fc7")(x))
    k1 = self.num_classes + 1
    logits = nn.Dense(k1, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype, name="cls_score")(x)
    deltas = nn.Dense(4 * k1, kernel_init=nn.initializers.normal(0.001), dtype=self.dtype, name="bbox_pred")(x)
    return logits.astype(jnp.float32), deltas.reshape(-1, k1, 4).astype(jnp.float32)
