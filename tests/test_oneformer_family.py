"""The universal (mask-classification) family with OneFormer: each task's ground truth
and texts against a direct reading of the authors' dataset mapper; the `:tiny` config
trains, resumes exactly, and evaluates PQ, mask AP and mIoU from one checkpoint, each
with its own task token; jaxseg.load's predictor and the --mode predict files."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from jaxseg import api, train
from jaxseg.families import universal
from jaxseg.models.heads.oneformer.clip_tokenizer import default_tokenizer
from jaxseg.panoptic_quality import rgb_to_id
from tests.conftest import ROOT, devices_env, load_config

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
  """configs/oneformer_coco.py:tiny shortened for the tests: `steps` steps, lr x 0.1
  after the first (coco's step schedule), 6 val images scaled to a long side of 96 on a
  96 x 96 canvas."""
  config = load_config("oneformer_coco", "tiny")
  config.train.update({"steps": steps, "eval_every": steps, "ckpt_every": steps, "log_every": 1, **train_keys})
  config.optim.decay_steps = (1,)
  config.dataset.eval_split = "val[:6]"
  config.input.update(dict(eval_size=(96, 96), eval_long_side=96))
  config.eval.batch_size = 6
  return config


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
  """:tiny trained 2 steps straight (and evaluated), and 1 + 1 with a restart: (root,
  states). One compiled train step serves both (the session's compilation cache)."""
  root = tmp_path_factory.mktemp("oneformer")
  full = train.train_and_evaluate(tiny(2), str(root / "full"))
  quiet = tiny(2, ckpt_every=1)
  for options in quiet.evals.values():  # the interrupted run evaluates nothing: the full run's evaluation
    options.every = -1  # is the one the tests read
  train.train_and_evaluate(quiet, str(root / "resumed"), stop_after=1)
  resumed = train.train_and_evaluate(quiet, str(root / "resumed"))
  return root, full, resumed


def test_tiny_resumes_exactly(runs):
  root, full, resumed = runs
  assert int(full.step) == int(resumed.step) == 2
  for a, b in zip(jax.tree.leaves((full.params, full.batch_stats, full.opt_state)),
                  jax.tree.leaves((resumed.params, resumed.batch_stats, resumed.opt_state))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
  read = lambda p: [json.loads(line) for line in open(root / p / "train_log.jsonl")]
  log, log2 = read("full"), read("resumed")
  assert [r["step"] for r in log] == [r["step"] for r in log2] == [1, 2]
  np.testing.assert_allclose([r["loss"] for r in log2], [r["loss"] for r in log], atol=1e-6)
  assert log[1]["lr"] == pytest.approx(0.1 * log[0]["lr"])  # the step schedule restored with the state
  terms = {k for k in log[0] if k.startswith("loss_")}
  assert {"loss_class", "loss_mask", "loss_dice", "loss_contrastive", "loss_class_0", "loss_dice_2"} <= terms
  assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in log)


def test_one_checkpoint_evaluates_pq_ap_and_miou(runs):
  root, _, _ = runs
  trained = [json.loads(line) for line in open(root / "full" / "metrics.jsonl")][-1]
  assert trained["step"] == 2 and sorted(trained["evaluators"]) == ["coco_ap", "confusion", "panoptic_quality"]
  scores = api.evaluate(str(root / "full"))  # --mode eval: the latest checkpoint, all three tasks
  # --mode eval folds BatchNorm into the convolutions (jaxseg.models.fold_bn): equal to
  # rounding, so a pixel near a tie may flip (measured: mIoU 0.0302153 vs 0.0302152)
  for key in ("pq", "pq_things", "pq_stuff", "mask_ap", "miou"):
    assert key in scores
    np.testing.assert_allclose(scores[key], trained[key], atol=1e-4, err_msg=key)  # NaN == NaN here
  assert 0 <= scores["pq"] <= 1 and 0 <= scores["miou"] <= 1 and len(scores["per_class_iou"]) == 8
  row = [json.loads(line) for line in open(root / "full" / "metrics.jsonl")][-1]
  assert row["mode"] == "eval" and row["step"] == 2


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


def test_predictions_are_resized_to_the_stored_size_before_the_inference(data_dir):
  """The authors' evaluation with the eval images resized (records of 112..160 px scaled
  to a long side of 96 on a 96 x 96 canvas): mask logits (noisy blobs at 1/4 of the
  canvas) resized to the canvas, cut to the image and resized to the stored size
  (detectron2's sem_seg_postprocess, in torch) before the semantic, panoptic and
  instance inference (the transcription of the authors' code in
  tests/test_oneformer_postprocess) give `predict`'s outputs on the label canvas, with
  nothing beyond the stored size; PQ then scores them against the stored ground truth."""
  import cv2
  import torch
  import torch.nn.functional as F

  from jaxseg import families
  from jaxseg.data import datasets
  from jaxseg.data.builders.shapes_panoptic import make_example
  from jaxseg.families import stack
  from jaxseg.models.heads.oneformer import postprocess
  from jaxseg.panoptic_quality import PanopticQuality, id_to_rgb
  from tests.test_oneformer_postprocess import authors_instances, authors_panoptic, upsampled

  datasets.dataset_dir("shapes_panoptic", data_dir)
  family = families.get(tiny(1))
  records = [make_example("val", i) for i in range(3)]
  batch = stack([family.eval_transform(dict(r, panoptic=id_to_rgb(r["panoptic"]))) for r in records])
  assert batch["panoptic"].shape[1:] == (160, 160) and batch["image"].shape[1:3] == (96, 96)
  rng = np.random.RandomState(0)
  coarse = 6 * rng.randn(3 * 16, 6, 6).astype(np.float32)  # smooth random fields at 1/4 of the canvas
  mask_logits = np.stack([cv2.resize(x, (24, 24), interpolation=cv2.INTER_CUBIC) for x in coarse])
  mask_logits = mask_logits.reshape(3, 16, 24, 24).transpose(0, 2, 3, 1) - 8  # blobs: 3..7 segments an image
  class_logits = (6 * rng.randn(3, 16, 9)).astype(np.float32)
  family.query_outputs = lambda model, variables, images, tasks: [
      {"class_logits": class_logits, "mask_logits": mask_logits}] * len(tasks)
  out = jax.device_get(jax.jit(lambda batch: family.predict(None, None, batch))(batch))
  options, isthing = family.evaluator_options(), family.isthing()
  threshold = options["panoptic_quality"]["object_mask_threshold"]
  ours = postprocess.panoptic_segments(out["panoptic_queries"], isthing, options["panoptic_quality"]["overlap_threshold"])

  reference = PanopticQuality(family.categories())
  ids = [c["id"] for c in family.categories()]
  for b, r in enumerate(records):
    (h, w), (hs, ws) = batch["image_size"][b], batch["label_size"][b]
    assert (h, w) != (hs, ws) and (hs, ws) == r["label"].shape
    m = upsampled(mask_logits[b:b + 1], (96, 96))[:, :, :h, :w]  # sem_seg_postprocess
    m = F.interpolate(m, size=(int(hs), int(ws)), mode="bilinear", align_corners=False)[0]
    c = torch.from_numpy(class_logits[b])
    # pixels away from a tie of the panoptic winner and from a mask threshold (of ~20,000)
    scores, labels = torch.softmax(c, -1).max(-1)
    kept = (labels != 8) & (scores > threshold)
    top2 = (scores[kept].view(-1, 1, 1) * m[kept].sigmoid()).topk(2, dim=0).values.numpy()
    clear = (top2[0] - top2[1] > 1e-5) & (np.abs(m.numpy()) > 1e-4).all(0)
    assert clear.mean() > 0.99
    semantic = torch.einsum("qc,qhw->hwc", torch.softmax(c, -1)[:, :-1], m.sigmoid()).numpy()
    top2 = np.sort(semantic, -1)[..., -2:]
    sure = top2[..., 1] - top2[..., 0] > 1e-5
    np.testing.assert_array_equal(out["pred"][b, :hs, :ws][sure], semantic.argmax(-1)[sure])
    seg, segments = authors_panoptic(c, m, isthing, threshold, 0.8)
    assert segments and (seg == 0).any()
    np.testing.assert_array_equal(ours["panoptic"][b, :hs, :ws][clear], seg[clear])
    assert not ours["panoptic"][b, hs:].any() and not ours["panoptic"][b, :, ws:].any()
    assert [s["category"] for s in ours["segments"][b]] == [s["category"] for s in segments]
    ref = authors_instances(c, m, isthing, options["coco_ap"]["max_detections"])
    order, valid = np.argsort(-ref["class_scores"]), out["instance_valid"][b]
    assert valid.sum() == len(order) > 0
    masks = out["instance_masks"][b][valid]
    np.testing.assert_array_equal(masks[:, :hs, :ws][:, clear], ref["masks"][order][:, clear])
    assert not masks[:, hs:].any() and not masks[:, :, ws:].any()
    np.testing.assert_allclose(out["instance_scores"][b][valid], ref["scores"][order], rtol=1e-5)
    seg_info = r["segments"]
    reference.update(r["panoptic"], [{"id": int(i), "category_id": ids[int(k)], "iscrowd": int(z)} for i, k, z in
                                     zip(seg_info["id"], seg_info["category"], seg_info["iscrowd"])],
                     ours["panoptic"][b, :hs, :ws], [{"id": s["id"], "category_id": ids[s["category"]]}
                                                     for s in ours["segments"][b]])
  evaluator = family.evaluators()["panoptic_quality"]
  scores = evaluator.result(evaluator.update(evaluator.init(), out, batch))
  expected = reference.result()
  assert scores["n"] == expected["n"] > 0
  for key in ("pq", "sq", "rq", "pq_things", "pq_stuff"):
    assert scores[key] == pytest.approx(expected[key], rel=1e-9, nan_ok=True), key


# The training loss of a small :tiny (32 x 32 crops, 2 decoder layers, 64 points) on 8
# CPU devices and on 1: the matching, the point sampling and every loss run inside the
# sharded program on the global batch, so the loss, each term and the BN statistics agree.
# The batch has an image without ground truth and one with every slot used, and each
# task. In a subprocess: the 8 devices must be requested before JAX starts.
EIGHT_DEVICES = r"""
import jax, jax.numpy as jnp, numpy as np
from jaxseg import families, sharding
from jaxseg.families import universal
from jaxseg.models.heads.oneformer.clip_tokenizer import TASKS, task_ids
from jaxseg.train import make_loss_fn, state_factory
from tests.conftest import load_config

assert jax.device_count() == 8, jax.devices()
config = load_config("oneformer_ade20k", "tiny")
config.input.crop_size = (32, 32)
config.model.head.update(dict(decoder_layers=2, train_points=64))
family = families.get(config)
model = family.build_model(train=True)
init_fn, abstract, tx, schedule = state_factory(config, model, family)
rng = np.random.default_rng(0)
b, m, k = 8, config.input.max_instances, config.dataset.num_classes
counts = [0, 1, 3, 5, 7, 9, 12, 2]  # an image without ground truth, one with every slot used
valid = np.arange(m)[None] < np.array(counts)[:, None]
classes = np.where(valid, rng.integers(0, k, (b, m)), 0).astype(np.int32)
masks = ((rng.random((b, m, 32, 32)) < 0.3) & valid[..., None, None]).astype(np.uint8)
tasks = [TASKS[i % 3] for i in range(b)]
table = universal.TextTable([str(i) for i in range(k)])
batch = {"image": rng.integers(0, 256, (b, 32, 32, 3)).astype(np.uint8), "task_ids": task_ids(tasks),
         "text_ids": np.stack([table(c, v, t, family.text_count()) for c, v, t in zip(classes, valid, tasks)]),
         "instance_classes": classes, "instance_masks": masks, "instance_valid": valid}
loss_fn = make_loss_fn(config, model, family)
results = []
for devices in (jax.devices(), jax.devices()[:1]):
  mesh = sharding.make_mesh(devices)
  data_sh, repl = sharding.data_sharding(mesh), sharding.replicated(mesh)
  state = jax.jit(init_fn, out_shardings=sharding.state_shardings(abstract, mesh))(jax.random.key(0))
  x = sharding.global_batch(batch, data_sh)
  assert len(x["image"].sharding.device_set) == len(devices)
  loss, (terms, stats) = jax.jit(loss_fn)(state.params, state.batch_stats, x, jax.random.key(1))
  results.append(jax.device_get({"loss": loss, **terms, "stats": stats}))
a, b1 = results
assert len(a) == 1 + 3 * 3 + 1 + 1, sorted(a)  # 3 layers x (class, mask, dice), contrastive, BN statistics
for name in a:
  for x, y in zip(jax.tree.leaves(a[name]), jax.tree.leaves(b1[name])):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5, err_msg=name)
print("ok", float(a["loss"]))
"""


def test_eight_devices_give_the_loss_of_one():
  out = subprocess.run([sys.executable, "-c", EIGHT_DEVICES], cwd=ROOT, env={**os.environ, **devices_env(8)},
                       capture_output=True, text=True, timeout=1800)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "ok" in out.stdout
