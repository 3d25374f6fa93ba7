"""Asynchronous replicas (jaxseg/replicas.py): the exchange rule against replicas
simulated one by one with the ordinary train step, and a CLI run with 2 replicas."""
import json

import pytest

from tests.conftest import background_check, devices_env, run_cli

# Runs in a subprocess with 2 CPU devices, one per replica: each replica computes
# exactly what the one-device reference does, so the comparison is exact up to the
# exchange arithmetic (with several devices per replica, SyncBN's cross-device sums
# round differently, and the tiny BN batches amplify that from step to step).
CHECK = r"""
import jax, jax.numpy as jnp, numpy as np
from jaxseg import sharding
from jaxseg.replicas import Replicas
from jaxseg.train import make_train_step, state_factory
from jaxseg.models.segmentor import build_model
from tests.conftest import load_config

config = load_config("quickstart", "tiny")
config.train.update(batch_size=4, steps=100, replicas=2, exchange_every=3, exchange_delay=1)
model = build_model(config)
init_fn, abstract, tx, schedule = state_factory(config, model)
train_step = make_train_step(config, model, tx, schedule)
rng = np.random.default_rng(0)
batches = [{"image": rng.integers(0, 256, (4, 64, 64, 3)).astype(np.uint8),
            "label": rng.integers(0, 6, (4, 64, 64)).astype(np.uint8)} for _ in range(7)]
state0 = jax.jit(init_fn)(jax.random.key(0))

# Reference: two replicas stepped one after the other on one device, the exchange by hand.
step = jax.jit(train_step)
ref = [state0, state0]
snapshot = None
for i, batch in enumerate(batches):
  done = i + 1
  ref = [step(ref[r], {k: v[2 * r:2 * r + 2] for k, v in batch.items()}, r)[0] for r in range(2)]
  if done % 3 == 0:
    snapshot = [(s.params, s.batch_stats) for s in ref]
  if done % 3 == 1 and snapshot is not None:  # D = 1 step later: w_r + mean(s) - s_r
    mean = jax.tree.map(lambda a, b: (a + b) / 2, *snapshot)
    ref = [s.replace(params=jax.tree.map(lambda w, m, o: w + m - o, s.params, mean[0], snapshot[r][0]),
                     batch_stats=jax.tree.map(lambda w, m, o: w + m - o, s.batch_stats, mean[1], snapshot[r][1]))
           for r, s in enumerate(ref)]
    snapshot = None

replicas = Replicas(config, train_step)
state = replicas.stack(state0)
for i, batch in enumerate(batches):
  state, logs = replicas.step(state, batch, i + 1)
assert state.params["decode_head"]["classifier"]["kernel"].sharding.spec[0] == "replica"
for r in range(2):
  got = jax.tree.map(lambda x: np.asarray(x[r]), (state.params, state.batch_stats))
  diff = jax.tree.map(lambda a, b: float(np.max(np.abs(a - np.asarray(b)))), got, (ref[r].params, ref[r].batch_stats))
  assert max(jax.tree.leaves(diff)) < 1e-6, (r, diff)
# The replicas differ (exchanges at steps 4 and 7 keep each one's own progress since
# its snapshot) ...
a, b = (np.asarray(state.params["decode_head"]["classifier"]["kernel"][r]) for r in range(2))
assert np.abs(a - b).max() > 1e-5
# ... and synchronise to their average.
mesh = sharding.make_mesh()
single, state = replicas.synchronise(state, sharding.replicated(mesh))
np.testing.assert_allclose(np.asarray(single.params["decode_head"]["classifier"]["kernel"]), (a + b) / 2, atol=1e-6)
print("OK")
"""


@pytest.fixture(scope="module")
def exchange_check():
  """CHECK's process, started by the first test that asks for it: the CLI test below,
  so that the two run at once."""
  yield from background_check(CHECK, 2)


@pytest.mark.usefixtures("exchange_check")
def test_two_replicas_train_from_the_cli(data_dir, tmp_path, capsys):
  from jaxseg import api
  env = devices_env(2)
  result = run_cli("--config", "configs/quickstart.py:tiny", "--workdir", str(tmp_path),
                   "--config.train.replicas=2", "--config.train.exchange_every=2", env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "step 4: mIoU" in result.stdout
  # The checkpoint holds one ordinary state: it evaluates on a single device (--mode eval,
  # in this process).
  with open(tmp_path / "metrics.jsonl") as f:
    measured = json.loads(f.readlines()[-1])["miou"]
  capsys.readouterr()
  api.evaluate(str(tmp_path))
  assert f"step 4: mIoU {measured:.4f}" in capsys.readouterr().out


def test_exchange_rule_matches_replicas_run_one_by_one(exchange_check):
  stdout, stderr = exchange_check.communicate(timeout=600)
  assert exchange_check.returncode == 0 and "OK" in stdout, stderr[-3000:]


def test_exchange_and_average_keep_mcibi_memory_rows_and_counters():
  """MCIBI's memory: a row averages over the replicas that have seen its class (the
  others hold zeros); `seen` is any replica's; counters stay; floats follow w + mean(s) - s."""
  import numpy as np
  from jaxseg.replicas import average, exchange
  rng = np.random.default_rng(0)
  w_mem, s_mem = rng.normal(size=(2, 3, 2)).astype(np.float32), rng.normal(size=(2, 3, 2)).astype(np.float32)
  s_seen = np.array([[True, True, False], [True, False, False]])
  w_seen = np.array([[True, True, False], [True, False, True]])  # replica 1 met class 2 after the snapshot
  s_mem[~s_seen], w_mem[~w_seen] = 0.0, 0.0
  kernel_w, kernel_s = rng.normal(size=(2, 4)).astype(np.float32), rng.normal(size=(2, 4)).astype(np.float32)
  current = {"head": {"memory": w_mem, "seen": w_seen, "step": np.array([5, 5], np.int32)}, "kernel": kernel_w}
  snapshot = {"head": {"memory": s_mem, "seen": s_seen, "step": np.array([4, 4], np.int32)}, "kernel": kernel_s}
  got = exchange(current, snapshot)

  np.testing.assert_allclose(got["kernel"], kernel_w + kernel_s.mean(0) - kernel_s, rtol=1e-6)
  np.testing.assert_array_equal(got["head"]["step"], [5, 5])
  mem = np.asarray(got["head"]["memory"])
  np.testing.assert_allclose(mem[:, 0], w_mem[:, 0] + s_mem[:, 0].mean(0) - s_mem[:, 0], rtol=1e-6)  # both had it
  np.testing.assert_allclose(mem[0, 1], w_mem[0, 1], rtol=1e-6)  # only replica 0's row: the mean is its own
  np.testing.assert_allclose(mem[1, 1], s_mem[0, 1], rtol=1e-6)  # replica 1 adopts it
  np.testing.assert_array_equal(mem[0, 2], [0, 0])  # nobody had class 2 at the snapshot
  np.testing.assert_allclose(mem[1, 2], w_mem[1, 2], rtol=1e-6)  # replica 1's own since then stays
  np.testing.assert_array_equal(got["head"]["seen"], [[True, True, False], [True, True, True]])

  avg = average(current)
  np.testing.assert_allclose(avg["head"]["memory"], [w_mem[:, 0].mean(0), w_mem[0, 1], w_mem[1, 2]], rtol=1e-6)
  np.testing.assert_array_equal(avg["head"]["seen"], [True, True, True])
  np.testing.assert_allclose(avg["kernel"], kernel_w.mean(0), rtol=1e-6)
  assert int(avg["head"]["step"]) == 5
