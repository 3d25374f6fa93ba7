"""Optimizers and schedules: SGD momentum + poly, warmup, lr multipliers, decay masks."""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import optax

from jaxseg.errors import ConfigError


def learning_rate_schedule(o, total_steps):
  """lr(step) = lr * (1 - step / total) ** power, times a warmup factor for the first
  `warmup_steps` W: linear from `warmup_ratio` to 1, or exponential ratio ** (1 - t/W).
  With `poly_after_warmup` (STDC/BiSeNet code: exponential from 1e-5 to lr in 1000
  steps, then poly), the warmup multiplies lr alone and the poly decay starts at W:
  lr * (1 - (step - W) / (total - W)) ** power."""
  if o.warmup not in ("linear", "exp"):
    raise ConfigError(f"config key optim.warmup must be 'linear' or 'exp', got '{o.warmup}'")
  if o.poly_after_warmup and o.warmup_steps >= total_steps:
    raise ConfigError(f"config key optim.warmup_steps ({o.warmup_steps}) must be below train.steps "
                      f"({total_steps}) with optim.poly_after_warmup")

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    start = o.warmup_steps if o.poly_after_warmup else 0
    progress = (jnp.clip(step, start, total_steps) - start) / max(total_steps - start, 1)
    lr = o.lr * (1.0 - progress) ** o.power
    if o.warmup_steps > 0:
      t = jnp.minimum(step / o.warmup_steps, 1.0)
      factor = (o.warmup_ratio + (1 - o.warmup_ratio) * t if o.warmup == "linear"
                else o.warmup_ratio ** (1.0 - t))
      lr = lr * factor
    return lr

  return schedule


def _path_names(params):
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  return flax.traverse_util.unflatten_dict({k: "/".join(k) for k in flat})


def decay_mask(params, decay_norm_and_bias):
  """True for parameters that get weight decay: conv/dense kernels, and BN scales and
  biases only when `decay_norm_and_bias`."""
  return jax.tree.map(lambda name: decay_norm_and_bias or name.endswith("kernel"), _path_names(params))


def lr_groups(params):
  """'backbone' for parameters under the backbone, 'head' for the rest (neck, heads)."""
  return jax.tree.map(lambda name: "backbone" if name.startswith("backbone/") else "head",
                      _path_names(params))


def make_optimizer(config, params):
  """SGD with momentum as in PyTorch (decay added to the gradient before momentum);
  head_lr_mult scales the update of the non-backbone parameters, i.e. their lr."""
  o = config.optim
  schedule = learning_rate_schedule(o, config.train.steps)
  chain = []
  if o.grad_clip > 0:
    chain.append(optax.clip_by_global_norm(o.grad_clip))
  chain += [
      optax.add_decayed_weights(o.weight_decay, mask=decay_mask(params, o.decay_norm_and_bias)),
      optax.sgd(schedule, momentum=o.momentum),
  ]
  if o.head_lr_mult != 1.0:
    chain.append(optax.multi_transform(
        {"backbone": optax.identity(), "head": optax.scale(o.head_lr_mult)}, lr_groups(params)))
  return optax.chain(*chain), schedule
