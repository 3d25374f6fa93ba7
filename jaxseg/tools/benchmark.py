"""Speed and memory of a config's model on this machine, on synthetic batches.

  python -m jaxseg.tools.benchmark --config configs/deeplabv3_voc.py
  python -m jaxseg.tools.benchmark --config configs/pspnet_cityscapes.py --size 512 --batch 4 \\
      --config.model.dtype=bfloat16 --json bench.json

Measures the training step (the jitted step training uses: forward, losses,
backward, optimizer, donated state) at --size and --batch: compile time, step time,
images/s; inference (the config's evaluation protocol: whole / slide / multi-scale,
then argmax) at --size and --infer_batch: compile time, latency, frames/s; XLA's
FLOPs of both; peak memory; and on GPU/TPU the model FLOPs utilisation (achieved
FLOP/s of the training step / the device's peak, from the PEAK_TFLOPS table). With
PyTorch importable and a DeepLabv3 config (model.head "aspp", no neck), the same
network built in PyTorch (jaxseg/tools/torch_deeplabv3.py) is timed alongside, in a
process of its own.
Batches are random uint8 images and labels made in memory: no dataset is read.
Prints a table; --json writes every number.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time

import jax
import numpy as np

from jaxseg.tools.flops import cost_flops, parse_size
from jaxseg.tools.timing import synthetic_batch, timed

# Dense peak TFLOP/s per device: (bfloat16, float32). float32 on NVIDIA Ampere and
# later is the TF32 tensor-core peak (XLA's default precision for f32 convolutions
# and matmuls there); TPUs run f32 matmuls as bf16 passes at default precision.
# Matched by substring of jax's device_kind, first match wins.
PEAK_TFLOPS = [
    ("H100 PCIe", (756.0, 378.0)),
    ("H100", (989.0, 494.5)),
    ("H200", (989.0, 494.5)),
    ("B200", (2250.0, 1100.0)),
    ("A100", (312.0, 156.0)),
    ("L40S", (362.0, 183.0)),
    ("L4", (121.0, 60.0)),
    ("A10", (125.0, 62.5)),
    ("TPU v4", (275.0, 275.0)),
    ("TPU v5 lite", (197.0, 197.0)),
    ("TPU v5p", (459.0, 459.0)),
    ("TPU v5", (459.0, 459.0)),
    ("TPU v6 lite", (918.0, 918.0)),
]


def peak_tflops(device_kind, dtype):
  """The device's dense peak TFLOP/s at `dtype`, or None if unknown (CPU)."""
  for key, (bf16, fp32) in PEAK_TFLOPS:
    if key.lower() in device_kind.lower():
      return bf16 if dtype in ("bfloat16", "float16") else fp32
  return None


def compiled_memory_bytes(compiled):
  """Arguments + outputs + temporaries of a compiled program (XLA memory analysis),
  donated (aliased) buffers counted once; NaN where XLA gives no analysis."""
  m = compiled.memory_analysis()
  if m is None:
    return float("nan")
  return float(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - getattr(m, "alias_size_in_bytes", 0))


def peak_memory(compiled):
  """(bytes, how): the device allocator's peak where it reports one (GPU/TPU), else
  XLA's compiled memory analysis of the training step (CPU)."""
  stats = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") else None
  if stats and "peak_bytes_in_use" in stats:
    return float(stats["peak_bytes_in_use"]), "device memory_stats peak_bytes_in_use"
  return compiled_memory_bytes(compiled), "XLA memory analysis of the compiled training step"


def measure_jax(config, size, batch, infer_batch=1, iters=5, warmup=1):
  """The jaxseg side: a dict of every measurement (times in seconds)."""
  from jaxseg import sharding
  from jaxseg.models.segmentor import build_model
  from jaxseg.train import make_predict, make_train_step, state_factory

  config = config.copy_and_resolve_references()
  config.input.crop_size = tuple(size)
  config.train.batch_size = batch
  mesh = sharding.make_mesh(model=config.train.model_axis)
  if batch % mesh.shape["data"]:
    raise ValueError(f"--batch {batch} is not divisible by the {mesh.shape['data']} devices of the data axis")
  data_sh, repl = sharding.data_sharding(mesh), sharding.replicated(mesh)
  model = build_model(config)
  init_fn, abstract, tx, schedule = state_factory(config, model)
  state_sh = sharding.state_shardings(abstract, mesh)
  state = jax.jit(init_fn, out_shardings=state_sh)(jax.random.key(0))
  data = sharding.global_batch(synthetic_batch(config, batch, size), data_sh)
  step = jax.jit(make_train_step(config, model, tx, schedule), in_shardings=(state_sh, data_sh),
                 out_shardings=(state_sh, repl), donate_argnums=0)
  t = time.perf_counter()
  train = step.lower(abstract, data).compile()
  train_compile = time.perf_counter() - t
  holder = [state]

  def train_once():
    holder[0], logs = train(holder[0], data)
    jax.block_until_ready(logs["loss"])

  step_s = timed(train_once, iters, warmup)
  memory, memory_how = peak_memory(train)

  variables = {"params": holder[0].params, "batch_stats": holder[0].batch_stats}
  images = jax.device_put(synthetic_batch(config, infer_batch, size, seed=1), repl)
  predict = jax.jit(make_predict(config, build_model(config, config.model.eval_output_stride)))
  t = time.perf_counter()
  infer = predict.lower(variables, images).compile()
  infer_compile = time.perf_counter() - t
  latency = timed(lambda: jax.block_until_ready(infer(variables, images)), iters, warmup)

  device = jax.devices()[0]
  train_flops = cost_flops(train)
  # Cost analysis of an SPMD program is per device: so are FLOP/s and the peak.
  achieved = train_flops / step_s / 1e12
  peak = peak_tflops(device.device_kind, config.model.dtype) if jax.default_backend() != "cpu" else None
  return {
      "train_step_ms": 1e3 * step_s, "train_images_per_sec": batch / step_s,
      "infer_latency_ms": 1e3 * latency, "infer_fps": infer_batch / latency,
      "train_compile_s": train_compile, "infer_compile_s": infer_compile,
      "peak_memory_gb": memory / 2 ** 30, "peak_memory_source": memory_how,
      "train_gflops_per_step": train_flops / 1e9, "infer_gflops": cost_flops(infer) / 1e9,
      "achieved_tflops_per_device": achieved, "peak_tflops_per_device": peak,
      "mfu": achieved / peak if peak else None,
  }


def torch_available():
  return importlib.util.find_spec("torch") is not None


def measure_torch(config, size, batch, infer_batch=1, iters=5, warmup=1):
  """The same network, loss and optimizer in PyTorch (jaxseg/tools/torch_deeplabv3.py),
  measured in a process of its own: PyTorch and the TensorFlow or JAX already loaded
  here are native stacks that need not share one. Raises ConfigError for configs it
  has no equivalent of."""
  from jaxseg.errors import ConfigError
  request = json.dumps({"config": json.loads(config.to_json()),
                        "args": [list(size), batch, infer_batch, iters, warmup]})
  out = subprocess.run([sys.executable, "-m", "jaxseg.tools.torch_deeplabv3"], input=request,
                       capture_output=True, text=True)
  if out.returncode == 3:
    raise ConfigError(out.stderr.strip().splitlines()[-1])
  if out.returncode != 0:
    raise RuntimeError(f"the PyTorch benchmark process failed (exit status {out.returncode}):\n"
                       f"{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


ROWS = [  # (key, label, format)
    ("train_step_ms", "train step (ms)", "{:.1f}"),
    ("train_images_per_sec", "train images/s", "{:.2f}"),
    ("infer_latency_ms", "inference latency (ms)", "{:.1f}"),
    ("infer_fps", "inference FPS", "{:.2f}"),
    ("train_compile_s", "compile: train step (s)", "{:.1f}"),
    ("infer_compile_s", "compile: inference (s)", "{:.1f}"),
    ("first_step_s", "first step (s)", "{:.1f}"),
    ("peak_memory_gb", "peak memory (GB)", "{:.2f}"),
    ("train_gflops_per_step", "train GFLOPs / step", "{:.1f}"),
    ("infer_gflops", "inference GFLOPs", "{:.1f}"),
    ("achieved_tflops_per_device", "achieved TFLOP/s / device", "{:.3f}"),
    ("mfu", "MFU", "{:.1%}"),
]


def format_table(result):
  sides = [("jaxseg", result["jax"])] + ([("PyTorch", result["torch"])] if result.get("torch") else [])
  s = result["settings"]
  lines = [f"{s['config']}: {s['model']}, {s['size'][0]}x{s['size'][1]}, train batch {s['batch']}, "
           f"inference batch {s['infer_batch']}, {s['dtype']}, {result['device']}",
           f"{'':<28}" + "".join(f"{name:>14}" for name, _ in sides), "-" * (28 + 14 * len(sides))]
  for key, label, fmt in ROWS:
    values = [side.get(key) for _, side in sides]
    if all(v is None for v in values):
      continue
    cell = lambda v: "-" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)
    lines.append(f"{label:<28}" + "".join(f"{cell(v):>14}" for v in values))
  lines.append(f"peak memory: jaxseg from {result['jax']['peak_memory_source']}"
               + (f"; PyTorch from {result['torch']['peak_memory_source']}" if result.get("torch") else ""))
  if "torch" in result and result["torch"]:
    j, t = result["jax"], result["torch"]
    lines.append(f"jaxseg / PyTorch: training {j['train_images_per_sec'] / t['train_images_per_sec']:.2f}x, "
                 f"inference {t['infer_latency_ms'] / j['infer_latency_ms']:.2f}x (>1: jaxseg faster); "
                 f"PyTorch {t['torch_version']} on {t['device']}, {t['threads']} threads")
  elif result.get("torch_skipped"):
    lines.append(f"PyTorch comparison skipped: {result['torch_skipped']}")
  return "\n".join(lines)


def benchmark(config, size, batch, infer_batch=1, iters=5, warmup=1, compare_torch=True, name=""):
  """Runs both sides; returns the result dict that format_table prints."""
  from jaxseg.errors import ConfigError

  device = jax.devices()[0]
  result = {
      "device": f"{device.device_kind} x{jax.device_count()} ({jax.default_backend()})",
      "settings": {"config": name, "model": f"{config.model.head.name} ResNet-{config.model.backbone.depth}",
                   "size": list(size), "batch": batch, "infer_batch": infer_batch, "iters": iters,
                   "warmup": warmup, "dtype": config.model.dtype},
      "jax": measure_jax(config, size, batch, infer_batch, iters, warmup),
  }
  if not compare_torch:
    result["torch_skipped"] = "--notorch"
  elif not torch_available():
    result["torch_skipped"] = "torch is not installed"
  else:
    try:
      result["torch"] = measure_torch(config, size, batch, infer_batch, iters, warmup)
    except ConfigError as e:
      result["torch_skipped"] = str(e)
  return result


def define_flags():
  from absl import flags
  flags.DEFINE_string("size", "", "Input size H or H,W for training and inference "
                      "(default: the config's input.crop_size).")
  flags.DEFINE_integer("batch", None, "Global training batch (default: the config's train.batch_size).")
  flags.DEFINE_integer("infer_batch", 1, "Inference batch.")
  flags.DEFINE_integer("iters", 5, "Timed iterations.")
  flags.DEFINE_integer("warmup", 1, "Untimed iterations after compilation.")
  flags.DEFINE_bool("torch", True, "Compare with the same network in PyTorch where possible.")
  flags.DEFINE_string("json", "", "Also write every number here as JSON.")


def main(argv):
  from absl import flags
  from ml_collections import config_flags

  from jaxseg.main import resolved_config
  f = flags.FLAGS
  config = resolved_config(argv)
  size = parse_size(f.size, config.input.crop_size)
  result = benchmark(config, size, f.batch or config.train.batch_size, f.infer_batch, f.iters, f.warmup,
                     f.torch, config_flags.get_config_filename(f["config"]))
  print(format_table(result), flush=True)
  if f.json:
    with open(f.json, "w") as out:
      json.dump(result, out, indent=2)
    print(f"wrote {f.json}")


if __name__ == "__main__":
  from jaxseg.main import run
  define_flags()
  run(main)
