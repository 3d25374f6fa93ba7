"""PQ / SQ / RQ (jaxseg.panoptic_quality): hand-worked images for each of COCO's rules
(matching, void, crowd, stuff), accumulation over images, and a straightforward
mask-by-mask implementation of the definitions on random panoptic maps."""
import math

import numpy as np
import pytest

from jaxseg.errors import InputDataError
from jaxseg.panoptic_quality import PanopticQuality, id_to_rgb, image_stats, rgb_to_id

PERSON, CAR, SKY = 1, 2, 3
CATEGORIES = [{"id": PERSON, "name": "person", "isthing": 1}, {"id": CAR, "name": "car", "isthing": 1},
              {"id": SKY, "name": "sky", "isthing": 0}]


def seg(sid, cat, crowd=0):
  return {"id": sid, "category_id": cat, "iscrowd": crowd}


def evaluate(*images):
  pq = PanopticQuality(CATEGORIES)
  for image in images:
    pq.update(*image)
  return pq.result()


def per_class(result, name):
  return next(c for c in result["per_class"] if c["name"] == name)


def halves():
  """4x6: a person in columns 0-1 (8 px, id 1), sky in columns 2-5 (16 px, id 2)."""
  gt = np.zeros((4, 6), np.int64)
  gt[:, :2], gt[:, 2:] = 1, 2
  return gt, [seg(1, PERSON), seg(2, SKY)]


def test_perfect_prediction_scores_one():
  gt, segments = halves()
  pred = np.where(gt == 1, 7, 9)  # the ids need not agree, only the pixels and categories
  r = evaluate((gt, segments, pred, [seg(7, PERSON), seg(9, SKY)]))
  assert (r["pq"], r["sq"], r["rq"], r["n"]) == (1.0, 1.0, 1.0, 2)
  assert (r["pq_things"], r["n_things"], r["pq_stuff"], r["n_stuff"]) == (1.0, 1, 1.0, 1)
  assert per_class(r, "car")["pq"] is None  # absent from both: no score, not averaged


def test_one_false_positive():
  gt, segments = halves()
  pred = np.where(gt == 1, 10, 11)
  pred[1:3, 3:5] = 12  # a car inside the sky: FP, and the sky loses 4 of its 16 px
  r = evaluate((gt, segments, pred, [seg(10, PERSON), seg(11, SKY), seg(12, CAR)]))
  car, sky, person = per_class(r, "car"), per_class(r, "sky"), per_class(r, "person")
  assert (car["tp"], car["fp"], car["fn"], car["pq"], car["sq"], car["rq"]) == (0, 1, 0, 0.0, 0.0, 0.0)
  assert sky["tp"] == 1 and sky["pq"] == pytest.approx(12 / 16) and sky["rq"] == 1.0
  assert person["pq"] == 1.0
  assert r["pq"] == pytest.approx((1 + 0.75 + 0) / 3) and r["rq"] == pytest.approx(2 / 3) and r["n"] == 3
  assert (r["pq_things"], r["sq_things"], r["rq_things"], r["n_things"]) == (0.5, 0.5, 0.5, 2)
  assert (r["pq_stuff"], r["sq_stuff"], r["rq_stuff"]) == (pytest.approx(0.75), pytest.approx(0.75), 1.0)


def test_iou_of_one_half_does_not_match():
  gt, segments = halves()
  pred = np.where(gt == 1, 0, 11)
  pred[:2, :2] = 10  # half of the person: IoU = 4 / 8, not > 0.5
  person = per_class(evaluate((gt, segments, pred, [seg(10, PERSON), seg(11, SKY)])), "person")
  assert (person["tp"], person["fp"], person["fn"], person["pq"]) == (0, 1, 1, 0.0)


def crowd_image():
  """4x6: a crowd of people in columns 0-2 (id 5), sky in columns 3-5 (id 2)."""
  gt = np.zeros((4, 6), np.int64)
  gt[:, :3], gt[:, 3:] = 5, 2
  return gt, [seg(5, PERSON, crowd=1), seg(2, SKY)]


def test_crowd_region():
  gt, segments = crowd_image()
  pred = np.zeros_like(gt)
  pred[:, 3:] = 22
  pred[:, :2] = 20  # a person inside the people's crowd: neither TP nor FP
  pred[:, 2] = 21  # a car inside it: the crowd is of another class, so a FP
  r = evaluate((gt, segments, pred, [seg(20, PERSON), seg(21, CAR), seg(22, SKY)]))
  person, car = per_class(r, "person"), per_class(r, "car")
  assert (person["tp"], person["fp"], person["fn"], person["pq"]) == (0, 0, 0, None)  # a crowd is no FN
  assert (car["fp"], car["pq"]) == (1, 0.0)
  assert (r["pq"], r["n"]) == (0.5, 2)


def test_crowd_exactly_half_is_a_false_positive():
  gt, segments = crowd_image()
  pred = np.zeros_like(gt)
  pred[:, 3:] = 22
  pred[:2, 2:4] = 20  # 4 px: 2 in the crowd, 2 on the sky; 2/4 is not more than half
  r = evaluate((gt, segments, pred, [seg(20, PERSON), seg(22, SKY)]))
  assert per_class(r, "person")["fp"] == 1
  assert per_class(r, "sky")["pq"] == pytest.approx(10 / 12)


def test_void_overlap_excludes_a_prediction_and_leaves_the_iou():
  gt = np.zeros((4, 6), np.int64)
  gt[:, :2], gt[:, 3:] = 1, 2  # column 2 is void
  segments = [seg(1, PERSON), seg(2, SKY)]
  pred = np.zeros_like(gt)
  pred[:, :3] = 10  # the person and the void column: IoU = 8 / (12 + 8 - 8 - 4) = 1
  pred[:, 3:] = 11
  r = evaluate((gt, segments, pred, [seg(10, PERSON), seg(11, SKY)]))
  assert per_class(r, "person")["pq"] == 1.0 and r["pq"] == 1.0

  gt[:, :3] = 0  # now columns 0-2 are void: a car there is mostly void, not a FP
  pred[:, :3] = 12
  r = evaluate((gt, [seg(2, SKY)], pred, [seg(12, CAR), seg(11, SKY)]))
  assert per_class(r, "car")["pq"] is None and (r["pq"], r["n"]) == (1.0, 1)
  pred[:2, 3] = 12  # 12 void px of 14: still more than half
  assert per_class(evaluate((gt, [seg(2, SKY)], pred, [seg(12, CAR), seg(11, SKY)])), "car")["fp"] == 0
  pred[:, :3] = 0
  pred[:, 2:5] = 12  # 4 void px of 12: a FP
  car = per_class(evaluate((gt, [seg(2, SKY)], pred, [seg(12, CAR), seg(11, SKY)])), "car")
  assert car["fp"] == 1


def test_stuff_class_split_in_two():
  gt = np.full((4, 6), 2, np.int64)
  pred = np.full((4, 6), 30, np.int64)
  pred[:, 4:] = 31  # the sky predicted as two segments: 16 px (IoU 2/3, TP) and 8 px (FP)
  r = evaluate((gt, [seg(2, SKY)], pred, [seg(30, SKY), seg(31, SKY)]))
  sky = per_class(r, "sky")
  assert (sky["tp"], sky["fp"], sky["fn"]) == (1, 1, 0)
  assert sky["sq"] == pytest.approx(2 / 3) and sky["rq"] == pytest.approx(1 / 1.5)
  assert sky["pq"] == pytest.approx((2 / 3) / 1.5) == r["pq_stuff"] == r["pq"]
  assert r["n_things"] == 0 and math.isnan(r["pq_things"])


def test_two_images_accumulated_equal_one_pass():
  """Statistics add over images: two images one after the other score as their
  side-by-side concatenation (ids made distinct) does in one pass."""
  a = (*halves(), np.where(halves()[0] == 1, 10, 11), [seg(10, PERSON), seg(11, SKY)])
  gt_b, segments_b = crowd_image()
  pred_b = np.zeros_like(gt_b)
  pred_b[:, 3:] = 22
  pred_b[:, 1:3] = 21
  b = (gt_b, segments_b, pred_b, [seg(21, CAR), seg(22, SKY)])
  shift = lambda ids: np.where(ids > 0, ids + 100, 0)
  shifted = lambda segments: [dict(s, id=s["id"] + 100) for s in segments]
  joined = (np.concatenate([a[0], shift(b[0])], 1), a[1] + shifted(b[1]),
            np.concatenate([a[2], shift(b[2])], 1), a[3] + shifted(b[3]))
  assert evaluate(a, b) == evaluate(joined) == evaluate(b, a)
  one, other = PanopticQuality(CATEGORIES), PanopticQuality(CATEGORIES)
  one.update(*a)
  other.update(*b)
  one.merge(other)
  assert one.result() == evaluate(joined) and one.images == 2


def test_listed_ground_truth_without_pixels_is_a_false_negative():
  gt, segments = halves()
  pred = np.where(gt == 1, 10, 11)
  r = evaluate((gt, segments + [seg(3, CAR), seg(4, CAR, crowd=1)], pred, [seg(10, PERSON), seg(11, SKY)]))
  car = per_class(r, "car")
  assert (car["tp"], car["fp"], car["fn"], car["pq"]) == (0, 0, 1, 0.0)


def test_rgb_ids_round_trip():
  ids = np.array([[0, 1, 255, 256], [65535, 65536, 256 ** 3 - 1, 1234567]])
  rgb = id_to_rgb(ids)
  assert rgb.dtype == np.uint8 and rgb[0, 3].tolist() == [0, 1, 0] and (rgb_to_id(rgb) == ids).all()


def test_bad_input_names_the_image_and_segment():
  gt, segments = halves()
  pred = np.where(gt == 1, 10, 11)
  with pytest.raises(InputDataError, match=r"image 42, prediction: segment id 11 is in the PNG but not in"):
    evaluate((gt, segments, pred, [seg(10, PERSON)]) + (42,))
  with pytest.raises(InputDataError, match=r"image 42, prediction: segment 11 has unknown category_id 99"):
    evaluate((gt, segments, pred, [seg(10, PERSON), seg(11, 99)], 42))
  with pytest.raises(InputDataError, match=r"image 42, prediction: segment id 12 is in the JSON's segments_info but"):
    evaluate((gt, segments, pred, [seg(10, PERSON), seg(11, SKY), seg(12, CAR)], 42))
  with pytest.raises(InputDataError, match=r"image 42, ground truth: segment id 2 is in the PNG"):
    evaluate((gt, segments[:1], pred, [seg(10, PERSON), seg(11, SKY)], 42))
  with pytest.raises(InputDataError, match=r"image 42: the prediction is 4x5 but the ground truth 4x6"):
    evaluate((gt, segments, pred[:, :5], [seg(10, PERSON), seg(11, SKY)], 42))
  with pytest.raises(InputDataError, match=r"image 42, prediction: segment id 10 is listed twice"):
    evaluate((gt, segments, pred, [seg(10, PERSON), seg(10, PERSON), seg(11, SKY)], 42))


# -- an independent implementation of the definitions, one boolean mask per segment --

def reference_stats(gt, gt_segments, pred, pred_segments, category_ids):
  """Per category [sum IoU, TP, FP, FN], straight from the definitions on masks; and
  how many unmatched predictions lay mostly on void or crowd."""
  stats = {c: [0.0, 0, 0, 0] for c in category_ids}
  void = gt == 0
  matched_pred, excused = set(), 0
  for g in gt_segments:
    g_mask = gt == g["id"]
    if g["iscrowd"]:
      continue
    match = None
    for p in pred_segments:
      p_mask = pred == p["id"]
      if p["category_id"] != g["category_id"]:
        continue
      iou = (g_mask & p_mask).sum() / ((g_mask | p_mask) & ~void).sum()  # void pixels out of the union
      if iou > 0.5:
        match = (p["id"], iou)
    if match:
      matched_pred.add(match[0])
      stats[g["category_id"]][0] += match[1]
      stats[g["category_id"]][1] += 1
    else:
      stats[g["category_id"]][3] += 1
  for p in pred_segments:
    if p["id"] in matched_pred:
      continue
    p_mask = pred == p["id"]
    crowd = np.isin(gt, [g["id"] for g in gt_segments if g["iscrowd"] and g["category_id"] == p["category_id"]])
    if (p_mask & (void | crowd)).sum() / p_mask.sum() <= 0.5:
      stats[p["category_id"]][2] += 1
    else:
      excused += 1
  return np.array([stats[c] for c in category_ids], np.float64), excused


def reference_pq(stats, isthing):
  """Mean PQ, SQ, RQ over the categories present, all / things / stuff."""
  out = {}
  for suffix, chosen in (("", [True] * len(isthing)), ("_things", isthing), ("_stuff", [not t for t in isthing])):
    rows = [(iou, tp, fp, fn) for (iou, tp, fp, fn), c in zip(stats, chosen) if c and tp + fp + fn > 0]
    out["pq" + suffix] = np.mean([iou / (tp + fp / 2 + fn / 2) for iou, tp, fp, fn in rows]) if rows else math.nan
    out["sq" + suffix] = np.mean([iou / tp if tp else 0.0 for iou, tp, fp, fn in rows]) if rows else math.nan
    out["rq" + suffix] = np.mean([tp / (tp + fp / 2 + fn / 2) for iou, tp, fp, fn in rows]) if rows else math.nan
    out["n" + suffix] = len(rows)
  return out


def random_image(rng, categories, h=24, w=32):
  """A ground-truth map (stuff background bands, rectangles of things, some crowd, some
  void) and a prediction derived from it with moved, missed, relabelled, split and extra
  segments, so that every rule is exercised."""
  stuff = [c["id"] for c in categories if not c["isthing"]]
  things = [c["id"] for c in categories if c["isthing"]]
  gt = np.zeros((h, w), np.int64)
  segments, next_id = [], 1
  cuts = sorted(rng.choice(np.arange(1, w), rng.integers(0, 3), replace=False).tolist())
  for lo, hi in zip([0] + cuts, cuts + [w]):
    gt[:, lo:hi] = next_id
    segments.append(seg(next_id, int(rng.choice(stuff))))
    next_id += 1
  for _ in range(rng.integers(1, 7)):
    y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
    gt[y:y + rng.integers(3, 10), x:x + rng.integers(3, 12)] = next_id
    segments.append(seg(next_id, int(rng.choice(things)), crowd=int(rng.random() < 0.2)))
    next_id += 1
  y, x = rng.integers(0, h), rng.integers(0, w)
  gt[y:y + rng.integers(0, 6), x:x + rng.integers(0, 8)] = 0  # void
  present = set(np.unique(gt).tolist())
  segments = [s for s in segments if s["id"] in present]

  pred = np.zeros_like(gt)
  pred_segments, pid = [], 1000
  for s in segments:
    mask = gt == s["id"]
    if rng.random() < 0.15:
      continue  # missed
    if rng.random() < 0.5:
      mask = np.roll(mask, (rng.integers(-1, 2), rng.integers(-1, 2)), (0, 1))
    category = s["category_id"] if rng.random() > 0.15 else int(rng.choice([c["id"] for c in categories]))
    pred[mask] = pid
    pred_segments.append(seg(pid, category))
    pid += 1
    if rng.random() < 0.2:  # split off the bottom part as its own segment
      ys = np.nonzero(pred == pid - 1)[0]
      if ys.size:
        pred[(pred == pid - 1) & (np.arange(h)[:, None] > np.median(ys))] = pid
        pred_segments.append(seg(pid, category))
        pid += 1
  for _ in range(rng.integers(0, 3)):  # extra predictions anywhere
    y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
    pred[y:y + rng.integers(1, 8), x:x + rng.integers(1, 8)] = pid
    pred_segments.append(seg(pid, int(rng.choice([c["id"] for c in categories]))))
    pid += 1
  noise = rng.random((h, w)) < 0.03
  pred[noise] = 0  # unlabelled predicted pixels
  present = set(np.unique(pred).tolist())
  return gt, segments, pred, [s for s in pred_segments if s["id"] in present]


def test_matches_a_straightforward_implementation_on_random_maps():
  rng = np.random.default_rng(0)
  categories = [{"id": i + 1, "name": f"c{i + 1}", "isthing": int(i < 4)} for i in range(7)]
  ids = [c["id"] for c in categories]
  pq = PanopticQuality(categories)
  total, excused = np.zeros((len(ids), 4)), 0
  for i in range(60):
    image = random_image(rng, categories)
    expected, n = reference_stats(*image, ids)
    excused += n
    np.testing.assert_allclose(pq.update(*image, image_id=i), expected, err_msg=f"image {i}")
    np.testing.assert_allclose(image_stats(*image, ids), expected)
    total += expected
  print("TP FP FN", total[:, 1:].sum(0), "excused", excused, "images", pq.images)
  assert total[:, 1].sum() > 50 and total[:, 2].sum() > 20 and total[:, 3].sum() > 20 and excused > 5
  assert 0.3 < pq.result()["pq"] < 0.9  # neither rare matches nor rare errors
  expected = reference_pq(total, [bool(c["isthing"]) for c in categories])
  got = pq.result()
  for key, value in expected.items():
    assert got[key] == pytest.approx(value, abs=1e-12), key
