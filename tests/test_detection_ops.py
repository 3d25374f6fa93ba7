"""Detection building blocks against straightforward numpy references: IoU with padding,
box encoding / decoding, clipping, anchors, padded NMS (random boxes with ties, duplicates
and padding) and its per-class variant, RoIAlign (torchvision's definition written out
loop by loop, aligned and not, and torchvision.ops.roi_align where torchvision is
installed) and its gradient by finite differences.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models.detection import anchors, boxes, nms, roi_align
from tests import torchvision_reference


def random_boxes(rng, n, size=64.0):
  xy = rng.uniform(0, size, (n, 2))
  wh = rng.uniform(1, size / 2, (n, 2))
  return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def np_iou(a, b):
  out = np.zeros((len(a), len(b)))
  for i, p in enumerate(a):
    for j, q in enumerate(b):
      iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
      ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
      inter = iw * ih
      union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
      out[i, j] = inter / union if union > 0 else 0.0
  return out


def test_pairwise_iou_with_padding():
  rng = np.random.RandomState(0)
  a, b = random_boxes(rng, 7), random_boxes(rng, 5)
  b[3] = b[1]  # a duplicate: IoU 1 with itself
  a[2] = [10, 10, 10, 10]  # empty box: IoU 0 everywhere
  a_valid = np.array([1, 1, 1, 1, 1, 0, 1], bool)
  b_valid = np.array([1, 1, 0, 1, 1], bool)
  got = np.asarray(boxes.pairwise_iou(jnp.asarray(a), jnp.asarray(b), a_valid, b_valid))
  want = np.where(a_valid[:, None] & b_valid[None], np_iou(a, b), -1.0)
  np.testing.assert_allclose(got, want, atol=1e-6)
  np.testing.assert_allclose(np.asarray(boxes.pairwise_iou(jnp.asarray(b), jnp.asarray(b)))[1, 3], 1.0)


@pytest.mark.parametrize("weights", [boxes.RPN_WEIGHTS, boxes.BOX_HEAD_WEIGHTS])
def test_encode_decode(weights):
  rng = np.random.RandomState(1)
  ref, gt = random_boxes(rng, 9), random_boxes(rng, 9)
  wx, wy, ww, wh = weights
  rw, rh = ref[:, 2] - ref[:, 0], ref[:, 3] - ref[:, 1]
  rx, ry = ref[:, 0] + 0.5 * rw, ref[:, 1] + 0.5 * rh
  gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
  gx, gy = gt[:, 0] + 0.5 * gw, gt[:, 1] + 0.5 * gh
  want = np.stack([wx * (gx - rx) / rw, wy * (gy - ry) / rh, ww * np.log(gw / rw), wh * np.log(gh / rh)], 1)
  deltas = np.asarray(boxes.encode(jnp.asarray(gt), jnp.asarray(ref), weights))
  np.testing.assert_allclose(deltas, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(boxes.decode(jnp.asarray(deltas), jnp.asarray(ref), weights)), gt,
                             rtol=1e-5, atol=1e-3)
  # the log-scale clamp: a huge dw grows the box by exactly 1000 / 16
  huge = np.zeros((1, 4), np.float32)
  huge[0, 2:] = 100.0 * ww
  out = np.asarray(boxes.decode(jnp.asarray(huge), jnp.asarray(ref[:1]), weights))[0]
  np.testing.assert_allclose(out[2] - out[0], rw[0] * 1000 / 16, rtol=1e-5)
  assert math.isclose(boxes.SCALE_CLAMP, math.log(1000 / 16))


def test_clip_and_min_size():
  b = jnp.asarray([[[-5.0, 3.0, 70.0, 90.0], [1.0, -2.0, 2.0, 200.0]],
                   [[-5.0, 3.0, 70.0, 90.0], [1.0, 1.0, 1.0005, 9.0]]])
  out = np.asarray(boxes.clip(b, jnp.asarray([[64.0], [32.0]]), jnp.asarray([[48.0], [40.0]])))
  np.testing.assert_array_equal(out[0], [[0, 3, 48, 64], [1, 0, 2, 64]])
  np.testing.assert_array_equal(out[1, 0], [0, 3, 40, 32])
  np.testing.assert_array_equal(np.asarray(boxes.large_enough(b, 1e-3)), [[True, True], [True, False]])


def test_anchors_torchvision_convention():
  cell = anchors.cell_anchors(32)
  # h = 32 sqrt(r), w = 32 / sqrt(r), halves rounded: r = 0.5 -> w 45.25, h 22.63
  np.testing.assert_array_equal(cell, [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]])
  levels = anchors.pyramid_anchors((128, 192))
  assert [a.shape for a in levels] == [((128 // s) * (192 // s) * 3, 4) for s in anchors.STRIDES]
  p3 = levels[1].reshape(16, 24, 3, 4)
  # centre of cell (y=2, x=5) at its top-left corner in pixels: (5 * 8, 2 * 8)
  np.testing.assert_array_equal(p3[2, 5], anchors.cell_anchors(64) + [40, 16, 40, 16])
  for level, size in zip(levels, anchors.SIZES):  # area ~ size^2 for every ratio
    a = boxes.area(jnp.asarray(level[:3]))
    np.testing.assert_allclose(np.asarray(a), size * size, rtol=0.03)
  with pytest.raises(ValueError, match="divisible by the largest stride 64"):
    anchors.pyramid_anchors((100, 128))


def np_nms(b, s, valid, thr):
  order = sorted((i for i in range(len(s)) if valid[i]), key=lambda i: (-s[i], i))
  keep = []
  for i in order:
    if all(np_iou(b[i:i + 1], b[j:j + 1])[0, 0] <= thr for j in keep):
      keep.append(i)
  return keep


@pytest.mark.parametrize("max_output", [5, 40])
def test_nms_equals_numpy(max_output):
  rng = np.random.RandomState(2)
  n = 60
  b = random_boxes(rng, n, 48.0)
  s = rng.randint(0, 6, n).astype(np.float32) / 5  # many ties
  b[10], s[10] = b[3], s[3]  # exact duplicates, equal scores: the lower index wins
  b[11] = b[4]
  valid = rng.uniform(size=n) > 0.2
  valid[3] = valid[10] = True
  b[~valid] = rng.uniform(-1e3, 1e3, (np.sum(~valid), 4))  # garbage in padded slots
  s[~valid] = 5.0  # above every real score: must still be skipped
  run = jax.jit(nms.nms, static_argnums=(3, 4))
  for thr in (0.3, 0.7):
    idx, ok = run(jnp.asarray(b), jnp.asarray(s), jnp.asarray(valid), thr, max_output)
    want = np_nms(b, s, valid, thr)[:max_output]
    idx, ok = np.asarray(idx), np.asarray(ok)
    assert ok.sum() == len(want) and not ok[len(want):].any()
    np.testing.assert_array_equal(idx[:len(want)], want)
    np.testing.assert_array_equal(idx[len(want):], 0)
    assert 3 in want and 10 not in want


def test_batched_nms_is_per_class():
  rng = np.random.RandomState(3)
  n = 40
  b = random_boxes(rng, n, 32.0)
  s = rng.uniform(size=n).astype(np.float32)
  c = rng.randint(0, 3, n)
  valid = rng.uniform(size=n) > 0.1
  idx, ok = jax.jit(nms.batched_nms, static_argnums=(4, 5))(
      jnp.asarray(b), jnp.asarray(s), jnp.asarray(c), jnp.asarray(valid), 0.5, n)
  got = np.asarray(idx)[np.asarray(ok)]
  want = []
  for k in range(3):
    want += np_nms(b, s, valid & (c == k), 0.5)
  want = sorted(want, key=lambda i: (-s[i], i))
  np.testing.assert_array_equal(got, want)


def np_bilinear(f, y, x):
  h, w = f.shape[:2]
  if y < -1.0 or y > h or x < -1.0 or x > w:
    return np.zeros(f.shape[2])
  y, x = float(max(y, 0.0)), float(max(x, 0.0))
  y0, x0 = int(y), int(x)
  if y0 >= h - 1:
    y0 = y1 = h - 1
    y = float(y0)
  else:
    y1 = y0 + 1
  if x0 >= w - 1:
    x0 = x1 = w - 1
    x = float(x0)
  else:
    x1 = x0 + 1
  ly, lx = y - y0, x - x0
  hy, hx = 1 - ly, 1 - lx
  return hy * hx * f[y0, x0] + hy * lx * f[y0, x1] + ly * hx * f[y1, x0] + ly * lx * f[y1, x1]


def np_roi_align(feat, rois, index, out, scale, ratio, aligned):
  """torchvision's roi_align (NHWC), written from its definition."""
  res = np.zeros((len(rois), out, out, feat.shape[-1]))
  f32 = np.float32  # coordinates in float32, as the kernel computes them
  off = f32(0.5 if aligned else 0.0)
  for r, (box, b) in enumerate(zip(rois, index)):
    x1, y1, x2, y2 = box.astype(f32) * f32(scale) - off
    rw, rh = x2 - x1, y2 - y1
    if not aligned:
      rw, rh = max(rw, f32(1.0)), max(rh, f32(1.0))
    bh, bw = rh / out, rw / out
    for i in range(out):
      for j in range(out):
        acc = 0.0
        for iy in range(ratio):
          y = y1 + f32(i) * bh + f32(iy + 0.5) * bh / f32(ratio)
          for ix in range(ratio):
            x = x1 + f32(j) * bw + f32(ix + 0.5) * bw / f32(ratio)
            acc = acc + np_bilinear(feat[b], y, x)
        res[r, i, j] = acc / (ratio * ratio)
  return res


def roi_case():
  rng = np.random.RandomState(4)
  feat = rng.randn(2, 6, 7, 3).astype(np.float32)
  rois = np.array([[0, 0, 28, 24], [3.3, 5.1, 20.7, 17.9], [-6, -6, 9, 5],  # partly outside
                   [20, 14, 36, 30],  # past the bottom-right: the H - 1 and > H rules
                   [10, 10, 10.5, 11],  # smaller than a pixel
                   [-12, 2, -5, 9],  # wholly left of the map
                   [1, 2, 27.5, 23.5]], np.float32)
  index = np.array([0, 1, 0, 1, 1, 0, 1])
  return feat, rois, index


@pytest.mark.parametrize("aligned,ratio", [(False, 2), (True, 2), (True, 3)])
def test_roi_align_equals_definition(aligned, ratio):
  feat, rois, index = roi_case()
  run = jax.jit(roi_align.roi_align, static_argnums=(3, 4, 5, 6))
  got = np.asarray(run(jnp.asarray(feat), jnp.asarray(rois), jnp.asarray(index), 3, 0.25, ratio, aligned))
  want = np_roi_align(feat, rois, index, 3, 0.25, ratio, aligned)
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert np.abs(want[5]).max() == 0 and np.abs(want[3]).max() > 0


@pytest.mark.parametrize("aligned,ratio", [(False, 2), (True, 2), (False, 3), (True, 1)])
def test_roi_align_equals_torchvision(aligned, ratio):
  """torchvision.ops.roi_align itself (its own pure-PyTorch path where its compiled operators do
  not load, tests/torchvision_reference.py). Its adaptive sampling_ratio (<= 0) has no static
  counterpart here (roi_align.py)."""
  if not torchvision_reference.install():
    pytest.skip("torchvision is not installed")
  import torch
  import torchvision
  feat, rois, index = roi_case()
  got = jax.jit(roi_align.roi_align, static_argnums=(3, 4, 5, 6))(
      jnp.asarray(feat), jnp.asarray(rois), jnp.asarray(index), 3, 0.25, ratio, aligned)
  rois5 = torch.from_numpy(np.concatenate([index[:, None], rois], 1).astype(np.float32))
  want = torchvision.ops.roi_align(torch.from_numpy(feat).permute(0, 3, 1, 2), rois5, 3, 0.25, ratio, aligned)
  np.testing.assert_allclose(np.asarray(got), want.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_roi_align_gradient_by_finite_differences():
  feat, rois, index = roi_case()
  cot = np.random.RandomState(5).randn(len(rois), 2, 2, 3).astype(np.float32)

  def loss(f):
    return jnp.sum(roi_align.roi_align(f, jnp.asarray(rois), jnp.asarray(index), 2, 0.25, 2, True) * cot)

  grad = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(feat)))
  rng = np.random.RandomState(6)
  f64 = feat.astype(np.float64)
  ref = lambda f: np.sum(np_roi_align(f, rois, index, 2, 0.25, 2, True) * cot)
  for _ in range(12):  # the map is linear: central differences are exact up to rounding
    k = tuple(rng.randint(s) for s in feat.shape)
    e = np.zeros_like(f64)
    e[k] = 0.5
    np.testing.assert_allclose(grad[k], (ref(f64 + e) - ref(f64 - e)) / 1.0, atol=1e-5)
  assert np.abs(grad).sum() > 0
  with pytest.raises(ValueError, match="sampling_ratio"):
    roi_align.roi_align(jnp.asarray(feat), jnp.asarray(rois), jnp.asarray(index), 2, 0.25, 0)
