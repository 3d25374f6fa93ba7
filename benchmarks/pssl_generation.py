"""PSSL pseudo-label generation throughput: images/s per device of one ensemble member
(a ResNet-50 ImageNet classifier by default, random weights), SmoothGrad with 50
noisy copies at 224x224, the deciles included (what jaxseg.pssl.generate runs per
batch, jitted, the batch sharded over the local devices), and what it means in
device-hours for ImageNet's 1,281,167 train images, per member and for the paper's
15-member ensemble.

  python benchmarks/pssl_generation.py                          # ResNet-50, batch 8 per device, 50 samples
  python benchmarks/pssl_generation.py --batch 1 --iters 1      # a loaded CPU: one timed call
  python benchmarks/pssl_generation.py --depth 101 --size 224 --samples 50 --batch 32

The timed call is the whole explanation of a batch: 50 x (forward + input gradient)
per image, the per-model normalisation and the decile ranks. Host-side decoding and
resizing (threads, overlapped with the device in the generator) are not timed.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import sharding
from jaxseg.pssl.explain import Classifier, make_explainer
from jaxseg.tools.timing import timed

IMAGENET_TRAIN = 1_281_167
PAPER_MEMBERS = 15


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--depth", type=int, default=50)
  p.add_argument("--size", type=int, default=224)
  p.add_argument("--samples", type=int, default=50)
  p.add_argument("--batch", type=int, default=8, help="images per device")
  p.add_argument("--iters", type=int, default=3)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  args = p.parse_args()

  mesh = sharding.make_mesh()
  devices = mesh.size
  model = Classifier(depth=args.depth, num_classes=1000, dtype=jnp.dtype(args.dtype))
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, args.size, args.size, 3)))
  explain = make_explainer([model], args.samples, 0.1)
  b = args.batch * devices
  data, repl = sharding.data_sharding(mesh), sharding.replicated(mesh)
  rng = np.random.default_rng(0)
  x = jax.device_put(rng.normal(size=(b, args.size, args.size, 3)).astype(np.float32), data)
  classes = jax.device_put(rng.integers(0, 1000, b).astype(np.int32), data)
  keys = jax.device_put(jax.random.split(jax.random.key(1), b), data)
  fn = jax.jit(explain, in_shardings=(repl, data, data, data), out_shardings=data)
  start = time.perf_counter()
  jax.block_until_ready(fn([variables], x, classes, keys))
  compile_s = time.perf_counter() - start
  seconds = timed(lambda: jax.block_until_ready(fn([variables], x, classes, keys)), args.iters, warmup=0)
  per_device = b / seconds / devices
  hours = IMAGENET_TRAIN / per_device / 3600

  print(f"\nPSSL generation, one member: ResNet-{args.depth}, {args.size}x{args.size}, {args.samples} SmoothGrad "
        f"samples, {args.dtype}, {devices} x {jax.devices()[0].device_kind}")
  print(f"| batch/device | s/batch | images/s/device | device-h, 1.28M images, 1 member | "
        f"device-h, {PAPER_MEMBERS} members | first call (compile) s |")
  print("|---:|---:|---:|---:|---:|---:|")
  print(f"| {args.batch} | {seconds:.2f} | {per_device:.3f} | {hours:,.0f} | {hours * PAPER_MEMBERS:,.0f} | "
        f"{compile_s:.1f} |")


if __name__ == "__main__":
  main()
