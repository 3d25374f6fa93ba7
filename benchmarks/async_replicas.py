"""Asynchronous replicas vs synchronous training at equal total images (DeepLabv3 App. B).

Trains configs/quickstart.py:tiny on `shapes` once synchronously and once with each
replica count, every run on the same number of images, on CPU devices simulated with
XLA_FLAGS, and prints final mIoU and time per image:

  python benchmarks/async_replicas.py [--steps 2000] [--batch 16] [--seeds 0 1] [--replicas 2 4] [--scale_batch]

The runs are `python -m jaxseg.main` subprocesses; their work dirs stay under --root.
On one CPU the simulated devices share the same cores, so the time per image shows
the cost of the replica machinery, not the wall-time gain of a cluster whose
replicas stop waiting for each other.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(workdir, devices, steps, batch, crop, replicas, every, delay, seed):
  shutil.rmtree(workdir, ignore_errors=True)
  args = [sys.executable, "-m", "jaxseg.main", "--config", "configs/quickstart.py:tiny", "--workdir", workdir,
          f"--config.train.steps={steps}", f"--config.train.batch_size={batch}", f"--config.train.eval_every={steps}",
          f"--config.train.ckpt_every={steps}", f"--config.train.log_every={max(steps // 10, 1)}",
          f"--config.input.crop_size=({crop},{crop})", f"--config.train.replicas={replicas}",
          f"--config.train.exchange_every={every}", f"--config.train.exchange_delay={delay}", f"--config.seed={seed}"]
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  start = time.time()
  result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
  if result.returncode:
    sys.exit(f"run {workdir} failed:\n{result.stderr[-3000:]}")
  wall = time.time() - start
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    miou = json.loads(f.readlines()[-1])["miou"]
  with open(os.path.join(workdir, "train_log.jsonl")) as f:
    rates = [json.loads(line)["images_per_sec"] for line in f][1:]  # the first includes warm-up
  return miou, wall, sum(rates) / max(len(rates), 1)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--batch", type=int, default=16, help="the synchronous run's batch")
  p.add_argument("--crop", type=int, default=96)
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
  p.add_argument("--devices", type=int, default=4)
  p.add_argument("--replicas", type=int, nargs="+", default=[2, 4])
  p.add_argument("--exchange_every", type=int, default=4)
  p.add_argument("--exchange_delay", type=int, default=1)
  p.add_argument("--root", default="/tmp/jaxseg_async_replicas")
  p.add_argument("--scale_batch", action="store_true",
                 help="every replica gets the synchronous run's batch B (global batch B*R) for steps/R "
                      "steps, as the paper's replicas each had a whole batch; default: the replicas "
                      "split the global batch B and run all the steps")
  args = p.parse_args()
  rows = [("sync", 1)] + [(f"async x{r}", r) for r in args.replicas]
  b = args.batch
  mode = f"batch {b} per replica, steps / R" if args.scale_batch else f"global batch {b} split over the replicas"
  print(f"quickstart:tiny on shapes, {args.steps} steps ({mode}), crop {args.crop}, "
        f"{args.devices} CPU devices, exchange every {args.exchange_every} steps, delay {args.exchange_delay}")
  header = f"{'training':<10}{'replicas':>9}{'seed':>5}{'mIoU':>8}{'img/s':>8}{'ms/img':>8}{'wall s':>8}"
  print(header + "\n" + "-" * len(header), flush=True)
  for seed in args.seeds:
    for name, r in rows:
      steps, batch = (args.steps // r, b * r) if args.scale_batch else (args.steps, b)
      miou, wall, rate = train(os.path.join(args.root, f"{name.replace(' ', '')}_seed{seed}"), args.devices,
                               steps, batch, args.crop, r, args.exchange_every, args.exchange_delay, seed)
      print(f"{name:<10}{r:>9}{seed:>5}{miou:>8.4f}{rate:>8.1f}{1000 / rate:>8.1f}{wall:>8.0f}", flush=True)


if __name__ == "__main__":
  main()
