"""RoIAlign (Mask R-CNN) as gathers on NHWC features, torchvision's definition.

For a RoI (x1, y1, x2, y2) in image pixels, on a feature map with `spatial_scale`
(1 / stride) and offset o = 0.5 if `aligned` else 0:

  start = (x1, y1) * scale - o,   size = (x2 - x1, y2 - y1) * scale
  (aligned=False clamps the size to >= 1 pixel; aligned=True allows any size)
  bin = size / (ph, pw)

Each of the ph x pw output bins averages g x g bilinear samples at

  y = start_y + i * bin_h + (iy + 0.5) * bin_h / g,   iy = 0 .. g - 1   (and x alike)

with the bilinear rules of torchvision's kernel: a sample with y < -1 or y > H (or x) is
0; otherwise y is clamped to >= 0, and a sample at y >= H - 1 reads row H - 1 alone.

aligned=True puts pixel centres at half-integers (the "half-pixel" correction of
detectron2); torchvision's Mask R-CNN uses aligned=False with g = 2.

g is the fixed `sampling_ratio`. torchvision's adaptive rule for sampling_ratio <= 0,
g = ceil(roi size / bin count) per RoI, is not offered: its sample count depends on the
data, and a static version would have to evaluate the largest possible grid for every
RoI (hundreds of samples per bin for an image-sized RoI) and mask most of them away.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def _sample_positions(start, bin_size, bins, grid):
  """(R,) starts and bin sizes -> (R, bins * grid) sample coordinates along one axis."""
  i = jnp.arange(bins, dtype=jnp.float32)[:, None]
  k = jnp.arange(grid, dtype=jnp.float32)[None, :]
  start, bin_size = start[:, None, None], bin_size[:, None, None]
  # in the order of torchvision's float32 arithmetic, so that samples on an edge agree
  return (start + i * bin_size + (k + 0.5) * bin_size / grid).reshape(start.shape[0], -1)


def _bilinear_taps(pos, size):
  """Sample coordinates (R, S) on an axis of `size` -> low / high indices and weights,
  with weights 0 outside [-1, size]."""
  inside = (pos >= -1.0) & (pos <= size)
  pos = jnp.maximum(pos, 0.0)
  low = jnp.floor(pos).astype(jnp.int32)
  at_end = low >= size - 1
  low = jnp.where(at_end, size - 1, low)
  high = jnp.where(at_end, size - 1, low + 1)
  pos = jnp.where(at_end, low.astype(pos.dtype), pos)
  frac = pos - low
  return low, high, jnp.where(inside, 1.0 - frac, 0.0), jnp.where(inside, frac, 0.0)


def _check(boxes, image_index, sampling_ratio):
  if boxes.ndim != 2 or boxes.shape[-1] != 4 or image_index.shape != boxes.shape[:1]:
    raise ValueError(f"roi_align boxes must be (R, 4) with image_index (R,), got {boxes.shape} "
                     f"and {image_index.shape}")
  if sampling_ratio < 1:
    raise ValueError(f"sampling_ratio must be a fixed positive integer, got {sampling_ratio}")


def _align(flat, base, height, width, scale, boxes, output_size, sampling_ratio, aligned):
  """The RoIAlign of R RoIs, each on its own map inside the flat (N, C) table: rows
  base + y * width + x, with per-RoI (R,) base, height, width and scale."""
  ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
  g = sampling_ratio
  offset = 0.5 if aligned else 0.0
  boxes = boxes.astype(jnp.float32) * scale[:, None] - offset
  x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
  roi_w, roi_h = x2 - x1, y2 - y1
  if not aligned:  # torchvision: degenerate RoIs become one pixel wide
    roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
  ys = _sample_positions(y1, roi_h / ph, ph, g)  # (R, ph * g)
  xs = _sample_positions(x1, roi_w / pw, pw, g)  # (R, pw * g)
  y_lo, y_hi, wy_lo, wy_hi = _bilinear_taps(ys, height[:, None])
  x_lo, x_hi, wx_lo, wx_hi = _bilinear_taps(xs, width[:, None])
  base, width = base[:, None, None], width[:, None, None]
  out = 0.0
  for yi, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
    for xi, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
      index = base + yi[:, :, None] * width + xi[:, None, :]  # (R, ph * g, pw * g)
      weight = wy[:, :, None] * wx[:, None, :]
      out = out + flat[index].astype(jnp.float32) * weight[..., None]  # fp32 sums for bf16 maps
  r, c = boxes.shape[0], flat.shape[-1]
  out = out.reshape(r, ph, g, pw, g, c).mean(axis=(2, 4))  # average the g x g samples per bin
  return out.astype(flat.dtype)


def roi_align(features, boxes, image_index, output_size, spatial_scale, sampling_ratio=2,
              aligned=False):
  """features (B, H, W, C), boxes (R, 4) xyxy in image pixels, image_index (R,) int
  -> (R, ph, pw, C) in the dtype of `features`.

  Every RoI samples its own image, gathered from the flattened (B * H * W, C) map; the
  gradient w.r.t. the features is the matching scatter-add.
  """
  if features.ndim != 4:
    raise ValueError(f"roi_align features must be (B, H, W, C), got shape {features.shape}")
  _check(boxes, image_index, sampling_ratio)
  b, h, w, c = features.shape
  r = boxes.shape[0]
  full = lambda v, dtype: jnp.full((r,), v, dtype)
  return _align(features.reshape(b * h * w, c), image_index.astype(jnp.int32) * (h * w),
                full(h, jnp.int32), full(w, jnp.int32), full(spatial_scale, jnp.float32), boxes,
                output_size, sampling_ratio, aligned)


def multilevel_roi_align(features, boxes, image_index, levels, output_size, spatial_scales,
                         sampling_ratio=2, aligned=False):
  """Each RoI from its own pyramid level (the Mask R-CNN setting, torchvision's
  MultiScaleRoIAlign): features a list of L maps (B, H_l, W_l, C), levels (R,) int in
  [0, L) -> (R, ph, pw, C).

  The levels are flattened into one (sum_l B H_l W_l, C) table and every RoI gathers at
  its level's offset, so the cost is that of one level's RoIAlign whatever the mix of
  levels, with no padding of the coarse maps to the size of the fine ones.
  """
  if len(features) != len(spatial_scales):
    raise ValueError(f"{len(features)} feature levels but {len(spatial_scales)} spatial scales")
  _check(boxes, image_index, sampling_ratio)
  sizes = [f.shape[0] * f.shape[1] * f.shape[2] for f in features]
  table = jnp.concatenate([f.reshape(n, f.shape[-1]) for f, n in zip(features, sizes)], axis=0)
  start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
  heights = np.asarray([f.shape[1] for f in features], np.int32)
  widths = np.asarray([f.shape[2] for f in features], np.int32)
  levels = levels.astype(jnp.int32)
  h, w = jnp.asarray(heights)[levels], jnp.asarray(widths)[levels]
  base = jnp.asarray(start)[levels] + image_index.astype(jnp.int32) * h * w
  scale = jnp.asarray(np.asarray(spatial_scales, np.float32))[levels]
  return _align(table, base, h, w, scale, boxes, output_size, sampling_ratio, aligned)
