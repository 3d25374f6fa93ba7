"""DANet head: position and channel attention (Fu et al. 2019, Sec. 3).

Two branches on c4, each 3x3 conv to C/4 (+ BN + ReLU) -> attention module -> 3x3 conv
(+ BN + ReLU); the branch outputs are summed, then dropout 0.1 and a 1x1 classifier.
Each branch also has its own classifier, supervised in training ("pam", "cam").

The position attention's N x N matrix (N = H * W) is the memory hot spot, so above a
size threshold it is computed blockwise over keys with an online softmax (the
FlashAttention recurrence), forward and backward, never holding more than an
N x block slice of it.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.errors import ConfigError
from jaxseg.models.layers import ConvBN

F32 = jnp.float32


def naive_attention(q, k, v):
  """softmax(q k^T) v for q, k (B, N, D), v (B, N, C); the full (B, N, N) matrix."""
  s = jnp.einsum("bnd,bmd->bnm", q, k, preferred_element_type=F32)  # s_ij = q_i . k_j
  a = jax.nn.softmax(s, axis=-1)  # A: softmax over positions j
  return jnp.einsum("bnm,bmc->bnc", a, v.astype(F32))  # out_i = sum_j A_ij v_j  (V A^T)


def _key_blocks(k, v, block):
  """k, v padded to a multiple of `block` keys and split into (num_blocks, B, block, .),
  with the validity mask of the padded keys."""
  n = k.shape[1]
  nb = -(-n // block)
  pad = ((0, 0), (0, nb * block - n), (0, 0))
  split = lambda t: jnp.moveaxis(jnp.pad(t, pad).reshape(t.shape[0], nb, block, t.shape[-1]), 1, 0)
  valid = (jnp.arange(nb * block) < n).reshape(nb, 1, 1, block)  # broadcast over (B, N)
  return split(k), split(v), valid


def _blocked_forward(q, k, v, block):
  """Online softmax over key blocks: running max m, running sum l and the unnormalised
  output acc, all float32. Returns (out, logsumexp)."""
  b, n, _ = q.shape
  kb, vb, valid = _key_blocks(k, v, block)

  def step(carry, blk):
    m, l, acc = carry
    k_j, v_j, ok = blk
    s = jnp.einsum("bnd,bmd->bnm", q, k_j, preferred_element_type=F32)
    s = jnp.where(ok, s, -jnp.inf)  # padded keys get no weight
    m_new = jnp.maximum(m, s.max(-1))  # block 0 holds a real key, so m_new is finite
    p = jnp.exp(s - m_new[..., None])
    scale = jnp.exp(m - m_new)  # rescales what was accumulated under the old max
    l = l * scale + p.sum(-1)
    acc = acc * scale[..., None] + jnp.einsum("bnm,bmc->bnc", p, v_j.astype(F32))
    return (m_new, l, acc), None

  init = (jnp.full((b, n), -jnp.inf, F32), jnp.zeros((b, n), F32), jnp.zeros((b, n, v.shape[-1]), F32))
  (m, l, acc), _ = jax.lax.scan(step, init, (kb, vb, valid))
  return acc / l[..., None], m + jnp.log(l)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def blocked_attention(q, k, v, block=512):
  """softmax(q k^T) v computed `block` keys at a time: the same values as
  `naive_attention`, with O(B * N * block) live memory instead of O(B * N * N), in the
  backward pass too (which recomputes each block's probabilities from the saved
  logsumexp instead of storing them)."""
  return _blocked_forward(q, k, v, block)[0]


def _blocked_fwd(q, k, v, block):
  out, lse = _blocked_forward(q, k, v, block)
  return out, (q, k, v, out, lse)


def _blocked_bwd(block, res, d_out):
  q, k, v, out, lse = res
  n = k.shape[1]
  kb, vb, valid = _key_blocks(k, v, block)
  qf = q.astype(F32)
  delta = jnp.sum(d_out * out, axis=-1)  # D_i = dO_i . O_i = sum_j P_ij dP_ij

  def step(dq, blk):
    k_j, v_j, ok = blk
    s = jnp.einsum("bnd,bmd->bnm", q, k_j, preferred_element_type=F32)
    p = jnp.where(ok, jnp.exp(s - lse[..., None]), 0.0)  # P_ij, recomputed
    dv_j = jnp.einsum("bnm,bnc->bmc", p, d_out)  # dV_j = sum_i P_ij dO_i
    dp = jnp.einsum("bnc,bmc->bnm", d_out, v_j.astype(F32))  # dP_ij = dO_i . v_j
    ds = p * (dp - delta[..., None])  # softmax backward
    dq = dq + jnp.einsum("bnm,bmd->bnd", ds, k_j.astype(F32))
    dk_j = jnp.einsum("bnm,bnd->bmd", ds, qf)
    return dq, (dk_j, dv_j)

  dq, (dk, dv) = jax.lax.scan(step, jnp.zeros(q.shape, F32), (kb, vb, valid))
  unblock = lambda t: jnp.moveaxis(t, 0, 1).reshape(t.shape[1], -1, t.shape[-1])[:, :n]
  return dq.astype(q.dtype), unblock(dk).astype(k.dtype), unblock(dv).astype(v.dtype)


blocked_attention.defvjp(_blocked_fwd, _blocked_bwd)


def use_blocked(batch: int, n: int, threshold: int) -> bool:
  """The blocked path once the (batch, N, N) attention matrix has more than
  `threshold` elements."""
  return batch * n * n > threshold


class PositionAttention(nn.Module):
  """PAM: out = gamma * (V A^T) + x with A = softmax_j(Q^T K) (Eq. 1-2)."""
  blocked_threshold: int = 2 ** 26  # elements of the B x N x N matrix (256 MiB in fp32)
  block_size: int = 512  # keys per block of the blocked path
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    n = h * w
    # Query and key are 1x1 convs to C/8, value to C; with biases, as the official code.
    q = nn.Conv(max(c // 8, 1), (1, 1), dtype=self.dtype, name="query")(x).reshape(b, n, -1)
    k = nn.Conv(max(c // 8, 1), (1, 1), dtype=self.dtype, name="key")(x).reshape(b, n, -1)
    v = nn.Conv(c, (1, 1), dtype=self.dtype, name="value")(x).reshape(b, n, c)
    if use_blocked(b, n, self.blocked_threshold):
      out = blocked_attention(q, k, v, min(self.block_size, n))
    else:
      out = naive_attention(q, k, v)
    gamma = self.param("gamma", nn.initializers.zeros, (), F32)  # 0: identity at init
    return (gamma * out.reshape(b, h, w, c) + x).astype(self.dtype)  # E = gamma * (V A^T) + x


def channel_attention_map(x, variant="paper"):
  """A (B, C, C) of x (B, N, C): softmax of the energy X X^T over its last axis; the
  official code ('official') takes the softmax of rowmax(energy) - energy instead."""
  x = x.astype(F32)
  energy = jnp.einsum("bnc,bnd->bcd", x, x)  # energy = X X^T  (C x C)
  if variant == "official":
    energy = energy.max(-1, keepdims=True) - energy
  return jax.nn.softmax(energy, axis=-1)


class ChannelAttention(nn.Module):
  """CAM: out = gamma * (A X) + x, no convolutions (Eq. 3-4)."""
  variant: str = "paper"  # "paper": softmax(X X^T); "official": softmax(rowmax - X X^T)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    flat = x.reshape(b, h * w, c)
    a = channel_attention_map(flat, self.variant)
    out = jnp.einsum("bcd,bnd->bnc", a, flat.astype(F32))  # (A X)_cn = sum_d A_cd X_dn
    gamma = self.param("gamma", nn.initializers.zeros, (), F32)
    return (gamma * out.reshape(b, h, w, c) + x).astype(self.dtype)  # E = gamma * (A X) + x


class DANetHead(nn.Module):
  """Returns {"seg": fused logits, "pam": PAM-branch logits, "cam": CAM-branch logits}."""
  num_classes: int
  cam_variant: str = "paper"
  blocked_threshold: int = 2 ** 26
  block_size: int = 512
  dropout: float = 0.1
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, train: bool, batch=None):
    x = features["c4"]
    inter = x.shape[-1] // 4  # 512 for ResNet's 2048 channels
    kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)

    def classifier(y, name):
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
      return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name=name)(y)

    pam = ConvBN(inter, 3, **kw, name="pam_in")(x, train)
    pam = PositionAttention(self.blocked_threshold, self.block_size, self.dtype, name="pam")(pam)
    pam = ConvBN(inter, 3, **kw, name="pam_out")(pam, train)
    cam = ConvBN(inter, 3, **kw, name="cam_in")(x, train)
    cam = ChannelAttention(self.cam_variant, self.dtype, name="cam")(cam)
    cam = ConvBN(inter, 3, **kw, name="cam_out")(cam, train)
    return {"seg": classifier(pam + cam, "classifier"),  # sum fusion
            "pam": classifier(pam, "pam_classifier"),
            "cam": classifier(cam, "cam_classifier")}


# model.head of name "danet": its keys with their defaults (jaxseg.config.head). The
# blockwise attention's threshold and block size are model.attention_* (MCIBI's too).
CONFIG = dict(
    cam_variant="paper",  # "paper": softmax(X X^T); "official" (code): softmax(rowmax - X X^T)
)
LOSSES = {}  # "seg", "pam" and "cam" take the cross-entropy


def build(h, config, output_stride, common):
  m = config.model
  if h.cam_variant not in ("paper", "official"):
    raise ConfigError(f"config key model.head.cam_variant must be 'paper' or 'official', got '{h.cam_variant}'")
  return DANetHead(config.dataset.num_classes, h.cam_variant, *attention_blocks(m), m.dropout, **common)


def attention_blocks(m):
  """(threshold, block size) of the blockwise attention from model.attention_*."""
  if m.attention_block_size < 1:
    raise ConfigError(f"config key model.attention_block_size must be >= 1, got {m.attention_block_size}")
  return int(m.attention_blocked_threshold), int(m.attention_block_size)
