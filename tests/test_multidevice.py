import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, background_check, devices_env

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
  so that the two run at once."""
  yield from background_check(CHECK, 8)


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


# The detector (PANet `:tiny`, 64 x 64 canvas): its RPN and RoI sampling, padded NMS and
# BatchNorm over the global batch give the same loss, terms and gradient norm on 8 devices
# as on 1, and the same parameters after the step (one compiled step per mesh).
DETECTION_CHECK = r"""
import jax, jax.numpy as jnp, numpy as np
from jaxseg import families, sharding
from jaxseg.state import state_factory
from jaxseg.train import make_train_step
from tests.conftest import load_config

assert jax.device_count() == 8, jax.devices()
config = load_config("panet_coco", "tiny")
config.input.update(dict(crop_size=(64, 64), max_instances=3))
config.train.batch_size = 8
family = families.get(config)
model = family.build_model(train=True)
init_fn, abstract, tx, schedule = state_factory(config, model, family)
rng = np.random.default_rng(0)
b, m, n = 8, 3, 64
batch = {"image": rng.integers(0, 256, (b, n, n, 3)).astype(np.uint8),
         "image_size": np.tile(np.array([n, n], np.int32), (b, 1)),
         "instance_boxes": np.zeros((b, m, 4), np.float32), "instance_classes": rng.integers(0, 5, (b, m)).astype(np.int32),
         "instance_masks": np.zeros((b, m, n, n), np.uint8), "instance_valid": np.zeros((b, m), bool),
         "instance_iscrowd": np.zeros((b, m), np.int32)}
batch["image_size"][1] = (48, 40)
for i in range(b):
  for j in range(1 + i % m):  # 1..3 objects, their masks ellipses inside their boxes
    x0, y0 = rng.integers(0, 24, 2)
    x1, y1 = x0 + rng.integers(10, 36), y0 + rng.integers(10, 36)
    yy, xx = np.mgrid[:n, :n]
    inside = ((xx - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2 + ((yy - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2 <= 1
    batch["instance_masks"][i, j] = inside
    ys, xs = np.nonzero(inside)
    batch["instance_boxes"][i, j] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    batch["instance_valid"][i, j] = True
    batch["image"][i][inside] = 40 * (j + 1)
initial = jax.device_get(jax.jit(init_fn)(jax.random.key(0)))

results = []
for devices in (jax.devices(), jax.devices()[:1]):
  mesh = sharding.make_mesh(devices, 1)
  data_sh, repl = sharding.data_sharding(mesh), sharding.replicated(mesh)
  state_sh = sharding.state_shardings(abstract, mesh)
  state = jax.device_put(initial, state_sh)
  batch_on = sharding.global_batch(batch, data_sh)
  assert len(batch_on["image"].sharding.device_set) == len(devices)
  step = jax.jit(make_train_step(config, model, tx, schedule, family), in_shardings=(state_sh, data_sh),
                 out_shardings=(state_sh, repl), donate_argnums=0)
  state, logs = step(state, batch_on)
  results.append(jax.device_get((logs, state.params, state.batch_stats)))

eight, one = results
assert eight[0]["loss_mask"] > 0 and eight[0]["loss_rpn_box"] > 0 and eight[0]["loss_box_regression"] > 0, eight[0]
assert eight[0]["finite"]
for k in sorted(eight[0]):  # what the test reads when it fails
  print(k, float(eight[0][k]), float(one[0][k]), abs(float(eight[0][k]) - float(one[0][k])))
# The loss and its five terms to 1e-5; the gradient norm, a sum of squares over 7M
# parameters whose per-image sums the 8 devices add in another order, to 1e-4; the
# parameters and BN statistics after the step (the gradients through SGD) to 1e-5.
for k in eight[0]:
  np.testing.assert_allclose(eight[0][k], one[0][k], rtol=1e-4 if k == "grad_norm" else 1e-5, atol=1e-5, err_msg=k)
for name, a, b in zip(["params after a step", "BN statistics after a step"], eight[1:], one[1:]):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5, err_msg=name)
print("ok", {k: float(v) for k, v in eight[0].items()})
"""


def test_detector_on_eight_devices_equals_one_device():
  env = {**os.environ, **devices_env(8)}
  out = subprocess.run([sys.executable, "-c", DETECTION_CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "ok" in out.stdout
