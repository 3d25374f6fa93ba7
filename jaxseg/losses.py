"""Segmentation losses. Logits are upsampled to the label size, never the reverse."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseg.errors import ConfigError
from jaxseg.models.layers import resize


def cross_entropy(logits, labels, ignore_index=255, class_weights=None, align_corners=False):
  """Softmax cross-entropy averaged over non-ignored pixels.

  logits (B, h, w, K) at any resolution, bilinearly upsampled to labels (B, H, W).
  With class weights w, the mean is weighted: sum_i w[y_i] * nll_i / sum_i w[y_i]
  (the PyTorch / toolbox convention). Computed in float32.
  """
  logits = resize(logits.astype(jnp.float32), labels.shape[1:3], align_corners=align_corners)
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


def output_weight(name, config):
  """Loss weight of the output `name`: 1 for "seg", `loss.<name>_weight` for the others
  ("aux" -> loss.aux_weight, DANet's "pam" -> loss.pam_weight, ...)."""
  if name == "seg":
    return 1.0
  key = f"{name}_weight"
  if key not in config.loss:
    raise ConfigError(f"config key loss.{key} is missing: the model has an output '{name}'")
  return config.loss[key]


def segmentation_loss(outputs, labels, config):
  """Main CE plus, for every other output X, loss.X_weight x its loss (CE, or the SE loss
  for "se"). Returns (total, terms)."""
  weights = tuple(config.loss.class_weights) or None
  if weights is not None and len(weights) != config.dataset.num_classes:
    raise ConfigError(f"config key loss.class_weights has {len(weights)} entries, "
                     f"dataset.num_classes is {config.dataset.num_classes}")
  ignore = config.dataset.ignore_index
  terms = {}
  for name, out in outputs.items():
    if name == "se":  # EncNet's image-level class presence
      terms[name] = semantic_encoding_loss(out, labels, ignore)
    else:  # an output may carry its own targets as (logits, targets) (MCIBI's memory rows)
      terms[name] = cross_entropy(*(out if isinstance(out, tuple) else (out, labels)), ignore, weights,
                                   config.model.align_corners)
  total = sum(terms[n] * output_weight(n, config) for n in terms)
  return total, terms
