"""PSSL: the explanation rules against numpy references (SmoothGrad differentiated by
hand on a 2-layer MLP, deciles by ranks, the ensemble and the top-decile label), the
chunk store's crash safety, and the generation end to end (kill -9 and resume, 2
processes x 2 devices) on the fake ImageNet of tests/fake_archives.py."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.errors import InputDataError, UserError
from jaxseg.pssl import explain
from jaxseg.pssl.chunks import ChunkStore


# ----------------------------------------------------------------- numpy references
def mlp(params, x):
  """logits of a 2-layer ReLU MLP on the flattened image (jax)."""
  w1, b1, w2, b2 = params
  return jnp.maximum(x.reshape(x.shape[0], -1) @ w1 + b1, 0) @ w2 + b2


def mlp_prob_grad(params, x, y):
  """d softmax(z)_y / dx of the MLP, by hand in numpy, for one image x (H, W, C)."""
  w1, b1, w2, b2 = (np.asarray(p, np.float64) for p in params)
  a = x.reshape(-1) @ w1 + b1
  z = np.maximum(a, 0) @ w2 + b2
  p = np.exp(z - z.max())
  p /= p.sum()
  dz = p[y] * ((np.arange(len(p)) == y) - p)  # d p_y / d z
  da = (w2 @ dz) * (a > 0)
  return (w1 @ da).reshape(x.shape)


def test_smoothgrad_matches_a_hand_differentiated_numpy_reference():
  rng = np.random.default_rng(0)
  b, h, w, c, hidden, k, samples = 3, 4, 5, 3, 16, 6, 7
  params = [rng.normal(0, 0.5, (h * w * c, hidden)), rng.normal(0, 0.1, hidden), rng.normal(0, 0.5, (hidden, k)),
            rng.normal(0, 0.1, k)]
  params = [jnp.asarray(p, jnp.float32) for p in params]
  x = rng.normal(0, 1, (b, h, w, c)).astype(np.float32) * np.array([1.0, 2.0, 0.5], np.float32)
  labels = np.array([0, 3, 5])
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1), i))(jnp.arange(b))
  ours = np.asarray(explain.smoothgrad(lambda xn: mlp(params, xn), jnp.asarray(x), jnp.asarray(labels), keys,
                                       samples, noise=0.1))

  want = np.zeros((b, h, w))
  for i in range(b):
    sigma = 0.1 * (x[i].max() - x[i].min())  # noise 0.1 x (max - min) of this image
    total = np.zeros(x.shape[1:])
    for s in range(samples):  # the same normal draws: fold_in(image key, sample)
      eps = np.asarray(jax.random.normal(jax.random.fold_in(keys[i], s), x.shape[1:], jnp.float32))
      total += mlp_prob_grad(params, x[i] + sigma * eps, labels[i])
    want[i] = np.abs(total / samples).sum(-1)  # mean signed gradient, then |.| summed over channels
  np.testing.assert_allclose(ours, want, rtol=2e-4, atol=1e-6 * want.max())
  assert want.min() >= 0 and np.ptp(want) > 0


def numpy_deciles(score):
  b, h, w = score.shape
  flat = score.reshape(b, -1)
  ranks = np.empty_like(flat, dtype=np.int64)
  for i in range(b):
    ranks[i, np.argsort(flat[i], kind="stable")] = np.arange(flat.shape[1])
  return (ranks * 10 // flat.shape[1]).reshape(b, h, w).astype(np.uint8)


def test_deciles_are_ranks_in_tenths_ties_in_pixel_order():
  rng = np.random.default_rng(1)
  score = rng.random((2, 7, 9)).astype(np.float32)
  score[0, :2] = 0.5  # ties
  ours = np.asarray(explain.deciles(jnp.asarray(score)))
  np.testing.assert_array_equal(ours, numpy_deciles(score))
  assert ours.dtype == np.uint8 and ours.min() == 0 and ours.max() == 9
  n = 63
  for i in range(2):  # each decile holds floor/ceil of a tenth of the pixels
    counts = np.bincount(ours[i].ravel(), minlength=10)
    assert counts.sum() == n and counts.min() >= n // 10 and counts.max() <= -(-n // 10)


def test_ensemble_normalises_each_model_then_averages_and_top_decile_gets_the_class():
  rng = np.random.default_rng(2)
  maps = rng.random((3, 2, 6, 10)).astype(np.float32) * np.array([1.0, 50.0, 0.01], np.float32)[:, None, None, None]
  ours = np.asarray(explain.ensemble(jnp.asarray(maps)))
  want = np.mean(maps / maps.max(axis=(2, 3), keepdims=True), axis=0)  # scale-free: each model counts alike
  np.testing.assert_allclose(ours, want, rtol=1e-6)
  d = np.asarray(explain.deciles(jnp.asarray(ours)))
  label = np.asarray(explain.pseudo_label(jnp.asarray(d), jnp.asarray([7, 999]), background=1000))
  for i, cls in enumerate([7, 999]):
    top = want[i] >= np.sort(want[i].ravel())[-6]  # 60 pixels: the 6 largest are D9
    np.testing.assert_array_equal(label[i] == cls, top)
    assert set(np.unique(label[i])) == {cls, 1000}


# --------------------------------------------------------------------- chunk store
def test_chunks_a_reader_accepts_only_complete_listed_chunks(tmp_path):
  settings = {"seed": 0, "members": ["a"]}
  store = ChunkStore(tmp_path, settings)
  deciles = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) % 10
  store.write(0, 0, [0, 1], [5, 6], deciles)
  # A killed writer: a half-written temporary file, and a chunk renamed but never listed.
  (tmp_path / "chunks" / "00001.npz.tmp-123").write_bytes(b"half")
  (tmp_path / "chunks" / "00001.npz").write_bytes(b"not listed")
  again = ChunkStore(tmp_path, settings)
  assert again.done() == 1 and not (tmp_path / "chunks" / "00001.npz.tmp-123").exists()
  np.testing.assert_array_equal(again.read(0)["deciles"], deciles)
  with pytest.raises(InputDataError, match="00001.npz: not listed"):
    again.read(1)
  data = bytearray((tmp_path / "chunks" / "00000.npz").read_bytes())
  data[-5] ^= 1
  (tmp_path / "chunks" / "00000.npz").write_bytes(bytes(data))
  with pytest.raises(InputDataError, match="00000.npz: its bytes do not match the sha256"):
    ChunkStore(tmp_path, settings).read(0)
  with pytest.raises(UserError, match="seed: 0 there, 1 now"):
    ChunkStore(tmp_path, {**settings, "seed": 1})


# ------------------------------------------------------------------- fine-tuning
def test_init_from_a_1001_class_pretraining_drops_only_the_classifiers(tmp_path):
  import flax
  from jaxseg.convert.init_from import merge
  from jaxseg.errors import CheckpointMismatchError
  from jaxseg.models.segmentor import build_model
  from tests.conftest import load_config

  def variables(config):
    tree = jax.eval_shape(lambda: build_model(config).init(
        {"params": jax.random.key(0), "dropout": jax.random.key(0)}, jnp.zeros((1, 64, 64, 3)), train=True))
    return {c: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree[c]) for c in ("params", "batch_stats")}

  pretrained = load_config("pssl_pspnet_imagenet", "tiny")
  finetune = load_config("pssl_pspnet_imagenet", "tiny")
  finetune.dataset.num_classes = 21
  source = jax.tree.map(lambda a: np.ones(a.shape, np.float32), variables(pretrained))
  merged, report = merge(variables(finetune), source)
  flat = flax.traverse_util.flatten_dict(source, sep="/")
  classifiers = sorted(k for k in flat if k.split("/")[-2] == "classifier")
  assert classifiers == ["params/aux_heads_aux/classifier/bias", "params/aux_heads_aux/classifier/kernel",
                         "params/decode_head/classifier/bias", "params/decode_head/classifier/kernel"]
  assert sorted(k.split(" ")[0] for k in report["skipped"]) == classifiers
  assert all("classifier for 1001 classes, the model has 21" in s for s in report["skipped"])
  assert sorted(report["loaded"]) == sorted(set(flat) - set(classifiers)) and report["missing"] == []
  out = flax.traverse_util.flatten_dict(merged, sep="/")
  assert float(out["params/decode_head/classifier/kernel"].sum()) == 0  # kept at initialisation
  assert all(float(out[k].min()) == 1 for k in report["loaded"])
  other = next(k for k in sorted(report["loaded"]) if k.startswith("params/decode_head/") and k.endswith("kernel"))
  flat[other] = np.ones((*flat[other].shape[:-1], 5), np.float32)  # another layer of another width: an error
  with pytest.raises(CheckpointMismatchError, match=f"{other} has shape"):
    merge(variables(finetune), flax.traverse_util.unflatten_dict(flat, sep="/"))


# ------------------------------------------------------------- generation end to end
GENERATION_CONFIG = """
from jaxseg.pssl.generate import default_config

def get_config():
  c = default_config()
  c.source.update(dict(name="imagenet_pssl", data_dir={data_dir!r}, split="train"))
  c.members = {members!r}
  c.input_size = (32, 32)
  c.samples = 3
  c.batch_size = {batch}
  c.chunk_batches = 1
  c.build_dataset = {build}
  return c
"""


def random_member(path, depth, seed):
  """A classifier directory (what convert --classifier writes) with random weights and
  random BN statistics."""
  from jaxseg.config import base_config
  from jaxseg.convert import write_checkpoint
  c = base_config()
  c.model.backbone.update(dict(depth=depth, width=8, stem="7x7"))
  c.dataset.num_classes = 1000
  tree = jax.eval_shape(lambda: explain.classifier_from_config(c).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  rng = np.random.default_rng(seed)
  draw = lambda s: rng.uniform(0.5, 1.5, s.shape) if s.ndim < 2 else rng.normal(0, (2 / np.prod(s.shape[:-1])) ** 0.5, s.shape)
  variables = {col: jax.tree.map(lambda s: draw(s).astype(np.float32), tree[col]) for col in ("params", "batch_stats")}
  write_checkpoint(str(path), c, variables, {"backbone_only": False, "classifier": True})
  return str(path)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
  """The fake ImageNet prepared (6 train images of 10-11 x 12) and two members."""
  from jaxseg.prepare import prepare
  from tests import fake_archives as fake
  root = tmp_path_factory.mktemp("pssl")
  archives, expected = fake.make_imagenet()
  prepare("imagenet_pssl", str(root / "tfds"), str(fake.write(archives, root / "manual")))
  members = (random_member(root / "m0", 10, 0), random_member(root / "m1", 14, 1))
  return {"root": root, "members": members, "expected": expected}


def generation(imagenet, workdir, devices, batch, build=True, processes=1):
  from tests.conftest import ROOT, devices_env
  from tests.test_multihost import free_port
  config = workdir.parent / f"{workdir.name}_config.py"
  config.write_text(GENERATION_CONFIG.format(data_dir=str(imagenet["root"] / "tfds"), members=imagenet["members"],
                                             batch=batch, build=build))
  address = f"localhost:{free_port()}"
  launch = lambda i: ([f"--coordinator_address={address}", f"--num_processes={processes}", f"--process_id={i}"]
                      if processes > 1 else [])
  env = {**os.environ, **devices_env(devices, optimized=True)}
  return [subprocess.Popen([sys.executable, "-m", "jaxseg.pssl.generate", "--config", str(config), "--workdir",
                            str(workdir), *launch(i)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True) for i in range(processes)]


def finish(procs):
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs[0]


def records(workdir):
  from jaxseg.data import datasets
  source = datasets.source(datasets.load("pssl_generated", str(workdir / "tfds")), "train")
  return sorted((source[i] for i in range(len(source))), key=lambda r: r["file_name"])


def deciles_by_record(workdir):
  store = ChunkStore(workdir, json.load(open(workdir / "manifest.json"))["settings"], writer=False)
  chunks = [store.read(n) for n in range(store.done())]
  return dict(zip(np.concatenate([c["index"] for c in chunks]).tolist(), np.concatenate([c["deciles"] for c in chunks])))


def test_generation_resumes_after_kill_9_with_the_same_dataset_and_multihost_agrees(imagenet, tmp_path):
  # 2 processes x 2 devices (compared at the end) run alongside the rest.
  full, two = tmp_path / "full", tmp_path / "two"
  two_procs = generation(imagenet, two, 2, 4, build=False, processes=2)
  out = finish(generation(imagenet, full, 2, 2))
  assert "chunk 3/3: 6/6 images" in out and "images/s, ETA" in out
  want = records(full)
  assert len(want) == 6
  by_name = imagenet["expected"]["class_of"]
  wnids = imagenet["expected"]["wnids"]
  for r in want:  # the top decile carries the image's class, the rest the background
    cls = wnids.index(by_name[r["file_name"].decode()])
    assert r["class"] == cls and r["label"].dtype == np.uint16 and r["label"].shape == r["deciles"].shape
    np.testing.assert_array_equal(r["label"][..., 0], np.where(r["deciles"][..., 0] == 9, cls, 1000))
    assert r["deciles"].max() == 9 and r["deciles"].min() == 0

  # The semantic pipeline reads it as a 1001-class dataset (uint16 labels, ignore 1001).
  from jaxseg import families
  from jaxseg.data import datasets, pipeline
  from tests.conftest import load_config
  config = load_config("pssl_pspnet_imagenet", "tiny")
  config.dataset.data_dir = str(full / "tfds")
  family = families.get(config)
  source = datasets.source(family.builder, "train")
  batch = pipeline.train_dataset(config, source, family=family)[0]
  assert batch["label"].dtype == np.uint16 == family.example(train=True)["label"].dtype
  assert batch["label"].shape == (8, 64, 64) and set(np.unique(batch["label"])) <= {*range(3), 1000, 1001}
  assert 1000 in batch["label"] and (batch["label"] < 3).any()

  # kill -9 once the first chunk is listed, then rerun: the same dataset, record for record.
  # On an idle machine the last chunks can follow the first within milliseconds, so a
  # kill that lands after the run's end is tried again in a fresh work dir.
  for attempt in range(3):
    resumed = tmp_path / f"resumed{attempt}"
    (proc,) = generation(imagenet, resumed, 2, 2)
    manifest, deadline = resumed / "manifest.json", time.time() + 300
    while time.time() < deadline and proc.poll() is None:
      if manifest.exists() and json.load(open(manifest))["chunks"]:
        break
      time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done = len(json.load(open(manifest))["chunks"])
    if done < 3:
      break
  assert 1 <= done < 3 and not (resumed / "tfds").exists(), f"every kill came after the last chunk ({done})"
  out = finish(generation(imagenet, resumed, 2, 2))
  assert f"{done} already done" in out
  got = records(resumed)
  assert [sorted(r) for r in got] == [sorted(r) for r in want]
  for a, b in zip(got, want):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)

  # 2 processes x 2 devices: the same deciles for every record as one process.
  finish(two_procs)
  one, many = deciles_by_record(full), deciles_by_record(two)
  assert sorted(one) == sorted(many) == list(range(6))
  for i in one:
    np.testing.assert_array_equal(many[i], one[i], err_msg=f"record {i}")


def test_generation_config_and_member_errors_name_the_key_or_directory(tmp_path):
  from jaxseg.convert import write_checkpoint
  from jaxseg.errors import ConfigError
  from jaxseg.pssl.generate import check_config, default_config, load_member
  c = default_config()
  with pytest.raises(ConfigError, match="members is empty"):
    check_config(c)
  c.members = ("x",)
  c.source.splt = "train"
  with pytest.raises(ConfigError, match="'source.splt'"):
    check_config(c)
  backbone_only = random_member(tmp_path / "full", 10, 0)
  from jaxseg.convert.init_from import read_variables
  from jaxseg.api import workdir_config
  variables = read_variables(backbone_only)
  del variables["params"]["fc"]
  write_checkpoint(str(tmp_path / "nofc"), workdir_config(backbone_only), variables, {"backbone_only": True})
  with pytest.raises(InputDataError, match=f"member {tmp_path / 'nofc'}: not a classifier"):
    load_member(str(tmp_path / "nofc"))


# ------------------------------------------------------ the demonstration's pieces
def test_shapes_classification_records_hold_one_object_of_their_class():
  from jaxseg.data.builders import shapes, shapes_classification as view
  classes = []
  for i in range(6):
    image, cls, mask = view.make_example("train", i)
    again = view.make_example("train", i)
    np.testing.assert_array_equal(again[0], image)  # a pure function of (split, index)
    assert image.dtype == np.uint8 and image.shape == (*mask.shape, 3) and 112 <= min(mask.shape) <= 160
    assert 1 <= cls <= 5 and set(np.unique(mask)) == {0, cls, 255}  # one object, its class, the band
    assert (mask == cls).sum() >= 0.01 * mask.size
    other, _ = shapes.make_example("train", i)
    assert other.shape != image.shape or not np.array_equal(other, image)  # not the semantic dataset's image
    classes.append(cls)
  assert len(set(classes)) >= 3


def test_classification_family_loss_accuracy_and_transforms_against_numpy():
  from jaxseg import families
  from jaxseg.data.builders import shapes_classification as view
  from tests.conftest import load_config
  config = load_config("pssl_demo_classifier", "tiny")
  family = families.get(config)
  records = [dict(zip(("image", "label"), view.make_example("train", i)[:2])) for i in range(4)]
  rng = np.random.default_rng(0)
  batch = {k: np.stack([family.train_transform(r, rng)[k] for r in records]) for k in ("image", "label")}
  assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.uint8
  np.testing.assert_array_equal(batch["label"], [r["label"] for r in records])
  assert family.eval_transform(records[0])["image"].shape == (32, 32, 3)
  with pytest.raises(InputDataError, match="record 7: class 6 outside dataset.num_classes = 6"):
    family.eval_transform({"image": records[0]["image"], "label": 6}, where="record 7")

  model = family.build_model(train=True)
  variables = family.init(model, jax.random.key(0), jax.tree.map(jnp.asarray, batch))
  assert set(variables["params"]) == {"backbone", "fc"}  # what jaxseg.pssl.generate explains
  batch["label"][3] = -1  # a blank eval entry: counts for nothing
  logits = np.asarray(family.apply(model, variables, batch, train=False), np.float64)
  loss, terms = family.loss(jnp.asarray(logits), batch, None)
  log_p = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - \
      logits.max(-1, keepdims=True)
  want = -np.mean([log_p[i, batch["label"][i]] for i in range(3)])
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  pred = {"pred": jnp.asarray([batch["label"][0], (batch["label"][1] + 1) % 6, batch["label"][2], 0])}
  acc = family.evaluators()["accuracy"]
  scores = acc.result(acc.update(acc.init(), pred, jax.tree.map(jnp.asarray, batch)))
  assert scores == {"accuracy": 2 / 3, "num_images": 3}
  from jaxseg import sharding  # jaxseg.load's object: any image size, resized inside
  classifier = family.predictor(model, variables, 0, sharding.make_mesh())
  np.testing.assert_allclose(classifier.logits(records[0]["image"][None]),
                             family.apply(model, variables, {"image": family.eval_transform(records[0])["image"][None]},
                                          train=False), rtol=1e-5, atol=1e-6)


def test_pspnet_finetune_configs_hold_the_pretraining_model_and_paddleseg_schedules():
  from tests.conftest import load_config
  pretraining = load_config("pssl_pspnet_imagenet").model.to_dict()
  for name, dataset, steps, mode in (("pssl_pspnet_voc_finetune", "voc_aug", 40000, "whole"),
                                     ("pssl_pspnet_ade20k_finetune", "ade20k", 80000, "slide")):
    c = load_config(name)
    assert c.model.to_dict() == pretraining, name  # everything but the classifiers loads
    assert (c.dataset.name, c.train.steps, c.train.batch_size, c.eval.mode) == (dataset, steps, 16, mode)
    assert (c.optim.lr, c.optim.weight_decay, c.optim.lr_mults, c.input.crop_size) == (0.01, 4e-5, (), (512, 512))
    assert c.input.rotate_degrees == 0 and c.input.blur_prob == 0 and c.input.scale_step == 0.25
    assert load_config(name, "tiny").dataset.name == "shapes"
