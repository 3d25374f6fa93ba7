"""Training throughput and inference latency of DeepLabv3-R50/R101 at the paper crop,
jaxseg next to PyTorch on the same device, input and batch, in the same run.

  python benchmarks/deeplabv3_speed.py                      # defaults per platform
  python benchmarks/deeplabv3_speed.py --depths 50 --batch 8 --crop 513 --iters 20

Both sides run the torchvision layout: 7x7 stem, output stride 8 (training and
inference), ASPP rates 12/24/36, FCN auxiliary head (loss weight 0.4), SGD momentum;
synthetic uint8 images and labels with 21 classes. The measurements are those of
`python -m jaxseg.tools.benchmark` (whose PyTorch side builds the same network from the
config: jaxseg/tools/torch_deeplabv3.py); this script fixes the settings and puts
both depths in one table. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxseg.tools.benchmark import measure_jax, measure_torch, torch_available  # noqa: E402


def load_config(depth, crop, batch, dtype):
  from jaxseg.config import aux_head, load_config_file
  c = load_config_file(os.path.join(ROOT, "configs", "deeplabv3_voc.py"))
  c.model.backbone.depth = depth
  c.model.backbone.output_stride = 8
  c.model.eval_output_stride = 8
  c.model.backbone.multi_grid = (1, 1, 1)
  c.model.aux_heads = dict(aux=aux_head())  # FCN on c3, 256 channels
  c.loss.weights = dict(seg=1.0, aux=0.4)
  c.model.dtype = dtype
  c.input.crop_size = (crop, crop)
  c.train.batch_size = batch
  return c


def main():
  gpu = jax.default_backend() != "cpu"
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--depths", type=int, nargs="+", default=[50, 101])
  p.add_argument("--crop", type=int, default=513)
  p.add_argument("--batch", type=int, default=16 if gpu else 2)
  p.add_argument("--dtype", default="bfloat16" if gpu else "float32", choices=["float32", "bfloat16"])
  p.add_argument("--iters", type=int, default=20 if gpu else 3)
  p.add_argument("--warmup", type=int, default=3 if gpu else 1)
  p.add_argument("--no_torch", action="store_true")
  p.add_argument("--json", default="", help="write the results here")
  args = p.parse_args()

  have_torch = torch_available() and not args.no_torch
  device = f"{jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()})"
  print(f"DeepLabv3 OS8, crop {args.crop}, batch {args.batch}, {args.dtype}, {device}")
  rows = []
  for depth in args.depths:
    config = load_config(depth, args.crop, args.batch, args.dtype)
    size = (args.crop, args.crop)
    row = {"model": f"DeepLabv3-R{depth}", "jax": measure_jax(config, size, args.batch, 1, args.iters, args.warmup)}
    if have_torch:
      row["torch"] = measure_torch(config, size, args.batch, 1, args.iters, args.warmup)
    rows.append(row)

  head = f"{'model':<16}{'side':<22}{'train img/s':>12}{'step ms':>10}{'infer ms (b1)':>15}{'peak GB':>9}{'compile s':>11}"
  print(head + "\n" + "-" * len(head))
  for row in rows:
    j = row["jax"]
    print(f"{row['model']:<16}{'jaxseg':<22}{j['train_images_per_sec']:>12.2f}{j['train_step_ms']:>10.0f}"
          f"{j['infer_latency_ms']:>15.1f}{j['peak_memory_gb']:>9.2f}{j['train_compile_s']:>11.1f}")
    if "torch" in row:
      t = row["torch"]
      print(f"{'':<16}{'PyTorch ' + t['torch_version']:<22}{t['train_images_per_sec']:>12.2f}"
            f"{t['train_step_ms']:>10.0f}{t['infer_latency_ms']:>15.1f}{t['peak_memory_gb']:>9.2f}{'':>11}")
      print(f"{'':<16}{'ratio jaxseg/torch':<22}{j['train_images_per_sec'] / t['train_images_per_sec']:>11.2f}x"
            f"{'':>10}{t['infer_latency_ms'] / j['infer_latency_ms']:>14.2f}x  (>1: jaxseg faster)")
  print(f"peak memory: jaxseg from {rows[0]['jax']['peak_memory_source']}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"device": device, "args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
  main()
