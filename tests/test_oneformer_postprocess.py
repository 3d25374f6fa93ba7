"""OneFormer's post-processing against transformers' OneFormerImageProcessor where the two
implementations agree, and against a transcription of the authors' semantic_inference /
panoptic_inference / instance_inference (SHI-Labs/OneFormer, oneformer/oneformer_model.py;
detectron2 does not install here) where they differ (the module docstring's list).
Random logits with non-zero scales; the tests check that no value sits at a threshold or
in a tie of the per-pixel argmax.
"""
import types

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxseg.models.heads.oneformer import postprocess as P
from tests import torch_reference as R

transformers = pytest.importorskip("transformers", reason="the reference is transformers' OneFormer processor")
from transformers.models.oneformer.image_processing_pil_oneformer import OneFormerImageProcessorPil  # noqa: E402

ISTHING = np.array([True, True, True, False, False])  # classes 3 and 4 are stuff


def processor():
  proc = OneFormerImageProcessorPil()
  proc.metadata = {"thing_ids": [int(c) for c in np.flatnonzero(ISTHING)]}
  proc.class_info_file = "shapes"  # not "ade20k": no renumbering of the classes
  return proc


def torch_outputs(class_logits, mask_logits):
  """transformers' model output fields from ours ((B, N, K + 1), (B, h, w, N))."""
  return types.SimpleNamespace(class_queries_logits=torch.from_numpy(class_logits),
                               masks_queries_logits=torch.from_numpy(mask_logits).permute(0, 3, 1, 2).contiguous())


def upsampled(mask_logits, size):
  """The authors' F.interpolate of the mask logits: (B, h, w, N) -> (B, N, H, W) torch."""
  m = torch.from_numpy(mask_logits).permute(0, 3, 1, 2)
  return F.interpolate(m, size=size, mode="bilinear", align_corners=False)


# ------------------------------------------- the authors' code, transcribed to numpy
def authors_panoptic(mask_cls, mask_pred, isthing, object_mask_threshold, overlap_threshold):
  """panoptic_inference of one image: mask_cls (N, K + 1), mask_pred (N, H, W) logits."""
  probs = torch.softmax(mask_cls, -1)
  scores, labels = probs.max(-1)
  masks = mask_pred.sigmoid()
  keep = labels.ne(mask_cls.shape[-1] - 1) & (scores > object_mask_threshold)
  cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], masks[keep]
  seg = torch.zeros(masks.shape[-2:], dtype=torch.int32)
  segments, stuff, current = [], {}, 0
  if cur_masks.shape[0] == 0:
    return seg.numpy(), segments
  ids = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
  for k in range(cur_classes.shape[0]):
    c = cur_classes[k].item()
    mask_area, original_area = (ids == k).sum().item(), (cur_masks[k] >= 0.5).sum().item()
    mask = (ids == k) & (cur_masks[k] >= 0.5)
    if mask_area > 0 and original_area > 0 and mask.sum().item() > 0:
      if mask_area / original_area < overlap_threshold:
        continue
      if not isthing[c]:
        if c in stuff:
          seg[mask] = stuff[c]
          continue
        stuff[c] = current + 1
      current += 1
      seg[mask] = current
      segments.append({"id": current, "category": c, "isthing": bool(isthing[c]), "score": cur_scores[k].item()})
  return seg.numpy(), segments


def authors_instances(mask_cls, mask_pred, isthing, top_k):
  """instance_inference of one image (panoptic_on, detection_on): the kept instances."""
  num_classes = mask_cls.shape[-1] - 1
  scores = torch.softmax(mask_cls, -1)[:, :-1]
  labels = torch.arange(num_classes).unsqueeze(0).repeat(mask_cls.shape[0], 1).flatten(0, 1)
  scores_per_image, topk = scores.flatten(0, 1).topk(top_k, sorted=False)
  labels_per_image = labels[topk]
  mask_pred = mask_pred[topk // num_classes]
  keep = torch.tensor([bool(isthing[c]) for c in labels_per_image.tolist()], dtype=torch.bool)
  scores_per_image, labels_per_image, mask_pred = scores_per_image[keep], labels_per_image[keep], mask_pred[keep]
  masks = (mask_pred > 0).float()
  boxes = torch.zeros(masks.shape[0], 4)  # detectron2's BitMasks.get_bounding_boxes
  for i, m in enumerate(masks.bool()):
    x, y = torch.where(m.any(0))[0], torch.where(m.any(1))[0]
    if len(x) and len(y):
      boxes[i] = torch.tensor([x[0], y[0], x[-1] + 1, y[-1] + 1], dtype=torch.float32)
  mask_scores = (mask_pred.sigmoid().flatten(1) * masks.flatten(1)).sum(1) / (masks.flatten(1).sum(1) + 1e-6)
  return {"masks": masks.bool().numpy(), "classes": labels_per_image.numpy(),
          "class_scores": scores_per_image.numpy(), "scores": (scores_per_image * mask_scores).numpy(),
          "boxes": boxes.numpy()}


def argmax_margin(mask_cls, mask_pred, object_mask_threshold):
  """The smallest gap between the two best score x probability values of the kept queries
  over the pixels, and the smallest |m - 0.5| (no ties, nothing at the mask threshold)."""
  scores, labels = torch.softmax(mask_cls, -1).max(-1)
  keep = labels.ne(mask_cls.shape[-1] - 1) & (scores > object_mask_threshold)
  weighted = (scores[keep].view(-1, 1, 1) * mask_pred[keep].sigmoid()).sort(0, descending=True).values
  gap = (weighted[0] - weighted[1]).min().item() if weighted.shape[0] > 1 else 1.0
  return gap, (mask_pred.sigmoid() - 0.5).abs().min().item()


# ------------------------------------------------------------------------- semantic
def test_semantic_equals_transformers_at_mask_size_and_the_authors_upsampled():
  rng = np.random.RandomState(0)
  class_logits = (3 * rng.randn(2, 7, 6)).astype(np.float32)
  mask_logits = (3 * rng.randn(2, 8, 12, 7)).astype(np.float32)
  semantic = jax.jit(P.semantic_scores, static_argnums=2)
  outputs = torch_outputs(class_logits, mask_logits)

  theirs = OneFormerImageProcessorPil().post_process_semantic_segmentation(outputs, return_segmentation_scores=True)
  R.report("semantic scores at 1/4", semantic(class_logits, mask_logits, (8, 12)),
           np.stack([t.segmentation_scores.permute(1, 2, 0).numpy() for t in theirs]))

  size = (32, 48)  # the input canvas: mask logits resized first, as the authors do
  p = torch.softmax(torch.from_numpy(class_logits), -1)[..., :-1]
  authors = torch.einsum("bqc,bqhw->bhwc", p, upsampled(mask_logits, size).sigmoid()).numpy()
  ours = np.asarray(semantic(class_logits, mask_logits, size))
  R.report("semantic scores at the input size", ours, authors)
  resized_after = OneFormerImageProcessorPil().post_process_semantic_segmentation(
      outputs, target_sizes=[size] * 2, return_segmentation_scores=True)
  resized_after = np.stack([t.segmentation_scores.permute(1, 2, 0).numpy() for t in resized_after])
  print(f"\n[transformers' scores resized after the sum] max diff to the authors' {np.abs(resized_after - authors).max():.3f}")
  assert np.abs(resized_after - authors).max() > 1e-2  # difference 1 of the module docstring


# ------------------------------------------------------------------------- panoptic
def designed_panoptic(seed):
  """One image where transformers and the authors agree: near-binary masks (|logit| >= 6,
  so the score-scaled count of transformers' original area is the authors'), every pixel
  covered by a kept query, no area ratio at 0.8, the repeated stuff class last."""
  rng = np.random.RandomState(seed)
  h, w, k = 16, 20, 5
  # (label (5 = no object), score, rows, cols) per query
  design = [(0, 0.97, (9, 13), (1, 5)), (1, 0.95, (9, 14), (10, 15)), (5, 0.9, (0, 8), (0, 20)),
            (3, 0.80, (0, 8), (0, 20)), (0, 0.50, (0, 16), (0, 20)), (2, 0.91, (0, 3), (17, 20)),
            (4, 0.82, (8, 16), (0, 20)), (1, 0.90, (12, 16), (13, 19)), (2, 0.85, (10, 14), (2, 6)),
            (3, 0.93, (0, 2), (0, 10))]
  class_logits = (0.3 * rng.randn(1, len(design), k + 1)).astype(np.float64)
  mask_logits = np.empty((1, h, w, len(design)))
  for q, (label, score, rows, cols) in enumerate(design):
    others = np.exp(np.delete(class_logits[0, q], label)).sum()
    class_logits[0, q, label] = np.log(score / (1 - score) * others)  # softmax gives `score`
    inside = np.zeros((h, w), bool)
    inside[slice(*rows), slice(*cols)] = True
    mask_logits[0, ..., q] = np.where(inside, 1, -1) * rng.uniform(6, 10, (h, w))
  return class_logits.astype(np.float32), mask_logits.astype(np.float32)


def test_panoptic_equals_transformers_where_they_agree():
  class_logits, mask_logits = designed_panoptic(1)
  queries = jax.jit(P.panoptic_queries, static_argnums=(2, 3))(class_logits, mask_logits, (16, 20), 0.6)
  ours = P.panoptic_segments(queries, ISTHING, 0.8)
  theirs = processor().post_process_panoptic_segmentation(
      torch_outputs(class_logits, mask_logits), threshold=0.6, overlap_mask_area_threshold=0.8,
      label_ids_to_fuse={3, 4})[0]
  np.testing.assert_array_equal(ours["panoptic"][0], theirs["segmentation"].numpy())
  first = {}
  for s in theirs["segments_info"]:  # transformers lists a merged query again under the same id
    first.setdefault(s["id"], s)
  assert [(s["id"], s["category"], round(s["score"], 6)) for s in ours["segments"][0]] == \
         [(s["id"], s["label_id"], s["score"]) for s in first.values()]
  # what the design exercises: a dropped overlap, a merged stuff class, void pixels, no 0.8 ratio
  q = jax.device_get(queries)
  ratio = q["mask_area"][0] / np.maximum(q["original_area"][0], 1)
  assert 0 < ratio[8] < 0.8 and 0.8 < ratio[7] < 1 and not np.any(ratio == 0.8)
  assert len(theirs["segments_info"]) == len(first) + 1  # query 9 joined query 3's segment
  assert ours["panoptic_classes"][0].tolist()[:len(first)] == [0, 1, 3, 2, 1] and (ours["panoptic"] == 0).any()
  assert ours["panoptic_classes"][0, len(first):].tolist() == [-1] * (10 - len(first))


def blob_logits(seed, b=2, h=8, w=10, n=12):
  """Random class logits leaning to the stuff classes 3 and 4 (so that stuff merges), and
  noisy round mask blobs on a 3 x 4 grid of centres with random radii (so that queries
  own regions, overlap and sometimes lose most of their mask)."""
  rng = np.random.RandomState(seed)
  class_logits = (2 * rng.randn(b, n, 6)).astype(np.float32)
  labels = rng.choice([0, 1, 2, 3, 3, 4, 4], (b, n))
  np.put_along_axis(class_logits, labels[..., None], np.take_along_axis(class_logits, labels[..., None], -1) + 3, -1)
  yy, xx = np.mgrid[:h, :w]
  mask_logits = np.empty((b, h, w, n), np.float32)
  for i in range(b):
    for q in range(n):
      cy, cx = (q // 4 + rng.uniform(0.2, 0.8)) * h / 3, (q % 4 + rng.uniform(0.2, 0.8)) * w / 4
      r = rng.uniform(1.5, 3)
      mask_logits[i, ..., q] = 4 * (1 - ((yy - cy) ** 2 + (xx - cx) ** 2) / r ** 2) + 0.5 * rng.randn(h, w)
  return class_logits, mask_logits


def test_panoptic_follows_the_authors_where_transformers_differs():
  class_logits, mask_logits = blob_logits(1)
  size = (32, 40)
  queries = jax.jit(P.panoptic_queries, static_argnums=(2, 3))(class_logits, mask_logits, size, 0.5)
  ours = P.panoptic_segments(queries, ISTHING, 0.8)
  m = upsampled(mask_logits, size)
  for b in range(2):
    gap, margin = argmax_margin(torch.from_numpy(class_logits[b]), m[b], 0.5)
    assert gap > 1e-5 and margin > 1e-5, (gap, margin)
    seg, segments = authors_panoptic(torch.from_numpy(class_logits[b]), m[b], ISTHING, 0.5, 0.8)
    np.testing.assert_array_equal(ours["panoptic"][b], seg)
    assert [{**s, "score": round(s["score"], 5)} for s in ours["segments"][b]] == \
           [{**s, "score": round(s["score"], 5)} for s in segments]
    assert ours["panoptic_classes"][b, :len(segments)].tolist() == [s["category"] for s in segments]
  q = jax.device_get(queries)
  segment_queries = (q["keep"] & (q["segment_area"] > 0) & (q["mask_area"] >= 0.8 * q["original_area"])).sum()
  assert sum(map(len, ours["segments"])) == 7 and segment_queries == 8  # one stuff query merged
  assert (ours["panoptic"] == 0).any() and (q["keep"] & (q["mask_area"] < 0.8 * q["original_area"])).any()

  # differences 2-5: at the masks' resolution, transformers (fusing every stuff class) disagrees
  low = P.panoptic_inference(class_logits, mask_logits, (8, 10), ISTHING, 0.5, 0.8)
  theirs = processor().post_process_panoptic_segmentation(torch_outputs(class_logits, mask_logits), threshold=0.5,
                                                          label_ids_to_fuse={3, 4})
  differ = [int((low["panoptic"][b] != theirs[b]["segmentation"].numpy()).sum()) for b in range(2)]
  print(f"\n[panoptic ids at 1/4] pixels where transformers differs from the authors: {differ} of {8 * 10} each")
  assert sum(differ) > 0
  for b in range(2):  # the authors' own code at that resolution gives ours
    seg, _ = authors_panoptic(torch.from_numpy(class_logits[b]), torch.from_numpy(mask_logits[b]).permute(2, 0, 1),
                              ISTHING, 0.5, 0.8)
    np.testing.assert_array_equal(low["panoptic"][b], seg)


def test_panoptic_without_kept_queries_is_void():
  class_logits = np.zeros((1, 3, 6), np.float32)
  class_logits[..., -1] = 5.0  # every query says no object
  mask_logits = np.random.RandomState(0).randn(1, 4, 4, 3).astype(np.float32)
  out = P.panoptic_inference(class_logits, mask_logits, (8, 8), ISTHING, 0.8, 0.8)
  assert out["panoptic"].shape == (1, 8, 8) and not out["panoptic"].any() and out["segments"] == [[]]


# ------------------------------------------------------------------------- instance
def test_instances_follow_the_authors_and_transformers_picks():
  class_logits, mask_logits = blob_logits(3)
  size = (32, 40)
  instances = jax.jit(P.instance_predictions, static_argnums=(2, 3))
  ours = jax.device_get(instances(class_logits, mask_logits, size, 12, ISTHING))
  m = upsampled(mask_logits, size)
  assert (m.sigmoid() - 0.5).abs().min() > 1e-5
  for b in range(2):
    ref = authors_instances(torch.from_numpy(class_logits[b]), m[b], ISTHING, 12)
    order = np.argsort(-ref["class_scores"])  # the authors' top-k is unsorted, ours sorted
    valid = ours["instance_valid"][b]
    assert valid.sum() == len(order) > 0 and not valid.all()  # stuff picks dropped after the top k
    np.testing.assert_array_equal(ours["instance_classes"][b][valid], ref["classes"][order])
    np.testing.assert_array_equal(ours["instance_masks"][b][valid], ref["masks"][order])
    np.testing.assert_array_equal(ours["instance_boxes"][b][valid], ref["boxes"][order])
    R.report(f"instance scores, image {b}", ours["instance_scores"][b][valid], ref["scores"][order])
    R.report(f"instance class scores, image {b}", ours["instance_class_scores"][b][valid], ref["class_scores"][order])
  overlap = ours["instance_masks"][0][ours["instance_valid"][0]].sum(0)
  assert overlap.max() > 1  # overlapping masks (transformers' are disjoint: difference 7)

  # transformers' picks (top N, things for the panoptic task, no demo threshold) at 1/4: each
  # segment it keeps is one of ours, scored by the class probability alone (difference 7)
  low = jax.device_get(instances(class_logits, mask_logits, (8, 10), 12, ISTHING))
  theirs = processor().post_process_instance_segmentation(torch_outputs(class_logits, mask_logits),
                                                          task_type="panoptic", is_demo=False)
  for b in range(2):
    picks = {(int(c), round(float(s), 6)) for c, s, v in zip(low["instance_classes"][b], low["instance_class_scores"][b],
                                                             low["instance_valid"][b]) if v}
    kept = [(s["label_id"], s["score"]) for s in theirs[b]["segments_info"]]
    assert kept and set(kept) <= picks, (kept, picks)


def test_mask_boxes_far_edges_and_empty_masks():
  masks = np.zeros((1, 5, 6, 3), bool)
  masks[0, 2, 3, 0] = True  # one pixel
  masks[0, 1:4, 0:6, 1] = True  # the full width
  boxes = np.asarray(P.mask_boxes(masks))
  np.testing.assert_array_equal(boxes[0], [[3, 2, 4, 3], [0, 1, 6, 4], [0, 0, 0, 0]])


def test_bad_inputs_name_the_shapes():
  c, m = np.zeros((1, 4, 6), np.float32), np.zeros((1, 3, 3, 5), np.float32)
  with pytest.raises(ValueError, match=r"\(1, 4, 6\) and \(1, 3, 3, 5\)"):
    P.semantic_scores(c, m, (6, 6))
  with pytest.raises(ValueError, match="top_k: 30 detections from 4 queries x 5 classes"):
    P.instance_predictions(c, m[..., :4], (6, 6), 30)
  with pytest.raises(ValueError, match="isthing: 3 flags for 5 classes"):
    P.instance_predictions(c, m[..., :4], (6, 6), 4, isthing=[True, False, True])
  with pytest.raises(ValueError, match="size"):
    P.panoptic_queries(c, m[..., :4], (6,), 0.5)


# ------------------------------------------------------------ cut to the image
def test_a_padded_canvas_cut_to_the_image_equals_the_authors_crop():
  """`inside` (the image's pixels of a padded canvas) gives on the image what the authors
  get from the mask logits resized to the padded canvas and cropped to the image, and
  nothing outside: void panoptic pixels, no instance pixel or box there."""
  class_logits, mask_logits = blob_logits(1)
  size, image = (32, 40), [(20, 40), (32, 23)]  # one image cut at the bottom, one at the right
  inside = np.zeros((2, *size), bool)
  for b, (h, w) in enumerate(image):
    inside[b, :h, :w] = True
  queries = jax.jit(P.panoptic_queries, static_argnums=(2, 3))(class_logits, mask_logits, size, 0.5, inside)
  ours = P.panoptic_segments(queries, ISTHING, 0.8)
  instances = jax.device_get(jax.jit(P.instance_predictions, static_argnums=(2, 3))(
      class_logits, mask_logits, size, 12, ISTHING, inside))
  m = upsampled(mask_logits, size)
  segments = 0
  for b, (h, w) in enumerate(image):
    crop = m[b][:, :h, :w]
    gap, margin = argmax_margin(torch.from_numpy(class_logits[b]), crop, 0.5)
    assert gap > 1e-5 and margin > 1e-5, (gap, margin)
    seg, want = authors_panoptic(torch.from_numpy(class_logits[b]), crop, ISTHING, 0.5, 0.8)
    np.testing.assert_array_equal(ours["panoptic"][b][:h, :w], seg)
    assert not ours["panoptic"][b][~inside[b]].any()
    assert [s["category"] for s in ours["segments"][b]] == [s["category"] for s in want]
    segments += len(want)
    ref = authors_instances(torch.from_numpy(class_logits[b]), crop, ISTHING, 12)
    order, valid = np.argsort(-ref["class_scores"]), instances["instance_valid"][b]
    masks = instances["instance_masks"][b][valid]
    np.testing.assert_array_equal(masks[:, :h, :w], ref["masks"][order])
    assert not masks[:, ~inside[b]].any()
    np.testing.assert_array_equal(instances["instance_boxes"][b][valid], ref["boxes"][order])
    R.report(f"cut instance scores, image {b}", instances["instance_scores"][b][valid], ref["scores"][order])
  uncut = P.panoptic_segments(jax.jit(P.panoptic_queries, static_argnums=(2, 3))(class_logits, mask_logits, size, 0.5),
                              ISTHING, 0.8)
  assert segments > 0 and (uncut["panoptic"][~inside] != 0).any()  # the cut matters here
