"""Segmentation losses. Logits are upsampled to the label size, never the reverse."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseg.errors import ConfigError
from jaxseg.metrics import disk, fill_ignore, shift
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


LAPLACIAN = ((-1, -1, -1), (-1, 8, -1), (-1, -1, -1))


def detail_targets(labels, ignore_index=255, strides=(1, 2, 4), fuse=(0.6, 0.3, 0.1), threshold=0.1):
  """STDC's detail ground truth (B, H, W) in {0, 1} from the label map.

  At each stride s the Laplacian kernel [[-1,-1,-1],[-1,8,-1],[-1,-1,-1]] is applied
  to the class ids at pixels (s*i, s*j) (a stride-s conv), thresholded (> 0.1), and
  upsampled by repetition (nearest); the three maps are fused by a 1x1 conv with the
  paper's weights (0.6, 0.3, 0.1) and thresholded again (> 0.1). The fuse weights
  are a fixed constant: the authors' code makes them a parameter, but the hard
  threshold after them passes no gradient, so they never leave their initial value.
  Ignored and out-of-image neighbours contribute nothing (8c - sum n becomes the sum
  of c - n over the valid neighbours), so neither the image border nor an ignore
  region makes edges; ignored pixels are never edges.
  """
  b, h, w = labels.shape
  valid = labels != ignore_index
  lab = jnp.where(valid, labels, 0).astype(jnp.float32)
  lab_p = jnp.pad(lab, ((0, 0), (1, 1), (1, 1)))
  valid_p = jnp.pad(valid, ((0, 0), (1, 1), (1, 1)))
  fused = jnp.zeros((b, h, w), jnp.float32)
  for s, weight in zip(strides, fuse):
    hs, ws = -(-h // s), -(-w // s)  # a padded 3x3 conv with stride s: ceil(H / s) outputs
    at = lambda x, dy, dx: x[:, 1 + dy::s, 1 + dx::s][:, :hs, :ws]
    centre, centre_valid = at(lab_p, 0, 0), at(valid_p, 0, 0)
    response = jnp.zeros((b, hs, ws), jnp.float32)
    for dy in (-1, 0, 1):
      for dx in (-1, 0, 1):
        k = LAPLACIAN[dy + 1][dx + 1]
        if k < 0:  # 8c - sum_n n = sum_n (c - n) over the valid neighbours n
          response += jnp.where(at(valid_p, dy, dx), centre - at(lab_p, dy, dx), 0.0)
    edges = ((response > threshold) & centre_valid).astype(jnp.float32)
    edges = jnp.repeat(jnp.repeat(edges, s, axis=1), s, axis=2)[:, :h, :w]
    fused = fused + jnp.float32(weight) * edges
  return ((fused > jnp.float32(threshold)) & valid).astype(jnp.float32)


def detail_loss(logits, labels, ignore_index=255):
  """STDC's detail loss: BCE + dice between sigmoid(logits), bilinearly upsampled to the
  labels, and `detail_targets(labels)`, over the non-ignored pixels. Dice per image:
  1 - (2 sum p t + 1) / (sum p + sum t + 1), averaged over the batch."""
  target = jax.lax.stop_gradient(detail_targets(labels, ignore_index))
  valid = (labels != ignore_index).astype(jnp.float32)
  x = resize(logits.astype(jnp.float32), labels.shape[1:3])[..., 0]
  bce = jnp.maximum(x, 0) - x * target + jnp.log1p(jnp.exp(-jnp.abs(x)))  # stable BCE with logits
  bce = jnp.sum(bce * valid) / jnp.maximum(jnp.sum(valid), 1.0)
  p = jax.nn.sigmoid(x) * valid
  dice = 1 - (2 * jnp.sum(p * target, (1, 2)) + 1) / (jnp.sum(p, (1, 2)) + jnp.sum(target, (1, 2)) + 1)
  return bce + jnp.mean(dice)


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


# Outputs supervised by their own loss instead of the cross-entropy, by output name.
OUTPUT_LOSSES = {
    "detail": lambda logits, labels, config: detail_loss(logits, labels, config.dataset.ignore_index),  # STDC
    "se": lambda logits, labels, config: semantic_encoding_loss(logits, labels, config.dataset.ignore_index),  # EncNet
}


def segmentation_loss(outputs, labels, config, key=None):
  """Main CE plus, for every other output X, loss.X_weight x its CE (or its own loss in
  OUTPUT_LOSSES; Gated-SCNN's "edge" adds the terms of `gscnn_losses`, whose Gumbel noise
  comes from `key`). With loss.ohem, the CEs on the label map are OHEM CEs. Returns
  (total, terms)."""
  weights = tuple(config.loss.class_weights) or None
  if weights is not None and len(weights) != config.dataset.num_classes:
    raise ConfigError(f"config key loss.class_weights has {len(weights)} entries, "
                     f"dataset.num_classes is {config.dataset.num_classes}")
  ignore, lc, corners = config.dataset.ignore_index, config.loss, config.model.align_corners
  if lc.ohem and not 0 < lc.ohem_thresh <= 1:
    raise ConfigError(f"config key loss.ohem_thresh must be in (0, 1], got {lc.ohem_thresh}")

  def loss_of(name, out):
    if name in OUTPUT_LOSSES:
      return OUTPUT_LOSSES[name](out, labels, config)
    if isinstance(out, tuple):  # an output with its own targets, (logits, targets) (MCIBI's memory rows)
      return cross_entropy(*out, ignore, weights, corners)
    if lc.ohem:
      return ohem_cross_entropy(out, labels, ignore, weights, lc.ohem_thresh, lc.ohem_min_kept, corners)
    return cross_entropy(out, labels, ignore, weights, corners)

  terms = {}
  for name, out in outputs.items():
    if name == "edge":  # Gated-SCNN's boundary logits: several terms
      if key is None:
        raise ValueError("segmentation_loss needs a PRNG key for Gated-SCNN's dual-task loss")
      terms.update(gscnn_losses(outputs["seg"], out, labels, config, key))
    else:
      terms[name] = loss_of(name, out)
  total = sum(terms[n] * output_weight(n, config) for n in terms)
  return total, terms
