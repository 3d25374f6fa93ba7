"""MCIBI: Mining Contextual Information Beyond Image (Jin et al., ICCV 2021), on a host
head (DeepLabv3's ASPP gives the within-image context).

  R      = 3x3 ConvBN(c4)                              pixel representations (C = 512)
  W      = H1(R)                                       class distribution, K x H/8 x W/8
  C'_bi  = softmax(W)^T M                              dataset-level context per pixel
  C_bi   = g_o(softmax(g_q(R) g_k(C'_bi)^T / sqrt(d)) g_v(C'_bi))   refined by R
  C_wi   = ASPP(c4)                                    within-image context
  R_aug  = 3x3 ConvBN([R, C_bi, C_wi])
  O      = H2(R_aug),  O_M = H2(M)                     H2 also classifies the memory rows
  L      = alpha CE(W) + CE(O) + beta CE(O_M) (+ aux)

The feature memory M (K x C) is not trained by gradients. It lives in the
`batch_stats` collection, so it is checkpointed with the BN statistics, and is updated
in every training forward pass from the ground truth:
  w_i = (1 - cos(f_i, M_k)) / sum_j (1 - cos(f_j, M_k))   over the pixels i of class k
  M_k <- (1 - m) M_k + m sum_i w_i f_i,    m = m0 (1 - t / T) ** p
Under jit the update reads the whole global batch, so it is the same on any number of
devices (the official code averages per-GPU updates across replicas instead).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.losses import cross_entropy
from jaxseg.models.heads.aspp import ASPP, scaled_rates
from jaxseg.models.heads.danet import attention_blocks, blocked_attention, naive_attention, use_blocked
from jaxseg.models.layers import ConvBN, resize

F32 = jnp.float32


def memory_momentum(step, total_steps, m0=0.9, power=0.9):
  """m = m0 * (1 - t / T) ** p (poly annealing)."""
  return m0 * (1.0 - jnp.minimum(step, total_steps) / total_steps) ** power


def update_memory(memory, seen, features, labels, momentum, ignore_index=255):
  """One MCIBI memory update from pixel `features` (P, C) with `labels` (P,).

  Returns (memory, seen). A class never seen before is initialised with its
  (unweighted) class mean, as the paper's code does on the first batch containing it.
  """
  k = memory.shape[0]
  features = jax.lax.stop_gradient(features.astype(F32))
  valid = (labels != ignore_index) & (labels < k)
  cls = jnp.where(valid, labels, 0).astype(jnp.int32)
  row = memory[cls]  # M_{y_i} for every pixel
  cos = jnp.sum(features * row, -1) / jnp.maximum(
      jnp.linalg.norm(features, axis=-1) * jnp.linalg.norm(row, axis=-1), 1e-12)
  s = jnp.where(valid, 1.0 - cos, 0.0)  # 1 - cos(f_i, M_k)
  weighted = jax.ops.segment_sum(s[:, None] * features, cls, k) / jnp.maximum(
      jax.ops.segment_sum(s, cls, k), 1e-12)[:, None]  # sum_i w_i f_i
  count = jax.ops.segment_sum(valid.astype(F32), cls, k)
  mean = jax.ops.segment_sum(jnp.where(valid[:, None], features, 0.0), cls, k) / jnp.maximum(count, 1.0)[:, None]
  present = count > 0
  updated = jnp.where(seen[:, None], (1 - momentum) * memory + momentum * weighted, mean)
  return jnp.where(present[:, None], updated, memory), seen | present


class ClassifierHead(nn.Module):
  """conv (kernel) + BN + ReLU -> dropout -> 1x1 classifier. `use_running_average`
  lets H2 classify the memory rows without their statistics entering BN's."""
  num_classes: int
  channels: int
  kernel: int = 1
  dropout: float = 0.1
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool, use_running_average: bool | None = None):
    pad = (self.kernel - 1) // 2
    x = nn.Conv(self.channels, (self.kernel, self.kernel), padding=((pad, pad), (pad, pad)),
                use_bias=False, dtype=self.dtype, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train if use_running_average is None else use_running_average,
                     momentum=self.bn_momentum, epsilon=1e-5, dtype=self.dtype, name="bn")(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(x))
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)


class MCIBIHead(nn.Module):
  num_classes: int
  channels: int = 512  # C of R and of the memory rows
  transform_channels: int = 256  # d of the query/key/value transforms
  aspp_rates: Sequence[int] = (12, 24, 36)  # host head, already scaled to the output stride
  total_steps: int = 1  # T of the momentum schedule
  momentum: float = 0.9  # m0
  momentum_power: float = 0.9  # p
  update_at_label_size: bool = True  # the paper upsamples R to the label size to update M
  blocked_threshold: int = 2 ** 26
  block_size: int = 512
  dropout: float = 0.1
  ignore_index: int = 255
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, train: bool, batch=None):
    labels = (batch or {}).get("label")  # the ground truth the memory update reads in training
    k, c, d = self.num_classes, self.channels, self.transform_channels
    kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)
    memory = self.variable("batch_stats", "memory", lambda: jnp.zeros((k, c), F32))
    seen = self.variable("batch_stats", "seen", lambda: jnp.zeros((k,), bool))
    step = self.variable("batch_stats", "step", lambda: jnp.zeros((), jnp.int32))

    r = ConvBN(c, 3, **kw, name="bottleneck")(features["c4"], train)  # R
    w_logits = ClassifierHead(k, c, 1, self.dropout, **kw, name="h1")(r, train)  # W = H1(R)
    b, h, w_, _ = r.shape
    n = h * w_

    # C'_bi = softmax(W)^T M: each pixel's dataset-level context from the memory rows.
    weight = jax.nn.softmax(w_logits.astype(F32), axis=-1).reshape(b, n, k)
    coarse = (weight @ memory.value).reshape(b, h, w_, c).astype(self.dtype)
    # C_bi: refine C'_bi by its correlation with R (scaled dot-product attention).
    q = ConvBN(d, 1, **kw, name="query2")(ConvBN(d, 1, **kw, name="query1")(r, train), train)
    key = ConvBN(d, 1, **kw, name="key2")(ConvBN(d, 1, **kw, name="key1")(coarse, train), train)
    v = ConvBN(d, 1, **kw, name="value")(coarse, train)
    q = q.reshape(b, n, d) * d ** -0.5
    attend = blocked_attention if use_blocked(b, n, self.blocked_threshold) else naive_attention
    args = (self.block_size,) if attend is blocked_attention else ()
    ctx = attend(q, key.reshape(b, n, d), v.reshape(b, n, d), *args).reshape(b, h, w_, d)
    c_bi = ConvBN(c, 1, **kw, name="out")(ctx.astype(self.dtype), train)
    c_wi = ASPP(c, self.aspp_rates, **kw, name="aspp")(features["c4"], train)  # host head context
    r_aug = ConvBN(c, 3, **kw, name="fuse")(jnp.concatenate([r, c_bi, c_wi], -1), train)  # F(R, C_bi, C_wi)

    h2 = ClassifierHead(k, c, 3, self.dropout, **kw, name="h2")
    outputs = {"seg": h2(r_aug, train), "dataset_context": w_logits}
    if train and not self.is_initializing():
      # Representation-consistent learning: H2 classifies every memory row as its class.
      rows = memory.value.astype(self.dtype).reshape(k, 1, 1, c)
      outputs["memory"] = h2(rows, train, use_running_average=True).reshape(1, 1, k, k)  # row k -> class k
    if train and labels is not None and not self.is_initializing():
      feats = resize(r.astype(F32), labels.shape[1:3]) if self.update_at_label_size else r.astype(F32)
      lab = labels if self.update_at_label_size else resize(
          labels[..., None].astype(F32), (h, w_), "nearest")[..., 0].astype(jnp.int32)
      m = memory_momentum(step.value, self.total_steps, self.momentum, self.momentum_power)
      memory.value, seen.value = update_memory(memory.value, seen.value, feats.reshape(-1, c),
                                               lab.reshape(-1), m, self.ignore_index)
      step.value = step.value + 1
    return outputs


def memory_terms(outputs, labels, config, key=None):
  """beta CE(O_M): H2's logits of the memory rows (1, 1, K, K), row k labelled k."""
  logits = outputs["memory"]
  k = logits.shape[-1]
  weights = tuple(config.loss.class_weights) or None
  return {"memory": cross_entropy(logits, jnp.arange(k, dtype=jnp.int32).reshape(1, 1, k),
                                  config.dataset.ignore_index, weights, config.model.align_corners)}


# output -> its terms; "dataset_context" (W) takes the cross-entropy on the labels
LOSSES = {"memory": memory_terms}

# model.head of name "mcibi": its keys with their defaults (jaxseg.config.head). The
# blockwise attention's threshold and block size are model.attention_* (DANet's too).
CONFIG = dict(
    channels=512,  # C of the pixel representations R and the memory rows
    transform_channels=256,  # query/key/value width of the context refinement
    aspp_rates=(6, 12, 18),  # of the host head's ASPP, at output stride 16; scaled by 16 / OS
    momentum=0.9,  # m0 of the memory update, poly-annealed to 0 over train.steps
    momentum_power=0.9,  # p
    update_at_label_size=True,  # paper: upsample R to the labels; False: labels to R
)


def build(h, config, output_stride, common):
  return MCIBIHead(config.dataset.num_classes, h.channels, h.transform_channels,
                   scaled_rates(h.aspp_rates, output_stride), config.train.steps, h.momentum, h.momentum_power,
                   h.update_at_label_size, *attention_blocks(config.model), config.model.dropout,
                   config.dataset.ignore_index, **common)


# Asynchronous replicas (jaxseg.replicas) hold one memory each. A replica that has not
# seen class k holds zeros in row k, which must not pull the row towards 0: rows are
# averaged over the replicas that have seen their class.

def memory_mean(memory, seen):
  """The class memory (R, K, C) with its (R, K) flags of R replicas: a row is the mean
  over the replicas that have seen its class; seen by any replica."""
  count = jnp.sum(seen, axis=0)
  mean = jnp.sum(jnp.where(seen[..., None], memory, 0.0), axis=0) / jnp.maximum(count, 1)[:, None]
  return mean[None], (count > 0)[None]


class MemoryMerge:
  """The replica merge rule of the head's batch_stats entries "memory" and "seen",
  applied where both stand together (other keys named "memory" merge as usual)."""
  keys = frozenset({"memory", "seen"})

  @staticmethod
  def exchange(current, snapshot):
    """w_r <- w_r + mean(s) - s_r where replica r had seen the class at the snapshot;
    where it had not, it keeps a row it has filled since, or adopts the others' mean."""
    (w, w_seen), (s, s_seen) = (current["memory"], current["seen"]), (snapshot["memory"], snapshot["seen"])
    mean, any_seen = memory_mean(s, s_seen)
    return {"memory": jnp.where(s_seen[..., None], w + mean - s, jnp.where(w_seen[..., None], w, mean)),
            "seen": w_seen | any_seen}

  @staticmethod
  def average(tree):
    memory, seen = memory_mean(tree["memory"], tree["seen"])
    return {"memory": memory[0], "seen": seen[0]}
