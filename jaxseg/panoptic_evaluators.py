"""Evaluators of panoptic and instance predictions, in the shape of jaxseg.evaluate's
(init() -> accumulator, update(acc, outputs, batch) -> acc, result(acc) -> scores),
for the families whose `predict` gives them; `Evaluation` runs them over a split.
They are host evaluators (`on_host`): PQ (jaxseg.panoptic_quality, panopticapi's
rules) and COCO AP (pycocotools' COCOeval through jaxseg.coco_ap, which needs every
detection at once, kept as RLE) are numpy code, so `Evaluation` hands them each
batch's outputs and global batch as numpy arrays, the same on every process.

The ground truth is read from the batch entries of jaxseg.data.instances.eval_targets
with panoptic=True: "panoptic" (segment ids, 0 void), "label" (each pixel's category)
and "panoptic_crowd" (crowd pixels). Every segment of the map is a panoptic ground-truth
segment; every thing segment an instance (crowd ones with iscrowd 1), however many, so
no input.max_instances limit reaches the metrics. An image whose map is all void (the
filler entries of the last batch) is left out.

Predictions (`outputs` of the family's predict), per image:
  PQ   "panoptic" (B, H, W) int32, 0 = void and k >= 1 the k-th predicted segment,
       "panoptic_classes" (B, S) int32: the class of segment k at [k - 1]
  AP   "instance_masks" (B, N, H, W) bool/uint8, "instance_classes" (B, N) int32,
       "instance_scores" (B, N) float, "instance_boxes" (B, N, 4) xyxy (pixels, far
       edges exclusive), "instance_valid" (B, N) bool
Classes are indices into `categories` (COCO entries {"id", "name", "isthing"}).

The ground truth is at each image's stored size, on a padded canvas (input.eval_label_size),
and so are the predictions. With "label_size" in the batch (the stored (H, W)), both are
cut to it first: COCO scores the image at its own size. Without it, predicted pixels on
the padding count as void, which leaves every IoU as on the unpadded image (void pixels
are not in the union); an unmatched prediction lying mostly on the padding is then not a
false positive.
"""
from __future__ import annotations

import numpy as np

from jaxseg import coco_ap, panoptic_quality

# config.evals entries these evaluators take (for a family's EVALUATORS)
OPTIONS = {"panoptic_quality": {"every": 0}, "coco_ap": {"every": 0, "iou_types": ("bbox", "segm")}}


def stored(batch, b):
  """(rows, columns) slice of image `b`'s stored size in the batch (all with no "label_size")."""
  if "label_size" not in batch:
    return slice(None), slice(None)
  h, w = (int(v) for v in batch["label_size"][b])
  return slice(0, h), slice(0, w)


def ground_truth(panoptic, label, crowd):
  """(ids, [{"id", "category", "iscrowd"}]) of one image's ground-truth maps: each
  segment's category and crowd flag are those of its first pixel."""
  ids = np.asarray(panoptic).astype(np.int64)
  values, first = np.unique(ids.ravel(), return_index=True)
  keep = values != panoptic_quality.VOID
  label, crowd = np.asarray(label).ravel()[first[keep]], np.asarray(crowd).ravel()[first[keep]]
  return ids, [{"id": int(v), "category": int(c), "iscrowd": int(z)} for v, c, z in zip(values[keep], label, crowd)]


class PanopticQualityEvaluator:
  """PQ, SQ, RQ (overall, things, stuff) and per-class PQ of outputs["panoptic"] /
  ["panoptic_classes"]."""
  name = "panoptic_quality"
  on_host = True

  def __init__(self, categories):
    self.categories = [dict(c) for c in categories]
    self.category_ids = [int(c["id"]) for c in self.categories]

  def init(self):
    return np.zeros((len(self.categories), 4), np.float64)

  def image_stats(self, gt_panoptic, label, crowd, pred_panoptic, pred_classes, where="image"):
    """One image's (K, 4) table, or None for an all-void (filler) image."""
    ids, segments = ground_truth(gt_panoptic, label, crowd)
    if not segments:
      return None
    gt_segments = [{"id": s["id"], "category_id": self.category_ids[s["category"]], "iscrowd": s["iscrowd"]}
                   for s in segments]
    pred_ids = np.asarray(pred_panoptic).astype(np.int64)
    pred_classes = np.asarray(pred_classes)
    present = [int(k) for k in np.unique(pred_ids) if k != panoptic_quality.VOID]
    if present and present[-1] > len(pred_classes):
      raise ValueError(f"{where}: predicted segment {present[-1]} but only {len(pred_classes)} segment classes")
    pred_segments = [{"id": k, "category_id": self._category_id(pred_classes[k - 1], where, k)} for k in present]
    return panoptic_quality.image_stats(ids, gt_segments, pred_ids, pred_segments, self.category_ids, where)

  def _category_id(self, k, where, segment):
    if not 0 <= k < len(self.category_ids):
      raise ValueError(f"{where}: predicted segment {segment} has class {k}, not in 0..{len(self.category_ids) - 1}")
    return self.category_ids[int(k)]

  def update(self, acc, outputs, batch):
    for b in range(batch["panoptic"].shape[0]):
      ys, xs = stored(batch, b)
      stats = self.image_stats(batch["panoptic"][b, ys, xs], batch["label"][b, ys, xs],
                               batch["panoptic_crowd"][b, ys, xs], outputs["panoptic"][b, ys, xs],
                               outputs["panoptic_classes"][b], where=f"batch image {b}")
      if stats is not None:
        acc = acc + stats
    return acc

  def result(self, acc):
    out = panoptic_quality.scores(np.asarray(acc, np.float64), self.categories)
    per_class = out.pop("per_class")
    out["per_class_pq"] = [c["pq"] for c in per_class]
    return out


class CocoAPEvaluator:
  """COCO box and mask AP (AP, AP50, AP75, APs/m/l, per class) of outputs["instance_*"]
  against the thing segments of the ground-truth map."""
  name = "coco_ap"
  on_host = True

  def __init__(self, categories, iou_types=("bbox", "segm")):
    self.categories = [dict(c) for c in categories]
    self.isthing = np.array([bool(c.get("isthing", 1)) for c in self.categories])
    self.iou_types = tuple(iou_types)

  def init(self):
    return coco_ap.CocoAP(self.categories, self.iou_types)

  def add_image(self, acc, gt_panoptic, label, crowd, masks, classes, scores, boxes, valid):
    """Adds one image to the CocoAP `acc`; False for an all-void (filler) image."""
    ids, segments = ground_truth(gt_panoptic, label, crowd)
    if not segments:
      return False
    things = [s for s in segments if self.isthing[s["category"]]]
    valid = np.asarray(valid, bool)
    h, w = ids.shape
    acc.update(
        len(acc.images) + 1, h, w,
        gt_classes=[s["category"] for s in things], gt_iscrowd=[s["iscrowd"] for s in things],
        gt_masks=np.array([ids == s["id"] for s in things], np.uint8).reshape(-1, h, w),
        pred_classes=np.asarray(classes)[valid], pred_scores=np.asarray(scores)[valid],
        pred_boxes=np.asarray(boxes)[valid], pred_masks=np.asarray(masks)[valid].astype(np.uint8))
    return True

  def update(self, acc, outputs, batch):
    for b in range(batch["panoptic"].shape[0]):
      ys, xs = stored(batch, b)
      self.add_image(acc, batch["panoptic"][b, ys, xs], batch["label"][b, ys, xs], batch["panoptic_crowd"][b, ys, xs],
                     outputs["instance_masks"][b][:, ys, xs],
                     *(outputs[f"instance_{k}"][b] for k in ("classes", "scores", "boxes", "valid")))
    return acc

  def result(self, acc):
    return acc.result()
