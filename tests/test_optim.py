import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg.errors import ConfigError
from jaxseg.optim import decay_mask, learning_rate_schedule, lr_multipliers, make_optimizer
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


def test_cosine_and_step_schedules_with_warmup():
  o = load_config("quickstart", "tiny").optim
  o.lr, o.warmup_steps, o.warmup, o.warmup_ratio = 0.02, 10, "linear", 0.001
  warm = lambda s: 0.001 + 0.999 * min(s / 10, 1)
  o.schedule, o.min_lr_ratio = "cosine", 0.05
  lr = learning_rate_schedule(o, 100)
  for step in (0, 5, 10, 50, 99, 100, 150):
    t = min(step, 100) / 100
    want = 0.02 * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * t))) * warm(step)
    np.testing.assert_allclose(lr(step), want, rtol=1e-5)
  o.schedule, o.decay_steps, o.decay_gamma = "step", (60, 80), 0.1
  lr = learning_rate_schedule(o, 100)
  for step, gammas in ((0, 0), (59, 0), (60, 1), (79, 1), (80, 2), (99, 2)):
    np.testing.assert_allclose(lr(step), 0.02 * 0.1 ** gammas * warm(step), rtol=1e-5)
  o.decay_steps = (80, 60)
  with pytest.raises(ConfigError, match="optim.decay_steps"):
    learning_rate_schedule(o, 100)
  o.schedule = "linear"
  with pytest.raises(ConfigError, match="optim.schedule"):
    learning_rate_schedule(o, 100)


def toy_params():
  """Unit-scale parameters of every kind a path pattern picks out."""
  rng = np.random.default_rng(1)
  p = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return {"backbone": {"conv": {"kernel": p(3, 3, 2, 2)}, "bn": {"scale": p(2), "bias": p(2)}},
          "decode_head": {"classifier": {"kernel": p(1, 1, 2, 3), "bias": p(3)},
                          "query_embed": {"embedding": p(4, 3)}}}


def test_decay_mask_and_lr_multipliers():
  params = toy_params()
  mask = decay_mask(params, decay_norm_and_bias=False)
  assert mask["backbone"]["conv"]["kernel"] and mask["decode_head"]["classifier"]["kernel"]
  assert not mask["backbone"]["bn"]["scale"] and not mask["decode_head"]["classifier"]["bias"]
  assert all(jax.tree.leaves(decay_mask(params, decay_norm_and_bias=True)))
  mask = decay_mask(params, True, no_decay=("/bn/", "embed"))
  assert mask["decode_head"]["classifier"]["bias"] and not mask["backbone"]["bn"]["bias"]
  assert not mask["decode_head"]["query_embed"]["embedding"]
  o = load_config("quickstart", "tiny").optim
  o.head_lr_mult = 10.0
  mults = lr_multipliers(params, o)
  assert mults["backbone"]["bn"]["bias"] == 1.0 and mults["decode_head"]["classifier"]["bias"] == 10.0
  o.lr_mults = (("^backbone/", 0.1), ("embed", 2.0))
  mults = lr_multipliers(params, o)
  assert mults["backbone"]["conv"]["kernel"] == 0.1 and mults["decode_head"]["query_embed"]["embedding"] == 2.0
  assert mults["decode_head"]["classifier"]["kernel"] == 10.0  # no rule: head_lr_mult
  o.lr_mults = (("^backbone/",),)
  with pytest.raises(ConfigError, match="optim.lr_mults"):
    lr_multipliers(params, o)


def run_optimizer(config, steps=3):
  """(params after `steps` updates with random gradients, the gradients, the schedule)."""
  params = toy_params()
  tx, schedule = make_optimizer(config, params)
  state = tx.init(params)
  rng = np.random.default_rng(0)
  grads_seq = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
               for _ in range(steps)]
  p = params
  for g in grads_seq:
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
  return jax.tree.map(np.asarray, p), [jax.tree.map(np.asarray, g) for g in grads_seq], schedule


def numpy_groups(config):
  """The decay mask and lr multipliers written out by hand for toy_params."""
  o = config.optim
  decays = lambda path: path.endswith("kernel") and "bn" not in path and "embed" not in path
  mult = lambda path: 0.1 if path.startswith("backbone") else (2.0 if "embed" in path else o.head_lr_mult)
  names = flax_paths(toy_params())
  return jax.tree.map(decays, names), jax.tree.map(mult, names)


def flax_paths(params):
  import flax
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({k: "/".join(k) for k in flat})


def configured(name, **optim):
  config = load_config("quickstart", "tiny")
  config.optim.update(dict(name=name, lr=0.1, weight_decay=0.01, head_lr_mult=10.0, power=0.9, warmup_steps=0,
                           lr_mults=(("^backbone/", 0.1), ("embed", 2.0)), no_decay=("/bn/", "embed"), **optim))
  config.train.steps = 10
  return config


def test_sgd_matches_the_pytorch_update_rule():
  """v <- m v + (g + wd p) ; p <- p - lr_t * mult * v, with the decay masked and the
  groups' lr multiplied, written out in numpy over three steps."""
  config = configured("sgd", momentum=0.9)
  p, grads_seq, _ = run_optimizer(config)
  mask, mults = numpy_groups(config)
  ref_p = jax.tree.map(np.asarray, toy_params())
  ref_v = jax.tree.map(np.zeros_like, ref_p)
  for t, g in enumerate(grads_seq):
    lr = 0.1 * (1 - t / 10) ** 0.9
    ref_v = jax.tree.map(lambda v, gg, pp, m: 0.9 * v + gg + (0.01 * pp if m else 0), ref_v, g, ref_p, mask)
    ref_p = jax.tree.map(lambda pp, v, k: pp - lr * k * v, ref_p, ref_v, mults)
  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(ref_p)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("clip", [0.0, 0.5])
def test_adamw_matches_the_pytorch_update_rule(clip):
  """g <- g * min(1, c / |g|) ; m, v <- Adam moments ; p <- p - lr_t * mult * (m_hat /
  (sqrt(v_hat) + eps) + wd p) with the decay masked, in numpy over three steps."""
  config = configured("adamw", adam_b1=0.9, adam_b2=0.99, adam_eps=1e-6, schedule="cosine", grad_clip=clip)
  p, grads_seq, _ = run_optimizer(config)
  mask, mults = numpy_groups(config)
  ref_p = jax.tree.map(np.asarray, toy_params())
  m = jax.tree.map(np.zeros_like, ref_p)
  v = jax.tree.map(np.zeros_like, ref_p)
  for t, g in enumerate(grads_seq):
    if clip:
      norm = np.sqrt(sum(float(np.sum(x ** 2)) for x in jax.tree.leaves(g)))
      assert norm > clip  # the clipping is exercised
      g = jax.tree.map(lambda x: x * clip / norm, g)
    lr = 0.1 * 0.5 * (1 + np.cos(np.pi * t / 10))
    m = jax.tree.map(lambda a, gg: 0.9 * a + 0.1 * gg, m, g)
    v = jax.tree.map(lambda a, gg: 0.99 * a + 0.01 * gg ** 2, v, g)
    ref_p = jax.tree.map(
        lambda pp, a, b, dec, k: pp - lr * k * ((a / (1 - 0.9 ** (t + 1))) / (np.sqrt(b / (1 - 0.99 ** (t + 1))) + 1e-6)
                                                + (0.01 * pp if dec else 0)),
        ref_p, m, v, mask, mults)
  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(ref_p)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_unknown_optimizer_is_a_config_error():
  with pytest.raises(ConfigError, match="optim.name"):
    run_optimizer(configured("lamb"))
