"""Static-shape detection ops at the COCO canvas (1344 x 800, batch 1) on this device:
the padded NMS of one RPN level (2000 pre-NMS boxes, IoU 0.7, 1000 kept), the per-class
NMS of the detections, and RoIAlign of the box head (512 RoIs, 7x7, 256 channels, one
level per RoI over P2..P5) forward and forward + backward w.r.t. the features; with the
compiled temp memory XLA reports.

  python benchmarks/detection_ops.py [--iters 5]

Milliseconds per call (mean of --iters after one warm-up).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jaxseg.models.detection import nms, pooling, roi_align  # noqa: E402

H, W = 800, 1344
STRIDES = (4, 8, 16, 32)


def timed(fn, args, iters):
  jax.block_until_ready(fn(*args))
  t = time.perf_counter()
  for _ in range(iters):
    jax.block_until_ready(fn(*args))
  return 1e3 * (time.perf_counter() - t) / iters


def temp_mib(fn, args):
  stats = fn.lower(*args).compile().memory_analysis()
  return getattr(stats, "temp_size_in_bytes", 0) / 2**20 if stats is not None else float("nan")


def random_boxes(rng, n):
  xy = rng.uniform(0, [W, H], (n, 2))
  wh = rng.uniform(8, 400, (n, 2))
  return np.concatenate([xy, np.minimum(xy + wh, [W, H])], 1).astype(np.float32)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--iters", type=int, default=5)
  args = p.parse_args()
  rng = np.random.RandomState(0)
  rows = []

  b = jnp.asarray(random_boxes(rng, 2000))
  s = jnp.asarray(rng.uniform(size=2000).astype(np.float32))
  v = jnp.ones(2000, bool)
  f = jax.jit(lambda b, s, v: nms.nms(b, s, v, 0.7, 1000))
  rows.append(("nms 2000 -> 1000, IoU 0.7", timed(f, (b, s, v), args.iters), temp_mib(f, (b, s, v))))
  c = jnp.asarray(rng.randint(0, 80, 2000))
  f = jax.jit(lambda b, s, c, v: nms.batched_nms(b, s, c, v, 0.5, 100))
  rows.append(("batched nms 2000 boxes / 80 classes -> 100", timed(f, (b, s, c, v), args.iters),
               temp_mib(f, (b, s, c, v))))

  feats = [jnp.asarray(rng.randn(1, H // st, W // st, 256).astype(np.float32)) for st in STRIDES]
  rois = jnp.asarray(random_boxes(rng, 512))
  index = jnp.zeros(512, jnp.int32)
  levels = pooling.assign_levels(rois) - 2
  scales = tuple(1.0 / st for st in STRIDES)
  fwd = jax.jit(lambda f, r, i, l: roi_align.multilevel_roi_align(f, r, i, l, 7, scales, 2, False))
  rows.append(("roi_align 512 x 7x7x256, one level each", timed(fwd, (feats, rois, index, levels), args.iters),
               temp_mib(fwd, (feats, rois, index, levels))))
  grad = jax.jit(jax.grad(lambda f, r, i, l: jnp.sum(
      roi_align.multilevel_roi_align(f, r, i, l, 7, scales, 2, False) ** 2)))
  rows.append(("  + backward w.r.t. the features", timed(grad, (feats, rois, index, levels), args.iters),
               temp_mib(grad, (feats, rois, index, levels))))
  every = jax.jit(lambda f, r, i: pooling.pool_all_levels(f, r, i, 7, scales, 2, False))
  rows.append(("roi_align 512 x 7x7x256 from all 4 levels (PANet)", timed(every, (feats, rois, index), args.iters),
               temp_mib(every, (feats, rois, index))))

  print(f"device: {jax.devices()[0].device_kind}")
  print(f"| op | ms / call | compiled temp MiB |\n|---|---|---|")
  for name, ms, mib in rows:
    print(f"| {name} | {ms:.1f} | {mib:.1f} |")


if __name__ == "__main__":
  main()
