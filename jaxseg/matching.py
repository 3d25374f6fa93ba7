"""Hungarian matching of mask-classification queries to ground-truth masks (Mask2Former /
OneFormer), inside the jitted step with static shapes.

The cost of query i for ground truth j (Mask2Former Sec. 3.3; OneFormer's matcher):

  C_ij = w_class * (-p_i(c_j)) + w_mask * BCE(m_i, g_j) + w_dice * Dice(m_i, g_j)

p_i = softmax of the class logits (over K + 1 with no-object); BCE is the mean sigmoid
cross-entropy and Dice = 1 - (2 sum s*g + 1) / (sum s + sum g + 1), s = sigmoid(m_i), both
at the same P points drawn uniformly in the image for all masks of an image (12,544 in
the papers), read bilinearly from the predicted masks and from the ground truth at its
own resolution (`grid_sample(align_corners=False)`, as the reference's point_sample).

The solver is optax's jittable Hungarian algorithm (exact; vmapped over the batch), not a
host callback: it runs on the accelerator inside the sharded step with no host round
trip and no device-to-host transfer of the cost matrices. Costs are made finite before
solving (a NaN/Inf from a diverged prediction becomes a large finite cost) and padded
ground-truth slots cost the same for every query, which leaves the assignment of the real
ones unchanged (each padded column takes one of the remaining queries at equal cost).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from optax.assignment import hungarian_algorithm

from jaxseg.models.heads.oneformer.deformable_attention import bilinear_sample

# The cost of a NaN / Inf entry: far above any real cost (class <= w_class, dice <= w_dice,
# BCE ~ w_mask * |logit|), yet small enough for the solver's float32 potentials to keep
# the real costs' precision next to it.
LARGE = 1e4


def point_sample(masks, points):
  """masks (B, M, H, W), points (B, P, 2) as (x, y) in [0, 1] -> (B, M, P), bilinear with
  zero padding as `grid_sample(masks, 2 * points - 1, align_corners=False)`."""
  b, m, h, w = masks.shape
  values = masks.reshape(b, m, h * w).transpose(0, 2, 1)  # (B, H*W, M)
  return bilinear_sample(values, h, w, points).transpose(0, 2, 1)


def uniform_points(key, batch, num_points):
  """(B, P, 2) points uniform in [0, 1)^2, one set per image shared by all its masks."""
  return jax.random.uniform(key, (batch, num_points, 2))


def pairwise_sigmoid_ce(logits, targets):
  """(N, P) logits, (M, P) targets in [0, 1] -> (N, M) mean over the points of
  BCE(x, t) = t * softplus(-x) + (1 - t) * softplus(x)."""
  p = logits.shape[-1]
  return (jax.nn.softplus(-logits) @ targets.T + jax.nn.softplus(logits) @ (1 - targets).T) / p


def pairwise_dice(logits, targets):
  """(N, P), (M, P) -> (N, M): 1 - (2 s.g + 1) / (sum s + sum g + 1), s = sigmoid(x)."""
  s = jax.nn.sigmoid(logits)
  return 1 - (2 * s @ targets.T + 1) / (s.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1)


def matching_costs(class_logits, mask_logits, gt_classes, gt_masks, gt_valid, points,
                   class_weight=2.0, mask_weight=5.0, dice_weight=5.0):
  """(B, N, M) finite costs C_ij of query i for ground truth j.

  class_logits (B, N, K+1); mask_logits (B, N, h, w); gt_classes (B, M) int; gt_masks
  (B, M, H, W) binary; gt_valid (B, M) bool (padded slots False); points (B, P, 2).
  OneFormer's weights (2, 5, 5) by default.
  """
  probs = jax.nn.softmax(class_logits.astype(jnp.float32), axis=-1)
  cost_class = -jnp.take_along_axis(probs, jnp.maximum(gt_classes, 0)[:, None, :], axis=-1)  # -p_i(c_j)
  pred = point_sample(mask_logits.astype(jnp.float32), points)  # (B, N, P)
  gt = point_sample(gt_masks.astype(jnp.float32), points)  # (B, M, P)
  cost_mask = jax.vmap(pairwise_sigmoid_ce)(pred, gt)
  cost_dice = jax.vmap(pairwise_dice)(pred, gt)
  cost = class_weight * cost_class + mask_weight * cost_mask + dice_weight * cost_dice
  cost = jnp.nan_to_num(cost, nan=LARGE, posinf=LARGE, neginf=LARGE)
  return jnp.where(gt_valid[:, None, :], jnp.minimum(cost, LARGE), 0.0)  # padding: equal for all queries


def hungarian(costs):
  """(B, N, M) costs with N >= M -> (B, M) int32: the query assigned to each ground truth,
  the assignment of least total cost (every ground truth gets a distinct query)."""
  b, n, m = costs.shape
  if m > n:
    raise ValueError(f"matching: {m} ground-truth slots for {n} queries; pad the ground truth to "
                     f"at most the number of queries")

  def one(cost):
    rows, cols = hungarian_algorithm(cost)  # min(n, m) = m pairs (query, ground truth)
    return jnp.zeros(m, jnp.int32).at[cols].set(rows.astype(jnp.int32))
  return jax.vmap(one)(costs)


def match(class_logits, mask_logits, gt_classes, gt_masks, gt_valid, points, **weights):
  """(B, M) query index of every ground-truth slot (meaningless where gt_valid is False)."""
  costs = matching_costs(class_logits, mask_logits, gt_classes, gt_masks, gt_valid, points, **weights)
  return hungarian(jax.lax.stop_gradient(costs))
