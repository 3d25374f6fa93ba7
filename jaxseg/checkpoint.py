"""orbax checkpoints of the training state and the data iterator position.

Layout: WORKDIR/checkpoints/<step>/{state,data}. The latest `keep` checkpoints are
kept, and the best by train.best_metric (checkpoints saved with metrics) is kept as well. Saves are
asynchronous; orbax writes to a temporary directory and renames it when complete, so
an interrupted save never replaces a good checkpoint.
"""
from __future__ import annotations

import json
import logging
import os

import ml_collections
import orbax.checkpoint as ocp

from jaxseg.config import upgrade
from jaxseg.errors import CheckpointMismatchError, NoCheckpointError, first_line


class _DropReadOnlyNotice(logging.Filter):
  """orbax warns "Given directory is read only" whenever a manager is opened read-only,
  which --mode eval and predict do on purpose: a healthy run prints no warning."""

  def filter(self, record):
    return not record.getMessage().startswith("Given directory is read only")


logging.getLogger("absl").addFilter(_DropReadOnlyNotice())


def manager(workdir, keep=3, read_only=False, metric="miou"):
  """The work dir's checkpoint manager. A writable one first names and then removes
  partially written checkpoints (left by a crash during an async save)."""
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not read_only and os.path.isdir(directory):
    for name in sorted(os.listdir(directory)):
      if not name.isdigit():
        print(f"WARNING: ignoring partially written checkpoint {os.path.join(directory, name)} "
              "(an interrupted save)", flush=True)
  policies = ocp.checkpoint_managers
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policies.AnyPreservationPolicy([
          policies.LatestN(keep),
          policies.BestN(get_metric_fn=lambda m: m.get(metric, float("-inf")), n=1,
                         keep_checkpoints_without_metrics=False),
      ]),
      enable_async_checkpointing=True,
      save_interval_steps=0 if read_only else 1,
      read_only=read_only,
      create=not read_only,
      cleanup_tmp_directories=not read_only,
  )
  return ocp.CheckpointManager(directory, options=options, item_names=("state", "data"))


def save(mngr, step, state, data_state, metrics=None):
  """`metrics` {name: value}: what the manager's best-checkpoint choice reads."""
  args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state))
  mngr.save(step, args=args, metrics=None if metrics is None else {k: float(v) for k, v in metrics.items()})


def resume_point(mngr, restore_path=None):
  """(manager, step) to resume from: the explicit `restore_path` (.../checkpoints/STEP)
  or the latest complete checkpoint of `mngr` (None: start afresh)."""
  if restore_path:
    path = os.path.abspath(restore_path.rstrip("/"))
    step = os.path.basename(path)
    if not step.isdigit() or not os.path.isdir(path):
      raise NoCheckpointError(f"--restore {restore_path}: expected a checkpoint directory "
                              "WORKDIR/checkpoints/STEP")
    return manager(os.path.dirname(os.path.dirname(path)), read_only=True), int(step)
  return mngr, mngr.latest_step()


def restore(mngr, step, abstract_state):
  """(state, data_state) of checkpoint `step`, placed as `abstract_state`'s shardings."""
  args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
  path = f"{mngr.directory}/{step}"
  try:
    restored = mngr.restore(step, args=args)
  except (ValueError, KeyError, TypeError) as e:
    if _weights_fit(f"{path}/state", abstract_state):  # only the optimizer state differs
      workdir = os.path.dirname(os.path.normpath(str(mngr.directory)))
      raise CheckpointMismatchError(
          f"checkpoint {path} holds the optimizer state of another optimizer (its parameter groups or "
          f"optim.* differ from this config's), so it cannot be resumed; start from its weights in a new "
          f"work dir with --config.model.init_from={workdir}") from e
    if "shape" in str(e).lower() or isinstance(e, KeyError):
      raise CheckpointMismatchError(f"checkpoint {path} does not match the model of this config "
                                    f"({first_line(e, 200)})") from e
    raise _unreadable(mngr, step, e) from e
  except Exception as e:  # tensorstore/OS errors of damaged files
    raise _unreadable(mngr, step, e) from e
  return restored.state, restored.data


def _weights_fit(state_path, abstract_state):
  """Whether the checkpoint at `state_path` holds the params and batch_stats (names and
  shapes) of `abstract_state`."""
  import jax
  try:
    saved = ocp.StandardCheckpointer().metadata(state_path).item_metadata
    shapes = lambda tree: {jax.tree_util.keystr(k): tuple(v.shape)
                           for k, v in jax.tree_util.tree_leaves_with_path(tree)}
    return all(shapes(saved[part]) == shapes(getattr(abstract_state, part)) for part in ("params", "batch_stats"))
  except Exception:  # no readable metadata: not a question of the optimizer
    return False


def _unreadable(mngr, step, error):
  others = [s for s in mngr.all_steps() if s != step]
  hint = (f"resume from an earlier one with --restore {mngr.directory}/{max(others)}" if others
          else "delete it to start afresh")
  return CheckpointMismatchError(f"checkpoint {mngr.directory}/{step} is unreadable "
                                 f"({type(error).__name__}: {first_line(error, 200)}); {hint}")


# Config keys that do not change what a checkpoint holds.
_SHAPE_NEUTRAL = ("model.dtype", "model.eval_output_stride", "model.bn_momentum", "model.dropout",
                  "model.attention_blocked_threshold", "model.attention_block_size", "model.align_corners",
                  "model.init_from", "model.init_from_prefix",
                  # the detector's inference: proposal counts, thresholds, detections kept
                  "model.head.rpn_pre_nms_top_n_test", "model.head.rpn_post_nms_top_n_test",
                  "model.head.score_threshold", "model.head.nms_threshold", "model.head.detections",
                  "model.head.detections_pre_nms")


def _flatten(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def check_same_model(workdir, config):
  """Raises CheckpointMismatchError if WORKDIR/config.json describes another model:
  another family, number of classes, or model key of the components in use. Each
  component (model.backbone, .neck, .head, .aux_heads) holds only its own keys, so
  the keys of heads and necks that neither config uses are never compared."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = _flatten(upgrade(ml_collections.ConfigDict(json.load(f))).to_dict())  # keys added since: defaults
  current = _flatten(upgrade(config).to_dict())
  for key in sorted(set(saved) | set(current)):
    if ((key.startswith("model.") and key not in _SHAPE_NEUTRAL) or key in ("dataset.num_classes", "family")) \
        and _plain(saved.get(key)) != _plain(current.get(key)):
      raise CheckpointMismatchError(
          f"work dir {workdir} holds a checkpoint of a different model ({key}: "
          f"{saved.get(key)!r} there, {current.get(key)!r} now); use another --workdir")


def _plain(value):
  """Tuples (a config file's) and lists (config.json's) compare alike."""
  return list(value) if isinstance(value, (tuple, list)) else value
