"""RoI features from a pyramid: one level per RoI (Mask R-CNN) or every level fused
(PANet's adaptive feature pooling, Sec. 3.2).

Mask R-CNN / FPN (Lin et al. Eq. 1, torchvision's LevelMapper): a RoI of w x h pixels
is pooled from level

  k = floor(k0 + log2(sqrt(w h) / 224) + 1e-6),  k0 = 4, clamped to [2, 5].

PANet: every RoI is pooled from every level N2..N5; each level's grid goes through its
own first layer (the box branch's fc1 + ReLU, the mask branch's first conv), the levels
are fused element-wise by max (or sum), and the rest of the head runs on the fusion
(the authors' roi_2mlp_head_gn_panet: per-level fc1 + ReLU, max, then fc2).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models.detection import boxes as box_ops
from jaxseg.models.detection.roi_align import roi_align
from jaxseg.models.necks.fpn import ConvNorm

FUSIONS = ("max", "sum")


def assign_levels(boxes, min_level=2, max_level=5, canonical_size=224.0, canonical_level=4):
  """(R, 4) -> (R,) int32 pyramid level of each RoI (empty boxes go to min_level)."""
  size = jnp.sqrt(jnp.maximum(box_ops.area(boxes), 0.0))
  level = jnp.floor(canonical_level + jnp.log2(jnp.maximum(size, 1e-8) / canonical_size) + 1e-6)
  return jnp.clip(level, min_level, max_level).astype(jnp.int32)


def pool_all_levels(features, boxes, image_index, output_size, spatial_scales, sampling_ratio=2,
                    aligned=False):
  """Every RoI from every level: a list of L maps -> (L, R, ph, pw, C)."""
  if len(features) != len(spatial_scales):
    raise ValueError(f"{len(features)} feature levels but {len(spatial_scales)} spatial scales")
  return jnp.stack([roi_align(f, boxes, image_index, output_size, s, sampling_ratio, aligned)
                    for f, s in zip(features, spatial_scales)])


def fuse(per_level, mode):
  """(L, ...) -> (...): element-wise max or sum over the levels."""
  if mode not in FUSIONS:
    raise ValueError(f"fusion must be one of {FUSIONS}, got '{mode}'")
  return per_level.max(axis=0) if mode == "max" else per_level.sum(axis=0)


class FusedFC(nn.Module):
  """Box branch: per-level fc (flattened grid -> features) (+ GroupNorm, the authors'
  roi_2mlp_head_gn_adp) + ReLU, fused over the levels. (L, R, ph, pw, C) -> (R, features)."""
  features: int = 1024
  fusion: str = "max"
  dtype: Any = jnp.float32
  norm: str = "none"  # "none" | "gn"

  @nn.compact
  def __call__(self, pooled):
    l, r = pooled.shape[:2]
    flat = pooled.reshape(l, r, -1)
    outs = []
    for i in range(l):
      x = nn.Dense(self.features, dtype=self.dtype, name=f"fc1_level{i}")(flat[i])
      if self.norm == "gn":
        x = nn.GroupNorm(num_groups=32, epsilon=1e-5, dtype=self.dtype, name=f"norm1_level{i}")(x)
      outs.append(nn.relu(x))
    return fuse(jnp.stack(outs), self.fusion)


class FusedConv(nn.Module):
  """Mask branch (and the conv box head): per-level conv3x3 (+ norm) + ReLU, fused over the levels.
  (L, R, ph, pw, C) -> (R, ph, pw, features)."""
  features: int = 256
  fusion: str = "max"
  norm: str = "none"
  dtype: Any = jnp.float32
  kernel_init: Any = None  # None: ConvNorm's default
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, pooled, train: bool):
    outs = [ConvNorm(self.features, 3, norm=self.norm, relu=True, bn_momentum=self.bn_momentum, dtype=self.dtype,
                     kernel_init=self.kernel_init, name=f"conv1_level{i}")(pooled[i], train)
            for i in range(pooled.shape[0])]
    return fuse(jnp.stack(outs), self.fusion)
