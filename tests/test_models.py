import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models.backbones.resnet import ResNet, stage_strides_and_rates
from jaxseg.models.heads.aspp import ASPP, scaled_rates
from jaxseg.models.segmentor import build_model
from tests.conftest import load_config


def tiny_resnet(**kw):
  return ResNet(**{"depth": 10, "width": 8, **kw})


def conv_dilations(module, variables, x, prefix=""):
  """{module path: kernel dilation} of every nn.Conv called in an apply."""
  seen = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Conv) and context.method_name == "__call__":
      d = context.module.kernel_dilation
      seen["/".join(context.module.path)] = d if isinstance(d, int) else d[0]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    module.apply(variables, x, train=False)
  return {k: v for k, v in seen.items() if prefix in k}


@pytest.mark.parametrize("os_", [8, 16, 32])
def test_feature_sizes_for_each_output_stride(os_):
  model = tiny_resnet(output_stride=16)
  x = jnp.zeros((1, 65, 97, 3))
  variables = model.init(jax.random.key(0), x)
  # The same parameters work at any output stride.
  feats = tiny_resnet(output_stride=os_).apply(variables, x)
  sizes = {k: v.shape[1:3] for k, v in feats.items()}
  ceil = lambda n, s: -(-n // s)
  assert sizes["c1"] == (ceil(65, 4), ceil(97, 4))
  assert sizes["c4"] == (ceil(65, os_), ceil(97, os_))
  assert feats["c4"].shape[-1] == 64


def test_stage_plan():
  assert stage_strides_and_rates(32) == [(1, 1), (2, 1), (2, 1), (2, 1)]
  assert stage_strides_and_rates(16) == [(1, 1), (2, 1), (2, 1), (1, 2)]
  assert stage_strides_and_rates(8) == [(1, 1), (2, 1), (1, 2), (1, 4)]
  with pytest.raises(KeyError, match="output_stride"):
    stage_strides_and_rates(4)


def _center_receptive_field(os_, size=256):
  """Input rows/cols whose gradient reaches the centre unit of c4 (at input position
  128 for every output stride when size = 256)."""
  model = tiny_resnet(output_stride=os_, multi_grid=())
  x = jnp.zeros((1, size, size, 3))
  variables = model.init(jax.random.key(0), x)

  def centre(x):
    c4 = model.apply(variables, x)["c4"]
    return c4[0, c4.shape[1] // 2, c4.shape[2] // 2].sum()

  g = np.abs(np.asarray(jax.grad(centre)(jnp.ones_like(x) * 0.1)))[0].sum(-1)
  rows, cols = np.nonzero(g.sum(1))[0], np.nonzero(g.sum(0))[0]
  return rows.min(), rows.max(), cols.min(), cols.max()


def test_dilation_keeps_the_receptive_field():
  # Replacing strides by dilation keeps the field of view of a c4 unit: the centre
  # unit sees the same input window at OS 8, 16 and 32.
  fields = {os_: _center_receptive_field(os_) for os_ in (8, 16, 32)}
  assert fields[8] == fields[16] == fields[32], fields
  lo, hi = fields[32][:2]
  assert hi - lo > 100  # and it is a large field, not a degenerate one


@pytest.mark.parametrize("os_,expected", [(16, (2, 4, 8)), (8, (4, 8, 16))])
def test_multi_grid_rates(os_, expected):
  model = ResNet(depth=50, width=8, output_stride=os_, multi_grid=(1, 2, 4))
  x = jnp.zeros((1, 33, 33, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables)
  dil = conv_dilations(model, variables, x, "layer4_")
  rates = tuple(dil[f"layer4_{b}/conv2/conv"] for b in range(3))
  assert rates == expected


def test_cascaded_blocks_double_the_rate():
  model = tiny_resnet(output_stride=16, multi_grid=(1,), extra_blocks=3)
  x = jnp.zeros((1, 64, 64, 3))
  variables = model.init(jax.random.key(0), x)
  dil = conv_dilations(model, variables, x)
  assert [dil[f"layer{s}_0/conv2/conv"] for s in (4, 5, 6, 7)] == [2, 4, 8, 16]
  assert model.apply(variables, x)["c4"].shape[1:3] == (4, 4)


def test_deep_and_7x7_stems():
  x = jnp.zeros((1, 64, 64, 3))
  for stem, names in (("7x7", {"stem"}), ("deep", {"stem1", "stem2", "stem3"})):
    params = tiny_resnet(stem=stem).init(jax.random.key(0), x)["params"]
    assert names <= set(params)


def test_aspp_rates_scale_with_output_stride():
  assert scaled_rates((6, 12, 18), 16) == (6, 12, 18)
  assert scaled_rates((6, 12, 18), 8) == (12, 24, 36)
  assert scaled_rates((6, 12, 18), 32) == (3, 6, 9)
  aspp = ASPP(channels=4, rates=(12, 24, 36))
  x = jax.random.normal(jax.random.key(1), (2, 9, 9, 8))
  variables = aspp.init(jax.random.key(0), x, train=False)
  dil = conv_dilations(aspp, variables, x)
  assert [dil[f"atrous{i}/conv"] for i in range(3)] == [12, 24, 36]
  assert dil["conv1x1/conv"] == 1


def test_aspp_image_pooling_branch_is_global():
  # Changing one corner pixel changes the image-pooling branch everywhere, so the
  # ASPP output changes even far outside every atrous conv's reach.
  aspp = ASPP(channels=4, rates=(1, 1, 1))
  x = jax.random.normal(jax.random.key(1), (1, 16, 16, 8))
  variables = aspp.init(jax.random.key(0), x, train=False)
  y0 = aspp.apply(variables, x, train=False)
  y1 = aspp.apply(variables, x.at[0, 0, 0].add(50.0), train=False)
  assert not np.allclose(y0[0, -1, -1], y1[0, -1, -1])


def test_segmentor_outputs():
  config = load_config("quickstart", "tiny")
  model = build_model(config)
  x = jnp.zeros((2, 64, 64, 3))
  variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=True)
  out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)})
  assert out["seg"].shape == (2, 4, 4, 6) and out["aux"].shape == (2, 4, 4, 6)
  # Inference skips the auxiliary head; the OS8 model uses the same parameters.
  eval_out = build_model(config, output_stride=8).apply(variables, x, train=False)
  assert set(eval_out) == {"seg"} and eval_out["seg"].shape == (2, 8, 8, 6)


def test_stage_dilations_keep_the_strides():
  """model.backbone.dilations (mmseg's FastFCN backbone): OS32 feature sizes, and the
  same parameters compute another function than undilated; a wrong length is refused."""
  from jaxseg.errors import ConfigError
  x = jax.random.normal(jax.random.key(1), (1, 64, 64, 3))
  plain = ResNet(depth=10, width=8, output_stride=32, multi_grid=())
  dilated = ResNet(depth=10, width=8, output_stride=32, multi_grid=(), dilations=(1, 1, 2, 4))
  variables = plain.init(jax.random.key(0), x)
  a, b = plain.apply(variables, x), dilated.apply(variables, x)
  assert a["c4"].shape == b["c4"].shape == (1, 2, 2, 64)
  np.testing.assert_array_equal(a["c2"], b["c2"])  # stages 1-2 undilated in both
  assert not np.allclose(a["c3"], b["c3"])
  with pytest.raises(ConfigError, match="model.backbone.dilations"):
    ResNet(depth=10, width=8, output_stride=32, dilations=(1, 2)).init(jax.random.key(0), x)
