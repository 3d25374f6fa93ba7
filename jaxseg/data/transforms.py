"""Per-record augmentation in numpy/OpenCV. Every random choice comes from the
`np.random.Generator` grain derives from (seed, position in the stream), so the
stream is reproducible and resumable."""
from __future__ import annotations

import cv2
import numpy as np

from jaxseg.errors import InputDataError


def random_scale(image, label, rng, scale_range, step=0.0):
  """Resize by a ratio drawn from `scale_range` (continuous, or in steps of `step`):
  bilinear for the image, nearest for the label."""
  lo, hi = scale_range
  if step > 0:
    ratio = rng.choice(np.arange(lo, hi + step / 2, step))
  else:
    ratio = rng.uniform(lo, hi)
  h, w = label.shape
  size = (max(1, int(round(w * ratio))), max(1, int(round(h * ratio))))
  return (cv2.resize(image, size, interpolation=cv2.INTER_LINEAR),
          cv2.resize(label, size, interpolation=cv2.INTER_NEAREST))


def pad_to(image, label, size, ignore_index=255):
  """Pad bottom/right to at least `size` = (H, W): image with 0, label with ignore."""
  h, w = label.shape
  ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
  if ph or pw:
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=ignore_index)
  return image, label


def random_crop(image, label, rng, crop_size, cat_max_ratio=1.0, ignore_index=255, tries=10):
  """Pad to the crop size, then crop at a random place. With cat_max_ratio < 1, redraw
  (up to `tries` times) crops where one class covers more than that fraction of the
  labelled pixels."""
  image, label = pad_to(image, label, crop_size, ignore_index)
  ch, cw = crop_size
  h, w = label.shape
  for _ in range(tries if cat_max_ratio < 1 else 1):
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = label[y:y + ch, x:x + cw]
    _, counts = np.unique(crop[crop != ignore_index], return_counts=True)
    if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
      break
  return image[y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]


def photometric_distortion(image, rng):
  """Brightness (+-32), contrast (0.5-1.5), saturation (0.5-1.5) and hue (+-18 deg),
  each applied with probability 1/2, contrast before or after the colour changes."""
  img = image.astype(np.float32)
  if rng.random() < 0.5:
    img += rng.uniform(-32, 32)
  contrast_first = rng.random() < 0.5

  def contrast(x):
    return x * rng.uniform(0.5, 1.5) if rng.random() < 0.5 else x

  if contrast_first:
    img = contrast(img)
  hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
  if rng.random() < 0.5:
    hsv[..., 1] *= rng.uniform(0.5, 1.5)
  if rng.random() < 0.5:  # OpenCV hue is in [0, 180): 18 degrees = 9 units
    hsv[..., 0] = (hsv[..., 0] + rng.integers(-9, 10)) % 180
  img = cv2.cvtColor(np.clip(hsv, 0, [180, 255, 255]).astype(np.uint8), cv2.COLOR_HSV2RGB)
  img = img.astype(np.float32)
  if not contrast_first:
    img = contrast(img)
  return np.clip(img, 0, 255).astype(np.uint8)


def canny(image, thresholds=(10, 100)):
  """Gated-SCNN's image gradients: cv2.Canny of the grey version of the un-normalised
  uint8 RGB `image` -> (H, W) uint8, 1 on edges."""
  grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
  return (cv2.Canny(grey, *(int(t) for t in thresholds)) > 0).astype(np.uint8)


def check_record(record, where):
  """The (image, label) arrays of a record, or a ValueError naming it."""
  image, label = record["image"], record["label"]
  if label.ndim == 3:
    label = label[..., 0]
  if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != label.shape:
    raise InputDataError(f"{where}: image {image.shape} and label {label.shape} do not match "
                     "(expected HxWx3 and HxW)")
  return image, label


def train_transform(record, rng, cfg, ignore_index, where="record"):
  """random scale -> crop with pad -> flip -> photometric distortion."""
  image, label = check_record(record, where)
  image, label = random_scale(image, label, rng, cfg.scale_range, cfg.scale_step)
  image, label = random_crop(image, label, rng, tuple(cfg.crop_size), cfg.cat_max_ratio, ignore_index)
  if cfg.flip and rng.random() < 0.5:
    image, label = image[:, ::-1], label[:, ::-1]
  if cfg.photometric:
    image = photometric_distortion(image, rng)
  out = {"image": np.ascontiguousarray(image), "label": np.ascontiguousarray(label)}
  if cfg.get("canny_edges", False):  # of the augmented crop the network sees
    out["edges"] = canny(out["image"], cfg.canny_thresholds)
  return out


def resize_to_bounds(image, label, short_side, long_side, max_size):
  """Rescale (image bilinear, label nearest), keeping the aspect ratio, by the largest
  factor (up or down) that keeps the short side <= `short_side`, the long side <=
  `long_side` (0 = no bound) and the image within `max_size` (H, W). With both bounds
  this is the toolboxes' keep-ratio resize to (long, short), e.g. ADE20K's (2048, 512).
  With neither, the record is returned as it is."""
  if not short_side and not long_side:
    return image, label
  h, w = label.shape
  ratio = min(max_size[0] / h, max_size[1] / w)
  if short_side:
    ratio = min(ratio, short_side / min(h, w))
  if long_side:
    ratio = min(ratio, long_side / max(h, w))
  size = (min(max(1, int(round(w * ratio))), max_size[1]), min(max(1, int(round(h * ratio))), max_size[0]))
  if size == (w, h):
    return image, label
  return (cv2.resize(image, size, interpolation=cv2.INTER_LINEAR),
          cv2.resize(label, size, interpolation=cv2.INTER_NEAREST))


def eval_transform(record, size, ignore_index, where="record", short_side=0, long_side=0,
                   canny_thresholds=None):
  """Full image (resized to `short_side`/`long_side` if given, see resize_to_bounds)
  padded to the static `size`; the padding is labelled ignore. With
  `canny_thresholds`, also "edges": the Canny map of the image, padded with 0."""
  image, label = check_record(record, where)
  image, label = resize_to_bounds(image, label, short_side, long_side, size)
  if label.shape[0] > size[0] or label.shape[1] > size[1]:
    raise InputDataError(f"{where}: image is {label.shape[0]}x{label.shape[1]}, larger than "
                     f"config input.eval_size {tuple(size)}")
  out = {}
  if canny_thresholds is not None:
    edges = canny(image, canny_thresholds)
    out["edges"] = np.pad(edges, ((0, size[0] - edges.shape[0]), (0, size[1] - edges.shape[1])))
  image, label = pad_to(image, label, size, ignore_index)
  return {"image": image, "label": label, **out}
