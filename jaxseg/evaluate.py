"""Inference on batch dicts (whole image, sliding window, multi-scale + flip), the
evaluators of the semantic family (confusion matrix, boundary F), and `Evaluation`,
which runs a family's predict over a split and feeds its evaluators on device."""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import metrics
from jaxseg.models.layers import resize


def normalize(images, config):
  """uint8 RGB -> float32 (x - mean) / std. Runs inside the jitted functions, so
  batches travel to the device as uint8."""
  mean = jnp.asarray(config.dataset.mean, jnp.float32)
  std = jnp.asarray(config.dataset.std, jnp.float32)
  return (images.astype(jnp.float32) - mean) / std


def window_starts(size, crop, stride):
  """Start offsets of sliding windows covering [0, size); the last one ends at size."""
  if size <= crop:
    return [0]
  n = -(-(size - crop) // stride) + 1
  return [min(i * stride, size - crop) for i in range(n)]


def slide_logits(forward, batch, crop, stride, num_classes):
  """Average of the logits of overlapping `crop` windows of every spatial entry of
  `batch` (a dict with "image", or an image array; one compiled body, mapped over the
  window offsets)."""
  if not isinstance(batch, dict):
    return slide_logits(lambda view: forward(view["image"]), {"image": batch}, crop, stride, num_classes)
  b, h, w = batch["image"].shape[:3]
  ch, cw = min(crop[0], h), min(crop[1], w)
  offsets = [(y, x) for y in window_starts(h, ch, stride[0]) for x in window_starts(w, cw, stride[1])]

  def one(offset):
    window = lambda x: jax.lax.dynamic_slice(x, (0, offset[0], offset[1], 0), (b, ch, cw, x.shape[3]))
    return resize(forward(spatial_view(batch, window)), (ch, cw))

  windows = jax.lax.map(one, jnp.array(offsets, jnp.int32))  # (N, B, ch, cw, K)
  total = jnp.zeros((b, h, w, num_classes), jnp.float32)
  count = jnp.zeros((1, h, w, 1), jnp.float32)
  for i, (y, x) in enumerate(offsets):
    total = total.at[:, y:y + ch, x:x + cw].add(windows[i])
    count = count.at[:, y:y + ch, x:x + cw].add(1.0)
  return total / count


def slide_logits_per_image(forward, batch, sizes, crop, stride, num_classes, mirrored=False):
  """slide_logits with each image's own windows, as mmsegmentation's slide inference
  places them on an image of (h, w) = `sizes[b]` (int32 (B, 2), the valid top-left
  region of the canvas): h_grids = max(h - crop + stride - 1, 0) // stride + 1 rows of
  windows at y = max(min(i stride + crop, h) - crop, 0), and alike for columns. A
  window never reaches into the padding unless the image is smaller than the crop
  (mmseg then runs the model on the smaller image; here the window keeps the crop's
  size). One compiled window body; a window index that no image of the batch has is
  skipped (lax.cond), so a large canvas costs only the windows its images need.
  `mirrored`: the canvas is flipped left-right, each image's region is the last w
  columns, and the windows are the mirror images of the unflipped ones.
  Memory: the (B, H, W, K) float32 sum, e.g. 2.5 GB per 2048x2048 image at K = 150."""
  b, h, w = batch["image"].shape[:3]
  ch, cw = min(crop[0], h), min(crop[1], w)
  ny, nx = len(window_starts(h, ch, stride[0])), len(window_starts(w, cw, stride[1]))  # the canvas' most
  hs, ws = sizes[:, 0], sizes[:, 1]
  rows = jnp.maximum(hs - ch + stride[0] - 1, 0) // stride[0] + 1
  cols = jnp.maximum(ws - cw + stride[1] - 1, 0) // stride[1] + 1

  def at(x, y0, x0):  # per image: (B, H, W, C) -> (B, ch, cw, C) windows at (y0[b], x0[b])
    return jax.vmap(lambda xi, y, z: jax.lax.dynamic_slice(xi, (y, z, 0), (ch, cw, xi.shape[-1])))(x, y0, x0)

  def add(total, part, y0, x0):
    return jax.vmap(lambda t, p, y, z: jax.lax.dynamic_update_slice(
        t, jax.lax.dynamic_slice(t, (y, z, 0), p.shape) + p, (y, z, 0)))(total, part, y0, x0)

  def window(carry, index):
    iy, ix = index // nx, index % nx
    valid = (iy < rows) & (ix < cols)  # (B,): the images that have this window
    y0 = jnp.maximum(jnp.minimum(iy * stride[0] + ch, hs) - ch, 0)
    x0 = jnp.maximum(jnp.minimum(ix * stride[1] + cw, ws) - cw, 0)
    if mirrored:
      x0 = w - cw - x0

    def run(carry):
      total, count = carry
      logits = resize(forward(spatial_view(batch, lambda x: at(x, y0, x0))), (ch, cw))
      mask = valid.astype(jnp.float32)[:, None, None, None]
      return add(total, logits * mask, y0, x0), add(count, jnp.broadcast_to(mask, (b, ch, cw, 1)), y0, x0)

    return jax.lax.cond(valid.any(), run, lambda c: c, carry), None

  zeros = (jnp.zeros((b, h, w, num_classes), jnp.float32), jnp.zeros((b, h, w, 1), jnp.float32))
  (total, count), _ = jax.lax.scan(window, zeros, jnp.arange(ny * nx))
  return total / jnp.maximum(count, 1.0)  # the padding beyond the image: 0


def spatial_view(batch, fn):
  """`fn` applied alike to every spatial entry of `batch` (those with the image's
  (B, H, W)), as float32 (B, H, W, C) arrays (a (B, H, W) map gets a channel and loses
  it after); other entries pass unchanged. Inference views (windows, scales, flips)
  of the whole batch, e.g. Gated-SCNN's edge map with its image."""
  bhw = batch["image"].shape[:3]
  out = {}
  for key, value in batch.items():
    if value.ndim >= 3 and value.shape[:3] == bhw:
      x = value.astype(jnp.float32)
      out[key] = fn(x[..., None])[..., 0] if x.ndim == 3 else fn(x)
    else:
      out[key] = value
  return out


def predict_scores(model, variables, batch, config):
  """Per-pixel class scores (B, H, W, K) at the size of the batch's uint8 "image".

  One scale without flip gives logits; with several scales or flip, the softmax
  probabilities of every (scale, flip) view, resized back, are averaged. Every
  spatial entry of the batch other than the targets (Gated-SCNN's Canny "edges") is
  cropped, (bilinearly) resized and flipped with the image, and the model reads it
  from the view: `model.apply(variables, image, train=False, batch=view)`.
  """
  e = config.eval
  k = config.dataset.num_classes
  inputs = {key: v for key, v in batch.items() if key not in ("label", "image_size", "label_size")}
  inputs["image"] = normalize(batch["image"], config)
  size = inputs["image"].shape[1:3]
  image_size = batch.get("image_size")  # (B, 2): each image's valid region of the canvas, if resized

  def forward(view):
    return model.apply(variables, view["image"], train=False, batch=view)["seg"].astype(jnp.float32)

  def logits_at(view, flip=False):
    if e.mode == "slide" and image_size is not None:
      scale = jnp.asarray(view["image"].shape[1:3], jnp.float32) / jnp.asarray(size, jnp.float32)
      sizes = jnp.round(image_size * scale).astype(jnp.int32)  # the valid region of this view
      out = slide_logits_per_image(forward, view, sizes, tuple(e.crop_size), tuple(e.stride), k, flip)
    elif e.mode == "slide":
      out = slide_logits(forward, view, tuple(e.crop_size), tuple(e.stride), k)
    elif e.mode == "whole":
      out = forward(view)
    else:
      raise ValueError(f"config key eval.mode must be 'whole' or 'slide', got '{e.mode}'")
    return resize(out, size, align_corners=config.model.get("align_corners", False))

  views = [(s, f) for s in e.scales for f in ((False, True) if e.flip else (False,))]
  if len(views) == 1:
    return logits_at(spatial_view(inputs, lambda x: resize(x, _scaled(size, views[0][0]))))
  probs = 0.0
  for scale, flip in views:
    view = spatial_view(inputs, lambda x: resize(x, _scaled(size, scale)))
    if flip:
      view = spatial_view(view, lambda x: x[:, :, ::-1])
    out = logits_at(view, flip)
    probs += jax.nn.softmax(out[:, :, ::-1] if flip else out, axis=-1)
  return probs / len(views)


def bilinear_taps(n_out, out_size, in_size, align_corners=False):
  """For output pixels 0..n_out-1 of a 1-D bilinear resize of `in_size` input pixels
  to `out_size` (both traced int32; pixels from out_size on are padding): the two
  input taps and the second one's weight, as torch's F.interpolate(mode="bilinear"):
  src = in / out (o + 1/2) - 1/2, clamped at 0 (align_corners: src = o (in - 1) /
  (out - 1)); lo = min(floor(src), in - 1), hi = min(lo + 1, in - 1), weight src - lo."""
  o = jnp.arange(n_out, dtype=jnp.float32)
  n_in, n_o = jnp.maximum(in_size, 1).astype(jnp.float32), jnp.maximum(out_size, 1).astype(jnp.float32)
  if align_corners:
    src = o * jnp.where(n_o > 1, (n_in - 1) / jnp.maximum(n_o - 1, 1), 0.0)
  else:
    src = jnp.maximum(n_in / n_o * (o + 0.5) - 0.5, 0.0)
  last = jnp.maximum(in_size, 1) - 1
  lo = jnp.minimum(jnp.floor(src).astype(jnp.int32), last)
  hi = jnp.minimum(lo + 1, last)
  return lo, hi, jnp.clip(src - lo, 0.0, 1.0)


def resized_back(scores, image_sizes, label_sizes, label_canvas, align_corners=False, reduce=None,
                 chunk_bytes=256 << 20):
  """The scores of each image's valid region (B, h, w, K) of the canvas `scores`,
  bilinearly resized to its stored label's (H, W), then `reduce`d over the last axis
  (default: argmax -> (B, *label_canvas) int32 class ids; beyond (H, W) is padding,
  labelled ignore). The toolboxes' protocol: mmseg resizes the logits to the original
  shape (F.interpolate, bilinear, the head's align_corners), then takes the argmax.

  The taps come from bilinear_taps, per image (traced sizes, static shapes), and the
  sum is torch's, h0 (w0 x00 + w1 x01) + h1 (w0 x10 + w1 x11). Not
  jax.image.scale_and_translate: its kernel is renormalised at the array's edge, not at
  the valid region's, so on the padded canvas the last row would blend in padding.
  Memory: the (B, H, W, K) resized scores are never held at once (unless `reduce`
  keeps them); rows of the label canvas go in chunks of R rows, R chosen so that one
  chunk's (B, R, W, K) float32 stays within `chunk_bytes` (256 MiB: R = 27 at B = 8,
  W = 2048, K = 150)."""
  reduce = reduce or (lambda x: jnp.argmax(x, axis=-1).astype(jnp.int32))
  b, _, _, k = scores.shape
  lh, lw = label_canvas
  rows = int(max(1, min(lh, chunk_bytes // (4 * b * lw * k))))
  chunks = -(-lh // rows)

  def one(score, image_size, label_size):
    ylo, yhi, wy = bilinear_taps(chunks * rows, label_size[0], image_size[0], align_corners)
    xlo, xhi, wx = bilinear_taps(lw, label_size[1], image_size[1], align_corners)
    wx = wx[None, :, None]

    def chunk(taps):
      lo, hi, w1 = taps
      w1 = w1[:, None, None]
      cols = lambda r: (1 - wx) * r[:, xlo] + wx * r[:, xhi]  # (R, Wc, K) -> (R, W, K)
      return reduce((1 - w1) * cols(score[lo]) + w1 * cols(score[hi]))

    taps = (ylo.reshape(chunks, rows), yhi.reshape(chunks, rows), wy.reshape(chunks, rows))
    out = jax.lax.map(chunk, taps)
    return out.reshape(chunks * rows, *out.shape[2:])[:lh]

  return jax.vmap(one)(scores, image_sizes, label_sizes)


def _scaled(size, scale):
  return (max(1, int(round(size[0] * scale))), max(1, int(round(size[1] * scale))))


class ConfusionMatrix:
  """mIoU, aAcc, mAcc and the per-class IoU/accuracy (`metrics.segmentation_scores`)
  of outputs["pred"] (B, H, W) class ids against batch["label"], from the (K, K)
  confusion matrix accumulated on device."""

  def __init__(self, num_classes, ignore_index=255):
    self.num_classes, self.ignore_index = num_classes, ignore_index

  def init(self):
    return jnp.zeros((self.num_classes,) * 2, jnp.int32)

  def update(self, cm, outputs, batch):
    return cm + metrics.confusion_matrix(outputs["pred"], batch["label"], self.num_classes, self.ignore_index)

  def result(self, cm):
    return metrics.segmentation_scores(np.asarray(cm))


class BoundaryF:
  """The boundary F-score at `tolerance` px (`metrics.boundary_counts`, per class)."""

  def __init__(self, num_classes, tolerance, ignore_index=255):
    self.num_classes, self.tolerance, self.ignore_index = num_classes, tolerance, ignore_index

  def init(self):
    return jnp.zeros((self.num_classes, 4), jnp.int32)

  def update(self, counts, outputs, batch):
    return counts + metrics.boundary_counts(outputs["pred"], batch["label"], self.num_classes, self.tolerance,
                                            self.ignore_index)

  def result(self, counts):
    return {**metrics.boundary_scores(np.asarray(counts)), "boundary_f_tolerance": self.tolerance}


class Evaluation:
  """Runs `predict(variables, batch) -> outputs` once per batch and feeds every
  evaluator (`init() -> accumulator`, jittable `update(acc, outputs, batch)`,
  `result(acc) -> scores` on the host). Outputs never leave the device, only the
  accumulators do, once per split.

  An evaluator with `on_host = True` (metrics written for numpy, such as PQ and
  pycocotools' AP: jaxseg.panoptic_evaluators) instead gets every batch's outputs and
  global batch as numpy arrays, gathered on every process, and its accumulator stays
  on the host."""

  def __init__(self, predict, evaluators, replicated):
    self.evaluators, self.replicated = dict(evaluators), replicated
    self.host = {name for name, ev in self.evaluators.items() if getattr(ev, "on_host", False)}

    def step(accs, variables, batch):
      outputs = predict(variables, batch)
      accs = {name: ev.update(accs[name], outputs, batch) for name, ev in self.evaluators.items()
              if name not in self.host}
      return accs, (outputs, batch) if self.host else None

    self.step = jax.jit(step, donate_argnums=0, out_shardings=replicated)

  def __call__(self, variables, batches, to_device):
    """(scores of every evaluator merged, with eval_seconds; {name: accumulator})."""
    start = time.time()
    accs = jax.device_put({name: ev.init() for name, ev in self.evaluators.items() if name not in self.host},
                          self.replicated)
    host = {name: self.evaluators[name].init() for name in self.host}
    for batch in batches:
      accs, seen = self.step(accs, variables, to_device(batch))
      if seen is not None:
        outputs, global_batch = jax.device_get(seen)
        host = {name: self.evaluators[name].update(host[name], outputs, global_batch) for name in host}
    accs = {name: np.asarray(a) for name, a in jax.device_get(accs).items()}
    accs.update(host)
    scores = {}
    for name, ev in self.evaluators.items():
      scores.update(ev.result(accs[name]))
    scores["eval_seconds"] = time.time() - start
    return scores, accs


class SegEvaluator(Evaluation):
  """The semantic evaluation of `predict(variables, batch) -> (B, H, W)` class ids:
  the confusion matrix, and with `boundary_tolerance` > 0 the boundary F-score.
  Returns (scores, confusion matrix)."""

  def __init__(self, predict, num_classes, ignore_index, data_sharding, replicated, boundary_tolerance=0):
    evaluators = {"confusion": ConfusionMatrix(num_classes, ignore_index)}
    if boundary_tolerance > 0:
      evaluators["boundary_f"] = BoundaryF(num_classes, boundary_tolerance, ignore_index)
    super().__init__(lambda v, batch: {"pred": predict(v, batch)}, evaluators, replicated)

  def __call__(self, variables, batches, to_device):
    scores, accs = super().__call__(variables, batches, to_device)
    return scores, accs["confusion"]
