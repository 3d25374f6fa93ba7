"""The two-stage detector's losses on PANet's training outputs (panet.py), normalised as
torchvision's (each over the whole batch, the images' samples concatenated):

  rpn_objectness  mean over the sampled anchors of BCE(logit, objectness)
  rpn_box         sum over the positive anchors of smooth-L1_beta(delta - target), beta 1/9,
                  / the number of sampled anchors
  box_class       mean over the sampled RoIs of CE(logits, label)        (K + 1 classes)
  box_regression  sum over the foreground RoIs of smooth-L1_beta(deltas[label] - target),
                  beta 1/9, / the number of sampled RoIs
  mask            mean over the foreground RoIs' 28 x 28 pixels of BCE(logit of the
                  ground-truth class, target)

  smooth-L1_beta(x) = 0.5 x^2 / beta if |x| < beta else |x| - 0.5 beta   (beta = 0: L1)

The authors' Detectron uses beta 1 for the box head (`box_beta=1.0`). Every count is
guarded (max(n, 1)), so a batch without ground truth gives finite losses: the RPN and the
box head learn background, the regression and mask terms are 0.

  detection_losses(outputs, rpn_beta=1/9, box_beta=1/9, weights=None)
    -> {"loss": weighted sum, "rpn_objectness", "rpn_box", "box_class", "box_regression", "mask"}
  weights: a dict of per-term multipliers (missing terms weigh 1).
"""
from __future__ import annotations

import jax.numpy as jnp
import optax

TERMS = ("rpn_objectness", "rpn_box", "box_class", "box_regression", "mask")


def smooth_l1(x, beta):
  """Elementwise smooth-L1 (Huber / beta); beta 0 is L1."""
  ax = jnp.abs(x)
  if beta <= 0:
    return ax
  return jnp.where(ax < beta, 0.5 * x * x / beta, ax - 0.5 * beta)


def _count(mask):
  return jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32)


def rpn_losses(rpn, beta=1 / 9):
  valid = rpn["valid"]
  target = rpn["objectness"].astype(jnp.float32)
  bce = optax.sigmoid_binary_cross_entropy(rpn["logits"].astype(jnp.float32), target)
  objectness = jnp.sum(jnp.where(valid, bce, 0.0)) / _count(valid)
  positive = valid & rpn["objectness"]
  l1 = smooth_l1(rpn["deltas"].astype(jnp.float32) - rpn["target_deltas"], beta).sum(-1)
  return objectness, jnp.sum(jnp.where(positive, l1, 0.0)) / _count(valid)


def box_losses(box, beta=1 / 9):
  valid, labels = box["valid"], box["labels"]
  ce = optax.softmax_cross_entropy_with_integer_labels(box["class_logits"].astype(jnp.float32), labels)
  classification = jnp.sum(jnp.where(valid, ce, 0.0)) / _count(valid)
  own = jnp.take_along_axis(box["deltas"], labels[..., None, None], axis=-2)[..., 0, :]  # deltas[label]
  foreground = valid & (labels > 0)
  l1 = smooth_l1(own.astype(jnp.float32) - box["target_deltas"], beta).sum(-1)
  return classification, jnp.sum(jnp.where(foreground, l1, 0.0)) / _count(valid)


def mask_loss(mask):
  valid = mask["valid"]
  bce = optax.sigmoid_binary_cross_entropy(mask["logits"].astype(jnp.float32), mask["targets"]).mean(axis=(-2, -1))
  return jnp.sum(jnp.where(valid, bce, 0.0)) / _count(valid)


def detection_losses(outputs, rpn_beta=1 / 9, box_beta=1 / 9, weights=None):
  weights = dict(weights or {})
  unknown = set(weights) - set(TERMS)
  if unknown:
    raise ValueError(f"loss weights for unknown terms {sorted(unknown)}; the terms are {TERMS}")
  parts = dict(zip(TERMS[:2], rpn_losses(outputs["rpn"], rpn_beta)))
  parts.update(zip(TERMS[2:4], box_losses(outputs["box"], box_beta)))
  parts["mask"] = mask_loss(outputs["mask"])
  total = sum(weights.get(k, 1.0) * parts[k] for k in TERMS)
  return {"loss": total, **parts}
