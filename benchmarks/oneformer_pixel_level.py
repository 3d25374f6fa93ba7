"""OneFormer's pixel-level module (backbone + deformable-attention pixel decoder) at the
paper's crops: forward GFLOPs (XLA cost analysis, batch 1) and the compiled memory of a
gradient step (batch 2, a squared-output loss standing in for the heads), with and
without rematerialising the deformable sampling.

  python benchmarks/oneformer_pixel_level.py                       # Swin-T, R-50 at 512x512
  python benchmarks/oneformer_pixel_level.py --backbones swin_l_384 --crops 512,512x1024

Compile-only (nothing runs), so it works on CPU; the figures are XLA's analysis of the
programs compiled for the default backend.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxseg.models.backbones.resnet import ResNet  # noqa: E402
from jaxseg.models.backbones.swin import PRESETS, SwinTransformer  # noqa: E402
from jaxseg.models.heads.oneformer.pixel_decoder import PixelDecoder  # noqa: E402
from jaxseg.tools.benchmark import compiled_memory_bytes  # noqa: E402
from jaxseg.tools.flops import cost_flops, parse_size  # noqa: E402


def backbone(name):
  if name == "resnet50":  # the OneFormer R-50: no dilation, c1..c4 at strides 4..32
    return ResNet(depth=50, stem="7x7", output_stride=32, multi_grid=())
  p = PRESETS[name]
  return SwinTransformer(width=p["width"], depths=p["swin_depths"], heads=p["swin_heads"], window=p["swin_window"])


def measure(name, crop, batch, remat):
  net, decoder = backbone(name), PixelDecoder(remat=remat)  # d 256, 8 heads, 6 layers, 4 points, FFN 1024

  def forward(v, x):
    feats = net.apply(v["backbone"], x)
    return decoder.apply(v["decoder"], feats)

  def init(x):
    vb = net.init(jax.random.key(0), x)
    return {"backbone": vb, "decoder": decoder.init(jax.random.key(1), net.apply(vb, x))}

  x1 = jax.ShapeDtypeStruct((1, *crop, 3), jnp.float32)
  xb = jax.ShapeDtypeStruct((batch, *crop, 3), jnp.float32)
  variables = jax.eval_shape(init, x1)

  def loss(v, x):  # every output reaches the loss, as the decoder's and the mask head's do
    out = forward(v, x)
    return sum(jnp.mean(jnp.square(o)) for o in [*out["multi_scale"], out["mask_features"]])

  t = time.perf_counter()
  fwd = jax.jit(forward).lower(variables, x1).compile()
  grad = jax.jit(jax.grad(loss)).lower(variables, xb).compile()
  return {"backbone": name, "crop": f"{crop[0]}x{crop[1]}", "remat": remat, "gflops": cost_flops(fwd) / 1e9,
          "grad_mem_gb": compiled_memory_bytes(grad) / 2 ** 30, "compile_s": time.perf_counter() - t}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--backbones", default="swin_t,resnet50", help=f"comma list of resnet50, {', '.join(PRESETS)}")
  p.add_argument("--crops", default="512", help="comma list of HxW (512 = 512x512)")
  p.add_argument("--batch", type=int, default=2, help="batch of the gradient step")
  args = p.parse_args()
  crops = [parse_size(c) for c in args.crops.split(",")]
  print(f"backend {jax.default_backend()}; pixel decoder d 256, 8 heads, 6 layers, 3 levels, 4 points, FFN 1024")
  print(f"{'backbone':<12} {'crop':<9} {'remat':<6} {'fwd GFLOPs':>10} {'grad mem GiB':>12} {'compile s':>9}")
  for name in args.backbones.split(","):
    for crop in crops:
      for remat in (False, True):
        r = measure(name, crop, args.batch, remat)
        print(f"{r['backbone']:<12} {r['crop']:<9} {str(r['remat']):<6} {r['gflops']:>10.1f} "
              f"{r['grad_mem_gb']:>12.2f} {r['compile_s']:>9.1f}", flush=True)


if __name__ == "__main__":
  main()
