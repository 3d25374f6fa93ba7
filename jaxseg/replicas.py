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
  are exchanged like parameters. An MCIBI memory row is averaged over the replicas
  that have seen its class, since the others hold zeros there (`exchange`).
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


def _mean_over_replicas(x):
  """Average of the float leaves over the leading replica axis; counters are equal."""
  return jnp.mean(x, axis=0) if jnp.issubdtype(x.dtype, jnp.floating) else x[0]


_MCIBI_MEMORY = {"memory", "seen"}  # the MCIBI head's batch_stats entries merged together


def _memory_mean(memory, seen):
  """MCIBI's class memory (R, K, C) with its (R, K) flags: a row is the mean over the
  replicas that have seen its class (a replica that has not holds zeros there, which
  must not pull the row towards 0); seen by any replica."""
  count = jnp.sum(seen, axis=0)
  mean = jnp.sum(jnp.where(seen[..., None], memory, 0.0), axis=0) / jnp.maximum(count, 1)[:, None]
  return mean[None], (count > 0)[None]


def exchange(current, snapshot):
  """w_r <- w_r + mean(s) - s_r on stacked trees (leading replica axis). Counters
  (MCIBI's step) are equal in every replica and stay. MCIBI's memory rows follow the
  same rule where replica r had seen the class at the snapshot; where it had not, it
  keeps a row it has filled since, or adopts the others' mean."""
  if isinstance(current, dict):
    memory = _MCIBI_MEMORY <= current.keys()
    out = {k: exchange(current[k], snapshot[k]) for k in current if not (memory and k in _MCIBI_MEMORY)}
    if memory:
      (w, w_seen), (s, s_seen) = (current["memory"], current["seen"]), (snapshot["memory"], snapshot["seen"])
      mean, any_seen = _memory_mean(s, s_seen)
      out["memory"] = jnp.where(s_seen[..., None], w + mean - s, jnp.where(w_seen[..., None], w, mean))
      out["seen"] = w_seen | any_seen
    return out
  if jnp.issubdtype(current.dtype, jnp.floating):
    return current + jnp.mean(snapshot, axis=0, keepdims=True) - snapshot
  return current


def average(tree):
  """One tree from the stacked one: float leaves averaged, counters taken from replica
  0, MCIBI's memory averaged over the replicas that have seen each class."""
  if isinstance(tree, dict):
    memory = _MCIBI_MEMORY <= tree.keys()
    out = {k: average(v) for k, v in tree.items() if not (memory and k in _MCIBI_MEMORY)}
    if memory:
      memory, seen = _memory_mean(tree["memory"], tree["seen"])
      out.update(memory=memory[0], seen=seen[0])
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
