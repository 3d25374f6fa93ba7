"""Frozen BatchNorm (jaxseg/models/frozen_bn.py) against flax's own BatchNorm in
inference mode, with randomised statistics and affine parameters."""
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.frozen_bn import frozen_batch_norm


class Net(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(4, (3, 3), name="stem")(x)
    x = nn.BatchNorm(use_running_average=not train, epsilon=1e-5, name="stem_bn")(x)
    x = nn.Conv(3, (1, 1), name="head")(nn.relu(x))
    return nn.BatchNorm(use_running_average=not train, momentum=0.5, axis=1, name="head_bn")(x)


def randomised(variables, seed=0):
  """Non-trivial running statistics and affine parameters."""
  rng = np.random.default_rng(seed)
  draw = lambda path, x: jnp.asarray(
      rng.uniform(0.5, 2.0, x.shape) if path[-1].key in ("var", "scale") else rng.normal(0, 0.5, x.shape), x.dtype)
  return jax.tree_util.tree_map_with_path(draw, variables)


def setup():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 6, 3)), jnp.float32)
  variables = randomised(Net().init(jax.random.key(0), x, train=False))
  return x, variables


def train_apply(variables, x, patterns, affine=True):
  def loss(params):
    with frozen_batch_norm(patterns, affine):
      y, updates = Net().apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
    return jnp.sum(y * jnp.arange(y.size).reshape(y.shape) / y.size), (y, updates["batch_stats"])
  (_, (y, stats)), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
  return y, stats, grads


def test_all_frozen_equals_inference_mode_and_keeps_the_statistics_bit_exact():
  x, variables = setup()
  y, stats, grads = train_apply(variables, x, ("_bn$",))
  np.testing.assert_allclose(y, Net().apply(variables, x, train=False), rtol=1e-6, atol=1e-6)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(variables["batch_stats"])):
    np.testing.assert_array_equal(a, b)
  for name in ("stem_bn", "head_bn"):
    assert not any(np.any(g) for g in jax.tree.leaves(grads[name]))
  assert np.any(grads["stem"]["kernel"])  # the convolutions still learn


def test_only_matching_modules_freeze():
  x, variables = setup()
  _, stats, _ = train_apply(variables, x, ("^stem",))
  np.testing.assert_array_equal(stats["stem_bn"]["mean"], variables["batch_stats"]["stem_bn"]["mean"])
  np.testing.assert_array_equal(stats["stem_bn"]["var"], variables["batch_stats"]["stem_bn"]["var"])
  assert not np.allclose(stats["head_bn"]["mean"], variables["batch_stats"]["head_bn"]["mean"])
  # Without a matching pattern training is untouched.
  for patterns in ((), ("no_such_module",)):
    y, stats, _ = train_apply(variables, x, patterns)
    y_ref, updates = Net().apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_array_equal(y, y_ref)
    for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(updates["batch_stats"])):
      np.testing.assert_array_equal(a, b)


def test_affine_false_trains_scale_and_bias_as_inference_mode_would():
  x, variables = setup()
  _, _, grads = train_apply(variables, x, ("_bn$",), affine=False)
  def eval_loss(params):
    y = Net().apply({**variables, "params": params}, x, train=False)
    return jnp.sum(y * jnp.arange(y.size).reshape(y.shape) / y.size)
  want = jax.grad(eval_loss)(variables["params"])
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert np.all(np.abs(grads["stem_bn"]["scale"]) > 0)


def test_a_training_step_leaves_frozen_statistics_bit_exact():
  """quickstart:tiny's jitted training step with the backbone's BatchNorm frozen: its
  statistics, scales and biases stay bit for bit, everything else moves."""
  from jaxseg import train
  from jaxseg.families import get
  from tests.conftest import load_config
  config = load_config("quickstart", "tiny")
  config.train.frozen_bn, config.train.frozen_bn_affine = ("^backbone/",), True
  family = get(config)
  model = family.build_model(train=True)
  init_fn, _, tx, schedule = train.state_factory(config, model)
  state = init_fn(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8),
           "label": rng.integers(0, 6, (2, 64, 64)).astype(np.int32)}
  new, _ = jax.jit(train.make_train_step(config, model, tx, schedule))(state, batch)
  for part in ("batch_stats", "params"):
    old, now = flax.traverse_util.flatten_dict(getattr(state, part)), flax.traverse_util.flatten_dict(getattr(new, part))
    for key in old:
      frozen = key[0] == "backbone" and (part == "batch_stats" or key[-1] in ("scale", "bias"))
      same = np.array_equal(np.asarray(old[key]), np.asarray(now[key]))
      assert same == frozen, ("/".join(key), part, frozen)
