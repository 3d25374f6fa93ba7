import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg.optim import decay_mask, learning_rate_schedule, lr_groups, make_optimizer
from tests.conftest import load_config


def test_poly_schedule():
  o = load_config("quickstart", "tiny").optim
  o.lr, o.power, o.warmup_steps = 0.01, 0.9, 0
  lr = learning_rate_schedule(o, 100)
  for step in (0, 1, 50, 99, 100):
    np.testing.assert_allclose(lr(step), 0.01 * (1 - step / 100) ** 0.9, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("kind", ["linear", "exp"])
def test_warmup_then_poly(kind):
  o = load_config("quickstart", "tiny").optim
  o.lr, o.power, o.warmup_steps, o.warmup, o.warmup_ratio = 0.01, 0.9, 10, kind, 0.1
  lr = learning_rate_schedule(o, 100)
  poly = lambda s: 0.01 * (1 - s / 100) ** 0.9
  factor = {"linear": lambda t: 0.1 + 0.9 * t, "exp": lambda t: 0.1 ** (1 - t)}[kind]
  for step in (0, 5, 10, 40):
    np.testing.assert_allclose(lr(step), poly(step) * factor(min(step / 10, 1)), rtol=1e-6)


def toy_params():
  return {"backbone": {"conv": {"kernel": jnp.ones((3, 3, 2, 2))}, "bn": {"scale": jnp.ones(2), "bias": jnp.ones(2)}},
          "decode_head": {"classifier": {"kernel": jnp.ones((1, 1, 2, 3)), "bias": jnp.ones(3)}}}


def test_decay_mask_and_groups():
  params = toy_params()
  mask = decay_mask(params, decay_norm_and_bias=False)
  assert mask["backbone"]["conv"]["kernel"] and mask["decode_head"]["classifier"]["kernel"]
  assert not mask["backbone"]["bn"]["scale"] and not mask["decode_head"]["classifier"]["bias"]
  assert all(jax.tree.leaves(decay_mask(params, decay_norm_and_bias=True)))
  groups = lr_groups(params)
  assert groups["backbone"]["bn"]["bias"] == "backbone" and groups["decode_head"]["classifier"]["bias"] == "head"


def test_sgd_matches_the_pytorch_update_rule():
  """v <- m v + (g + wd p) ; p <- p - lr_t * mult * v, with the decay masked and the
  head's lr multiplied, written out in numpy over three steps."""
  config = load_config("quickstart", "tiny")
  o = config.optim
  o.lr, o.momentum, o.weight_decay, o.head_lr_mult, o.power, o.warmup_steps = 0.1, 0.9, 0.01, 10.0, 0.9, 0
  config.train.steps = 10
  params = toy_params()
  tx, schedule = make_optimizer(config, params)
  state = tx.init(params)
  rng = np.random.default_rng(0)
  grads_seq = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params) for _ in range(3)]
  mask = decay_mask(params, False)
  groups = lr_groups(params)
  ref_p = jax.tree.map(np.asarray, params)
  ref_v = jax.tree.map(np.zeros_like, ref_p)
  p = params
  for t, g in enumerate(grads_seq):
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
    lr = 0.1 * (1 - t / 10) ** 0.9
    ref_v = jax.tree.map(lambda v, gg, pp, m: 0.9 * v + np.asarray(gg) + (0.01 * pp if m else 0),
                         ref_v, g, ref_p, mask)
    ref_p = jax.tree.map(lambda pp, v, grp: pp - lr * (10.0 if grp == "head" else 1.0) * v, ref_p, ref_v, groups)
  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(ref_p)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
