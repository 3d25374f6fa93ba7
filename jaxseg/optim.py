"""Optimizers and schedules: SGD with momentum or AdamW; poly, cosine or step decay
with linear/exponential warmup; per-parameter-group lr multipliers and weight-decay
masks chosen by parameter-path patterns; global-norm gradient clipping.

A parameter's path is its module names joined by "/", e.g.
"backbone/layer4_0/conv2/bn/scale" or "decode_head/classifier/bias"; patterns are
Python regular expressions searched in it (`re.search`).
"""
from __future__ import annotations

import math
import re

import flax
import jax
import jax.numpy as jnp
import optax

from jaxseg.errors import ConfigError

SCHEDULES = ("poly", "cosine", "step")
OPTIMIZERS = ("sgd", "adamw")


def learning_rate_schedule(o, total_steps):
  """lr(step) = lr * decay(step) * warmup(step).

  decay: poly (1 - t) ** power; cosine (min_ratio + (1 - min_ratio) (1 + cos(pi t)) / 2);
  step: gamma ** (number of `decay_steps` boundaries passed); t = step / total.
  warmup, over the first `warmup_steps` W: linear from `warmup_ratio` to 1, or
  exponential ratio ** (1 - s/W). With `poly_after_warmup` (STDC/BiSeNet code:
  exponential from 1e-5 to lr in 1000 steps, then poly), the warmup multiplies lr
  alone and the decay starts at W: t = (step - W) / (total - W), whatever the decay."""
  if o.warmup not in ("linear", "exp"):
    raise ConfigError(f"config key optim.warmup must be 'linear' or 'exp', got '{o.warmup}'")
  if o.schedule not in SCHEDULES:
    raise ConfigError(f"config key optim.schedule must be one of {', '.join(SCHEDULES)}, got '{o.schedule}'")
  if o.poly_after_warmup and o.warmup_steps >= total_steps:
    raise ConfigError(f"config key optim.warmup_steps ({o.warmup_steps}) must be below train.steps "
                      f"({total_steps}) with optim.poly_after_warmup")
  if o.schedule == "step" and list(o.decay_steps) != sorted(o.decay_steps):
    raise ConfigError(f"config key optim.decay_steps must be increasing, got {tuple(o.decay_steps)}")
  boundaries = jnp.asarray(o.decay_steps or [total_steps + 1], jnp.float32)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    start = o.warmup_steps if o.poly_after_warmup else 0
    t = (jnp.clip(step, start, total_steps) - start) / max(total_steps - start, 1)
    if o.schedule == "poly":
      decay = (1.0 - t) ** o.power
    elif o.schedule == "cosine":
      decay = o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + jnp.cos(math.pi * t))
    else:  # step: boundaries in training steps, as the detection schedules state them
      decay = o.decay_gamma ** jnp.sum(step >= boundaries)
    lr = o.lr * decay
    if o.warmup_steps > 0:
      s = jnp.minimum(step / o.warmup_steps, 1.0)
      factor = (o.warmup_ratio + (1 - o.warmup_ratio) * s if o.warmup == "linear"
                else o.warmup_ratio ** (1.0 - s))
      lr = lr * factor
    return lr

  return schedule


def _path_names(params):
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  return flax.traverse_util.unflatten_dict({k: "/".join(k) for k in flat})


def decay_mask(params, decay_norm_and_bias, no_decay=()):
  """True for parameters that get weight decay: conv/dense kernels, and everything
  else (BN scales and biases, conv biases, embeddings) only with
  `decay_norm_and_bias`; never a path matching one of `no_decay`'s patterns."""
  def decays(name):
    return (decay_norm_and_bias or name.endswith("kernel")) and not any(re.search(p, name) for p in no_decay)
  return jax.tree.map(decays, _path_names(params))


def lr_multipliers(params, o):
  """Each parameter's lr multiplier: that of the first (pattern, multiplier) pair of
  `optim.lr_mults` whose pattern its path matches; otherwise `optim.head_lr_mult`
  outside the backbone and 1 inside it."""
  def mult(name):
    for rule in o.lr_mults:
      if len(rule) != 2:
        raise ConfigError(f"config key optim.lr_mults holds (pattern, multiplier) pairs, got {tuple(rule)}")
      if re.search(rule[0], name):
        return float(rule[1])
    return 1.0 if name.startswith("backbone/") else float(o.head_lr_mult)
  return jax.tree.map(mult, _path_names(params))


def make_optimizer(config, params):
  """(optax transformation, lr schedule) of config.optim.

  sgd: PyTorch's SGD, decay added to the gradient before momentum:
      v <- m v + g + wd p;  p <- p - lr_t * mult * v.
  adamw: PyTorch's AdamW (decoupled decay, scaled by the group's lr):
      p <- p - lr_t * mult * (m_hat / (sqrt(v_hat) + eps) + wd p).
  A group's multiplier scales its whole update, i.e. its learning rate; the gradient
  is first clipped to global norm `grad_clip` (0: off)."""
  o = config.optim
  if o.name not in OPTIMIZERS:
    raise ConfigError(f"config key optim.name must be one of {', '.join(OPTIMIZERS)}, got '{o.name}'")
  schedule = learning_rate_schedule(o, config.train.steps)
  decay = optax.add_decayed_weights(o.weight_decay, mask=decay_mask(params, o.decay_norm_and_bias, o.no_decay))
  chain = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip > 0 else []
  if o.name == "sgd":
    chain += [decay, optax.sgd(schedule, momentum=o.momentum)]
  else:
    chain += [optax.scale_by_adam(b1=o.adam_b1, b2=o.adam_b2, eps=o.adam_eps), decay,
              optax.scale_by_learning_rate(schedule)]
  mults = lr_multipliers(params, o)
  if any(m != 1.0 for m in jax.tree.leaves(mults)):
    groups = jax.tree.map(lambda m: f"x{m:g}", mults)
    chain.append(optax.multi_transform({f"x{m:g}": optax.scale(m) for m in set(jax.tree.leaves(mults))}, groups))
  return optax.chain(*chain), schedule
