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


def roi_align(features, boxes, image_index, output_size, spatial_scale, sampling_ratio=2,
              aligned=False):
  """features (B, H, W, C), boxes (R, 4) xyxy in image pixels, image_index (R,) int
  -> (R, ph, pw, C) in the dtype of `features`.

  Every RoI samples its own image, gathered from the flattened (B * H * W, C) map; the
  gradient w.r.t. the features is the matching scatter-add.
  """
  if features.ndim != 4:
    raise ValueError(f"roi_align features must be (B, H, W, C), got shape {features.shape}")
  if boxes.ndim != 2 or boxes.shape[-1] != 4 or image_index.shape != boxes.shape[:1]:
    raise ValueError(f"roi_align boxes must be (R, 4) with image_index (R,), got {boxes.shape} "
                     f"and {image_index.shape}")
  if sampling_ratio < 1:
    raise ValueError(f"sampling_ratio must be a fixed positive integer, got {sampling_ratio}")
  b, h, w, c = features.shape
  ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
  g = sampling_ratio
  offset = 0.5 if aligned else 0.0
  boxes = boxes.astype(jnp.float32) * spatial_scale - offset
  x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
  roi_w, roi_h = x2 - x1, y2 - y1
  if not aligned:  # torchvision: degenerate RoIs become one pixel wide
    roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
  ys = _sample_positions(y1, roi_h / ph, ph, g)  # (R, ph * g)
  xs = _sample_positions(x1, roi_w / pw, pw, g)  # (R, pw * g)
  y_lo, y_hi, wy_lo, wy_hi = _bilinear_taps(ys, h)
  x_lo, x_hi, wx_lo, wx_hi = _bilinear_taps(xs, w)

  flat = features.reshape(b * h * w, c)
  base = image_index.astype(jnp.int32)[:, None, None] * (h * w)
  out = 0.0
  for yi, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
    for xi, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
      index = base + yi[:, :, None] * w + xi[:, None, :]  # (R, ph * g, pw * g)
      weight = (wy[:, :, None] * wx[:, None, :]).astype(features.dtype)
      out = out + flat[index] * weight[..., None]
  r = boxes.shape[0]
  out = out.reshape(r, ph, g, pw, g, c).mean(axis=(2, 4))  # average the g x g samples per bin
  return out.astype(features.dtype)
