import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.losses import cross_entropy
from jaxseg.models.heads.mcibi import MCIBIHead, memory_momentum, memory_terms, update_memory
from tests.conftest import ROOT, devices_env, load_config


def numpy_update(memory, seen, feats, labels, m, ignore=255):
  """The paper's rule, class by class: w_i = (1 - cos(f_i, M_k)) / sum_j (1 - cos(f_j, M_k)),
  M_k <- (1 - m) M_k + m sum_i w_i f_i; a first-seen class takes its mean."""
  memory, seen = memory.copy(), seen.copy()
  for k in range(memory.shape[0]):
    f = feats[labels == k]
    if len(f) == 0:
      continue
    if not seen[k]:
      memory[k], seen[k] = f.mean(0), True
      continue
    cos = f @ memory[k] / (np.linalg.norm(f, axis=1) * np.linalg.norm(memory[k]))
    w = (1 - cos) / (1 - cos).sum()
    memory[k] = (1 - m) * memory[k] + m * (w[:, None] * f).sum(0)
  return memory, seen


def test_memory_update_vs_numpy():
  rng = np.random.default_rng(0)
  k, c = 5, 8
  memory = rng.normal(size=(k, c)).astype(np.float32)
  seen = np.array([True, True, False, True, False])
  feats = rng.normal(size=(300, c)).astype(np.float32)
  labels = rng.choice([0, 1, 2, 255], 300).astype(np.int32)  # classes 3, 4 absent; 2 first seen
  got_m, got_s = update_memory(jnp.asarray(memory), jnp.asarray(seen), jnp.asarray(feats),
                               jnp.asarray(labels), 0.7)
  want_m, want_s = numpy_update(memory, seen, feats, labels, 0.7)
  np.testing.assert_allclose(got_m, want_m, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(got_s, want_s)
  np.testing.assert_array_equal(got_m[3], memory[3])  # an absent class keeps its row


def test_momentum_is_poly_annealed():
  np.testing.assert_allclose(memory_momentum(0, 100), 0.9)
  np.testing.assert_allclose(memory_momentum(50, 100), 0.9 * 0.5 ** 0.9, rtol=1e-6)
  np.testing.assert_allclose(memory_momentum(100, 100), 0.0)


def make_head():
  return MCIBIHead(num_classes=4, channels=8, transform_channels=4, aspp_rates=(1, 2, 3), total_steps=10)


def test_head_outputs_and_memory_state():
  head = make_head()
  feats = {"c4": jax.random.normal(jax.random.key(0), (2, 6, 6, 16))}
  labels = jax.random.randint(jax.random.key(1), (2, 24, 24), 0, 4).astype(jnp.uint8)
  variables = head.init({"params": jax.random.key(2), "dropout": jax.random.key(3)}, feats, True, {"label": labels})
  assert variables["batch_stats"]["memory"].shape == (4, 8)
  out, updates = head.apply(variables, feats, True, {"label": labels}, mutable=["batch_stats"],
                            rngs={"dropout": jax.random.key(4)})
  assert out["seg"].shape == (2, 6, 6, 4) and out["dataset_context"].shape == (2, 6, 6, 4)
  logits = out["memory"]
  assert logits.shape == (1, 1, 4, 4)
  # Its loss term: the memory row k is labelled k.
  config = load_config("mcibi_ade20k", "tiny")
  np.testing.assert_allclose(memory_terms(out, None, config)["memory"],
                             cross_entropy(logits, jnp.arange(4).reshape(1, 1, 4)), rtol=1e-6)
  new = updates["batch_stats"]
  assert bool(new["seen"].all()) and int(new["step"]) == 1
  assert not np.allclose(new["memory"], 0)
  # The memory takes no gradient: d(loss)/d(memory) is not even a parameter.
  assert "memory" not in jax.tree_util.tree_flatten_with_path(variables["params"])[1].__repr__()
  # Inference neither needs labels nor changes the memory.
  eval_out = head.apply({**variables, "batch_stats": new}, feats, False)
  assert set(eval_out) == {"seg", "dataset_context"}


CHECK = r"""
import jax, jax.numpy as jnp, numpy as np
from jaxseg import sharding
from jaxseg.models.segmentor import build_model
from jaxseg.train import make_train_step, state_factory
from tests.conftest import load_config
config = load_config("mcibi_ade20k", "tiny")
config.train.batch_size = 8
model = build_model(config)
init_fn, abstract, tx, schedule = state_factory(config, model)
rng = np.random.default_rng(0)
batch = {"image": rng.integers(0, 256, (8, 64, 64, 3)).astype(np.uint8),
         "label": rng.integers(0, 6, (8, 64, 64)).astype(np.uint8)}
out = []
for devices in (jax.devices(), jax.devices()[:1]):
  mesh = sharding.make_mesh(devices)
  data_sh, repl = sharding.data_sharding(mesh), sharding.replicated(mesh)
  state_sh = jax.tree.map(lambda _: repl, abstract)
  state = jax.jit(init_fn, out_shardings=state_sh)(jax.random.key(0))
  step = jax.jit(make_train_step(config, model, tx, schedule), in_shardings=(state_sh, data_sh),
                 out_shardings=(state_sh, repl))
  for _ in range(2):
    state, logs = step(state, sharding.global_batch(batch, data_sh))
  out.append((np.asarray(state.batch_stats["decode_head"]["memory"]), float(logs["loss"])))
np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-4)  # after two updates
assert np.abs(out[0][0]).sum() > 0
print("ok")
"""


def test_memory_identical_on_one_and_eight_devices():
  env = {**os.environ, **devices_env(8)}
  out = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
