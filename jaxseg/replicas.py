"""Asynchronous multi-replica training: local SGD with delayed averaging.

DeepLabv3 (Appendix B) trains with several replicas that do not wait for each other
(TensorFlow parameter servers: each replica pushes gradients and pulls parameters on
its own clock) and reaches one replica's mIoU in a fraction of the wall time. jaxseg
keeps the idea, without parameter servers and without their unbounded, run-dependent
staleness:

- The devices form a (`replica`, `data`) mesh. Replica r holds its own copy of the
  training state and takes optimizer steps on its share B/R of the global batch, with
  its own BatchNorm statistics and MCIBI memory; no communication between replicas.
- Every `train.exchange_every` = H steps each replica snapshots its parameters and BN
  statistics s_r. `train.exchange_delay` = D steps later, while the replicas went on
  stepping, the mean of the snapshots replaces each replica's own snapshot in its
  current weights:   w_r <- w_r + mean_r'(s_r') - s_r.
  The mean (one all-reduce) depends only on the snapshots, so XLA overlaps it with the
  step it is part of; with D = 0 it is plain periodic averaging, w_r <- mean(w).
  The staleness is bounded by H + D steps and the run is deterministic. BN statistics
  are exchanged like parameters, except entries with a merge rule of their own next
  to their model (MCIBI's memory rows: averaged over the replicas that have seen the
  class, `MERGE_RULES`).
- Momentum stays local. At every evaluation and checkpoint the replicas synchronise
  exactly (parameters, BN statistics and optimizer state averaged), so a checkpoint
  holds one ordinary TrainState: eval, predict, `jaxseg.load` and resuming with any
  replica count work unchanged.

With `train.replicas` = 1 training is the ordinary synchronous data parallelism.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from jaxseg import sharding
from jaxseg.errors import ConfigError
from jaxseg.models.heads.mcibi import MemoryMerge


def _mean_over_replicas(x):
  """Average of the float leaves over the leading replica axis; counters are equal."""
  return jnp.mean(x, axis=0) if jnp.issubdtype(x.dtype, jnp.floating) else x[0]


# Merge rules of state entries that plain averaging would spoil (each next to its model).
MERGE_RULES = (MemoryMerge,)


def _rule(tree):
  """The merge rule whose keys all stand in the dict `tree`, or None."""
  return next((r for r in MERGE_RULES if r.keys <= tree.keys()), None)


def exchange(current, snapshot):
  """w_r <- w_r + mean(s) - s_r on stacked trees (leading replica axis). Counters
  (MCIBI's step) are equal in every replica and stay. Entries claimed by a merge
  rule (MCIBI's memory rows) follow that rule."""
  if isinstance(current, dict):
    rule = _rule(current)
    out = {k: exchange(current[k], snapshot[k]) for k in current if not (rule and k in rule.keys)}
    if rule:
      out.update(rule.exchange(current, snapshot))
    return out
  if jnp.issubdtype(current.dtype, jnp.floating):
    return current + jnp.mean(snapshot, axis=0, keepdims=True) - snapshot
  return current


def average(tree):
  """One tree from the stacked one: float leaves averaged, counters taken from replica
  0, entries claimed by a merge rule merged by it."""
  if isinstance(tree, dict):
    rule = _rule(tree)
    out = {k: average(v) for k, v in tree.items() if not (rule and k in rule.keys)}
    if rule:
      out.update(rule.average(tree))
    return out
  return _mean_over_replicas(tree)


class Replicas:
  """`step(state, batch) -> (state, logs)` on the stacked replica state, and the
  conversions between it and one TrainState (`stack`, `synchronise`)."""

  def __init__(self, config, train_step, devices=None):
    c = config.train
    devices = jax.devices() if devices is None else devices
    self.count, self.every, self.delay = c.replicas, c.exchange_every, c.exchange_delay
    if len(devices) % self.count or c.batch_size % self.count:
      raise ConfigError(f"config train.replicas = {self.count} must divide the {len(devices)} devices "
                        f"and train.batch_size = {c.batch_size}")
    if self.every < 1 or not 0 <= self.delay < self.every:
      raise ConfigError(f"config train.exchange_every must be >= 1 and 0 <= train.exchange_delay < "
                        f"exchange_every (got {self.every}, {self.delay})")
    mesh = jax.make_mesh((self.count, len(devices) // self.count), ("replica", "data"),
                         axis_types=(AxisType.Auto,) * 2, devices=devices)
    self.batch_sharding = NamedSharding(mesh, P(("replica", "data")))  # the global batch
    self.stacked = NamedSharding(mesh, P("replica"))  # replica r's copy on its device group
    self.replicated = NamedSharding(mesh, P())
    r = self.count

    def one_replica(state, batch):  # its own state (leading axis 1) and B/R images
      state = jax.tree.map(lambda x: x[0], state)
      state, logs = train_step(state, batch, jax.lax.axis_index("replica"))  # own dropout masks
      return jax.tree.map(lambda x: x[None], (state, logs))

    # Manual over `replica` only: within a replica, `data` stays automatic (SyncBN
    # over the replica's devices); across replicas nothing is communicated.
    local = jax.shard_map(one_replica, mesh=mesh, in_specs=P("replica"), out_specs=P("replica"),
                          axis_names={"replica"})

    def step(state, snapshot, batch, take, apply):
      state, logs = local(state, batch)
      if take:
        snapshot = (state.params, state.batch_stats)
      if apply:  # w_r <- w_r + mean(s) - s_r
        state = state.replace(params=exchange(state.params, snapshot[0]),
                              batch_stats=exchange(state.batch_stats, snapshot[1]))
      logs = {k: (jnp.all(v) if k == "finite" else jnp.mean(v)) for k, v in logs.items()}
      return state, (snapshot if take and not apply else None), logs

    # Three programs: plain steps, snapshot steps, exchange steps (one when D = 0).
    self._step = jax.jit(step, static_argnums=(3, 4), donate_argnums=0,
                         out_shardings=(self.stacked, self.stacked, self.replicated))
    self._stack = jax.jit(lambda s: jax.tree.map(lambda x: jnp.broadcast_to(x, (r, *x.shape)), s),
                          out_shardings=self.stacked)
    self._mean = jax.jit(lambda s: s.replace(step=s.step[0], params=average(s.params),
                                             batch_stats=average(s.batch_stats),
                                             opt_state=jax.tree.map(_mean_over_replicas, s.opt_state)),
                         out_shardings=self.replicated)
    self.snapshot = None

  def stack(self, state):
    """R identical copies of one TrainState."""
    self.snapshot = None
    return self._stack(jax.device_put(state, self.replicated))

  def step(self, state, batch, done):
    """One step of every replica; `done` counts the steps after this one (from the
    host's loop, so the schedule needs no device sync)."""
    take = done % self.every == 0
    apply = done % self.every == self.delay and (self.snapshot is not None or take)
    state, snapshot, logs = self._step(state, self.snapshot if apply else None,
                                       sharding.global_batch(batch, self.batch_sharding), take, apply)
    if take or apply:
      self.snapshot = snapshot  # None once applied
    return state, logs

  def synchronise(self, state, sharding):
    """(one TrainState placed with `sharding`, the stacked state of R equal copies):
    the exact average, taken before every evaluation and checkpoint."""
    single = jax.device_put(self._mean(state), sharding)
    return single, self.stack(single)
