"""config model.init_from: start training from converted (or any jaxseg) weights.

The fresh TrainState at step 0 gets every variable of the checkpoint that lies under
model.init_from_prefix ("backbone", "backbone,decode_head/aspp", ...; "" = all) and exists in
the model with the same shape; the rest keeps its initialisation. Every key is
reported: loaded, skipped (checkpoint keys outside the prefix or not in the model) or
missing (model keys under the prefix that the checkpoint lacks). A classifier (a
module named "classifier") for another number of classes is skipped and reported: a
model pretrained on PSSL's 1001 classes fine-tunes on VOC's 21 with everything else
loaded. Any other shape disagreement is an error naming the key and both shapes.
"""
from __future__ import annotations

import json
import os

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxseg.errors import CheckpointMismatchError, ConfigError, first_line


def checkpoint_dir(path):
  """The state directory of `path`: a converted dir or work dir (its latest
  checkpoint), or one checkpoint WORKDIR/checkpoints/STEP."""
  path = os.path.abspath(path.rstrip("/"))
  if os.path.basename(path).isdigit() and os.path.isdir(os.path.join(path, "state")):
    return os.path.join(path, "state")
  ckpts = os.path.join(path, "checkpoints")
  steps = sorted(int(n) for n in os.listdir(ckpts) if n.isdigit()) if os.path.isdir(ckpts) else []
  if not steps:
    raise ConfigError(f"config key model.init_from: {path} holds no checkpoint (expected the "
                      "--output of python -m jaxseg.convert, a work dir, or WORKDIR/checkpoints/STEP)")
  return os.path.join(ckpts, str(steps[-1]), "state")


def read_variables(path, process_local=False):
  """{"params": tree, "batch_stats": tree} of numpy arrays from checkpoint `path`;
  `process_local`: read by this process alone, with no collective (every host of a
  multi-host job reading the same small checkpoint on its own schedule)."""
  state_dir = checkpoint_dir(path)
  options = {}
  if process_local:
    me = jax.process_index()
    options["multiprocessing_options"] = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
  try:
    checkpointer = ocp.StandardCheckpointer(**options)
    if process_local:  # restored as numpy: the saved device layout need not exist on this host
      tree = checkpointer.metadata(state_dir).item_metadata.tree
      restored = checkpointer.restore(state_dir, jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), tree))
    else:
      restored = checkpointer.restore(state_dir)
  except Exception as e:
    raise CheckpointMismatchError(f"config key model.init_from: cannot read {state_dir} "
                                  f"({first_line(e, 200)})") from e
  return {c: jax.tree.map(np.asarray, restored.get(c, {})) for c in ("params", "batch_stats")}


def _in_scope(key, prefixes):
  module = key.split("/", 1)[1]  # without the collection
  return not prefixes or any(module == p or module.startswith(p + "/") for p in prefixes)


def _other_classes(key, shape, model_shape):
  """Whether `key` is a classifier's kernel or bias that differs from the model's in
  its number of classes (the last axis) alone."""
  parts = key.split("/")
  return (len(parts) >= 3 and parts[-2] == "classifier" and len(shape) == len(model_shape)
          and tuple(shape[:-1]) == tuple(model_shape[:-1]))


def merge(variables, source, prefix=""):
  """(new variables, report): `variables` ({"params", "batch_stats"} trees of the model)
  with the leaves of `source` under `prefix` put in."""
  prefix = ",".join(p.strip().replace(".", "/").strip("/") for p in prefix.split(",") if p.strip())
  prefixes = prefix.split(",") if prefix else []
  dst = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables), sep="/")
  src = flax.traverse_util.flatten_dict(flax.core.unfreeze(source), sep="/")
  report = {"loaded": [], "skipped": [], "missing": []}
  new = dict(dst)
  for key, value in sorted(src.items()):
    if not _in_scope(key, prefixes):
      report["skipped"].append(f"{key} (outside init_from_prefix '{prefix}')")
    elif key not in dst:
      report["skipped"].append(f"{key} (not in this model)")
    elif tuple(value.shape) != tuple(dst[key].shape) and _other_classes(key, value.shape, dst[key].shape):
      report["skipped"].append(f"{key} (classifier for {value.shape[-1]} classes, the model has "
                               f"{dst[key].shape[-1]}: kept at initialisation)")
    elif tuple(value.shape) != tuple(dst[key].shape):
      raise CheckpointMismatchError(f"config key model.init_from: {key} has shape {tuple(value.shape)} "
                                    f"in the checkpoint and {tuple(dst[key].shape)} in the model")
    else:
      new[key] = jax.device_put(np.asarray(value, dst[key].dtype), dst[key].sharding)
      report["loaded"].append(key)
  report["missing"] = sorted(k for k in dst if _in_scope(k, prefixes) and k not in src)
  if not report["loaded"]:
    raise ConfigError(f"config key model.init_from: no variable of the checkpoint matches the model "
                      f"under init_from_prefix '{prefix}' (checkpoint keys look like "
                      f"{next(iter(sorted(src)), 'nothing')})")
  return flax.traverse_util.unflatten_dict(new, sep="/"), report


def init_from(state, config, workdir=None):
  """The TrainState `state` with the weights of config.model.init_from; prints the
  report and writes it to WORKDIR/init_from.json."""
  path, prefix = config.model.init_from, config.model.init_from_prefix
  variables, report = merge({"params": state.params, "batch_stats": state.batch_stats},
                            read_variables(path), prefix)
  print(f"init_from {path} (prefix '{prefix}'): loaded {len(report['loaded'])}, skipped "
        f"{len(report['skipped'])}, missing {len(report['missing'])} (kept at initialisation)", flush=True)
  for kind in ("skipped", "missing"):
    for key in report[kind]:
      print(f"  {kind}: {key}", flush=True)
  if workdir is not None and jax.process_index() == 0:
    with open(os.path.join(workdir, "init_from.json"), "w") as f:
      json.dump({"init_from": path, "prefix": prefix, **report}, f, indent=1)
  return state.replace(params=variables["params"], batch_stats=variables.get("batch_stats", {}))
