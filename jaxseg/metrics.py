"""Semantic segmentation metrics from a confusion matrix accumulated over a split.

mIoU is computed from the confusion matrix of the whole split, never as the mean of
per-image or per-batch scores.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def confusion_matrix(pred, label, num_classes, ignore_index=255):
  """(K, K) int32 matrix, rows = ground truth, columns = prediction.

  Pixels whose label is `ignore_index` (or outside [0, K)) are not counted. Works on
  numpy or jax arrays; under jit it runs on device, so predictions never leave it.
  """
  on_host = isinstance(pred, np.ndarray) and isinstance(label, np.ndarray)
  xp = np if on_host else jnp
  label = label.astype(xp.int32).reshape(-1)
  pred = pred.astype(xp.int32).reshape(-1)
  valid = (label != ignore_index) & (label >= 0) & (label < num_classes)
  size = num_classes * num_classes
  index = xp.where(valid, label * num_classes + pred, size)  # invalid -> one spare bin
  counts = np.bincount(index, minlength=size + 1) if on_host else jnp.bincount(index, length=size + 1)
  return counts[:size].reshape(num_classes, num_classes).astype(xp.int32)


def segmentation_scores(cm) -> dict:
  """Standard scores of a confusion matrix (rows = ground truth).

  IoU_k = TP / (TP + FP + FN); Acc_k = TP / (TP + FN); aAcc = sum TP / sum cm.
  Convention (as mmsegmentation and the Cityscapes/VOC evaluators): a class absent
  from both ground truth and prediction has an undefined (NaN) IoU and is excluded
  from mIoU; a class absent from the ground truth but predicted has IoU 0.
  """
  cm = np.asarray(cm, np.float64)
  tp = np.diag(cm)
  gt, pr = cm.sum(1), cm.sum(0)
  with np.errstate(divide="ignore", invalid="ignore"):
    iou = tp / (gt + pr - tp)
    acc = tp / gt
  return {
      "miou": float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan"),
      "aacc": float(tp.sum() / max(cm.sum(), 1)),
      "macc": float(np.nanmean(acc)) if np.any(~np.isnan(acc)) else float("nan"),
      "per_class_iou": [None if np.isnan(v) else float(v) for v in iou],
      "per_class_acc": [None if np.isnan(v) else float(v) for v in acc],
  }


def _xp(*arrays):
  return np if all(isinstance(a, np.ndarray) for a in arrays) else jnp


def shift(x, dy, dx, fill):
  """y[:, i, j] = x[:, i + dy, j + dx] for (B, H, W, ...) `x`; `fill` outside the image."""
  xp = _xp(x)
  h, w = x.shape[1:3]
  r = max(abs(dy), abs(dx))
  padded = xp.pad(x, ((0, 0), (r, r), (r, r)) + ((0, 0),) * (x.ndim - 3), constant_values=fill)
  return padded[:, r + dy:r + dy + h, r + dx:r + dx + w]


def disk(radius):
  """Offsets (dy, dx) with dy^2 + dx^2 <= radius^2: the pixels within Euclidean distance."""
  r = int(radius)
  return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx <= radius * radius]


def fill_ignore(labels, steps, ignore_index=255):
  """Ignore pixels take the label of a 4-neighbour, repeated `steps` times (priority
  up, down, left, right), so an ignore band up to 2 x steps wide (the VOC-style
  band along object boundaries) closes with the boundary in its middle, while a wide
  void region stays ignore beyond `steps` px of its border."""
  xp = _xp(labels)
  for _ in range(steps):
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
      labels = xp.where(labels == ignore_index, shift(labels, dy, dx, ignore_index), labels)
  return labels


def boundary_counts(pred, label, num_classes, tolerance=3, ignore_index=255):
  """Per-class boundary matches, (K, 4) int32: [predicted boundary pixels within
  `tolerance` px (Euclidean) of a ground-truth boundary of the class, predicted
  boundary pixels, ground-truth boundary pixels within `tolerance` of a predicted
  one, ground-truth boundary pixels]. Sums over images give the split's scores
  (`boundary_scores`); numpy or jax arrays, under jit it runs on device.

  The boundary of class k is the pixels of k with a 4-neighbour of another known
  class (image borders are no boundary). Ignore pixels of the ground truth are first
  filled from their neighbours for `tolerance` steps (`fill_ignore`), so thin ignore
  bands along object contours hold the ground-truth boundary; predictions count only
  where the filled ground truth is known.
  """
  xp = _xp(pred, label)
  label = fill_ignore(label.astype(xp.int32), max(int(tolerance), 1), ignore_index)
  known = (label != ignore_index) & (label >= 0) & (label < num_classes)
  label = xp.where(known, label, -1)
  pred = xp.where(known, pred.astype(xp.int32), -1)
  classes = xp.arange(num_classes)

  def boundaries(ids):  # (B, H, W) ids, -1 unknown -> (B, H, W, K) bool
    out = xp.zeros(ids.shape + (num_classes,), bool)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
      other = shift(ids, dy, dx, -1)
      out = out | ((ids[..., None] == classes) & ((other != ids) & (other >= 0))[..., None])
    return out

  def dilate(b):
    out = b
    for dy, dx in disk(tolerance):
      out = out | shift(b, dy, dx, False)
    return out

  bp, bg = boundaries(pred), boundaries(label)
  count = lambda x: xp.sum(x, axis=(0, 1, 2)).astype(xp.int32)
  return xp.stack([count(bp & dilate(bg)), count(bp), count(bg & dilate(bp)), count(bg)], axis=1)


def boundary_scores(counts) -> dict:
  """Boundary precision, recall and F = 2PR / (P + R) per class from the split's
  `boundary_counts` (pooled over images, like the confusion matrix). A class with
  boundaries on one side only scores 0; a class with none on either side is
  undefined (None) and left out of the means."""
  c = np.asarray(counts, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    precision = np.where(c[:, 1] > 0, c[:, 0] / c[:, 1], 0.0)
    recall = np.where(c[:, 3] > 0, c[:, 2] / c[:, 3], 0.0)
    f = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
  defined = (c[:, 1] + c[:, 3]) > 0
  mean = lambda v: float(v[defined].mean()) if defined.any() else float("nan")
  return {"boundary_f": mean(f), "boundary_precision": mean(precision), "boundary_recall": mean(recall),
          "per_class_boundary_f": [float(v) if d else None for v, d in zip(f, defined)]}


def format_table(scores, class_names, step=None) -> str:
  """Per-class IoU/Acc table with class names, then the summary line."""
  width = max([len(n) for n in class_names] + [5])
  lines = [f"{'class':<{width}}    IoU     Acc", "-" * (width + 16)]
  for name, iou, acc in zip(class_names, scores["per_class_iou"], scores["per_class_acc"]):
    fmt = lambda v: "    n/a" if v is None else f"{100 * v:7.2f}"
    lines.append(f"{name:<{width}} {fmt(iou)} {fmt(acc)}")
  prefix = "" if step is None else f"step {step}: "
  lines.append(f"{prefix}mIoU {scores['miou']:.4f}  aAcc {scores['aacc']:.4f}  mAcc {scores['macc']:.4f}")
  if "boundary_f" in scores:
    lines[-1] += f"  boundary F@{scores['boundary_f_tolerance']}px {scores['boundary_f']:.4f}"
  return "\n".join(lines)
