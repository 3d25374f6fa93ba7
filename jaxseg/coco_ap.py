"""COCO box AP and mask AP through pycocotools, COCO's own evaluator.

AP is the area under the interpolated precision-recall curve (101 recall points),
averaged over the categories and over the IoU thresholds 0.50:0.05:0.95; AP50 and
AP75 at one threshold; APs / APm / APl over objects of area < 32^2, 32^2..96^2,
> 96^2 px (areas of the ground truth; of the prediction, for unmatched predictions).
Every number here is pycocotools' `COCOeval` on the COCO-format ground truth and
results this module writes: nothing of the protocol is re-implemented.

`CocoAP` takes one image at a time, keeping masks only as RLE (run-length) strings, and
gives COCO's results JSON (`results()`) and ground truth JSON (`ground_truth()`) besides
the metrics, so that any of it can be checked or re-scored with COCO's tools.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from jaxseg.errors import InputDataError

# COCOeval.stats[0:6], in its order
STAT_NAMES = ("ap", "ap50", "ap75", "aps", "apm", "apl")
IOU_TYPES = {"bbox": "box", "segm": "mask"}  # pycocotools' name -> the prefix of our metric names


def encode_masks(masks):
  """(N, H, W) binary masks -> N compressed RLE dicts {"size": [H, W], "counts": str}."""
  masks = np.asarray(masks)
  if masks.shape[0] == 0:
    return []
  rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
  return [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


def xyxy_to_xywh(boxes):
  """(N, 4) corner boxes (x0, y0, x1, y1), x1 and y1 the far edges -> COCO's (x, y, w, h)."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)


def _array(value, shape_tail, n, name, where, dtype=None):
  value = np.asarray(value, dtype)
  if value.ndim != 1 + len(shape_tail) or (n is not None and value.shape[0] != n) or \
     tuple(value.shape[1:]) != tuple(shape_tail):
    expected = ("N" if n is None else str(n),) + tuple(str(s) for s in shape_tail)
    raise InputDataError(f"{where}: {name} must have shape ({', '.join(expected)}), got {value.shape}")
  return value


class CocoAP:
  """COCO box and mask AP of a split, fed image by image.

    ap = CocoAP(categories)          # [{"id", "name"}, ...]; classes index this list
    for ...: ap.update(image_id, height, width,
                       gt_classes=..., gt_masks=..., gt_boxes=..., gt_iscrowd=...,
                       pred_classes=..., pred_scores=..., pred_boxes=..., pred_masks=...)
    ap.result()  # {"box_ap", "box_ap50", ..., "mask_apl", "per_class_box_ap", ...}

  Classes are indices into `categories` (0..K-1); the JSON carries their COCO ids.
  Boxes are xyxy in pixels of the image (far edges exclusive, as a mask's box
  [x0, y0, x0 + w, y0 + h]); masks (N, H, W) binary at the image's size. Ground-truth
  boxes may be None: then the masks' tight boxes. Ground-truth areas (for APs/m/l) are
  mask areas, as in COCO's annotations. COCOeval keeps the 100 best-scored predictions
  per image and category; limiting to 100 per image is the model's business.
  `iou_types`: ("bbox", "segm") or one of them (no masks needed for "bbox" alone).
  """
  name = "coco_ap"

  def __init__(self, categories, iou_types=("bbox", "segm")):
    self.categories = [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in categories]
    if len({c["id"] for c in self.categories}) != len(self.categories):
      raise InputDataError(f"category ids are not unique: {[c['id'] for c in self.categories]}")
    unknown = set(iou_types) - set(IOU_TYPES)
    if unknown or not iou_types:
      raise ValueError(f"iou_types must be among {sorted(IOU_TYPES)}, got {iou_types}")
    self.iou_types = tuple(iou_types)
    self.metric_names = tuple(f"{IOU_TYPES[t]}_{s}" for t in self.iou_types for s in STAT_NAMES)
    self.images, self.annotations, self.detections = [], [], []
    self._seen = set()
    self.summary = ""  # COCOeval's printed summary of the last result()

  @property
  def uses_masks(self):
    return "segm" in self.iou_types

  def update(self, image_id, height, width, *, gt_classes, gt_masks=None, gt_boxes=None, gt_iscrowd=None,
             pred_classes, pred_scores, pred_boxes=None, pred_masks=None):
    """Adds one image: its instances (valid entries only: a padded set is sliced first)."""
    where = f"image {image_id}"
    if image_id in self._seen:
      raise InputDataError(f"{where} was given twice")
    h, w = int(height), int(width)
    k = len(self.categories)
    annotations, detections = [], []  # kept only once the whole image is valid

    gt_classes = _array(gt_classes, (), None, "gt_classes", where, np.int64)
    n = gt_classes.shape[0]
    gt_iscrowd = (np.zeros(n, np.int64) if gt_iscrowd is None
                  else _array(gt_iscrowd, (), n, "gt_iscrowd", where, np.int64))
    gt_rles = encode_masks(_array(gt_masks, (h, w), n, "gt_masks", where)) if gt_masks is not None else None
    if gt_rles is None and (self.uses_masks or gt_boxes is None):
      raise InputDataError(f"{where}: gt_masks are needed (for mask AP, for boxes when gt_boxes is None, "
                           "and for the areas of APs/m/l)")
    if gt_boxes is None:
      gt_xywh = np.array([mask_utils.toBbox(r) for r in gt_rles]).reshape(-1, 4) if n else np.zeros((0, 4))
    else:
      gt_xywh = xyxy_to_xywh(_array(gt_boxes, (4,), n, "gt_boxes", where, np.float64))
    for j in range(n):
      if not 0 <= gt_classes[j] < k:
        raise InputDataError(f"{where}: ground-truth instance {j} has class {gt_classes[j]}, not in 0..{k - 1}")
      area = float(mask_utils.area(gt_rles[j])) if gt_rles is not None else float(gt_xywh[j, 2] * gt_xywh[j, 3])
      if area <= 0:
        raise InputDataError(f"{where}: ground-truth instance {j} has an empty "
                             f"{'mask' if gt_rles is not None else 'box'}")
      ann = {"id": len(self.annotations) + len(annotations) + 1,  # COCOeval takes id 0 for "unmatched"
             "image_id": image_id, "category_id": self.categories[gt_classes[j]]["id"],
             "iscrowd": int(gt_iscrowd[j]), "area": area, "bbox": [float(v) for v in gt_xywh[j]]}
      if gt_rles is not None:
        ann["segmentation"] = gt_rles[j]
      annotations.append(ann)

    pred_classes = _array(pred_classes, (), None, "pred_classes", where, np.int64)
    m = pred_classes.shape[0]
    pred_scores = _array(pred_scores, (), m, "pred_scores", where, np.float64)
    for needed, value, name in (("bbox", pred_boxes, "pred_boxes"), ("segm", pred_masks, "pred_masks")):
      if needed in self.iou_types and value is None:
        raise InputDataError(f"{where}: {name} are needed for {IOU_TYPES[needed]} AP")
    pred_xywh = xyxy_to_xywh(_array(pred_boxes, (4,), m, "pred_boxes", where, np.float64)) \
        if "bbox" in self.iou_types else None
    pred_rles = encode_masks(_array(pred_masks, (h, w), m, "pred_masks", where)) if self.uses_masks else None
    for j in range(m):
      if not 0 <= pred_classes[j] < k:
        raise InputDataError(f"{where}: prediction {j} has class {pred_classes[j]}, not in 0..{k - 1}")
      if not math.isfinite(pred_scores[j]):
        raise InputDataError(f"{where}: prediction {j} has score {pred_scores[j]}")
      det = {"image_id": image_id, "category_id": self.categories[pred_classes[j]]["id"],
             "score": float(pred_scores[j])}
      if pred_xywh is not None:
        det["bbox"] = [float(v) for v in pred_xywh[j]]
      if pred_rles is not None:
        det["segmentation"] = pred_rles[j]
      detections.append(det)
    self.annotations += annotations
    self.detections += detections
    self.images.append({"id": image_id, "height": h, "width": w})
    self._seen.add(image_id)

  def merge(self, other: "CocoAP"):
    """Adds the images of another accumulator (another host's, a worker's)."""
    if other.categories != self.categories or other.iou_types != self.iou_types:
      raise ValueError("CocoAP.merge: the accumulators differ in categories or iou_types")
    both = self._seen & other._seen
    if both:
      raise InputDataError(f"image {sorted(both, key=str)[0]} is in both accumulators")
    start = len(self.annotations)
    self.annotations += [dict(a, id=start + i + 1) for i, a in enumerate(other.annotations)]
    self.detections += copy.deepcopy(other.detections)
    self.images += copy.deepcopy(other.images)
    self._seen |= other._seen

  def results(self) -> list:
    """COCO's results format: [{"image_id", "category_id", "score", "bbox" (x, y, w, h),
    "segmentation" (RLE)}], what `--mode predict` writes and COCO's servers take."""
    return copy.deepcopy(self.detections)

  def ground_truth(self) -> dict:
    """The ground truth as a COCO instances JSON (images, annotations, categories)."""
    return copy.deepcopy({"images": self.images, "annotations": self.annotations, "categories": self.categories})

  def write(self, results_path, ground_truth_path=None):
    with open(results_path, "w") as f:
      json.dump(self.results(), f)
    if ground_truth_path:
      with open(ground_truth_path, "w") as f:
        json.dump(self.ground_truth(), f)

  def result(self) -> dict:
    """COCOeval's AP, AP50, AP75, APs, APm, APl (fractions; NaN where COCO gives -1: no
    ground truth in the range) for each iou type, and the per-class AP."""
    out, summaries = {}, []
    with contextlib.redirect_stdout(io.StringIO()) as printed:
      gt = COCO()
      gt.dataset = self.ground_truth()
      gt.createIndex()
      for iou_type, prefix in ((t, IOU_TYPES[t]) for t in self.iou_types):
        # For mask AP the detections carry no box: with one, COCO would take the box's
        # area as the prediction's area (its loadRes), not the mask's.
        key = "bbox" if iou_type == "bbox" else "segmentation"
        dets = [{k: v for k, v in d.items() if k in ("image_id", "category_id", "score", key)}
                for d in self.detections]
        dt = gt.loadRes(dets) if dets else _empty_results(gt)
        evaluator = COCOeval(gt, dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        start = printed.tell()
        evaluator.summarize()
        summaries.append(f"{prefix} AP\n" + printed.getvalue()[start:])
        for name, value in zip(STAT_NAMES, evaluator.stats[:6]):
          out[f"{prefix}_{name}"] = float(value) if value >= 0 else math.nan
        by_id = dict(zip(evaluator.params.catIds, _per_class_ap(evaluator)))
        out[f"per_class_{prefix}_ap"] = [by_id.get(c["id"]) for c in self.categories]
    self.summary = "\n".join(summaries)
    return out


def _empty_results(gt):
  """A results object with no detection (COCO's loadRes needs at least one)."""
  dt = COCO()
  dt.dataset = {"images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]),
                "annotations": []}
  dt.createIndex()
  return dt


def _per_class_ap(evaluator):
  """AP over IoU 0.50:0.95 per category of params.catIds (area all, 100 detections):
  COCOeval's precision table averaged as its summarize() does, None for a class with no
  ground truth."""
  precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (T, R, K) at area "all", maxDets 100
  out = []
  for k in range(precision.shape[2]):
    p = precision[:, :, k]
    out.append(float(p[p > -1].mean()) if (p > -1).any() else None)
  return out
