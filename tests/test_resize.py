"""The bilinear resize's CPU lowering (two taps per axis) against PyTorch's interpolate
and XLA's jax.image.resize, values and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxseg.models import layers


@pytest.mark.parametrize("shape,size", [((1, 65, 65, 3), (513, 513)),  # DeepLabv3's logits at OS8
                                        ((2, 8, 16, 2), (64, 128)),  # STDC's x8
                                        ((2, 33, 17, 2), (20, 50)),  # down one axis, up the other
                                        ((1, 1, 1, 2), (5, 3))])
def test_lerp_resize_equals_torch_and_xla(shape, size, monkeypatch):
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  torch_y = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=size, mode="bilinear",
                          align_corners=False).permute(0, 2, 3, 1).numpy()
  ys = {}
  for forced in ("lerp", "xla"):
    monkeypatch.setenv("JAXSEG_RESIZE", forced)
    ys[forced] = np.asarray(jax.jit(lambda x: layers.resize(x, size))(jnp.asarray(x)))
    np.testing.assert_allclose(ys[forced], torch_y, rtol=0, atol=4e-6, err_msg=forced)
  np.testing.assert_allclose(ys["lerp"], ys["xla"], rtol=0, atol=4e-6)


def test_lerp_resize_gradient_is_xla_resize_gradient(monkeypatch):
  rng = np.random.default_rng(1)
  x, g = jnp.asarray(rng.normal(size=(2, 9, 6, 3)), jnp.float32), jnp.asarray(rng.normal(size=(2, 40, 5, 3)), jnp.float32)
  grad = lambda: jax.grad(lambda x: jnp.sum(jnp.sin(layers.resize(x, (40, 5))) * g))(x)
  monkeypatch.setenv("JAXSEG_RESIZE", "xla")
  want = grad()
  monkeypatch.setenv("JAXSEG_RESIZE", "lerp")
  np.testing.assert_allclose(grad(), want, rtol=1e-5, atol=1e-5)
  monkeypatch.delenv("JAXSEG_RESIZE")
  assert layers.resize_lowering("cpu") == "lerp" and layers.resize_lowering("gpu") == "xla"
  monkeypatch.setenv("JAXSEG_RESIZE", "cubic")
  with pytest.raises(ValueError, match="JAXSEG_RESIZE"):
    layers.resize(x, (40, 5))
