"""Swin Transformer (Liu et al. 2021), the dense-prediction variant of the detection and
segmentation code bases (Mask2Former's / OneFormer's D2SwinTransformer, transformers'
SwinBackbone): any input size, padded where a patch or window does not fit.

  patch embedding   4x4 conv, stride 4, then LayerNorm (the input padded right/bottom to a
                    multiple of 4)
  stage s           blocks of window attention, W-MSA and SW-MSA alternating (Eq. 3):
                      z' = x + DropPath(W-MSA(LN(x)));  z = z' + DropPath(MLP(LN(z')))
                    then patch merging (2x2 neighbours concatenated, LN, linear 4C -> 2C)
  outputs           LayerNorm "norm{s}" on every stage's output before the merging:
                    {"c1": 1/4, "c2": 1/8, "c3": 1/16, "c4": 1/32}, channels C * (1, 2, 4, 8)
                    (the keys and strides of jaxseg's ResNet at output stride 32)

Attention (Eq. 4): softmax(Q K^T / sqrt(d) + B) V inside each M x M window, B the learned
relative position bias indexed by the (dy, dx) offset of two tokens; the shifted windows
of odd blocks are a cyclic roll by M // 2 whose wrapped-around regions are kept apart by
an additive mask of -100 (the reference value). The feature map is zero-padded to a
multiple of M after the LayerNorm; windows are never shrunk to the feature size (as the
dense-prediction code; transformers' SwinModel shrinks them, its SwinBackbone does not).

Stochastic depth grows linearly over the blocks, 0 -> drop_path_rate, and drops both
residual branches of a block (the authors' code; transformers' SwinLayer drops the
attention branch only: identical at inference).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.errors import ConfigError

# model.backbone keys of the published models (width = embed dim C); window 12 for the
# ImageNet-22K 384x384 Swin-B / Swin-L checkpoints the OneFormer Swin-L configs start from.
PRESETS = {
    "swin_t": dict(width=96, swin_depths=(2, 2, 6, 2), swin_heads=(3, 6, 12, 24), swin_window=7),
    "swin_s": dict(width=96, swin_depths=(2, 2, 18, 2), swin_heads=(3, 6, 12, 24), swin_window=7),
    "swin_b": dict(width=128, swin_depths=(2, 2, 18, 2), swin_heads=(4, 8, 16, 32), swin_window=7),
    "swin_l": dict(width=192, swin_depths=(2, 2, 18, 2), swin_heads=(6, 12, 24, 48), swin_window=7),
    "swin_b_384": dict(width=128, swin_depths=(2, 2, 18, 2), swin_heads=(4, 8, 16, 32), swin_window=12),
    "swin_l_384": dict(width=192, swin_depths=(2, 2, 18, 2), swin_heads=(6, 12, 24, 48), swin_window=12),
}

MASKED = -100.0  # the reference's additive mask between tokens of different shifted regions
dense_init = nn.initializers.truncated_normal(0.02)  # the reference's trunc_normal_(std=0.02)


def relative_position_index(window):
  """(M*M, M*M) index into the (2M-1)^2 bias table: token i = (yi, xi), j = (yj, xj) read
  row (yi - yj + M - 1) * (2M - 1) + (xi - xj + M - 1)."""
  yx = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
  d = yx[:, :, None] - yx[:, None, :] + window - 1  # (2, M*M, M*M)
  return d[0] * (2 * window - 1) + d[1]


def shifted_window_mask(height, width, window, shift):
  """(num_windows, M*M, M*M) additive mask of SW-MSA on a (height, width) map (a multiple of
  M): after the roll by -shift, each axis holds three regions, [0, n - M), [n - M, n - shift)
  and [n - shift, n); tokens of different regions may not attend to each other."""
  def regions(n):
    i = np.arange(n)
    return (i >= n - window).astype(np.int32) + (i >= n - shift)
  label = regions(height)[:, None] * 3 + regions(width)[None, :]  # (H, W)
  label = window_partition(label[None, :, :, None], window)[..., 0].reshape(-1, window * window)
  return np.where(label[:, None, :] != label[:, :, None], MASKED, 0.0).astype(np.float32)


def window_partition(x, window):
  """(B, H, W, C) -> (B * H/M * W/M, M, M, C), windows in row-major order."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // window, window, w // window, window, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)


def window_reverse(windows, window, height, width):
  """Inverse of window_partition."""
  c = windows.shape[-1]
  x = windows.reshape(-1, height // window, width // window, window, window, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def drop_path_rates(depths, max_rate):
  """Per stage, the stochastic-depth rate of each block: linear from 0 at the first block
  to max_rate at the last one, over all blocks of all stages."""
  rates = np.linspace(0.0, max_rate, sum(depths)).tolist()
  return [rates[sum(depths[:s]):sum(depths[:s + 1])] for s in range(len(depths))]


class DropPath(nn.Module):
  """Stochastic depth: the whole residual branch of a sample is dropped with probability
  `rate`, the kept ones scaled by 1 / (1 - rate)."""
  rate: float

  @nn.compact
  def __call__(self, x, train: bool):
    if not train or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0).astype(x.dtype)


class WindowAttention(nn.Module):
  """Multi-head self-attention within windows, with the relative position bias (Eq. 4)."""
  dim: int
  heads: int
  window: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):  # x: (num_windows * B, M*M, C); mask: (num_windows, M*M, M*M)
    n, tokens, _ = x.shape
    head_dim = self.dim // self.heads
    dense = lambda name: nn.Dense(self.dim, dtype=self.dtype, kernel_init=dense_init, name=name)
    split = lambda t: t.reshape(n, tokens, self.heads, head_dim)
    q, k, v = split(dense("query")(x)), split(dense("key")(x)), split(dense("value")(x))
    table = self.param("relative_position_bias_table", dense_init, ((2 * self.window - 1) ** 2, self.heads))
    bias = table[relative_position_index(self.window)].transpose(2, 0, 1)  # B: (heads, M*M, M*M)
    logits = jnp.einsum("nqhd,nkhd->nhqk", q, k).astype(jnp.float32) * head_dim ** -0.5 + bias
    if mask is not None:  # the same mask for every image of the batch: windows are image-major
      logits = logits.reshape(-1, mask.shape[0], self.heads, tokens, tokens) + mask[None, :, None]
      logits = logits.reshape(n, self.heads, tokens, tokens)
    attn = jax.nn.softmax(logits, axis=-1).astype(self.dtype)  # softmax in fp32
    out = jnp.einsum("nhqk,nkhd->nqhd", attn, v).reshape(n, tokens, self.dim)
    return nn.Dense(self.dim, dtype=self.dtype, kernel_init=dense_init, name="proj")(out)


class SwinBlock(nn.Module):
  """x + DropPath((S)W-MSA(LN(x))), then z + DropPath(MLP(LN(z))) (Eq. 3)."""
  dim: int
  heads: int
  window: int
  shift: int  # 0: W-MSA; M // 2: SW-MSA
  drop_path: float = 0.0
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    b, h, w, c = x.shape
    m, s = self.window, self.shift
    y = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm1")(x)
    hp, wp = -(-h // m) * m, -(-w // m) * m  # zeros after the norm up to a multiple of M
    y = jnp.pad(y, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
    if s:
      y = jnp.roll(y, (-s, -s), axis=(1, 2))
    windows = window_partition(y, m).reshape(-1, m * m, c)
    mask = jnp.asarray(shifted_window_mask(hp, wp, m, s)) if s else None
    windows = WindowAttention(c, self.heads, m, self.dtype, name="attn")(windows, mask)
    y = window_reverse(windows.reshape(-1, m, m, c), m, hp, wp)
    if s:
      y = jnp.roll(y, (s, s), axis=(1, 2))
    x = x + DropPath(self.drop_path)(y[:, :h, :w], train)

    y = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm2")(x)
    y = nn.Dense(int(c * self.mlp_ratio), dtype=self.dtype, kernel_init=dense_init, name="fc1")(y)
    y = nn.Dense(c, dtype=self.dtype, kernel_init=dense_init, name="fc2")(nn.gelu(y, approximate=False))
    return x + DropPath(self.drop_path)(y, train)


class PatchMerging(nn.Module):
  """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C): the 2x2 neighbours concatenated in the
  order (0,0), (1,0), (0,1), (1,1), LayerNorm(4C), linear 4C -> 2C without bias."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
    x = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm")(x)
    return nn.Dense(2 * c, use_bias=False, dtype=self.dtype, kernel_init=dense_init, name="reduction")(x)


class SwinTransformer(nn.Module):
  """Returns {"c1": .., "c2": .., "c3": .., "c4": ..}: the normed outputs of the four stages
  at strides 4, 8, 16 and 32 (ceil of the input size over the stride)."""
  width: int = 96  # embed dim C
  depths: Sequence[int] = (2, 2, 6, 2)
  heads: Sequence[int] = (3, 6, 12, 24)
  window: int = 7
  drop_path_rate: float = 0.0
  patch_size: int = 4
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if len(self.depths) != 4 or len(self.heads) != 4:
      raise ConfigError(f"config keys model.backbone.swin_depths / swin_heads need 4 stages, got "
                        f"{tuple(self.depths)} / {tuple(self.heads)}")
    p = self.patch_size
    h, w = x.shape[1:3]
    x = jnp.pad(x, ((0, 0), (0, -h % p), (0, -w % p), (0, 0)))  # right/bottom, as the reference
    x = nn.Conv(self.width, (p, p), strides=p, padding="VALID", dtype=self.dtype, name="patch_embed")(x)
    x = nn.LayerNorm(1e-5, dtype=self.dtype, name="patch_norm")(x)

    rates = drop_path_rates(self.depths, self.drop_path_rate)
    features = {}
    for s, (depth, heads) in enumerate(zip(self.depths, self.heads)):
      dim = self.width * 2 ** s
      for b in range(depth):
        x = SwinBlock(dim, heads, self.window, 0 if b % 2 == 0 else self.window // 2, rates[s][b],
                      self.mlp_ratio, self.dtype, name=f"stage{s + 1}_block{b}")(x, train)
      features[f"c{s + 1}"] = nn.LayerNorm(1e-5, dtype=self.dtype, name=f"norm{s + 1}")(x)
      if s < 3:
        x = PatchMerging(self.dtype, name=f"merge{s + 1}")(x)
    return features


def from_config(backbone, dtype=jnp.float32):
  """The SwinTransformer of config.model.backbone (name "swin")."""
  return SwinTransformer(width=backbone.width, depths=tuple(backbone.swin_depths),
                         heads=tuple(backbone.swin_heads), window=backbone.swin_window,
                         drop_path_rate=backbone.drop_path_rate, dtype=dtype)
