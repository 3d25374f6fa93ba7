"""PANet and its Mask R-CNN setting (ResNet-50-FPN, 80 classes + background) at the COCO canvas
(832 x 1344: short side 800 padded to a multiple of 64, long side <= 1333): the training
step (forward + backward + SGD update, batch 2 per device as the papers' 16 images on 8
GPUs) and inference (batch 1), by XLA's compiled analysis on this device: FLOPs (cost
analysis), temp memory and argument sizes (memory analysis), and the compile time.
With --run, inference is also executed (one warm-up, then --iters calls) per setting.

  python benchmarks/panet_step.py [--settings panet maskrcnn] [--run] [--iters 1]

The full-size model is compiled, not run, unless --run is given.
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
from jaxseg.models.backbones.resnet import ResNet  # noqa: E402
from jaxseg.models.detection.losses import detection_losses  # noqa: E402
from jaxseg.models.detection.panet import MASK_RCNN, PANet  # noqa: E402
from jaxseg.models.necks.fpn import FPN  # noqa: E402

H, W = 832, 1344
NUM_CLASSES = 80
M = 100  # ground truth padded to 100 instances
MASK_STRIDE = 4


def build(setting):
  backbone = ResNet(depth=50, stem="7x7", output_stride=32, multi_grid=())
  if setting == "maskrcnn":
    return PANet(backbone=backbone, neck=FPN(256), num_classes=NUM_CLASSES, image_size=(H, W), **MASK_RCNN)
  return PANet(backbone=backbone, neck=FPN(256, norm="gn", bottom_up=True), num_classes=NUM_CLASSES,
               image_size=(H, W), head_norm="gn")


def batch(b):
  rng = np.random.RandomState(0)
  xy = rng.uniform(0, [W - 100, H - 100], (b, M, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(8, 100, (b, M, 2))], -1).astype(np.float32)
  return {"instance_boxes": jnp.asarray(boxes),
          "instance_classes": jnp.asarray(rng.randint(0, NUM_CLASSES, (b, M)), jnp.int32),
          "instance_masks": jnp.zeros((b, M, H // MASK_STRIDE, W // MASK_STRIDE), jnp.uint8),
          "instance_valid": jnp.asarray(np.arange(M) < 20)[None].repeat(b, 0),
          "instance_iscrowd": jnp.zeros((b, M), jnp.int32)}


def analyse(fn, args):
  t = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  seconds = time.perf_counter() - t
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  mem = compiled.memory_analysis()
  gib = lambda n: n / 2**30
  return compiled, {"gflops": cost.get("flops", float("nan")) / 1e9 if cost else float("nan"),
                    "temp_gib": gib(mem.temp_size_in_bytes) if mem else float("nan"),
                    "args_gib": gib(mem.argument_size_in_bytes) if mem else float("nan"),
                    "compile_s": seconds}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--settings", nargs="+", default=["panet", "maskrcnn"])
  p.add_argument("--run", action="store_true")
  p.add_argument("--iters", type=int, default=1)
  args = p.parse_args()
  rows = []
  for setting in args.settings:
    model = build(setting)
    images2 = jnp.zeros((2, H, W, 3), jnp.float32)
    targets = batch(2)
    variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "sampling": jax.random.key(1)},
                                                  images2, targets, train=True))
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))

    def step(variables, images, targets, key):
      def loss(params):
        out, updates = model.apply({**variables, "params": params}, images, targets, train=True,
                                   rngs={"sampling": key}, mutable=["batch_stats"])
        return detection_losses(out)["loss"], updates
      (value, updates), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
      params = jax.tree.map(lambda w, g: w - 0.02 * g, variables["params"], grads)
      return value, {**variables, **updates, "params": params}

    _, train = analyse(step, (variables, images2, targets, jax.random.key(2)))
    rows.append((setting, "train step, batch 2", n_params, train, None))
    images1 = jnp.zeros((1, H, W, 3), jnp.float32)
    infer, stats = analyse(lambda v, x: model.apply(v, x), (variables, images1))
    ms = None
    if args.run:
      real = jax.jit(lambda: model.init({"params": jax.random.key(0), "sampling": jax.random.key(1)},
                                        images2, targets, train=True))()
      x = jnp.asarray(np.random.RandomState(1).randn(1, H, W, 3), jnp.float32)
      jax.block_until_ready(infer(real, x))
      t = time.perf_counter()
      for _ in range(args.iters):
        jax.block_until_ready(infer(real, x))
      ms = 1e3 * (time.perf_counter() - t) / args.iters
    rows.append((setting, "inference, batch 1", n_params, stats, ms))

  print(f"device: {jax.devices()[0].device_kind}, canvas {H}x{W}, {NUM_CLASSES} classes")
  print("| setting | program | params (M) | GFLOPs | temp (GiB) | args (GiB) | compile (s) | ms / image |")
  print("|---|---|---|---|---|---|---|---|")
  for setting, program, n, s, ms in rows:
    run = f"{ms:.0f}" if ms is not None else "-"
    print(f"| {setting} | {program} | {n / 1e6:.1f} | {s['gflops']:.0f} | {s['temp_gib']:.2f} | "
          f"{s['args_gib']:.2f} | {s['compile_s']:.0f} | {run} |")


if __name__ == "__main__":
  main()
