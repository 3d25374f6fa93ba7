"""The universal (mask-classification) family with OneFormer: each task's ground truth
and texts against a direct reading of the authors' dataset mapper; the `:tiny` config
trains, resumes exactly, and evaluates PQ, mask AP and mIoU from one checkpoint, each
with its own task token; jaxseg.load's predictor and the --mode predict files."""
import json
import jax
import numpy as np
import pytest
from PIL import Image

from jaxseg import api, train
from jaxseg.families import universal
from jaxseg.models.heads.oneformer.clip_tokenizer import default_tokenizer
from jaxseg.panoptic_quality import rgb_to_id
from tests.conftest import load_config

ISTHING = np.array([False, True, True, True, False])  # classes 0 and 4 are stuff


def targets(rng, slots=8):
  """instances.train_targets-like entries of random segments (crowds among them)."""
  n = 6
  masks = np.zeros((slots, 10, 12), np.uint8)
  masks[:n] = rng.random((n, 10, 12)) < 0.3
  classes = np.zeros(slots, np.int32)
  classes[:n] = rng.integers(0, 5, n)
  crowd = np.zeros(slots, np.int32)
  crowd[:n] = rng.random(n) < 0.3
  return {"instance_classes": classes, "instance_masks": masks, "instance_iscrowd": crowd,
          "instance_valid": np.arange(slots) < n}


def reference(t, task):
  """The authors' _get_{semantic,instance,panoptic}_dict, as (classes, masks) lists."""
  classes, masks = [], []
  for k in range(len(t["instance_classes"])):
    c, mask = int(t["instance_classes"][k]), t["instance_masks"][k].astype(bool)
    if not t["instance_valid"][k] or t["instance_iscrowd"][k] or (task == "instance" and not ISTHING[c]):
      continue
    if task == "semantic" and c in classes:
      masks[classes.index(c)] |= mask
      continue
    classes.append(c)
    masks.append(mask.copy())
  return classes, masks


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_task_ground_truth_and_texts_follow_the_authors_mapper(task):
  names = ["sky", "disk", "square", "apple", "floor"]
  table = universal.TextTable(names)
  tokenize = default_tokenizer()
  for seed in range(5):
    t = targets(np.random.default_rng(seed))
    classes, masks, valid = universal.task_targets(t, task, ISTHING, slots=8)
    want_classes, want_masks = reference(t, task)
    n = len(want_classes)
    assert valid.tolist() == [True] * n + [False] * (8 - n)
    assert classes[:n].tolist() == want_classes and not classes[n:].any()
    np.testing.assert_array_equal(masks[:n].astype(bool), np.array(want_masks).reshape(-1, 10, 12))
    assert not masks[n:].any()
    # texts: one per mask in class order, then "a/an {task} photo" (4 texts: some cut off)
    texts = [f"a photo with a {names[c]}" for c in sorted(want_classes)][:4]
    texts += [universal.PAD_TEXT[task]] * (4 - len(texts))
    np.testing.assert_array_equal(table(classes, valid, task, 4), tokenize(texts))


def tiny(steps, **train_keys):
  config = load_config("oneformer_coco", "tiny")
  config.train.update({"steps": steps, "eval_every": steps, "ckpt_every": steps, **train_keys})
  config.eval.batch_size = 25
  return config


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
  """:tiny trained 4 steps straight, and 2 + 2 with a restart: (root, states)."""
  root = tmp_path_factory.mktemp("oneformer")
  full = train.train_and_evaluate(tiny(4), str(root / "full"))
  quiet = tiny(4, ckpt_every=2)
  for options in quiet.evals.values():  # the interrupted run evaluates nothing: the full run's evaluation
    options.every = -1  # is the one the tests read
  train.train_and_evaluate(quiet, str(root / "resumed"), stop_after=2)
  resumed = train.train_and_evaluate(quiet, str(root / "resumed"))
  return root, full, resumed


def test_tiny_resumes_exactly(runs):
  root, full, resumed = runs
  assert int(full.step) == int(resumed.step) == 4
  for a, b in zip(jax.tree.leaves((full.params, full.batch_stats, full.opt_state)),
                  jax.tree.leaves((resumed.params, resumed.batch_stats, resumed.opt_state))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
  read = lambda p: [json.loads(line) for line in open(root / p / "train_log.jsonl")]
  log, log2 = read("full"), read("resumed")
  assert [r["step"] for r in log] == [r["step"] for r in log2] == [2, 4]
  np.testing.assert_allclose([r["loss"] for r in log2], [r["loss"] for r in log], atol=1e-6)
  terms = {k for k in log[0] if k.startswith("loss_")}
  assert {"loss_class", "loss_mask", "loss_dice", "loss_contrastive", "loss_class_0", "loss_dice_2"} <= terms
  assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in log)


def test_one_checkpoint_evaluates_pq_ap_and_miou(runs):
  root, _, _ = runs
  trained = [json.loads(line) for line in open(root / "full" / "metrics.jsonl")][-1]
  assert trained["step"] == 4 and sorted(trained["evaluators"]) == ["coco_ap", "confusion", "panoptic_quality"]
  scores = api.evaluate(str(root / "full"))  # --mode eval: the latest checkpoint, all three tasks
  # --mode eval folds BatchNorm into the convolutions (jaxseg.models.fold_bn): equal to
  # rounding, so a pixel near a tie may flip (measured: mIoU 0.0302153 vs 0.0302152)
  for key in ("pq", "pq_things", "pq_stuff", "mask_ap", "miou"):
    assert key in scores
    np.testing.assert_allclose(scores[key], trained[key], atol=1e-4, err_msg=key)  # NaN == NaN here
  assert 0 <= scores["pq"] <= 1 and 0 <= scores["miou"] <= 1 and len(scores["per_class_iou"]) == 8
  row = [json.loads(line) for line in open(root / "full" / "metrics.jsonl")][-1]
  assert row["mode"] == "eval" and row["step"] == 4


def test_predictor_and_prediction_files(runs, tmp_path):
  root, _, _ = runs
  from jaxseg.data.builders.shapes_panoptic import ISTHING as THINGS, make_example
  image = make_example("val", 3)["image"]  # 112..160 px a side: padded to a multiple of 32 inside
  seg = api.load(str(root / "full"))
  h, w = image.shape[:2]
  raw = seg.query_outputs(image[None], "panoptic")
  assert raw["class_logits"].shape == (1, 16, 9) and raw["mask_logits"].shape == (1, 16, -(-h // 4), -(-w // 4))
  ids, segments = seg.panoptic(image[None])
  assert ids.shape == (1, h, w) and set(np.unique(ids)) - {0} <= {s["id"] for s in segments[0]}
  (masks, classes, scores, boxes), = seg.instances(image[None])
  assert masks.shape[1:] == (h, w) and len(classes) == len(scores) == len(boxes) <= 16
  assert np.asarray(THINGS)[classes].all()  # no stuff class among the detections

  images = tmp_path / "images"
  images.mkdir()
  Image.fromarray(image).save(images / "a.png")
  seg.family.write_predictions(seg, str(images), str(tmp_path / "out"))
  written = json.load(open(tmp_path / "out" / "panoptic" / "panoptic.json"))
  (ann,) = written["annotations"]
  png = rgb_to_id(np.asarray(Image.open(tmp_path / "out" / "panoptic" / ann["file_name"])))
  np.testing.assert_array_equal(png, ids[0])
  assert sorted(s["id"] for s in ann["segments_info"]) == sorted(set(np.unique(ids[0])) - {0})
  results = json.load(open(tmp_path / "out" / "instances.json"))
  assert len(results) == len(classes) and all("segmentation" in r for r in results)

