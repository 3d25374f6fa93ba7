"""Inference (whole image, sliding window, multi-scale + flip) and the evaluator that
accumulates a confusion matrix on device over a whole split."""
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


def slide_logits(forward, images, crop, stride, num_classes):
  """Average of the logits of overlapping `crop` windows (one compiled body, mapped
  over the window offsets)."""
  _, h, w, _ = images.shape
  ch, cw = min(crop[0], h), min(crop[1], w)
  offsets = [(y, x) for y in window_starts(h, ch, stride[0]) for x in window_starts(w, cw, stride[1])]

  def one(offset):
    window = jax.lax.dynamic_slice(images, (0, offset[0], offset[1], 0), (images.shape[0], ch, cw, images.shape[3]))
    return resize(forward(window), (ch, cw))

  windows = jax.lax.map(one, jnp.array(offsets, jnp.int32))  # (N, B, ch, cw, K)
  total = jnp.zeros((images.shape[0], h, w, num_classes), jnp.float32)
  count = jnp.zeros((1, h, w, 1), jnp.float32)
  for i, (y, x) in enumerate(offsets):
    total = total.at[:, y:y + ch, x:x + cw].add(windows[i])
    count = count.at[:, y:y + ch, x:x + cw].add(1.0)
  return total / count


def predict_scores(model, variables, images, config, edges=None):
  """Per-pixel class scores (B, H, W, K) at the size of the uint8 `images`.

  One scale without flip gives logits; with several scales or flip, the softmax
  probabilities of every (scale, flip) view, resized back, are averaged. `edges`
  (B, H, W) in {0, 1}, Gated-SCNN's Canny map, travels as a fourth channel, so every
  window, scale and flip sees it cropped, (bilinearly) resized and flipped with the
  image.
  """
  e = config.eval
  k = config.dataset.num_classes
  x = normalize(images, config)
  if edges is not None:
    x = jnp.concatenate([x, edges[..., None].astype(jnp.float32)], axis=-1)
  size = x.shape[1:3]

  def forward(inputs):
    kw = {"edges": inputs[..., 3]} if inputs.shape[-1] == 4 else {}
    return model.apply(variables, inputs[..., :3], train=False, **kw)["seg"].astype(jnp.float32)

  def logits_at(inputs):
    if e.mode == "slide":
      out = slide_logits(forward, inputs, tuple(e.crop_size), tuple(e.stride), k)
    elif e.mode == "whole":
      out = forward(inputs)
    else:
      raise ValueError(f"config key eval.mode must be 'whole' or 'slide', got '{e.mode}'")
    return resize(out, size, align_corners=config.model.get("align_corners", False))

  views = [(s, f) for s in e.scales for f in ((False, True) if e.flip else (False,))]
  if len(views) == 1:
    return logits_at(resize(x, _scaled(size, views[0][0])))
  probs = 0.0
  for scale, flip in views:
    inputs = resize(x, _scaled(size, scale))
    if flip:
      inputs = inputs[:, :, ::-1]
    out = logits_at(inputs)
    probs += jax.nn.softmax(out[:, :, ::-1] if flip else out, axis=-1)
  return probs / len(views)


def _scaled(size, scale):
  return (max(1, int(round(size[0] * scale))), max(1, int(round(size[1] * scale))))


class SegEvaluator:
  """Accumulates the confusion matrix of `predict` over batches, on device.

  `predict(variables, images) -> (B, H, W)` class ids (given the batch's "edges" too
  when it has them); predictions never leave the device, only the (K, K) matrix
  does, once per split. With `boundary_tolerance` > 0 the per-class boundary counts
  (`metrics.boundary_counts`) accumulate beside it and the scores include the
  boundary F-score at that tolerance.
  """

  def __init__(self, predict, num_classes, ignore_index, data_sharding, replicated, boundary_tolerance=0):
    self.num_classes, self.tolerance = num_classes, boundary_tolerance

    def step(acc, variables, batch):
      cm, bc = acc
      pred = predict(variables, batch["image"], **({"edges": batch["edges"]} if "edges" in batch else {}))
      cm = cm + metrics.confusion_matrix(pred, batch["label"], num_classes, ignore_index)
      if boundary_tolerance > 0:
        bc = bc + metrics.boundary_counts(pred, batch["label"], num_classes, boundary_tolerance, ignore_index)
      return cm, bc

    self.step = jax.jit(step, donate_argnums=0, out_shardings=replicated)
    self.data_sharding, self.replicated = data_sharding, replicated

  def __call__(self, variables, batches, to_device):
    start = time.time()
    acc = jax.device_put((jnp.zeros((self.num_classes,) * 2, jnp.int32),
                          jnp.zeros((self.num_classes, 4), jnp.int32)), self.replicated)
    for batch in batches:
      acc = self.step(acc, variables, to_device(batch))
    cm, bc = (np.asarray(a) for a in jax.device_get(acc))
    scores = metrics.segmentation_scores(cm)
    if self.tolerance > 0:
      scores.update(metrics.boundary_scores(bc), boundary_f_tolerance=self.tolerance)
    scores["eval_seconds"] = time.time() - start
    return scores, cm
