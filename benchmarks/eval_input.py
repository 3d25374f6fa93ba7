"""Evaluation input throughput on Cityscapes-size records: records/s of
pipeline.eval_batches (read, decode, eval_transform, batch) in the main process
(input.num_workers=0, the way evaluation read its records before) against grain
worker processes (input.num_workers=N).

  python benchmarks/eval_input.py [--records 48] [--batch 8] [--workers 2,4]

Records are synthetic 2048x1024 RGB images and 19-class label maps, held as PNG bytes
and decoded on every read (cv2.imdecode), as the array_record source decodes its
stored PNGs; the transform is deeplabv3_cityscapes's (full image, padded to
1024x2048). Wall-clock records/s from the first batch to the last (the steady
state of a long split) and the time to the first batch (the workers' start-up);
both depend on the cores the machine has free: the table prints them.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxseg.config import load_config_file  # noqa: E402
from jaxseg.data import pipeline  # noqa: E402


class PngSource:
  """Random access to records stored as PNG bytes, decoded when read."""

  def __init__(self, images, labels):
    self.images, self.labels = images, labels

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    image = cv2.cvtColor(cv2.imdecode(self.images[i], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    label = cv2.imdecode(self.labels[i], cv2.IMREAD_UNCHANGED)
    return {"image": image, "label": label[..., None], "file_name": f"synthetic_{i:04d}.png".encode()}


def png_source(n, rng):
  """`n` Cityscapes-size records: smooth image content, 19 classes in large regions."""
  low = rng.integers(0, 255, (1024 // 16 + 1, 2048 // 16 + 1, 3), dtype=np.uint8)
  images, labels = [], []
  for i in range(n):
    noise = rng.integers(0, 8, (1024, 2048, 3), dtype=np.uint8)  # texture, so PNG does not squash it
    image = cv2.resize(np.roll(low, i, axis=1), (2048, 1024), interpolation=cv2.INTER_CUBIC) + noise
    label = cv2.resize(rng.integers(0, 19, (16, 32), dtype=np.uint8), (2048, 1024), interpolation=cv2.INTER_NEAREST)
    images.append(cv2.imencode(".png", image)[1])
    labels.append(cv2.imencode(".png", label)[1])
  return PngSource(images, labels)


def measure(config, source, batch, workers):
  """(records/s after the first batch, seconds to the first batch) over the split."""
  start = time.time()
  first = None
  for b in pipeline.eval_batches(config, source, batch, num_workers=workers):
    assert b["image"].shape == (batch, 1024, 2048, 3)
    if first is None:
      first = time.time()
  return (len(source) - batch) / (time.time() - first), first - start


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--records", type=int, default=48)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--workers", default="2,4")
  args = p.parse_args()
  config = load_config_file(os.path.join(ROOT, "configs", "deeplabv3_cityscapes.py"))
  source = png_source(args.records, np.random.default_rng(0))
  mb = sum(x.nbytes for x in source.images + source.labels) / len(source) / 2**20
  print(f"{args.records} records of 2048x1024 ({mb:.1f} MB of PNG each), eval batch {args.batch}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
  print("| input.num_workers | records/s (after the first batch) | x main process | first batch (s) |")
  print("|---|---|---|---|")
  base, first = measure(config, source, args.batch, 0)
  print(f"| 0 (main process) | {base:.2f} | 1.00 | {first:.1f} |", flush=True)
  for w in (int(x) for x in args.workers.split(",")):
    rate, first = measure(config, source, args.batch, w)
    print(f"| {w} | {rate:.2f} | {rate / base:.2f} | {first:.1f} |", flush=True)


if __name__ == "__main__":
  main()
