"""OneFormer's task token (Jain et al. 2023, Sec. 3.1): the task text's 77 CLIP token ids
(clip_tokenizer.task_ids), cast to float as they are, through a 2-layer MLP:

  Q_task = W_2 ReLU(W_1 ids + b_1) + b_2      77 -> d -> d

(transformers' OneFormerTaskModel; the authors' `task_mlp`). The transformer decoder
then normalises it with its output LayerNorm before use (transformer_decoder.py).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class TaskEncoder(nn.Module):
  """Always fp32: the ids (up to 49407) are the features, and bfloat16 would round them
  to multiples of 256; the MLP is 77 x d, negligible."""
  dim: int = 256

  @nn.compact
  def __call__(self, ids):
    x = ids.astype(jnp.float32)  # the raw ids are the features
    x = nn.relu(nn.Dense(self.dim, dtype=jnp.float32, name="fc1")(x))
    return nn.Dense(self.dim, dtype=jnp.float32, name="fc2")(x)
