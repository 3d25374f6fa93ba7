"""FPN and PANet's bottom-up path: output shapes, and the top-down step and one bottom-up
step equal to a numpy convolution reference (no norm, and GroupNorm)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models.necks import fpn


def np_conv(x, kernel, bias=None, stride=1):
  """NHWC x, HWIO kernel, 'same' zero padding (k - 1) // 2, as PyTorch's conv2d."""
  k = kernel.shape[0]
  pad = (k - 1) // 2
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  b, h, w, _ = x.shape
  oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
  out = np.zeros((b, oh, ow, kernel.shape[-1]))
  for dy in range(k):
    for dx in range(k):
      patch = xp[:, dy:dy + stride * oh:stride, dx:dx + stride * ow:stride]
      out += patch @ kernel[dy, dx]
  return out if bias is None else out + bias


def np_group_norm(x, scale, bias, groups=32, eps=1e-5):
  b, h, w, c = x.shape
  g = x.reshape(b, h, w, groups, c // groups)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = g.var(axis=(1, 2, 4), keepdims=True)
  return ((g - mean) / np.sqrt(var + eps)).reshape(b, h, w, c) * scale + bias


def features(rng, size=32):
  return {f"c{i + 1}": jnp.asarray(rng.randn(2, size >> i, size >> i, 8 * (i + 1)), jnp.float32)
          for i in range(4)}


def conv_ref(params, x, norm, relu):
  y = np_conv(x, np.asarray(params["conv"]["kernel"]), np.asarray(params["conv"]["bias"])
              if "bias" in params["conv"] else None,
              stride=1 if params.get("_stride", 1) == 1 else params["_stride"])
  if norm == "gn":
    y = np_group_norm(y, np.asarray(params["norm"]["scale"]), np.asarray(params["norm"]["bias"]))
  return np.maximum(y, 0) if relu else y


@pytest.mark.parametrize("norm", ["none", "gn"])
def test_fpn_and_bottom_up_equal_numpy(norm):
  rng = np.random.RandomState(0)
  feats = features(rng)
  model = fpn.FPN(channels=64, norm=norm, bottom_up=True)
  variables = model.init(jax.random.key(0), feats, train=False)
  if norm == "gn":  # non-trivial affine parameters
    variables = jax.tree.map(lambda v: v + 0.1 * jnp.asarray(rng.randn(*v.shape), v.dtype), variables)
  out = jax.jit(lambda v, f: model.apply(v, f, train=False))(variables, feats)
  out = {k: np.asarray(v) for k, v in out.items()}
  for i, s in zip(range(2, 7), (32, 16, 8, 4, 2)):
    assert out[f"p{i}"].shape == (2, s, s, 64) and out[f"n{i}"].shape == (2, s, s, 64)
  np.testing.assert_array_equal(out["p6"], out["p5"][:, ::2, ::2])
  np.testing.assert_array_equal(out["n6"], out["n5"][:, ::2, ::2])
  np.testing.assert_array_equal(out["n2"], out["p2"])
  p = jax.tree.map(np.asarray, variables["params"])
  f = {k: np.asarray(v) for k, v in feats.items()}
  # top-down: P4 = output4(lateral4(c3) + up2(lateral5(c4)))
  inner5 = conv_ref(p["lateral5"], f["c4"], norm, False)
  inner4 = conv_ref(p["lateral4"], f["c3"], norm, False) + inner5.repeat(2, 1).repeat(2, 2)
  np.testing.assert_allclose(out["p4"], conv_ref(p["output4"], inner4, norm, False), atol=2e-4)
  np.testing.assert_allclose(out["p5"], conv_ref(p["output5"], inner5, norm, False), atol=2e-4)
  # one bottom-up step: N4 = ReLU(fuse4(ReLU(down3(N3)) + P4)), down3 of stride 2
  down = dict(p["down3"], _stride=2)
  want = conv_ref(p["fuse4"], conv_ref(down, out["n3"], norm, True) + out["p4"], norm, True)
  np.testing.assert_allclose(out["n4"], want, atol=2e-4)


def test_fpn_rejects_bad_config_and_input():
  feats = features(np.random.RandomState(1), 16)
  with pytest.raises(ValueError, match="model.neck.norm"):
    fpn.FPN(norm="ln").init(jax.random.key(0), feats, train=False)
  with pytest.raises(ValueError, match="missing \\['c4'\\]"):
    fpn.FPN().init(jax.random.key(0), {k: v for k, v in feats.items() if k != "c4"}, train=False)


def test_nearest_resize_matches_pytorch_rule():
  x = jnp.arange(5.0).reshape(1, 5, 1, 1)
  np.testing.assert_array_equal(np.asarray(fpn.nearest_resize(x, (9, 1)))[0, :, 0, 0],
                                np.floor(np.arange(9) * 5 / 9))
