"""The detection family (jaxseg.families.detection): mask pasting against torch's own
bilinear kernels following torchvision's and Detectron2's paste rules; the crop's image
region and its flip; the PANet `:tiny` config (on a 64 x 64 canvas, one shared pair of
work dirs) trains, reports box and mask AP, resumes exactly and predicts COCO results JSON
from the command line."""
import json
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from jaxseg import train
from jaxseg.data import datasets, instances, transforms
from jaxseg.data.builders import shapes_panoptic as sp
from jaxseg.models.detection import paste
from jaxseg.panoptic_quality import id_to_rgb
from tests.conftest import load_config, run_cli


def torchvision_paste(masks, boxes, h, w):
  """torchvision's rule, step by step: the grid padded by one zero cell, the box widened
  by (M + 2) / M and cut to integers, the padded grid resized to the integer box
  (F.interpolate, bilinear) and copied into the image where it lies inside."""
  m = masks.shape[-1]
  out = np.zeros((len(masks), h, w), np.float32)
  for i, (grid, box) in enumerate(zip(masks, torch.from_numpy(boxes))):
    padded = F.pad(torch.from_numpy(grid)[None, None], (1, 1, 1, 1))
    half = (box[2:] - box[:2]) * 0.5 * ((m + 2) / m)
    centre = (box[2:] + box[:2]) * 0.5
    e = torch.cat([centre - half, centre + half]).to(torch.int64)
    bw, bh = max(int(e[2] - e[0] + 1), 1), max(int(e[3] - e[1] + 1), 1)
    resized = F.interpolate(padded, size=(bh, bw), mode="bilinear", align_corners=False)[0, 0].numpy()
    x0, x1, y0, y1 = max(int(e[0]), 0), min(int(e[2]) + 1, w), max(int(e[1]), 0), min(int(e[3]) + 1, h)
    if x1 > x0 and y1 > y0:
      out[i, y0:y1, x0:x1] = resized[y0 - int(e[1]):y1 - int(e[1]), x0 - int(e[0]):x1 - int(e[0])]
  return out


def detectron2_paste(masks, boxes, h, w):
  """Detectron2's rule: every pixel centre of the image samples the grid through
  F.grid_sample (bilinear, zero padding) at its place within the box."""
  x0, y0, x1, y1 = torch.from_numpy(boxes).split(1, dim=1)
  gy = (torch.arange(h, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
  gx = (torch.arange(w, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
  n = len(masks)
  grid = torch.stack([gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)], 3)
  return F.grid_sample(torch.from_numpy(masks)[:, None], grid, align_corners=False)[:, 0].numpy()


@pytest.mark.parametrize("convention,reference,above", [
    ("torchvision", torchvision_paste, lambda p: p > 0.5),
    ("detectron2", detectron2_paste, lambda p: p >= 0.5)])
def test_paste_equals_the_reference(convention, reference, above):
  rng = np.random.default_rng(0)
  n, m, h, w = 40, 28, 75, 90
  masks = rng.random((n, m, m)).astype(np.float32)
  xy = rng.uniform(-20, 100, (n, 2))  # boxes partly or wholly outside the image, some below a pixel
  boxes = np.concatenate([xy, xy + rng.uniform(0.3, 60, (n, 2))], 1).astype(np.float32)
  boxes[0] = (3.0, 4.0, 3.0, 9.0)  # an empty box
  expected = reference(masks, boxes, h, w)
  if convention == "detectron2":
    expected[0] = 0.0  # (torch divides by the zero width: NaN; the paste reads nothing)
  probs = np.asarray(paste.paste_probabilities(jnp.asarray(masks), jnp.asarray(boxes), (h, w), convention))
  np.testing.assert_allclose(probs, expected, atol=1e-5)
  pasted = np.asarray(paste.paste_masks(jnp.asarray(masks), jnp.asarray(boxes), (h, w), convention, chunk=7))
  assert pasted.dtype == bool and pasted.shape == (n, h, w) and 1000 < pasted.sum() < pasted.size / 2
  clear = np.abs(expected - 0.5) > 1e-5  # away from the threshold the binarised masks agree exactly
  np.testing.assert_array_equal(pasted[clear], above(expected)[clear])


def test_boxes_back_to_the_original_image():
  boxes = jnp.array([[[10.0, 20.0, 50.0, 70.0], [0.0, 0.0, 128.0, 96.0]]])
  back = np.asarray(paste.boxes_to_image(boxes, jnp.array([[96.0, 128.0]]), (150, 200)))
  np.testing.assert_allclose(back[0, 0], [10 * 200 / 128, 20 * 150 / 96, 50 * 200 / 128, 70 * 150 / 96], rtol=1e-6)
  np.testing.assert_allclose(back[0, 1], [0, 0, 200, 150])


def test_train_targets_report_the_image_region_and_flip_within_it():
  config = load_config("panet_coco", "tiny")
  config.input.update(dict(short_side_range=(64, 64), max_long_side=0, crop_image_fill=(7, 8, 9)))
  isthing = np.array(sp.ISTHING)
  record = sp.make_example("val", 3)
  record = dict(record, panoptic=id_to_rgb(record["panoptic"]))
  h0, w0 = record["image"].shape[:2]
  for seed in range(10):  # the first seed whose flip draw flips (the same draws come before it)
    outs = {}
    for flip in (False, True):
      config.input.flip = flip
      outs[flip] = instances.train_targets(record, np.random.default_rng(seed), config, isthing, image_size=True)
    if not np.array_equal(outs[True]["image"], outs[False]["image"]):
      break
  h, w = outs[False]["image_size"]
  assert (h, w) == transforms.scaled_size((h0, w0), 64 / min(h0, w0))
  for out in outs.values():
    np.testing.assert_array_equal(out["image_size"], (h, w))
    assert (out["image"][h:] == (7, 8, 9)).all() and (out["image"][:, w:] == (7, 8, 9)).all()
    boxes = out["instance_boxes"][out["instance_valid"]]
    assert len(boxes) and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
  np.testing.assert_array_equal(outs[True]["image"][:h, :w], outs[False]["image"][:h, :w][:, ::-1])
  np.testing.assert_array_equal(outs[True]["instance_masks"][:, :h, :w], outs[False]["instance_masks"][:, :h, :w][
      :, :, ::-1])


def gt_instances(record):
  """(classes, (n, H, W) masks, iscrowd) of a shapes record's instances, at its stored size."""
  inst = record["instances"]
  rles = [json.loads(r) for r in inst["segmentation"]]
  masks = np.array([mask_utils.decode(mask_utils.frPyObjects(r, *r["size"])) for r in rles])
  return np.asarray(inst["category"]), masks.reshape(-1, *record["label"].shape), np.asarray(inst["iscrowd"])


def test_predictions_are_scored_at_the_stored_size(data_dir):
  """COCO's protocol with the eval images resized (records of 112..160 px scaled to a
  long side of 64): detections on the resized image (boxes of the ground truth in its
  pixels, jittered, and 28 x 28 grids of it, noisy, plus spurious ones) come back from
  `predict` with their boxes scaled to the stored size and their masks pasted there, as
  torchvision's rule does it in torch (torchvision_paste) at the stored size; the COCO
  AP evaluator then scores what pycocotools gives on the records themselves."""
  from jaxseg import families
  from jaxseg.coco_ap import CocoAP
  from jaxseg.families import stack

  datasets.dataset_dir("shapes_panoptic", data_dir)
  family = families.get(tiny(1))
  records = [sp.make_example("val", i) for i in range(4)]
  batch = stack([family.eval_transform(dict(r, panoptic=id_to_rgb(r["panoptic"]))) for r in records])
  assert batch["panoptic"].shape[1:] == (160, 160) and batch["image"].shape[1:3] == (64, 64)
  rng = np.random.default_rng(0)
  d, m = family.config.model.head.detections, 28
  dets = {"boxes": np.zeros((4, d, 4), np.float32), "scores": rng.random((4, d)).astype(np.float32),
          "classes": rng.integers(0, len(family.things), (4, d)).astype(np.int32), "valid": np.zeros((4, d), bool),
          "masks": rng.random((4, d, m, m)).astype(np.float32)}
  for b, r in enumerate(records):
    (h, w), (hs, ws) = batch["image_size"][b], batch["label_size"][b]
    assert (h, w) != (hs, ws) and (hs, ws) == r["label"].shape  # resized; the ground truth as stored
    classes, masks, _ = gt_instances(r)
    n = len(classes)
    dets["valid"][b, :n + 3] = True  # the instances and 3 spurious detections (random boxes and grids)
    dets["scores"][b, n:] *= 0.5  # below the instances'
    dets["scores"][b, :n] = 0.5 + 0.5 * dets["scores"][b, :n]
    dets["boxes"][b] = rng.uniform(0, 40, (d, 4)).astype(np.float32)
    dets["boxes"][b, :, 2:] += dets["boxes"][b, :, :2] + 4
    for k, (c, mask) in enumerate(zip(classes, masks)):
      ys, xs = np.nonzero(mask)
      box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
      grid = cv2.resize(mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32), (m, m))
      dets["boxes"][b, k] = box * np.array([w / ws, h / hs] * 2) + rng.normal(0, 0.5, 4)
      dets["masks"][b, k] = np.clip(grid + rng.normal(0, 0.2, (m, m)), 0, 1)
      dets["classes"][b, k] = family.to_detector[c]
  family.detect = lambda model, variables, batch: {k: jnp.asarray(v) for k, v in dets.items()}
  out = jax.device_get(jax.jit(lambda batch: family.predict(None, None, batch))(batch))

  evaluator = family.evaluators()["coco_ap"]
  reference = CocoAP(family.categories())
  for b, r in enumerate(records):
    (h, w), (hs, ws) = batch["image_size"][b], batch["label_size"][b]
    boxes = np.clip(dets["boxes"][b] * np.array([ws / w, hs / h] * 2, np.float32), 0, [ws, hs] * 2)
    np.testing.assert_allclose(out["instance_boxes"][b], boxes, rtol=1e-6, atol=1e-4)
    probs = torchvision_paste(dets["masks"][b], boxes, hs, ws)
    masks = out["instance_masks"][b]
    assert not masks[:, hs:].any() and not masks[:, :, ws:].any()  # the label canvas's padding
    valid = dets["valid"][b]
    clear = np.abs(probs - 0.5) > 1e-5
    np.testing.assert_array_equal(masks[:, :hs, :ws][clear], ((probs > 0.5) & valid[:, None, None])[clear])
    classes, gt_masks, crowd = gt_instances(r)
    reference.update(b + 1, hs, ws, gt_classes=classes, gt_masks=gt_masks, gt_iscrowd=crowd,
                     pred_classes=np.asarray(family.things)[dets["classes"][b]][valid],
                     pred_scores=dets["scores"][b][valid], pred_boxes=boxes[valid],
                     pred_masks=masks[:, :hs, :ws][valid])
  scores = evaluator.result(evaluator.update(evaluator.init(), out, batch))
  expected = reference.result()
  # the instances' detections are the ground truth's, above the spurious ones (measured: box AP 0.870, mask AP 0.717)
  assert scores["box_ap50"] == scores["mask_ap50"] == 1.0 and scores["mask_ap"] > 0.6
  for key, value in expected.items():
    if isinstance(value, float):
      assert scores[key] == pytest.approx(value, rel=1e-6, nan_ok=True), key


def tiny(steps, evaluate=True):
  """`:tiny` on a 64 x 64 canvas (the images scaled to a long side of 64, scored at
  their stored size on the 160 x 160 label canvas), scored on 16 val images: the code
  paths of the 128 x 128 variant at a quarter of the pixels."""
  config = load_config("panet_coco", "tiny")
  config.input.update(dict(short_side_range=(48, 64), max_long_side=64, crop_size=(64, 64), eval_size=(64, 64),
                           eval_long_side=64))
  config.dataset.eval_split = "val[:16]"
  config.train.update(dict(steps=steps, log_every=1, ckpt_every=1, eval_every=steps))
  config.evals.coco_ap.every = 0 if evaluate else -1  # -1: the interrupted run skips the evaluation
  return config


CLI_TINY = ["--config.input.short_side_range=(48, 64)", "--config.input.max_long_side=64",
            "--config.input.crop_size=(64, 64)", "--config.input.eval_size=(64, 64)",
            "--config.input.eval_long_side=64"]  # tiny() on the command line


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
  """Work dirs of `tiny`: "full" trained 2 steps and evaluated, "resumed" stopped after
  step 1 and resumed to 2; with their final states. Shared by the module."""
  datasets.dataset_dir("shapes_panoptic", data_dir)
  root = tmp_path_factory.mktemp("panet_tiny")
  full = train.train_and_evaluate(tiny(2), str(root / "full"))
  train.train_and_evaluate(tiny(2, evaluate=False), str(root / "resumed"), stop_after=1)
  resumed = train.train_and_evaluate(tiny(2, evaluate=False), str(root / "resumed"))
  return root, full, resumed


def test_tiny_panet_resumes_exactly(trained):
  root, full, resumed = trained
  assert int(resumed.step) == int(full.step) == 2
  for a, b in zip(jax.tree.leaves((full.params, full.batch_stats, full.opt_state)),
                  jax.tree.leaves((resumed.params, resumed.batch_stats, resumed.opt_state))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
  read = lambda p: [json.loads(l) for l in open(root / p / "train_log.jsonl")]
  full_log, resumed_log = read("full"), read("resumed")
  assert [r["step"] for r in resumed_log] == [r["step"] for r in full_log] == [1, 2]
  np.testing.assert_allclose([r["loss"] for r in resumed_log], [r["loss"] for r in full_log], atol=1e-6)
  for term in ("rpn_objectness", "rpn_box", "box_class", "box_regression", "mask"):
    assert all(np.isfinite(r[f"loss_{term}"]) for r in full_log)
  assert full_log[0]["loss_rpn_objectness"] > 0.5  # BCE of a fresh RPN: about log 2


def test_tiny_panet_reports_box_and_mask_ap(trained):
  root = trained[0]
  metrics = [json.loads(l) for l in open(root / "full" / "metrics.jsonl")]
  assert [m["step"] for m in metrics] == [2]
  for name in ("box_ap", "box_ap50", "mask_ap", "mask_ap50", "mask_ap75"):
    assert 0 <= metrics[-1][name] <= 1
  assert len(metrics[-1]["per_class_mask_ap"]) == 8 and metrics[-1]["per_class_mask_ap"][0] is None


def test_tiny_panet_predicts_coco_results_from_the_cli(trained, tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  for i in (4, 7):
    cv2.imwrite(str(images / f"{i:06d}.png"), cv2.cvtColor(sp.make_example("val", i)["image"], cv2.COLOR_RGB2BGR))
  out = tmp_path / "predictions"
  done = run_cli("--config", "configs/panet_coco.py:tiny", *CLI_TINY, "--workdir", str(trained[0] / "full"),
                 "--mode", "predict", "--input", str(images), "--output", str(out))
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.load(open(out / "results.json"))
  assert results and {r["image_id"] for r in results} <= {4, 7}
  for r in results:
    assert set(r) == {"image_id", "category_id", "score", "bbox", "segmentation"}
    assert r["category_id"] in (1, 2, 3, 4, 5) and 0 <= r["score"] <= 1 and len(r["bbox"]) == 4
    h, w = sp.make_example("val", r["image_id"])["image"].shape[:2]
    assert r["segmentation"]["size"] == [h, w]
    assert 0 < mask_utils.area(r["segmentation"]) <= h * w  # a valid compressed RLE
  assert sorted(os.listdir(out)) == ["000004_overlay.png", "000007_overlay.png", "results.json"]
