"""COCO box and mask AP (jaxseg.coco_ap): hand-worked values, and pycocotools' COCOeval
run here directly on the JSON files the module writes."""
import contextlib
import io
import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from jaxseg.coco_ap import CocoAP, encode_masks, xyxy_to_xywh
from jaxseg.errors import InputDataError

CATEGORIES = [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}]  # not in id order on purpose
DOG, CAR = 0, 1
H, W = 160, 200
NAMES = ("ap", "ap50", "ap75", "aps", "apm", "apl")


def box_mask(x0, y0, x1, y1):
  m = np.zeros((H, W), bool)
  m[y0:y1, x0:x1] = True
  return m


def instances(*items):
  """(classes, boxes xyxy, masks) of (class, (x0, y0, x1, y1)) rectangles."""
  classes = np.array([c for c, _ in items], np.int64).reshape(-1)
  boxes = np.array([b for _, b in items], np.float64).reshape(-1, 4)
  masks = np.array([box_mask(*b) for _, b in items], bool).reshape(-1, H, W)
  return classes, boxes, masks


def add(ap, image_id, gt, pred, scores, iscrowd=None):
  (gc, gb, gm), (pc, pb, pm) = instances(*gt), instances(*pred)
  ap.update(image_id, H, W, gt_classes=gc, gt_boxes=gb, gt_masks=gm, gt_iscrowd=iscrowd,
            pred_classes=pc, pred_scores=np.asarray(scores, float), pred_boxes=pb, pred_masks=pm)


def cocoeval_on_files(ap, tmp_path):
  """COCOeval of the JSON `ap` writes: {"box_ap": ..., "mask_ap": ...}, by COCO's tools alone."""
  ap.write(tmp_path / "results.json", tmp_path / "gt.json")
  out = {}
  with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(str(tmp_path / "gt.json"))
    for iou_type, prefix in (("bbox", "box"), ("segm", "mask")):
      dets = json.loads((tmp_path / "results.json").read_text())
      if iou_type == "segm":
        for d in dets:
          del d["bbox"]  # else COCO takes the box area as the mask's
      e = COCOeval(gt, gt.loadRes(dets), iou_type)
      e.evaluate()
      e.accumulate()
      e.summarize()
      out.update({f"{prefix}_{n}": float(v) if v >= 0 else math.nan for n, v in zip(NAMES, e.stats[:6])})
  return out


def same(direct, ours):
  """Every number COCOeval gave directly equals ours."""
  return all((math.isnan(v) and math.isnan(ours[k])) or v == pytest.approx(ours[k], abs=1e-12)
             for k, v in direct.items())


ONE = pytest.approx(1.0, abs=1e-12)  # COCOeval's means of ones round to 1 - 2e-16


SMALL, MEDIUM, LARGE = (10, 10, 15, 14), (40, 20, 80, 60), (60, 30, 190, 150)  # 20, 1600, 15600 px


def test_perfect_predictions_score_one(tmp_path):
  ap = CocoAP(CATEGORIES)
  add(ap, 1, [(DOG, SMALL), (CAR, MEDIUM), (DOG, LARGE)], [(DOG, SMALL), (CAR, MEDIUM), (DOG, LARGE)], [0.9, 0.8, 0.7])
  add(ap, 2, [(CAR, LARGE)], [(CAR, LARGE)], [0.5])
  r = ap.result()
  assert all(r[f"{p}_{n}"] == ONE for p in ("box", "mask") for n in NAMES), r
  assert r["per_class_box_ap"] == [ONE, ONE] == r["per_class_mask_ap"]
  assert same(cocoeval_on_files(ap, tmp_path), r)
  assert ap.metric_names == tuple(f"{p}_{n}" for p in ("box", "mask") for n in NAMES)
  assert "Average Precision" in ap.summary


def test_results_json_is_coco_format():
  ap = CocoAP(CATEGORIES)
  add(ap, 7, [(CAR, MEDIUM)], [(CAR, MEDIUM), (DOG, SMALL)], [0.4, 0.3])
  det = ap.results()[1]
  assert (det["image_id"], det["category_id"], det["score"]) == (7, 18, 0.3)
  assert det["bbox"] == [10.0, 10.0, 5.0, 4.0]  # xyxy (10, 10, 15, 14) -> xywh
  assert (mask_utils.decode(det["segmentation"]) == box_mask(*SMALL)).all()
  assert mask_utils.toBbox(det["segmentation"]).tolist() == det["bbox"]
  gt = ap.ground_truth()["annotations"][0]
  assert (gt["id"], gt["category_id"], gt["area"], gt["iscrowd"]) == (1, 3, 1600.0, 0)
  json.dumps(ap.results())  # RLE counts are strings


def test_missing_instance(tmp_path):
  """Two dogs, one found: recall 1/2, precision 1 up to it: AP = 51 of COCO's 101 recall points."""
  ap = CocoAP(CATEGORIES)
  add(ap, 1, [(DOG, MEDIUM), (DOG, LARGE)], [(DOG, LARGE)], [0.9])
  r = ap.result()
  assert r["box_ap"] == pytest.approx(51 / 101) == r["mask_ap"] and r["box_ap50"] == pytest.approx(51 / 101)
  assert r["box_apl"] == ONE and r["box_apm"] == 0.0 and math.isnan(r["box_aps"])  # no small ground truth
  assert r["per_class_box_ap"][CAR] is None
  assert same(cocoeval_on_files(ap, tmp_path), r)


def test_duplicate_detection(tmp_path):
  """A duplicate with a better score and IoU 0.72 takes the match up to IoU threshold 0.70;
  above, it is a FP ranked before the exact box: AP 1 at 5 thresholds, 1/2 at the other 5."""
  ap = CocoAP(CATEGORIES)
  x0, y0, x1, y1 = LARGE
  duplicate = (x0, y0, x1, y0 + round(0.72 * (y1 - y0)))  # 120 rows of which 86: IoU 86/120 = 0.717
  add(ap, 1, [(CAR, LARGE)], [(CAR, duplicate), (CAR, LARGE)], [0.9, 0.8])
  r = ap.result()
  assert r["box_ap50"] == ONE and r["box_ap75"] == pytest.approx(0.5) and r["box_ap"] == pytest.approx(0.75)
  assert r["mask_ap"] == pytest.approx(0.75)
  assert same(cocoeval_on_files(ap, tmp_path), r)

  lower = CocoAP(CATEGORIES)  # the same duplicate ranked after the exact box costs nothing
  add(lower, 1, [(CAR, LARGE)], [(CAR, duplicate), (CAR, LARGE)], [0.7, 0.8])
  assert lower.result()["box_ap"] == ONE


def test_shuffled_scores(tmp_path):
  """Two cars found and one false detection: ranked last AP is 1; ranked first, precision
  is 2/3 at full recall and the interpolated curve is 2/3 throughout."""
  gt = [(CAR, MEDIUM), (CAR, LARGE)]
  pred = [(CAR, MEDIUM), (CAR, LARGE), (CAR, (150, 0, 190, 20))]
  ranked_last, ranked_first = CocoAP(CATEGORIES), CocoAP(CATEGORIES)
  add(ranked_last, 1, gt, pred, [0.9, 0.8, 0.1])
  add(ranked_first, 1, gt, pred, [0.5, 0.4, 0.95])
  assert ranked_last.result()["box_ap"] == ONE
  r = ranked_first.result()
  assert r["box_ap"] == pytest.approx(2 / 3) and r["mask_ap"] == pytest.approx(2 / 3)
  assert same(cocoeval_on_files(ranked_first, tmp_path), r)


def test_random_scenes_match_cocoeval_on_the_written_json(tmp_path):
  """Many images with jittered, missed, duplicated, misclassified and extra detections,
  crowd ground truth, and masks that are not their boxes."""
  rng = np.random.default_rng(0)
  ap, halves = CocoAP(CATEGORIES), (CocoAP(CATEGORIES), CocoAP(CATEGORIES))
  for image_id in range(1, 16):
    gt_c, gt_b, gt_m, crowd = [], [], [], []
    for i in range(rng.integers(1, 6)):
      x0, y0 = rng.integers(0, W - 20), rng.integers(0, H - 20)
      x1, y1 = x0 + rng.integers(10, min(100, W - x0)), y0 + rng.integers(10, min(100, H - y0))
      if i == 0 and image_id % 3 == 0:  # a large object now and then
        x0, y0 = rng.integers(0, 40, 2)
        x1, y1 = x0 + rng.integers(120, 150), y0 + rng.integers(115, 125)
      m = box_mask(x0, y0, x1, y1)
      m[y0:(y0 + y1) // 2, x0:(x0 + x1) // 2] = False  # an L shape: its box is not its mask
      gt_c.append(rng.integers(0, 2)), gt_b.append((x0, y0, x1, y1)), gt_m.append(m)
      crowd.append(int(rng.random() < 0.1))
    pc, pb, pm, ps = [], [], [], []
    for c, b, m in zip(gt_c, gt_b, gt_m):
      for _ in range(rng.choice([0, 1, 1, 1, 2])):  # missed, found, duplicated
        dx, dy = rng.integers(-2, 3, 2)
        pc.append(c if rng.random() > 0.1 else 1 - c)
        pb.append(np.clip(np.array(b) + [dx, dy, dx, dy], 0, [W, H, W, H]))
        pm.append(np.roll(m, (dy, dx), (0, 1)))
        ps.append(rng.random())
    for _ in range(rng.integers(0, 3)):
      x0, y0 = rng.integers(0, W - 30), rng.integers(0, H - 30)
      box = (x0, y0, x0 + 25, y0 + 25)
      pc.append(rng.integers(0, 2)), pb.append(box), pm.append(box_mask(*box))
      ps.append(rng.random())
    image = dict(gt_classes=np.array(gt_c), gt_boxes=np.array(gt_b), gt_masks=np.array(gt_m),
                 gt_iscrowd=np.array(crowd), pred_classes=np.array(pc, np.int64), pred_scores=np.array(ps),
                 pred_boxes=np.array(pb, np.float64).reshape(-1, 4), pred_masks=np.array(pm, bool).reshape(-1, H, W))
    ap.update(image_id, H, W, **image)
    halves[image_id % 2].update(image_id, H, W, **image)
  r = ap.result()
  halves[0].merge(halves[1])  # the same images in two accumulators, merged
  assert halves[0].result() == r and len(halves[0].annotations) == len(ap.annotations)
  assert 0.2 < r["box_ap"] < 0.95 and 0.2 < r["mask_ap"] < 0.95 and r["box_ap"] != r["mask_ap"]
  assert not any(math.isnan(r[f"{p}_{n}"]) for p in ("box", "mask") for n in NAMES)  # every size occurs
  assert same(cocoeval_on_files(ap, tmp_path), r)


def test_no_prediction_scores_zero():
  ap = CocoAP(CATEGORIES)
  add(ap, 1, [(DOG, MEDIUM)], [], [])
  r = ap.result()
  assert r["box_ap"] == 0.0 == r["mask_ap"] and math.isnan(r["box_apl"])


def test_box_only():
  ap = CocoAP(CATEGORIES, iou_types=("bbox",))
  (gc, gb, _), (pc, pb, _) = instances((DOG, MEDIUM)), instances((DOG, MEDIUM))
  ap.update(1, H, W, gt_classes=gc, gt_boxes=gb, pred_classes=pc, pred_scores=[0.9], pred_boxes=pb)
  r = ap.result()
  assert r["box_ap"] == ONE and "mask_ap" not in r and ap.metric_names == tuple(f"box_{n}" for n in NAMES)


def test_conversions():
  assert xyxy_to_xywh([[1, 2, 4, 8]]).tolist() == [[1, 2, 3, 6]]
  masks = np.random.default_rng(0).random((3, 7, 5)) > 0.5
  assert all((mask_utils.decode(r) == m).all() for r, m in zip(encode_masks(masks), masks))
  assert encode_masks(np.zeros((0, 7, 5), bool)) == []


def test_bad_input_names_the_image():
  ap = CocoAP(CATEGORIES)
  add(ap, 5, [(DOG, MEDIUM)], [(DOG, MEDIUM)], [0.9])
  with pytest.raises(InputDataError, match="image 5 was given twice"):
    add(ap, 5, [(DOG, MEDIUM)], [(DOG, MEDIUM)], [0.9])
  (gc, gb, gm), (pc, pb, pm) = instances((DOG, MEDIUM)), instances((DOG, MEDIUM))
  image6 = lambda **change: ap.update(6, H, W, **{**dict(gt_classes=gc, gt_boxes=gb, gt_masks=gm, pred_classes=pc,
                                                         pred_scores=[0.9], pred_boxes=pb, pred_masks=pm), **change})
  with pytest.raises(InputDataError, match=r"image 6: pred_masks must have shape \(1, 160, 200\), got \(1, 160, 199\)"):
    image6(pred_masks=pm[:, :, :-1])
  with pytest.raises(InputDataError, match=r"image 6: prediction 0 has class 2, not in 0..1"):
    image6(pred_classes=pc + 2)
  with pytest.raises(InputDataError, match=r"image 6: ground-truth instance 0 has an empty mask"):
    image6(gt_masks=gm & False)
  with pytest.raises(InputDataError, match=r"image 6: pred_scores must have shape \(1\)"):
    image6(pred_scores=[0.9, 0.1])
  with pytest.raises(InputDataError, match=r"image 6: pred_masks are needed for mask AP"):
    image6(pred_masks=None)
  assert len(ap.images) == len(ap.annotations) == len(ap.detections) == 1  # nothing of image 6 was kept
  image6()
  assert len(ap.images) == 2


def test_sizes_are_mask_areas(tmp_path):
  """An L-shaped object: box 100 x 100 (large by its box) but 7500 px (medium by its
  mask). COCO sizes ground truth by its annotation's area, the mask's."""
  ap = CocoAP(CATEGORIES)
  mask = box_mask(20, 20, 120, 120)
  mask[20:70, 20:70] = False
  box = np.array([[20, 20, 120, 120]], np.float64)
  ap.update(1, H, W, gt_classes=[DOG], gt_boxes=box, gt_masks=mask[None],
            pred_classes=[DOG], pred_scores=[0.9], pred_boxes=box, pred_masks=mask[None])
  r = ap.result()
  assert ap.ground_truth()["annotations"][0]["area"] == 7500
  assert r["box_apm"] == ONE and r["mask_apm"] == ONE and math.isnan(r["box_apl"]) and math.isnan(r["mask_apl"])
  assert same(cocoeval_on_files(ap, tmp_path), r)
