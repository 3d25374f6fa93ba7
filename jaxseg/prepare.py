"""Prepares a dataset as TFDS array_record files.

  python -m jaxseg.prepare NAME[/CONFIG] --manual_dir DIR [--data_dir DIR] [--skip_bad_examples]

NAME is shapes, shapes_panoptic or shapes_classification (synthetic, need no archives),
voc_aug, cityscapes (configs fine, coarse, panoptic), ade20k, ade20k_panoptic, pascal_context (configs 59,
60), coco_panoptic or imagenet_pssl.
DIR holds the official archives, as downloaded or extracted (see README, "Datasets").
Every image and label is checked on the way in: a bad one stops the preparation with
an error naming its file, or with --skip_bad_examples is left out and listed in
skipped_examples.txt beside the prepared dataset. Running it again reuses what is
already built.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jaxseg.data.datasets import ARCHIVES, DEFAULT_CONFIG, default_data_dir, prepared_dir
from jaxseg.errors import UserError


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m jaxseg.prepare", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name", help="dataset, or dataset/config (e.g. pascal_context/60)")
  parser.add_argument("--data_dir", default="", help="TFDS data dir (default: $TFDS_DATA_DIR "
                      "or ~/tensorflow_datasets)")
  parser.add_argument("--manual_dir", default="", help="folder holding the official archives")
  parser.add_argument("--skip_bad_examples", action="store_true",
                      help="leave out (and list) unreadable or inconsistent examples instead of failing")
  args = parser.parse_args(argv)
  try:
    prepare(args.name, args.data_dir, args.manual_dir, args.skip_bad_examples)
  except UserError as e:  # one message naming the file, dataset or config at fault
    print(f"jaxseg.prepare: error: {e}", file=sys.stderr)
    sys.exit(2)


def prepare(name, data_dir="", manual_dir="", skip_bad_examples=False):
  """Builds `name` (NAME or NAME/CONFIG) under the TFDS data dir; returns the builder."""
  from jaxseg.data.builders import BUILDERS  # imports tensorflow_datasets
  base, _, config = name.partition("/")
  if base not in BUILDERS:
    raise UserError(f"no builder for dataset '{base}' (available: {', '.join(sorted(BUILDERS))})")
  config = config or DEFAULT_CONFIG.get(base)
  configs = [c.name for c in BUILDERS[base].BUILDER_CONFIGS]
  if config and config not in configs:
    raise UserError(f"dataset '{base}' has no config '{config}' (configs: {', '.join(configs)})")
  key = f"{base}/{config}" if config else base
  if key in ARCHIVES and prepared_dir(key, data_dir) is None:
    from jaxseg.data.builders.common import locate
    locate(key, manual_dir)  # fails before any work if an archive is missing
  import tensorflow_datasets as tfds
  builder = BUILDERS[base](data_dir=default_data_dir(data_dir), file_format="array_record",
                           **({"config": config} if config else {}))
  if builder.is_prepared():
    print(f"{key} is already prepared; reusing it.")
  else:
    builder.skip_bad_examples = skip_bad_examples
    # Built from the user's archives only: never TFDS's pre-built copies of similarly
    # named datasets (other labels, other splits).
    download = tfds.download.DownloadConfig(manual_dir=manual_dir or None, try_download_gcs=False)
    start = time.time()
    builder.download_and_prepare(download_config=download)
    print(f"Prepared in {time.time() - start:.0f}s.")
    report(builder)
  print(f"{key} {builder.version} at {builder.data_path}")
  for split, info in builder.info.splits.items():
    print(f"  {split:<12} {info.num_examples:>8} examples")
  return builder


def report(builder):
  """Writes the examples left out by --skip_bad_examples next to the dataset and
  summarises them on stdout."""
  skipped = getattr(builder, "skipped", [])
  if not skipped:
    return
  path = Path(str(builder.data_path)) / "skipped_examples.txt"
  path.write_text("".join(f"{split}\t{message}\n" for split, message in skipped))
  print(f"Skipped {len(skipped)} bad example(s), listed in {path}:")
  for split, message in skipped[:10]:
    print(f"  [{split}] {message}")
  if len(skipped) > 10:
    print(f"  ... and {len(skipped) - 10} more")


if __name__ == "__main__":
  main()
