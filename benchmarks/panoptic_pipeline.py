"""Panoptic / instance input pipeline throughput: records per CPU-second of decoding a
COCO-panoptic-style record (640x480 JPEG image + panoptic PNG + ~40 segments) and
turning it into a training batch entry with jaxseg.data.instances.train_targets
(random scale, crop with padding, flip, photometric distortion; semantic and
panoptic maps, up to 100 instances with masks and boxes) at the crops of the papers.

  python benchmarks/panoptic_pipeline.py [--records 24] [--repeats 2]

One process, no grain workers: records per CPU-second (time.process_time), which
stays meaningful on a machine shared with other work, and the wall-clock rate beside
it. Decoding uses PIL, as the TFDS data source does; the array_record read is left out
(it is the same for every setting). Records per second with W workers is about W x
the per-CPU-second rate while cores last.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time

import cv2
import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxseg.config import base_config  # noqa: E402
from jaxseg.data import instances  # noqa: E402
from jaxseg.panoptic_quality import id_to_rgb  # noqa: E402

NUM_CLASSES, THINGS = 133, 80  # COCO panoptic
# name -> input settings (paper crops)
CASES = {
    "LSJ 1024x1024 (Mask2Former/OneFormer COCO), masks 1/4": dict(
        scale_mode="fit", scale_range=(0.1, 2.0), crop_size=(1024, 1024), instance_mask_stride=4),
    "LSJ 1024x1024, masks full size": dict(
        scale_mode="fit", scale_range=(0.1, 2.0), crop_size=(1024, 1024), instance_mask_stride=1),
    "short side 400..1200 <= 1333 (PANet), canvas 1344, masks 1/4": dict(
        scale_mode="short_side", short_side_range=(400, 1200), short_side_step=0, max_long_side=1333,
        crop_size=(1344, 1344), instance_mask_stride=4),
    "short side 256..1024 step 32 (OneFormer ADE20K), crop 512, masks 1/4": dict(
        scale_mode="short_side", short_side_range=(256, 1024), short_side_step=32, max_long_side=2048,
        crop_size=(512, 512), instance_mask_stride=4),
}


def coco_like(rng, h=480, w=640):
  """Encoded (JPEG image, panoptic PNG) and segments of a COCO-like scene: 6 stuff
  bands, 34 thing ellipses of varied sizes, a 1-px void band between segments."""
  low = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
  image = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
  ids = np.zeros((h, w), np.int64)
  segments = []
  for k, y in enumerate(np.linspace(0, h, 7).astype(int)[:-1]):
    ids[y:] = 1 + k
    segments.append((1 + k, int(rng.integers(THINGS, NUM_CLASSES)), 0))
  for k in range(34):
    mask = np.zeros((h, w), np.uint8)
    axes = (int(rng.integers(4, 120)), int(rng.integers(4, 120)))
    cv2.ellipse(mask, (int(rng.integers(0, w)), int(rng.integers(0, h))), axes, float(rng.uniform(0, 180)), 0, 360,
                1, -1)
    ids[mask > 0] = 1000 + k
    segments.append((1000 + k, int(rng.integers(0, THINGS)), int(rng.random() < 0.05)))
  edges = cv2.dilate(ids.astype(np.float32), np.ones((3, 3))) != cv2.erode(ids.astype(np.float32), np.ones((3, 3)))
  ids[edges] = 0
  present = set(np.unique(ids).tolist())
  segments = [s for s in segments if s[0] in present]

  def encode(array, fmt):
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()

  return (encode(image, "JPEG"), encode(id_to_rgb(ids), "PNG"),
          {"id": np.array([s[0] for s in segments]), "category": np.array([s[1] for s in segments]),
           "iscrowd": np.array([s[2] for s in segments])})


def run(case, encoded, repeats):
  c = base_config()
  c.dataset.num_classes = NUM_CLASSES
  c.input.update(dict(flip=True, photometric=True, cat_max_ratio=1.0, max_instances=100, **CASES[case]))
  c.input.eval_size = c.input.crop_size
  instances.check_input(c.input)
  isthing = np.arange(NUM_CLASSES) < THINGS
  wall, cpu, n, kept, dropped = time.time(), time.process_time(), 0, 0, 0
  for r in range(repeats):
    for i, (jpeg, png, segments) in enumerate(encoded):
      record = {"image": np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")),
                "panoptic": np.asarray(Image.open(io.BytesIO(png))), "segments": segments}
      out = instances.train_targets(record, np.random.default_rng([r, i]), c, isthing, "all", panoptic=True)
      n, kept, dropped = n + 1, kept + int(out["instance_valid"].sum()), dropped + int(out["count_instances_dropped"])
  return n / (time.process_time() - cpu), n / (time.time() - wall), kept / n, dropped


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--records", type=int, default=24)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  encoded = [coco_like(rng) for _ in range(args.records)]
  print(f"{args.records} COCO-like records (640x480, {np.mean([len(e[2]['id']) for e in encoded]):.1f} segments "
        f"each) x {args.repeats} passes; 100 instances max, all segments, panoptic map\n")
  print(f"{'setting':<72} {'rec/CPU-s':>10} {'rec/s':>8} {'inst/rec':>9}")
  for case in CASES:
    per_cpu, per_wall, kept, _ = run(case, encoded, args.repeats)
    print(f"{case:<72} {per_cpu:>10.1f} {per_wall:>8.1f} {kept:>9.1f}", flush=True)


if __name__ == "__main__":
  main()
