"""EncNet head (FastFCN's main head): the encoding layer and the SE loss against
numpy written from the paper's equations, and the head inside the FastFCN model."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.heads.encnet import class_presence, semantic_encoding_loss
from jaxseg.models.heads.encnet import Encoding
from jaxseg.models.segmentor import build_model
from jaxseg.train import make_loss_fn, state_factory
from tests.conftest import load_config


def encoding_reference(x, d, s):
  """e_k = sum_i a_ik (x_i - d_k), a_ik = softmax_k(-s_k |x_i - d_k|^2), one image at a time."""
  b, c = x.shape[0], x.shape[-1]
  x = x.reshape(b, -1, c).astype(np.float64)
  out = np.zeros((b, len(d), c))
  for n in range(b):
    r = x[n][:, None, :] - d[None]  # (N, K, C) residuals
    logits = -s * np.sum(r * r, -1)
    a = np.exp(logits - logits.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    out[n] = np.einsum("nk,nkc->kc", a, r)
  return out


def test_encoding_matches_the_equation():
  x = np.random.default_rng(0).normal(size=(2, 5, 7, 12)).astype(np.float32)
  layer = Encoding(codewords=6)
  params = layer.init(jax.random.key(0), x)
  # Larger smoothing factors than the init, so the assignment is far from uniform.
  params["params"]["smoothing"] = params["params"]["smoothing"] * 3
  got = np.asarray(layer.apply(params, x))
  want = encoding_reference(x, np.asarray(params["params"]["codewords"]),
                            np.asarray(params["params"]["smoothing"]))
  assert got.shape == (2, 6, 12)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_codeword_init_follows_the_reference_bounds():
  params = Encoding(codewords=32).init(jax.random.key(0), jnp.zeros((1, 4, 4, 64)))["params"]
  bound = 1 / np.sqrt(32 * 64)
  assert np.abs(params["codewords"]).max() <= bound
  assert 0 <= params["smoothing"].min() and params["smoothing"].max() <= 1


def test_class_presence_and_se_loss():
  labels = np.full((3, 4, 5), 255, np.uint8)
  labels[0, :2] = 2
  labels[0, 2:, :3] = 0
  labels[1] = 4  # one class everywhere
  # image 2: all ignore -> no class present
  want = np.zeros((3, 5), np.float32)
  want[0, [0, 2]] = 1
  want[1, 4] = 1
  np.testing.assert_array_equal(np.asarray(class_presence(jnp.asarray(labels), 5)), want)
  logits = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  bce = -(want * np.log(p) + (1 - want) * np.log(1 - p)).mean()
  np.testing.assert_allclose(float(semantic_encoding_loss(jnp.asarray(logits), jnp.asarray(labels))),
                             bce, rtol=1e-5)


def test_encnet_variant_outputs_loss_and_gradients():
  assert load_config("fastfcn_ade20k", "encnet,tiny").model.head.name == "encnet"
  config = load_config("fastfcn_pascal_context", "encnet,tiny")
  assert config.model.head.name == "encnet" and config.loss.weights.se == 0.2
  model = build_model(config)
  assert model.decode_head.conv_kernel == 1  # behind the JPU the reduction conv is 1x1 (official code)
  init_fn, _, _, _ = state_factory(config, model)
  state = jax.jit(init_fn)(jax.random.key(0))
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  x = jnp.zeros((2, 64, 64, 3))
  out, _ = jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"],
                                                rngs={"dropout": jax.random.key(2)}), variables)
  assert {k: v.shape for k, v in out.items()} == {"seg": (2, 8, 8, 6), "aux": (2, 4, 4, 6), "se": (2, 6)}
  assert set(jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)) == {"seg"}

  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.integers(0, 256, (2, 64, 64, 3)), jnp.uint8),
           "label": jnp.asarray(rng.integers(0, 6, (2, 64, 64)), jnp.uint8)}
  loss_fn = make_loss_fn(config, model)
  (total, (terms, _)), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
      state.params, state.batch_stats, batch, jax.random.key(0))
  assert set(terms) == {"seg", "aux", "se"}
  np.testing.assert_allclose(float(total), float(terms["seg"] + 0.2 * terms["aux"] + 0.2 * terms["se"]),
                             rtol=1e-5)
  # The SE loss and the attention reach the codewords and smoothing factors.
  enc = grads["decode_head"]["encoding"]
  assert float(jnp.abs(enc["codewords"]).max()) > 0 and float(jnp.abs(enc["smoothing"]).max()) > 0
  assert float(jnp.abs(grads["decode_head"]["se_classifier"]["kernel"]).max()) > 0
