"""jaxseg command line.

  python -m jaxseg.main --config configs/quickstart.py --workdir runs/quick
  python -m jaxseg.main --config configs/quickstart.py --workdir runs/quick --mode eval
  python -m jaxseg.main --workdir runs/quick --mode eval      (the work dir's config.json)
  python -m jaxseg.main --config configs/quickstart.py --workdir runs/quick --mode predict \\
      --input images/ [--output runs/quick/predictions]

Config values are overridden with --config.a.b=value.
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__":
  from jaxseg import huge_pages
  huge_pages.reexec("jaxseg.main")

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and config.json.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "predict"], "What to do.")
flags.DEFINE_string("input", None, "--mode predict: folder of images.")
flags.DEFINE_string("output", None, "--mode predict: output folder (default WORKDIR/predictions).")
flags.DEFINE_string("restore", None, "Resume training from this checkpoint (WORKDIR/checkpoints/STEP) "
                    "instead of the work dir's latest.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first, with the coordinator "
                  "and process ids from the cluster (TPU pod, SLURM; see launch/README.md).")
flags.DEFINE_string("coordinator_address", None, "Explicit multi-process launch: host:port of process 0 "
                    "(implies --distributed; needs --num_processes and --process_id).")
flags.DEFINE_integer("num_processes", None, "Explicit multi-process launch: number of processes.")
flags.DEFINE_integer("process_id", None, "Explicit multi-process launch: this process, 0..num_processes-1.")


def predict_folder(config, workdir, input_dir, output_dir):
  """--mode predict: the family's prediction files for every image of `input_dir`
  (semantic: <name>.png class-id mask and <name>_overlay.png)."""
  from jaxseg import families
  from jaxseg.api import load
  from jaxseg.errors import InputDataError

  if not os.path.isdir(input_dir):
    raise InputDataError(f"--input {input_dir} is not a folder")
  families.get(config).write_predictions(load(workdir, config), input_dir, output_dir)


def start_distributed():
  """jax.distributed.initialize() when asked: from the cluster environment with
  --distributed, or from the explicit flags. Afterwards only process 0 prints."""
  explicit = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  if not FLAGS.distributed and all(v is None for v in explicit):
    return
  if not FLAGS.distributed and any(v is None for v in explicit):
    raise app.UsageError("an explicit multi-process launch needs --coordinator_address, "
                         "--num_processes and --process_id")
  import jax
  jax.distributed.initialize(*explicit)  # None: taken from the TPU/SLURM environment
  if jax.process_index() > 0:  # one progress display for the whole job; errors still reach stderr
    sys.stdout = open(os.devnull, "w")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  start_distributed()
  from jaxseg import train
  from jaxseg.config import check_keys

  config, workdir = FLAGS.config, FLAGS.workdir
  if config is None and workdir is not None and FLAGS.mode != "train":
    from jaxseg.api import workdir_config
    config = workdir_config(workdir)  # eval/predict a work dir (e.g. a converted checkpoint) as saved
  if config is None or workdir is None:
    raise app.UsageError("--config and --workdir are required")
  check_keys(config)
  if FLAGS.mode == "train":
    train.train_and_evaluate(config, workdir, restore=FLAGS.restore)
  elif FLAGS.mode == "eval":
    from jaxseg.api import evaluate
    evaluate(workdir, config)
  else:
    if not FLAGS.input:
      raise app.UsageError("--mode predict needs --input FOLDER")
    predict_folder(config, workdir, FLAGS.input, FLAGS.output or os.path.join(workdir, "predictions"))


# Exit codes besides 0 (done) and 1 (a bug: traceback).
EXIT_USER_ERROR = 2  # bad config, data or work dir: one line on stderr
EXIT_PREEMPTED = 3  # SIGTERM/SIGINT: checkpoint written, rerun to resume
EXIT_NONFINITE = 4  # non-finite loss/gradients (train.on_nonfinite)


def resolved_config(argv):
  """The --config file's config with its --config.a.b=value overrides, keys checked
  (for jaxseg.tools, which share this CLI's --config flag and `run`)."""
  from jaxseg.config import check_keys
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.config is None:
    raise app.UsageError("--config is required")
  check_keys(FLAGS.config)
  return FLAGS.config


def run(entry=None):
  """Entry point (of this CLI, or of a jaxseg.tools command given as `entry`): known
  failures become one line on stderr and a distinct exit code."""
  from jaxseg.config import check_override_keys, config_arg, load_config_file
  from jaxseg.errors import NonFiniteError, Preempted, UserError
  try:
    # A missing or raising config file, or a bad override: one line, before flag parsing.
    spec = config_arg(sys.argv[1:])
    check_override_keys(sys.argv[1:], load_config_file(spec) if spec else None)
    app.run(entry or main)
  except Preempted as e:
    print(f"jaxseg: {e}", file=sys.stderr)
    sys.exit(EXIT_PREEMPTED)
  except UserError as e:
    print(f"jaxseg: error: {e}", file=sys.stderr)
    sys.exit(EXIT_NONFINITE if isinstance(e, NonFiniteError) else EXIT_USER_ERROR)


if __name__ == "__main__":
  run()
