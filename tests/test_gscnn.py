"""Gated-SCNN: the gated convolution layer, the boundary ground truth, the losses and
the boundary F-score against numpy written from the paper's equations and the
metric's definition; the Canny input; the tiny config trained, evaluated, restored."""
import json

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import metrics
from jaxseg.families.semantic import segmentation_loss
from jaxseg.models.heads.gscnn import balanced_bce, boundary_targets, dual_task_loss
from jaxseg.models.heads.gscnn import GatedConv
from jaxseg.models.segmentor import build_model
from tests.conftest import load_config


def test_gated_conv_matches_the_equation():
  rng = np.random.default_rng(0)
  s = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
  r = rng.normal(size=(2, 5, 6, 1)).astype(np.float32)
  layer = GatedConv(4)
  variables = jax.tree.map(np.asarray, layer.init(jax.random.key(0), s, r, train=False))
  # Non-trivial BN statistics and affine parameters, so every term of Eq. 1 matters.
  for name in ("bn_in", "bn_gate"):
    stats, params = variables["batch_stats"][name], variables["params"][name]
    n = stats["mean"].shape
    stats["mean"], stats["var"] = rng.normal(size=n).astype(np.float32), rng.uniform(0.5, 2, n).astype(np.float32)
    params["scale"], params["bias"] = rng.uniform(0.5, 2, n).astype(np.float32), rng.normal(size=n).astype(np.float32)
  got = np.asarray(layer.apply(variables, s, r, train=False))

  p, st = variables["params"], variables["batch_stats"]
  bn = lambda x, n: (x - st[n]["mean"]) / np.sqrt(st[n]["var"] + 1e-5) * p[n]["scale"] + p[n]["bias"]
  conv = lambda x, n: x @ p[n]["kernel"][0, 0] + p[n].get("bias", 0)
  x = np.concatenate([s, r], -1).astype(np.float64)
  alpha = 1 / (1 + np.exp(-bn(conv(np.maximum(conv(bn(x, "bn_in"), "gate1"), 0), "gate2"), "bn_gate")))
  want = conv(s * (1 + alpha), "out")
  assert got.shape == (2, 5, 6, 4)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def boundary_reference(labels, radius):
  """Without ignore: 1 where a pixel within Euclidean distance `radius` (inside the
  image) has another label."""
  b, h, w = labels.shape
  out = np.zeros_like(labels, np.int32)
  for n, i, j in np.ndindex(b, h, w):
    for y, x in np.ndindex(h, w):
      if (y - i) ** 2 + (x - j) ** 2 <= radius ** 2 and labels[n, y, x] != labels[n, i, j]:
        out[n, i, j] = 1
        break
  return out


def test_boundary_targets_radius_and_ignore():
  labels = np.random.default_rng(0).integers(0, 3, (2, 9, 10)).astype(np.uint8)
  labels = cv2.resize(labels.transpose(1, 2, 0), (10, 9), interpolation=cv2.INTER_NEAREST).transpose(2, 0, 1)
  np.testing.assert_array_equal(boundary_targets(jnp.asarray(labels), 2), boundary_reference(labels, 2))

  # Two classes split at column 5: boundaries within 2 px of the split.
  split = np.zeros((1, 6, 12), np.uint8)
  split[:, :, 5:] = 1
  want = np.zeros((1, 6, 12), np.int32)
  want[:, :, 3:7] = 1
  np.testing.assert_array_equal(boundary_targets(jnp.asarray(split), 2), want)

  # A void region (ignore) beside one class: no edges, ignore stays ignore.
  void = np.zeros((1, 8, 8), np.uint8)
  void[:, :4, :4] = 255
  want = np.where(void == 255, 255, 0)
  np.testing.assert_array_equal(boundary_targets(jnp.asarray(void), 2), want)

  # A 2-px ignore band between two classes (VOC/shapes style) holds the boundary:
  # the pixels beside it are edges, the band itself is ignored.
  band = np.zeros((1, 6, 12), np.uint8)
  band[:, :, 5:7] = 255
  band[:, :, 7:] = 1
  want = np.zeros((1, 6, 12), np.int32)
  want[:, :, [4, 7]] = 1
  want[:, :, 5:7] = 255
  np.testing.assert_array_equal(boundary_targets(jnp.asarray(band), 2), want)


def test_balanced_bce_matches_numpy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 4, 5, 1)).astype(np.float32)
  targets = rng.choice([0, 0, 0, 1, 255], (2, 4, 5)).astype(np.int32)
  x, t = logits[..., 0].astype(np.float64), targets
  pos, neg = (t == 1).sum(), (t == 0).sum()
  p = 1 / (1 + np.exp(-x))
  nll = np.where(t == 1, -np.log(p) * neg, -np.log(1 - p) * pos) / (pos + neg)
  want = np.sum(np.where(t == 255, 0, nll)) / (pos + neg)
  np.testing.assert_allclose(balanced_bce(jnp.asarray(logits), jnp.asarray(targets)), want, rtol=1e-5)


def test_dual_task_loss_finite_differentiable_and_zero_when_right():
  rng = np.random.default_rng(2)
  labels = np.zeros((1, 7, 8), np.int32)
  labels[:, 2:5, 3:7] = 1
  labels[:, 6, :2] = 2
  labels[:, 0, 7] = 255
  key = jax.random.key(0)
  with jax.enable_x64(True):
    logits = jnp.asarray(rng.normal(size=(1, 7, 8, 3)))
    f = jax.jit(lambda z: dual_task_loss(z, jnp.asarray(labels), key))
    value, grad = jax.jit(jax.value_and_grad(f))(logits)
    assert np.isfinite(value) and value > 0 and np.all(np.isfinite(grad)) and np.any(grad != 0)
    # Central differences along random directions.
    for seed in range(3):
      d = jnp.asarray(np.random.default_rng(10 + seed).normal(size=logits.shape))
      eps = 1e-5
      numeric = (f(logits + eps * d) - f(logits - eps * d)) / (2 * eps)
      np.testing.assert_allclose(jnp.sum(grad * d), numeric, rtol=1e-4, atol=1e-8)
  # A confident correct segmentation has the ground truth's boundaries; a wrong one not.
  right = jax.nn.one_hot(np.where(labels == 255, 0, labels), 3) * 50.0
  loss = jax.jit(lambda z: dual_task_loss(z, jnp.asarray(labels), key))
  assert float(loss(right)) < 1e-4
  assert float(loss(right[:, ::-1])) > 0.01  # upside down


def test_gscnn_loss_terms_and_weights():
  config = load_config("gscnn_cityscapes", "tiny")
  rng = np.random.default_rng(3)
  labels = np.zeros((2, 16, 16), np.uint8)
  labels[:, 4:12, 4:12] = 2
  seg = jnp.asarray(rng.normal(size=(2, 4, 4, 6)), jnp.float32)
  edge = jnp.asarray(rng.normal(size=(2, 16, 16, 1)) * 3, jnp.float32)
  total, terms = segmentation_loss({"seg": seg, "edge": edge}, jnp.asarray(labels), config, jax.random.key(1))
  assert set(terms) == {"seg", "edge", "dual_task", "boundary_ce"}
  assert all(np.isfinite(float(v)) and float(v) > 0 for v in terms.values())
  want = terms["seg"] + 20 * terms["edge"] + terms["dual_task"] + terms["boundary_ce"]
  np.testing.assert_allclose(total, want, rtol=1e-6)
  # The boundary CE is the CE over the pixels whose boundary probability exceeds 0.8.
  from jaxseg.losses import cross_entropy
  mask = jax.nn.sigmoid(edge[..., 0]) > 0.8
  np.testing.assert_allclose(terms["boundary_ce"], cross_entropy(seg, jnp.where(mask, labels, 255)), rtol=1e-6)
  with pytest.raises(ValueError, match="PRNG key"):
    segmentation_loss({"seg": seg, "edge": edge}, jnp.asarray(labels), config)


def boundary_counts_reference(pred, label, k, tol):
  """Without ignore, one image at a time: class boundaries = pixels with a 4-neighbour
  of another class; a boundary pixel matches if one of the other map's boundary pixels
  of the class lies within Euclidean distance `tol`."""
  out = np.zeros((k, 4), np.int64)
  for p, g in zip(pred, label):
    def bounds(m, c):
      h, w = m.shape
      return [(i, j) for i, j in np.ndindex(h, w) if m[i, j] == c and any(
          0 <= i + dy < h and 0 <= j + dx < w and m[i + dy, j + dx] != c
          for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)))]
    for c in range(k):
      bp, bg = np.array(bounds(p, c)).reshape(-1, 2), np.array(bounds(g, c)).reshape(-1, 2)
      def matched(a, b):
        if len(a) == 0 or len(b) == 0:
          return 0
        d = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
        return int((d.min(1) <= tol).sum())
      out[c] += [matched(bp, bg), len(bp), matched(bg, bp), len(bg)]
  return out


def test_boundary_f_score_on_known_masks():
  # A 10x10 square of class 1, predicted 2 px to the right. Class 1's boundary is the
  # square's inner ring (36 px); at tolerance 1, 20 of the 36 predicted ring pixels lie
  # within 1 px of the true ring (rows 10 and 19 at columns 12-20, and the ends of
  # column 12), and by symmetry 20 of the 36 true ones: P = R = F = 20/36.
  label = np.zeros((1, 32, 32), np.uint8)
  label[:, 10:20, 10:20] = 1
  pred = np.roll(label, 2, axis=2)
  counts = np.asarray(metrics.boundary_counts(jnp.asarray(pred), jnp.asarray(label), 2, 1))
  np.testing.assert_array_equal(counts[1], [20, 36, 20, 36])
  np.testing.assert_array_equal(counts, boundary_counts_reference(pred, label, 2, 1))
  scores = metrics.boundary_scores(counts)
  assert scores["per_class_boundary_f"][1] == pytest.approx(20 / 36)
  # At tolerance 2 every shifted pixel is within reach.
  counts = metrics.boundary_counts(pred, label, 2, 2)  # numpy in, numpy out
  assert isinstance(counts, np.ndarray)
  np.testing.assert_array_equal(counts[1], [36, 36, 36, 36])

  # Random blobs: the jitted device version vs the reference.
  rng = np.random.default_rng(4)
  blobs = lambda: np.stack([cv2.resize(rng.integers(0, 3, (4, 5)).astype(np.uint8), (20, 16),
                                       interpolation=cv2.INTER_NEAREST) for _ in range(2)])
  pred, label = blobs(), blobs()
  got = jax.jit(lambda p, l: metrics.boundary_counts(p, l, 3, 3))(jnp.asarray(pred), jnp.asarray(label))
  np.testing.assert_array_equal(got, boundary_counts_reference(pred, label, 3, 3))

  # Ignore: predictions deep in a void do not count (the ground truth is filled
  # `tolerance` px into it, to close contour bands); an absent class is undefined.
  label = np.zeros((1, 12, 14), np.uint8)
  label[:, :, 6:] = 255
  pred = np.zeros((1, 12, 14), np.uint8)
  pred[:, 4:8, 10:13] = 2  # more than 3 px inside the void
  counts = metrics.boundary_counts(pred, label, 3, 3)
  assert counts.sum() == 0
  assert metrics.boundary_scores(counts)["per_class_boundary_f"] == [None, None, None]


def test_pipeline_canny_is_cv2_canny_of_the_raw_image(data_dir):
  from jaxseg.data import datasets, pipeline
  config = load_config("gscnn_cityscapes", "tiny")
  builder = datasets.load("shapes", data_dir)
  batch = pipeline.train_dataset(config, datasets.source(builder, "train"))[0]
  assert batch["edges"].shape == batch["label"].shape and batch["edges"].dtype == np.uint8
  for image, edges in zip(batch["image"], batch["edges"]):
    want = cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 10, 100) > 0
    np.testing.assert_array_equal(edges, want)
  assert batch["edges"].any()
  source = datasets.source(builder, "val")
  batch = next(pipeline.eval_batches(config, source, 2))
  h, w = np.asarray(source[0]["label"]).shape[:2]
  want = cv2.Canny(cv2.cvtColor(np.asarray(source[0]["image"]), cv2.COLOR_RGB2GRAY), 10, 100) > 0
  np.testing.assert_array_equal(batch["edges"][0, :h, :w], want)
  assert not batch["edges"][0, h:].any() and not batch["edges"][0, :, w:].any()
  # Models without the shape stream get the usual batches.
  plain = load_config("gscnn_cityscapes", "tiny_noshape")
  assert set(pipeline.train_dataset(plain, datasets.source(builder, "train"))[0]) == {"image", "label"}


def test_model_outputs_and_the_noshape_variant():
  # Shapes only (jax.eval_shape): nothing is compiled.
  x = jnp.zeros((1, 32, 40, 3))
  edges = jnp.zeros((1, 32, 40))
  full = build_model(load_config("gscnn_cityscapes", "tiny"))
  variables = jax.eval_shape(lambda: full.init(jax.random.key(0), x, train=False))
  out = jax.eval_shape(lambda v: full.apply(v, x, train=True, batch={"edges": edges}, mutable=["batch_stats"],
                                            rngs={"dropout": jax.random.key(1)})[0], variables)
  assert out["seg"].shape == (1, 8, 10, 6) and out["edge"].shape == (1, 32, 40, 1)
  assert set(jax.eval_shape(lambda v: full.apply(v, x, train=False, batch={"edges": edges}), variables)) == {"seg"}
  with pytest.raises(ValueError, match="canny_edges"):
    jax.eval_shape(lambda v: full.apply(v, x, train=False), variables)
  plain = build_model(load_config("gscnn_cityscapes", "tiny_noshape"))
  plain_vars = jax.eval_shape(lambda: plain.init(jax.random.key(0), x, train=False))
  assert "shape_stream" not in plain_vars["params"]["decode_head"]
  assert set(jax.eval_shape(lambda v: plain.apply(v, x, train=True, mutable=["batch_stats"],
                                                   rngs={"dropout": jax.random.key(1)})[0], plain_vars)) == {"seg"}
  count = lambda v: sum(a.size for a in jax.tree.leaves(v["params"]))
  assert count(plain_vars) < count(variables)
  from jaxseg.errors import ConfigError
  bad = load_config("gscnn_cityscapes", "tiny")
  bad.input.canny_edges = False
  with pytest.raises(ConfigError, match="input.canny_edges"):
    build_model(bad)


def test_tiny_config_trains_evaluates_and_predicts(data_dir, tmp_path):
  import jaxseg
  from jaxseg.train import train_and_evaluate
  config = load_config("gscnn_cityscapes", "tiny")
  config.dataset.data_dir = data_dir
  config.train.update(dict(steps=2, eval_every=2, ckpt_every=2, log_every=1))
  train_and_evaluate(config, str(tmp_path))
  record = json.loads(open(tmp_path / "metrics.jsonl").read().splitlines()[-1])
  assert 0 <= record["miou"] <= 1 and 0 <= record["boundary_f"] <= 1
  assert record["boundary_f_tolerance"] == 3 and len(record["per_class_boundary_f"]) == 6
  log = json.loads(open(tmp_path / "train_log.jsonl").read().splitlines()[-1])
  assert all(np.isfinite(log[f"loss_{k}"]) for k in ("seg", "edge", "dual_task", "boundary_ce"))
  # jaxseg.load(...).predict computes the Canny map of raw images itself.
  images = np.random.default_rng(0).integers(0, 255, (2, 48, 56, 3)).astype(np.uint8)
  pred = jaxseg.load(str(tmp_path)).predict(images)
  assert pred.shape == (2, 48, 56) and pred.dtype == np.int32


def test_inference_views_carry_the_edge_map_with_the_image():
  """A model whose logits are a per-pixel function of (image, edges): sliding windows
  and flips give the whole-image answer only if the edge map is cropped and flipped
  with the image."""
  import ml_collections
  from jaxseg.evaluate import predict_scores

  class Pointwise:
    def apply(self, variables, x, train, batch):
      edges = batch["edges"]
      assert edges.shape == x.shape[:3] and "label" not in batch
      return {"seg": jnp.concatenate([x[..., :2], 5 * edges[..., None]], -1)}

  rng = np.random.default_rng(5)
  images = jnp.asarray(rng.integers(0, 255, (2, 12, 15, 3)), jnp.uint8)
  edges = jnp.asarray(rng.integers(0, 2, (2, 12, 15)), jnp.uint8)
  x = images.astype(jnp.float32)
  want = jnp.concatenate([x[..., :2], 5.0 * edges[..., None]], -1)
  config = lambda **e: ml_collections.ConfigDict({
      "dataset": {"num_classes": 3, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)},
      "model": {"align_corners": False},
      "eval": {"mode": "whole", "scales": (1.0,), "flip": False, "crop_size": (8, 8), "stride": (4, 5), **e}})
  batch = {"image": images, "edges": edges, "label": jnp.zeros(edges.shape, jnp.uint8)}
  np.testing.assert_allclose(predict_scores(Pointwise(), {}, batch, config()), want, rtol=1e-6)
  np.testing.assert_allclose(predict_scores(Pointwise(), {}, batch, config(mode="slide")), want, rtol=1e-5)
  np.testing.assert_allclose(predict_scores(Pointwise(), {}, batch, config(flip=True)),
                             jax.nn.softmax(want), rtol=1e-5)
