"""OneFormer's inference for each task (Jain et al. 2023, Sec. 3; Mask2Former's
post-processing), from the per-query outputs of `OneFormer`:

  class_logits (B, N, K + 1)   the last class is "no object"
  mask_logits  (B, h, w, N)    at 1/4 of the input canvas (the model's layout)

Every function first resizes the mask logits bilinearly (half-pixel centres, no
antialiasing) to `size`, the (H, W) of the input canvas, and only then takes the sigmoid,
as the authors do (F.interpolate of the logits to the padded input, then
sem_seg_postprocess; cropping the padding and resizing to the original image is the
caller's business, as for every jaxseg model). p = softmax(class_logits), m = sigmoid(M).

  semantic   S(h, w, c) = sum_q p_q(c) m_q(h, w), c < K               -> (B, H, W, K)

  panoptic   keep query q iff argmax_c p_q(c) != no-object and max_c p_q(c) > t_object;
             each pixel goes to the kept query of largest max p_q x m_q(h, w), and is void
             unless that query's m_q >= 0.5 there. A kept query makes a segment when
               a_q = #{pixels won by q}, o_q = #{m_q >= 0.5}, s_q = #{won by q and m_q >= 0.5}
             are all > 0 and a_q / o_q >= t_overlap (0.8); in query order, a stuff query
             whose class already has a segment joins it (one segment per stuff class).

  instance   the top k of the N x K products p_q(c) (k = the test detections per image);
             where the dataset has stuff, a stuff pick is dropped after the top k (the
             authors' order: fewer than k may remain); mask = M_q > 0 (m_q > 0.5);
               score = p_q(c) x sum(m_q . mask) / (sum(mask) + 1e-6)
             box = the mask's tight box (xyxy, far edges exclusive; 0s for an empty mask).

Static shapes: `semantic_scores` and `instance_predictions` are jittable as they are;
the panoptic step is split into `panoptic_queries` (jittable: the kept queries, the
per-pixel winner and the three areas of every query) and `panoptic_segments` (numpy on
the host: the variable-length segment list and the id map, a table look-up).

The authors' test settings (configs/<dataset>/oneformer_R50_*.yaml, */swin/oneformer_swin_large_*.yaml;
MODEL.TEST.OBJECT_MASK_THRESHOLD / OVERLAP_THRESHOLD, TEST.DETECTIONS_PER_IMAGE) are
`TEST_SETTINGS`; the top k always equals the config's query count (150; 250 for the Swin-L
ADE20K and Cityscapes configs).

Where transformers' OneFormerImageProcessor (v5) differs from the authors' code, jaxseg
follows the authors:
  1. semantic: transformers computes S at the masks' 1/4 resolution and resizes S; the
     authors resize the mask logits first (the sigmoid and the sum at full resolution).
  2. panoptic, original area: transformers counts (max p_q) x m_q >= 0.5 (the masks are
     multiplied by the scores in place before the count), the authors m_q >= 0.5.
  3. panoptic, segment pixels: transformers gives a segment every pixel its query wins;
     the authors only those where also m_q >= 0.5 (the rest is void); s_q > 0 is the
     authors' extra condition.
  4. panoptic, overlap: transformers keeps a_q / o_q > t, the authors >= t.
  5. panoptic, stuff merging: transformers merges only the classes of its
     `label_ids_to_fuse` argument (none by default), the authors every stuff class; and
     after a merge transformers numbers the next new segment from the merged one's id
     (two segments can share an id) and lists the merged query again.
  6. panoptic, resizing: transformers resizes the probabilities m_q (after the sigmoid),
     the authors the logits.
  7. instance: transformers cuts the top k into non-overlapping segments (a per-pixel
     argmax of the score-weighted *logits*, then the panoptic overlap test) scored by p_q(c)
     alone; the authors keep overlapping binary masks M_q > 0 scored p_q(c) x mask score.
  8. instance: transformers' top k is N and, with its default is_demo=True, it drops picks
     with p_q(c) <= 0.5; it keeps things only for task_type="panoptic". The authors take
     k = TEST.DETECTIONS_PER_IMAGE, no score threshold at evaluation, and things only
     whenever the dataset is panoptic, whatever the task token.
  9. instance, ADE20K: both renumber the classes to the 100 thing classes of ADE20K's
     instance split; jaxseg's classes stay indices into the dataset's categories (the
     COCO AP evaluator maps them to category ids and scores the thing classes).
Segment scores: the authors' segments carry none; here a segment's score is max p_q of
the query that opened it (transformers' per-segment score). Instances come sorted by the
class probability (the authors' top-k is unsorted; AP does not depend on the order).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.layers import resize

MASK_THRESHOLD = 0.5  # m_q >= 0.5: a query's binary mask (hard-coded in the authors' code)

# the authors' test settings per dataset (see the module docstring for the files)
TEST_SETTINGS = {
    "ade20k": {"object_mask_threshold": 0.5, "overlap_threshold": 0.8},
    "cityscapes": {"object_mask_threshold": 0.8, "overlap_threshold": 0.8},
    "coco": {"object_mask_threshold": 0.8, "overlap_threshold": 0.8},
}


def _check(class_logits, mask_logits, size):
  if class_logits.ndim != 3 or mask_logits.ndim != 4 or class_logits.shape[0] != mask_logits.shape[0] \
     or class_logits.shape[1] != mask_logits.shape[3]:
    raise ValueError(f"class_logits (B, N, K + 1) and mask_logits (B, h, w, N) disagree: "
                     f"{tuple(class_logits.shape)} and {tuple(mask_logits.shape)}")
  if class_logits.shape[2] < 2:
    raise ValueError(f"class_logits {tuple(class_logits.shape)}: needs K >= 1 classes plus no-object")
  if len(size) != 2 or min(size) < 1:
    raise ValueError(f"size: expected the (H, W) of the input canvas, got {size}")


def _upsampled(mask_logits, size):
  """(B, h, w, N) logits -> (B, H, W, N) float32 logits."""
  return resize(mask_logits.astype(jnp.float32), tuple(size))


def _isthing(isthing, num_classes):
  """(K,) bool flags (numpy, or traced under jit), checked against K."""
  isthing = jnp.asarray(isthing, bool).reshape(-1)
  if isthing.shape[0] != num_classes:
    raise ValueError(f"isthing: {isthing.shape[0]} flags for {num_classes} classes")
  return isthing


def semantic_scores(class_logits, mask_logits, size):
  """(B, H, W, K) float32: S = sum_q softmax(class)_q(c) sigmoid(M_q), no-object left out."""
  _check(class_logits, mask_logits, size)
  p = jax.nn.softmax(class_logits.astype(jnp.float32), axis=-1)[..., :-1]  # (B, N, K)
  m = jax.nn.sigmoid(_upsampled(mask_logits, size))  # (B, H, W, N)
  return jnp.einsum("bnk,bhwn->bhwk", p, m)


def panoptic_queries(class_logits, mask_logits, size, object_mask_threshold, inside=None):
  """The jittable half of panoptic inference, per image and query (all static shapes):

    "labels" (B, N) int32   argmax class (K = no object);  "scores" (B, N) its probability
    "keep" (B, N) bool      label != K and score > object_mask_threshold
    "query_map" (B, H, W) int32  the kept query that wins the pixel, -1 where no query is
                            kept or the winner's m_q < 0.5 (void)
    "mask_area", "original_area", "segment_area" (B, N) int32   a_q, o_q, s_q (0 unless kept)

  `inside` (B, H, W) bool, optional: the image's pixels of a padded canvas; the rest is
  left out as if cropped (void, counted in no area), as the authors crop before this.
  """
  _check(class_logits, mask_logits, size)
  b, n, k1 = class_logits.shape
  probs = jax.nn.softmax(class_logits.astype(jnp.float32), axis=-1)
  scores, labels = probs.max(-1), probs.argmax(-1).astype(jnp.int32)
  keep = (labels != k1 - 1) & (scores > object_mask_threshold)
  m = jax.nn.sigmoid(_upsampled(mask_logits, size))  # (B, H, W, N)
  if inside is not None:
    m = jnp.where(inside[..., None], m, 0.0)  # below 0.5: no area, void
  weighted = jnp.where(keep[:, None, None, :], scores[:, None, None, :] * m, -1.0)  # dropped queries never win
  winner = jnp.argmax(weighted, axis=-1).astype(jnp.int32)  # (B, H, W)
  in_winner = jnp.take_along_axis(m, winner[..., None], axis=-1)[..., 0] >= MASK_THRESHOLD
  won = (winner[..., None] == jnp.arange(n)) & keep[:, None, None, :]  # (B, H, W, N)
  if inside is not None:
    won &= inside[..., None]
  mask_area = won.sum((1, 2), dtype=jnp.int32)
  original_area = ((m >= MASK_THRESHOLD) & keep[:, None, None, :]).sum((1, 2), dtype=jnp.int32)
  segment_area = (won & in_winner[..., None]).sum((1, 2), dtype=jnp.int32)
  query_map = jnp.where(in_winner & keep.any(-1)[:, None, None], winner, -1)
  return {"labels": labels, "scores": scores, "keep": keep, "query_map": query_map,
          "mask_area": mask_area, "original_area": original_area, "segment_area": segment_area}


def panoptic_segments(queries, isthing, overlap_threshold):
  """The host half: `panoptic_queries`' outputs (numpy or device arrays) -> numpy

    "panoptic" (B, H, W) int32   segment ids 1..S in query order, 0 = void
    "panoptic_classes" (B, N) int32   the class of segment k at [k - 1], -1 past S
    "panoptic_scores" (B, N) float32  its score (0 past S)
    "segments"   per image [{"id", "category", "isthing", "score"}]

  the first two in the form jaxseg.panoptic_evaluators' PanopticQualityEvaluator takes.
  `isthing` (K,) bool: which classes are things (the others' queries merge per class).
  """
  q = {name: np.asarray(v) for name, v in queries.items()}
  b, n = q["labels"].shape
  isthing = np.asarray(isthing, bool).reshape(-1)
  ids = np.zeros(q["query_map"].shape, np.int32)
  classes, scores = np.full((b, n), -1, np.int32), np.zeros((b, n), np.float32)
  segments = []
  for i in range(b):
    table = np.zeros(n + 1, np.int32)  # query + 1 -> segment id (query -1: void)
    stuff, found = {}, []
    for j in np.flatnonzero(q["keep"][i]):
      a, o, s = (int(q[f"{name}_area"][i, j]) for name in ("mask", "original", "segment"))
      if a == 0 or o == 0 or s == 0 or a / o < overlap_threshold:
        continue
      c = int(q["labels"][i, j])
      if c >= len(isthing):
        raise ValueError(f"isthing: {len(isthing)} flags, but query {j} of image {i} predicts class {c}")
      if not isthing[c] and c in stuff:  # one segment per stuff class
        table[j + 1] = stuff[c]
        continue
      table[j + 1] = len(found) + 1
      if not isthing[c]:
        stuff[c] = len(found) + 1
      found.append({"id": len(found) + 1, "category": c, "isthing": bool(isthing[c]),
                    "score": float(q["scores"][i, j])})
    ids[i] = table[q["query_map"][i] + 1]
    classes[i, :len(found)] = [f["category"] for f in found]
    scores[i, :len(found)] = [f["score"] for f in found]
    segments.append(found)
  return {"panoptic": ids, "panoptic_classes": classes, "panoptic_scores": scores, "segments": segments}


def panoptic_inference(class_logits, mask_logits, size, isthing, object_mask_threshold, overlap_threshold):
  """Both halves at once (the jittable one under jax.jit): see panoptic_segments."""
  queries = jax.jit(panoptic_queries, static_argnums=(2, 3))(class_logits, mask_logits, tuple(size),
                                                             float(object_mask_threshold))
  return panoptic_segments(jax.device_get(queries), isthing, overlap_threshold)


def mask_boxes(masks):
  """(B, H, W, k) bool -> (B, k, 4) float32 xyxy tight boxes, far edges exclusive (a mask
  of pixel (y, x) alone: (x, y, x + 1, y + 1)); an empty mask gets (0, 0, 0, 0)."""
  def span(present):  # (B, L, k) -> first index, last index + 1
    length = present.shape[1]
    first = jnp.argmax(present, axis=1)
    last = length - jnp.argmax(present[:, ::-1], axis=1)
    return first, last
  xs, ys = masks.any(1), masks.any(2)  # (B, W, k), (B, H, k)
  (x0, x1), (y0, y1) = span(xs), span(ys)
  boxes = jnp.stack([x0, y0, x1, y1], -1).astype(jnp.float32)
  return jnp.where(xs.any(1)[..., None], boxes, 0.0)


def instance_predictions(class_logits, mask_logits, size, top_k, isthing=None, inside=None):
  """Jittable; the outputs jaxseg.panoptic_evaluators' CocoAPEvaluator takes:

    "instance_masks" (B, k, H, W) bool, "instance_classes" (B, k) int32,
    "instance_scores" (B, k) float32, "instance_boxes" (B, k, 4) xyxy, "instance_valid" (B, k)

  and "instance_class_scores" (B, k): p_q(c) alone (what a demo's score threshold reads).

  `top_k` (static): k, the detections per image; `isthing` (K,) bool or None: with it
  (a dataset with stuff), stuff picks are not valid; without, every pick is. `inside`
  (B, H, W) bool, optional: the image's pixels of a padded canvas; masks, their scores
  and boxes leave the rest out (as if cropped).
  """
  _check(class_logits, mask_logits, size)
  b, n, k1 = class_logits.shape
  k = k1 - 1
  if not 1 <= top_k <= n * k:
    raise ValueError(f"top_k: {top_k} detections from {n} queries x {k} classes")
  p = jax.nn.softmax(class_logits.astype(jnp.float32), axis=-1)[..., :-1]
  class_scores, flat = jax.lax.top_k(p.reshape(b, n * k), top_k)  # over queries x classes
  query, label = flat // k, (flat % k).astype(jnp.int32)
  picked = jnp.take_along_axis(mask_logits, query[:, None, None, :], axis=-1)  # (B, h, w, k) before resizing
  logits = _upsampled(picked, size)
  masks = logits > 0  # sigmoid > 0.5
  if inside is not None:
    masks &= inside[..., None]
  mask_score = (jax.nn.sigmoid(logits) * masks).sum((1, 2)) / (masks.sum((1, 2)) + 1e-6)
  valid = jnp.ones_like(label, bool) if isthing is None else _isthing(isthing, k)[label]
  return {"instance_masks": masks.transpose(0, 3, 1, 2), "instance_classes": label,
          "instance_scores": class_scores * mask_score, "instance_boxes": mask_boxes(masks),
          "instance_valid": valid, "instance_class_scores": class_scores}
