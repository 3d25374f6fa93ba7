"""Hungarian matching: optax's jittable solver equals scipy's linear_sum_assignment on
random and degenerate cost matrices (ties, all equal, padded ground truth, NaN/Inf), and
the matching costs and assignments equal transformers' OneFormerHungarianMatcher on the
same sampled points.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from jaxseg import matching

TOL = 1e-4
solve = jax.jit(matching.hungarian)


def check_optimal(costs, valid=None):
  """Our assignment is a valid one (distinct queries) with scipy's optimal total cost."""
  b, n, m = costs.shape
  valid = np.ones((b, m), bool) if valid is None else valid
  ours = np.asarray(solve(jnp.asarray(np.where(valid[:, None], costs, 0.0), jnp.float32)))
  for i in range(b):
    assert len(set(ours[i].tolist())) == m and ours[i].min() >= 0 and ours[i].max() < n
    sub = costs[i][:, valid[i]]
    rows, cols = linear_sum_assignment(sub)
    best = sub[rows, cols].sum()
    got = sub[ours[i][valid[i]], np.arange(sub.shape[1])].sum()
    assert abs(got - best) <= 1e-4 * max(1.0, abs(best)), (i, got, best)
  return ours


def test_hungarian_equals_scipy_on_random_and_degenerate_costs():
  rng = np.random.RandomState(0)
  costs = rng.randn(6, 12, 5)
  ours = check_optimal(costs)
  for i in range(6):  # continuous costs: a unique optimum, the same pairs as scipy
    rows, cols = linear_sum_assignment(costs[i])
    np.testing.assert_array_equal(ours[i][cols], rows)
  check_optimal(rng.randn(3, 7, 7))  # square
  check_optimal(rng.randint(0, 3, (6, 12, 5)).astype(np.float64))  # many ties
  check_optimal(np.ones((6, 12, 5)))  # all equal
  valid = rng.rand(6, 5) < 0.6
  valid[0] = False  # an image without ground truth
  check_optimal(rng.randn(6, 12, 5), valid)  # padded ground truth
  with pytest.raises(ValueError, match="5 ground-truth slots for 4 queries"):
    matching.hungarian(jnp.zeros((1, 4, 5)))


def inputs(seed, b=2, n=10, k=5, m=4):
  rng = np.random.RandomState(seed)
  class_logits = rng.randn(b, n, k + 1).astype(np.float32) * 2
  mask_logits = rng.randn(b, n, 16, 20).astype(np.float32) * 3
  gt_masks = (rng.rand(b, m, 64, 80) < rng.uniform(0.1, 0.6, (b, m, 1, 1))).astype(np.float32)
  gt_classes = rng.randint(0, k, (b, m))
  return class_logits, mask_logits, gt_classes, gt_masks


def test_costs_and_assignments_equal_transformers_matcher():
  transformers = pytest.importorskip("transformers", reason="the reference is transformers' OneFormer matcher")
  from transformers.models.oneformer import modeling_oneformer as M
  class_logits, mask_logits, gt_classes, gt_masks = inputs(1)
  counts = [4, 3]  # the second image's last slot is padding
  num_points = 500
  ref = M.OneFormerHungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=num_points)
  torch.manual_seed(7)
  theirs = ref(torch.from_numpy(mask_logits), torch.from_numpy(class_logits),
               [torch.from_numpy(gt_masks[i, :c]) for i, c in enumerate(counts)],
               [torch.from_numpy(gt_classes[i, :c]) for i, c in enumerate(counts)])
  torch.manual_seed(7)  # the matcher draws one torch.rand(1, P, 2) per image, in order
  points = np.concatenate([torch.rand(1, num_points, 2).numpy() for _ in counts])

  valid = np.arange(4)[None] < np.asarray(counts)[:, None]
  args = [jnp.asarray(a) for a in (class_logits, mask_logits, gt_classes, gt_masks, valid, points)]
  costs = np.asarray(jax.jit(matching.matching_costs)(*args))
  ours = np.asarray(jax.jit(matching.match)(*args))
  for i, c in enumerate(counts):
    # the reference's cost matrix from its own functions, on the same points
    pts = torch.from_numpy(points[i:i + 1])
    pred = M.sample_point(torch.from_numpy(mask_logits[i])[:, None], pts.repeat(10, 1, 1), align_corners=False)[:, 0]
    gt = M.sample_point(torch.from_numpy(gt_masks[i, :c])[:, None], pts.repeat(c, 1, 1), align_corners=False)[:, 0]
    cost = (5.0 * M.pair_wise_sigmoid_cross_entropy_loss(pred, gt) + 5.0 * M.pair_wise_dice_loss(pred, gt)
            - 2.0 * torch.from_numpy(class_logits[i]).softmax(-1)[:, gt_classes[i, :c]]).numpy()
    diff = np.abs(costs[i, :, :c] - cost).max()
    print(f"\n[matching cost, image {i}] max abs diff {diff:.2e} (max |cost| {np.abs(cost).max():.2f})")
    assert diff <= TOL * max(1.0, np.abs(cost).max())
    assert (costs[i, :, c:] == 0).all()  # padding: the same for every query
    rows, cols = theirs[i]
    np.testing.assert_array_equal(ours[i, cols.numpy()], rows.numpy())


def test_nan_and_inf_predictions_give_finite_costs_and_a_valid_assignment():
  class_logits, mask_logits, gt_classes, gt_masks = inputs(2)
  mask_logits[0, 3] = np.nan
  class_logits[1, 5, 0] = np.inf
  mask_logits[1, 0, :2] = -np.inf
  valid = np.ones((2, 4), bool)
  points = np.asarray(matching.uniform_points(jax.random.key(0), 2, 200))
  args = [jnp.asarray(a) for a in (class_logits, mask_logits, gt_classes, gt_masks, valid, points)]
  costs = np.asarray(jax.jit(matching.matching_costs)(*args))
  assert np.isfinite(costs).all() and (costs[0, 3] == matching.LARGE).all()
  ours = check_optimal(costs.astype(np.float64))
  assert 3 not in ours[0].tolist()  # the NaN query is matched only when nothing else is left
