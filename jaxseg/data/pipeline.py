"""grain input pipelines: TFDS array_record source -> MapDataset -> per-record seeded
augmentation -> batch, sharded per host.

The training stream is an infinite MapDataset: batch i is a pure function of
(seed, i), so the iterator state is just the position, which goes into checkpoints.
"""
from __future__ import annotations

import functools

import grain
import numpy as np

from jaxseg.data import transforms
from jaxseg.errors import ConfigError, InputDataError


class CheckedSource:
  """Random access to `source` where a record that cannot be read (a corrupt file)
  raises InputDataError naming the split and the record, or, with `skip`, is
  replaced by the next readable record and counted in `skipped`."""

  def __init__(self, source, split, skip=False):
    self.source, self.split, self.skip = source, split, skip
    self.skipped = set()  # indices of unreadable records (this process only)

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    for offset in range(len(self.source)):
      i = (index + offset) % len(self.source)
      try:
        return self.source[i]
      except Exception as e:
        where = f"split '{self.split}' record {i} cannot be read ({type(e).__name__}: {e})"
        if not self.skip:
          raise InputDataError(f"{where}; set input.skip_bad_records=True to skip it") from e
        if i not in self.skipped:
          self.skipped.add(i)
          print(f"WARNING: {where}; skipped ({len(self.skipped)} so far)", flush=True)
    raise InputDataError(f"split '{self.split}': no readable record")


class _Named:
  """Wraps a transform so that a failure names the split and the record."""

  def __init__(self, fn, split):
    self.fn, self.split = fn, split

  def __call__(self, index_and_record, *rng):
    index, record = index_and_record
    name = record.get("file_name", b"")
    name = name.decode() if isinstance(name, bytes) else str(name)
    return self.fn(record, *rng, where=f"split '{self.split}' record {index} ({name})")


def train_dataset(config, source, process_index=0, process_count=1):
  """Infinite MapDataset of host-local training batches {"image", "label"}: uint8
  (B/hosts, H, W, 3) and (B/hosts, H, W), plus "edges" (B/hosts, H, W) with
  input.canny_edges. Reshuffled every epoch."""
  batch = config.train.batch_size
  if batch % process_count:
    raise ConfigError(f"config train.batch_size {batch} is not divisible by {process_count} hosts")
  transforms.check_train_input(config.input)
  fn = functools.partial(transforms.train_transform, cfg=config.input,
                         ignore_index=config.dataset.ignore_index)
  ds = grain.MapDataset.source(source).map_with_index(lambda i, r: (i, r))
  ds = ds.seed(config.seed).shuffle().repeat()
  # Global batch s is records [s*B, (s+1)*B) of the stream and host p holds its p-th
  # contiguous block, so every record keeps its augmentation draw and its place in the
  # global batch (hence its dropout mask) whatever the number of hosts. MapDataset is
  # lazy: each host only reads and augments its own records.
  ds = ds.random_map(_Named(fn, config.dataset.train_split))
  ds = ds.batch(batch // process_count, drop_remainder=True)
  return ds[process_index::process_count]


def train_iterator(dataset, config):
  """An iterator over `dataset` with read threads, and worker processes if asked."""
  it = dataset.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=8))
  if config.input.num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.input.num_workers))
  return iter(it)


def eval_batches(config, source, batch_size, process_index=0, process_count=1):
  """Host-local eval batches of full images (resized to input.eval_short_side /
  eval_long_side if set) padded to `input.eval_size`.

  Every host yields the same number of batches; missing entries are filled with
  all-ignore labels, so padding never reaches the confusion matrix.
  """
  size = tuple(config.input.eval_size)
  ignore = config.dataset.ignore_index
  canny = tuple(config.input.canny_thresholds) if config.input.get("canny_edges", False) else None
  fn = functools.partial(transforms.eval_transform, size=size, ignore_index=ignore,
                         short_side=config.input.eval_short_side,
                         long_side=config.input.eval_long_side, canny_thresholds=canny)
  ds = grain.MapDataset.source(source).map_with_index(lambda i, r: (i, r))
  ds = ds[process_index::process_count].map(_Named(fn, config.dataset.eval_split))
  per_host = -(-len(source) // process_count)
  blank = {"image": np.zeros((*size, 3), np.uint8), "label": np.full(size, ignore, np.uint8)}
  if canny is not None:
    blank["edges"] = np.zeros(size, np.uint8)
  for start in range(0, per_host, batch_size):
    items = [ds[i] if i < len(ds) else blank for i in range(start, start + batch_size)]
    yield {k: np.stack([it[k] for it in items]) for k in blank}
