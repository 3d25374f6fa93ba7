"""The PQ and COCO-AP evaluators (jaxseg.panoptic_evaluators) run inside the jitted
evaluation on batches of instance targets and give what jaxseg.panoptic_quality and
jaxseg.coco_ap (tested against panopticapi's rules and pycocotools) give on the
unpadded records; the prediction files (jaxseg.prediction_files) score the same with
the panoptic_eval command and with pycocotools."""
import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from jaxseg import sharding
from jaxseg.coco_ap import CocoAP
from jaxseg.config import base_config
from jaxseg.data import instances
from jaxseg.data.builders import shapes_panoptic as sp
from jaxseg.evaluate import Evaluation
from jaxseg.families import stack
from jaxseg.panoptic_evaluators import CocoAPEvaluator, PanopticQualityEvaluator
from jaxseg.panoptic_quality import PanopticQuality, id_to_rgb
from jaxseg.prediction_files import InstanceResultsWriter, PanopticWriter
from jaxseg.tools import panoptic_eval

CATEGORIES = [{"id": 10 + k, "name": n, "isthing": int(t)} for k, (n, t) in enumerate(zip(sp.CLASSES, sp.ISTHING))]
N = 6  # images
SLOTS = 24  # predicted segments / instances per image


def config():
  c = base_config()
  c.dataset.num_classes = len(sp.CLASSES)
  c.input.update(dict(eval_size=(160, 160), max_instances=SLOTS))
  return c


def predictions(record, rng, perfect):
  """A prediction of one record (at its own size): the ground-truth segments, each with
  probability 1/4 eroded, given another class, dropped or split in two when not
  `perfect`, plus a spurious disk. Returns (panoptic ids 1..S, classes, instance
  masks, classes, scores) with the thing segments as the instances."""
  ids, seg = record["panoptic"], record["segments"]
  pred = np.zeros(ids.shape, np.int64)
  classes, masks, inst_classes = [], [], []
  for sid, cat, crowd in zip(seg["id"], seg["category"], seg["iscrowd"]):
    mask = ids == sid
    change = rng.integers(0, 5) if not perfect else 4
    if change == 0:
      mask = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    elif change == 1:
      cat = (cat + 1) % len(sp.CLASSES)
    elif change == 2:
      continue
    if not mask.any() or crowd and not perfect:
      continue
    if change == 3:  # split: the left half is another segment
      xs = np.nonzero(mask.any(0))[0]
      left = mask & (np.arange(ids.shape[1]) < xs.mean())[None]
      for part in (left, mask & ~left):
        if part.any():
          classes.append(cat)
          pred[part] = len(classes)
      continue
    classes.append(cat)
    pred[mask] = len(classes)
    if sp.ISTHING[cat]:
      masks.append(mask)
      inst_classes.append(cat)
  if not perfect:
    disk = np.zeros(ids.shape, np.uint8)
    cv2.circle(disk, (int(rng.integers(0, ids.shape[1])), int(rng.integers(0, ids.shape[0]))), 9, 1, -1)
    classes.append(int(rng.integers(1, 6)))
    pred[disk > 0] = len(classes)
    masks.append(disk > 0)
    inst_classes.append(classes[-1])
  scores = rng.random(len(masks)) if not perfect else np.ones(len(masks))
  return pred, np.array(classes), np.array(masks).reshape(-1, *ids.shape), np.array(inst_classes), scores


def padded(array, shape):
  out = np.zeros((*array.shape[:-2], *shape), array.dtype)
  out[..., :array.shape[-2], :array.shape[-1]] = array
  return out


def run(perfect, seed=0):
  """(evaluator scores, reference scores, entries, records) on N records + two filler
  entries, in two batches of 4."""
  rng = np.random.default_rng(seed)
  c = config()
  records = [sp.make_example("val", i) for i in range(N)]
  pq_ref, ap_ref = PanopticQuality(CATEGORIES), CocoAP(CATEGORIES)
  entries = []
  for i, r in enumerate(records):
    pred, classes, masks, inst_classes, scores = predictions(r, rng, perfect)
    entry = instances.eval_targets(dict(r, panoptic=id_to_rgb(r["panoptic"])), c, np.array(sp.ISTHING),
                                   panoptic=True)
    boxes = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] for xs, ys in
                      ((np.nonzero(m)[1], np.nonzero(m)[0]) for m in masks)]).reshape(-1, 4)
    n, s = len(masks), len(classes)
    entry.update(pred_panoptic=padded(pred, (160, 160)).astype(np.int32),
                 pred_panoptic_classes=np.pad(classes, (0, SLOTS - s)).astype(np.int32),
                 pred_instance_masks=padded(np.pad(masks, ((0, SLOTS - n), (0, 0), (0, 0))), (160, 160)),
                 pred_instance_classes=np.pad(inst_classes, (0, SLOTS - n)).astype(np.int32),
                 pred_instance_scores=np.pad(scores, (0, SLOTS - n)).astype(np.float32),
                 pred_instance_boxes=np.pad(boxes, ((0, SLOTS - n), (0, 0))).astype(np.float32),
                 pred_instance_valid=np.arange(SLOTS) < n)
    entries.append({k: v for k, v in entry.items() if not k.startswith("count_")})
    seg = r["segments"]
    gt_segments = [{"id": int(a), "category_id": 10 + int(b), "iscrowd": int(z)}
                   for a, b, z in zip(seg["id"], seg["category"], seg["iscrowd"])]
    pq_ref.update(r["panoptic"], gt_segments, pred, [{"id": k + 1, "category_id": 10 + int(cl)}
                                                     for k, cl in enumerate(classes) if (pred == k + 1).any()])
    inst = r["instances"]
    gt_masks = np.array([mask_utils.decode(mask_utils.frPyObjects(json.loads(rle), *json.loads(rle)["size"]))
                         for rle in inst["segmentation"]]).reshape(-1, *r["label"].shape)
    ap_ref.update(i + 1, *r["label"].shape, gt_classes=inst["category"], gt_masks=gt_masks,
                  gt_iscrowd=inst["iscrowd"], pred_classes=inst_classes, pred_scores=scores, pred_boxes=boxes,
                  pred_masks=masks)
  filler = {k: np.zeros_like(v) for k, v in entries[0].items()}  # all void, with confident disks predicted
  filler.update({k: entries[0][k] for k in ("pred_instance_masks", "pred_instance_boxes", "pred_instance_valid")})
  filler.update(pred_instance_classes=np.full(SLOTS, sp.DISK, np.int32), pred_instance_scores=np.ones(SLOTS, np.float32))
  batches = [stack(entries[:4]), stack(entries[4:] + [filler, filler])]
  mesh = sharding.make_mesh()
  predict = lambda variables, batch: {k[5:]: v for k, v in batch.items() if k.startswith("pred_")}
  evaluators = {"pq": PanopticQualityEvaluator(CATEGORIES), "ap": CocoAPEvaluator(CATEGORIES)}
  scores, _ = Evaluation(predict, evaluators, sharding.replicated(mesh))({}, batches,
                                                                         lambda b: sharding.global_batch(b, sharding.data_sharding(mesh)))
  reference = {**{k: v for k, v in pq_ref.result().items() if k != "per_class"}, **ap_ref.result(),
               "per_class_pq": [c["pq"] for c in pq_ref.result()["per_class"]]}
  return scores, reference, entries, records


def test_perfect_predictions_score_one():
  scores, _, _, _ = run(perfect=True)
  assert scores["pq"] == pytest.approx(1.0) and scores["pq_things"] == pytest.approx(1.0)
  assert scores["box_ap"] == pytest.approx(1.0) and scores["mask_ap"] == pytest.approx(1.0)


def test_evaluators_equal_the_reference_on_the_unpadded_records(tmp_path):
  scores, reference, entries, records = run(perfect=False, seed=3)
  assert 0.2 < scores["pq"] < 0.9 and 0.1 < scores["mask_ap"] < 0.9
  for key, value in reference.items():
    if isinstance(value, list):
      np.testing.assert_allclose(np.array(scores[key], float), np.array(value, float), rtol=1e-5, err_msg=key)
    else:
      assert scores[key] == pytest.approx(value, rel=1e-5, nan_ok=True), key
  # The files: COCO panoptic PNG + JSON and COCO results JSON score the same.
  pred_writer = PanopticWriter(str(tmp_path / "pred"), CATEGORIES)
  gt_dir = tmp_path / "gt"
  gt_dir.mkdir()
  gt_json = {"annotations": [], "categories": CATEGORIES, "images": []}
  results = InstanceResultsWriter(str(tmp_path / "results.json"), CATEGORIES)
  for i, (entry, record) in enumerate(zip(entries, records)):
    h, w = record["label"].shape
    pred_writer.add(i, record["file_name"], entry["pred_panoptic"][:h, :w], entry["pred_panoptic_classes"])
    valid = entry["pred_instance_valid"]
    results.add(i + 1, entry["pred_instance_classes"][valid], entry["pred_instance_scores"][valid],
                entry["pred_instance_boxes"][valid], entry["pred_instance_masks"][valid][:, :h, :w])
    cv2.imwrite(str(gt_dir / f"{record['file_name']}.png"), id_to_rgb(record["panoptic"])[..., ::-1])
    seg = record["segments"]
    gt_json["images"].append({"id": i, "file_name": f"{record['file_name']}.png", "height": h, "width": w})
    gt_json["annotations"].append({"image_id": i, "file_name": f"{record['file_name']}.png", "segments_info": [
        {"id": int(a), "category_id": 10 + int(b), "iscrowd": int(z)}
        for a, b, z in zip(seg["id"], seg["category"], seg["iscrowd"])]})
  (tmp_path / "gt.json").write_text(json.dumps(gt_json))
  files = panoptic_eval.evaluate(str(tmp_path / "gt.json"), str(gt_dir), pred_writer.close(), str(tmp_path / "pred"))
  assert files["pq"] == pytest.approx(scores["pq"], rel=1e-5)
  assert files["pq_stuff"] == pytest.approx(scores["pq_stuff"], rel=1e-5, nan_ok=True)
  ap = CocoAP(CATEGORIES)
  for i, record in enumerate(records):  # the ground truth as the evaluator saw it
    inst = record["instances"]
    ap.update(i + 1, *record["label"].shape, gt_classes=inst["category"], gt_iscrowd=inst["iscrowd"],
              gt_masks=np.array([mask_utils.decode(mask_utils.frPyObjects(json.loads(s), *json.loads(s)["size"]))
                                 for s in inst["segmentation"]]).reshape(-1, *record["label"].shape),
              pred_classes=[], pred_scores=[], pred_boxes=np.zeros((0, 4)), pred_masks=np.zeros((0, *record["label"].shape)))
  gt = COCO()
  gt.dataset = ap.ground_truth()
  gt.createIndex()
  coco_eval = COCOeval(gt, gt.loadRes([{k: v for k, v in r.items() if k != "bbox"}
                                       for r in json.load(open(results.close()))]), "segm")
  coco_eval.evaluate()
  coco_eval.accumulate()
  coco_eval.summarize()
  assert coco_eval.stats[0] == pytest.approx(scores["mask_ap"], rel=1e-6)


def test_same_scores_with_the_batch_split_over_two_devices():
  import subprocess
  import sys

  from tests.conftest import ROOT, devices_env
  code = ("from tests.test_panoptic_evaluators import run; import jax; assert jax.device_count() == 2; "
          "s, r, _, _ = run(False, 3); print(s['pq'] - r['pq'], s['mask_ap'] - r['mask_ap'], s['box_ap'] - r['box_ap'])")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, **devices_env(2)})
  assert out.returncode == 0, out.stderr[-2000:]
  assert [abs(float(v)) < 1e-6 for v in out.stdout.split()] == [True] * 3, out.stdout
