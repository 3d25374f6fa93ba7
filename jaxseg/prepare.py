"""Prepares a dataset as TFDS array_record files.

  python -m jaxseg.prepare shapes [--data_dir DIR] [--manual_dir DIR]

Running it again reuses what is already built.
"""
from __future__ import annotations

import argparse
import sys

from jaxseg.data.datasets import default_data_dir


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m jaxseg.prepare", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name")
  parser.add_argument("--data_dir", default="", help="TFDS data dir (default: $TFDS_DATA_DIR "
                      "or ~/tensorflow_datasets)")
  parser.add_argument("--manual_dir", default="", help="folder holding the official archives")
  args = parser.parse_args(argv)

  from jaxseg.data.builders import BUILDERS  # imports tensorflow_datasets
  if args.name not in BUILDERS:
    sys.exit(f"jaxseg.prepare: no builder for dataset '{args.name}' (available: "
             f"{', '.join(sorted(BUILDERS))})")
  import tensorflow_datasets as tfds
  builder = BUILDERS[args.name](data_dir=default_data_dir(args.data_dir), file_format="array_record")
  config = tfds.download.DownloadConfig(manual_dir=args.manual_dir or None)
  builder.download_and_prepare(download_config=config)
  print(f"{args.name} {builder.version} at {builder.data_path}")
  for split, info in builder.info.splits.items():
    print(f"  {split:<12} {info.num_examples:>8} examples")


if __name__ == "__main__":
  main()
