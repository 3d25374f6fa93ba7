"""Per-record augmentation in numpy/OpenCV. Every random choice comes from the
`np.random.Generator` grain derives from (seed, position in the stream), so the
stream is reproducible and resumable."""
from __future__ import annotations

import cv2
import numpy as np

from jaxseg.errors import ConfigError, InputDataError


def draw_scale(rng, scale_range, step=0.0):
  """A ratio from `scale_range`: continuous, or in steps of `step`."""
  lo, hi = scale_range
  if step > 0:
    return rng.choice(np.arange(lo, hi + step / 2, step))
  return rng.uniform(lo, hi)


def scaled_size(shape, ratio):
  """(H, W) of a (H, W) record resized by `ratio`."""
  h, w = shape
  return max(1, int(round(h * ratio))), max(1, int(round(w * ratio)))


def random_scale(image, label, rng, scale_range, step=0.0):
  """Resize by a ratio drawn from `scale_range` (continuous, or in steps of `step`):
  bilinear for the image, nearest for the label. (Training resamples only the crop
  window, see scale_rotate_crop; this is the whole-image version it replaces.)"""
  h, w = scaled_size(label.shape, draw_scale(rng, scale_range, step))
  return (cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR),
          cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST))


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


def crop_window_matrix(shape, scaled, angle, offset):
  """The 2x3 affine map from record pixels to crop pixels: resize (H, W) `shape` to
  `scaled` = (H', W') (pixel centres kept: q = (p + 1/2) r - 1/2, as cv2.resize), rotate
  by `angle` degrees (counter-clockwise) about the centre of the (H', W') canvas, and
  move the crop's corner `offset` = (y0, x0) to the origin."""
  (h, w), (sh, sw), (y0, x0) = shape, scaled, offset
  rx, ry = sw / w, sh / h
  resize = np.array([[rx, 0, 0.5 * rx - 0.5], [0, ry, 0.5 * ry - 0.5], [0, 0, 1]])
  rotate = np.vstack([cv2.getRotationMatrix2D(((sw - 1) / 2, (sh - 1) / 2), angle, 1.0), [0, 0, 1]])
  crop = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]])
  return (crop @ rotate @ resize)[:2]


def scale_rotate_crop(image, label, rng, crop_size, scale_range, step=0.0, base_size=0, rotate_degrees=0.0,
                      rotate_prob=0.5, image_fill=0, cat_max_ratio=1.0, ignore_index=255, tries=10,
                      ratio=None, label_fill=None, classes=None, pad_image=0):
  """Random scale, random rotation and random crop with pad, computed by resampling
  only the crop window (one cv2.warpAffine of crop size) instead of resizing and
  rotating the whole record first. The draws and their order are random_scale's and
  random_crop's, so the crops are those of resize-then-crop: the crop's place is drawn
  on the (H', W') canvas of the resized record padded to the crop size (image 0,
  label ignore, bottom / right). The image is bilinear; the label is nearest at pixel
  centres (cv2.INTER_NEAREST_EXACT's rule; cv2.resize's INTER_NEAREST is up to half a
  source pixel off the bilinear image).

  base_size > 0: the ratio makes the short side base_size x the drawn ratio (the
  FastFCN / EncNet code's base size), not the record's own size x the ratio.
  Rotation (PSPNet): with probability rotate_prob, by an angle uniform in
  [-rotate_degrees, rotate_degrees] about the canvas centre, the canvas keeping its
  size; what it uncovers is `image_fill` in the image, ignore in the label.

  Panoptic records (jaxseg.data.instances) pass a `ratio` drawn by another rule
  (then scale_range, step and base_size are unused), a segment-index `label` whose
  padding is `label_fill` (void) and whose pixels' classes, for cat_max_ratio, are
  `classes[label]`, and `pad_image`, the RGB of the image's padding (else 0)."""
  h, w = label.shape
  label_fill = ignore_index if label_fill is None else label_fill
  if ratio is None:
    ratio = draw_scale(rng, scale_range, step)
    if base_size > 0:
      ratio *= base_size / min(h, w)
  sh, sw = scaled_size((h, w), ratio)
  angle = 0.0
  if rotate_degrees > 0 and rng.random() < rotate_prob:
    angle = rng.uniform(-rotate_degrees, rotate_degrees)
  ch, cw = crop_size
  ph, pw = max(sh, ch), max(sw, cw)  # the padded canvas the crop's place is drawn on

  def warp(src, m, interpolation, border, fill):
    """`src` sampled at crop pixels mapped back through `m`. The nearest neighbour of a
    point halfway between two pixels is the second (floor(p + 1/2)), as INTER_NEAREST_EXACT
    has it; warpAffine's own rounding would take either, so the map is nudged by one
    step of its 1/1024-pixel fixed point (a 2x downscale hits the halfway points)."""
    inverse = cv2.invertAffineTransform(m)
    if interpolation == cv2.INTER_NEAREST:
      inverse[:, 2] += 1 / 1024
    return cv2.warpAffine(src, inverse, (cw, ch), flags=interpolation | cv2.WARP_INVERSE_MAP, borderMode=border,
                          borderValue=fill)

  def pad(x, y0, x0, fill):
    """Crop pixels beyond the (H', W') canvas are padding."""
    x[max(sh - y0, 0):] = fill
    x[:, max(sw - x0, 0):] = fill
    return x

  for _ in range(tries if cat_max_ratio < 1 else 1):
    y0, x0 = rng.integers(0, ph - ch + 1), rng.integers(0, pw - cw + 1)
    m = crop_window_matrix((h, w), (sh, sw), angle, (y0, x0))
    crop = pad(warp(label, m, cv2.INTER_NEAREST, cv2.BORDER_CONSTANT, label_fill), y0, x0, label_fill)
    if cat_max_ratio >= 1:
      break
    crop_classes = crop if classes is None else classes[crop]
    counts = np.bincount(crop_classes.ravel(), minlength=ignore_index + 1)  # (np.unique sorts: 8x slower)
    counts[ignore_index] = 0
    if np.count_nonzero(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
      break
  # Replicated borders as cv2.resize's (a constant border would blend the fill into the
  # outermost half pixel); where a rotation uncovers the canvas the fill is put back.
  out = warp(image, m, cv2.INTER_LINEAR, cv2.BORDER_REPLICATE, 0)
  if angle:
    inside = warp(np.ones((h, w), np.uint8), m, cv2.INTER_NEAREST, cv2.BORDER_CONSTANT, 0)
    out[inside == 0] = np.asarray(image_fill, np.float64).round().clip(0, 255).astype(np.uint8)
  return pad(out, y0, x0, np.asarray(pad_image, np.float64).round().clip(0, 255).astype(np.uint8)), crop


def gaussian_blur(image, rng, kernel=5, sigma_range=(0.0, 0.0)):
  """Gaussian blur with a `kernel` x `kernel` window (0: sized from the sigma) and a
  sigma drawn uniformly from `sigma_range` ((0, 0): OpenCV's sigma for the kernel,
  0.3 ((k - 1) / 2 - 1) + 0.8, 1.1 for k = 5). PSPNet's code: kernel 5, default sigma;
  the FastFCN code: PIL's GaussianBlur(radius=U(0, 1)), the radius being the sigma."""
  lo, hi = sigma_range
  sigma = rng.uniform(lo, hi) if hi > 0 else 0.0
  if kernel == 0 and sigma <= 0:
    return image  # a zero-width Gaussian: no blur
  return cv2.GaussianBlur(image, (kernel, kernel), sigma)


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


def check_train_input(cfg):
  """ConfigError naming the first input.* key of the augmentations with a bad value."""
  if cfg.get("base_size", 0) < 0:
    raise ConfigError(f"config key input.base_size must be >= 0 (0 = off), got {cfg.base_size}")
  if not 0 <= cfg.get("rotate_prob", 0.5) <= 1 or not 0 <= cfg.get("blur_prob", 0.0) <= 1:
    raise ConfigError(f"config keys input.rotate_prob / input.blur_prob must be in [0, 1], "
                      f"got {cfg.get('rotate_prob')} / {cfg.get('blur_prob')}")
  if cfg.get("rotate_degrees", 0.0) < 0:
    raise ConfigError(f"config key input.rotate_degrees must be >= 0, got {cfg.rotate_degrees}")
  if len(tuple(cfg.get("rotate_image_fill", (0, 0, 0)))) != 3:
    raise ConfigError(f"config key input.rotate_image_fill must be 3 RGB values, got {cfg.rotate_image_fill}")
  if cfg.get("blur_prob", 0.0) > 0:
    k, sigma = cfg.blur_kernel, tuple(cfg.blur_sigma)
    if k < 0 or (k and k % 2 == 0):
      raise ConfigError(f"config key input.blur_kernel must be odd, or 0 (sized from the sigma), got {k}")
    if len(sigma) != 2 or not 0 <= sigma[0] <= sigma[1] or (k == 0 and sigma[1] == 0):
      raise ConfigError(f"config key input.blur_sigma must be (lo, hi) with 0 <= lo <= hi, and hi > 0 when "
                        f"input.blur_kernel is 0; got {sigma}")


def blur_and_colour(image, rng, cfg):
  """The crop's Gaussian blur (input.blur_prob) and photometric distortion
  (input.photometric), image only."""
  if cfg.get("blur_prob", 0.0) > 0 and rng.random() < cfg.blur_prob:
    image = gaussian_blur(image, rng, cfg.blur_kernel, tuple(cfg.blur_sigma))
  if cfg.photometric:
    image = photometric_distortion(image, rng)
  return image


def train_transform(record, rng, cfg, ignore_index, where="record"):
  """random scale (+ rotation) + crop with pad in one resampling -> flip -> Gaussian
  blur -> photometric distortion. The blur runs on the crop: cheaper than on the
  whole record, and the same but for the crop's outermost kernel radius."""
  image, label = check_record(record, where)
  image, label = scale_rotate_crop(
      image, label, rng, tuple(cfg.crop_size), cfg.scale_range, cfg.scale_step, cfg.get("base_size", 0),
      cfg.get("rotate_degrees", 0.0), cfg.get("rotate_prob", 0.5), tuple(cfg.get("rotate_image_fill", (0, 0, 0))),
      cfg.cat_max_ratio, ignore_index)
  if cfg.flip and rng.random() < 0.5:
    image, label = image[:, ::-1], label[:, ::-1]
  image = blur_and_colour(image, rng, cfg)
  out = {"image": np.ascontiguousarray(image), "label": np.ascontiguousarray(label)}
  if cfg.get("canny_edges", False):  # of the augmented crop the network sees
    out["edges"] = canny(out["image"], cfg.canny_thresholds)
  return out


def keep_ratio_size(shape, short_side, long_side):
  """(H', W') of the toolboxes' keep-ratio resize of a (H, W) record: the largest
  factor (up or down) that keeps the short side <= `short_side` and the long side <=
  `long_side` (0 = no bound), sizes rounded half up. mmcv's rescale with
  `Resize(scale=(long_side, short_side), keep_ratio=True)`: ADE20K's (2048, 512)."""
  h, w = shape
  ratios = ([short_side / min(h, w)] if short_side else []) + ([long_side / max(h, w)] if long_side else [])
  ratio = min(ratios)
  return max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))


def eval_label_canvas(cfg):
  """The static (H, W) the eval labels are padded to: input.eval_label_size ((0, 0) =
  input.eval_size) where eval images are resized (input.eval_short_side /
  eval_long_side), input.eval_size where they are not (image and label share it)."""
  size = tuple(cfg.get("eval_label_size", (0, 0)))
  resized = bool(cfg.get("eval_short_side", 0) or cfg.get("eval_long_side", 0))
  return size if any(size) and resized else tuple(cfg.eval_size)


def eval_transform(record, size, ignore_index, where="record", short_side=0, long_side=0,
                   canny_thresholds=None, label_size=None):
  """Full image padded to the static `size`; the padding is labelled ignore. With
  `canny_thresholds`, also "edges": the Canny map of the image, padded with 0.

  With `short_side` / `long_side` (the keep-ratio resize of keep_ratio_size) only the
  image is resized (bilinear); the label stays as stored, padded with ignore to the
  static `label_size`, and "image_size" / "label_size" (int32 (H', W') and (H, W))
  say where each is valid: the prediction is resized back to the label
  (jaxseg.evaluate.resized_back), as the toolboxes score."""
  image, label = check_record(record, where)
  resized = bool(short_side or long_side)
  if resized:
    h, w = keep_ratio_size(label.shape, short_side, long_side)
    if (h, w) != label.shape:
      image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    if label.shape[0] > label_size[0] or label.shape[1] > label_size[1]:
      raise InputDataError(f"{where}: label is {label.shape[0]}x{label.shape[1]}, larger than "
                           f"config input.eval_label_size {tuple(label_size)}")
  if image.shape[0] > size[0] or image.shape[1] > size[1]:
    resize = (f" after the resize to short side {short_side} / long side {long_side}" if resized else "")
    raise InputDataError(f"{where}: image is {image.shape[0]}x{image.shape[1]}{resize}, larger than "
                         f"config input.eval_size {tuple(size)}")
  out = {}
  if canny_thresholds is not None:
    edges = canny(image, canny_thresholds)
    out["edges"] = np.pad(edges, ((0, size[0] - edges.shape[0]), (0, size[1] - edges.shape[1])))
  if not resized:
    image, label = pad_to(image, label, size, ignore_index)
    return {"image": image, "label": label, **out}
  out["image_size"] = np.array(image.shape[:2], np.int32)
  out["label_size"] = np.array(label.shape, np.int32)
  image = np.pad(image, ((0, size[0] - image.shape[0]), (0, size[1] - image.shape[1]), (0, 0)))
  label = np.pad(label, ((0, label_size[0] - label.shape[0]), (0, label_size[1] - label.shape[1])),
                 constant_values=ignore_index)
  return {"image": image, "label": label, **out}
