"""A PNG grid of augmented training samples (image, label, overlay), exactly as the
training pipeline produces them, to check a config's augmentation by eye.

  python -m jaxseg.tools.browse_dataset --config configs/pspnet_ade20k.py --num 8 --out browse.png
  python -m jaxseg.tools.browse_dataset --config configs/quickstart.py --config.input.scale_range=2,2

Sample i is the i-th record of the training stream (seed config.seed): what the first
training steps see. Labels use the dataset's palette; white is the ignore label
(padding of crops smaller than the image).
"""
from __future__ import annotations

import numpy as np

from jaxseg.tools import draw


def training_samples(config, num):
  """The first `num` augmented training samples {"image", "label"} and the builder."""
  from jaxseg.data import datasets, pipeline

  builder = datasets.load(config.dataset.name, config.dataset.data_dir)
  source = pipeline.CheckedSource(datasets.source(builder, config.dataset.train_split),
                                  config.dataset.train_split, config.input.skip_bad_records)
  config = config.copy_and_resolve_references()
  config.train.batch_size = num
  return pipeline.train_dataset(config, source)[0], builder


def figure(config, num=8, columns=2):
  """(RGB grid, samples): `num` samples, `columns` samples per row, with a legend."""
  from jaxseg.data import datasets

  samples, builder = training_samples(config, num)
  k = config.dataset.num_classes
  palette = datasets.palette(k, builder)
  panels = []
  for image, label in zip(samples["image"], samples["label"]):
    colored = draw.colorize(label, palette)
    overlay = np.where((label == config.dataset.ignore_index)[..., None], image,
                       (0.5 * image + 0.5 * colored).astype(np.uint8))
    panels.append([image, colored, overlay])
  blank = [np.full_like(p, 255) for p in panels[0]]
  rows = []
  for start in range(0, num, columns):
    group = panels[start:start + columns]
    rows.append([p for sample in group + [blank] * (columns - len(group)) for p in sample])
  grid = draw.grid(rows, ["image", "label", "overlay"] * columns)
  names = datasets.class_names(builder, k)
  return draw.stack(grid, draw.legend(names, palette, grid.shape[1])), samples


def define_flags():
  from absl import flags
  flags.DEFINE_integer("num", 8, "Number of samples.")
  flags.DEFINE_integer("columns", 2, "Samples per row.")
  flags.DEFINE_string("out", "browse_dataset.png", "PNG file to write.")


def main(argv):
  from absl import flags

  from jaxseg.main import resolved_config
  f = flags.FLAGS
  config = resolved_config(argv)
  image, _ = figure(config, f.num, f.columns)
  draw.save_png(f.out, image)
  print(f"wrote {f.out} ({f.num} samples of '{config.dataset.name}' split "
        f"'{config.dataset.train_split}', {image.shape[1]}x{image.shape[0]})")


if __name__ == "__main__":
  from jaxseg.main import run
  define_flags()
  run(main)
