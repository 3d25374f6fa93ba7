"""Panoptic quality (PQ, SQ, RQ) with the rules of COCO's panoptic evaluation.

Kirillov et al., "Panoptic Segmentation" (CVPR 2019), per category:

  PQ = sum_{(p, g) in TP} IoU(p, g) / (|TP| + |FP| / 2 + |FN| / 2) = SQ x RQ
  SQ = sum_{TP} IoU / |TP|                 (segmentation quality)
  RQ = |TP| / (|TP| + |FP| / 2 + |FN| / 2)  (recognition quality)

and the reported PQ, SQ, RQ are the means over the categories that occur (in the
ground truth or the prediction) of the split; things and stuff are averaged apart.

The rules of COCO's reference evaluator (panopticapi), followed here:
  * a prediction p and a ground-truth segment g of the same category match when
    IoU(p, g) > 0.5, which makes the matching unique without any assignment;
  * the IoU leaves out the void pixels: union = |p| + |g| - |p & g| - |p & void|,
    void being the ground truth's id 0 (unlabelled);
  * crowd ground-truth segments (iscrowd = 1) are never matched, and never count as FN;
  * an unmatched prediction is not a FP when more than half of it lies on void or on
    the crowd region of its own category: (|p & void| + |p & crowd_c(p)|) / |p| > 0.5;
  * ground-truth areas are pixel counts of the map (equal to the "area" of COCO's
    JSON), prediction areas likewise (a prediction's JSON "area" is not read); a
    ground-truth segment listed without pixels in the map is a FN (unless crowd);
  * a segment id in a map but not in its segments is an error, as is a predicted
    segment without pixels.
A category's crowd region is the union of its crowd segments in the image (COCO has at
most one per category and image, where this is panopticapi's rule exactly).

Statistics are sums over images, so `PanopticQuality` takes one image at a time and
holds only a (K, 4) table: no split's maps are kept in memory.
"""
from __future__ import annotations

import math

import numpy as np

from jaxseg.errors import InputDataError

VOID = 0  # the id of unlabelled pixels in COCO's panoptic PNGs
OFFSET = 256 ** 3  # ids are R + 256 G + 256^2 B < 256^3, so gt * OFFSET + pred names a pair
MATCH_IOU = 0.5
IGNORED_FRACTION = 0.5
IOU, TP, FP, FN = range(4)  # columns of the statistics table


def rgb_to_id(rgb):
  """COCO's panoptic PNG (H, W, 3) -> segment ids (H, W): id = R + 256 G + 256^2 B."""
  rgb = np.asarray(rgb).astype(np.int64)
  return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids):
  """Segment ids (H, W) -> (H, W, 3) uint8, the inverse of `rgb_to_id`."""
  ids = np.asarray(ids).astype(np.int64)
  return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], -1).astype(np.uint8)


def _segments_by_id(segments, categories, where):
  """{id: (category_id, iscrowd)} of a list of COCO segments_info entries, checked."""
  table = {}
  for s in segments:
    try:
      sid, cat = int(s["id"]), int(s["category_id"])
    except (KeyError, TypeError, ValueError):
      raise InputDataError(f"{where}: segment {s!r} needs an integer 'id' and 'category_id'") from None
    if sid == VOID:
      raise InputDataError(f"{where}: segment id {VOID} is reserved for unlabelled pixels (category {cat})")
    if sid in table:
      raise InputDataError(f"{where}: segment id {sid} is listed twice")
    if cat not in categories:
      raise InputDataError(f"{where}: segment {sid} has unknown category_id {cat} "
                           f"(the categories are {sorted(categories)[:10]}{' ...' if len(categories) > 10 else ''})")
    table[sid] = (cat, int(s.get("iscrowd", 0)))
  return table


def _areas(ids, segments, where, listed_needs_pixels):
  """{id: pixel count} of the non-void ids of a map; every id must be a listed segment
  and, if `listed_needs_pixels`, every listed segment must have pixels."""
  values, counts = np.unique(ids, return_counts=True)
  areas = {int(v): int(c) for v, c in zip(values, counts) if v != VOID}
  unlisted = sorted(set(areas) - set(segments))
  if unlisted:
    raise InputDataError(f"{where}: segment id {unlisted[0]} is in the PNG but not in the JSON's "
                         f"segments_info" + (f" (nor {unlisted[1:6]})" if len(unlisted) > 1 else ""))
  empty = sorted(set(segments) - set(areas))
  if empty and listed_needs_pixels:
    raise InputDataError(f"{where}: segment id {empty[0]} is in the JSON's segments_info but has no "
                         f"pixel in the PNG" + (f" (nor {empty[1:6]})" if len(empty) > 1 else ""))
  return areas


def _id_map(ids, name, where):
  ids = np.asarray(ids)
  if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
    raise InputDataError(f"{where}: the {name} map must be a 2-D integer array of segment ids "
                         f"(rgb_to_id decodes a PNG), got {ids.dtype} of shape {ids.shape}")
  ids = ids.astype(np.int64)
  if ids.size and (ids.min() < 0 or ids.max() >= OFFSET):
    raise InputDataError(f"{where}: {name} segment ids must lie in [0, 256^3), got {ids.min()}..{ids.max()}")
  return ids


def image_stats(gt_panoptic, gt_segments, pred_panoptic, pred_segments, categories, where="image"):
  """(K, 4) float64 table of one image, rows in the order of `categories` (a list of
  category ids), columns IOU (sum of matched IoUs), TP, FP, FN.

  `*_panoptic`: (H, W) integer segment ids (0 = unlabelled); `*_segments`: COCO
  segments_info entries {"id", "category_id", "iscrowd" (ground truth; default 0)}.
  `where` names the image in error messages.
  """
  row = {c: i for i, c in enumerate(categories)}
  gt_ids = _id_map(gt_panoptic, "ground-truth", where)
  pred_ids = _id_map(pred_panoptic, "predicted", where)
  if gt_ids.shape != pred_ids.shape:
    raise InputDataError(f"{where}: the prediction is {pred_ids.shape[0]}x{pred_ids.shape[1]} but the "
                         f"ground truth {gt_ids.shape[0]}x{gt_ids.shape[1]}")
  gt = _segments_by_id(gt_segments, row, f"{where}, ground truth")
  pred = _segments_by_id(pred_segments, row, f"{where}, prediction")
  # A listed ground-truth segment without pixels is a FN, as in panopticapi; a predicted
  # one is an error there, and here.
  gt_area = _areas(gt_ids, gt, f"{where}, ground truth", listed_needs_pixels=False)
  pred_area = _areas(pred_ids, pred, f"{where}, prediction", listed_needs_pixels=True)

  # |g & p| for every pair of ids that overlap, from one pass over the pixels
  pairs, counts = np.unique(gt_ids.reshape(-1) * OFFSET + pred_ids.reshape(-1), return_counts=True)
  overlap = {(int(k // OFFSET), int(k % OFFSET)): int(n) for k, n in zip(pairs, counts)}
  on_void = {p: n for (g, p), n in overlap.items() if g == VOID}  # |p & void|

  stats = np.zeros((len(categories), 4), np.float64)
  gt_matched, pred_matched = set(), set()
  for (g, p), inter in overlap.items():
    if g == VOID or p == VOID:
      continue
    (g_cat, g_crowd), (p_cat, _) = gt[g], pred[p]
    if g_crowd or g_cat != p_cat:
      continue
    union = pred_area[p] + gt_area[g] - inter - on_void.get(p, 0)  # void pixels are not counted
    iou = inter / union
    if iou > MATCH_IOU:  # > 0.5: at most one partner each, so matching is unique
      stats[row[g_cat], TP] += 1
      stats[row[g_cat], IOU] += iou
      gt_matched.add(g)
      pred_matched.add(p)

  crowd_of = {g: cat for g, (cat, crowd) in gt.items() if crowd}
  for g, (cat, crowd) in gt.items():
    if not crowd and g not in gt_matched:
      stats[row[cat], FN] += 1

  for p, (cat, _) in pred.items():
    if p in pred_matched:
      continue
    # pixels that cannot make p wrong: void, and the crowd region of p's own category
    ignored = on_void.get(p, 0) + sum(overlap.get((g, p), 0) for g, c in crowd_of.items() if c == cat)
    if ignored / pred_area[p] > IGNORED_FRACTION:
      continue
    stats[row[cat], FP] += 1
  return stats


def scores(stats, categories) -> dict:
  """PQ, SQ, RQ of a statistics table: overall, things, stuff, per class.

  `categories`: COCO category entries {"id", "name", "isthing"} in the table's row order.
  A category with no TP, FP or FN (absent from both ground truth and prediction) has
  no scores (None) and is left out of the means, as panopticapi does; `n` counts the
  categories averaged. A mean over no category is NaN.
  """
  stats = np.asarray(stats, np.float64)
  iou, tp, fp, fn = stats.T
  present = tp + fp + fn > 0
  with np.errstate(divide="ignore", invalid="ignore"):
    pq = iou / (tp + fp / 2 + fn / 2)  # = SQ x RQ
    sq = np.where(tp > 0, iou / tp, 0.0)  # a category with no TP has SQ 0, as in panopticapi
    rq = tp / (tp + fp / 2 + fn / 2)
  isthing = np.array([bool(c.get("isthing", 0)) for c in categories], bool)

  out = {}
  for suffix, chosen in (("", np.ones_like(present)), ("_things", isthing), ("_stuff", ~isthing)):
    use = present & chosen
    mean = (lambda v: float(v[use].mean())) if use.any() else (lambda v: math.nan)
    out.update({f"pq{suffix}": mean(pq), f"sq{suffix}": mean(sq), f"rq{suffix}": mean(rq),
                f"n{suffix}": int(use.sum())})
  out["per_class"] = [
      {"id": int(c["id"]), "name": str(c.get("name", c["id"])), "isthing": bool(isthing[k]),
       "pq": float(pq[k]) if present[k] else None, "sq": float(sq[k]) if present[k] else None,
       "rq": float(rq[k]) if present[k] else None,
       "tp": int(tp[k]), "fp": int(fp[k]), "fn": int(fn[k])}
      for k, c in enumerate(categories)]
  return out


class PanopticQuality:
  """Accumulates PQ statistics image by image.

    pq = PanopticQuality(categories)   # COCO's [{"id", "name", "isthing"}, ...]
    for ...: pq.update(gt_ids, gt_segments, pred_ids, pred_segments)
    pq.result()  # {"pq", "sq", "rq", "n", "pq_things", ..., "n_stuff", "per_class": [...]}

  `stats` is the (K, 4) table (IoU sum, TP, FP, FN per category, in the order of
  `categories`): summing the tables of several accumulators (other hosts, worker
  processes) with `merge` gives the statistics of the union of their images.
  """
  name = "panoptic_quality"
  metric_names = tuple(f"{m}{s}" for s in ("", "_things", "_stuff") for m in ("pq", "sq", "rq", "n"))

  def __init__(self, categories):
    self.categories = [dict(c) for c in categories]
    self.category_ids = [int(c["id"]) for c in self.categories]
    if len(set(self.category_ids)) != len(self.category_ids):
      raise InputDataError(f"category ids are not unique: {self.category_ids}")
    self.stats = np.zeros((len(self.categories), 4), np.float64)
    self.images = 0

  def update(self, gt_panoptic, gt_segments, pred_panoptic, pred_segments, image_id=None):
    """Adds one image (see `image_stats` for the arguments); returns its own table."""
    where = "image" if image_id is None else f"image {image_id}"
    stats = image_stats(gt_panoptic, gt_segments, pred_panoptic, pred_segments, self.category_ids, where)
    self.merge(stats, images=1)
    return stats

  def merge(self, other, images=None):
    """Adds another accumulator's statistics, or a (K, 4) table of `images` images."""
    if isinstance(other, PanopticQuality):
      table, images = other.stats, other.images
    else:
      table = np.asarray(other, np.float64)
      if images is None:
        raise ValueError("merge(table) needs the number of images the table sums")
    if table.shape != self.stats.shape:
      raise ValueError(f"statistics of shape {table.shape} cannot join {self.stats.shape}")
    self.stats = self.stats + table
    self.images += int(images)

  def result(self) -> dict:
    return scores(self.stats, self.categories)


def format_table(result) -> str:
  """panopticapi's table (All / Things / Stuff: PQ SQ RQ in %, N), then one row per class."""
  lines = [f"{'':14s}| {'PQ':>6s} {'SQ':>6s} {'RQ':>6s} {'N':>5s}", "-" * 42]
  pct = lambda v: "     -" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:6.1f}"
  for label, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
    lines.append(f"{label:14s}| {pct(result['pq' + suffix])} {pct(result['sq' + suffix])} "
                 f"{pct(result['rq' + suffix])} {result['n' + suffix]:5d}")
  lines += ["", f"{'class':24s}{'kind':>6s} | {'PQ':>6s} {'SQ':>6s} {'RQ':>6s} {'TP':>6s} {'FP':>6s} {'FN':>6s}",
            "-" * 76]
  for c in result["per_class"]:
    lines.append(f"{c['name'][:24]:24s}{'thing' if c['isthing'] else 'stuff':>6s} | {pct(c['pq'])} "
                 f"{pct(c['sq'])} {pct(c['rq'])} {c['tp']:6d} {c['fp']:6d} {c['fn']:6d}")
  return "\n".join(lines)
