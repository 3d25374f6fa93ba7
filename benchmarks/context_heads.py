"""Per head at the paper's crop: forward FLOPs (XLA cost analysis), compiled memory of
the training step, and optionally images/s; plus the DANet position-attention memory
at 769x769 with and without blocking.

  python benchmarks/context_heads.py            # compile-only figures (fast on CPU)
  python benchmarks/context_heads.py --run      # also time the training step

FLOPs and memory come from XLA's analysis of the compiled programs (batch 1 forward,
training step at the config's batch per device), so they need no execution.
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

from jaxseg import sharding  # noqa: E402
from jaxseg.models.heads.danet import PositionAttention  # noqa: E402
from jaxseg.models.segmentor import build_model  # noqa: E402
from jaxseg.tools.benchmark import compiled_memory_bytes  # noqa: E402
from jaxseg.config import load_config_file  # noqa: E402
from jaxseg.tools.flops import cost_flops  # noqa: E402
from jaxseg.train import make_train_step, state_factory  # noqa: E402

CONFIGS = ["deeplabv3_voc", "pspnet_voc", "danet_cityscapes", "fastfcn_pascal_context",
           "fastfcn_pascal_context:encnet", "mcibi_ade20k", "gscnn_cityscapes"]


def load(name):
  """configs/NAME.py's config, NAME[:variant] as on the command line."""
  file, _, variant = name.partition(":")
  return load_config_file(os.path.join(ROOT, "configs", f"{file}.py") + (f":{variant}" if variant else ""))


def memory_gb(compiled):
  return compiled_memory_bytes(compiled) / 2 ** 30


def measure(name, batch, run, iters):
  config = load(name)
  config.train.batch_size = batch
  h, w = config.input.crop_size
  model = build_model(config)
  init_fn, abstract, tx, schedule = state_factory(config, model)
  variables = {"params": abstract.params, "batch_stats": abstract.batch_stats}
  x = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
  edges = config.input.get("canny_edges", False)  # Gated-SCNN: the Canny map rides with the image
  eval_model = build_model(config, config.model.eval_output_stride)
  fwd = jax.jit(lambda v, x, e: eval_model.apply(v, x, batch={"edges": e} if edges else {})["seg"])
  forward = fwd.lower(variables, x, jax.ShapeDtypeStruct((1, h, w), jnp.float32)).compile()
  mesh = sharding.make_mesh()
  data_sh, repl = sharding.data_sharding(mesh), sharding.replicated(mesh)
  state_sh = jax.tree.map(lambda _: repl, abstract)
  step = jax.jit(make_train_step(config, model, tx, schedule), in_shardings=(state_sh, data_sh),
                 out_shardings=(state_sh, repl), donate_argnums=0)
  batch_spec = {"image": jax.ShapeDtypeStruct((batch, h, w, 3), jnp.uint8),
                "label": jax.ShapeDtypeStruct((batch, h, w), jnp.uint8)}
  if edges:
    batch_spec["edges"] = jax.ShapeDtypeStruct((batch, h, w), jnp.uint8)
  t = time.perf_counter()
  train = step.lower(abstract, batch_spec).compile()
  row = {"config": name, "crop": f"{h}x{w}", "depth": config.model.backbone.depth,
         "gflops": cost_flops(forward) / 1e9, "train_mem_gb": memory_gb(train),
         "compile_s": time.perf_counter() - t, "img_s": float("nan")}
  if run:
    state = jax.jit(init_fn, out_shardings=state_sh)(jax.random.key(0))
    rng = np.random.default_rng(0)
    data = {"image": rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8),
            "label": rng.integers(0, config.dataset.num_classes, (batch, h, w), dtype=np.uint8)}
    if edges:
      data["edges"] = rng.integers(0, 2, (batch, h, w), dtype=np.uint8)
    data = sharding.global_batch(data, data_sh)
    state, logs = train(state, data)
    jax.block_until_ready(logs["loss"])
    t = time.perf_counter()
    for _ in range(iters):
      state, logs = train(state, data)
    jax.block_until_ready(logs["loss"])
    row["img_s"] = batch * iters / (time.perf_counter() - t)
  return row


def pam_memory(size=769, channels=512, output_stride=8):
  """Compiled memory of PAM forward + backward on one image at `size`."""
  n = -(-size // output_stride)
  x = jnp.zeros((1, n, n, channels), jnp.float32)
  out = {}
  for label, threshold in (("naive", 2 ** 62), ("blocked", 0)):
    pam = PositionAttention(blocked_threshold=threshold, block_size=512)
    params = jax.eval_shape(pam.init, jax.random.key(0), x)
    loss = lambda p, x: jnp.sum(pam.apply(p, x) ** 2)
    compiled = jax.jit(jax.grad(loss)).lower(params, x).compile()
    out[label] = memory_gb(compiled)
  return n * n, out


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--configs", nargs="+", default=CONFIGS)
  p.add_argument("--batch", type=int, default=jax.device_count())
  p.add_argument("--run", action="store_true", help="also time the training step")
  p.add_argument("--iters", type=int, default=5)
  args = p.parse_args()
  print(f"{jax.devices()[0].device_kind} x{jax.device_count()}, training batch {args.batch}")
  head = f"{'config':<31}{'crop':>10}{'R-':>5}{'fwd GFLOPs':>12}{'train mem GB':>14}{'img/s':>8}{'compile s':>11}"
  print(head + "\n" + "-" * len(head))
  for name in args.configs:
    r = measure(name, args.batch, args.run, args.iters)
    print(f"{r['config']:<31}{r['crop']:>10}{r['depth']:>5}{r['gflops']:>12.1f}{r['train_mem_gb']:>14.2f}"
          f"{r['img_s']:>8.2f}{r['compile_s']:>11.1f}", flush=True)
  n, mem = pam_memory()
  print(f"\nDANet PAM forward+backward at 769x769 (OS8, N = {n}, C = 512, batch 1): "
        f"naive {mem['naive']:.2f} GB, blocked {mem['blocked']:.2f} GB "
        f"(the N x N matrix alone: {n * n * 4 / 2 ** 30:.2f} GB in fp32)")


if __name__ == "__main__":
  main()
