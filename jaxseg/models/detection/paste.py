"""Pasting each detection's M x M mask probabilities back into the image inside its box.

The mask head predicts an M x M (28 x 28) probability grid over the detection's box; the
image-resolution mask is that grid resampled bilinearly onto the image pixels the box
covers, thresholded at 0.5. Two conventions are in use, both here (`convention`):

  "torchvision"  torchvision's paste_masks_in_image, which is Detectron's (the code PANet's
                 numbers come from): the grid is padded with one zero cell on each side
                 ((M + 2)^2) and the box widened by (M + 2) / M about its centre, then cut to
                 integer corners (truncated towards 0) e0, e1; the padded grid is resized to
                 w = e1 - e0 + 1 pixels (F.interpolate, bilinear, align_corners=False:
                 src = (M + 2) / w (o + 1/2) - 1/2, clamped at 0) and placed at pixels
                 e0 .. e1; a pixel is in the mask where the probability is > 0.5.
  "detectron2"   Detectron2's paste_masks_in_image: every pixel centre x + 1/2 inside or
                 outside the box reads the grid at u = (x + 1/2 - x0) / (x1 - x0) M - 1/2
                 (grid_sample, bilinear, align_corners=False, zero padding: taps outside
                 0 .. M - 1 count 0); in the mask where >= 0.5.

Both resample along y and x separately, so a detection's image mask is one product of
two interpolation matrices with its grid, Wy (H, M) @ mask (M, M) @ Wx (W, M)^T, with
static shapes whatever the box. Detections go in chunks (lax.map) so that only a
chunk's (C, H, W) float32 probabilities are held at once.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

CONVENTIONS = ("torchvision", "detectron2")
THRESHOLD = 0.5


def _one_hot_taps(lo, hi, w_lo, w_hi, m):
  """(..., n) taps and weights into a grid of m cells -> (..., n, m) interpolation
  weights; a tap outside 0 .. m - 1 adds nothing."""
  cells = jnp.arange(m)
  return (w_lo[..., None] * (lo[..., None] == cells) + w_hi[..., None] * (hi[..., None] == cells))


def torchvision_weights(a0, a1, n, m):
  """(N,) box edges along one axis -> (N, n, m) weights of the M-cell grid for pixels
  0 .. n - 1 (torchvision's expand_masks / expand_boxes / paste_mask_in_image)."""
  scale = (m + 2) / m
  centre, half = (a1 + a0) * 0.5, (a1 - a0) * 0.5 * scale
  e0 = jnp.trunc(centre - half).astype(jnp.int32)  # torch's .to(int64) truncates towards 0
  e1 = jnp.trunc(centre + half).astype(jnp.int32)
  w = jnp.maximum(e1 - e0 + 1, 1)
  o = jnp.arange(n, dtype=jnp.int32)[None, :] - e0[:, None]  # (N, n) pixel within the pasted window
  inside = (o >= 0) & (o < w[:, None])
  src = ((m + 2) / w.astype(jnp.float32))[:, None] * (o.astype(jnp.float32) + 0.5) - 0.5
  src = jnp.maximum(src, 0.0)
  lo = jnp.floor(src).astype(jnp.int32)
  hi = jnp.where(lo < m + 1, lo + 1, lo)
  frac = jnp.clip(src - lo, 0.0, 1.0)
  zero = jnp.zeros_like(frac)
  # padded cell j is grid cell j - 1; cells 0 and M + 1 are the zero padding
  return _one_hot_taps(lo - 1, hi - 1, jnp.where(inside, 1.0 - frac, zero), jnp.where(inside, frac, zero), m)


def detectron2_weights(a0, a1, n, m):
  """(N,) box edges along one axis -> (N, n, m) weights (Detectron2's _do_paste_mask:
  grid_sample at the pixel centres, zero padding)."""
  size = jnp.where(a1 > a0, a1 - a0, 1.0)  # an empty box reads nothing (masked below)
  g = (jnp.arange(n, dtype=jnp.float32)[None, :] + 0.5 - a0[:, None]) / size[:, None] * 2 - 1
  u = ((g + 1) * m - 1) / 2  # grid_sample's unnormalisation, align_corners=False
  lo = jnp.floor(u)
  frac = u - lo
  lo = lo.astype(jnp.int32)
  keep = (a1 > a0)[:, None].astype(jnp.float32)
  return _one_hot_taps(lo, lo + 1, (1.0 - frac) * keep, frac * keep, m)


WEIGHTS = {"torchvision": torchvision_weights, "detectron2": detectron2_weights}


def paste_probabilities(masks, boxes, image_size, convention="torchvision"):
  """masks (N, M, M) probabilities, boxes (N, 4) xyxy in pixels of an image of
  `image_size` (H, W) (static) -> (N, H, W) float32 probabilities in the image."""
  if convention not in CONVENTIONS:
    raise ValueError(f"mask paste convention must be one of {CONVENTIONS}, got '{convention}'")
  if masks.ndim != 3 or masks.shape[1] != masks.shape[2] or boxes.shape != (masks.shape[0], 4):
    raise ValueError(f"paste needs square masks (N, M, M) and boxes (N, 4), got {masks.shape} and {boxes.shape}")
  h, w = image_size
  m = masks.shape[1]
  weights = WEIGHTS[convention]
  boxes = boxes.astype(jnp.float32)
  wy = weights(boxes[:, 1], boxes[:, 3], h, m)  # (N, H, M)
  wx = weights(boxes[:, 0], boxes[:, 2], w, m)  # (N, W, M)
  rows = jnp.einsum("nhm,nmk->nhk", wy, masks.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
  return jnp.einsum("nhk,nwk->nhw", rows, wx, precision=jax.lax.Precision.HIGHEST)


def paste_masks(masks, boxes, image_size, convention="torchvision", chunk=16):
  """masks (N, M, M) probabilities, boxes (N, 4) xyxy -> (N, H, W) bool image masks:
  > 0.5 ("torchvision") or >= 0.5 ("detectron2"), `chunk` detections at a time."""
  n = masks.shape[0]
  chunk = max(1, min(chunk, n))
  pad = -n % chunk
  masks = jnp.pad(masks, ((0, pad), (0, 0), (0, 0)))
  boxes = jnp.pad(boxes, ((0, pad), (0, 0)))
  above = (lambda p: p > THRESHOLD) if convention == "torchvision" else (lambda p: p >= THRESHOLD)
  out = jax.lax.map(lambda mb: above(paste_probabilities(mb[0], mb[1], image_size, convention)),
                    (masks.reshape(-1, chunk, *masks.shape[1:]), boxes.reshape(-1, chunk, 4)))
  return out.reshape(-1, *image_size)[:n]


def boxes_to_image(boxes, resized_size, image_size):
  """Boxes (..., 4) in pixels of an image resized to `resized_size` (h, w) -> pixels of
  the original `image_size` (H, W), by the per-axis ratios H / h and W / w, clipped to
  the image (torchvision's transform.postprocess, Detectron2's detector_postprocess)."""
  resized = jnp.asarray(resized_size, jnp.float32)
  original = jnp.asarray(image_size, jnp.float32)
  sy, sx = original[..., 0] / resized[..., 0], original[..., 1] / resized[..., 1]
  scale = jnp.stack([sx, sy, sx, sy], -1)
  if scale.ndim < boxes.ndim:
    scale = scale[..., None, :]
  out = boxes * scale
  hi = jnp.stack([original[..., 1], original[..., 0]] * 2, -1)
  if hi.ndim < boxes.ndim:
    hi = hi[..., None, :]
  return jnp.clip(out, 0.0, hi)
