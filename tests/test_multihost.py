"""Multi-process training on localhost: 2 processes x 2 CPU devices (gloo collectives,
each process's devices a row of the `model` axis) against 1 process x 4 devices on
`data` with the same global batch.

What must be equal, and how close: one step on the same batch gives the same loss,
gradients and BN statistics to float-reordering precision (1e-5). Whole training runs
are compared at their first step only. On `shapes` the flat colour regions and the
zero padding put many equal values at max-pool windows and ReLU kinks, so rounding
that differs between device layouts (the model axis splits the kernels' reductions)
sends some gradients another way: measured, a BN bias gradient 5e-3 apart after one
step and losses 1.7e-3 apart after four, while the same step on per-pixel noise agrees
to 3e-6 in every leaf for every layout (1 device, 2 or 4 on `data`, 2 x 2, 4 x 2).
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np

import jaxseg
from jaxseg import api
from tests.conftest import ROOT, devices_env

ARGS = ["--config", "configs/quickstart.py:tiny", "--config.train.steps=4", "--config.train.eval_every=4",
        "--config.train.log_every=1"]


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


def first_line(path):
  with open(path) as f:
    return json.loads(f.readline())


def last_line(path):
  with open(path) as f:
    return json.loads(f.readlines()[-1])


def start_step(out, devices, model_axis=1, processes=1):
  """Starts tests/multihost_step.py for one step on `processes` x `devices`, writing
  {leaf path: array} to `out` (.npz); returns the processes."""
  address = f"localhost:{free_port()}"
  launch = lambda i: [address, str(processes), str(i)] if processes > 1 else []
  env = {**os.environ, **devices_env(devices, optimized=True)}
  return [subprocess.Popen([sys.executable, "tests/multihost_step.py", str(out), str(model_axis), *launch(i)],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
          for i in range(processes)]


def test_one_step_across_processes_equals_one_process(tmp_path):
  # Both layouts at once: a lone process leaves a core idle while it compiles.
  procs = start_step(tmp_path / "one.npz", 4) + start_step(tmp_path / "two.npz", 2, model_axis=2, processes=2)
  for p in procs:
    finish(p)
  one, two = dict(np.load(tmp_path / "one.npz")), dict(np.load(tmp_path / "two.npz"))
  assert one.keys() == two.keys() and any(k.startswith("grads/") for k in one)
  for key, want in one.items():
    scale = max(float(np.abs(want).max()), 1e-6)
    np.testing.assert_allclose(two[key], want, rtol=1e-5, atol=1e-5 * scale, err_msg=key)


def test_two_processes_train_evaluate_and_checkpoint_together(data_dir, tmp_path, capsys):
  single, multi = tmp_path / "single", tmp_path / "multi"
  address = f"localhost:{free_port()}"
  procs = [cli(multi, 2, f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}",
               "--config.train.model_axis=2") for i in range(2)]
  reference = cli(single, 4, "--config.evals.confusion.every=-1")  # alongside; its evaluation is not compared
  outs = [finish(p) for p in procs]
  finish(reference)
  # Only process 0 prints progress and the evaluation table.
  assert "mIoU" in outs[0] and "mIoU" not in outs[1]

  # The same records in every step: the same first-step losses, the same iterator position.
  a, b = first_line(single / "train_log.jsonl"), first_line(multi / "train_log.jsonl")
  assert a["step"] == b["step"] == 1
  for key in ("loss", "loss_seg", "loss_aux"):
    np.testing.assert_allclose(b[key], a[key], rtol=1e-5, err_msg=key)
  with open(single / "checkpoints/4/data/metadata") as f1, open(multi / "checkpoints/4/data/metadata") as f2:
    assert json.load(f1) == json.load(f2)

  # The checkpoint the 2 processes wrote together restores in one process on one device
  # (no model axis) and evaluates to the mIoU they measured.
  assert jaxseg.load(str(multi)).step == 4
  measured = last_line(multi / "metrics.jsonl")["miou"]
  capsys.readouterr()
  api.evaluate(str(multi))  # --mode eval, in this 1-device process
  assert f"step 4: mIoU {measured:.4f}" in capsys.readouterr().out


def test_explicit_launch_needs_all_three_flags(tmp_path):
  proc = cli(tmp_path, 1, "--coordinator_address=localhost:1")
  out = finish_with_error(proc)
  assert "--num_processes" in out and "--process_id" in out


def finish_with_error(proc):
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode != 0
  return out
