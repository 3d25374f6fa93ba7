"""TensorBoard event files, written with tensorboardX (no TensorFlow).

`tensorboard --logdir WORKDIR` shows what training writes to WORKDIR/tensorboard.
Events are written synchronously, one record at a time, rather than through
tensorboardX's SummaryWriter: its background thread dies on a full disk and the
training loop would then block on its queue. Here a failed write is reported once and
training goes on.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

# tensorboardX's package __init__ imports PyTorch when it is installed (seconds of every
# start, and training must not import PyTorch); the event writer needs none of it, so
# `import torch` fails while tensorboardX loads, unless PyTorch is loaded already.
_block_torch = "torch" not in sys.modules
if _block_torch:
  sys.modules["torch"] = None
try:
  from tensorboardX import summary
  from tensorboardX.event_file_writer import EventsWriter
  from tensorboardX.proto import event_pb2, summary_pb2
finally:
  if _block_torch:
    del sys.modules["torch"]


class Writer:
  """Appends scalars and images to one event file under `logdir`. With
  `enabled=False` (every process but the first) it writes nothing. A failed write
  (disk full) is reported once and never ends training."""

  def __init__(self, logdir, enabled=True):
    self.path, self.writer, self.failed = logdir, None, False
    if not enabled:
      return
    try:
      os.makedirs(logdir, exist_ok=True)
      self.writer = EventsWriter(os.path.join(logdir, "events"), f".{os.getpid()}")
      self.path = self.writer._file_name
      self.writer.flush()
    except OSError as e:
      self._fail(e)

  def _fail(self, e):
    if not self.failed:
      print(f"WARNING: cannot write TensorBoard events to {self.path}: {e.strerror or e}", flush=True)
    self.failed, self.writer = True, None

  def _write(self, step, values):
    if self.writer is None or not values:
      return
    try:
      event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values))
      self.writer.write_event(event)
      self.writer.flush()
    except OSError as e:
      self._fail(e)

  def scalars(self, step, values: dict, prefix=""):
    """One event with a scalar per (tag, value); non-numbers are left out."""
    if self.writer is None:
      return
    self._write(step, [v for k, x in values.items()
                       if isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool)
                       for v in summary.scalar(prefix + k, float(x)).value])

  def image(self, step, tag, image):
    """`image`: uint8 (H, W, 3) RGB or (H, W) grey, stored as PNG."""
    if self.writer is None:
      return
    image = np.asarray(image, np.uint8)
    self._write(step, list(summary.image(tag, image, dataformats="HWC" if image.ndim == 3 else "HW").value))

  def close(self):
    if self.writer is not None:
      try:
        self.writer.close()
      except OSError as e:
        self._fail(e)
      self.writer = None
