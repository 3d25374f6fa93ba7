"""The training-mode BatchNorm with its hand-written gradient against flax's BatchNorm
(JAX autodiff), on one device and with the batch sharded over four."""
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import batch_norm
from jaxseg.models.batch_norm import BatchNorm, batch_norm_train
from tests.conftest import ROOT, devices_env


def _inputs(dtype=jnp.float32, shape=(4, 5, 6, 8)):
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape) * rng.uniform(0.5, 3, shape[-1]) + rng.normal(size=shape[-1]) * 2  # per-channel stats
  variables = {"params": {"scale": jnp.asarray(rng.uniform(0.5, 2, shape[-1]), jnp.float32),
                          "bias": jnp.asarray(rng.normal(size=shape[-1]), jnp.float32)},
               "batch_stats": {"mean": jnp.asarray(rng.normal(size=shape[-1]), jnp.float32),
                               "var": jnp.asarray(rng.uniform(0.5, 2, shape[-1]), jnp.float32)}}
  g = jnp.asarray(rng.normal(size=shape), jnp.float32)
  return jnp.asarray(x, dtype), variables, g


def _train_apply(module, variables, x, g):
  """(output, new batch_stats, d/d(params, x) of sum(sin(y) * g))."""
  def loss(params, x):
    y, updates = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                              use_running_average=False, mutable=["batch_stats"])
    return jnp.sum(jnp.sin(y.astype(jnp.float32)) * g), (y, updates["batch_stats"])
  (_, (y, stats)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(variables["params"], x)
  return y, stats, grads


def test_variables_output_statistics_and_gradients_equal_flax(monkeypatch):
  x, variables, g = _inputs()
  ours, flax_bn = BatchNorm(momentum=0.9, epsilon=1e-5), nn.BatchNorm(momentum=0.9, epsilon=1e-5)
  assert (jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x, use_running_average=False))
          == jax.tree.map(jnp.shape, flax_bn.init(jax.random.key(0), x, use_running_average=False)))
  want = _train_apply(flax_bn, variables, x, g)
  monkeypatch.setenv("JAXSEG_BATCH_NORM", "fused")
  got = jax.jit(lambda v, x, g: _train_apply(ours, v, x, g))(variables, x, g)
  for name, a, b in zip(("output", "running statistics", "gradients"), got, want):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-5, err_msg=name)
  assert float(jnp.abs(got[1]["mean"] - variables["batch_stats"]["mean"]).min()) > 1e-3  # they moved
  # Inference normalises with the running statistics, as flax's.
  np.testing.assert_allclose(ours.apply(variables, x, use_running_average=True),
                             flax_bn.apply(variables, x, use_running_average=True), rtol=1e-6, atol=1e-6)


def test_statistics_cotangents_and_bfloat16(monkeypatch):
  """The gradient through the returned mean and variance (zero in training, honoured
  anyway), against autodiff of the formula; in bf16 the output is as flax's."""
  x, variables, g = _inputs()
  scale, bias = variables["params"]["scale"], variables["params"]["bias"]

  def plain(x, scale, bias):
    mean, var = jnp.mean(x, (0, 1, 2)), jnp.mean(x * x, (0, 1, 2)) - jnp.mean(x, (0, 1, 2)) ** 2
    return (x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias, mean, var

  def loss(f):
    def total(x, scale, bias):
      y, mean, var = f(x, scale, bias)
      return jnp.sum(jnp.sin(y) * g) + jnp.sum(jnp.cos(mean) * bias) + jnp.sum(jnp.sqrt(var) * scale)
    return jax.grad(total, argnums=(0, 1, 2))(x, scale, bias)
  for a, b in zip(loss(lambda *a: batch_norm_train(*a, 1e-5, jnp.float32)), loss(plain)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  monkeypatch.setenv("JAXSEG_BATCH_NORM", "fused")
  xb = x.astype(jnp.bfloat16)
  for dtype in (None, jnp.bfloat16):  # flax's output dtype: float32 from (bf16, f32 params) unless given
    got = _train_apply(BatchNorm(dtype=dtype), variables, xb, g)
    want = _train_apply(nn.BatchNorm(dtype=dtype), variables, xb, g)
    assert got[0].dtype == want[0].dtype and got[1]["mean"].dtype == jnp.float32
    np.testing.assert_allclose(got[0].astype(jnp.float32), want[0].astype(jnp.float32), rtol=1e-2, atol=1e-2)
    for u, v in zip(jax.tree.leaves(got[2]), jax.tree.leaves(want[2])):
      np.testing.assert_allclose(jnp.asarray(u, jnp.float32), jnp.asarray(v, jnp.float32), rtol=2e-2, atol=5e-2)


def test_lowering_per_backend(monkeypatch):
  monkeypatch.delenv("JAXSEG_BATCH_NORM", raising=False)
  assert batch_norm.batch_norm_lowering("cpu") == "fused" and batch_norm.batch_norm_lowering("gpu") == "flax"
  monkeypatch.setenv("JAXSEG_BATCH_NORM", "fast")
  with pytest.raises(ValueError, match="JAXSEG_BATCH_NORM"):
    batch_norm.batch_norm_lowering()


SHARDED = r"""
import jax, jax.numpy as jnp, numpy as np, flax.linen as nn, os
from jax.sharding import NamedSharding, PartitionSpec as P
from jaxseg.models.batch_norm import BatchNorm
from tests.test_batch_norm import _inputs, _train_apply
assert jax.device_count() == 4
x, variables, g = _inputs(shape=(8, 3, 4, 6))
mesh = jax.make_mesh((4,), ("data",))
shard = lambda a: jax.device_put(a, NamedSharding(mesh, P("data")))
results = {}
for lowering, module in (("fused", BatchNorm(momentum=0.9)), ("flax", nn.BatchNorm(momentum=0.9))):
  os.environ["JAXSEG_BATCH_NORM"] = lowering
  results[lowering] = jax.device_get(jax.jit(lambda v, x, g: _train_apply(module, v, x, g))(variables, shard(x), shard(g)))
for a, b in zip(jax.tree.leaves(results["fused"]), jax.tree.leaves(results["flax"])):
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
# The statistics are the global batch's: per-device ones would differ.
want = 0.9 * variables["batch_stats"]["mean"] + 0.1 * np.asarray(x).mean((0, 1, 2))
np.testing.assert_allclose(results["fused"][1]["mean"], want, rtol=1e-5, atol=1e-5)
print("ok")
"""


def test_sharded_batch_statistics_are_global_and_gradients_equal_flax():
  out = subprocess.run([sys.executable, "-c", SHARDED], cwd=ROOT, env={**__import__("os").environ, **devices_env(4)},
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
