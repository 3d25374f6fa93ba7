"""The embedded panoptic shapes (jaxseg.data.builders.shapes_panoptic): panoptic,
semantic and instance ground truth agree pixel for pixel, are deterministic, and score
1 against themselves with the PQ and AP evaluators."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from jaxseg.coco_ap import CocoAP
from jaxseg.data.builders import shapes_panoptic as sp
from jaxseg.panoptic_quality import PanopticQuality, rgb_to_id

RECORDS = 30


@pytest.fixture(scope="module")
def records():
  return [sp.make_example("val", i) for i in range(RECORDS)]


def test_deterministic_and_distinct(records):
  again = sp.make_example("val", 3)
  assert all(np.array_equal(again[k], records[3][k]) for k in ("image", "label", "panoptic"))
  assert again["instances"]["segmentation"] == records[3]["instances"]["segmentation"]
  assert not np.array_equal(sp.make_example("train", 3)["image"][:20, :20], records[3]["image"][:20, :20])


def test_panoptic_semantic_and_instances_agree(records):
  crowds = stuff = 0
  for r in records:
    ids, seg, inst = r["panoptic"], r["segments"], r["instances"]
    assert r["image"].shape[:2] == ids.shape == r["label"].shape
    present = set(np.unique(ids).tolist()) - {sp.VOID}
    assert present == set(seg["id"].tolist()) and len(seg["id"]) == len(present)  # each listed once
    expected_label = np.full(ids.shape, 255)
    for sid, cat, area, (x, y, w, h) in zip(seg["id"], seg["category"], seg["area"], seg["bbox"]):
      mask = ids == sid
      expected_label[mask] = cat
      ys, xs = np.nonzero(mask)
      assert area == mask.sum() and (x, y, w, h) == (xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1)
    np.testing.assert_array_equal(r["label"], expected_label)
    things = [i for i, c in enumerate(seg["category"]) if sp.ISTHING[c]]
    assert inst["category"].tolist() == seg["category"][things].tolist()
    assert inst["iscrowd"].tolist() == seg["iscrowd"][things].tolist()
    np.testing.assert_array_equal(inst["bbox"], seg["bbox"][things])
    for k, j in enumerate(things):
      rle = json.loads(inst["segmentation"][k])  # COCO's uncompressed RLE, read by COCO's tools
      decoded = mask_utils.decode(mask_utils.frPyObjects(rle, *rle["size"])).astype(bool)
      np.testing.assert_array_equal(decoded, ids == seg["id"][j])
      assert inst["area"][k] == decoded.sum() == mask_utils.area(mask_utils.frPyObjects(rle, *rle["size"]))
    assert not any(seg["iscrowd"][i] for i in range(len(seg["id"])) if not sp.ISTHING[seg["category"][i]])
    crowds += int(seg["iscrowd"].sum())
    stuff += int(np.isin(seg["category"], [sp.FLOOR, sp.PANEL]).sum())
    # the void band separates segments: no two touching (8-neighbour) labelled pixels differ
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
      h, w = ids.shape
      a, b = ids[dy:, max(0, -dx):w - max(0, dx)], ids[:h - dy, max(0, dx):w - max(0, -dx)]
      labelled = (a != sp.VOID) & (b != sp.VOID)
      assert (a[labelled] == b[labelled]).all()
    assert 0.02 < (ids == sp.VOID).mean() < 0.3
  assert crowds >= 3 and stuff >= RECORDS  # crowds occur; one or two stuff regions per image


def test_png_encoding_round_trips():
  ids = sp.make_example("train", 0)["panoptic"]
  assert ids.max() > 255 and (rgb_to_id(sp.panoptic_png(ids)) == ids).all()


def test_rle_encoding():
  rng = np.random.default_rng(0)
  for shape in ((1, 1), (5, 7), (16, 3)):
    for fill in (0.0, 0.5, 1.0):
      mask = rng.random(shape) < fill
      rle = sp.rle_encode(mask)
      assert sum(rle["counts"]) == mask.size
      np.testing.assert_array_equal(mask_utils.decode(mask_utils.frPyObjects(rle, *shape)).astype(bool), mask)


def test_ground_truth_scores_one_against_itself(records):
  categories = [{"id": k, "name": n, "isthing": int(t)} for k, (n, t) in enumerate(zip(sp.CLASSES, sp.ISTHING))]
  pq, ap = PanopticQuality(categories), CocoAP(categories)
  for r in records:
    seg, inst = r["segments"], r["instances"]
    segments = [{"id": int(i), "category_id": int(c), "iscrowd": int(z)}
                for i, c, z in zip(seg["id"], seg["category"], seg["iscrowd"])]
    pred = [dict(s, id=s["id"] + 1) for s in segments if not s["iscrowd"]]  # crowds are not predicted
    pred_ids = np.where(np.isin(r["panoptic"], [s["id"] - 1 for s in pred]), r["panoptic"] + 1, 0)
    pq.update(r["panoptic"], segments, pred_ids, pred, image_id=r["image_id"])
    masks = np.array([mask_utils.decode(mask_utils.frPyObjects(json.loads(s), *r["label"].shape))
                      for s in inst["segmentation"]], bool).reshape(-1, *r["label"].shape)
    boxes = np.concatenate([inst["bbox"][:, :2], inst["bbox"][:, :2] + inst["bbox"][:, 2:]], 1)
    keep = inst["iscrowd"] == 0
    ap.update(r["image_id"], *r["label"].shape, gt_classes=inst["category"], gt_masks=masks, gt_boxes=boxes,
              gt_iscrowd=inst["iscrowd"], pred_classes=inst["category"][keep],
              pred_scores=np.linspace(1, 0.5, keep.sum()), pred_boxes=boxes[keep], pred_masks=masks[keep])
  result = pq.result()
  assert (result["pq"], result["sq"], result["rq"], result["n"]) == (1.0, 1.0, 1.0, len(categories))
  metrics = ap.result()
  assert metrics["box_ap"] == pytest.approx(1.0) and metrics["mask_ap"] == pytest.approx(1.0)


def test_records_survive_the_tfds_features(tmp_path):
  builder = sp.ShapesPanoptic(data_dir=str(tmp_path))
  key, example = next(iter(builder._generate_examples("val")))
  decoded = builder.info.features.decode_example_np(builder.info.features.encode_example(example))
  record = sp.make_example("val", key)
  np.testing.assert_array_equal(rgb_to_id(decoded["panoptic"]), record["panoptic"])
  np.testing.assert_array_equal(decoded["label"][..., 0], record["label"])
  np.testing.assert_array_equal(decoded["image"], record["image"])
  for k in ("id", "category", "iscrowd", "area", "bbox"):
    np.testing.assert_array_equal(decoded["segments"][k], record["segments"][k])
  segmentation = [s.decode() if isinstance(s, bytes) else s for s in decoded["instances"]["segmentation"]]
  assert segmentation == record["instances"]["segmentation"]
  assert builder.info.metadata["isthing"] == list(sp.ISTHING) and len(builder.info.metadata["classes"]) == 8
