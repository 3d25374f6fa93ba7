"""Boxes: areas, pairwise IoU with padding, Faster R-CNN delta encoding, clipping.

Boxes are (..., 4) float xyxy in pixels, area (x2 - x1) * (y2 - y1) with no "+1" (the
convention of torchvision and detectron2, and of COCO's evaluator).
"""
from __future__ import annotations

import math

import jax.numpy as jnp

# The largest log-scale a decoded box may grow by, log(1000 / 16), as torchvision's and
# detectron2's box coders clamp dw, dh: a box at most 1000/16 times its anchor.
SCALE_CLAMP = math.log(1000.0 / 16)
RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
BOX_HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def area(boxes):
  return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def pairwise_iou(a, b, a_valid=None, b_valid=None):
  """(N, 4), (M, 4) -> (N, M) intersection over union.

  Pairs with a padded box (`a_valid` (N,) / `b_valid` (M,) False) get IoU -1, below
  every threshold and every real IoU, so they are never matched, kept or suppressed.
  Two empty boxes have IoU 0 (the union is guarded, not divided by zero).
  """
  lt = jnp.maximum(a[:, None, :2], b[None, :, :2])
  rb = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
  wh = jnp.clip(rb - lt, 0)
  inter = wh[..., 0] * wh[..., 1]
  union = area(a)[:, None] + area(b)[None, :] - inter
  iou = jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)
  if a_valid is not None:
    iou = jnp.where(a_valid[:, None], iou, -1.0)
  if b_valid is not None:
    iou = jnp.where(b_valid[None, :], iou, -1.0)
  return iou


def _centre_size(boxes):
  w = boxes[..., 2] - boxes[..., 0]
  h = boxes[..., 3] - boxes[..., 1]
  return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode(boxes, reference, weights=RPN_WEIGHTS):
  """Regression targets of `boxes` w.r.t. `reference` (anchors or proposals), both (..., 4):

    dx = wx (x - x_a) / w_a,  dy = wy (y - y_a) / h_a,  dw = ww log(w / w_a),  dh = wh log(h / h_a)

  (Faster R-CNN Eq. 2) with (x, y) the centre; weights (1, 1, 1, 1) for the RPN and
  (10, 10, 5, 5) for the box head. Reference boxes must have positive width and height.
  """
  wx, wy, ww, wh = weights
  x, y, w, h = _centre_size(boxes)
  xa, ya, wa, ha = _centre_size(reference)
  return jnp.stack([wx * (x - xa) / wa, wy * (y - ya) / ha,
                    ww * jnp.log(w / wa), wh * jnp.log(h / ha)], axis=-1)


def decode(deltas, reference, weights=RPN_WEIGHTS, scale_clamp=SCALE_CLAMP):
  """The inverse of `encode`: deltas (..., 4) applied to reference (..., 4) -> boxes xyxy.

  dw, dh are clamped to `scale_clamp` before the exponential (torchvision / detectron2),
  so a wild prediction cannot overflow.
  """
  wx, wy, ww, wh = weights
  xa, ya, wa, ha = _centre_size(reference)
  x = deltas[..., 0] / wx * wa + xa
  y = deltas[..., 1] / wy * ha + ya
  w = jnp.exp(jnp.minimum(deltas[..., 2] / ww, scale_clamp)) * wa
  h = jnp.exp(jnp.minimum(deltas[..., 3] / wh, scale_clamp)) * ha
  return jnp.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], axis=-1)


def clip(boxes, height, width):
  """Clips xyxy boxes to the image [0, width] x [0, height] (torchvision's
  clip_boxes_to_image). `height`, `width` are scalars or arrays broadcastable to
  boxes.shape[:-1], e.g. (B, 1) for boxes (B, N, 4) of B images of their own sizes."""
  x = jnp.clip(boxes[..., 0::2], 0, jnp.asarray(width, boxes.dtype)[..., None])
  y = jnp.clip(boxes[..., 1::2], 0, jnp.asarray(height, boxes.dtype)[..., None])
  return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def large_enough(boxes, min_size):
  """(...,) True where both sides are >= min_size (torchvision's remove_small_boxes, as a
  mask instead of a change of length)."""
  return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)
