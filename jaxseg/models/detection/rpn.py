"""The RPN head (Faster R-CNN Sec. 3.1, torchvision's RPNHead), shared by every pyramid level:

  t = ReLU(conv3x3(feature))          (conv_depth convs: torchvision's v2 head has 2, no norm)
  objectness = conv1x1(t) -> A logits per cell,  deltas = conv1x1(t) -> 4 A per cell

with A = 3 anchors per cell (aspect ratios 0.5, 1, 2; one size per level, anchors.py).
All three layers start from N(0, 0.01) with zero bias, as torchvision and Detectron.

Parameter names follow torchvision's rpn.head: `conv` (further convs `conv2`, ..: its
conv.1.0, ..), `cls_logits`, `bbox_pred` (a torchvision weight (out, in, kh, kw) is the
flax kernel transposed to (kh, kw, in, out)).

Outputs per level are flattened in the anchors' order (row-major over cells, then the
aspect ratios): objectness (B, H W A), deltas (B, H W A, 4), where the 4 A deltas channels
are read as (A, 4), torchvision's layout (view(N, A, 4, H, W)).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

NORMAL_001 = nn.initializers.normal(0.01)


class RPNHead(nn.Module):
  num_anchors: int = 3
  conv_depth: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, levels: Sequence[jnp.ndarray]):
    """levels: list of (B, H_l, W_l, C) -> (list of (B, H_l W_l A) logits, list of (B, H_l W_l A, 4))."""
    a = self.num_anchors
    if self.conv_depth < 1:
      raise ValueError(f"model.head.rpn_conv_depth must be >= 1, got {self.conv_depth}")
    convs = [nn.Conv(levels[0].shape[-1], (3, 3), padding=((1, 1), (1, 1)), kernel_init=NORMAL_001,
                     dtype=self.dtype, name="conv" if i == 0 else f"conv{i + 1}") for i in range(self.conv_depth)]
    cls_logits = nn.Conv(a, (1, 1), kernel_init=NORMAL_001, dtype=self.dtype, name="cls_logits")
    bbox_pred = nn.Conv(4 * a, (1, 1), kernel_init=NORMAL_001, dtype=self.dtype, name="bbox_pred")
    objectness, deltas = [], []
    for x in levels:  # the same layers on every level
      t = x
      for conv in convs:
        t = nn.relu(conv(t))
      b = x.shape[0]
      objectness.append(cls_logits(t).reshape(b, -1).astype(jnp.float32))
      deltas.append(bbox_pred(t).reshape(b, -1, 4).astype(jnp.float32))
    return objectness, deltas
