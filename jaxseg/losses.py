"""Loss primitives: cross-entropy (ignore, class weights, OHEM) and binary
cross-entropy. Logits are upsampled to the label size, never the reverse. The terms
of a particular head live next to it (jaxseg/models/heads/*.py, `LOSSES`); the
semantic family sums them (jaxseg.families.semantic.segmentation_loss)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseg.models.layers import resize


def cross_entropy(logits, labels, ignore_index=255, class_weights=None, align_corners=False):
  """Softmax cross-entropy averaged over non-ignored pixels.

  logits (B, h, w, K) at any resolution, bilinearly upsampled to labels (B, H, W).
  With class weights w, the mean is weighted: sum_i w[y_i] * nll_i / sum_i w[y_i]
  (the PyTorch / toolbox convention). Computed in float32.
  """
  nll, weight = pixel_nll(logits, labels, ignore_index, class_weights, align_corners)
  return jnp.sum(nll * weight) / jnp.maximum(jnp.sum(weight), 1e-12)


def pixel_nll(logits, labels, ignore_index=255, class_weights=None, align_corners=False):
  """(nll, weight) per pixel (B, H, W) in float32: -log p(y) of the upsampled logits,
  and the pixel's weight (0 where ignored, else 1 or its class weight)."""
  logits = resize(logits.astype(jnp.float32), labels.shape[1:3], align_corners=align_corners)
  valid = labels != ignore_index
  safe = jnp.where(valid, labels, 0).astype(jnp.int32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
  weight = valid.astype(jnp.float32)
  if class_weights is not None:
    weight = weight * jnp.asarray(class_weights, jnp.float32)[safe]
  return nll, weight


def ohem_keep(nll, valid, thresh=0.7, min_kept=-1):
  """The pixels online hard example mining keeps (BiSeNet/STDC): those whose true class
  has probability below `thresh` (nll > -ln thresh), or, when fewer than `min_kept`
  pixels are that hard, the `min_kept` highest-loss ones (all of them if fewer are
  valid; pixels tied with the min_kept-th loss all stay). min_kept = -1: B * H * W // 16.
  Ignored pixels are never kept."""
  if min_kept < 0:
    min_kept = nll.size // 16
  hard = valid & (nll > -jnp.log(jnp.float32(thresh)))
  if min_kept == 0:
    return hard
  k = min(int(min_kept), nll.size)
  ranked = jnp.where(valid, nll, -1.0).reshape(-1)  # losses are >= 0: -1 marks ignored pixels
  kth = jnp.sort(ranked)[ranked.size - k]  # the k-th largest loss
  return valid & jnp.where(jnp.sum(hard) >= k, hard, nll >= kth)


def ohem_cross_entropy(logits, labels, ignore_index=255, class_weights=None, thresh=0.7, min_kept=-1,
                       align_corners=False):
  """Cross-entropy averaged (class-weighted) over the pixels `ohem_keep` selects."""
  nll, weight = pixel_nll(logits, labels, ignore_index, class_weights, align_corners)
  keep = jax.lax.stop_gradient(ohem_keep(nll, labels != ignore_index, thresh, min_kept))
  weight = weight * keep
  return jnp.sum(nll * weight) / jnp.maximum(jnp.sum(weight), 1e-12)


def bce_with_logits(logits, targets):
  """Elementwise binary cross-entropy of float32 logits against targets in [0, 1],
  in the stable form max(x, 0) - x t + log(1 + exp(-|x|))."""
  x = logits.astype(jnp.float32)
  return jnp.maximum(x, 0) - x * targets + jnp.log1p(jnp.exp(-jnp.abs(x)))
