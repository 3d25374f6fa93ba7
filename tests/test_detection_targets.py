"""RPN and box-head training targets against a numpy reference of the labelling rules
(torchvision's Matcher: thresholds, low-quality matches, padding) and the balanced
sampler's counts, eligibility and uniformity; RPN proposals against torchvision's
filter_proposals in numpy; mask targets against the RoIAlign reference.
"""
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.detection import anchors as anchor_ops
from jaxseg.models.detection import boxes as box_ops
from jaxseg.models.detection import targets
from tests.test_detection_ops import np_iou, random_boxes


def np_match(iou, valid, high, low, allow_low_quality):
  """Labels 1 / 0 / -1 and matched gt from the (N, G) IoU of valid ground truth."""
  n = iou.shape[0]
  if not valid.any():
    return np.zeros(n, int), None
  sub = iou[:, valid]
  gt_ids = np.flatnonzero(valid)
  best, arg = sub.max(1), gt_ids[sub.argmax(1)]
  labels = np.where(best >= high, 1, np.where(best < low, 0, -1))
  if allow_low_quality:
    for g in range(sub.shape[1]):
      top = sub[:, g].max()
      if top > 0:
        labels[sub[:, g] == top] = 1
  return labels, arg


def tiny_scene(rng):
  anchors = np.concatenate(anchor_ops.pyramid_anchors((64, 64), strides=(8, 16, 32, 64), sizes=(16, 32, 64, 128)))
  gt = random_boxes(rng, 6, 60.0)
  gt[4] = anchors[100] + 0.3  # near an anchor: IoU well above 0.7
  gt[2] = [61, 61, 62.5, 62.5]  # tiny: only its best anchors can make it positive
  valid = np.array([1, 1, 1, 0, 1, 1], bool)
  gt[3] = [0, 0, 64, 64]  # padded slot with a box that would match everything
  return anchors, gt, valid


def test_rpn_labels_equal_reference():
  rng = np.random.RandomState(0)
  anchors, gt, valid = tiny_scene(rng)
  iou = np.asarray(box_ops.pairwise_iou(jnp.asarray(anchors), jnp.asarray(gt), b_valid=jnp.asarray(valid)))
  np.testing.assert_allclose(iou[:, valid], np_iou(anchors, gt[valid]), atol=1e-5)
  labels, matched = jax.jit(targets.match, static_argnums=(1, 2, 3))(jnp.asarray(iou), 0.7, 0.3, True)
  want, want_match = np_match(iou, valid, 0.7, 0.3, True)
  np.testing.assert_array_equal(np.asarray(labels), want)
  np.testing.assert_array_equal(np.asarray(matched)[want == 1], want_match[want == 1])
  assert (want == 1).sum() >= valid.sum() and (want == -1).any() and (want == 0).any()
  # the low-quality rule is what makes the tiny box positive
  plain, _ = np_match(iou, valid, 0.7, 0.3, False)
  assert (want == 1).sum() > (plain == 1).sum()
  # no valid ground truth: every anchor negative
  none, _ = targets.match(jnp.full((5, 3), -1.0), 0.7, 0.3, True)
  np.testing.assert_array_equal(np.asarray(none), 0)


def test_rpn_sampling_counts_and_uniformity():
  rng = np.random.RandomState(1)
  anchors, gt, valid = tiny_scene(rng)
  iou = np.asarray(box_ops.pairwise_iou(jnp.asarray(anchors), jnp.asarray(gt), b_valid=jnp.asarray(valid)))
  want, want_match = np_match(iou, valid, 0.7, 0.3, True)
  keys = jax.random.split(jax.random.key(0), 300)
  run = jax.jit(jax.vmap(lambda k: targets.rpn_targets(k, jnp.asarray(anchors), jnp.asarray(gt),
                                                        jnp.asarray(valid), num_samples=64)))
  out = jax.tree.map(np.asarray, run(keys))
  npos, nneg = (want == 1).sum(), (want == 0).sum()
  assert npos < 32 < nneg
  hits = np.zeros(len(anchors))
  for i in range(len(keys)):
    idx, obj, ok = out["index"][i], out["objectness"][i], out["valid"][i]
    assert ok.all() and len(set(idx.tolist())) == 64
    assert obj.sum() == npos  # fewer positives than the half: all taken, negatives fill the rest
    np.testing.assert_array_equal(want[idx], obj.astype(int))
    pos = idx[obj]
    deltas = box_ops.encode(jnp.asarray(gt[want_match[pos]]), jnp.asarray(anchors[pos]))
    np.testing.assert_allclose(out["deltas"][i][obj], np.asarray(deltas), atol=1e-5)
    np.testing.assert_array_equal(out["deltas"][i][~obj], 0)
    hits[idx[~obj]] += 1
  # each negative is drawn with probability (64 - npos) / nneg
  rate = hits[want == 0] / len(keys)
  p = (64 - npos) / nneg
  assert abs(rate.mean() - p) < 1e-9 and np.abs(rate - p).max() < 5 * np.sqrt(p / len(keys)) + 0.02
  assert hits[want != 0].sum() == 0


def test_balanced_sample_caps_positives_and_pads():
  pos = jnp.asarray(np.arange(40) < 30)
  neg = jnp.asarray((np.arange(40) >= 30) & (np.arange(40) < 36))
  idx, is_pos, ok = targets.balanced_sample(jax.random.key(3), pos, neg, 32, 0.25)
  idx, is_pos, ok = map(np.asarray, (idx, is_pos, ok))
  assert is_pos.sum() == 8 and is_pos[:8].all()  # 25% of 32, positives first
  assert ok.sum() == 14 and ok[:14].all()  # 8 positives + all 6 negatives, then padding
  assert set(idx[8:14].tolist()) == set(range(30, 36)) and (idx[14:] == 0).all()
  assert (idx[:8] < 30).all() and len(set(idx[:8].tolist())) == 8
  # fewer candidates than slots
  idx, is_pos, ok = targets.balanced_sample(jax.random.key(4), pos[:5], neg[:5], 16, 0.5)
  assert np.asarray(ok).sum() == 5 and np.asarray(is_pos).sum() == 5


def test_sample_rois_appends_ground_truth():
  rng = np.random.RandomState(2)
  proposals = random_boxes(rng, 60, 60.0)
  pvalid = np.arange(60) < 50
  proposals[50:] = 0  # padded proposals, empty
  gt = random_boxes(rng, 4, 60.0)
  proposals[0] = gt[1] + 1.0  # IoU >= 0.5 with gt 1
  classes = np.array([3, 0, 7, 2])
  gvalid = np.array([1, 1, 1, 0], bool)
  out = jax.tree.map(np.asarray, jax.jit(lambda k: targets.sample_rois(
      k, jnp.asarray(proposals), jnp.asarray(pvalid), jnp.asarray(gt), jnp.asarray(classes),
      jnp.asarray(gvalid), num_samples=32))(jax.random.key(5)))
  cand = np.concatenate([proposals, gt])
  cvalid = np.concatenate([pvalid, gvalid])
  iou = np.where(cvalid[:, None] & gvalid[None], np_iou(cand, gt), -1.0)
  labels, arg = np_match(iou, gvalid, 0.5, 0.5, False)
  fg = cvalid & (labels == 1)
  bg = cvalid & (labels == 0)
  assert fg.sum() >= 4 and fg[60:63].all() and not fg[63]  # every valid gt is its own foreground
  assert out["valid"].all() and out["foreground"].sum() == min(8, fg.sum())
  f = out["foreground"]
  for box, lab, gi in zip(out["boxes"][f], out["labels"][f], out["gt_index"][f]):
    k = np.flatnonzero((cand == box).all(1) & fg)
    assert len(k) and arg[k[0]] == gi and lab == classes[gi] + 1
  for box in out["boxes"][~f]:
    assert ((cand == box).all(1) & bg).any()
  np.testing.assert_array_equal(out["labels"][~f], 0)
  want = box_ops.encode(jnp.asarray(gt[out["gt_index"][f]]), jnp.asarray(out["boxes"][f]), (10, 10, 5, 5))
  np.testing.assert_allclose(out["deltas"][f], np.asarray(want), atol=1e-4)
  assert np.isfinite(out["deltas"]).all()


def np_propose(objectness, deltas, anchors, size, pre, post, thr):
  """torchvision's filter_proposals for one image, in numpy with the numpy NMS."""
  from tests.test_detection_ops import np_nms
  boxes, scores, levels = [], [], []
  for l, (o, d, a) in enumerate(zip(objectness, deltas, anchors)):
    idx = np.argsort(-o, kind="stable")[:pre]
    b = np.array(box_ops.decode(jnp.asarray(d[idx]), jnp.asarray(a[idx])))
    b[:, 0::2] = b[:, 0::2].clip(0, size[1])
    b[:, 1::2] = b[:, 1::2].clip(0, size[0])
    boxes.append(b)
    scores.append(1 / (1 + np.exp(-o[idx].astype(np.float64))))
    levels.append(np.full(len(idx), l))
  b, s, lv = np.concatenate(boxes), np.concatenate(scores), np.concatenate(levels)
  ok = ((b[:, 2] - b[:, 0]) >= 1e-3) & ((b[:, 3] - b[:, 1]) >= 1e-3)
  keep = []
  for l in range(len(anchors)):
    keep += np_nms(b, s, ok & (lv == l), thr)
  keep = sorted(keep, key=lambda i: (-s[i], i))[:post]
  return b[keep], s[keep]


def test_proposals_equal_reference():
  from jaxseg.models.detection import proposals
  rng = np.random.RandomState(3)
  levels = anchor_ops.pyramid_anchors((64, 128), strides=(16, 32, 64), sizes=(32, 64, 128))
  obj = [rng.randn(len(a)).astype(np.float32) for a in levels]
  obj[0][:5] = 3.0  # ties within a level
  deltas = [(0.3 * rng.randn(len(a), 4)).astype(np.float32) for a in levels]
  deltas[1][:, 2] = -20  # widths collapse to ~0: dropped by the min-size rule
  size = (60, 100)  # the image inside the canvas
  run = jax.jit(lambda o, d: proposals.propose(o, d, levels, size, 40, 30))
  b, s, ok = map(np.asarray, run([jnp.asarray(o) for o in obj], [jnp.asarray(d) for d in deltas]))
  want_b, want_s = np_propose(obj, deltas, levels, size, 40, 30, 0.7)
  assert ok.sum() == len(want_b) and not ok[len(want_b):].any()
  np.testing.assert_allclose(b[:len(want_b)], want_b, atol=1e-4)
  np.testing.assert_allclose(s[:len(want_b)], want_s, atol=1e-6)
  assert b[:, 2].max() <= 100 and b[:, 3].max() <= 60


def test_mask_targets_crop_the_matched_mask():
  from tests.test_detection_ops import np_roi_align
  rng = np.random.RandomState(4)
  masks = (rng.uniform(size=(3, 16, 12)) > 0.5).astype(np.uint8)  # canvas 64 x 48 at stride 4
  rois = np.array([[0, 0, 48, 64], [4.5, 8.2, 30.1, 40.7], [20, 30, 21, 31]], np.float32)
  gt_index = np.array([2, 0, 1])
  got = np.asarray(jax.jit(lambda m, r, g: targets.mask_targets(m, r, g, mask_stride=4, size=7))(
      jnp.asarray(masks), jnp.asarray(rois), jnp.asarray(gt_index)))
  want = np_roi_align(masks[..., None].astype(np.float32), rois, gt_index, 7, 0.25, 2, False)[..., 0]
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert got.shape == (3, 7, 7) and 0 <= got.min() and got.max() <= 1 and 0 < got.mean() < 1
