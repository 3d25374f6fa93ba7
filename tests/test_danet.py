import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.errors import ConfigError
from jaxseg.families.semantic import segmentation_loss
from jaxseg.models.heads.danet import (ChannelAttention, PositionAttention, blocked_attention,
                                       naive_attention, use_blocked)
from jaxseg.models.segmentor import build_model
from tests.conftest import load_config


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def numpy_pam(x, p, gamma):
  """The paper's formula in (C, N) layout: S = softmax over j of (Q^T K),
  E = gamma * V S^T + X, with 1x1 convs Q, K, V (with biases)."""
  b, h, w, c = x.shape
  out = np.zeros_like(x)
  for i in range(b):
    flat = x[i].reshape(-1, c).T.astype(np.float64)  # (C, N)
    conv = lambda name: p[name]["kernel"][0, 0].T.astype(np.float64) @ flat + p[name]["bias"][:, None]
    q, k, v = conv("query"), conv("key"), conv("value")
    s = softmax(q.T @ k)  # (N, N): s[i, j] = softmax_j(q_i . k_j)
    e = gamma * (v @ s.T) + flat
    out[i] = e.T.reshape(h, w, c)
  return out


def numpy_cam(x, gamma, variant):
  b, h, w, c = x.shape
  out = np.zeros_like(x)
  for i in range(b):
    flat = x[i].reshape(-1, c).T.astype(np.float64)  # X: (C, N)
    energy = flat @ flat.T  # X X^T: (C, C)
    if variant == "official":
      energy = energy.max(-1, keepdims=True) - energy
    e = gamma * (softmax(energy) @ flat) + flat
    out[i] = e.T.reshape(h, w, c)
  return out


def with_gamma(variables, gamma):
  params = jax.tree.map(lambda a: a, variables["params"])
  params["gamma"] = jnp.asarray(gamma, jnp.float32)
  return {"params": params}


@pytest.mark.parametrize("threshold", [2 ** 30, 0], ids=["naive", "blocked"])
def test_pam_matches_the_formula(threshold):
  x = jax.random.normal(jax.random.key(0), (2, 5, 7, 16))
  pam = PositionAttention(blocked_threshold=threshold, block_size=8)  # N = 35: 5 blocks, padded
  variables = with_gamma(pam.init(jax.random.key(1), x), 0.7)
  expected = numpy_pam(np.asarray(x), jax.tree.map(np.asarray, variables["params"]), 0.7)
  np.testing.assert_allclose(pam.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_cam_matches_the_formula(variant):
  x = jax.random.normal(jax.random.key(0), (2, 5, 7, 16)) * 0.3
  cam = ChannelAttention(variant=variant)
  variables = with_gamma(cam.init(jax.random.key(1), x), 0.7)
  np.testing.assert_allclose(cam.apply(variables, x), numpy_cam(np.asarray(x), 0.7, variant),
                             rtol=1e-5, atol=1e-5)


def test_cam_variants_differ():
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 8))
  variables = with_gamma(ChannelAttention().init(jax.random.key(1), x), 1.0)
  paper = ChannelAttention(variant="paper").apply(variables, x)
  official = ChannelAttention(variant="official").apply(variables, x)
  assert not np.allclose(paper, official)


@pytest.mark.parametrize("n,block", [(50, 16), (64, 16), (10, 64), (37, 5)])
def test_blocked_attention_equals_naive(n, block):
  # N a multiple of the block, not one (padded keys), and smaller than one block.
  kq, kk, kv, kg = jax.random.split(jax.random.key(n), 4)
  q = jax.random.normal(kq, (2, n, 4)) * 2  # peaked softmax: the running max matters
  k = jax.random.normal(kk, (2, n, 4))
  v = jax.random.normal(kv, (2, n, 6))
  w = jax.random.normal(kg, (2, n, 6))
  blocked = lambda q, k, v: blocked_attention(q, k, v, block)

  @jax.jit
  def value_and_grads(q, k, v):
    out = {}
    for name, f in (("naive", naive_attention), ("blocked", blocked)):
      loss = lambda q, k, v: jnp.sum(f(q, k, v) * w)
      out[name] = (f(q, k, v), jax.grad(loss, (0, 1, 2))(q, k, v))
    return out

  out = value_and_grads(q, k, v)
  np.testing.assert_allclose(out["blocked"][0], out["naive"][0], rtol=1e-5, atol=1e-5)
  # The custom backward (recomputing each block's probabilities) gives the same gradients.
  for a, b in zip(out["blocked"][1], out["naive"][1]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_blocked_attention_in_bfloat16_keeps_float32_statistics():
  q, k, v = (jax.random.normal(key, (1, 40, 8)) for key in jax.random.split(jax.random.key(3), 3))
  ref = naive_attention(q, k, v)
  out = blocked_attention(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16), 16)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref, atol=0.05)


def test_automatic_switch_to_the_blocked_path():
  assert not use_blocked(2, 100, 2 * 100 * 100)
  assert use_blocked(2, 100, 2 * 100 * 100 - 1)
  x = jnp.zeros((2, 10, 10, 16))  # B * N * N = 20,000
  variables = PositionAttention().init(jax.random.key(0), x)

  def traced(threshold):
    return str(jax.make_jaxpr(lambda v: PositionAttention(blocked_threshold=threshold,
                                                          block_size=32).apply(v, x))(variables))

  assert "scan" not in traced(20000)  # at the threshold: the full matrix
  assert "scan" in traced(19999) and "custom_vjp" in traced(19999)  # above it: blockwise


def test_gamma_zero_makes_attention_the_identity():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 16))
  for module in (PositionAttention(), PositionAttention(blocked_threshold=0, block_size=8),
                 ChannelAttention(variant="paper"), ChannelAttention(variant="official")):
    variables = module.init(jax.random.key(1), x)
    assert variables["params"]["gamma"].shape == () and variables["params"]["gamma"] == 0
    np.testing.assert_array_equal(module.apply(variables, x), x)


def test_danet_model_outputs_and_loss_weights():
  config = load_config("danet_voc", "tiny")
  x = jnp.zeros((2, 64, 64, 3))
  model = build_model(config)
  variables = jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=True))
  head = variables["params"]["decode_head"]
  assert {"pam", "cam", "classifier", "pam_classifier", "cam_classifier"} <= set(head)
  assert head["pam"]["query"]["kernel"].shape == (1, 1, 16, 2)  # C/4 = 16 -> C/8 = 2
  out = jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"],
                                             rngs={"dropout": jax.random.key(2)})[0], variables)
  assert {k: v.shape for k, v in out.items()} == {k: (2, 8, 8, 6) for k in ("seg", "pam", "cam", "aux")}
  out = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  assert set(out) == {"seg"}

  rng = np.random.default_rng(0)
  outputs = {k: jnp.asarray(rng.normal(size=(1, 4, 4, 6)), jnp.float32) for k in ("seg", "aux", "pam", "cam")}
  labels = jnp.asarray(rng.integers(0, 6, (1, 4, 4)))
  config.loss.weights = dict(seg=1.0, aux=0.4, pam=0.5, cam=2.0)
  total, terms = segmentation_loss(outputs, labels, config)
  np.testing.assert_allclose(total, terms["seg"] + 0.4 * terms["aux"] + 0.5 * terms["pam"]
                             + 2.0 * terms["cam"], rtol=1e-6)
  with pytest.raises(ConfigError, match="loss.weights.extra is missing"):
    segmentation_loss({**outputs, "extra": outputs["seg"]}, labels, config)


def test_danet_config_errors_name_the_key():
  config = load_config("danet_cityscapes", "tiny")
  config.model.head.cam_variant = "code"
  with pytest.raises(ConfigError, match="model.head.cam_variant"):
    build_model(config)
