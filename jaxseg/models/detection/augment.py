"""Test-time augmentation of the detector: horizontal flip and several scales, as
Detectron's im_detect_bbox_aug / im_detect_mask_aug do it (lib/core/test.py of the PANet
authors' code, github.com/ShuLiu1993/PANet, which is Detectron's; their defaults
TEST.BBOX_AUG.SCORE_HEUR = COORD_HEUR = "UNION", TEST.MASK_AUG.HEUR = "SOFT_AVG").

A view is (scale, flip): the image's region of the canvas, (h, w), bilinearly resized to
(round(s h), round(s w)) on its own canvas (the eval canvas x s, rounded up to a multiple
of 64: one compiled detector per view) and mirrored within its region if flipped.

  boxes  every view's candidates before the NMS, every (proposal, class) box and score
         of the box head (Detectron's scores (R, K + 1) and boxes (R, 4 (K + 1))), are
         mapped back to the image's frame; "UNION" stacks them all, and the usual
         per-class NMS + top `detections` runs on the union (panet.select; the pre-NMS
         cap is the model's detections_pre_nms per view).
  masks  for those final boxes, each view's mask head on the boxes mapped into its
         frame (a flipped view's masks flipped back); "SOFT_AVG" averages the
         probabilities over the views; they are then pasted as without augmentation.

A flip maps x to w - x in the view's own width w (the continuous pixel frame of
torchvision's boxes and of the training flip, jaxseg.data.instances); Detectron, with
its +1 box widths, maps x to w - 1 - x. Detectron resizes every view from the original
image; here views are resized from the eval-resized image on the canvas. Detectron
visits the flip, then the scales, the identity last; here the views come in the order
of the config (only ties of equal scores in the NMS could tell the two apart).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxseg.evaluate import bilinear_taps
from jaxseg.models.detection.panet import select

CANVAS_MULTIPLE = 64  # P6 of the canvas at stride 64


def view_canvas(canvas, scale):
  """The static canvas (H, W) of a view at `scale` of the eval canvas `canvas`."""
  return tuple(int(math.ceil(c * scale / CANVAS_MULTIPLE)) * CANVAS_MULTIPLE for c in canvas)


def view_sizes(image_sizes, scale):
  """(B, 2) image regions -> (B, 2) float32 regions of the view at `scale`."""
  return jnp.maximum(jnp.round(jnp.asarray(image_sizes, jnp.float32) * scale), 1.0)


def _resize_matrix(n_out, out_size, in_size, n_in, flip):
  """(n_out, n_in) weights of a 1-D bilinear resize of `in_size` pixels to `out_size`
  (traced), mirrored within out_size if `flip`; rows from out_size on are 0."""
  o = jnp.arange(n_out)
  lo, hi, frac = bilinear_taps(n_out, out_size, in_size)
  if flip:  # output o reads the resized pixel out_size - 1 - o
    src = jnp.clip(out_size - 1 - o, 0, n_out - 1)
    lo, hi, frac = lo[src], hi[src], frac[src]
  cells = jnp.arange(n_in)
  weights = (1.0 - frac)[:, None] * (lo[:, None] == cells) + frac[:, None] * (hi[:, None] == cells)
  return jnp.where((o < out_size)[:, None], weights, 0.0)


def resize_images(images, image_sizes, sizes, canvas, flip):
  """images (B, H, W, 3) with regions image_sizes (B, 2) -> (B, *canvas, 3) float32: each
  region bilinearly resized to `sizes` (B, 2) (half-pixel centres, as cv2's INTER_LINEAR
  and torch's F.interpolate), mirrored within it if `flip`, 0 beyond."""
  h, w = images.shape[1:3]
  image_sizes = jnp.asarray(image_sizes, jnp.int32)
  sizes = jnp.asarray(sizes, jnp.int32)

  def one(image, region, size):
    wy = _resize_matrix(canvas[0], size[0], region[0], h, False)
    wx = _resize_matrix(canvas[1], size[1], region[1], w, flip)
    return jnp.einsum("yh,hwc,xw->yxc", wy, image.astype(jnp.float32), wx, precision=jax.lax.Precision.HIGHEST)

  return jax.vmap(one)(images, image_sizes, sizes)


def _frame(boxes, sizes):
  """sizes (B, 2) (h, w) -> (B, 1, .., 1, 2) (w, h) broadcastable to boxes (B, ..., 4)[..., :2]."""
  wh = jnp.asarray(sizes, jnp.float32)[:, ::-1]
  return wh.reshape(wh.shape[:1] + (1,) * (boxes.ndim - 2) + (2,))


def to_view(boxes, image_sizes, sizes, flip):
  """xyxy boxes (B, ..., 4) in the image's frame (regions image_sizes) -> the view's
  (regions sizes, mirrored if flip)."""
  ratio = _frame(boxes, sizes) / _frame(boxes, image_sizes)
  lo, hi = boxes[..., :2] * ratio, boxes[..., 2:] * ratio
  if flip:
    w = _frame(boxes, sizes)[..., :1]
    lo, hi = jnp.concatenate([w - hi[..., :1], lo[..., 1:]], -1), jnp.concatenate([w - lo[..., :1], hi[..., 1:]], -1)
  return jnp.concatenate([lo, hi], -1)


def from_view(boxes, image_sizes, sizes, flip):
  """The inverse of to_view: boxes in the view's frame -> the image's."""
  if flip:
    w = _frame(boxes, sizes)[..., :1]
    boxes = jnp.concatenate([w - boxes[..., 2:3], boxes[..., 1:2], w - boxes[..., 0:1], boxes[..., 3:4]], -1)
  ratio = _frame(boxes, image_sizes) / _frame(boxes, sizes)
  return jnp.concatenate([boxes[..., :2] * ratio, boxes[..., 2:] * ratio], -1)


def detect(run, views, canvases, images, image_sizes, nms_threshold, detections, pre_nms):
  """Detections merged over `views` ((scale, flip), ..) on their `canvases`:
  run(i, images (B, *canvases[i], 3) float32 0..255, image_sizes (B, 2), **kwargs) applies
  the detector of view i (with_candidates=True, or boxes= / classes= for the mask head).
  images (B, H, W, 3) uint8 with regions image_sizes -> {"boxes" (B, D, 4) in the
  image's frame, "classes", "scores", "valid" (B, D), "masks" (B, D, M, M) averaged
  probabilities}."""
  image_sizes = jnp.asarray(image_sizes, jnp.float32)
  inputs = []
  for (scale, flip), canvas in zip(views, canvases):
    sizes = view_sizes(image_sizes, scale)
    inputs.append((resize_images(images, image_sizes, sizes, canvas, flip), sizes, flip))

  union = []  # SCORE_HEUR = COORD_HEUR = "UNION"
  for i, (view, sizes, flip) in enumerate(inputs):
    found = run(i, view, sizes, with_candidates=True)["candidates"]
    union.append((from_view(found["boxes"], image_sizes, sizes, flip), found["scores"], found["valid"]))
  boxes, scores, valid = (jnp.concatenate(parts, axis=1) for parts in zip(*union))
  boxes, classes, scores, valid = select(boxes, scores, valid, nms_threshold, detections, pre_nms * len(views))

  total = 0.0  # MASK_AUG.HEUR = "SOFT_AVG"
  for i, (view, sizes, flip) in enumerate(inputs):
    masks = run(i, view, sizes, boxes=to_view(boxes, image_sizes, sizes, flip), classes=classes)["masks"]
    total = total + (masks[..., ::-1] if flip else masks)
  masks = jnp.where(valid[..., None, None], total / len(views), 0.0)
  return {"boxes": boxes, "classes": classes, "scores": scores, "valid": valid, "masks": masks}
