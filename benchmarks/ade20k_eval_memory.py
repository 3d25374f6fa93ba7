"""Memory of the ADE20K evaluation protocol: XLA's memory analysis of the compiled
predict (sliding windows placed per image on the 2048x2048 canvas, the logits resized
back to the 2048x2048 label canvas, argmax) per eval batch on one device.

  python benchmarks/ade20k_eval_memory.py [--config pspnet_ade20k] [--batches 1,8]

Compiles only (abstract weights, nothing runs), so it measures on any host; the
numbers are those of this host's backend (CPU here, GPU / TPU when run there).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxseg import families  # noqa: E402
from jaxseg.config import load_config_file  # noqa: E402


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", default="pspnet_ade20k")
  p.add_argument("--batches", default="1,8")
  args = p.parse_args()
  config = load_config_file(os.path.join(ROOT, "configs", f"{args.config}.py"))
  family = families.get(config)
  model, train_model = family.build_model(train=False), family.build_model(train=True)
  i = config.input
  print(f"{args.config}: canvas {tuple(i.eval_size)}, label canvas {tuple(i.get('eval_label_size', i.eval_size))}, "
        f"{config.eval.mode} {tuple(config.eval.crop_size)}, {config.dataset.num_classes} classes, "
        f"backend {jax.default_backend()}")
  print("| eval batch (one device) | temp GiB | arguments GiB | output GiB | compile s |")
  print("|---|---|---|---|---|")
  for b in (int(x) for x in args.batches.split(",")):
    example = {k: np.stack([v] * b) for k, v in family.example(train=False).items()}
    batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), example)
    variables = jax.eval_shape(lambda: family.init(train_model, jax.random.key(0), jax.tree.map(jnp.asarray, example)))
    variables = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    start = time.time()
    predict = jax.jit(lambda v, x: family.predict(model, v, x)["pred"])
    m = predict.lower(variables, batch).compile().memory_analysis()
    print(f"| {b} | {m.temp_size_in_bytes / 2**30:.2f} | {m.argument_size_in_bytes / 2**30:.2f} | "
          f"{m.output_size_in_bytes / 2**30:.3f} | {time.time() - start:.0f} |", flush=True)


if __name__ == "__main__":
  main()
