"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021, Eq. 3) in plain XLA.

  MSDeformAttn(z_q, p_q, {x_l}) = W_o sum_h sum_l sum_k A_hlqk * W_v x_l(phi_l(p_q) + dp_hlqk)

For every query q and head h, K points per level l are sampled around the reference
point p_q (normalised to [0, 1] x [0, 1]) at offsets dp predicted from z_q and divided by
the level's (width, height); the attention weights A are a softmax over the L * K points
of a head. Sampling is bilinear with zero padding, exactly
`grid_sample(value, 2 p - 1, mode="bilinear", padding_mode="zeros", align_corners=False)`,
written as one gather of the four neighbours per level: no custom kernel to compile,
and `remat=True` recomputes the gathered values in the backward pass instead of keeping
them (they are the largest tensor here: queries x heads x points x 4 x head dim).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def bilinear_sample(value, height, width, loc):
  """value (N, H*W, C) row-major, loc (N, K, 2) as (x, y) in [0, 1] -> (N, K, C).

  align_corners=False: location x covers pixel column x * W - 0.5 (pixel centres at
  half-integers of x * W); each of the four neighbours outside the map contributes 0.
  """
  x = loc[..., 0].astype(jnp.float32) * width - 0.5
  y = loc[..., 1].astype(jnp.float32) * height - 0.5
  x0, y0 = jnp.floor(x), jnp.floor(y)
  fx, fy = x - x0, y - y0  # the weights of the right / lower neighbours
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  corners = [(y0, x0, (1 - fy) * (1 - fx)), (y0, x0 + 1, (1 - fy) * fx),
             (y0 + 1, x0, fy * (1 - fx)), (y0 + 1, x0 + 1, fy * fx)]
  index = jnp.stack([jnp.clip(cy, 0, height - 1) * width + jnp.clip(cx, 0, width - 1)
                     for cy, cx, _ in corners], -1)  # (N, K, 4)
  weight = jnp.stack([w * ((cx >= 0) & (cx < width) & (cy >= 0) & (cy < height))
                      for cy, cx, w in corners], -1)  # zero padding: outside neighbours weigh 0
  # the one gather: rows of C values by (N, K, 4) indices
  gathered = jax.vmap(lambda v, i: jnp.take(v, i, axis=0))(value, index)  # (N, K, 4, C)
  return jnp.einsum("nkjc,nkj->nkc", gathered, weight.astype(value.dtype))


def ms_deform_attn_core(value, shapes, loc, attn, remat=False):
  """The sampling and weighting of Eq. 3 without projections.

  value (B, S, heads, D) with S = sum_l H_l W_l (levels in `shapes` order, row-major);
  loc (B, Q, heads, L, K, 2) in [0, 1]; attn (B, Q, heads, L, K) -> (B, Q, heads * D).
  """
  b, s, heads, d = value.shape
  _, q, _, levels, k, _ = loc.shape
  sample = jax.checkpoint(bilinear_sample, static_argnums=(1, 2)) if remat else bilinear_sample
  out, start = 0.0, 0
  for level, (h, w) in enumerate(shapes):
    v = value[:, start:start + h * w].transpose(0, 2, 1, 3).reshape(b * heads, h * w, d)
    p = loc[:, :, :, level].transpose(0, 2, 1, 3, 4).reshape(b * heads, q * k, 2)
    sampled = sample(v, h, w, p).reshape(b, heads, q, k, d)  # x_l(phi_l(p_q) + dp_hlqk)
    out = out + jnp.einsum("bhqkd,bqhk->bqhd", sampled, attn[:, :, :, level].astype(sampled.dtype))
    start += h * w
  return out.reshape(b, q, heads * d)


def offset_bias_init(heads, levels, points):
  """The reference initialisation of the sampling offsets' bias: head h points in
  direction 2 pi h / heads (scaled so the larger coordinate is 1), point k at distance
  k + 1, the same on every level; the weight starts at 0."""
  theta = np.arange(heads) * (2.0 * math.pi / heads)
  grid = np.stack([np.cos(theta), np.sin(theta)], -1)
  grid = grid / np.abs(grid).max(-1, keepdims=True)
  grid = np.tile(grid[:, None, None], (1, levels, points, 1)) * np.arange(1, points + 1)[None, None, :, None]

  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.asarray(grid.reshape(shape), dtype)
  return init


class MSDeformAttn(nn.Module):
  """Multi-scale deformable attention of `query` (B, Q, d) (the position embedding
  already added) over the flattened maps `value` (B, S, d) of the levels `shapes`."""
  dim: int = 256
  heads: int = 8
  levels: int = 3
  points: int = 4
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, query, value, reference_points, shapes: Sequence[tuple[int, int]]):
    """reference_points (B, Q, L, 2) as (x, y) in [0, 1]."""
    b, q, _ = query.shape
    h, l, k = self.heads, self.levels, self.points
    if len(shapes) != l or sum(hh * ww for hh, ww in shapes) != value.shape[1]:
      raise ValueError(f"MSDeformAttn: {l} levels of shapes {tuple(shapes)} do not make the "
                       f"{value.shape[1]} values")
    xavier = nn.initializers.xavier_uniform()
    value = nn.Dense(self.dim, dtype=self.dtype, kernel_init=xavier, name="value_proj")(value)
    value = value.reshape(b, -1, h, self.dim // h)  # W_v x_l
    offsets = nn.Dense(h * l * k * 2, dtype=jnp.float32, kernel_init=nn.initializers.zeros,
                       bias_init=offset_bias_init(h, l, k), name="sampling_offsets")(query)
    offsets = offsets.reshape(b, q, h, l, k, 2)  # dp_hlqk, in pixels of level l
    attn = nn.Dense(h * l * k, dtype=jnp.float32, kernel_init=nn.initializers.zeros, name="attention_weights")(query)
    attn = jax.nn.softmax(attn.reshape(b, q, h, l * k), axis=-1).reshape(b, q, h, l, k)  # A_hlqk, fp32
    normaliser = jnp.asarray([(ww, hh) for hh, ww in shapes], jnp.float32)  # (L, 2): (W_l, H_l)
    loc = reference_points[:, :, None, :, None, :].astype(jnp.float32) + offsets / normaliser[None, None, None, :, None]
    out = ms_deform_attn_core(value, tuple(shapes), loc, attn, self.remat)
    return nn.Dense(self.dim, dtype=self.dtype, kernel_init=xavier, name="output_proj")(out)
