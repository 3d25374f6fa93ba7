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


def format_table(scores, class_names, step=None) -> str:
  """Per-class IoU/Acc table with class names, then the summary line."""
  width = max([len(n) for n in class_names] + [5])
  lines = [f"{'class':<{width}}    IoU     Acc", "-" * (width + 16)]
  for name, iou, acc in zip(class_names, scores["per_class_iou"], scores["per_class_acc"]):
    fmt = lambda v: "    n/a" if v is None else f"{100 * v:7.2f}"
    lines.append(f"{name:<{width}} {fmt(iou)} {fmt(acc)}")
  prefix = "" if step is None else f"step {step}: "
  lines.append(f"{prefix}mIoU {scores['miou']:.4f}  aAcc {scores['aacc']:.4f}  mAcc {scores['macc']:.4f}")
  return "\n".join(lines)
