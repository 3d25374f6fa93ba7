import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, devices_env

# Runs in a subprocess: the 8 CPU devices must be requested before JAX starts.
CHECK = r"""
import jax, jax.numpy as jnp, numpy as np
from jaxseg import sharding
from jaxseg.train import make_loss_fn, make_train_step, state_factory
from jaxseg.models.segmentor import build_model
from tests.conftest import load_config

assert jax.device_count() == 8, jax.devices()
config = load_config("quickstart", "tiny")
config.train.batch_size = 8
model = build_model(config)
init_fn, abstract, tx, schedule = state_factory(config, model)
rng = np.random.default_rng(0)
label = rng.integers(0, 6, (8, 64, 64)).astype(np.uint8)
label[:, :5] = 255
batch = {"image": rng.integers(0, 256, (8, 64, 64, 3)).astype(np.uint8), "label": label}
grad_fn = jax.value_and_grad(make_loss_fn(config, model), has_aux=True)

results = []
# 8 devices on `data`; 1 device; 4 on `data` x 2 on `model` (kernels split in two).
for devices, model_axis in ((jax.devices(), 1), (jax.devices()[:1], 1), (jax.devices(), 2)):
  mesh = sharding.make_mesh(devices, model_axis)
  data_sh, repl = sharding.data_sharding(mesh), sharding.replicated(mesh)
  state_sh = sharding.state_shardings(abstract, mesh)
  state = jax.jit(init_fn, out_shardings=state_sh)(jax.random.key(0))
  kernels = [x for x in jax.tree.leaves(state.params) if x.ndim == 4]
  split = [x for x in kernels if x.addressable_shards[0].data.shape[-1] == x.shape[-1] // model_axis]
  assert len(split) == len(kernels), (model_axis, len(split), len(kernels))  # widths are even
  b = sharding.global_batch(batch, data_sh)
  assert len(b["image"].sharding.device_set) == len(devices)
  (loss, (_, stats)), grads = jax.jit(grad_fn)(state.params, state.batch_stats, b, jax.random.key(1))
  step = jax.jit(make_train_step(config, model, tx, schedule), in_shardings=(state_sh, data_sh),
                 out_shardings=(state_sh, repl), donate_argnums=0)
  state, logs = step(state, b)
  state, logs2 = step(state, b)
  results.append(jax.device_get((loss, grads, stats, state.params, state.batch_stats, logs2["loss"])))

names = ["loss", "gradients", "BN statistics", "params after 2 steps", "BN stats after 2 steps", "loss at step 2"]
for other in results[1:]:
  for name, a, b in zip(names, results[0], other):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5, err_msg=name)
# BN statistics really are global: per-device statistics would differ from these.
print("ok", float(results[0][0]))
"""


@pytest.fixture(scope="module")
def eight_device_check():
  """CHECK's process, started by the first test that asks for it: the CLI test below,
  so that the two run at once (a lone process keeps about one core of two busy)."""
  env = {**os.environ, **devices_env(8)}
  proc = subprocess.Popen([sys.executable, "-c", CHECK], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  yield proc
  if proc.poll() is None:
    proc.kill()
    proc.wait()


@pytest.mark.usefixtures("eight_device_check")
def test_cli_training_on_eight_devices_restores_on_one(data_dir, tmp_path, capsys):
  import json
  from jaxseg import api
  from tests.conftest import run_cli
  workdir = str(tmp_path / "run8")
  eight = devices_env(8)
  out = run_cli("--config", "configs/quickstart.py:tiny", "--workdir", workdir, "--config.train.model_axis=2",
                env=eight)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "8 devices (2 on the model axis)" in out.stdout
  final = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))][-1]
  # The checkpoint written by 8 devices, its kernels split in two, evaluates identically on
  # 1 device: --mode eval in this process.
  capsys.readouterr()
  api.evaluate(workdir)
  assert f"step 4: mIoU {final['miou']:.4f}" in capsys.readouterr().out


def test_eight_devices_equal_one_device(eight_device_check):
  stdout, stderr = eight_device_check.communicate(timeout=600)
  assert eight_device_check.returncode == 0, stderr[-3000:]
  assert "ok" in stdout


def test_model_axis_must_divide_the_devices():
  import jax
  from jaxseg import sharding
  from jaxseg.errors import ConfigError
  n = jax.device_count()
  with pytest.raises(ConfigError, match=f"train.model_axis = {n + 1} must divide the {n} devices"):
    sharding.make_mesh(model=n + 1)
