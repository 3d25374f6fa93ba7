"""Memory and time of OneFormer's training losses with their gradient (matching, class CE,
point-sampled BCE and dice on every decoder layer, contrastive) per device, at the paper's
sizes: 512 crop (mask logits and ground truth at 1/4: 128 x 128), N = 150 queries, K = 150
classes (ADE20K), 12,544 points, 10 prediction layers; M ground-truth slots varied.

  python benchmarks/oneformer_losses.py [--batch 2] [--slots 50,100,150] [--run]

Without --run it compiles only (XLA's memory analysis of this host's backend); --run also
times steps on random inputs (a CPU here is slow at the 3 x 12,544-candidate top-k).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxseg.models.heads.oneformer import losses as L  # noqa: E402


def inputs(b, n, k, m, size, layers, d, seed=0):
  rng = np.random.RandomState(seed)
  out = [{"class_logits": rng.randn(b, n, k + 1).astype(np.float32),
          "mask_logits": (3 * rng.randn(b, size, size, n)).astype(np.float32)} for _ in range(layers)]
  queries, text = rng.randn(2, b, n, d).astype(np.float32)
  targets = {"instance_classes": rng.randint(0, k, (b, m)).astype(np.int32),
             "instance_masks": (rng.rand(b, m, size, size) < 0.2).astype(np.uint8),
             "instance_valid": np.arange(m)[None] < np.full((b, 1), m * 3 // 4)}
  return out, queries, text, targets


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch", type=int, default=2, help="images per device")
  p.add_argument("--slots", default="50,100,150")
  p.add_argument("--queries", type=int, default=150)
  p.add_argument("--classes", type=int, default=150)
  p.add_argument("--size", type=int, default=128, help="mask side at 1/4 of the crop")
  p.add_argument("--layers", type=int, default=10)
  p.add_argument("--points", type=int, default=12544)
  p.add_argument("--run", action="store_true")
  args = p.parse_args()
  print(f"batch {args.batch}, N {args.queries}, K {args.classes}, masks {args.size}^2, {args.layers} layers, "
        f"P {args.points}, backend {jax.default_backend()}")
  print("| M slots | temp GiB | compile s | step s |")
  print("|---|---|---|---|")
  for m in (int(x) for x in args.slots.split(",")):
    layers, queries, text, targets = inputs(args.batch, args.queries, args.classes, m, args.size, args.layers, 256)

    def loss(layers, queries, text, scale, targets, key):
      outputs = {**layers[0], "aux": layers[1:], "queries": queries}
      return L.total(L.oneformer_losses(outputs, targets, key, text, scale, num_classes=args.classes,
                                        num_points=args.points))
    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))
    a = (layers, queries, text, L.initial_logit_scale(), targets, jax.random.key(0))
    start = time.time()
    compiled = step.lower(*a).compile()
    compile_s = time.time() - start
    temp = compiled.memory_analysis().temp_size_in_bytes / 2**30
    step_s = "-"
    if args.run:
      jax.block_until_ready(compiled(*a))
      start = time.time()
      jax.block_until_ready(compiled(*a))
      step_s = f"{time.time() - start:.2f}"
    print(f"| {m} | {temp:.2f} | {compile_s:.0f} | {step_s} |", flush=True)


if __name__ == "__main__":
  main()
