"""BatchNorm folded into the convolutions computes the unfolded model's function."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.backbones.resnet import ResNet
from jaxseg.models.fold_bn import fold_batch_norm
from jaxseg.models.heads.aspp import DeepLabV3Head
from jaxseg.models.heads.mcibi import ClassifierHead


class Net(nn.Module):
  """A bottleneck ResNet at OS8 (strided, dilated and 1x1 ConvBNs), ASPP, and a module
  with its own conv + BN (not a ConvBN: left as it is)."""

  @nn.compact
  def __call__(self, x, train=False):
    features = ResNet(depth=14, width=8, stem="deep", output_stride=8, name="backbone")(x, train)
    seg = DeepLabV3Head(5, channels=8, rates=(2, 4, 6), name="head")(features, train)
    return seg + ClassifierHead(5, channels=8, name="other")(features["c4"], train)


def randomized(variables, key):
  """Non-trivial BN statistics and affine parameters everywhere."""
  leaves, tree = jax.tree_util.tree_flatten_with_path(variables)
  keys = jax.random.split(key, len(leaves))
  out = []
  for (path, leaf), k in zip(leaves, keys):
    name = path[-1].key
    if name in ("scale", "var"):
      leaf = jax.random.uniform(k, leaf.shape, minval=0.5, maxval=2.0)
    elif name in ("bias", "mean"):
      leaf = jax.random.normal(k, leaf.shape) * 0.5
    out.append(leaf)
  return jax.tree_util.tree_unflatten(tree, out)


def test_folded_equals_unfolded():
  net = Net()
  x = jax.random.normal(jax.random.key(0), (1, 33, 41, 3))
  variables = randomized(net.init(jax.random.key(1), x), jax.random.key(2))
  folded = fold_batch_norm(variables)
  # Every ConvBN lost its BN: the remaining statistics are the other module's alone.
  assert list(folded["batch_stats"]) == ["other"]
  assert "bias" in folded["params"]["backbone"]["layer4_0"]["conv2"]  # a dilated 3x3
  assert "bn" in folded["params"]["other"]
  apply = jax.jit(net.apply)
  want, got = apply(variables, x), apply(folded, x)
  assert float(jnp.abs(want).max()) > 0.1
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))
