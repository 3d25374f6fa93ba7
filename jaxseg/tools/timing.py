"""What both sides of a benchmark share, the synthetic batch and the timer: numpy only,
imported by the JAX side and by the PyTorch process alike."""
import time

import numpy as np


def timed(fn, iters, warmup):
  """Mean seconds of `iters` calls of `fn` (which blocks) after `warmup` calls."""
  for _ in range(warmup):
    fn()
  t = time.perf_counter()
  for _ in range(iters):
    fn()
  return (time.perf_counter() - t) / iters


def synthetic_batch(config, batch, size, seed=0):
  """Random uint8 images and labels: the same numbers on both sides for one seed."""
  rng = np.random.default_rng(seed)
  out = {"image": rng.integers(0, 256, (batch, *size, 3), dtype=np.uint8),
         "label": rng.integers(0, config.dataset.num_classes, (batch, *size), dtype=np.uint8)}
  if config.input.get("canny_edges", False):  # Gated-SCNN reads the Canny map from the batch
    out["edges"] = rng.integers(0, 2, (batch, *size), dtype=np.uint8)
  return out
