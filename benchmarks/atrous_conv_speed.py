"""Dilated 3x3 convolutions of DeepLabv3 OS8 (ResNet stages 3-4 and ASPP at 513x513),
lowered three ways on this device, with PyTorch's conv2d beside when installed:

  xla    jax.lax.conv_general_dilated with rhs_dilation (XLA's lowering)
  taps   jaxseg.models.atrous_conv.tap_conv: one matmul per in-image tap
  mixed  XLA's forward, the taps' gradients (atrous_conv.mixed_conv)
  s2b    space-to-batch: pad to a multiple of d, d*d sub-images, dense 3x3, back
         (--s2b only: at rate 36 on 65x65 it is 1296 sub-images of 2x2, ~60 s a call)

  python benchmarks/atrous_conv_speed.py              # forward, and forward + backward
  python benchmarks/atrous_conv_speed.py --iters 5 --no_backward
  python benchmarks/atrous_conv_speed.py --shapes stdc --no_backward   # STDC1's dense 3x3s at 512x1024

Milliseconds per call (mean of --iters after one warm-up). This is what
atrous_conv.lowering's choice per backend rests on.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jaxseg.models.atrous_conv import mixed_conv, tap_conv, xla_conv  # noqa: E402

SHAPES = {  # (where, (height, width), in, out, rate)
    "deeplab": [("layer3 3x3", (65, 65), 256, 256, 2),
                ("layer4 3x3", (65, 65), 512, 512, 4),
                ("ASPP r12", (65, 65), 2048, 256, 12),
                ("ASPP r24", (65, 65), 2048, 256, 24),
                ("ASPP r36", (65, 65), 2048, 256, 36)],
    # STDC1 at 512x1024 has no dilated convolution: its dense 3x3s, the widest and the narrowest
    "stdc": [("stage3", (128, 256), 64, 64, 1),
             ("stage5", (16, 32), 256, 256, 1),
             ("arm16", (32, 64), 512, 128, 1),
             ("up16", (64, 128), 128, 128, 1),
             ("seg head", (64, 128), 256, 256, 1)],
}


def space_to_batch_conv(x, kernel, d):
  n, h, w, c = x.shape
  hp, wp = -(-h // d) * d, -(-w // d) * d
  x = jnp.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
  x = x.reshape(n, hp // d, d, wp // d, d, c).transpose(0, 2, 4, 1, 3, 5).reshape(n * d * d, hp // d, wp // d, c)
  y = xla_conv(x, kernel, 1)
  o = y.shape[-1]
  y = y.reshape(n, d, d, hp // d, wp // d, o).transpose(0, 3, 1, 4, 2, 5).reshape(n, hp, wp, o)
  return y[:, :h, :w]


def timed(fn, iters):
  jax.block_until_ready(fn())
  t = time.perf_counter()
  for _ in range(iters):
    jax.block_until_ready(fn())
  return 1e3 * (time.perf_counter() - t) / iters


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--iters", type=int, default=3)
  p.add_argument("--no_backward", action="store_true")
  p.add_argument("--no_torch", action="store_true")
  p.add_argument("--s2b", action="store_true", help="also time space-to-batch")
  p.add_argument("--shapes", choices=sorted(SHAPES), default="deeplab")
  args = p.parse_args()
  torch = None
  if not args.no_torch and importlib.util.find_spec("torch"):
    import torch
  forms = {"xla": lambda x, k, d: xla_conv(x, k, d), "taps": tap_conv, "mixed": mixed_conv}
  if args.s2b:
    forms["s2b"] = space_to_batch_conv
  passes = ["fwd"] + ([] if args.no_backward else ["fwd+bwd"])
  head = f"{'conv':<12}{'size':>8}{'cin':>6}{'cout':>6}{'rate':>5}{'pass':>9}" + "".join(
      f"{name + ' ms':>10}" for name in list(forms) + (["torch"] if torch else []))
  print(f"{jax.devices()[0].device_kind} ({jax.default_backend()}), batch 1, float32\n{head}\n" + "-" * len(head))
  rng = np.random.default_rng(0)
  for where, (h, w), cin, cout, rate in SHAPES[args.shapes]:
    x = jnp.asarray(rng.normal(size=(1, h, w, cin)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, cin, cout)) / np.sqrt(9 * cin), jnp.float32)
    for kind in passes:
      cells = []
      for name, form in forms.items():
        if kind == "fwd" and name == "mixed":
          cells.append(float("nan"))  # its forward is XLA's
          continue
        if kind == "fwd":
          f = jax.jit(lambda x, k, form=form: form(x, k, rate))
        else:
          f = jax.jit(jax.grad(lambda x, k, form=form: jnp.sum(form(x, k, rate) ** 2), argnums=(0, 1)))
        cells.append(timed(lambda: f(x, k), args.iters))
      if torch:
        tx = torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        tk = torch.from_numpy(np.asarray(k)).permute(3, 2, 0, 1).contiguous()
        conv = lambda: torch.nn.functional.conv2d(tx, tk, padding=rate, dilation=rate)
        if kind == "fwd":
          with torch.no_grad():
            cells.append(timed(conv, args.iters))
        else:
          tx.requires_grad_(True)
          tk.requires_grad_(True)
          cells.append(timed(lambda: conv().square().sum().backward(), args.iters))
      print(f"{where:<12}{f'{h}x{w}':>8}{cin:>6}{cout:>6}{rate:>5}{kind:>9}" + "".join(f"{c:>10.1f}" for c in cells),
            flush=True)


if __name__ == "__main__":
  main()
