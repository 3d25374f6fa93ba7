"""OneFormer's training losses (Jain et al. 2023: Mask2Former's matched losses, Cheng et al.
2022, plus the query-text contrastive loss, Sec. 3.3), static shapes, inside the jit.

Every decoder layer's predictions (the last and each of outputs["aux"]: deep supervision)
get their own Hungarian matching sigma (jaxseg.matching: cost 2 x class + 5 x BCE + 5 x dice
at P = 12,544 points drawn uniformly per image), then, with G the valid ground-truth masks
of the whole batch:

  class        L_class = sum_q w(t_q) (-log softmax(z_q)[t_q]) / sum_q w(t_q)   over all B x N queries;
               t_q = c_j where q = sigma(j) for a valid j, else K (no object); w(K) = 0.1, else 1
  mask         L_mask = 1 / max(|G|, 1) sum_{j in G} mean_p BCE(m_sigma(j)(x_p), g_j(x_p))
  dice         L_dice = 1 / max(|G|, 1) sum_{j in G} 1 - (2 sum_p s_p g_p + 1) / (sum_p s_p + sum_p g_p + 1),
               s = sigmoid(m), at P points x_p per matched mask (PointRend's importance
               sampling): of 3P uniform points, the 0.75 P of largest uncertainty -|m(x)|,
               plus 0.25 P more uniform ones; masks read bilinearly (grid_sample,
               align_corners=False), the prediction at H/4 and the ground truth at its stride
  contrastive  (the last layer's call only) u_b = flatten(Q_0[b]) / ||.||, v_b = flatten(Q_text[b]) / ||.||:
               L = CE_b(tau u_b . v_b') + CE_b(tau v_b . u_b'),  tau = min(exp(logit_scale), 100),
               over the B images of the batch (the target of image b is its own text, b);
               Q_0 = outputs["queries"] (the N queries entering the decoder, task token last)
               and Q_text the text mapper's (B, T + n_ctx, d), T + n_ctx = N

Terms come back unweighted, named "class", "mask", "dice", "contrastive" and "class_i",
"mask_i", "dice_i" for aux layer i (i = 0: the prediction before the first decoder layer);
`total(terms)` weights them with WEIGHTS (2, 5, 5, 0.5: every layer alike, as the authors').

The layers run one after another through one compiled program (lax.map); each holds its
B x M x 3P importance-sampling candidates only while it runs, and the backward pass keeps
only its matching and its B x M x P points, reading the masks at them again (rematerialised:
at N = 150, M = 150, 128 x 128 masks, 2 images, 10 layers, the loss and its gradient take
1.5 GiB of temporaries instead of 3.1; benchmarks/oneformer_losses.py).

Padded ground truth (instance_valid False) costs the same for every query in the matching,
so it leaves the real slots' assignment unchanged; the queries it takes count as no-object
in L_class and its mask terms are multiplied by 0. With no valid ground truth at all the
terms are finite (L_mask = L_dice = 0) and so are their gradients.

Where transformers' OneFormerLoss differs from the authors' SetCriterion
(oneformer/modeling/criterion.py, SHI-Labs/OneFormer), and what jaxseg does:
  - contrastive negatives: the authors gather the text queries of every GPU (dist_collect),
    so each image is contrasted with the texts of the global batch; transformers contrasts
    within each process's batch. jaxseg contrasts over the batch it is given, the global
    batch in the sharded step: the authors'.
  - mask normaliser: both divide by the global mask count over the number of processes and
    average the gradients over processes, i.e. sum over global masks / global count; jaxseg
    divides by the global count, clamped at 1 (theirs clamps count / processes at 1: they
    differ only when the batch has fewer masks than processes).
  - class loss: transformers' nn.CrossEntropyLoss(weight) and the authors' sum(w nll) /
    sum(w) over the matched-or-not weights are the same weighted mean; per process, so the
    processes' means are averaged where jaxseg takes the global batch's weighted mean
    (equal on one process or with equal weight sums).
  - NaN costs: the authors' matcher replaces NaN by 100 (an all-NaN matrix matches nothing),
    transformers' NaN and +-Inf by float32's max; jaxseg's matching replaces NaN and +-Inf by
    matching.LARGE = 1e4, all three matching such a query only when nothing else is left.
  - aux contrastive: the authors' weight dictionary lists "loss_contrastive_i" but neither
    computes it; jaxseg neither.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxseg import matching
from jaxseg.models.heads.oneformer.deformable_attention import bilinear_sample

# the paper's loss weights (the authors' CLASS_WEIGHT, MASK_WEIGHT, DICE_WEIGHT, CONTRASTIVE_WEIGHT)
WEIGHTS = {"class": 2.0, "mask": 5.0, "dice": 5.0, "contrastive": 0.5}
TEMPERATURE = 0.07  # the contrastive temperature's initial value: logit_scale starts at log(1 / 0.07)
MAX_LOGIT_SCALE = 100.0  # tau is clamped at 100 (CLIP's)


def initial_logit_scale():
  """log(1 / TEMPERATURE), the learned logit_scale's initial value (a float32 scalar)."""
  return jnp.float32(math.log(1 / TEMPERATURE))


def total(terms, weights=WEIGHTS):
  """The weighted sum of oneformer_losses' terms: "dice_3" weighs weights["dice"]."""
  return sum(weights[name.split("_")[0]] * value for name, value in terms.items())


def draw_points(key, batch, slots, num_points, oversample_ratio=3.0, importance_sample_ratio=0.75):
  """One layer's random points, (x, y) in [0, 1): "match" (B, P, 2) uniform, shared by the
  masks of an image (the matching's); "coarse" (B, M, int(oversample_ratio P), 2) uniform
  candidates per ground-truth slot, of which the int(importance_sample_ratio P) most
  uncertain are kept; "extra" (B, M, P - that, 2) uniform."""
  keep = int(importance_sample_ratio * num_points)
  k_match, k_coarse, k_extra = jax.random.split(key, 3)
  return {"match": matching.uniform_points(k_match, batch, num_points),
          "coarse": jax.random.uniform(k_coarse, (batch, slots, int(num_points * oversample_ratio), 2)),
          "extra": jax.random.uniform(k_extra, (batch, slots, num_points - keep, 2))}


def sample_masks(masks, points):
  """masks (B, M, H, W), points (B, M, P, 2): each mask read at its own points -> (B, M, P)."""
  b, m, h, w = masks.shape
  p = points.shape[2]
  out = bilinear_sample(masks.reshape(b * m, h * w, 1), h, w, points.reshape(b * m, p, 2))
  return out.reshape(b, m, p)


def importance_points(mask_logits, coarse, extra, keep):
  """PointRend's points per mask, no gradient: of the `coarse` candidates (B, M, C, 2) the
  `keep` of largest uncertainty -|logit| of mask_logits (B, M, h, w), then `extra`
  (B, M, P - keep, 2) -> (B, M, P, 2)."""
  if keep == 0:
    return extra
  uncertainty = -jnp.abs(sample_masks(jax.lax.stop_gradient(mask_logits), coarse))
  top = jax.lax.top_k(uncertainty, keep)[1]  # (B, M, keep)
  chosen = jnp.take_along_axis(coarse, top[..., None], axis=2)
  return jnp.concatenate([chosen, extra], axis=2)


def class_loss(class_logits, assigned, gt_classes, gt_valid, no_object_weight):
  """L_class: class_logits (B, N, K + 1); assigned (B, M) the query of each slot."""
  b, n, k1 = class_logits.shape
  no_object = k1 - 1
  target = jax.vmap(lambda a, c: jnp.full(n, no_object, jnp.int32).at[a].set(c))(
      assigned, jnp.where(gt_valid, gt_classes, no_object).astype(jnp.int32))  # distinct queries per image
  logp = jax.nn.log_softmax(class_logits.astype(jnp.float32), -1)
  nll = -jnp.take_along_axis(logp, target[..., None], -1)[..., 0]
  w = jnp.where(target == no_object, no_object_weight, 1.0)
  return (w * nll).sum() / w.sum()


def mask_losses(mask_logits, assigned, gt_masks, gt_valid, points, keep, num_masks):
  """(L_mask, L_dice): mask_logits (B, h, w, N) of the queries, assigned (B, M), gt_masks
  (B, M, H, W) binary, points of draw_points, keep its importance-sampled count."""
  pred = jnp.take_along_axis(mask_logits.astype(jnp.float32), assigned[:, None, None, :], axis=3)
  pred = pred.transpose(0, 3, 1, 2)  # (B, M, h, w): the matched query of every slot
  at = jax.lax.stop_gradient(importance_points(pred, points["coarse"], points["extra"], keep))
  at = checkpoint_name(at, "points")
  x = sample_masks(pred, at)
  g = sample_masks(gt_masks.astype(jnp.float32), at)
  bce = (g * jax.nn.softplus(-x) + (1 - g) * jax.nn.softplus(x)).mean(-1)
  s = jax.nn.sigmoid(x)
  dice = 1 - (2 * (s * g).sum(-1) + 1) / (s.sum(-1) + g.sum(-1) + 1)
  return (jnp.where(gt_valid, bce, 0.0).sum() / num_masks,
          jnp.where(gt_valid, dice, 0.0).sum() / num_masks)


def normalise(x, eps=1e-12):
  """x / max(||x||, eps) over the last axis (F.normalize), with a finite gradient at 0."""
  return x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), eps * eps))


def contrastive_loss(queries, text_queries, logit_scale):
  """L_contrastive of the image queries (B, N, d) and text queries (B, T, d), T = N: one
  flattened vector per image and per text, the image's own text its target."""
  u = normalise(queries.reshape(queries.shape[0], -1).astype(jnp.float32))
  v = normalise(text_queries.reshape(text_queries.shape[0], -1).astype(jnp.float32))
  tau = jnp.minimum(jnp.exp(logit_scale.astype(jnp.float32)), MAX_LOGIT_SCALE)
  logits = tau * u @ v.T  # (images, texts)
  own = lambda z: -jnp.mean(jnp.diagonal(jax.nn.log_softmax(z, -1)))  # CE with targets 0..B-1
  return own(logits) + own(logits.T)


def check_inputs(outputs, targets, text_queries, num_classes, num_points, oversample_ratio, importance_sample_ratio):
  if num_points < 1 or oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
    raise ValueError(f"oneformer losses: num_points {num_points} must be >= 1, oversample_ratio {oversample_ratio} "
                     f">= 1 and importance_sample_ratio {importance_sample_ratio} in [0, 1]")
  for name in ("class_logits", "mask_logits"):
    if name not in outputs:
      raise ValueError(f"oneformer losses: outputs lack '{name}' (have {sorted(outputs)})")
  missing = [k for k in ("instance_classes", "instance_masks", "instance_valid") if k not in targets]
  if missing:
    raise ValueError(f"oneformer losses: the batch lacks {missing}; the mask-classification transforms "
                     f"(jaxseg.data.instances) provide them")
  layers = [outputs] + list(outputs.get("aux", []))
  b, n, k1 = outputs["class_logits"].shape
  for i, layer in enumerate(layers):
    where = "outputs" if i == 0 else f"outputs['aux'][{i - 1}]"
    c, m = layer["class_logits"].shape, layer["mask_logits"].shape
    if c != (b, n, num_classes + 1):
      raise ValueError(f"{where}['class_logits']: expected (B, N, K + 1) = ({b}, {n}, {num_classes + 1}) "
                       f"with K = num_classes = {num_classes}, got {c}")
    if len(m) != 4 or m[0] != b or m[3] != n:
      raise ValueError(f"{where}['mask_logits']: expected (B, H/4, W/4, N) with B = {b}, N = {n}, got {m}")
  classes, masks, valid = (targets[k].shape for k in ("instance_classes", "instance_masks", "instance_valid"))
  if len(masks) != 4 or masks[:2] != classes or valid != classes or classes[0] != b:
    raise ValueError(f"ground truth: instance_classes {classes}, instance_masks {masks} and instance_valid {valid} "
                     f"must be (B, M), (B, M, h, w), (B, M) with B = {b}")
  if text_queries is not None:
    if "queries" not in outputs:
      raise ValueError("oneformer losses: the contrastive loss needs outputs['queries']")
    if text_queries.shape != outputs["queries"].shape:
      raise ValueError(f"text_queries {text_queries.shape} must have the shape of outputs['queries'] "
                       f"{outputs['queries'].shape}: (B, N, d), T + n_ctx = N texts")


def oneformer_losses(outputs, targets, key, text_queries, logit_scale, *, num_classes, num_points=12544,
                     oversample_ratio=3.0, importance_sample_ratio=0.75, no_object_weight=0.1,
                     cost_weights=(2.0, 5.0, 5.0)):
  """OneFormer's unweighted loss terms (the module docstring's equations), jittable.

  outputs: the model's {"class_logits" (B, N, K + 1), "mask_logits" (B, H/4, W/4, N),
    "aux" [{"class_logits", "mask_logits"}] * L (each layer before the last), "queries"
    (B, N, d)}.
  targets: the batch's {"instance_classes" (B, M) int, "instance_masks" (B, M, h, w) in
    {0, 1} at any stride, "instance_valid" (B, M) bool}, M <= N.
  key: the random points' key; layer l (0 = the last, 1 + i = aux i) uses
    draw_points(jax.random.split(key, L + 1)[l], B, M, num_points, ...).
  text_queries: the text mapper's (B, N, d), or None for no contrastive term.
  logit_scale: the learned log(1 / temperature), a scalar parameter the caller owns and
    trains (initial_logit_scale() = log(1 / 0.07)); tau = min(exp(logit_scale), 100).
  cost_weights: the matching's (class, BCE, dice) weights.

  Returns {"class", "mask", "dice", "contrastive" (with text_queries), "class_i", "mask_i",
  "dice_i" for every aux layer i}: float32 scalars; total(terms) weighs them with WEIGHTS.
  """
  check_inputs(outputs, targets, text_queries, num_classes, num_points, oversample_ratio, importance_sample_ratio)
  classes, masks, valid = (targets[k] for k in ("instance_classes", "instance_masks", "instance_valid"))
  valid = valid.astype(bool)
  b, m = valid.shape
  keep = int(importance_sample_ratio * num_points)
  num_masks = jnp.maximum(valid.sum().astype(jnp.float32), 1.0)  # |G| over the (global) batch
  class_w, mask_w, dice_w = cost_weights

  def layer_terms(layer):
    class_logits, mask_logits, layer_key = layer
    points = draw_points(layer_key, b, m, num_points, oversample_ratio, importance_sample_ratio)
    assigned = matching.match(class_logits, mask_logits.transpose(0, 3, 1, 2), classes, masks, valid,
                              points["match"], class_weight=class_w, mask_weight=mask_w, dice_weight=dice_w)
    assigned = checkpoint_name(assigned, "assigned")
    return (class_loss(class_logits, assigned, classes, valid, no_object_weight),
            *mask_losses(mask_logits, assigned, masks, valid, points, keep, num_masks))

  # the backward pass keeps each layer's matching and points and reads the masks at them again
  keep_names = jax.checkpoint_policies.save_only_these_names("assigned", "points")
  layer_terms = jax.checkpoint(layer_terms, policy=keep_names)
  # one compiled layer, run for every layer in turn (the matching's solver is a large program)
  layers = [outputs] + list(outputs.get("aux", []))
  stack = lambda name: jnp.stack([layer[name] for layer in layers])
  per_layer = jax.lax.map(layer_terms, (stack("class_logits"), stack("mask_logits"),
                                        jax.random.split(key, len(layers))))
  terms = {}
  for l in range(len(layers)):
    suffix = "" if l == 0 else f"_{l - 1}"
    for name, values in zip(("class", "mask", "dice"), per_layer):
      terms[name + suffix] = values[l]
  if text_queries is not None:
    terms["contrastive"] = contrastive_loss(outputs["queries"], text_queries, jnp.asarray(logit_scale))
  return terms
