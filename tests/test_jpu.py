import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.config import head
from jaxseg.models.necks.jpu import JPU, SeparableConv
from jaxseg.models.segmentor import build_model
from jaxseg.optim import lr_multipliers
from tests.conftest import load_config


def numpy_separable(x, p, s, d, eps=1e-5):
  """Depthwise 3x3 with dilation d and zero padding d -> BN -> 1x1 -> BN -> ReLU, with
  BN from running statistics; x (B, H, W, C)."""
  x = x.astype(np.float64)
  b, h, w, c = x.shape
  xp = np.pad(x, ((0, 0), (d, d), (d, d), (0, 0)))
  kernel = p["depthwise"]["kernel"]  # (3, 3, 1, C)
  y = sum(xp[:, i * d:i * d + h, j * d:j * d + w] * kernel[i, j, 0] for i in range(3) for j in range(3))
  bn = lambda y, p, s: (y - s["mean"]) / np.sqrt(s["var"] + eps) * p["scale"] + p["bias"]
  y = bn(y, p["depthwise_bn"], s["depthwise_bn"])
  y = y @ p["pointwise"]["conv"]["kernel"][0, 0]
  y = bn(y, p["pointwise"]["bn"], s["pointwise"]["bn"])
  return np.maximum(y, 0)


def randomized(variables, seed):
  """The variables with every leaf replaced by random values (variances positive), so
  BN scale/bias/statistics all matter in the comparison."""
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [jax.random.uniform(k, a.shape, minval=0.5, maxval=1.5)
                                   if a.ndim == 1 else jax.random.normal(k, a.shape)
                                   for k, a in zip(keys, leaves)])


def test_separable_dilated_conv_matches_the_direct_computation():
  x = jax.random.normal(jax.random.key(0), (2, 11, 13, 6))
  for d in (1, 2, 4, 8):  # 8 reaches past the whole 11-row map: all padding but the centre
    module = SeparableConv(features=5, dilation=d)
    variables = randomized(module.init(jax.random.key(1), x, train=False), d)
    out = module.apply(variables, x, train=False)
    expected = numpy_separable(np.asarray(x), jax.tree.map(np.asarray, variables["params"]),
                               jax.tree.map(np.asarray, variables["batch_stats"]), d)
    assert out.shape == (2, 11, 13, 5)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_depthwise_conv_matches_lax_conv():
  x = jax.random.normal(jax.random.key(0), (1, 9, 9, 4))
  module = SeparableConv(features=3, dilation=2)
  variables = module.init(jax.random.key(1), x, train=False)
  kernel = variables["params"]["depthwise"]["kernel"]
  ref = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((2, 2), (2, 2)), rhs_dilation=(2, 2),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=4)
  seen = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.module.name == "depthwise":
      seen["out"] = out
    return out

  with nn.intercept_methods(record):
    module.apply(variables, x, train=False)
  np.testing.assert_allclose(seen["out"], ref, rtol=1e-5, atol=1e-5)


def test_jpu_shapes_and_kept_features():
  feats = {"c1": jnp.ones((2, 16, 16, 4)), "c2": jnp.ones((2, 16, 16, 8)),
           "c3": jnp.ones((2, 8, 8, 16)), "c4": jnp.ones((2, 4, 4, 32))}
  jpu = JPU(channels=6)
  variables = jax.eval_shape(lambda: jpu.init(jax.random.key(0), feats, train=False))
  out = jax.eval_shape(lambda v: jpu.apply(v, feats, train=False), variables)
  assert out["c4"].shape == (2, 16, 16, 4 * 6)  # four dilation branches at c2's size
  assert all(out[k].shape == feats[k].shape for k in ("c1", "c2", "c3"))
  params = variables["params"]
  assert params["conv_c4"]["conv"]["kernel"].shape == (3, 3, 32, 6)
  for d in (1, 2, 4, 8):
    assert params[f"dilation{d}"]["depthwise"]["kernel"].shape == (3, 3, 1, 3 * 6)  # concat of 3 levels
    assert params[f"dilation{d}"]["pointwise"]["conv"]["kernel"].shape == (1, 1, 3 * 6, 6)


def test_fastfcn_model_outputs_and_lr_multipliers():
  config = load_config("fastfcn_pascal_context", "tiny")
  x = jnp.zeros((2, 64, 64, 3))
  model = build_model(config)
  variables = jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=True))
  out = jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"],
                                             rngs={"dropout": jax.random.key(2)})[0], variables)
  # The head reads the JPU's OS8 c4; the auxiliary head stays on the OS16 c3.
  assert {k: v.shape for k, v in out.items()} == {"seg": (2, 8, 8, 6), "aux": (2, 4, 4, 6)}
  out = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  assert {k: v.shape for k, v in out.items()} == {"seg": (2, 8, 8, 6)}
  # FastFCN's lr x10 on the JPU and the heads: the neck's too.
  mults = lr_multipliers(variables["params"], config.optim)
  assert set(jax.tree.leaves(mults["neck"])) == set(jax.tree.leaves(mults["decode_head"])) == {10.0}
  assert set(jax.tree.leaves(mults["backbone"])) == {1.0}


def test_aspp_on_jpu_uses_the_os8_rates():
  config = load_config("fastfcn_ade20k", "tiny")
  config.model.head = head("aspp")
  assert config.model.backbone.output_stride == 32
  assert build_model(config).decode_head.rates == (12, 24, 36)
