"""Segmentation losses. Logits are upsampled to the label size, never the reverse."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseg.errors import ConfigError
from jaxseg.metrics import disk, fill_ignore, shift
from jaxseg.models.layers import resize


def cross_entropy(logits, labels, ignore_index=255, class_weights=None):
  """Softmax cross-entropy averaged over non-ignored pixels.

  logits (B, h, w, K) at any resolution, bilinearly upsampled to labels (B, H, W).
  With class weights w, the mean is weighted: sum_i w[y_i] * nll_i / sum_i w[y_i]
  (the PyTorch / toolbox convention). Computed in float32.
  """
  logits = resize(logits.astype(jnp.float32), labels.shape[1:3])
  valid = labels != ignore_index
  safe = jnp.where(valid, labels, 0).astype(jnp.int32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
  weight = valid.astype(jnp.float32)
  if class_weights is not None:
    weight = weight * jnp.asarray(class_weights, jnp.float32)[safe]
  return jnp.sum(nll * weight) / jnp.maximum(jnp.sum(weight), 1e-12)


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
  targets = class_presence(labels, logits.shape[-1], ignore_index)
  logits = logits.astype(jnp.float32)
  return jnp.mean(jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits))))


def boundary_targets(labels, radius=2, ignore_index=255):
  """Gated-SCNN's boundary ground truth from a label map (B, H, W): 1 at pixels within
  Euclidean distance `radius` of a pixel of another class, 0 elsewhere, and
  `ignore_index` at ignored pixels. Ignore is no class: neither the image border nor
  a void region makes edges; an ignore band up to 2 x radius wide between two classes
  (VOC-style contour bands) is first filled from both sides (`fill_ignore`), so the
  pixels beside it are boundaries."""
  labels = labels.astype(jnp.int32)
  filled = fill_ignore(labels, int(radius), ignore_index)
  edge = jnp.zeros(labels.shape, bool)
  for dy, dx in disk(radius):
    other = shift(filled, dy, dx, ignore_index)
    edge = edge | ((other != labels) & (other != ignore_index))
  return jnp.where(labels == ignore_index, ignore_index, edge.astype(jnp.int32))


def balanced_bce(logits, targets, ignore_index=255):
  """Class-balanced binary cross-entropy (HED, used by Gated-SCNN) of boundary logits
  (B, h, w, 1), upsampled to the targets (B, H, W) in {0, 1, ignore}: positives weigh
  |negatives| / |valid|, negatives |positives| / |valid|, averaged over valid pixels.
  Takes logits: the sigmoid is applied once, here."""
  x = resize(logits.astype(jnp.float32), targets.shape[1:3])[..., 0]
  pos, neg = targets == 1, targets == 0
  n_pos, n_neg = jnp.sum(pos), jnp.sum(neg)
  total = jnp.maximum(n_pos + n_neg, 1).astype(jnp.float32)
  weight = jnp.where(pos, n_neg / total, jnp.where(neg, n_pos / total, 0.0))
  bce = jnp.maximum(x, 0) - x * pos + jnp.log1p(jnp.exp(-jnp.abs(x)))
  return jnp.sum(weight * bce) / total


def _smooth(x, sigma=1.0, radius=2):
  """Separable Gaussian filter of (B, H, W, K), replicating the border."""
  t = jnp.arange(-radius, radius + 1, dtype=x.dtype)
  g = jnp.exp(-t * t / (2 * sigma * sigma))
  g = g / g.sum()
  for axis in (1, 2):
    pad = [(0, 0)] * 4
    pad[axis] = (radius, radius)
    p = jnp.pad(x, pad, mode="edge")
    n = x.shape[axis]
    x = sum(g[i] * jax.lax.slice_in_dim(p, i, i + n, axis=axis) for i in range(2 * radius + 1))
  return x


def boundary_magnitude_sq(p):
  """|grad(G * p)|^2 / 2 per channel: forward differences of the Gaussian-smoothed
  maps (0 past the last row/column), halved so a one-hot map's values are <= 1."""
  p = _smooth(p)
  gy = jnp.pad(p[:, 1:] - p[:, :-1], ((0, 0), (0, 1), (0, 0), (0, 0)))
  gx = jnp.pad(p[:, :, 1:] - p[:, :, :-1], ((0, 0), (0, 0), (0, 1), (0, 0)))
  return (gx * gx + gy * gy) / 2


def dual_task_loss(logits, labels, key, tau=0.5, ignore_index=255):
  """Gated-SCNN's dual-task regulariser (Eq. 5): L1 between zeta, the boundaries of the
  predicted segmentation, and zeta-hat, those of the ground truth, over the pixels
  where either is non-zero.

  zeta = |grad(G * softmax((logits + gumbel) / tau))| / sqrt(2), the Gumbel softmax
  standing in for the argmax so the term is differentiable; zeta-hat the same of the
  one-hot labels. Pixels within the filter's reach (3 px) of an ignore pixel are left
  out, so ignore regions make no boundary."""
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  logits = resize(logits.astype(dtype), labels.shape[1:3])
  k = logits.shape[-1]
  soft = jax.nn.softmax((logits + jax.random.gumbel(key, logits.shape, dtype)) / tau, axis=-1)
  valid = labels != ignore_index
  onehot = jax.nn.one_hot(jnp.where(valid, labels, k), k, dtype=dtype)  # ignore -> all zeros
  near = (~valid).astype(jnp.float32)
  for window in ((1, 7, 1), (1, 1, 7)):  # separable 7x7 max: any ignore within 3 px
    near = jax.lax.reduce_window(near, jnp.float32(0), jax.lax.max, window, (1, 1, 1), "SAME")
  far = near == 0
  sq_pred, sq_gt = boundary_magnitude_sq(soft), boundary_magnitude_sq(onehot)
  # sqrt with a floor: finite gradients where the magnitude is 0
  zeta, zeta_gt = jnp.sqrt(sq_pred + 1e-12), jnp.sqrt(sq_gt + 1e-12)
  plus = ((sq_pred > 1e-10) | (sq_gt > 1e-10)) & far[..., None]
  return jnp.sum(jnp.abs(zeta - zeta_gt) * plus) / jnp.maximum(jnp.sum(plus), 1)


def gscnn_losses(seg_logits, edge_logits, labels, config, key):
  """The three boundary terms of Gated-SCNN (lambda1, lambda3, lambda4 x these):
  "edge": balanced BCE of the boundary logits vs `boundary_targets`;
  "dual_task": the dual-task regulariser of the segmentation logits;
  "boundary_ce": CE of the segmentation on the pixels where sigmoid(edge) > threshold."""
  c, ignore = config.loss, config.dataset.ignore_index
  weights = tuple(c.class_weights) or None
  edge = resize(edge_logits.astype(jnp.float32), labels.shape[1:3])[..., 0]
  on_boundary = jax.nn.sigmoid(jax.lax.stop_gradient(edge)) > c.boundary_threshold
  return {
      "edge": balanced_bce(edge_logits, boundary_targets(labels, c.boundary_radius, ignore), ignore),
      "dual_task": dual_task_loss(seg_logits, labels, key, c.dual_task_tau, ignore),
      "boundary_ce": cross_entropy(seg_logits, jnp.where(on_boundary, labels, ignore), ignore, weights),
  }


def output_weight(name, config):
  """Loss weight of the output `name`: 1 for "seg", `loss.<name>_weight` for the others
  ("aux" -> loss.aux_weight, DANet's "pam" -> loss.pam_weight, ...)."""
  if name == "seg":
    return 1.0
  key = f"{name}_weight"
  if key not in config.loss:
    raise ConfigError(f"config key loss.{key} is missing: the model has an output '{name}'")
  return config.loss[key]


def segmentation_loss(outputs, labels, config, key=None):
  """Main CE plus, for every other output X, loss.X_weight x its loss (CE, or the SE loss
  for "se"; Gated-SCNN's "edge" adds the terms of `gscnn_losses`, whose Gumbel noise
  comes from `key`). Returns (total, terms)."""
  weights = tuple(config.loss.class_weights) or None
  if weights is not None and len(weights) != config.dataset.num_classes:
    raise ConfigError(f"config key loss.class_weights has {len(weights)} entries, "
                     f"dataset.num_classes is {config.dataset.num_classes}")
  ignore = config.dataset.ignore_index
  terms = {}
  for name, out in outputs.items():
    if name == "se":  # EncNet's image-level class presence
      terms[name] = semantic_encoding_loss(out, labels, ignore)
    elif name == "edge":  # Gated-SCNN's boundary logits
      if key is None:
        raise ValueError("segmentation_loss needs a PRNG key for Gated-SCNN's dual-task loss")
      terms.update(gscnn_losses(outputs["seg"], out, labels, config, key))
    else:  # an output may carry its own targets as (logits, targets) (MCIBI's memory rows)
      terms[name] = cross_entropy(*(out if isinstance(out, tuple) else (out, labels)), ignore, weights)
  total = sum(terms[n] * output_weight(n, config) for n in terms)
  return total, terms
