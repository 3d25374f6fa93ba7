"""The CPU lowering of dilated convolutions equals XLA's direct convolution."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import atrous_conv
from jaxseg.models.atrous_conv import mixed_conv, tap_conv


def _direct(x, kernel, d):
  pad = d * (kernel.shape[0] - 1) // 2
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((pad, pad), (pad, pad)), rhs_dilation=(d, d),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      precision=jax.lax.Precision.HIGHEST)


@pytest.mark.parametrize("k", [3, 5])
def test_taps_equal_direct_conv_and_its_gradients(k):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 7, 11, 5)), jnp.float32)  # odd, non-square
  kernel = jnp.asarray(rng.normal(size=(k, k, 5, 6)), jnp.float32)
  cot = jnp.asarray(rng.normal(size=(2, 7, 11, 6)), jnp.float32)
  # 1 dense; 2, 3 inside; 6 only some taps land (6 < 7 rows, < 11 cols); 7 and 11 = the sizes; 40 >> both
  for d in (1, 2, 3, 6, 7, 11, 40):
    want = _direct(x, kernel, d)
    np.testing.assert_allclose(tap_conv(x, kernel, d), want, rtol=1e-5, atol=1e-4, err_msg=f"k={k} d={d}")
    grad = lambda f: jax.vjp(lambda x, w: f(x, w, d), x, kernel)[1](cot)
    want = grad(_direct)
    for name, form in (("taps", tap_conv), ("mixed", mixed_conv)):
      for g, w in zip(jax.jit(grad, static_argnums=0)(form), want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-3, err_msg=f"gradient {name} k={k} d={d}")


def test_gradients_with_fewer_output_than_input_channels():
  """The kernel gradient transposes the cotangent, not x, when it has fewer channels."""
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(2, 9, 6, 7)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 7, 3)), jnp.float32)
  cot = jnp.asarray(rng.normal(size=(2, 9, 6, 3)), jnp.float32)
  for d in (1, 2, 5, 40):
    grad = lambda f: jax.vjp(lambda x, w: f(x, w, d), x, kernel)[1](cot)
    want = grad(_direct)
    for name, form in (("taps", tap_conv), ("mixed", mixed_conv)):
      for g, w in zip(jax.jit(grad, static_argnums=0)(form), want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4, err_msg=f"gradient {name} d={d}")
  x1 = jnp.asarray(rng.normal(size=(2, 5, 7, 8)), jnp.float32)  # 1x1, 8 -> 3 channels
  k1 = jnp.asarray(rng.normal(size=(1, 1, 8, 3)), jnp.float32)
  cot1 = jnp.asarray(rng.normal(size=(2, 5, 7, 3)), jnp.float32)
  got = jax.vjp(atrous_conv.pointwise_conv, x1, k1)[1](cot1)
  for g, w in zip(got, jax.vjp(lambda x, w: _direct(x, w, 1), x1, k1)[1](cot1)):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)


def test_rate_beyond_the_image_is_the_centre_tap():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(1, 5, 5, 4)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 4, 3)), jnp.float32)
  np.testing.assert_allclose(tap_conv(x, kernel, 5), jnp.einsum("nhwi,io->nhwo", x, kernel[1, 1]),
                             rtol=1e-6, atol=1e-6)


def test_module_has_flax_conv_parameters_and_output(monkeypatch):
  x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 9, 9, 4)), jnp.float32)
  flax_conv = nn.Conv(6, (3, 3), padding=((3, 3), (3, 3)), kernel_dilation=3, use_bias=False)
  ours = atrous_conv.Conv(6, 3, dilation=3)
  params = flax_conv.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, params)
  want = flax_conv.apply(params, x)
  for forced in ("taps", "mixed", "xla"):
    monkeypatch.setenv("JAXSEG_DILATED_CONV", forced)
    np.testing.assert_allclose(ours.apply(params, x), want, rtol=1e-5, atol=1e-4, err_msg=forced)


def test_lowering_per_backend(monkeypatch):
  monkeypatch.delenv("JAXSEG_DILATED_CONV", raising=False)
  assert atrous_conv.lowering(12, 1, "cpu") == "taps"
  assert atrous_conv.lowering(2, 1, "cpu") == "mixed"
  assert atrous_conv.lowering(12, 1, "gpu") == "xla"
  assert atrous_conv.lowering(12, 1, "tpu") == "xla"
  assert atrous_conv.lowering(1, 1, "cpu", channels=64) == "xla"
  assert atrous_conv.lowering(1, 1, "cpu", channels=256) == "mixed"  # undilated: the taps' gradients
  assert atrous_conv.lowering(1, 1, "gpu", channels=256) == "xla"
  assert atrous_conv.lowering(2, 2, "cpu") == "xla"  # strided: XLA's
  monkeypatch.setenv("JAXSEG_DILATED_CONV", "xla")
  assert atrous_conv.lowering(12, 1, "cpu") == "xla"
  monkeypatch.setenv("JAXSEG_DILATED_CONV", "fast")
  with pytest.raises(ValueError, match="JAXSEG_DILATED_CONV"):
    atrous_conv.lowering(12, 1, "cpu")


def test_bfloat16_taps_round_once():
  """In bf16 the taps form is as close to the exact convolution as XLA's bf16 conv is."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(1, 9, 9, 64)), jnp.bfloat16)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 64, 32)) / 24, jnp.bfloat16)
  exact = _direct(x.astype(jnp.float32), kernel.astype(jnp.float32), 2)
  got = tap_conv(x, kernel, 2)
  assert got.dtype == jnp.bfloat16
  err = lambda y: float(jnp.abs(y.astype(jnp.float32) - exact).max())
  assert err(got) <= 1.5 * err(_direct(x, kernel, 2)) + 1e-6, (err(got), err(_direct(x, kernel, 2)))


def test_pointwise_matmul_equals_flax_conv_and_its_gradients(monkeypatch):
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(2, 7, 9, 5)), jnp.float32)  # odd sizes: stride 2 keeps ceil(H / 2)
  monkeypatch.delenv("JAXSEG_POINTWISE_CONV", raising=False)
  assert atrous_conv.pointwise_lowering("cpu") == "matmul" and atrous_conv.pointwise_lowering("gpu") == "xla"
  for stride in (1, 2):
    flax_conv = nn.Conv(6, (1, 1), strides=stride, padding=((0, 0), (0, 0)), use_bias=False)
    params = flax_conv.init(jax.random.key(0), x)
    ours = atrous_conv.Conv(6, 1, stride)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, params)
    loss = lambda m: jax.value_and_grad(lambda p, x: jnp.sum(jnp.sin(m.apply(p, x))), argnums=(0, 1))
    want = loss(flax_conv)(params, x)
    monkeypatch.setenv("JAXSEG_POINTWISE_CONV", "matmul")
    np.testing.assert_allclose(ours.apply(params, x), flax_conv.apply(params, x), rtol=1e-5, atol=1e-5)
    for got_leaf, want_leaf in zip(jax.tree.leaves(loss(ours)(params, x)), jax.tree.leaves(want)):
      np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-4, atol=1e-4, err_msg=f"stride {stride}")
    monkeypatch.delenv("JAXSEG_POINTWISE_CONV")


def test_depthwise_taps_equal_flax_grouped_conv_and_its_gradients(monkeypatch):
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(2, 9, 12, 6)), jnp.float32)  # odd rows: stride 2 keeps ceil(H / 2)
  monkeypatch.delenv("JAXSEG_DEPTHWISE_CONV", raising=False)
  assert atrous_conv.depthwise_lowering("cpu") == "taps" and atrous_conv.depthwise_lowering("gpu") == "xla"
  for stride in (1, 2):
    flax_conv = nn.Conv(6, (3, 3), strides=stride, padding=((1, 1), (1, 1)), feature_group_count=6, use_bias=False)
    ours = atrous_conv.DepthwiseConv(3, stride)
    params = ours.init(jax.random.key(0), x)
    np.testing.assert_array_equal(params["params"]["kernel"], flax_conv.init(jax.random.key(0), x)["params"]["kernel"])
    loss = lambda m: jax.value_and_grad(lambda p, x: jnp.sum(jnp.sin(m.apply(p, x))), argnums=(0, 1))
    want = loss(flax_conv)(params, x)
    for forced in ("taps", "xla"):
      monkeypatch.setenv("JAXSEG_DEPTHWISE_CONV", forced)
      assert ours.apply(params, x).shape == flax_conv.apply(params, x).shape
      np.testing.assert_allclose(ours.apply(params, x), flax_conv.apply(params, x), rtol=1e-5, atol=1e-5)
      for got_leaf, want_leaf in zip(jax.tree.leaves(loss(ours)(params, x)), jax.tree.leaves(want)):
        np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-5, atol=1e-5, err_msg=f"{forced} stride {stride}")
  monkeypatch.setenv("JAXSEG_DEPTHWISE_CONV", "fast")
  with pytest.raises(ValueError, match="JAXSEG_DEPTHWISE_CONV"):
    atrous_conv.depthwise_lowering("cpu")
