"""OneFormer's task token (Jain et al. 2023, Sec. 3.1): the task text's 77 CLIP token ids
(clip_tokenizer.task_ids), cast to float as they are, through a 2-layer MLP:

  Q_task = W_2 ReLU(W_1 ids + b_1) + b_2      77 -> d -> d

(transformers' OneFormerTaskModel; the authors' `task_mlp`). The transformer decoder
then normalises it with its output LayerNorm before use (transformer_decoder.py).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class TaskEncoder(nn.Module):
  dim: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids):
    x = ids.astype(jnp.float32)  # the raw ids are the features
    x = nn.relu(nn.Dense(self.dim, dtype=self.dtype, name="fc1")(x))
    return nn.Dense(self.dim, dtype=self.dtype, name="fc2")(x)
