import json
import os

import jax
import numpy as np

from jaxseg import train
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
