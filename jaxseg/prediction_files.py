"""Predictions in the standard files: COCO's panoptic format (one PNG per image, id = R
+ 256 G + 256^2 B, and a JSON of segments_info) and COCO's results JSON (instances with
RLE masks), which `python -m jaxseg.tools.panoptic_eval`, panopticapi, pycocotools
and COCO's servers read. Writers take one image at a time; `close()` writes the JSON.
"""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from jaxseg.coco_ap import encode_masks, xyxy_to_xywh
from jaxseg.errors import InputDataError
from jaxseg.panoptic_quality import VOID, id_to_rgb


def image_names(input_dir):
  """The files of `input_dir` that --mode predict reads, sorted (hidden ones left out)."""
  if not os.path.isdir(input_dir):
    raise InputDataError(f"--input {input_dir} is not a folder")
  names = sorted(n for n in os.listdir(input_dir) if not n.startswith("."))
  if not names:
    raise InputDataError(f"no images in {input_dir}")
  return names


def read_rgb(input_dir, name):
  """Image `name` of `input_dir` as uint8 RGB (H, W, 3)."""
  import cv2
  path = os.path.join(input_dir, name)
  bgr = cv2.imread(path, cv2.IMREAD_COLOR)
  if bgr is None:
    raise InputDataError(f"cannot read image {path}")
  return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class PanopticWriter:
  """OUTPUT_DIR/<file_name>.png per image and OUTPUT_DIR/panoptic.json {"annotations":
  [{"image_id", "file_name", "segments_info": [{"id", "category_id", "iscrowd", "area",
  "bbox" (x, y, w, h)}]}], "categories"}. `add(image_id, file_name, panoptic,
  classes)`: (H, W) segment ids, 0 = void, k >= 1 of class `classes[k - 1]` (indices
  into `categories`), as the panoptic evaluator's outputs."""

  def __init__(self, output_dir, categories, json_name="panoptic.json"):
    self.output_dir, self.json_path = output_dir, os.path.join(output_dir, json_name)
    self.categories = [dict(c) for c in categories]
    self.annotations = []
    os.makedirs(output_dir, exist_ok=True)

  def add(self, image_id, file_name, panoptic, classes):
    ids = np.asarray(panoptic).astype(np.int64)
    classes = np.asarray(classes)
    values, counts = np.unique(ids, return_counts=True)
    segments = []
    for k, area in zip(values.tolist(), counts.tolist()):
      if k == VOID:
        continue
      if not 1 <= k <= len(classes) or not 0 <= classes[k - 1] < len(self.categories):
        raise InputDataError(f"image {image_id}: segment {k} has no class among the {len(classes)} given, or "
                             f"one outside 0..{len(self.categories) - 1}")
      ys, xs = np.nonzero(ids == k)
      segments.append({"id": k, "category_id": int(self.categories[int(classes[k - 1])]["id"]), "iscrowd": 0,
                       "area": int(area), "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1),
                                                   int(np.ptp(ys) + 1)]})
    png = f"{os.path.splitext(str(file_name))[0]}.png"
    Image.fromarray(id_to_rgb(ids)).save(os.path.join(self.output_dir, png))
    self.annotations.append({"image_id": image_id, "file_name": png, "segments_info": segments})

  def close(self):
    with open(self.json_path, "w") as f:
      json.dump({"annotations": self.annotations, "categories": self.categories}, f)
    return self.json_path


class InstanceResultsWriter:
  """COCO's results JSON at `path`: [{"image_id", "category_id", "score", "bbox" (x, y,
  w, h), "segmentation" (compressed RLE)}]. `add(image_id, classes, scores, boxes,
  masks)`: one image's valid instances (N,), (N,), (N, 4) xyxy, (N, H, W) binary."""

  def __init__(self, path, categories):
    self.path, self.categories, self.results = path, [dict(c) for c in categories], []

  def add(self, image_id, classes, scores, boxes, masks=None):
    classes, scores = np.asarray(classes).reshape(-1), np.asarray(scores, np.float64).reshape(-1)
    boxes = xyxy_to_xywh(boxes)
    rles = encode_masks(masks) if masks is not None else [None] * len(classes)
    if not len(classes) == len(scores) == len(boxes) == len(rles):
      raise InputDataError(f"image {image_id}: {len(classes)} classes, {len(scores)} scores, {len(boxes)} boxes "
                           f"and {len(rles)} masks")
    for cls, score, box, rle in zip(classes, scores, boxes, rles):
      result = {"image_id": image_id, "category_id": int(self.categories[int(cls)]["id"]), "score": float(score),
                "bbox": [float(v) for v in box]}
      if rle is not None:
        result["segmentation"] = rle
      self.results.append(result)

  def close(self):
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    with open(self.path, "w") as f:
      json.dump(self.results, f)
    return self.path
