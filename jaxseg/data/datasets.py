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
SELF_PREPARING = ("shapes", "shapes_panoptic", "shapes_classification")

# What `python -m jaxseg.prepare NAME --manual_dir DIR` needs in DIR: per dataset (or
# NAME/CONFIG), each official archive as (file name, a path inside it (or a tuple of
# alternatives), where it is obtained). An archive may also be given extracted, in DIR
# or in DIR/<its name without extension>: the path inside marks the extracted folder.
_VOC = "http://host.robots.ox.ac.uk/pascal/VOC/"
_CITYSCAPES = "https://www.cityscapes-dataset.com/downloads/ (free registration)"
_COCO = "http://images.cocodataset.org/"
_IMAGENET = "https://image-net.org/download-images.php (registration), ILSVRC 2012"
ARCHIVES = {
    "voc_aug": (
        ("VOCtrainval_11-May-2012.tar", "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt",
         _VOC + "voc2012/VOCtrainval_11-May-2012.tar"),
        ("benchmark.tgz", "benchmark_RELEASE/dataset/train.txt",
         "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/"
         "benchmark.tgz (SBD)"),
    ),
    "cityscapes/fine": (
        ("leftImg8bit_trainvaltest.zip", "leftImg8bit/val", _CITYSCAPES),
        ("gtFine_trainvaltest.zip", "gtFine/val", _CITYSCAPES),
    ),
    "cityscapes/coarse": (
        ("leftImg8bit_trainvaltest.zip", "leftImg8bit/val", _CITYSCAPES),
        ("leftImg8bit_trainextra.zip", "leftImg8bit/train_extra", _CITYSCAPES),
        ("gtCoarse.zip", "gtCoarse/val", _CITYSCAPES),
    ),
    "ade20k": (
        ("ADEChallengeData2016.zip", "ADEChallengeData2016/annotations/validation",
         "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip (SceneParsing)"),
    ),
    "ade20k_panoptic": (
        ("ADEChallengeData2016.zip", "ADEChallengeData2016/annotations/validation",
         "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip (SceneParsing)"),
        ("annotations_instance.tar", "annotations_instance/validation",
         "http://sceneparsing.csail.mit.edu/data/ChallengeData2017/annotations_instance.tar (the 2017 Places "
         "Challenge instance annotations)"),
    ),
    "pascal_context": (
        ("VOCtrainval_03-May-2010.tar", "VOCdevkit/VOC2010/ImageSets/Main/train.txt",
         _VOC + "voc2010/VOCtrainval_03-May-2010.tar"),
        ("trainval.tar.gz", "trainval", "https://cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz"),
    ),
    "coco_panoptic": (
        ("train2017.zip", "train2017", _COCO + "zips/train2017.zip"),
        ("val2017.zip", "val2017", _COCO + "zips/val2017.zip"),
        ("panoptic_annotations_trainval2017.zip", "annotations/panoptic_val2017.json",
         _COCO + "annotations/panoptic_annotations_trainval2017.zip"),
        ("annotations_trainval2017.zip", "annotations/instances_val2017.json",
         _COCO + "annotations/annotations_trainval2017.zip"),
    ),
    "imagenet_pssl": (
        ("ILSVRC2012_img_train.tar", ("n01440764.tar", "n01440764"), _IMAGENET),
        ("ILSVRC2012_img_val.tar", "ILSVRC2012_val_00000001.JPEG", _IMAGENET),
        ("ILSVRC2012_devkit_t12.tar.gz", "ILSVRC2012_devkit_t12/data/meta.mat", _IMAGENET),
    ),
}
ARCHIVES["imagenet_pssl/released"] = (
    *ARCHIVES["imagenet_pssl"][::2],  # the train images and the devkit (the class order)
    ("pssl2.1_consensus.tar", "train.txt",
     "PaddleSeg's PSSL labels, on request from paddleseg@baidu.com (see configs/pssl/README.md of PaddleSeg)"),
)
ARCHIVES["imagenet_pssl/classes"] = ARCHIVES["imagenet_pssl"]
ARCHIVES["pascal_context/59"] = ARCHIVES["pascal_context/60"] = ARCHIVES["pascal_context"]
ARCHIVES["cityscapes"] = ARCHIVES["cityscapes/panoptic"] = ARCHIVES["cityscapes/fine"]
# The builder config a bare NAME stands for.
DEFAULT_CONFIG = {"cityscapes": "fine", "pascal_context": "59", "imagenet_pssl": "classes"}


def archives_needed(name: str, one_line=False) -> str:
  """The archives `name` needs, each with where it is obtained: one per line, or all
  on one line."""
  entries = ARCHIVES.get(name, ())
  if one_line:
    return "; ".join(f"{file} from {where}" for file, _, where in entries)
  return "\n".join(f"  {file:<40} from {where}" for file, _, where in entries)


def default_data_dir(data_dir: str = "") -> str:
  return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


def prepared_dir(name: str, data_dir: str = ""):
  """The newest prepared version of `name` (NAME or NAME/CONFIG; a bare NAME of a
  dataset with configs is its DEFAULT_CONFIG) under the TFDS data dir, or None."""
  base, _, config = name.partition("/")
  folder = f"{base}/{config or DEFAULT_CONFIG[base]}" if base in DEFAULT_CONFIG else name
  root = Path(default_data_dir(data_dir)) / folder
  versions = [p for p in root.glob("*.*.*") if (p / "dataset_info.json").exists()]
  return max(versions, key=lambda p: tuple(int(v) for v in p.name.split("."))) if versions else None


def dataset_dir(name: str, data_dir: str = "") -> Path:
  """prepared_dir(name, data_dir), which must exist.

  `shapes` is prepared on first use, in a subprocess so that TensorFlow (which TFDS
  needs to build) never enters the training process. Any other missing dataset is a
  DatasetNotFoundError naming the dataset and the command that prepares it.
  """
  root = Path(default_data_dir(data_dir))
  newest = lambda: prepared_dir(name, data_dir)
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
    needed = (f", DIR holding (as downloaded, or extracted) {archives_needed(name, one_line=True)}"
              if name in ARCHIVES else "")
    raise DatasetNotFoundError(
        f"dataset '{name}' is not prepared under {root}; prepare it with: "
        f"python -m jaxseg.prepare {name} --manual_dir DIR --data_dir {root}{needed}")
  return found


def load(name: str, data_dir: str = ""):
  """A TFDS builder read from its prepared directory (no builder class, no TensorFlow)."""
  import tensorflow_datasets as tfds
  return tfds.builder_from_directory(str(dataset_dir(name, data_dir)))


def source(builder, split: str):
  """A random-access source of {"image", "label", "file_name"} records of `split`: a
  split name, or a TFDS slice of one ("train[:5%]", "train[:60]")."""
  if split.partition("[")[0] not in builder.info.splits:
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
