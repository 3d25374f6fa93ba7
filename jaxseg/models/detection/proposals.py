"""RPN proposals with static shapes (torchvision's RegionProposalNetwork.filter_proposals):

  per level: the top `pre_nms_top_n` anchors by objectness -> decode their deltas
  (weights 1, 1, 1, 1) -> clip to the image -> drop boxes with a side < 1e-3 and
  probabilities below `score_threshold`;
  all levels: NMS within each level (IoU 0.7), kept by descending probability
  -> the first `post_nms_top_n` (training 2000 / 1000 per image, testing 1000 / 1000).

Scores are sigmoid probabilities, not logits, as torchvision sorts them: two logits that
saturate to the same float32 probability tie and go by index, as there.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseg.models.detection import boxes as box_ops
from jaxseg.models.detection.nms import batched_nms


def propose(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n,
            iou_threshold=0.7, score_threshold=0.0, min_size=1e-3):
  """One image. objectness: list per level of (A_l,) logits; deltas: list of (A_l, 4);
  anchors: list of (A_l, 4); image_size (height, width) of the image inside the canvas
  (scalars or 0-d arrays) -> (boxes (post_nms_top_n, 4), scores (post_nms_top_n,)
  probabilities, valid (post_nms_top_n,)). Unused slots are zero boxes, score 0."""
  if not len(objectness) == len(deltas) == len(anchors):
    raise ValueError(f"levels differ: {len(objectness)} objectness, {len(deltas)} deltas, "
                     f"{len(anchors)} anchors")
  height, width = image_size
  all_boxes, all_scores, all_levels = [], [], []
  for level, (logits, d, a) in enumerate(zip(objectness, deltas, anchors)):
    if logits.shape[0] != a.shape[0] or d.shape != a.shape:
      raise ValueError(f"level {level}: objectness {logits.shape}, deltas {d.shape}, anchors {a.shape} "
                       f"must be (A,), (A, 4), (A, 4)")
    k = min(pre_nms_top_n, logits.shape[0])
    top, index = jax.lax.top_k(logits, k)  # equal logits: the lower index first, as a stable sort
    all_boxes.append(box_ops.clip(box_ops.decode(d[index], jnp.asarray(a)[index]), height, width))
    all_scores.append(jax.nn.sigmoid(top.astype(jnp.float32)))
    all_levels.append(jnp.full((k,), level, jnp.int32))
  boxes = jax.lax.stop_gradient(jnp.concatenate(all_boxes))  # proposals carry no gradient
  scores = jax.lax.stop_gradient(jnp.concatenate(all_scores))
  levels = jnp.concatenate(all_levels)
  valid = box_ops.large_enough(boxes, min_size) & (scores >= score_threshold)
  keep, kept = batched_nms(boxes, scores, levels, valid, iou_threshold, post_nms_top_n)
  return (jnp.where(kept[:, None], boxes[keep], 0.0), jnp.where(kept, scores[keep], 0.0), kept)
