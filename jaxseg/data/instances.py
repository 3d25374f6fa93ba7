"""Instance and panoptic ground truth of panoptic records as static-shape batch
entries, with the augmentation that keeps image, semantic map, panoptic map, instance
masks and boxes consistent. Family-neutral: the transforms of the mask-classification
and detection families call `train_targets` / `eval_targets`.

A panoptic record (jaxseg.data.builders.common.panoptic_features) has "image",
"panoptic" (COCO's PNG: id = R + 256 G + 256^2 B, 0 = void) and "segments" {id,
category, iscrowd, ...}. It is decoded into a segment-index map, uint16 (0 = void, k =
the k-th listed segment), on which every geometric step acts as on a semantic label
(nearest at pixel centres, jaxseg.data.transforms.scale_rotate_crop); the semantic,
panoptic and instance targets are then all read off the augmented index map, so they
agree pixel for pixel by construction, and boxes are recomputed from the cropped masks.
Instances cropped to nothing are gone with their pixels.

Batch entries of one record (M = input.max_instances, s = input.instance_mask_stride):
  image             (h, w, 3) uint8
  label             (h, w) uint8: each pixel's segment category; ignore on void and padding
  panoptic          (h, w) int32 segment ids, 0 on void and padding  } only with
  panoptic_crowd    (h, w) uint8: 1 on the pixels of crowd segments     } panoptic=True
  instance_classes  (M,) int32 categories (0 in unused entries)
  instance_masks    (M, h / s, w / s) uint8 in {0, 1}: the index map read at the centre
                    pixel (s // 2, s // 2) of every s x s cell, so each low-resolution
                    mask is the full one subsampled
  instance_boxes    (M, 4) float32 x0, y0, x1, y1 in crop pixels, of the full-resolution
                    mask, far edges exclusive (jaxseg.coco_ap's convention)
  instance_iscrowd  (M,) int32
  instance_valid    (M,) bool
  count_instances_dropped  () int32: instances beyond M in the crop, the smallest by area
                    (never an error); train.py logs its running total (families.COUNT_PREFIX)
  count_bad_segments () int32, with input.skip_bad_records only: segments left out as bad
  image_size        (2,) int32, with image_size=True only: the rows and columns of the
                    canvas the image covers (its top-left region; the rest is padding),
                    which detectors clip their boxes to
  label_size        (2,) int32, evaluation with image_size=True only: the record's
                    stored (H, W), the region of the label canvas the ground truth
                    covers

Evaluation follows COCO's protocol (detectron2's and torchvision's evaluation, the
semantic family's): the image is resized for the model, the ground truth stays at the
record's stored size, padded to the static label canvas (transforms.eval_label_canvas:
input.eval_label_size, (0, 0) = input.eval_size; input.eval_size itself where eval images
are not resized), and the families map their predictions back to the stored size.

Which segments are instances is the caller's: "things" (instance tasks, detection) or
"all" (panoptic / mask-classification training, stuff segments included). Crowd
segments are kept with iscrowd 1; what a loss does with them is the family's business.

Bad input: a segment id in the panoptic map that the segments do not list, a listed
segment without pixels (an empty mask), a repeated id, a category outside the classes:
an InputDataError naming the record and the segment; with input.skip_bad_records the
segment is left out (its pixels void) and counted in count_bad_segments instead.
"""
from __future__ import annotations

import cv2
import numpy as np

from jaxseg.data import transforms
from jaxseg.errors import ConfigError, InputDataError
from jaxseg.panoptic_quality import rgb_to_id

VOID = 0
SCALE_MODES = ("ratio", "short_side", "fit")
WHICH = ("things", "all")


def thing_classes(builder, num_classes):
  """(K,) bool "isthing" of the dataset's metadata (panoptic builders store it)."""
  meta = builder.info.metadata or {}
  isthing = np.asarray(meta.get("isthing", []), bool)
  if isthing.shape != (num_classes,):
    raise ConfigError(f"dataset '{builder.name}' has {len(isthing)} 'isthing' entries in its metadata, "
                      f"config dataset.num_classes is {num_classes} (instance targets need a panoptic dataset)")
  return isthing


def decode(record, num_classes, where="record", skip_bad=False):
  """(image (H, W, 3) uint8, index (H, W) uint16, segments {"id", "category",
  "iscrowd"} int64 arrays, number of bad segments left out) of a panoptic record."""
  image, rgb = np.asarray(record["image"]), np.asarray(record["panoptic"])
  if image.ndim != 3 or image.shape[2] != 3 or rgb.shape != image.shape:
    raise InputDataError(f"{where}: image {image.shape} and panoptic map {rgb.shape} do not match "
                         "(expected HxWx3 both)")
  seg = record["segments"]
  ids = np.asarray(seg["id"], np.int64).reshape(-1)
  category = np.asarray(seg["category"], np.int64).reshape(-1)
  crowd = np.asarray(seg["iscrowd"], np.int64).reshape(-1)
  if not len(ids) == len(category) == len(crowd):
    raise InputDataError(f"{where}: segments have {len(ids)} ids, {len(category)} categories and "
                         f"{len(crowd)} iscrowd flags")
  if len(ids) >= np.iinfo(np.uint16).max:
    raise InputDataError(f"{where}: {len(ids)} segments, more than the {np.iinfo(np.uint16).max - 1} an image may have")
  bad = np.zeros(len(ids), bool)  # segments left out
  problems = []

  def flag(message, which):
    problems.append(message)
    bad[which] = True

  for k in np.flatnonzero((category < 0) | (category >= num_classes)):
    flag(f"segment {ids[k]} has category {category[k]}, outside [0, {num_classes})", k)
  for k in np.flatnonzero(ids == VOID):
    flag(f"segment id {VOID} (void) is listed as a segment (category {category[k]})", k)
  _, first = np.unique(ids, return_index=True)
  for k in sorted(set(range(len(ids))) - set(first.tolist())):
    flag(f"segment id {ids[k]} is listed twice", k)

  pixel_ids = rgb_to_id(rgb)
  order = np.argsort(ids, kind="stable")
  sorted_ids = ids[order]
  pos = np.searchsorted(sorted_ids, pixel_ids).clip(0, max(len(ids) - 1, 0))
  if len(ids):
    found = (sorted_ids[pos] == pixel_ids) & (pixel_ids != VOID)
    index = np.where(found, order[pos] + 1, 0)
  else:
    found, index = np.zeros(pixel_ids.shape, bool), np.zeros(pixel_ids.shape, np.int64)
  unlisted = np.unique(pixel_ids[~found & (pixel_ids != VOID)])
  if len(unlisted):
    problems.append(f"segment id {unlisted[0]} is in the panoptic map but not in the record's segments" +
                    (f" (nor {unlisted[1:6].tolist()})" if len(unlisted) > 1 else ""))
  areas = np.bincount(index.ravel(), minlength=len(ids) + 1)[1:]
  for k in np.flatnonzero((areas == 0) & ~bad):
    flag(f"segment {ids[k]} (category {category[k]}) has no pixel in the panoptic map (an empty mask)", k)
  if problems and not skip_bad:
    raise InputDataError(f"{where}: {problems[0]}" + (f"; and {len(problems) - 1} more" if len(problems) > 1 else "")
                         + "; set input.skip_bad_records=True to leave such segments out")
  if bad.any():
    index = np.where(bad[np.maximum(index - 1, 0)], 0, index)
  segments = {"id": ids, "category": np.where(bad, 0, category), "iscrowd": crowd}
  return image, index.astype(np.uint16), segments, int(bad.sum()) + len(unlisted)


def draw_ratio(rng, shape, cfg):
  """The resize ratio of a (H, W) record by input.scale_mode:
    "ratio"       scale_range (in steps of scale_step) x the record's size, or x
                  base_size / its short side (as the semantic pipeline);
    "short_side"  the short side drawn from short_side_range (in steps of
                  short_side_step; 0 = continuous) with the long side at most
                  max_long_side (0 = unbounded): the detection toolboxes' multi-scale
                  training (PANet 400..1200; Mask2Former's ADE20K 256..1024 in steps of
                  32 under 2048, Cityscapes 512..2048 under 4096);
    "fit"         large-scale jitter: scale_range (COCO: 0.1..2.0) x the ratio that fits
                  the record into crop_size, which the crop then fills (Mask2Former COCO's
                  1024 x 1024 ResizeScale + FixedSizeCrop)."""
  h, w = shape
  mode = cfg.get("scale_mode", "ratio")
  if mode == "ratio":
    ratio = transforms.draw_scale(rng, cfg.scale_range, cfg.scale_step)
    return ratio * cfg.base_size / min(h, w) if cfg.get("base_size", 0) > 0 else ratio
  if mode == "short_side":
    ratio = transforms.draw_scale(rng, cfg.short_side_range, cfg.short_side_step) / min(h, w)
    return min(ratio, cfg.max_long_side / max(h, w)) if cfg.max_long_side > 0 else ratio
  ch, cw = cfg.crop_size
  return transforms.draw_scale(rng, cfg.scale_range, cfg.scale_step) * min(ch / h, cw / w)


def check_input(cfg):
  """ConfigError naming the first input.* key of the instance pipeline with a bad value."""
  transforms.check_train_input(cfg)
  if cfg.scale_mode not in SCALE_MODES:
    raise ConfigError(f"config key input.scale_mode must be one of {', '.join(SCALE_MODES)}, got '{cfg.scale_mode}'")
  lo, hi = cfg.short_side_range
  if cfg.scale_mode == "short_side" and not 0 < lo <= hi:
    raise ConfigError(f"config key input.short_side_range must be (lo, hi) with 0 < lo <= hi, got {(lo, hi)}")
  if cfg.max_instances < 1:
    raise ConfigError(f"config key input.max_instances must be >= 1, got {cfg.max_instances}")
  s = cfg.instance_mask_stride
  for key, size in (("crop_size", cfg.crop_size), ("eval_size", cfg.eval_size),
                    ("eval_label_size", transforms.eval_label_canvas(cfg))):
    if s < 1 or any(v % s for v in size):
      raise ConfigError(f"config key input.instance_mask_stride {s} must be >= 1 and divide input.{key} "
                        f"{tuple(size)}")


def targets(index, segments, isthing, max_instances, stride=1, which="things", panoptic=False, ignore_index=255):
  """The batch entries (see the module docstring) of an (h, w) segment-index map."""
  if which not in WHICH:
    raise ValueError(f"which must be one of {WHICH}, got {which!r}")
  category = segments["category"]
  n = len(category)
  out = {"label": np.concatenate([[ignore_index], category]).astype(np.uint8)[index]}
  if panoptic:
    out["panoptic"] = np.concatenate([[VOID], segments["id"]]).astype(np.int32)[index]
    out["panoptic_crowd"] = np.concatenate([[0], segments["iscrowd"]]).astype(np.uint8)[index]
  areas = np.bincount(index.ravel(), minlength=n + 1)[1:]
  candidates = areas > 0
  if which == "things":
    candidates &= np.asarray(isthing, bool)[category]
  candidates = np.flatnonzero(candidates)
  largest = candidates[np.argsort(-areas[candidates], kind="stable")]
  kept, m = largest[:max_instances], min(len(largest), max_instances)
  boxes = np.zeros((max_instances, 4), np.float32)
  boxes[:m] = segment_boxes(index, n)[kept]
  # Masks by one scatter over the (subsampled) pixels: row slot[k] of segment k (M: none).
  small = index[stride // 2::stride, stride // 2::stride]
  slot = np.full(n + 1, max_instances, np.int64)
  slot[kept + 1] = np.arange(m)
  masks = np.zeros((max_instances + 1, small.size), np.uint8)
  masks[slot[small.ravel()], np.arange(small.size)] = 1
  pad = lambda x, dtype: np.concatenate([x, np.zeros(max_instances - m, x.dtype)]).astype(dtype)
  out.update(
      instance_classes=pad(category[kept], np.int32),
      instance_masks=masks[:max_instances].reshape(max_instances, *small.shape),
      instance_boxes=boxes,
      instance_iscrowd=pad(segments["iscrowd"][kept], np.int32),
      instance_valid=np.arange(max_instances) < m,
      count_instances_dropped=np.int32(len(largest) - m))
  return out


def segment_boxes(index, n):
  """(n, 4) float32 boxes x0, y0, x1, y1 (far edges exclusive) of segments 1..n of an
  index map ((0, 0, 0, 0) for those without pixels), from the runs of equal values
  along the rows: few per row in a segmentation, so far fewer than the pixels."""
  h, w = index.shape
  starts = np.empty((h, w), bool)
  starts[:, 0] = True
  np.not_equal(index[:, 1:], index[:, :-1], out=starts[:, 1:])
  flat = np.flatnonzero(starts)  # (faster than np.nonzero's two index arrays)
  rows, cols = np.divmod(flat, w)
  values = index.ravel()[flat].astype(np.int64)
  ends = np.append(cols[1:], w)
  ends[np.append(rows[1:] != rows[:-1], True)] = w  # a row's last run ends at its edge
  lo = np.full((n + 1, 2), np.iinfo(np.int64).max)
  hi = np.zeros((n + 1, 2), np.int64)
  np.minimum.at(lo, values, np.stack([cols, rows], 1))
  np.maximum.at(hi, values, np.stack([ends, rows + 1], 1))
  boxes = np.concatenate([lo, hi], 1)[1:]
  boxes[hi[1:, 0] == 0] = 0
  return boxes.astype(np.float32)


def train_targets(record, rng, config, isthing, which="things", panoptic=False, where="record", image_size=False):
  """A training record's batch entries: random scale (input.scale_mode, see
  draw_ratio) + rotation (input.rotate_degrees) + crop with padding (image
  input.crop_image_fill, label ignore, panoptic void) in one resampling of the crop
  window -> flip -> blur -> photometric distortion, every geometric step applied alike
  to the image and the segment-index map; then `targets`. Random draws come from
  `rng` only (grain's per-(seed, position) generator), so the stream is reproducible
  and resumes exactly. With input.cat_max_ratio < 1, crops where one category covers
  more than that fraction of the labelled pixels are redrawn.

  image_size=True (detection): the batch also has "image_size", the region of the crop
  the image covers (its padding, and what a rotation uncovers, marked by an index one
  past the segments until it is made void); the flip then mirrors that region only,
  the padding staying bottom / right, as the detection toolboxes flip before padding."""
  c, d = config.input, config.dataset
  image, index, segments, bad = decode(record, d.num_classes, where, c.skip_bad_records)
  outside = len(segments["category"]) + 1  # the crop's padding, with image_size (< 2^16: see decode)
  classes = np.concatenate([[d.ignore_index], segments["category"], [d.ignore_index]]).astype(np.uint8)
  ratio = draw_ratio(rng, index.shape, c)
  image, index = transforms.scale_rotate_crop(
      image, index, rng, tuple(c.crop_size), c.scale_range, ratio=ratio, rotate_degrees=c.rotate_degrees,
      rotate_prob=c.rotate_prob, image_fill=tuple(c.rotate_image_fill), cat_max_ratio=c.cat_max_ratio,
      ignore_index=d.ignore_index, label_fill=outside if image_size else VOID, classes=classes,
      pad_image=tuple(c.crop_image_fill))
  if image_size:
    inside = index != outside
    h, w = int(inside.any(1).sum()), int(inside.any(0).sum())
    index = np.where(inside, index, VOID).astype(np.uint16)
  else:
    h, w = index.shape
  if c.flip and rng.random() < 0.5:
    if image_size:  # the image region alone (numpy copies overlapping operands first)
      image[:h, :w], index[:h, :w] = image[:h, :w][:, ::-1], index[:h, :w][:, ::-1]
    else:
      image, index = image[:, ::-1], index[:, ::-1]
  image = transforms.blur_and_colour(image, rng, c)
  out = {"image": np.ascontiguousarray(image),
         **targets(np.ascontiguousarray(index), segments, isthing, c.max_instances, c.instance_mask_stride, which,
                   panoptic, d.ignore_index)}
  if image_size:
    out["image_size"] = np.array([h, w], np.int32)
  if c.skip_bad_records:
    out["count_bad_segments"] = np.int32(bad)
  return out


def eval_targets(record, config, isthing, which="things", panoptic=False, where="record", image_size=False):
  """An evaluation record's batch entries: the full image, resized (bilinear) by the
  keep-ratio rule of the semantic eval transform (input.eval_short_side /
  eval_long_side) and padded with 0 to the static input.eval_size; the ground truth
  (`targets` of the segment map) at the record's stored size, padded (label ignore,
  panoptic void) to the label canvas (see the module docstring), where the predictions
  are scored. image_size=True: with "image_size", the resized image's (h, w), and
  "label_size", the stored (H, W)."""
  c, d = config.input, config.dataset
  image, index, segments, bad = decode(record, d.num_classes, where, c.skip_bad_records)
  size, label_canvas = tuple(c.eval_size), transforms.eval_label_canvas(c)
  stored, resizes = index.shape, bool(c.eval_short_side or c.eval_long_side)
  if stored[0] > label_canvas[0] or stored[1] > label_canvas[1]:
    key = "input.eval_size" if not resizes else "input.eval_label_size" if any(c.get("eval_label_size", (0, 0))) \
        else "input.eval_label_size ((0, 0): input.eval_size)"
    raise InputDataError(f"{where}: image is {stored[0]}x{stored[1]} as stored, larger than config {key} "
                         f"{label_canvas}, the canvas of the ground truth (scored at the stored size)")
  if resizes:
    h, w = transforms.keep_ratio_size(stored, c.eval_short_side, c.eval_long_side)
    if (h, w) != stored:
      image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
  if image.shape[0] > size[0] or image.shape[1] > size[1]:
    raise InputDataError(f"{where}: image is {image.shape[0]}x{image.shape[1]} after the eval resize, larger "
                         f"than config input.eval_size {size}")
  resized = image.shape[:2]
  image = np.pad(image, ((0, size[0] - resized[0]), (0, size[1] - resized[1]), (0, 0)))
  index = np.pad(index, ((0, label_canvas[0] - stored[0]), (0, label_canvas[1] - stored[1])), constant_values=VOID)
  out = {"image": image, **targets(index, segments, isthing, c.max_instances, c.instance_mask_stride, which,
                                   panoptic, d.ignore_index)}
  if image_size:
    out["image_size"] = np.array(resized, np.int32)
    out["label_size"] = np.array(stored, np.int32)
  if c.skip_bad_records:
    out["count_bad_segments"] = np.int32(bad)
  return out


def blank(config, train, panoptic=False):
  """The batch entries of an empty record (all void), for a family's `example`: the
  image on the crop / eval canvas, the ground truth on the crop / label canvas."""
  c = config.input
  size = tuple(c.crop_size if train else c.eval_size)
  labels = size if train else transforms.eval_label_canvas(c)
  segments = {"id": np.zeros(0, np.int64), "category": np.zeros(0, np.int64), "iscrowd": np.zeros(0, np.int64)}
  out = {"image": np.zeros((*size, 3), np.uint8),
         **targets(np.zeros(labels, np.uint16), segments, np.zeros(0, bool), c.max_instances, c.instance_mask_stride,
                   "all", panoptic, config.dataset.ignore_index)}
  return {k: v for k, v in out.items() if not k.startswith("count_")}
