"""RoI level assignment (the canonical 224 / level 4 rule), one-level-per-RoI RoIAlign
over a pyramid against per-level RoIAlign, and PANet's adaptive feature pooling fusion
against a numpy reference."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models.detection import pooling, roi_align
from tests.test_detection_ops import np_roi_align
from tests.test_fpn import np_conv


def test_assign_levels_canonical_rule():
  sides = np.array([1.0, 50.0, 111.9, 112.0, 223.0, 224.0, 447.0, 448.0, 1000.0])
  b = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides, sides], 1).astype(np.float32)
  b[0, 2:] = 0  # empty box
  got = np.asarray(pooling.assign_levels(jnp.asarray(b)))
  want = [min(5, max(2, math.floor(4 + math.log2(max(s, 1e-8) / 224) + 1e-6))) for s in sides]
  want[0] = 2
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got[1:], [2, 2, 3, 3, 4, 4, 5, 5])


def pyramid(rng, c=3):
  return [jnp.asarray(rng.randn(2, 32 >> i, 24 >> i, c), jnp.float32) for i in range(4)]


SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)


def test_multilevel_roi_align_equals_per_level():
  rng = np.random.RandomState(0)
  feats = pyramid(rng)
  xy = rng.uniform(-10, 90, (9, 2))
  wh = rng.uniform(2, 120, (9, 2))
  boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
  index = rng.randint(0, 2, 9)
  levels = np.arange(9) % 4  # every level, images mixed
  run = jax.jit(roi_align.multilevel_roi_align, static_argnums=(4, 5, 6, 7))
  for aligned in (False, True):
    got = np.asarray(run(feats, jnp.asarray(boxes), jnp.asarray(index), jnp.asarray(levels), 2, SCALES, 2, aligned))
    for r in range(9):
      l = levels[r]
      want = np_roi_align(np.asarray(feats[l]), boxes[r:r + 1], index[r:r + 1], 2, SCALES[l], 2, aligned)
      np.testing.assert_allclose(got[r], want[0], atol=1e-5)


@pytest.mark.parametrize("fusion", ["max", "sum"])
def test_adaptive_feature_pooling_fusion(fusion):
  rng = np.random.RandomState(1)
  feats = pyramid(rng)
  boxes = np.array([[0, 0, 40, 50], [10, 20, 90, 120], [5, 5, 12, 9]], np.float32)
  index = np.array([0, 1, 1])
  pooled = jax.jit(pooling.pool_all_levels, static_argnums=(3, 4))(
      feats, jnp.asarray(boxes), jnp.asarray(index), 2, SCALES)
  assert pooled.shape == (4, 3, 2, 2, 3)
  for l in range(4):
    np.testing.assert_allclose(np.asarray(pooled[l]),
                               np_roi_align(np.asarray(feats[l]), boxes, index, 2, SCALES[l], 2, False), atol=1e-5)
  fc = pooling.FusedFC(features=5, fusion=fusion)
  params = jax.jit(fc.init)(jax.random.key(0), pooled)
  got = np.asarray(jax.jit(fc.apply)(params, pooled))
  p = jax.tree.map(np.asarray, params["params"])
  per = [np.maximum(np.asarray(pooled[l]).reshape(3, -1) @ p[f"fc1_level{l}"]["kernel"] + p[f"fc1_level{l}"]["bias"], 0)
         for l in range(4)]
  want = np.max(per, 0) if fusion == "max" else np.sum(per, 0)
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert set(p) == {f"fc1_level{l}" for l in range(4)}  # one first layer per level
  conv = pooling.FusedConv(features=4, fusion=fusion)
  out, variables = jax.jit(lambda p: conv.init_with_output(jax.random.key(1), p, train=False))(pooled)
  assert out.shape == (3, 2, 2, 4)
  q = jax.tree.map(np.asarray, variables["params"])
  per = [np.maximum(np_conv(np.asarray(pooled[l]), q[f"conv1_level{l}"]["conv"]["kernel"],
                            q[f"conv1_level{l}"]["conv"]["bias"]), 0) for l in range(4)]
  want = np.max(per, 0) if fusion == "max" else np.sum(per, 0)
  np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)
  with pytest.raises(ValueError, match="fusion must be one of"):
    pooling.fuse(pooled, "mean")
