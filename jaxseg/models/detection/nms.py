"""Greedy non-maximum suppression with a fixed-size output.

Boxes are visited by descending score, ties by ascending index (a stable sort), and a box
is kept when no kept box overlaps it by IoU > threshold (strictly greater, as torchvision's
nms). The result is the first `max_output` kept boxes in that order, as indices into the
input plus a validity mask; unused slots hold index 0 and valid False. Padded inputs
(`valid` False) are never kept and suppress nothing.

The loop runs over the N candidates (one IoU row per step, O(N) memory), not over the
kept boxes, so its length is static; it stops early once `max_output` boxes are kept.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseg.models.detection.boxes import pairwise_iou


def nms(boxes, scores, valid, iou_threshold, max_output):
  """boxes (N, 4), scores (N,), valid (N,) -> (indices (max_output,) int32, valid (max_output,))."""
  n = boxes.shape[0]
  order = jnp.argsort(-scores, stable=True)  # descending score; equal scores by index
  boxes, valid = boxes[order], valid[order]

  def visit(state):
    i, count, suppressed, kept = state
    keep = valid[i] & ~suppressed[i]
    row = pairwise_iou(boxes[i][None], boxes)[0]
    suppressed = suppressed | (keep & (row > iou_threshold))
    kept = jnp.where(keep, kept.at[count].set(i), kept)
    return i + 1, count + keep, suppressed, kept

  def more(state):
    i, count, _, _ = state
    return (i < n) & (count < max_output)

  init = (jnp.int32(0), jnp.int32(0), jnp.zeros(n, bool), jnp.zeros(max_output, jnp.int32))
  _, count, _, kept = jax.lax.while_loop(more, visit, init)
  kept_valid = jnp.arange(max_output) < count
  return jnp.where(kept_valid, order[kept], 0).astype(jnp.int32), kept_valid


def batched_nms(boxes, scores, classes, valid, iou_threshold, max_output):
  """NMS within each class at once: every class's boxes are shifted by
  class * (max coordinate + 1) so that boxes of different classes never overlap
  (torchvision's batched_nms offset trick). classes (N,) int."""
  largest = jnp.max(jnp.where(valid[:, None], boxes, 0.0)) + 1
  shifted = boxes + (classes.astype(boxes.dtype) * largest)[:, None]
  return nms(shifted, scores, valid, iou_threshold, max_output)
