"""OneFormer's text mapper (Jain et al. 2023, Sec. 3.3; training only): the texts of
an image's ground-truth masks ("a photo with a {class}", padded with "a/an {task}
photo"), each tokenised with clip_tokenizer into `context` ids, become text queries for
the query-text contrastive loss.

  encoder    x = E_tok[ids] + E_pos                               CLIP's text transformer
  (pre-norm) x = x + SelfAttn(LN(x))          causal: a token attends to itself and earlier
             x = x + W_2 QuickGELU(W_1 LN(x))          QuickGELU(z) = z sigmoid(1.702 z)
             t = LN(x)[position of the end token]      (the largest id of the text)
  projector  q = MLP(t)                                 width -> d, `proj_layers` layers
  output     Q_text = [q_1..q_T, C_1..C_{n_ctx}]        learned context embeddings, (B, T + n_ctx, d)

The authors' encoder applies the causal mask (CLIP's); transformers' OneFormerTextEncoder
builds it but never passes it to its attention, so its tokens attend to the whole
sequence, padding included: `causal=False` is transformers' behaviour.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.heads.oneformer.attention import MultiHeadAttention


def quick_gelu(x):
  return x * jax.nn.sigmoid(1.702 * x)


class TextLayer(nn.Module):
  width: int = 256
  heads: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    y = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm1")(x)
    x = x + MultiHeadAttention(self.width, self.heads, dtype=self.dtype, name="attn")(y, y, y, mask)
    y = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm2")(x)
    y = nn.Dense(self.width, dtype=self.dtype, name="fc2")(quick_gelu(nn.Dense(4 * self.width, dtype=self.dtype,
                                                                               name="fc1")(y)))
    return x + y


class TextEncoder(nn.Module):
  context: int = 77
  width: int = 256
  layers: int = 6
  vocab: int = 49408
  causal: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids):
    """ids (B, context) -> (B, width) at each text's end token."""
    if ids.shape[-1] != self.context:
      raise ValueError(f"text ids: expected {self.context} per text, got shape {ids.shape}")
    token = self.param("token_embedding", nn.initializers.normal(0.02), (self.vocab, self.width))
    pos = self.param("positional_embedding", nn.initializers.normal(0.01), (self.context, self.width))
    x = (token[ids] + pos).astype(self.dtype)
    mask = None
    if self.causal:  # True above the diagonal: later tokens are not attended
      mask = jnp.asarray(np.triu(np.ones((self.context, self.context), bool), 1))[None]
    for i in range(self.layers):
      x = TextLayer(self.width, self.width // 64, self.dtype, name=f"layer{i}")(x, mask)
    x = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm")(x)
    return jnp.take_along_axis(x, jnp.argmax(ids, -1)[:, None, None], 1)[:, 0]


class TextMapper(nn.Module):
  dim: int = 256  # d of the object queries
  context: int = 77
  width: int = 256
  layers: int = 6
  vocab: int = 49408
  proj_layers: int = 2
  n_ctx: int = 16
  causal: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids):
    """ids (B, T, context) -> (B, T + n_ctx, d) text queries."""
    if ids.ndim != 3:
      raise ValueError(f"text ids: expected (B, T, {self.context}), got shape {ids.shape}")
    if self.n_ctx and self.width != self.dim:
      raise ValueError(f"the context embeddings ({self.width} wide) join queries of {self.dim}: width must be dim")
    b, t, _ = ids.shape
    x = TextEncoder(self.context, self.width, self.layers, self.vocab, self.causal, self.dtype,
                    name="text_encoder")(ids.reshape(b * t, -1))
    for i in range(self.proj_layers):
      x = nn.Dense(self.dim, dtype=self.dtype, name=f"proj{i}")(x)
      x = nn.relu(x) if i < self.proj_layers - 1 else x
    x = x.reshape(b, t, self.dim)
    if self.n_ctx:
      ctx = self.param("prompt_ctx", nn.initializers.normal(1.0), (self.n_ctx, self.width))
      x = jnp.concatenate([x, jnp.broadcast_to(ctx.astype(x.dtype), (b, self.n_ctx, self.dim))], 1)
    return x
