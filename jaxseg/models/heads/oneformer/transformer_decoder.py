"""OneFormer's transformer decoder (Mask2Former's masked-attention decoder, Cheng et al.
2022, conditioned on the task as in Jain et al. 2023).

  levels      the pixel decoder's 1/32, 1/16, 1/8 maps, each 1x1-projected to d (when its
              width is not d) + a learned level embedding; keys add their sine encoding
  queries     Q_0 = QueryTransformer(LN(Q_task), F_1/4), N of them; e: N learned
              query embeddings (their positions)
  heads       p_class = W_c LN(Q) (K + 1 logits); M = MLP_3(LN(Q)) . F_1/4 (mask logits)
  layer l     level = l mod 3; the attention mask is the previous prediction resized
  (post-norm) bilinearly to that level, masked where sigmoid(M) < 0.5, and a query with
              every pixel masked attends to all of them:
                Q = LN(Q + CrossAttn(Q + e, X_level + pos, X_level, mask))
                Q = LN(Q + SelfAttn(Q + e, Q + e, Q))
                Q = LN(Q + W_2 ReLU(W_1 Q))
  outputs     the heads' predictions before the first layer and after every layer:
              {"class_logits": [(B, N, K + 1)] * (L + 1), "mask_logits": [(B, H/4, W/4, N)] * (L + 1),
               "queries": Q_0 (the contrastive loss's), "object_queries": Q_L}

`layers` counts the decoder layers (9 in OneFormer; transformers' `decoder_layers` is
that + 1). The LayerNorm before the heads also normalises the task token.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.heads.oneformer.attention import MultiHeadAttention
from jaxseg.models.heads.oneformer.pixel_decoder import sine_position_encoding
from jaxseg.models.heads.oneformer.query_transformer import QueryTransformer
from jaxseg.models.layers import resize


def attention_mask(mask_logits, size):
  """(B, H/4, W/4, N) mask logits -> (B, N, h * w) bool, True = not attended: resized
  bilinearly (no antialiasing) to the level's (h, w), sigmoid < 0.5; a query whose row is
  all True attends everywhere instead."""
  m = resize(mask_logits, size)
  m = jnp.transpose(m, (0, 3, 1, 2)).reshape(*m.shape[:1], m.shape[3], -1)
  blocked = jax.nn.sigmoid(m.astype(jnp.float32)) < 0.5  # a comparison: no gradient flows through the mask
  return blocked & ~blocked.all(-1, keepdims=True)  # fully masked rows are un-masked


class DecoderLayer(nn.Module):
  dim: int = 256
  heads: int = 8
  ffn_dim: int = 2048
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, q, query_pos, memory, memory_pos, mask):
    ln = lambda name: nn.LayerNorm(1e-5, dtype=self.dtype, name=name)
    attend = lambda name: MultiHeadAttention(self.dim, self.heads, dtype=self.dtype, name=name)
    q = ln("cross_norm")(q + attend("cross_attn")(q + query_pos, memory + memory_pos, memory, mask))
    p = q + query_pos
    q = ln("self_norm")(q + attend("self_attn")(p, p, q))
    y = nn.Dense(self.dim, dtype=self.dtype, name="fc2")(nn.relu(nn.Dense(self.ffn_dim, dtype=self.dtype,
                                                                          name="fc1")(q)))
    return ln("ffn_norm")(q + y)


class TransformerDecoder(nn.Module):
  num_classes: int  # K; the class head predicts K + 1 (the last is "no object")
  dim: int = 256
  mask_dim: int = 256
  heads: int = 8
  layers: int = 9
  queries: int = 150  # N, the task token included
  ffn_dim: int = 2048
  query_layers: int = 2
  dropout: float = 0.1  # of the query transformer (the decoder layers have none)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, multi_scale, mask_features, task_token, train: bool = False):
    """multi_scale [(B, h_l, w_l, C)] * 3 (1/32, 1/16, 1/8), mask_features (B, H/4, W/4,
    mask_dim), task_token (B, d) from TaskEncoder."""
    if len(multi_scale) != 3:
      raise ValueError(f"multi_scale: expected the 3 maps 1/32, 1/16, 1/8, got {len(multi_scale)}")
    if mask_features.shape[-1] != self.mask_dim:
      raise ValueError(f"mask_features: expected {self.mask_dim} channels, got shape {mask_features.shape}")
    b, d = mask_features.shape[0], self.dim
    level_embed = self.param("level_embed", nn.initializers.normal(1.0), (3, d))
    query_embed = self.param("query_embed", nn.initializers.normal(1.0), (self.queries, d))
    memories, positions, sizes = [], [], []
    for l, x in enumerate(multi_scale):
      h, w, c = x.shape[1:]
      if c != d:
        x = nn.Conv(d, (1, 1), dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
                    name=f"input_proj{l}")(x)
      memories.append(x.reshape(b, h * w, d).astype(self.dtype) + level_embed[l].astype(self.dtype))
      positions.append(jnp.asarray(sine_position_encoding(h, w, d).reshape(1, h * w, d), self.dtype))
      sizes.append((h, w))

    norm = nn.LayerNorm(1e-5, dtype=self.dtype, name="decoder_norm")  # shared by the task token and the heads
    class_head = nn.Dense(self.num_classes + 1, dtype=self.dtype, name="class_embed")
    mask_mlp = [nn.Dense(n, dtype=self.dtype, name=f"mask_embed{i}") for i, n in enumerate((d, d, self.mask_dim))]

    def predict(q, size):
      q = norm(q)
      e = nn.relu(mask_mlp[0](q))
      e = mask_mlp[2](nn.relu(mask_mlp[1](e)))
      masks = jnp.einsum("bqc,bhwc->bhwq", e, mask_features.astype(self.dtype))  # M = MLP(LN(Q)) . F_1/4
      return class_head(q), masks, attention_mask(masks, size)

    task_token = norm(task_token)
    q0 = QueryTransformer(d, self.heads, self.query_layers, self.ffn_dim, self.dropout, self.dtype,
                          name="query_transformer")(task_token, mask_features, query_embed[:-1], train)
    q, query_pos = q0, query_embed[None].astype(self.dtype)
    classes, masks = [], []
    c, m, mask = predict(q, sizes[0])
    classes.append(c)
    masks.append(m)
    for i in range(self.layers):
      l = i % 3
      q = DecoderLayer(d, self.heads, self.ffn_dim, self.dtype, name=f"layer{i}")(
          q, query_pos, memories[l], positions[l], mask)
      c, m, mask = predict(q, sizes[(i + 1) % 3])
      classes.append(c)
      masks.append(m)
    return {"class_logits": classes, "mask_logits": masks, "queries": q0, "object_queries": q}
