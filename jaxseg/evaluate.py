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
  inputs = {key: v for key, v in batch.items() if key != "label"}
  inputs["image"] = normalize(batch["image"], config)
  size = inputs["image"].shape[1:3]

  def forward(view):
    return model.apply(variables, view["image"], train=False, batch=view)["seg"].astype(jnp.float32)

  def logits_at(view):
    if e.mode == "slide":
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
    out = logits_at(view)
    probs += jax.nn.softmax(out[:, :, ::-1] if flip else out, axis=-1)
  return probs / len(views)


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
