"""Finding prepared TFDS datasets and reading them without TensorFlow."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from jaxseg.errors import ConfigError, DatasetNotFoundError

# Datasets jaxseg can generate itself; others need the official archives.
SELF_PREPARING = ("shapes",)


def default_data_dir(data_dir: str = "") -> str:
  return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


def dataset_dir(name: str, data_dir: str = "") -> Path:
  """The newest prepared version of `name` under the TFDS data dir.

  `shapes` is prepared on first use, in a subprocess so that TensorFlow (which TFDS
  needs to build) never enters the training process. Any other missing dataset is a
  DatasetNotFoundError naming the dataset and the command that prepares it.
  """
  root = Path(default_data_dir(data_dir))

  def newest():
    versions = [p for p in (root / name).glob("*.*.*") if (p / "dataset_info.json").exists()]
    return max(versions, key=lambda p: tuple(int(v) for v in p.name.split("."))) if versions else None

  found = newest()
  if found is None and name in SELF_PREPARING:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as lock:  # one preparer at a time
      fcntl.flock(lock, fcntl.LOCK_EX)
      found = newest()
      if found is None:
        print(f"Preparing dataset '{name}' under {root} (first use) ...", flush=True)
        subprocess.run([sys.executable, "-m", "jaxseg.prepare", name, "--data_dir", str(root)],
                       check=True)
        found = newest()
  if found is None:
    raise DatasetNotFoundError(
        f"dataset '{name}' is not prepared under {root}; prepare it with: "
        f"python -m jaxseg.prepare {name} --manual_dir DIR_WITH_THE_OFFICIAL_ARCHIVES "
        f"--data_dir {root}")
  return found


def load(name: str, data_dir: str = ""):
  """A TFDS builder read from its prepared directory (no builder class, no TensorFlow)."""
  import tensorflow_datasets as tfds
  return tfds.builder_from_directory(str(dataset_dir(name, data_dir)))


def source(builder, split: str):
  """A random-access source of {"image", "label", "file_name"} records of `split`."""
  if split not in builder.info.splits:
    raise ConfigError(f"config key dataset.*_split: dataset '{builder.name}' has no split '{split}' "
                   f"(splits: {', '.join(builder.info.splits)})")
  return builder.as_data_source(split)


def class_names(builder, num_classes: int):
  names = list(builder.info.metadata.get("classes", [])) if builder.info.metadata else []
  return names if len(names) == num_classes else [str(i) for i in range(num_classes)]


def palette(num_classes: int, builder=None):
  """(256, 3) uint8 colours: the dataset's palette where it has one, fixed random
  colours for other classes, white for 255 (ignore)."""
  colors = np.zeros((256, 3), np.uint8)
  colors[:num_classes] = np.random.default_rng(0).integers(0, 256, (num_classes, 3))
  meta = (builder.info.metadata or {}) if builder is not None else {}
  given = np.asarray(meta.get("palette", []), np.uint8).reshape(-1, 3)[:255]
  colors[:len(given)] = given
  colors[255] = 255
  return colors
