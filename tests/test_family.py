"""A task family defined here alone, outside the package: which shape classes appear in
a `shapes` image (a (B, K) multi-label output, not a dense one), with its own
transforms, loss, evaluators and prediction files. It trains, checkpoints, resumes,
evaluates and predicts through `python -m jaxseg.main` with `config.family` naming
this module: a new family needs no edit of the semantic files."""
import json
import os

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import families
from jaxseg.losses import bce_with_logits
from tests.conftest import run_cli

SIZE = 32


def presence(label, num_classes, ignore_index=255):
  """(H, W) label map -> (K,) float32: 1 where the class occurs."""
  ids = np.unique(label[label != ignore_index])
  out = np.zeros(num_classes, np.float32)
  out[ids[ids < num_classes]] = 1.0
  return out


class PresenceNet(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, batch, train=False):
    x = batch["image"].astype(jnp.float32) / 127.5 - 1.0
    x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(nn.Conv(16, (3, 3), strides=2)(x))
    return {"presence": nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))}


class ExactMatch:
  """Fraction of images whose thresholded presence vector is right in every class."""

  def init(self):
    return jnp.zeros((2,), jnp.float32)

  def update(self, acc, outputs, batch):
    right = jnp.all((outputs["probs"] > 0.5) == (batch["present"] > 0.5), axis=-1)
    return acc + jnp.stack([jnp.sum(right * batch["valid"]), jnp.sum(batch["valid"])])

  def result(self, acc):
    return {"exact_match": float(acc[0] / max(acc[1], 1)), "images": int(acc[1])}


class ClassF1:
  """Micro-averaged F1 of the presence decisions."""

  def init(self):
    return jnp.zeros((3,), jnp.float32)  # TP, FP, FN

  def update(self, acc, outputs, batch):
    pred, true = outputs["probs"] > 0.5, batch["present"] > 0.5
    valid = batch["valid"][:, None] > 0
    count = lambda m: jnp.sum(m & valid)
    return acc + jnp.stack([count(pred & true), count(pred & ~true), count(~pred & true)]).astype(jnp.float32)

  def result(self, acc):
    tp, fp, fn = (float(a) for a in acc)
    return {"presence_f1": 2 * tp / max(2 * tp + fp + fn, 1.0)}


class Family(families.Base):
  EVALUATORS = {"exact_match": {"every": 0}, "f1": {"every": 0}}

  def build_model(self, train):
    return PresenceNet(self.config.dataset.num_classes)

  def example(self, train):
    k = self.config.dataset.num_classes
    return {"image": np.zeros((SIZE, SIZE, 3), np.uint8), "present": np.zeros(k, np.float32),
            "valid": np.float32(0.0)}

  def _record(self, record, flip=False):
    image = cv2.resize(np.asarray(record["image"]), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    if flip:
      image = image[:, ::-1]
    label = np.asarray(record["label"])[..., 0] if record["label"].ndim == 3 else np.asarray(record["label"])
    return {"image": np.ascontiguousarray(image),
            "present": presence(label, self.config.dataset.num_classes, self.config.dataset.ignore_index),
            "valid": np.float32(1.0)}

  def train_transform(self, record, rng, where="record"):
    return self._record(record, flip=rng.random() < 0.5)

  def eval_transform(self, record, where="record"):
    return self._record(record)

  def loss(self, outputs, batch, rng):
    bce = jnp.mean(bce_with_logits(outputs["presence"], batch["present"]))
    return bce, {"bce": bce}

  def predict(self, model, variables, batch):
    return {"probs": jax.nn.sigmoid(model.apply(variables, batch, train=False)["presence"])}

  def evaluators(self):
    made = {"exact_match": ExactMatch, "f1": ClassF1}
    return {name: made[name]() for name in self.config.evals}

  def report(self, scores, step):
    return f"step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items()) if isinstance(v, float))

  def predictor(self, model, variables, step, mesh):
    family = self
    predict = jax.jit(lambda v, batch: family.predict(model, v, batch))

    class Presence:
      def __init__(self):
        self.step = step

      def classes(self, images):
        batch = {"image": np.stack([cv2.resize(im, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for im in images])}
        return np.asarray(predict(variables, batch)["probs"]) > 0.5

    return Presence()

  def write_predictions(self, predictor, input_dir, output_dir):
    os.makedirs(output_dir, exist_ok=True)
    for name in sorted(os.listdir(input_dir)):
      rgb = cv2.imread(os.path.join(input_dir, name))[..., ::-1]
      present = predictor.classes(rgb[None])[0]
      with open(os.path.join(output_dir, os.path.splitext(name)[0] + ".json"), "w") as f:
        json.dump({"classes": np.flatnonzero(present).tolist()}, f)

  def describe(self):
    return "class presence (test family)"


CONFIG = """
from jaxseg.config import base_config

def get_config():
  c = base_config()
  c.family = "tests.test_family"
  c.dataset.name = "shapes"
  c.dataset.num_classes = 6
  c.optim.lr = 0.05
  c.train.update(dict(batch_size=8, steps=6, log_every=2, eval_every=3, ckpt_every=3,
                      best_metric="exact_match", tensorboard_images=0))
  c.evals = dict(exact_match=dict(every=0), f1=dict(every=-1))  # F1: never in training, --mode eval only
  c.eval.batch_size = 50
  return c
"""


def test_a_family_from_outside_the_package_trains_resumes_evaluates_and_predicts(data_dir, tmp_path):
  config = tmp_path / "presence.py"
  config.write_text(CONFIG)
  workdir = str(tmp_path / "run")
  first = run_cli("--config", str(config), "--workdir", workdir, "--config.train.steps=3")
  assert first.returncode == 0, first.stderr[-3000:]
  assert "class presence (test family)" in first.stdout
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3"]
  resumed = run_cli("--config", str(config), "--workdir", workdir)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resumed from {os.path.join(os.path.abspath(workdir), 'checkpoints')}/3" in resumed.stdout
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [(r["step"], r["evaluators"]) for r in rows] == [(3, ["exact_match"]), (6, ["exact_match"])]
  assert all(r["images"] == 200 and "presence_f1" not in r for r in rows)
  best = max(rows, key=lambda r: r["exact_match"])
  assert f"FINAL best exact_match {best['exact_match']:.4f} at step {best['step']}" in resumed.stdout
  log = [json.loads(line) for line in open(os.path.join(workdir, "train_log.jsonl"))]
  assert [r["step"] for r in log] == [2, 3, 4, 6] and all("loss_bce" in r for r in log)

  evaluated = run_cli("--workdir", workdir, "--mode", "eval")  # the work dir's config.json
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  row = json.loads(open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()[-1])
  assert row["mode"] == "eval" and row["step"] == 6
  assert row["exact_match"] == rows[-1]["exact_match"] and 0 <= row["presence_f1"] <= 1

  from jaxseg.data.builders.shapes import make_example
  images = tmp_path / "images"
  images.mkdir()
  cv2.imwrite(str(images / "a.png"), make_example("val", 0)[0][..., ::-1])
  out = run_cli("--workdir", workdir, "--mode", "predict", "--input", str(images), "--output", str(tmp_path / "pred"))
  assert out.returncode == 0, out.stderr[-3000:]
  assert set(json.load(open(tmp_path / "pred" / "a.json"))) == {"classes"}
