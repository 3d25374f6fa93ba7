"""Anchors per FPN level, torchvision's AnchorGenerator convention.

For each level: one size s (32, 64, 128, 256, 512 on P2..P6, strides 4..64) and the
aspect ratios r = h / w in (0.5, 1, 2). The cell anchors are centred at 0,

  h = s sqrt(r),  w = s / sqrt(r),  anchor = round((-w, -h, w, h) / 2),

and are shifted to (x * stride, y * stride) for every feature-map cell (x, y): the anchor
centre is the cell's top-left corner in image pixels, not the cell centre
((x + 0.5) * stride), as in torchvision and detectron2 (offset 0.0). The order is
row-major over cells, then the ratios, which is the order of the RPN head's outputs
reshaped from (H, W, A) to (H * W * A).
"""
from __future__ import annotations

import numpy as np

STRIDES = (4, 8, 16, 32, 64)
SIZES = (32, 64, 128, 256, 512)
ASPECT_RATIOS = (0.5, 1.0, 2.0)


def cell_anchors(size, aspect_ratios=ASPECT_RATIOS):
  """(A, 4) anchors centred at the origin, one per aspect ratio (h / w)."""
  ratios = np.asarray(aspect_ratios, np.float32)
  h_ratios = np.sqrt(ratios)
  w_ratios = 1 / h_ratios
  ws, hs = w_ratios * np.float32(size), h_ratios * np.float32(size)
  return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / 2)


def grid_anchors(feature_shape, stride, size, aspect_ratios=ASPECT_RATIOS):
  """(H * W * A, 4) float32 anchors of one level with feature map (H, W)."""
  h, w = feature_shape
  ys, xs = np.meshgrid(np.arange(h, dtype=np.float32) * stride,
                       np.arange(w, dtype=np.float32) * stride, indexing="ij")
  shifts = np.stack([xs, ys, xs, ys], axis=-1).reshape(-1, 1, 4)
  return (shifts + cell_anchors(size, aspect_ratios)[None]).reshape(-1, 4).astype(np.float32)


def level_shapes(image_size, strides=STRIDES):
  """The feature-map sizes of a canvas (H, W) divisible by the largest stride."""
  h, w = image_size
  if h % strides[-1] or w % strides[-1]:
    raise ValueError(f"image size {image_size} must be divisible by the largest stride {strides[-1]}")
  return [(h // s, w // s) for s in strides]


def pyramid_anchors(image_size, strides=STRIDES, sizes=SIZES, aspect_ratios=ASPECT_RATIOS):
  """A list with one (H_l * W_l * A, 4) array per level, for a fixed canvas (H, W).

  Anchors depend only on the canvas, so they are numpy constants built once, outside jit.
  """
  if len(strides) != len(sizes):
    raise ValueError(f"one anchor size per level: {len(strides)} strides, {len(sizes)} sizes")
  return [grid_anchors(shape, stride, size, aspect_ratios)
          for shape, stride, size in zip(level_shapes(image_size, strides), strides, sizes)]
