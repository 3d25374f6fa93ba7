import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.errors import ConfigError
from jaxseg.models.heads.psp import PyramidPooling, adaptive_bins, adaptive_pool
from jaxseg.models.segmentor import build_model
from tests.conftest import load_config


def numpy_adaptive_pool(x, n, pooling):
  """The definition: output bin (i, j) reduces rows [floor(i*H/n), ceil((i+1)*H/n)) and
  columns [floor(j*W/n), ceil((j+1)*W/n))."""
  b, h, w, c = x.shape
  reduce = np.mean if pooling == "avg" else np.max
  out = np.zeros((b, n, n, c), x.dtype)
  for i in range(n):
    for j in range(n):
      r0, r1 = math.floor(i * h / n), math.ceil((i + 1) * h / n)
      c0, c1 = math.floor(j * w / n), math.ceil((j + 1) * w / n)
      out[:, i, j] = reduce(x[:, r0:r1, c0:c1], axis=(1, 2))
  return out


@pytest.mark.parametrize("pooling", ["avg", "max"])
@pytest.mark.parametrize("size", [(6, 6), (12, 18), (7, 5), (13, 10), (4, 4), (1, 3)])
def test_adaptive_pool_matches_the_definition(size, pooling):
  # Divisible by every bin count (6x6, 12x18), not divisible (7x5, 13x10: overlapping
  # bins), and smaller than the bin count (4x4 and 1x3 at 6 bins: repeated rows).
  x = np.random.default_rng(0).normal(size=(2, *size, 3)).astype(np.float32)
  for n in (1, 2, 3, 6):
    np.testing.assert_allclose(adaptive_pool(jnp.asarray(x), n, pooling),
                               numpy_adaptive_pool(x, n, pooling), rtol=1e-6, atol=1e-6)


def test_adaptive_bins():
  assert adaptive_bins(6, 3) == [(0, 2), (2, 4), (4, 6)]
  assert adaptive_bins(7, 3) == [(0, 3), (2, 5), (4, 7)]  # overlapping, as PyTorch
  assert adaptive_bins(2, 6) == [(0, 1), (0, 1), (0, 1), (1, 2), (1, 2), (1, 2)]


@pytest.mark.parametrize("reduction,channels", [(True, 2 * 16), (False, 5 * 16)])
def test_pyramid_pooling_channels_and_global_branch(reduction, channels):
  ppm = PyramidPooling(bins=(1, 2, 3, 6), reduction=reduction)
  x = jax.random.normal(jax.random.key(0), (2, 7, 9, 16))
  variables = ppm.init(jax.random.key(1), x, train=False)
  y = ppm.apply(variables, x, train=False)
  assert y.shape == (2, 7, 9, channels)
  np.testing.assert_array_equal(y[..., :16], x)  # the input itself is concatenated
  # The bin-1 branch is a broadcast of one vector: the global context.
  width = channels // 5 if not reduction else 4
  g = y[..., 16:16 + width]
  np.testing.assert_allclose(g, jnp.broadcast_to(g[:, :1, :1], g.shape), rtol=1e-6)


def test_psp_model_outputs():
  config = load_config("pspnet_voc", "tiny")
  x = jnp.zeros((2, 64, 64, 3))
  model = build_model(config)
  variables = jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=True))
  assert {"backbone", "decode_head", "aux_heads_aux"} == set(variables["params"])
  out = jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"],
                                             rngs={"dropout": jax.random.key(2)})[0], variables)
  assert {k: v.shape for k, v in out.items()} == {"seg": (2, 8, 8, 6), "aux": (2, 8, 8, 6)}
  out = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  assert {k: v.shape for k, v in out.items()} == {"seg": (2, 8, 8, 6)}


def test_psp_config_errors_name_the_key():
  config = load_config("pspnet_voc", "tiny")
  config.model.head.pooling = "median"
  with pytest.raises(ConfigError, match="model.head.pooling"):
    build_model(config)
  config = load_config("pspnet_voc", "tiny")
  config.model.head.bins = (1, 0)
  with pytest.raises(ConfigError, match="model.head.bins"):
    build_model(config)
