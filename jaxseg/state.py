"""The training state and its construction, shared by training, `jaxseg.load`,
conversion and the tools (none of which imports another for it)."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

from jaxseg.optim import make_optimizer


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def state_factory(config, model, family=None):
  """(init_fn, abstract_state, tx, schedule): `init_fn(key)` builds the TrainState
  from the family's example batch; the abstract state (shapes only, via eval_shape)
  drives shardings and restores."""
  from jaxseg import families
  family = family or families.get(config)
  example = jax.tree.map(lambda x: jnp.zeros((1, *x.shape), x.dtype), family.example(train=True))

  def init_variables(key):
    return family.init(model, key, example)

  tx, schedule = make_optimizer(config, jax.eval_shape(init_variables, jax.random.key(0))["params"])

  def init_fn(key):
    variables = init_variables(key)
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(variables["params"]))

  return init_fn, jax.eval_shape(init_fn, jax.random.key(0)), tx, schedule


def variables(state):
  """The model variables of a TrainState."""
  return {"params": state.params, "batch_stats": state.batch_stats}
