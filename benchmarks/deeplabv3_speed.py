"""Training throughput and inference latency of DeepLabv3-R50/R101 at the paper crop,
jaxseg next to PyTorch on the same device, input and batch, in the same run.

  python benchmarks/deeplabv3_speed.py                      # defaults per platform
  python benchmarks/deeplabv3_speed.py --depths 50 --batch 8 --crop 513 --iters 20

Both sides run the torchvision layout: 7x7 stem, output stride 8, ASPP rates
12/24/36, FCN auxiliary head (loss weight 0.4), SGD momentum; synthetic uint8 images
and labels with 21 classes. The PyTorch side is torchvision's `deeplabv3_resnet*`
where torchvision imports, else `benchmarks/torch_deeplabv3.py` (same layout).
jaxseg's head has no extra 3x3 conv after ASPP (the paper's head; torchvision adds
one: ~1.5% more FLOPs on the PyTorch side). Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def load_config(depth, crop, batch, dtype):
  spec = importlib.util.spec_from_file_location("voc", os.path.join(ROOT, "configs", "deeplabv3_voc.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.model.backbone.depth = depth
  c.model.backbone.output_stride = 8
  c.model.backbone.multi_grid = (1, 1, 1)
  c.model.aux_head = True
  c.model.dtype = dtype
  c.input.crop_size = (crop, crop)
  c.train.batch_size = batch
  return c


def timed(fn, iters, warmup):
  """(seconds of the first call, mean seconds of `iters` calls after `warmup`)."""
  t = time.perf_counter()
  fn()
  first = time.perf_counter() - t
  for _ in range(warmup):
    fn()
  t = time.perf_counter()
  for _ in range(iters):
    fn()
  return first, (time.perf_counter() - t) / iters


def peak_memory_gb(device):
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  return stats["peak_bytes_in_use"] / 2 ** 30 if stats and "peak_bytes_in_use" in stats else float("nan")


def bench_jax(depth, crop, batch, dtype, iters, warmup):
  from jaxseg import sharding
  from jaxseg.evaluate import predict_scores
  from jaxseg.models.segmentor import build_model
  from jaxseg.train import make_train_step, state_factory

  config = load_config(depth, crop, batch, dtype)
  mesh = sharding.make_mesh()
  data_sh, repl = sharding.data_sharding(mesh), sharding.replicated(mesh)
  model = build_model(config)
  init_fn, abstract, tx, schedule = state_factory(config, model)
  state_sh = jax.tree.map(lambda _: repl, abstract)
  state = jax.jit(init_fn, out_shardings=state_sh)(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch_data = sharding.global_batch({
      "image": rng.integers(0, 256, (batch, crop, crop, 3), dtype=np.uint8),
      "label": rng.integers(0, 21, (batch, crop, crop), dtype=np.uint8)}, data_sh)
  step = jax.jit(make_train_step(config, model, tx, schedule), in_shardings=(state_sh, data_sh),
                 out_shardings=(state_sh, repl), donate_argnums=0)
  holder = [state]

  def train_once():
    holder[0], logs = step(holder[0], batch_data)
    jax.block_until_ready(logs["loss"])

  compile_s, step_s = timed(train_once, iters, warmup)
  variables = {"params": holder[0].params, "batch_stats": holder[0].batch_stats}
  infer = jax.jit(lambda v, x: jnp.argmax(predict_scores(model, v, x, config), -1))
  one = batch_data["image"][:1]
  _, latency = timed(lambda: jax.block_until_ready(infer(variables, one)), iters, warmup)
  return {"train_img_s": batch / step_s, "step_ms": 1e3 * step_s, "compile_s": compile_s,
          "latency_ms": 1e3 * latency, "peak_gb": peak_memory_gb(jax.devices()[0])}


def bench_torch(depth, crop, batch, dtype, iters, warmup):
  import torch
  from torch.nn import functional as F

  device = "cuda" if torch.cuda.is_available() else "cpu"
  try:
    from torchvision.models.segmentation import deeplabv3_resnet50, deeplabv3_resnet101
    build = {50: deeplabv3_resnet50, 101: deeplabv3_resnet101}[depth]
    model, source = build(weights=None, weights_backbone=None, num_classes=21, aux_loss=True), "torchvision"
  except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_deeplabv3 import DeepLabV3
    model, source = DeepLabV3(depth, 21), "torch (same layout)"
  model = model.to(device).to(memory_format=torch.channels_last)
  torch.backends.cudnn.benchmark = True
  opt = torch.optim.SGD(model.parameters(), lr=0.007, momentum=0.9, weight_decay=1e-4)
  g = torch.Generator().manual_seed(0)
  images = torch.randint(0, 256, (batch, 3, crop, crop), generator=g, dtype=torch.uint8).to(device)
  labels = torch.randint(0, 21, (batch, crop, crop), generator=g).to(device)
  mean = torch.tensor([123.675, 116.28, 103.53], device=device).view(1, 3, 1, 1)
  std = torch.tensor([58.395, 57.12, 57.375], device=device).view(1, 3, 1, 1)
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def train_once():
    model.train()
    x = ((images.float() - mean) / std).contiguous(memory_format=torch.channels_last)
    with autocast:
      out = model(x)
      loss = F.cross_entropy(out["out"].float(), labels, ignore_index=255) \
          + 0.4 * F.cross_entropy(out["aux"].float(), labels, ignore_index=255)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sync()

  def infer_once():
    model.eval()
    with torch.no_grad(), autocast:
      x = ((images[:1].float() - mean) / std).contiguous(memory_format=torch.channels_last)
      model(x)["out"].argmax(1)
    sync()

  if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
  _, step_s = timed(train_once, iters, warmup)
  peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else float("nan")
  _, latency = timed(infer_once, iters, warmup)
  return {"train_img_s": batch / step_s, "step_ms": 1e3 * step_s, "latency_ms": 1e3 * latency,
          "peak_gb": peak, "source": source}


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

  have_torch = importlib.util.find_spec("torch") is not None and not args.no_torch
  device = f"{jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()})"
  print(f"DeepLabv3 OS8, crop {args.crop}, batch {args.batch}, {args.dtype}, {device}")
  rows = []
  for depth in args.depths:
    row = {"model": f"DeepLabv3-R{depth}", "jax": bench_jax(depth, args.crop, args.batch, args.dtype,
                                                             args.iters, args.warmup)}
    if have_torch:
      row["torch"] = bench_torch(depth, args.crop, args.batch, args.dtype, args.iters, args.warmup)
    rows.append(row)

  head = f"{'model':<16}{'side':<22}{'train img/s':>12}{'step ms':>10}{'infer ms (b1)':>15}{'peak GB':>9}{'compile s':>11}"
  print(head + "\n" + "-" * len(head))
  for row in rows:
    j = row["jax"]
    print(f"{row['model']:<16}{'jaxseg':<22}{j['train_img_s']:>12.2f}{j['step_ms']:>10.0f}"
          f"{j['latency_ms']:>15.1f}{j['peak_gb']:>9.2f}{j['compile_s']:>11.1f}")
    if "torch" in row:
      t = row["torch"]
      print(f"{'':<16}{t['source']:<22}{t['train_img_s']:>12.2f}{t['step_ms']:>10.0f}"
            f"{t['latency_ms']:>15.1f}{t['peak_gb']:>9.2f}{'':>11}")
      print(f"{'':<16}{'ratio jaxseg/torch':<22}{j['train_img_s'] / t['train_img_s']:>11.2f}x"
            f"{'':>10}{t['latency_ms'] / j['latency_ms']:>14.2f}x  (>1: jaxseg faster)")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"device": device, "args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
  main()
