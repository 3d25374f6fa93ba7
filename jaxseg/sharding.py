"""Mesh and shardings: one code path from one CPU to a pod.

The devices form a (`data`, `model`) mesh. The batch is sharded over `data` (and
repeated over `model`). Parameters, optimizer state and BN statistics are replicated,
unless `train.model_axis` = M > 1: then every kernel whose output-channel (last)
dimension divides by M is split over the M devices of the `model` axis, and so is its
momentum, which has the same shape. The step is the same jitted function either way;
XLA inserts the gathers and reduce-scatters the layout needs. Under `jax.jit`,
BatchNorm's mean and variance over a sharded batch are global (SyncBN) with no extra
code.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from jaxseg.errors import ConfigError


def make_mesh(devices=None, model=1):
  """A (`data`, `model`) mesh over `devices` (default: all devices of all hosts), with
  `model` devices on the model axis."""
  devices = jax.devices() if devices is None else devices
  if model < 1 or len(devices) % model:
    raise ConfigError(f"config train.model_axis = {model} must divide the {len(devices)} devices")
  return jax.make_mesh((len(devices) // model, model), ("data", "model"),
                       axis_types=(AxisType.Auto,) * 2, devices=devices)


def state_shardings(abstract_state, mesh):
  """Per leaf of a (abstract) state: split over `model` on the last axis when it is a
  kernel (ndim >= 2) whose last dimension divides by the axis size, else replicated."""
  m = mesh.shape["model"]

  def place(x):
    if m > 1 and x.ndim >= 2 and x.shape[-1] % m == 0:
      return NamedSharding(mesh, P(*(None,) * (x.ndim - 1), "model"))
    return NamedSharding(mesh, P())
  return jax.tree.map(place, abstract_state)


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
  the same number of images (the extra entries are all-ignore padding; a multiple of
  the local devices is also one of their share of the `data` axis)."""
  per_host = -(-config.eval.batch_size // jax.process_count())
  devices = jax.local_device_count()
  return -(-per_host // devices) * devices
