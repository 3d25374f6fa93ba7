"""PANet / Mask R-CNN detector: each loss, the box head (adaptive pooling fused by max /
sum, and the one-level Mask R-CNN head), the mask head (FCN path, deconv in PyTorch's
ConvTranspose2d convention, fully-connected fusion), the Mask R-CNN level rule, the
inference post-processing against torchvision's rules written out in numpy, the mask
targets' grid shift for masks kept at a stride; then one tiny jitted training forward
(with a gradient step and a batch without ground truth) and one inference forward.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models.backbones.resnet import ResNet
from jaxseg.models.detection import losses, targets
from jaxseg.models.detection.box_head import BoxHead
from jaxseg.models.detection.mask_head import MaskHead
from jaxseg.models.detection.panet import MASK_RCNN, PANet, mask_grid_shift, postprocess
from jaxseg.models.detection.rpn import RPNHead
from jaxseg.models.necks.fpn import FPN
from tests.test_detection_ops import np_nms, np_roi_align
from tests.test_fpn import np_conv


# ---------------------------------------------------------------------------- losses

def np_smooth_l1(x, beta):
  ax = np.abs(x)
  return ax if beta == 0 else np.where(ax < beta, 0.5 * x * x / beta, ax - 0.5 * beta)


def np_bce(x, t):
  return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))


def np_losses(out, rpn_beta, box_beta):
  rpn, box, mask = (jax.tree.map(np.asarray, out[k]) for k in ("rpn", "box", "mask"))
  v = rpn["valid"]
  objectness = np_bce(rpn["logits"][v], rpn["objectness"][v].astype(float)).mean()
  pos = v & rpn["objectness"]
  rpn_box = np_smooth_l1(rpn["deltas"][pos] - rpn["target_deltas"][pos], rpn_beta).sum() / v.sum()
  v, labels = box["valid"], box["labels"]
  logits = box["class_logits"][v].astype(np.float64)
  lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
  box_class = (lse - logits[np.arange(len(logits)), labels[v]]).mean()
  fg = v & (labels > 0)
  own = box["deltas"][fg, labels[fg]]  # the ground-truth class's deltas
  box_reg = np_smooth_l1(own - box["target_deltas"][fg], box_beta).sum() / v.sum()
  mv = mask["valid"]
  mask_loss = np_bce(mask["logits"][mv], mask["targets"][mv]).mean() if mv.any() else 0.0
  return {"rpn_objectness": objectness, "rpn_box": rpn_box, "box_class": box_class,
          "box_regression": box_reg, "mask": mask_loss}


def random_outputs(rng, b=2, s=12, r=10, k=4, rm=3, m=6, foreground=True):
  rpn_valid = rng.rand(b, s) < 0.8
  labels = rng.randint(1 if foreground else 0, k + 1, (b, r)) * (rng.rand(b, r) < (0.4 if foreground else 0))
  return {
      "rpn": {"logits": rng.randn(b, s) * 3, "deltas": rng.randn(b, s, 4) * 0.3,
              "objectness": (rng.rand(b, s) < 0.4) & rpn_valid, "target_deltas": rng.randn(b, s, 4) * 0.3,
              "valid": rpn_valid},
      "box": {"class_logits": rng.randn(b, r, k + 1) * 2, "deltas": rng.randn(b, r, k + 1, 4),
              "labels": labels.astype(np.int32), "target_deltas": rng.randn(b, r, 4), "valid": rng.rand(b, r) < 0.9},
      "mask": {"logits": rng.randn(b, rm, m, m) * 2, "targets": rng.rand(b, rm, m, m),
               "valid": (rng.rand(b, rm) < 0.6) if foreground else np.zeros((b, rm), bool)}}


@pytest.mark.parametrize("rpn_beta,box_beta", [(1 / 9, 1 / 9), (0.0, 1.0)])
def test_losses_equal_numpy(rpn_beta, box_beta):
  rng = np.random.RandomState(0)
  out = random_outputs(rng)
  out["rpn"]["valid"][0, :2] = True  # at least one sample and one positive
  out["rpn"]["objectness"][0, 0] = True
  out["mask"]["valid"][0, 0] = True
  weights = {"mask": 2.0, "rpn_box": 0.5}
  got = jax.jit(lambda o: losses.detection_losses(o, rpn_beta, box_beta, weights))(
      jax.tree.map(jnp.asarray, out))
  want = np_losses(out, rpn_beta, box_beta)
  for term, value in want.items():
    assert value > 0, term  # every term is exercised
    np.testing.assert_allclose(float(got[term]), value, rtol=1e-5, err_msg=term)
  total = sum(weights.get(t, 1.0) * want[t] for t in want)
  np.testing.assert_allclose(float(got["loss"]), total, rtol=1e-5)
  with pytest.raises(ValueError, match="unknown terms"):
    losses.detection_losses(out, weights={"masks": 1.0})


def test_losses_without_foreground_are_finite():
  out = jax.tree.map(jnp.asarray, random_outputs(np.random.RandomState(1), foreground=False))
  out["rpn"]["objectness"] = jnp.zeros_like(out["rpn"]["objectness"])

  @jax.jit
  def parts_and_mask_grad(out):
    def total(logits):
      return losses.detection_losses({**out, "mask": {**out["mask"], "logits": logits}})["loss"]
    return losses.detection_losses(out), jax.grad(total)(out["mask"]["logits"])

  parts, grad = parts_and_mask_grad(out)
  assert np.isfinite(float(parts["loss"]))
  assert float(parts["rpn_box"]) == float(parts["box_regression"]) == float(parts["mask"]) == 0.0
  assert float(parts["box_class"]) > 0 and float(parts["rpn_objectness"]) > 0
  assert np.all(np.asarray(grad) == 0)  # finite, and nothing learnt from padded mask slots


# ---------------------------------------------------------------------------- heads

def test_rpn_head_equals_numpy_in_the_anchors_order():
  rng = np.random.RandomState(8)
  levels = [rng.randn(2, 8 >> i, 6 >> i, 4).astype(np.float32) for i in range(2)]
  head = RPNHead(num_anchors=3)
  variables = jax.jit(head.init)(jax.random.key(0), levels)
  p = jax.tree.map(lambda v: rng.randn(*v.shape).astype(np.float32) * 0.3, variables["params"])
  objectness, deltas = jax.jit(head.apply)({"params": p}, levels)
  for x, o, d in zip(levels, objectness, deltas):
    t = np.maximum(np_conv(x, p["conv"]["kernel"], p["conv"]["bias"]), 0)  # shared by the levels
    logits = t @ p["cls_logits"]["kernel"][0, 0] + p["cls_logits"]["bias"]  # (B, H, W, A)
    reg = t @ p["bbox_pred"]["kernel"][0, 0] + p["bbox_pred"]["bias"]  # (B, H, W, 4 A): anchor-major
    b, h, w, _ = x.shape
    # anchors.grid_anchors' order: row-major cells, then the 3 aspect ratios
    np.testing.assert_allclose(np.asarray(o), logits.reshape(b, h * w * 3), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(d), reg.reshape(b, h, w, 3, 4).reshape(b, -1, 4), rtol=1e-4, atol=1e-4)


def dense(p, x):
  return x @ np.asarray(p["kernel"]) + np.asarray(p["bias"])


def np_gn(x, scale, bias, groups=32, eps=1e-5):
  g = x.reshape(x.shape[0], groups, -1)
  g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
  return g.reshape(x.shape) * scale + bias


@pytest.mark.parametrize("fusion,norm", [("max", "none"), ("sum", "none"), ("max", "gn"), (None, "none"),
                                         (None, "gn")])  # None: the Mask R-CNN head, one level
def test_box_head_equals_numpy(fusion, norm):
  rng = np.random.RandomState(2)
  l, r, c, k, hidden = 4, 5, 3, 2, 256  # 8 features per group of the GroupNorm
  pooled = rng.randn(l, r, 7, 7, c).astype(np.float32)
  x = pooled if fusion else pooled[0]
  head = BoxHead(k, representation=hidden, adaptive=fusion is not None, fusion=fusion or "max", norm=norm)
  variables = jax.jit(head.init)(jax.random.key(0), x)
  # random scales everywhere (the predictor and GroupNorm start from constants)
  p = jax.tree.map(lambda v: rng.randn(*v.shape).astype(np.float32) * (0.3 if v.ndim == 2 else 1.0),
                   variables["params"])
  logits, deltas = jax.jit(head.apply)({"params": p}, x)

  def first(name, x, norm_name):
    y = dense(p["fc6"][name] if fusion else p["fc6"], x.reshape(r, -1))  # NHWC flattening
    if norm == "gn":
      q = p["fc6"][norm_name] if fusion else p["fc6_norm"]
      y = np_gn(y, q["scale"], q["bias"])
    return np.maximum(y, 0)

  if fusion:
    per = [first(f"fc1_level{i}", pooled[i], f"norm1_level{i}") for i in range(l)]
    h = np.max(per, 0) if fusion == "max" else np.sum(per, 0)
    assert {f"fc1_level{i}" for i in range(l)} <= set(p["fc6"])  # one first layer per level
  else:
    h = first(None, x, None)
  h = dense(p["fc7"], h)
  h = np.maximum(np_gn(h, p["fc7_norm"]["scale"], p["fc7_norm"]["bias"]) if norm == "gn" else h, 0)
  np.testing.assert_allclose(np.asarray(logits), dense(p["cls_score"], h), rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(np.asarray(deltas), dense(p["bbox_pred"], h).reshape(r, k + 1, 4), rtol=1e-4,
                             atol=1e-3)
  assert p["cls_score"]["kernel"].shape == (hidden, k + 1)
  assert p["bbox_pred"]["kernel"].shape == (hidden, 4 * (k + 1))


def conv_relu(p, x):
  return np.maximum(np_conv(x, np.asarray(p["conv"]["kernel"]), np.asarray(p["conv"]["bias"])), 0)


def np_conv_bn_relu(p, stats, x, eps=1e-5):
  """conv3x3 (no bias) -> BatchNorm with running statistics -> ReLU."""
  y = np_conv(x, np.asarray(p["conv"]["kernel"]), np.zeros(p["conv"]["kernel"].shape[-1], np.float32))
  y = (y - stats["norm"]["mean"]) / np.sqrt(stats["norm"]["var"] + eps) * p["norm"]["scale"] + p["norm"]["bias"]
  return np.maximum(y, 0)


@pytest.mark.parametrize("fusion", ["max", "sum", None])
def test_conv_box_head_equals_numpy(fusion):
  """The 4conv1fc head (torchvision's v2 FastRCNNConvFCHead, BatchNorm in eval): with adaptive
  pooling conv1 per level, the levels fused after it (the PANet authors' conv head), then
  conv2..4 and one FC; random BatchNorm statistics and affine terms."""
  rng = np.random.RandomState(4)
  l, r, c, k, hidden = 4, 3, 8, 2, 16
  pooled = rng.randn(l, r, 7, 7, 5).astype(np.float32)
  x = pooled if fusion else pooled[0]
  head = BoxHead(k, representation=hidden, adaptive=fusion is not None, fusion=fusion or "max", norm="bn",
                 layers="4conv1fc", conv_channels=c)
  variables = jax.jit(head.init)(jax.random.key(0), x)
  scale = {1: 0.5, 2: 0.3, 4: 1.0}
  rand = lambda path, v: (rng.rand(*v.shape) + 0.5 if path[-1].key in ("var", "scale") else
                          rng.randn(*v.shape) * scale[v.ndim]).astype(np.float32)
  p, stats = (jax.tree_util.tree_map_with_path(rand, variables[k]) for k in ("params", "batch_stats"))
  logits, deltas = jax.jit(lambda v, x: head.apply(v, x, False))({"params": p, "batch_stats": stats}, x)
  assert logits.shape == (r, k + 1) and deltas.shape == (r, k + 1, 4)
  if fusion:
    per = [np_conv_bn_relu(p["conv1"][f"conv1_level{i}"], stats["conv1"][f"conv1_level{i}"], pooled[i])
           for i in range(l)]
    h = np.max(per, 0) if fusion == "max" else np.sum(per, 0)
  else:
    h = np_conv_bn_relu(p["conv1"], stats["conv1"], x)
  for i in (2, 3, 4):
    h = np_conv_bn_relu(p[f"conv{i}"], stats[f"conv{i}"], h)
  assert h.shape == (r, 7, 7, c) and "fc7" not in p
  h = np.maximum(dense(p["fc6"], h.reshape(r, -1)), 0)  # NHWC flattening
  np.testing.assert_allclose(np.asarray(logits), dense(p["cls_score"], h), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(deltas), dense(p["bbox_pred"], h).reshape(r, k + 1, 4), rtol=1e-4,
                             atol=1e-4)
  # training: BatchNorm on the batch's statistics, which it keeps as the new running ones
  train = jax.jit(lambda v, x: head.apply(v, x, True, mutable=["batch_stats"]))
  _, updates = train({"params": p, "batch_stats": stats}, x)
  assert not np.allclose(updates["batch_stats"]["conv4"]["norm"]["mean"], stats["conv4"]["norm"]["mean"])
  with pytest.raises(ValueError, match="head_norm 'bn' with the box head '2fc'"):
    BoxHead(k, norm="bn").init(jax.random.key(0), x)


@pytest.mark.parametrize("fusion,fc_fusion", [("max", True), ("sum", False), (None, False)])
def test_mask_head_equals_numpy(fusion, fc_fusion):
  torch = pytest.importorskip("torch")
  rng = np.random.RandomState(3)
  l, r, c, k, s = 4, 3, 8, 2, 6
  pooled = rng.randn(l, r, s, s, 5).astype(np.float32)
  x = pooled if fusion else pooled[0]
  head = MaskHead(k, channels=c, adaptive=fusion is not None, fusion=fusion or "max", fc_fusion=fc_fusion)
  variables = jax.jit(lambda x: head.init(jax.random.key(1), x, train=False))(x)
  p = jax.tree.map(np.asarray, variables["params"])
  # random biases (zero at initialisation) so that every bias is checked
  p = jax.tree_util.tree_map_with_path(
      lambda path, v: rng.randn(*v.shape).astype(np.float32) * 0.1 if path[-1].key == "bias" else v, p)
  got = np.asarray(jax.jit(lambda p, x: head.apply({"params": p}, x, train=False))(p, x))
  assert got.shape == (r, 2 * s, 2 * s, k + 1)
  if fusion:
    per = [conv_relu(p["mask_fcn1"][f"conv1_level{i}"], pooled[i]) for i in range(l)]
    h = np.max(per, 0) if fusion == "max" else np.sum(per, 0)
  else:
    h = conv_relu(p["mask_fcn1"], x)
  h3 = conv_relu(p["mask_fcn3"], conv_relu(p["mask_fcn2"], h))
  h4 = conv_relu(p["mask_fcn4"], h3)
  # the deconv as PyTorch's ConvTranspose2d(c, c, 2, stride 2) with weight (in, out, 2, 2)
  weight = torch.from_numpy(p["conv5_mask"]["kernel"].transpose(3, 2, 0, 1).copy())
  up = torch.nn.functional.conv_transpose2d(torch.from_numpy(h4.transpose(0, 3, 1, 2).astype(np.float32)),
                                            weight, torch.from_numpy(p["conv5_mask"]["bias"]), stride=2)
  up = np.maximum(up.numpy().transpose(0, 2, 3, 1), 0)
  want = up @ p["mask_fcn_logits"]["kernel"][0, 0] + p["mask_fcn_logits"]["bias"]
  if fc_fusion:
    f = conv_relu(p["mask_fcn5_fc"], conv_relu(p["mask_fcn4_fc"], h3))
    assert f.shape[-1] == c // 2
    fg = np.maximum(dense(p["mask_fc"], f.reshape(r, -1)), 0).reshape(r, 2 * s, 2 * s, 1)
    assert np.abs(fg).max() > 0
    want = want + fg  # the same class-agnostic foreground on every class
  else:
    assert "mask_fc" not in p
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------- RoI levels, post-processing

def tiny_model(bottom_up=True, **kw):
  return PANet(backbone=ResNet(depth=10, width=8, stem="7x7", output_stride=32, multi_grid=()),
               neck=FPN(channels=16, bottom_up=bottom_up), num_classes=3, image_size=(64, 64),
               representation=32, mask_channels=16, rpn_pre_nms_top_n_train=60, rpn_post_nms_top_n_train=40,
               rpn_pre_nms_top_n_test=60, rpn_post_nms_top_n_test=30, rpn_batch_size=32, roi_batch_size=16,
               mask_rois=4, detections=6, detections_pre_nms=50, **kw)


def test_maskrcnn_setting_pools_each_roi_from_its_level():
  rng = np.random.RandomState(4)
  pyramid = [rng.randn(2, 64 >> i, 64 >> i, 3).astype(np.float32) for i in range(4)]
  sides = np.array([20, 111, 112, 223, 224, 447, 448, 700], np.float32)
  xy = rng.uniform(0, 30, (len(sides), 2)).astype(np.float32)
  boxes = np.concatenate([xy, xy + sides[:, None]], 1)
  index = np.arange(len(sides)) % 2
  model = tiny_model(False, **MASK_RCNN)
  got = np.asarray(jax.jit(lambda *a: model.apply({}, *a, 7, method=PANet.pool))(
      [jnp.asarray(f) for f in pyramid], jnp.asarray(boxes), jnp.asarray(index)))
  levels = [min(5, max(2, math.floor(4 + math.log2(s / 224) + 1e-6))) for s in sides]
  assert levels == [2, 2, 3, 3, 4, 4, 5, 5]
  for i, level in enumerate(levels):
    want = np_roi_align(pyramid[level - 2], boxes[i:i + 1], index[i:i + 1], 7, 1 / 2 ** level, 2, False)
    np.testing.assert_allclose(got[i], want[0], atol=1e-5)
  adaptive = np.asarray(jax.jit(lambda *a: tiny_model().apply({}, *a, 7, method=PANet.pool))(
      [jnp.asarray(f) for f in pyramid], jnp.asarray(boxes), jnp.asarray(index)))
  assert adaptive.shape == (4, len(sides), 7, 7, 3)  # PANet: every level


def np_decode(d, ref, weights=(10.0, 10.0, 5.0, 5.0), clamp=math.log(1000 / 16)):
  w, h = ref[2] - ref[0], ref[3] - ref[1]
  x, y = ref[0] + 0.5 * w, ref[1] + 0.5 * h
  cx, cy = d[0] / weights[0] * w + x, d[1] / weights[1] * h + y
  pw, ph = np.exp(min(d[2] / weights[2], clamp)) * w, np.exp(min(d[3] / weights[3], clamp)) * h
  return np.array([cx - 0.5 * pw, cy - 0.5 * ph, cx + 0.5 * pw, cy + 0.5 * ph])


def np_postprocess(logits, deltas, proposals, valid, size, thr, nms_thr, detections):
  """torchvision's postprocess_detections for one image, with lists."""
  e = np.exp(logits - logits.max(1, keepdims=True))
  probs = e / e.sum(1, keepdims=True)
  cands = []
  for i in np.flatnonzero(valid):
    for c in range(1, logits.shape[1]):
      b = np_decode(deltas[i, c].astype(np.float64), proposals[i].astype(np.float64))
      b = np.clip(b, 0, [size[1], size[0], size[1], size[0]])
      if probs[i, c] > thr and b[2] - b[0] >= 1e-2 and b[3] - b[1] >= 1e-2:
        cands.append((probs[i, c], c - 1, b))
  keep = []
  for c in set(k for _, k, _ in cands):  # NMS per class, then all by descending score
    mine = [x for x in cands if x[1] == c]
    kb = np.array([x[2] for x in mine])
    keep += [mine[j] for j in np_nms(kb, [x[0] for x in mine], [True] * len(mine), nms_thr)]
  return sorted(keep, key=lambda x: -x[0])[:detections]


def test_postprocess_equals_torchvision_rules():
  rng = np.random.RandomState(5)
  b, p, k = 2, 14, 3
  xy = rng.uniform(0, 40, (b, p, 2))
  proposals = np.concatenate([xy, xy + rng.uniform(4, 30, (b, p, 2))], -1).astype(np.float32)
  proposals[:, -3:] = proposals[:, :3] + 1.0  # near duplicates, to be suppressed
  logits = (rng.randn(b, p, k + 1) * 2).astype(np.float32)
  deltas = (rng.randn(b, p, k + 1, 4) * 0.5).astype(np.float32)
  valid = rng.rand(b, p) < 0.85
  sizes = np.array([[64, 64], [50, 40]], np.float32)
  boxes, classes, scores, det_valid = jax.jit(postprocess, static_argnums=(5, 6, 7, 8))(
      logits, deltas, proposals, valid, sizes, 0.1, 0.5, 9, p * k)
  for i in range(b):
    want = np_postprocess(logits[i], deltas[i], proposals[i], valid[i], sizes[i], 0.1, 0.5, 9)
    n = int(det_valid[i].sum())
    assert n == len(want) and n >= 5
    np.testing.assert_allclose(np.asarray(scores[i, :n]), [w[0] for w in want], rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(classes[i, :n]), [w[1] for w in want])
    np.testing.assert_allclose(np.asarray(boxes[i, :n]), np.array([w[2] for w in want]), rtol=1e-4, atol=1e-3)
    assert not np.asarray(det_valid[i, n:]).any() and np.all(np.asarray(boxes[i, n:]) == 0)


@pytest.mark.parametrize("aligned", [False, True])
def test_mask_targets_at_a_stride_read_the_full_mask(aligned):
  # a linear ramp: bilinear sampling of the subsampled ramp is exact, so with the shift the
  # stride-4 targets equal those of the full-resolution mask wherever no border is near
  s, n = 4, 64
  ys, xs = np.mgrid[0:n, 0:n].astype(np.float32)
  full = 0.01 * xs + 0.02 * ys
  low = full[s // 2::s, s // 2::s]  # jaxseg.data.instances: the centre pixel of every cell
  rois = jnp.asarray([[10.0, 12.0, 40.5, 33.0], [8.0, 9.5, 20.0, 50.0]])
  index = jnp.zeros(2, jnp.int32)
  crop = jax.jit(targets.mask_targets, static_argnums=(3, 4, 5, 6))
  want = crop(jnp.asarray(full[None]), rois, index, 1, 7, 2, aligned)
  got = crop(jnp.asarray(low[None]), rois - mask_grid_shift(s, aligned), index, s, 7, 2, aligned)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
  unshifted = crop(jnp.asarray(low[None]), rois, index, s, 7, 2, aligned)
  assert np.abs(np.asarray(unshifted) - np.asarray(want)).max() > 1e-2  # the shift matters
  assert mask_grid_shift(1, aligned) == 0


# ---------------------------------------------------------------------------- the whole detector

def tiny_batch(rng, b=2, m=3, stride=4):
  boxes = np.zeros((b, m, 4), np.float32)
  masks = np.zeros((b, m, 64 // stride, 64 // stride), np.uint8)
  valid = np.zeros((b, m), bool)
  for i in range(b):
    for j in range(2):
      x0, y0 = rng.randint(0, 30, 2)
      x1, y1 = x0 + rng.randint(12, 34), y0 + rng.randint(12, 34)
      boxes[i, j] = [x0, y0, x1, y1]
      masks[i, j, y0 // stride:(y1 + stride - 1) // stride, x0 // stride:(x1 + stride - 1) // stride] = 1
      valid[i, j] = True
  return {"image": rng.randn(b, 64, 64, 3).astype(np.float32), "instance_boxes": boxes,
          "instance_classes": rng.randint(0, 3, (b, m)).astype(np.int32), "instance_masks": masks,
          "instance_valid": valid, "instance_iscrowd": np.zeros((b, m), np.int32)}


SIZES = np.array([[64, 64], [48, 40]], np.float32)  # the images' extents inside the canvas


def init_and_detect(model, images):
  """Parameters and the inference outputs in one compilation (the same program in both
  tests below, so the second reads it from the compilation cache)."""
  out, variables = jax.jit(lambda x, s: model.init_with_output(jax.random.key(0), x, image_sizes=s))(
      images, SIZES)
  return variables, out


def test_training_forward_gradient_step_and_zero_ground_truth():
  rng = np.random.RandomState(6)
  batch = tiny_batch(rng)
  model = tiny_model()
  variables, _ = init_and_detect(model, batch["image"])

  @jax.jit
  def loss_and_grad(params, batch):
    def f(params):
      out, _ = model.apply({**variables, "params": params}, batch["image"], batch, train=True,
                           rngs={"sampling": jax.random.key(2)}, mutable=["batch_stats"])
      parts = losses.detection_losses(out)
      return parts["loss"], (parts, out)
    return jax.value_and_grad(f, has_aux=True)(params)

  params = variables["params"]
  (loss, (parts, out)), grads = loss_and_grad(params, batch)
  b, k1 = 2, 4
  shapes = jax.tree.map(lambda x: x.shape, out)
  assert shapes["rpn"]["logits"] == (b, 32) and shapes["rpn"]["deltas"] == (b, 32, 4)
  assert shapes["box"]["class_logits"] == (b, 16, k1) and shapes["box"]["deltas"] == (b, 16, k1, 4)
  assert shapes["mask"]["logits"] == (b, 4, 28, 28) == shapes["mask"]["targets"]
  assert shapes["proposals"] == (b, 40, 4)
  # every image's ground truth is among the RoI candidates, so each has foreground RoIs
  fg = np.asarray(out["box"]["labels"] > 0)
  assert fg.sum(1).min() >= 2 and np.asarray(out["mask"]["valid"]).sum(1).min() >= 2
  # foreground RoIs come first, so the mask slots are exactly the first foreground ones
  np.testing.assert_array_equal(np.asarray(out["mask"]["valid"]), fg[:, :4])
  mt = np.asarray(out["mask"]["targets"])[np.asarray(out["mask"]["valid"])]
  assert mt.min() >= 0 and mt.max() <= 1 and mt.mean() > 0.2  # the RoIs overlap their masks
  for term in losses.TERMS:
    assert np.isfinite(float(parts[term])) and float(parts[term]) > 0, term
  flat = jax.tree_util.tree_leaves_with_path(grads)
  assert all(np.isfinite(np.asarray(g)).all() for _, g in flat)
  for head in ("backbone", "neck", "rpn", "box_head", "mask_head"):
    norm = sum(float(jnp.sum(g ** 2)) for path, g in flat if path[0].key == head)
    assert norm > 0, head
  assert float(jnp.sum(grads["mask_head"]["mask_fc"]["kernel"] ** 2)) > 0  # the FC fusion learns
  # one SGD step lowers the loss of the same batch and samples
  stepped = jax.tree.map(lambda p, g: p - 0.02 * g, params, grads)
  (loss2, _), _ = loss_and_grad(stepped, batch)
  assert float(loss2) < float(loss)
  # a batch without ground truth: finite, background only, same compiled step
  empty = {**batch, "instance_valid": np.zeros_like(batch["instance_valid"])}
  (loss0, (parts0, out0)), grads0 = loss_and_grad(params, empty)
  assert np.isfinite(float(loss0)) and all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads0))
  assert float(parts0["rpn_box"]) == float(parts0["box_regression"]) == float(parts0["mask"]) == 0.0
  assert not np.asarray(out0["box"]["labels"]).any() and not np.asarray(out0["rpn"]["objectness"]).any()


def test_inference_outputs():
  rng = np.random.RandomState(7)
  batch = tiny_batch(rng)
  model = tiny_model()
  variables, out = init_and_detect(model, batch["image"])
  sizes = SIZES
  shapes = jax.tree.map(lambda x: x.shape, out)
  assert shapes == {"boxes": (2, 6, 4), "classes": (2, 6), "scores": (2, 6), "valid": (2, 6),
                    "masks": (2, 6, 28, 28), "proposals": (2, 30, 4), "proposal_valid": (2, 30)}
  out = jax.tree.map(np.asarray, out)
  # untrained: softmax over 4 classes gives scores near 1/4 > 0.05, so detections exist
  assert out["valid"].sum(1).min() > 0
  for i in range(2):
    n = out["valid"][i].sum()
    assert out["valid"][i, :n].all() and np.all(np.diff(out["scores"][i, :n]) <= 0)
    assert (out["classes"][i] >= 0).all() and (out["classes"][i] < 3).all()
    bx = out["boxes"][i, :n]
    assert (bx[:, 2] <= sizes[i, 1]).all() and (bx[:, 3] <= sizes[i, 0]).all() and (bx >= 0).all()
    assert (out["masks"][i, n:] == 0).all()
  assert (out["masks"] >= 0).all() and (out["masks"] <= 1).all()
  maskrcnn = tiny_model(False, **MASK_RCNN)
  abstract = jax.eval_shape(lambda x: maskrcnn.init_with_output(jax.random.key(0), x), batch["image"])
  assert jax.tree.map(lambda x: x.shape, abstract[0]) == shapes
  params = abstract[1]["params"]
  assert set(params) == {"backbone", "neck", "rpn", "box_head", "mask_head"}
  assert set(params["box_head"]) == {"fc6", "fc7", "cls_score", "bbox_pred"}
  assert set(params["mask_head"]) == {"mask_fcn1", "mask_fcn2", "mask_fcn3", "mask_fcn4", "conv5_mask",
                                      "mask_fcn_logits"}
  assert set(params["rpn"]) == {"conv", "cls_logits", "bbox_pred"}
  assert "down2" not in params["neck"]  # no bottom-up path
  # the v2 setting (torchvision's maskrcnn_resnet50_fpn_v2): a 2-conv RPN head, the 4conv1fc box head,
  # BatchNorm in the FPN and the heads, whose training forward updates their batch_stats (traced only)
  v2 = PANet(**{**{f: getattr(maskrcnn, f) for f in ("backbone", "num_classes", "image_size", "representation",
                                                    "mask_channels", "roi_batch_size", "mask_rois")},
                **MASK_RCNN}, neck=FPN(channels=16, norm="bn"), rpn_conv_depth=2, box_head_layers="4conv1fc",
             box_conv_channels=16, head_norm="bn")
  v2_vars = jax.eval_shape(lambda x: v2.init(jax.random.key(0), x), batch["image"])
  assert set(v2_vars["params"]["rpn"]) == {"conv", "conv2", "cls_logits", "bbox_pred"}
  assert set(v2_vars["params"]["box_head"]) == {"conv1", "conv2", "conv3", "conv4", "fc6", "cls_score", "bbox_pred"}
  _, updates = jax.eval_shape(lambda v, b: v2.apply(v, b["image"], b, train=True, rngs={"sampling": jax.random.key(1)},
                                                    mutable=["batch_stats"]), v2_vars, batch)
  assert {"neck", "box_head", "mask_head"} <= set(updates["batch_stats"])
  shapes = lambda tree: jax.tree.map(lambda x: x.shape, tree)
  assert shapes(updates["batch_stats"]) == shapes(v2_vars["batch_stats"])
  with pytest.raises(ValueError, match="canvas"):
    model.apply(variables, batch["image"][:, :32])
