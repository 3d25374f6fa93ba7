"""Per-device memory of the training state and step with kernels split over `model`.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
      python benchmarks/model_axis.py --config configs/pspnet_voc.py [--sizes 1 2 4 8]

For each model-axis size M (train.model_axis), on the same devices: the bytes of
parameters + momentum + BN statistics one device holds (from the shardings: exact),
the fraction of parameters that are split, and XLA's memory analysis of the compiled
training step per device (arguments + outputs + temporaries, donated state counted
once) at --size and --batch. Nothing runs: the step is only lowered and compiled, so
the figures hold for any backend with the same number of devices.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg import sharding  # noqa: E402
from jaxseg.config import load_config_file  # noqa: E402
from jaxseg.models.segmentor import build_model  # noqa: E402
from jaxseg.tools.benchmark import compiled_memory_bytes, synthetic_batch  # noqa: E402
from jaxseg.train import make_train_step, state_factory  # noqa: E402


def per_device_bytes(abstract, shardings):
  """Bytes of the largest shard of each leaf, summed: what one device holds."""
  total = 0
  for x, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
    total += math.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
  return total


def measure(config, model_axis, size, batch):
  mesh = sharding.make_mesh(model=model_axis)
  model = build_model(config)
  _, abstract, tx, schedule = state_factory(config, model)
  state_sh = sharding.state_shardings(abstract, mesh)
  data_sh, repl = sharding.data_sharding(mesh), sharding.replicated(mesh)
  params = jax.tree.leaves(abstract.params)
  split = sum(x.size for x, s in zip(params, jax.tree.leaves(state_sh.params)) if not s.is_fully_replicated)
  data = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=data_sh),
                      synthetic_batch(config, batch, size))
  placed = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh)
  step = jax.jit(make_train_step(config, model, tx, schedule), in_shardings=(state_sh, data_sh),
                 out_shardings=(state_sh, repl), donate_argnums=0)
  t = time.perf_counter()
  compiled = step.lower(placed, data).compile()
  return {"state_mb": per_device_bytes(abstract, state_sh) / 2 ** 20,
          "split": split / sum(x.size for x in params),
          "step_mb": compiled_memory_bytes(compiled) / 2 ** 20,
          "compile_s": time.perf_counter() - t}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="configs/pspnet_voc.py")
  p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8], help="model-axis sizes")
  p.add_argument("--size", type=int, default=129, help="square crop of the compiled step")
  p.add_argument("--batch", type=int, default=8)
  args = p.parse_args()
  config = load_config_file(args.config)
  config.input.crop_size = (args.size, args.size)
  config.train.batch_size = args.batch
  print(f"{args.config}: {jax.device_count()} {jax.devices()[0].platform.upper()} devices, "
        f"train step at {args.size}x{args.size}, global batch {args.batch}")
  header = f"{'model axis':>10}{'data axis':>10}{'params split':>13}{'state MB/dev':>13}{'step MB/dev':>12}{'compile s':>10}"
  print(header + "\n" + "-" * len(header), flush=True)
  for m in args.sizes:
    r = measure(config, m, (args.size, args.size), args.batch)
    print(f"{m:>10}{jax.device_count() // m:>10}{r['split']:>13.1%}{r['state_mb']:>13.1f}{r['step_mb']:>12.1f}"
          f"{r['compile_s']:>10.1f}", flush=True)


if __name__ == "__main__":
  main()
