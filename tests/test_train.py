import json
import os

import jax
import numpy as np
import pytest

from jaxseg import api, train
from tests.conftest import load_config


def tiny(steps):
  config = load_config("quickstart", "tiny")
  config.train.steps = steps
  config.train.ckpt_every = 3
  config.train.eval_every = 100
  return config


def test_resume_equals_an_uninterrupted_run(data_dir, tmp_path):
  n = 3
  full = train.train_and_evaluate(tiny(2 * n), str(tmp_path / "full"))
  # The interrupted run stops after n steps (checkpoint at n), then restarts.
  train.train_and_evaluate(tiny(2 * n), str(tmp_path / "resumed"), stop_after=n)
  assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == [str(n)]
  resumed = train.train_and_evaluate(tiny(2 * n), str(tmp_path / "resumed"))
  assert int(resumed.step) == int(full.step) == 2 * n
  for a, b in zip(jax.tree.leaves((full.params, full.batch_stats, full.opt_state)),
                  jax.tree.leaves((resumed.params, resumed.batch_stats, resumed.opt_state))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
  # Logs of both runs agree step by step (the data order is part of the state).
  read = lambda p: [json.loads(l) for l in open(tmp_path / p / "train_log.jsonl")]
  full_log, resumed_log = read("full"), read("resumed")
  assert [r["step"] for r in resumed_log] == [r["step"] for r in full_log]
  np.testing.assert_allclose([r["loss"] for r in resumed_log], [r["loss"] for r in full_log], atol=1e-6)
  metrics = [json.loads(l) for l in open(tmp_path / "full" / "metrics.jsonl")]
  assert metrics[-1]["step"] == 2 * n and 0 <= metrics[-1]["miou"] <= 1


@pytest.fixture(scope="module")
def precision_runs(data_dir, tmp_path_factory):
  """quickstart:tiny trained 150 steps in float32 and in bfloat16: (root, final mIoU
  per dtype, final state per dtype, the bf16 config)."""
  root = tmp_path_factory.mktemp("precision")
  runs, states = {}, {}
  for dtype in ("float32", "bfloat16"):
    config = tiny(150)
    config.train.eval_every = config.train.ckpt_every = 150
    config.model.dtype = dtype
    states[dtype] = train.train_and_evaluate(config, str(root / dtype))
    runs[dtype] = [json.loads(l) for l in open(root / dtype / "metrics.jsonl")][-1]["miou"]
  return root, runs, states, config


def test_bfloat16_keeps_float32_state_and_evaluates_fp32_weights_alike(precision_runs):
  """DESIGN.md's precision: bf16 compute, fp32 params, BN statistics and optimizer
  state; the fp32-trained weights computed in bf16 score within 1 point of fp32."""
  root, runs, states, config = precision_runs
  for dtype, state in states.items():
    for leaf in jax.tree.leaves((state.params, state.batch_stats, state.opt_state)):
      assert leaf.dtype in (np.float32, np.int32), (dtype, leaf.dtype)
  assert runs["float32"] > 0.3, runs  # it learnt: several classes segmented
  miou = api.evaluate(str(root / "float32"), config)["miou"]  # config: bf16
  assert abs(miou - runs["float32"]) < 0.01, (miou, runs)


def test_bfloat16_training_learns(precision_runs):
  """bf16 compute trains: the loss falls as fp32's does and the run segments. How close
  it ends to fp32 is not asserted: at 150 steps the tiny run is chaotic (bf16 rounding
  turns the first gradient about as much as a 1e-3 random change of the fp32 weights,
  cosine 0.96 vs 0.99, with the losses equal to 1e-4) and final mIoU moves by several
  points with the seed alone. Measured, bf16 / fp32: mIoU 0.30 / 0.38 and 0.37 / 0.41
  (seeds 0, 1, CLI), 0.22 / 0.40 here (this suite's XLA flags); the last-50-step loss
  ratio 1.13, 0.92 and 1.27. bf16 ends behind in all three: not traced further (the
  task-family refactor left bf16 training bit-identical, checked at its commit)."""
  root, runs, _, _ = precision_runs
  for dtype in ("float32", "bfloat16"):
    log = [json.loads(l)["loss"] for l in open(root / dtype / "train_log.jsonl")]
    first, last = np.mean(log[:5]), np.mean(log[-25:])  # logged every 2 steps
    assert last < 0.85 * first, (dtype, first, last)
  assert runs["bfloat16"] > 0.15, runs
