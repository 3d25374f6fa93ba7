"""OneFormer's query initialisation (Jain et al. 2023, Sec. 3.2): N - 1 copies of the
(normalised) task token refined by a small DETR decoder over the 1/4 features, then the
task token appended -> N queries.

  memory      m = sine encoding of the 1/4 map (d channels; its values)
  keys        m + W_p F_1/4        W_p: a 1x1 conv of the mask features (their positions)
  layer       x = LN(x + SelfAttn(x + e, x + e, x))            e: N - 1 learned query embeddings
  (post-norm) x = LN(x + CrossAttn(x + e, m + W_p F, m))
              x = LN(x + W_2 ReLU(W_1 x))
  output      Q = [LN(x_L), Q_task]                            (B, N, d)

This is transformers' OneFormerTransformerDecoderQueryTransformer (with
use_task_norm, the default: the initial queries are the task token, not zeros).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models.heads.oneformer.attention import MultiHeadAttention
from jaxseg.models.heads.oneformer.pixel_decoder import sine_position_encoding


class QueryTransformerLayer(nn.Module):
  dim: int = 256
  heads: int = 8
  ffn_dim: int = 2048
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, memory, memory_pos, query_pos, train: bool = False):
    drop = lambda t: nn.Dropout(self.dropout, deterministic=not train)(t)
    ln = lambda name: nn.LayerNorm(1e-5, dtype=self.dtype, name=name)
    attend = lambda name: MultiHeadAttention(self.dim, self.heads, dtype=self.dtype, name=name)
    q = x + query_pos
    x = ln("norm1")(x + drop(attend("self_attn")(q, q, x)))
    x = ln("norm2")(x + drop(attend("cross_attn")(x + query_pos, memory + memory_pos, memory)))
    y = nn.Dense(self.dim, dtype=self.dtype, name="fc2")(drop(nn.relu(nn.Dense(self.ffn_dim, dtype=self.dtype,
                                                                               name="fc1")(x))))
    return ln("norm3")(x + drop(y))


class QueryTransformer(nn.Module):
  dim: int = 256
  heads: int = 8
  layers: int = 2
  ffn_dim: int = 2048
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, task_token, mask_features, query_embed, train: bool = False):
    """task_token (B, d) already normalised, mask_features (B, H, W, C) at 1/4,
    query_embed (N - 1, d) -> (B, N, d) queries, the task token last."""
    b, h, w, _ = mask_features.shape
    memory = jnp.asarray(sine_position_encoding(h, w, self.dim).reshape(1, h * w, self.dim), self.dtype)
    memory = jnp.broadcast_to(memory, (b, h * w, self.dim))
    memory_pos = nn.Conv(self.dim, (1, 1), dtype=self.dtype, name="input_proj")(mask_features)
    memory_pos = memory_pos.reshape(b, h * w, self.dim)  # keys: m + W_p F_1/4
    x = jnp.broadcast_to(task_token[:, None].astype(self.dtype), (b, query_embed.shape[0], self.dim))
    for i in range(self.layers):
      x = QueryTransformerLayer(self.dim, self.heads, self.ffn_dim, self.dropout, self.dtype, name=f"layer{i}")(
          x, memory, memory_pos, query_embed[None].astype(self.dtype), train)
    x = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm")(x)
    return jnp.concatenate([x, task_token[:, None].astype(x.dtype)], 1)  # Q = [queries, Q_task]
