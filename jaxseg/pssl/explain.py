"""PSSL's pseudo labels (Li et al. 2022, "Distilling Ensemble of Explanations for
Weakly-Supervised Pre-Training of Image Segmentation Models"): the SmoothGrad
explanation of each classifier of an ensemble, averaged after a per-model
normalisation, ranked into deciles, the top decile labelled with the image's class.

The rules, as the authors' explanation library (InterpretDL's SmoothGradInterpreter and
ConsensusInterpreter, which PSSL's labels were computed with) applies them:
  - the explained score is the softmax probability of the image's class;
  - noise: sigma = noise x (max - min) of the (normalised) input image, 50 samples;
  - SmoothGrad: the mean over the samples of the signed input gradient;
  - per model: |mean gradient| summed over the colour channels (abs, then sum);
  - ensemble: the per-model maps, each divided by its maximum over the image (the
    sources leave the normalisation to the user; deciles are ranks, so only the
    relative weight of the members depends on it), averaged;
  - decile D(x) = floor(10 rank(x) / N) over the N pixels of the image, rank 0 the
    smallest (ties in pixel order), stored as uint8 0..9;
  - label: D9 -> the image's class, D0..D8 -> background (class 1000 of 1001 for ImageNet).

Every function is per image and deterministic in (seed, record index): a record's
noise never depends on the batch, device or host that computes it, so a resumed or
multi-host run gives the same labels as one uninterrupted process.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.backbones.resnet import ResNet

NUM_DECILES = 10


class Classifier(nn.Module):
  """An ImageNet classifier on jaxseg's ResNet: global average pool of c4 -> dense
  (torchvision's `fc`, transformers' `classifier.1`). The variables are
  {"backbone": ..., "fc": ...}, what `python -m jaxseg.convert --classifier` writes."""
  depth: int = 50
  width: int = 64
  stem: str = "7x7"
  num_classes: int = 1000
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    feats = ResNet(self.depth, self.width, self.stem, output_stride=32, multi_grid=(), extra_blocks=0,
                   dtype=self.dtype, name="backbone")(x, train)
    pooled = jnp.mean(feats["c4"].astype(jnp.float32), axis=(1, 2))
    return nn.Dense(self.num_classes, name="fc")(pooled)


def classifier_from_config(config):
  """The Classifier of a member's config.json (model.backbone.*, dataset.num_classes)."""
  b = config.model.backbone
  return Classifier(depth=b.depth, width=b.width, stem=b.stem, num_classes=config.dataset.num_classes)


def smoothgrad(logits_fn, x, labels, keys, samples=50, noise=0.1):
  """Per image of `x` (B, H, W, C): sum_c |(1/S) sum_s d p_y(x + e_s) / dx|, e_s ~
  N(0, sigma^2), sigma = noise * (max(x) - min(x)) of that image; p_y the softmax
  probability of class labels[b]. `keys` (B,) one PRNG key per image. Returns (B, H, W)
  float32. The samples run one after another (memory of one forward + backward)."""
  x = x.astype(jnp.float32)
  sigma = noise * (jnp.max(x, axis=(1, 2, 3)) - jnp.min(x, axis=(1, 2, 3)))  # (B,)

  def prob_sum(xn):  # sum over the batch of p_y: its gradient is each image's own
    p = jax.nn.softmax(logits_fn(xn).astype(jnp.float32), axis=-1)
    return jnp.sum(jnp.take_along_axis(p, labels[:, None].astype(jnp.int32), axis=-1))

  grad = jax.grad(prob_sum)

  def body(total, s):
    eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, s), x.shape[1:], jnp.float32))(keys)
    return total + grad(x + sigma[:, None, None, None] * eps), None

  total, _ = jax.lax.scan(body, jnp.zeros_like(x), jnp.arange(samples))
  return jnp.sum(jnp.abs(total / samples), axis=-1)


def normalise(explanation):
  """Each image's map divided by its maximum (an all-zero map stays zero)."""
  peak = jnp.max(explanation, axis=(1, 2), keepdims=True)
  return explanation / jnp.where(peak > 0, peak, 1.0)


def ensemble(explanations):
  """The mean of the per-model normalised maps: (M, B, H, W) -> (B, H, W)."""
  return jnp.mean(jax.vmap(normalise)(jnp.asarray(explanations)), axis=0)


def deciles(score):
  """(B, H, W) scores -> (B, H, W) uint8 deciles D = floor(10 rank / N), rank 0 the
  smallest pixel of its image, equal scores ranked in pixel order."""
  b, h, w = score.shape
  n = h * w
  order = jnp.argsort(score.reshape(b, n), axis=-1, stable=True)
  rank = jnp.zeros((b, n), jnp.int32).at[jnp.arange(b)[:, None], order].set(jnp.arange(n, dtype=jnp.int32))
  return ((rank * NUM_DECILES) // n).astype(jnp.uint8).reshape(b, h, w)


def pseudo_label(decile_map, classes, background):
  """The top decile D9 -> the image's class, the rest -> `background`: (B, H, W)
  deciles and (B,) classes -> (B, H, W) int32."""
  top = decile_map == NUM_DECILES - 1
  return jnp.where(top, classes[:, None, None].astype(jnp.int32), jnp.int32(background))


def make_explainer(members, samples=50, noise=0.1):
  """f(variables_list, x (B, H, W, 3) normalised, classes (B,), keys (B,)) -> (B, H, W)
  uint8 deciles of the ensemble of `members` (Classifier modules, evaluated with their
  running BN statistics); member m's noise keys are fold_in(key, m)."""

  def explain(variables_list, x, classes, keys):
    maps = []
    for m, (model, variables) in enumerate(zip(members, variables_list)):
      member_keys = jax.vmap(lambda k: jax.random.fold_in(k, m))(keys)
      logits_fn = lambda xn, model=model, variables=variables: model.apply(variables, xn, train=False)
      maps.append(smoothgrad(logits_fn, x, classes, member_keys, samples, noise))
    return deciles(ensemble(jnp.stack(maps)))

  return explain
