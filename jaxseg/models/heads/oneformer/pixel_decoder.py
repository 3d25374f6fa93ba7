"""OneFormer's pixel decoder (Mask2Former's MSDeformAttnPixelDecoder, Cheng et al. 2022).

  levels      the backbone's c4, c3, c2 (strides 32, 16, 8; level 0 is the coarsest), each
              1x1 conv (with bias) + GroupNorm(32) to d channels
  encoder     N post-norm layers over the three flattened levels together:
                z = LN(x + MSDeformAttn(x + pos, x, reference points))
                x' = LN(z + W_2 ReLU(W_1 z))
              pos = 2-D sine encoding (d/2 features per axis) + a learned embedding per level;
              each token's reference point is its pixel centre, the same on every level
  1/4 level   FPN step: GN(1x1 conv(c1)) + bilinear upsampling (align_corners=False) of the
              encoded 1/8 map, then 3x3 conv + GroupNorm(32) + ReLU
  outputs     {"multi_scale": [1/32, 1/16, 1/8 maps] (what the transformer decoder attends
              to, in the order it cycles over them), "mask_features": 1x1 conv of the 1/4 map}

The learned level embedding starts at N(0, 1) as the authors' code (transformers starts
it at zeros); the encoder's dropout defaults to 0.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxseg.models.heads.oneformer.deformable_attention import MSDeformAttn
from jaxseg.models.layers import resize


def sine_position_encoding(height, width, dim, temperature=10000.0):
  """(H, W, dim) encoding, [pos_y, pos_x] with dim/2 channels each (DETR's, normalised):
  the position n = 1..H (1..W) scaled to (0, 2 pi] as n / (H + 1e-6) * 2 pi, then
  (sin(n / T^(2i/F)), cos(n / T^(2i/F))) interleaved over i, F = dim/2 features."""
  feats = dim // 2
  eps, scale = 1e-6, 2 * math.pi
  y = np.arange(1, height + 1, dtype=np.float32) / (height + eps) * scale
  x = np.arange(1, width + 1, dtype=np.float32) / (width + eps) * scale
  dim_t = temperature ** (2 * (np.arange(feats) // 2) / feats)

  def encode(n):  # (n,) -> (n, F): sin on even channels, cos on odd ones
    a = n[:, None] / dim_t
    return np.stack([np.sin(a[:, 0::2]), np.cos(a[:, 1::2])], -1).reshape(len(n), feats)
  pos_y = np.broadcast_to(encode(y)[:, None], (height, width, feats))
  pos_x = np.broadcast_to(encode(x)[None, :], (height, width, feats))
  return np.concatenate([pos_y, pos_x], -1).astype(np.float32)


def reference_points(shapes):
  """(S, 2) pixel centres (x, y) of every token of the levels, normalised to [0, 1]."""
  points = []
  for h, w in shapes:
    y, x = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    points.append(np.stack([x.reshape(-1), y.reshape(-1)], -1))
  return np.concatenate(points).astype(np.float32)


class EncoderLayer(nn.Module):
  dim: int = 256
  heads: int = 8
  levels: int = 3
  points: int = 4
  ffn_dim: int = 1024
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, pos, ref, shapes, train: bool):
    drop = lambda t: nn.Dropout(self.dropout, deterministic=not train)(t)
    y = MSDeformAttn(self.dim, self.heads, self.levels, self.points, dtype=self.dtype, name="attn")(
        x + pos, x, ref, shapes)
    x = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm1")(x + drop(y))  # z = LN(x + MSDeformAttn(...))
    y = nn.relu(nn.Dense(self.ffn_dim, dtype=self.dtype, name="fc1")(x))
    y = nn.Dense(self.dim, dtype=self.dtype, name="fc2")(drop(y))
    return nn.LayerNorm(1e-5, dtype=self.dtype, name="norm2")(x + drop(y))  # LN(z + FFN(z))


class PixelDecoder(nn.Module):
  dim: int = 256  # d of the encoder and the FPN level
  mask_dim: int = 256
  heads: int = 8
  layers: int = 6
  points: int = 4
  ffn_dim: int = 1024
  groups: int = 32  # of every GroupNorm
  dropout: float = 0.0
  remat: bool = False  # recompute each encoder layer in the backward pass: one layer's
  # sampled values live at a time instead of every layer's
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, train: bool = False):
    gn = lambda name: nn.GroupNorm(self.groups, epsilon=1e-5, dtype=self.dtype, name=name)
    conv = lambda dim, k, bias, name: nn.Conv(dim, (k, k), padding=k // 2, use_bias=bias, dtype=self.dtype,
                                              kernel_init=nn.initializers.xavier_uniform(), name=name)
    maps = [features["c4"], features["c3"], features["c2"]]  # level 0 = 1/32
    b = maps[0].shape[0]
    shapes = tuple(tuple(m.shape[1:3]) for m in maps)
    level_embed = self.param("level_embed", nn.initializers.normal(1.0), (len(maps), self.dim))
    tokens, pos = [], []
    for l, m in enumerate(maps):
      m = gn(f"proj{l}_norm")(conv(self.dim, 1, True, f"proj{l}")(m))
      tokens.append(m.reshape(b, -1, self.dim))
      pe = sine_position_encoding(*m.shape[1:3], self.dim).reshape(1, -1, self.dim)
      pos.append(jnp.asarray(pe) + level_embed[l])  # sine encoding + level embedding
    x, pos = jnp.concatenate(tokens, 1), jnp.concatenate(pos, 1).astype(self.dtype)
    ref = jnp.broadcast_to(jnp.asarray(reference_points(shapes))[None, :, None], (b, x.shape[1], len(maps), 2))
    layer = nn.remat(EncoderLayer, static_argnums=(4, 5)) if self.remat else EncoderLayer  # (shapes, train)
    for i in range(self.layers):
      x = layer(self.dim, self.heads, len(maps), self.points, self.ffn_dim, self.dropout, self.dtype,
                name=f"encoder_layer{i}")(x, pos, ref, shapes, train)

    out, start = [], 0
    for h, w in shapes:
      out.append(x[:, start:start + h * w].reshape(b, h, w, self.dim))
      start += h * w
    c1 = features["c1"]
    y = gn("lateral_norm")(conv(self.dim, 1, False, "lateral")(c1))  # FPN lateral of the 1/4 map
    y = y + resize(out[-1], c1.shape[1:3])
    y = nn.relu(gn("output_norm")(conv(self.dim, 3, False, "output")(y)))
    mask_features = conv(self.mask_dim, 1, True, "mask_features")(y)
    return {"multi_scale": out, "mask_features": mask_features}
