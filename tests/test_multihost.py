"""Multi-process training on localhost: 2 processes x 2 CPU devices (gloo collectives,
each process's devices a row of the `model` axis) train the tiny config to the same
state as 1 process x 4 devices on `data` with the same global batch, and the
checkpoint the 2 processes wrote together restores in 1 process."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

import jaxseg
from tests.conftest import ROOT, devices_env

ARGS = ["--config", "configs/quickstart.py:tiny", "--config.train.steps=4", "--config.train.eval_every=4"]


def cli(workdir, devices, *extra):
  env = {**os.environ, **devices_env(devices, optimized=True)}
  return subprocess.Popen([sys.executable, "-m", "jaxseg.main", *ARGS, "--workdir", str(workdir), *extra],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def finish(proc, timeout=600):
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-3000:]
  return out


def last_line(path):
  with open(path) as f:
    return json.loads(f.readlines()[-1])


def test_two_processes_match_one(data_dir, tmp_path):
  single, multi = tmp_path / "single", tmp_path / "multi"
  address = f"localhost:{free_port()}"
  procs = [cli(multi, 2, f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}",
               "--config.train.model_axis=2") for i in range(2)]
  outs = [finish(p) for p in procs]
  finish(cli(single, 4))
  # Only process 0 prints progress and the evaluation table.
  assert "mIoU" in outs[0] and "mIoU" not in outs[1]

  # Same losses, the same mIoU, the same iterator position.
  a, b = last_line(single / "train_log.jsonl"), last_line(multi / "train_log.jsonl")
  np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
  np.testing.assert_allclose(last_line(single / "metrics.jsonl")["miou"], last_line(multi / "metrics.jsonl")["miou"],
                             atol=1e-5)
  with open(single / "checkpoints/4/data/metadata") as f1, open(multi / "checkpoints/4/data/metadata") as f2:
    assert json.load(f1) == json.load(f2)

  # The 2-process checkpoint restores in this single process (one device: no model axis),
  # equal to the 1-process one.
  one, two = jaxseg.load(str(single)), jaxseg.load(str(multi))
  assert two.step == one.step == 4
  diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))),
                       one.variables, two.variables)
  assert max(jax.tree.leaves(diffs)) <= 1e-5, diffs


def test_explicit_launch_needs_all_three_flags(tmp_path):
  proc = cli(tmp_path, 1, "--coordinator_address=localhost:1")
  out = finish_with_error(proc)
  assert "--num_processes" in out and "--process_id" in out


def finish_with_error(proc):
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode != 0
  return out
