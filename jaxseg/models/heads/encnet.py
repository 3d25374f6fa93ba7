"""EncNet head: the Context Encoding Module (Zhang et al. 2018), FastFCN's main head.

c4 -> conv (512, BN, ReLU) -> X. The encoding layer learns K codewords d_k with
smoothing factors s_k and aggregates the N pixel features x_i of X as

    e_k = sum_i a_ik (x_i - d_k),   a_ik = exp(-s_k |x_i - d_k|^2) / sum_j exp(-s_j |x_i - d_j|^2)

then BN over the K codewords, ReLU and the mean over k give the image's encoding e (C).
A fully connected layer + sigmoid turns e into channel scales: Y = ReLU(X + X * gamma)
(the featuremap attention), followed by dropout 0.1 and the 1x1 classifier. A second
fully connected layer predicts from e which classes are present in the image; its
Semantic Encoding loss (binary cross-entropy) is the output "se", training only.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.losses import bce_with_logits
from jaxseg.models.layers import ConvBN


class Encoding(nn.Module):
  """(B, H, W, C) -> (B, K, C): the residual encodings e_k of the equation above."""
  codewords: int = 32

  @nn.compact
  def __call__(self, x):
    b, c = x.shape[0], x.shape[-1]
    x = x.reshape(b, -1, c).astype(jnp.float32)  # (B, N, C); the softmax wants fp32
    bound = 1.0 / (self.codewords * c) ** 0.5
    uniform = lambda low, high: lambda key, shape: jax.random.uniform(key, shape, jnp.float32, low, high)
    d = self.param("codewords", uniform(-bound, bound), (self.codewords, c))
    s = self.param("smoothing", uniform(0.0, 1.0), (self.codewords,))
    # |x_i - d_k|^2 = |x_i|^2 - 2 x_i.d_k + |d_k|^2, without the (B, N, K, C) residuals.
    dist = (jnp.sum(x * x, -1, keepdims=True) - 2 * jnp.einsum("bnc,kc->bnk", x, d)
            + jnp.sum(d * d, -1))
    a = jax.nn.softmax(-s * dist, axis=-1)  # a_ik, (B, N, K)
    # sum_i a_ik (x_i - d_k) = (A^T X)_k - (sum_i a_ik) d_k
    return jnp.einsum("bnk,bnc->bkc", a, x) - jnp.sum(a, axis=1)[..., None] * d


class EncNetHead(nn.Module):
  num_classes: int
  channels: int = 512
  codewords: int = 32
  conv_kernel: int = 3  # the reduction conv on c4: 3x3, or 1x1 behind the JPU (official code; mmseg: 3x3)
  dropout: float = 0.1
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, train: bool, batch=None):
    kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)
    x = ConvBN(self.channels, self.conv_kernel, **kw, name="reduce")(features["c4"], train)
    e = ConvBN(self.channels, 1, **kw, name="encode_in")(x, train)
    e = Encoding(self.codewords, name="encoding")(e)
    e = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, axis=1,
                     name="encoding_bn")(e)  # over the K codewords, as BatchNorm1d(K)
    e = jnp.mean(nn.relu(e), axis=1)  # (B, C)
    gamma = nn.sigmoid(nn.Dense(self.channels, name="attention")(e))
    x = nn.relu(x + x * gamma[:, None, None, :].astype(x.dtype))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    seg = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)
    if not train:
      return seg
    return {"seg": seg, "se": nn.Dense(self.num_classes, name="se_classifier")(e)}


def class_presence(labels, num_classes, ignore_index=255):
  """(B, H, W) labels -> (B, K) float32: 1 where class k occurs in the image (ignored
  pixels count for no class)."""
  flat = labels.reshape(labels.shape[0], -1).astype(jnp.int32)
  flat = jnp.where((flat == ignore_index) | (flat >= num_classes), num_classes, flat)
  present = jax.vmap(lambda ids: jnp.zeros(num_classes + 1).at[ids].max(1.0))(flat)
  return present[:, :num_classes]


def semantic_encoding_loss(logits, labels, ignore_index=255):
  """EncNet's SE loss: binary cross-entropy of the (B, K) class-presence logits against
  the classes present in each label map, averaged over images and classes."""
  return jnp.mean(bce_with_logits(logits, class_presence(labels, logits.shape[-1], ignore_index)))


def se_terms(outputs, labels, config, key=None):
  return {"se": semantic_encoding_loss(outputs["se"], labels, config.dataset.ignore_index)}


LOSSES = {"se": se_terms}  # output -> its terms

# model.head of name "encnet": its keys with their defaults (jaxseg.config.head)
CONFIG = dict(
    channels=512,
    codewords=32,  # K of the encoding layer
    reduce_kernel=0,  # the first conv: 0 = 1x1 behind the JPU (official code), else 3x3; or 1 / 3
)


def build(h, config, output_stride, common):
  m = config.model
  # Behind the JPU the official code reduces the 2048 channels with a 1x1 conv, else 3x3.
  kernel = h.reduce_kernel or (1 if m.neck.name == "jpu" else 3)
  return EncNetHead(config.dataset.num_classes, h.channels, h.codewords, kernel, m.dropout, **common)
