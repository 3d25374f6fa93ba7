"""Mesh and shardings: one code path from one CPU to a pod.

The batch is sharded over the `data` axis of a mesh of all devices; parameters,
optimizer state and BN statistics are replicated. Under `jax.jit`, BatchNorm's mean
and variance over a sharded batch are global (SyncBN) with no extra code.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P


def make_mesh(devices=None):
  """A 1-D mesh with axis `data` over `devices` (default: all devices of all hosts)."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)


def data_sharding(mesh):
  return NamedSharding(mesh, P("data"))


def replicated(mesh):
  return NamedSharding(mesh, P())


def global_batch(local_batch, sharding):
  """Global arrays from this host's slice of the batch (multi-host safe)."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      local_batch)


def eval_batch_size(config):
  """Per-host eval batch: eval.batch_size rounded up so that every local device gets
  the same number of images (the extra entries are all-ignore padding)."""
  per_host = -(-config.eval.batch_size // jax.process_count())
  devices = jax.local_device_count()
  return -(-per_host // devices) * devices
