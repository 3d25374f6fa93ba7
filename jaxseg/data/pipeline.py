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


def worker_options(num_workers):
  """grain's options for `num_workers` worker processes. grain reads absl flags when it
  starts them; outside an absl program (the API, tests) they are taken as parsed, at
  their defaults."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  return grain.MultiprocessingOptions(num_workers=num_workers)


def train_iterator(dataset, config):
  """An iterator over `dataset` with read threads, and worker processes if asked."""
  it = dataset.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=8))
  if config.input.num_workers > 0:
    it = it.mp_prefetch(worker_options(config.input.num_workers))
  return iter(it)


class _EvalEntry:
  """Entry i of a host's eval stream: the family's eval_transform of its i-th record,
  or past them the blank example. A picklable object, for grain's worker processes."""

  def __init__(self, records, transform, blank):
    self.records, self.transform, self.blank = records, transform, blank

  def __call__(self, i):
    return self.transform(self.records[i]) if i < len(self.records) else self.blank

  def stack(self, entries):
    """A batch: the blank example's keys, each stacked."""
    return {k: np.stack([e[k] for e in entries]) for k in self.blank}


def eval_batches(config, source, batch_size, process_index=0, process_count=1, family=None, num_workers=None):
  """Host-local eval batches of the family's `eval_transform` (semantic: full images,
  resized to input.eval_short_side / eval_long_side if set, padded to
  `input.eval_size`), in record order.

  Every host yields the same number of batches; missing entries are the family's
  blank example (all-ignore labels), so padding never reaches the metrics. With
  `num_workers` (default input.num_workers) > 0 the records are read and transformed
  in that many grain worker processes, the order kept (each worker prepares whole
  batches, two at a time: a Cityscapes batch of 8 is 64 MB).
  """
  family = family or families.get(config)
  num_workers = config.input.num_workers if num_workers is None else num_workers
  ds = grain.MapDataset.source(source).map_with_index(lambda i, r: (i, r))
  records = ds[process_index::process_count]
  per_host = -(-len(source) // process_count)
  entry = _EvalEntry(records, _Named(family.eval_transform, config.dataset.eval_split), family.example(train=False))
  entries = grain.MapDataset.range(-(-per_host // batch_size) * batch_size).map(entry)
  batches = entries.batch(batch_size, batch_fn=entry.stack)
  if num_workers <= 0:
    for i in range(len(batches)):  # in this process, one record after the other
      yield batches[i]
    return
  it = batches.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2))
  yield from it.mp_prefetch(worker_options(num_workers))
