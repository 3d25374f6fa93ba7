"""Multi-head attention as torch.nn.MultiheadAttention computes it (the authors' decoder
uses it for every attention; DETR's positions are added to queries and keys only):

  q, k, v = W_q (x + pos_q), W_k (m + pos_k), W_v m          one fused (d, 3d) projection
  A_h = softmax(q_h k_h^T / sqrt(d / heads) + mask)          mask: True = not attended
  out = W_o [A_1 v_1, ..., A_heads v_heads]
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class MultiHeadAttention(nn.Module):
  dim: int = 256
  heads: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, query, key, value, mask=None):
    """query (B, Q, d) with its positions added, key (B, S, d) with its positions added,
    value (B, S, d); mask (B, Q, S) or (B, heads, Q, S) bool, True where a query may
    not attend (no row may be all True). -> (B, Q, d)."""
    d, h = self.dim, self.heads
    kernel = self.param("in_proj_kernel", nn.initializers.xavier_uniform(), (d, 3 * d))
    bias = self.param("in_proj_bias", nn.initializers.zeros, (3 * d,))
    kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
    split = lambda x: x.reshape(*x.shape[:2], h, d // h)  # (B, L, heads, d / heads)
    q = split(query.astype(self.dtype) @ kernel[:, :d] + bias[:d])
    k = split(key.astype(self.dtype) @ kernel[:, d:2 * d] + bias[d:2 * d])
    v = split(value.astype(self.dtype) @ kernel[:, 2 * d:] + bias[2 * d:])
    logits = jnp.einsum("bqhc,bshc->bhqs", q, k, preferred_element_type=jnp.float32) / jnp.sqrt(d / h)
    if mask is not None:
      mask = mask[:, None] if mask.ndim == 3 else mask
      logits = jnp.where(mask, -jnp.inf, logits)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)  # softmax in fp32
    out = jnp.einsum("bhqs,bshc->bqhc", weights, v).reshape(*query.shape[:2], d)
    return nn.Dense(d, dtype=self.dtype, name="out_proj")(out)
