"""grain input pipelines: TFDS array_record source -> MapDataset -> per-record seeded
augmentation -> batch, sharded per host.

The training stream is an infinite MapDataset: batch i is a pure function of
(seed, i), so the iterator state is just the position, which goes into checkpoints.
"""
from __future__ import annotations

import grain
import numpy as np

from jaxseg import families
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


def train_dataset(config, source, process_index=0, process_count=1, family=None):
  """Infinite MapDataset of host-local training batches: the family's
  `train_transform` of each record (semantic: "image" uint8 (B/hosts, H, W, 3),
  "label" (B/hosts, H, W), plus "edges" with input.canny_edges), stacked.
  Reshuffled every epoch."""
  family = family or families.get(config)
  batch = config.train.batch_size
  if batch % process_count:
    raise ConfigError(f"config train.batch_size {batch} is not divisible by {process_count} hosts")
  family.check_train_input()
  ds = grain.MapDataset.source(source).map_with_index(lambda i, r: (i, r))
  ds = ds.seed(config.seed).shuffle().repeat()
  # Global batch s is records [s*B, (s+1)*B) of the stream and host p holds its p-th
  # contiguous block, so every record keeps its augmentation draw and its place in the
  # global batch (hence its dropout mask) whatever the number of hosts. MapDataset is
  # lazy: each host only reads and augments its own records.
  ds = ds.random_map(_Named(family.train_transform, config.dataset.train_split))
  ds = ds.batch(batch // process_count, drop_remainder=True)
  return ds[process_index::process_count]


def train_iterator(dataset, config):
  """An iterator over `dataset` with read threads, and worker processes if asked."""
  it = dataset.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=8))
  if config.input.num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.input.num_workers))
  return iter(it)


def eval_batches(config, source, batch_size, process_index=0, process_count=1, family=None):
  """Host-local eval batches of the family's `eval_transform` (semantic: full images,
  resized to input.eval_short_side / eval_long_side if set, padded to
  `input.eval_size`).

  Every host yields the same number of batches; missing entries are the family's
  blank example (all-ignore labels), so padding never reaches the metrics.
  """
  family = family or families.get(config)
  ds = grain.MapDataset.source(source).map_with_index(lambda i, r: (i, r))
  ds = ds[process_index::process_count].map(_Named(family.eval_transform, config.dataset.eval_split))
  per_host = -(-len(source) // process_count)
  blank = family.example(train=False)
  for start in range(0, per_host, batch_size):
    items = [ds[i] if i < len(ds) else blank for i in range(start, start + batch_size)]
    yield {k: np.stack([it[k] for it in items]) for k in blank}
