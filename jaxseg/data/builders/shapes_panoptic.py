"""`shapes_panoptic`: the embedded `shapes` scenes with panoptic and instance ground truth.

Each image is a cluttered background with, behind the objects, one or two textured
"stuff" regions (a floor below a wavy horizon, a gridded panel), then 2-6 objects of
the five shape classes of `shapes`, each one instance of a "thing" class, drawn in
random order so later objects occlude earlier ones; now and then a crowd: a cluster of
small disks annotated as one iscrowd segment, as COCO does. Everything derives from
(split, index), so every build is identical, and from one source, as in COCO:

  panoptic   segment ids, stored as COCO's PNG (id = R + 256 G + 256^2 B); 0 (void) on a
             1-px band along every boundary between two segments
  segments   per segment: id, category, iscrowd, area (pixels), bbox (x, y, w, h) of
             its visible pixels
  label      the semantic map: each pixel's segment category, 255 where void
  instances  the thing segments (crowds included, iscrowd 1): category, iscrowd, area,
             bbox and segmentation, COCO's uncompressed RLE as JSON text (column-major
             run lengths starting with a run of 0s), the visible mask of the instance

Categories: indices 0..7 = background, disk, square, triangle, ring, cross (as in
`shapes`, so semantic models carry over), floor, panel; things are 1..5.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data.builders import common, shapes

CLASSES = shapes.CLASSES + ("floor", "panel")
ISTHING = (False, True, True, True, True, True, False, False)
PALETTE = shapes.PALETTE + ((128, 128, 0), (145, 30, 180))
BACKGROUND, DISK, FLOOR, PANEL = 0, 1, 6, 7
SPLITS = {"train": (1200, 10), "val": (200, 11)}  # name -> (size, seed stream apart from shapes')
VOID = 0
CROWD_PROBABILITY = 0.2


def segment_id(category, k):
  """(category + 1) * 1000 + k: distinct, never 0 (void), above 255 (all of R, G used)."""
  return (category + 1) * 1000 + k


rle_encode = common.rle_encode  # COCO's uncompressed RLE of a boolean mask


def _floor(rng, h, w):
  """(mask, texture): the image below a wavy horizon, low-saturation planks."""
  yy, xx = np.mgrid[:h, :w]
  horizon = h * rng.uniform(0.55, 0.8) + h * 0.05 * np.sin(xx / w * rng.uniform(3, 9) + rng.uniform(0, 6.3))
  hue = rng.uniform(20, 45)
  a = shapes._hsv_to_rgb(hue, rng.uniform(0.2, 0.45), rng.uniform(0.35, 0.7))
  b = shapes._hsv_to_rgb(hue, rng.uniform(0.2, 0.45), rng.uniform(0.2, 0.5))
  planks = ((yy - horizon) * rng.uniform(0.4, 0.8)).astype(int) // 3 % 2  # bands widening downwards
  return yy > horizon, a + (b - a) * planks[..., None]


def _panel(rng, h, w):
  """(mask, texture): an axis-aligned rectangle with a thin dark grid."""
  ph, pw = int(h * rng.uniform(0.25, 0.5)), int(w * rng.uniform(0.25, 0.5))
  y0, x0 = rng.integers(0, h - ph), rng.integers(0, w - pw)
  mask = np.zeros((h, w), bool)
  mask[y0:y0 + ph, x0:x0 + pw] = True
  yy, xx = np.mgrid[:h, :w]
  cell = rng.integers(5, 10)
  grid = ((yy - y0) % cell == 0) | ((xx - x0) % cell == 0)
  face = shapes._hsv_to_rgb(rng.uniform(180, 240), rng.uniform(0.1, 0.3), rng.uniform(0.6, 0.95))
  return mask, np.where(grid[..., None], face * 0.35, face)


def _crowd(rng, h, w):
  """A cluster of 5-9 small disks of one class: one crowd segment."""
  mask = np.zeros((h, w), np.uint8)
  cx, cy = rng.integers(w // 5, 4 * w // 5), rng.integers(h // 5, 4 * h // 5)
  spread = int(min(h, w) * 0.12)
  for _ in range(rng.integers(5, 10)):
    x, y = cx + rng.integers(-spread, spread + 1), cy + rng.integers(-spread, spread + 1)
    cv2.circle(mask, (int(x), int(y)), int(rng.integers(3, 7)), 1, -1)
  return mask.astype(bool)


def make_example(split: str, index: int) -> dict:
  """Record number `index` of `split`: image, label, panoptic (ids, (H, W) int64),
  segments and instances (dicts of arrays, as the TFDS features)."""
  rng = np.random.default_rng([SPLITS[split][1], index])
  h, w = (int(v) for v in rng.integers(14, 21, 2) * 8)  # 112..160
  image = shapes.background(rng, h, w)
  ids = np.full((h, w), segment_id(BACKGROUND, 0), np.int64)
  drawn = [(segment_id(BACKGROUND, 0), BACKGROUND, 0)]  # (id, category, iscrowd) in drawing order

  stuff = [(FLOOR, _floor), (PANEL, _panel)]
  for k in rng.permutation(2)[:rng.integers(1, 3)]:  # one or two stuff regions, either first
    category, make = stuff[k]
    mask, texture = make(rng, h, w)
    image[mask] = texture[mask]
    ids[mask] = segment_id(category, 0)
    drawn.append((segment_id(category, 0), category, 0))

  crowd_at = rng.integers(0, 4) if rng.random() < CROWD_PROBABILITY else -1
  for k in range(int(rng.integers(2, 7))):
    if k == crowd_at:
      category, mask, crowd = DISK, _crowd(rng, h, w), 1
    else:
      category = int(rng.integers(1, len(shapes.CLASSES)))
      mask, crowd = shapes._shape_mask(rng, category, h, w), 0
    image[mask] = shapes._texture(rng, category, h, w)[mask]
    ids[mask] = segment_id(category, k + 1)
    drawn.append((segment_id(category, k + 1), category, crowd))

  # Void band: pixels within 1 px of a boundary between two segments.
  grown = cv2.dilate(ids.astype(np.float32), np.ones((3, 3), np.uint8))
  shrunk = cv2.erode(ids.astype(np.float32), np.ones((3, 3), np.uint8))
  ids[grown != shrunk] = VOID  # ids < 2^24 are exact in float32
  image = cv2.GaussianBlur(image, (3, 3), 0.6) + rng.normal(0, 4, (h, w, 3))

  segments = {"id": [], "category": [], "iscrowd": [], "area": [], "bbox": []}
  instances = {"category": [], "iscrowd": [], "area": [], "bbox": [], "segmentation": []}
  label = np.full((h, w), 255, np.uint8)
  for sid, category, crowd in drawn:
    mask = ids == sid
    if not mask.any():
      continue  # hidden by later objects (or only a sliver within the void band)
    ys, xs = np.nonzero(mask)
    bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
    label[mask] = category
    for key, value in zip(segments, (sid, category, crowd, int(mask.sum()), bbox)):
      segments[key].append(value)
    if ISTHING[category]:
      for key, value in zip(instances, (category, crowd, float(mask.sum()), bbox, json.dumps(rle_encode(mask)))):
        instances[key].append(value)
  return {
      "image": np.clip(image, 0, 255).astype(np.uint8),
      "label": label,
      "panoptic": ids,
      "file_name": f"{split}_{index:05d}",
      "image_id": int(index),
      "segments": {"id": np.array(segments["id"], np.int64), "category": np.array(segments["category"], np.int64),
                   "iscrowd": np.array(segments["iscrowd"], np.int64), "area": np.array(segments["area"], np.int64),
                   "bbox": np.array(segments["bbox"], np.float32).reshape(-1, 4)},
      "instances": {"category": np.array(instances["category"], np.int64),
                    "iscrowd": np.array(instances["iscrowd"], np.int64),
                    "area": np.array(instances["area"], np.float32),
                    "bbox": np.array(instances["bbox"], np.float32).reshape(-1, 4),
                    "segmentation": list(instances["segmentation"])},
  }


def panoptic_png(ids):
  """(H, W) ids -> COCO's (H, W, 3) uint8 encoding, R + 256 G + 256^2 B."""
  return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], -1).astype(np.uint8)


class ShapesPanoptic(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=common.panoptic_features("png"),
        metadata=tfds.core.MetadataDict(classes=list(CLASSES), palette=[list(p) for p in PALETTE],
                                        category_ids=list(range(len(CLASSES))), isthing=list(ISTHING)),
    )

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split):
    for i in range(SPLITS[split][0]):
      record = make_example(split, i)
      yield i, dict(record, label=record["label"][..., None], panoptic=panoptic_png(record["panoptic"]))
