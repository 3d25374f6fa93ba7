"""Training augmentation on Cityscapes-size records: images per CPU-second of the
per-record transform, resizing the whole 2048x1024 record and then cropping 512x1024
("before") against resampling only the crop window (transforms.train_transform, "after").

  python benchmarks/crop_first.py [--images 40]

Records are synthetic 2048x1024 RGB + label arrays in memory, so decoding (the same
before and after: a 2048x1024 PNG costs tens of ms) is left out; what is measured is
what the change touches. Both paths draw the same scales and crops. CPU time is the
process's own (time.process_time), so the numbers mean the same on a shared machine;
OpenCV is held to one thread, as in grain's worker processes.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg.config import base_config  # noqa: E402
from jaxseg.data import transforms  # noqa: E402

# name -> input.* settings (crop 512x1024, Cityscapes scale ranges of the configs)
SETTINGS = {
    "scale 0.5-2.0, flip": dict(scale_range=(0.5, 2.0), photometric=False),
    "scale 0.5-2.0, flip, photometric": dict(scale_range=(0.5, 2.0), photometric=True),
    "scale 0.125-1.5 (STDC), flip, photometric": dict(scale_range=(0.125, 1.5), photometric=True),
    "scale 0.5-2.0, rotate 10, blur": dict(scale_range=(0.5, 2.0), photometric=False, rotate_degrees=10.0,
                                           blur_prob=0.5),
}


def before(record, rng, cfg, ignore_index=255):
  """The whole-record path: resize (and rotate) the record, then pad + crop."""
  image, label = transforms.random_scale(record["image"], record["label"], rng, cfg.scale_range, cfg.scale_step)
  if cfg.rotate_degrees > 0 and rng.random() < cfg.rotate_prob:
    h, w = label.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), rng.uniform(-cfg.rotate_degrees, cfg.rotate_degrees), 1)
    image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=tuple(cfg.rotate_image_fill))
    label = cv2.warpAffine(label, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=ignore_index)
  image, label = transforms.random_crop(image, label, rng, tuple(cfg.crop_size), cfg.cat_max_ratio, ignore_index)
  if cfg.flip and rng.random() < 0.5:
    image, label = image[:, ::-1], label[:, ::-1]
  if cfg.blur_prob > 0 and rng.random() < cfg.blur_prob:
    image = transforms.gaussian_blur(image, rng, cfg.blur_kernel, tuple(cfg.blur_sigma))
  if cfg.photometric:
    image = transforms.photometric_distortion(image, rng)
  return {"image": np.ascontiguousarray(image), "label": np.ascontiguousarray(label)}


def records(n, rng):
  """Cityscapes-size records with smooth content and 19 classes in large regions."""
  out = []
  for _ in range(n):
    low = rng.integers(0, 255, (1024 // 16 + 1, 2048 // 16 + 1, 3), dtype=np.uint8)
    image = cv2.resize(low, (2048, 1024), interpolation=cv2.INTER_CUBIC)
    label = cv2.resize(rng.integers(0, 19, (16, 32), dtype=np.uint8), (2048, 1024), interpolation=cv2.INTER_NEAREST)
    out.append({"image": image, "label": label})
  return out


def images_per_cpu_second(fn, recs, cfg):
  fn(recs[0], np.random.default_rng(0), cfg)  # warm up
  start = time.process_time()
  for i, r in enumerate(recs):
    out = fn(r, np.random.default_rng(i), cfg)
    assert out["image"].shape == (512, 1024, 3)
  return len(recs) / (time.process_time() - start)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--images", type=int, default=40)
  args = p.parse_args()
  cv2.setNumThreads(1)
  recs = records(args.images, np.random.default_rng(0))
  print(f"{args.images} records 2048x1024 -> crops 512x1024, cat_max_ratio 0.75, one OpenCV thread\n")
  print(f"| setting | before img/CPU-s | after img/CPU-s | speed-up |\n|---|---|---|---|")
  for name, settings in SETTINGS.items():
    cfg = base_config().input
    cfg.update(dict(crop_size=(512, 1024), scale_step=0.0, flip=True, cat_max_ratio=0.75, **settings))
    old = images_per_cpu_second(before, recs, cfg)
    new = images_per_cpu_second(lambda r, rng, c: transforms.train_transform(r, rng, c, 255), recs, cfg)
    print(f"| {name} | {old:.1f} | {new:.1f} | {new / old:.2f}x |", flush=True)


if __name__ == "__main__":
  main()
