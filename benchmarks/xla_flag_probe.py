"""XLA:CPU flags on the whole DeepLabv3-R50 model: the inference graph (OS8, 513x513,
batch 1, as benchmarks/cpu_gap.py's row) and, with --train, the training step, once
per flag setting, each in its own process (XLA aborts a process on a flag it does
not know: such a flag is reported as unknown to this jax), the default first and
last so the drift of a shared machine shows.

  python benchmarks/xla_flag_probe.py
  python benchmarks/xla_flag_probe.py --train --flags "--xla_cpu_use_onednn=true"
  python benchmarks/xla_flag_probe.py --cases stdc --iters 3    # STDC1 inference at 512x1024

Milliseconds per call (--iters after one warm call) and the ratio to the mean of the
two default runs (> 1: the flag is faster). The load average is printed per run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

PROBES = [
    "",
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
    "--xla_cpu_experimental_ynn_fusion_type=-dot,-individual_dot",  # Eigen's matmul reads transposed operands
    "--xla_cpu_use_xnnpack=false",
    "--xla_cpu_use_onednn=true",
    "--xla_cpu_enable_fast_math=true",
    "--xla_cpu_multi_thread_eigen=false",
    "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY_SLINKY",
]

CHILD = """
import json, os, sys, time
sys.path.insert(0, {root!r})
import jax
from benchmarks import cpu_profile
from jaxseg.tools.timing import timed
out = {{}}
for name in {cases!r}:
  compiled, args = cpu_profile.CASES[name][1]()
  out[name] = 1e3 * timed(lambda: jax.block_until_ready(compiled(*args)), {iters}, 1)
print(json.dumps(out))
"""


def probe(flags, cases, iters):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "XLA_FLAGS": flags}
  load = os.getloadavg()[0]
  proc = subprocess.run([sys.executable, "-c", CHILD.format(root=root, cases=cases, iters=iters)], env=env,
                        capture_output=True, text=True)
  if proc.returncode:
    unknown = "Unknown flag" in proc.stderr or "unknown" in proc.stderr.lower()
    return {"error": "unknown to this jax" if unknown else proc.stderr.strip().splitlines()[-1][:120]}, load
  return json.loads(proc.stdout.strip().splitlines()[-1]), load


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--flags", nargs="+", default=PROBES[1:], help="XLA_FLAGS settings to probe")
  p.add_argument("--train", action="store_true", help="the training step too")
  p.add_argument("--cases", nargs="+", default=["infer"], help="benchmarks/cpu_profile.py's cases")
  p.add_argument("--iters", type=int, default=1)
  args = p.parse_args()
  cases = args.cases + (["train"] if args.train and "train" not in args.cases else [])
  runs = [("", *probe("", cases, args.iters))]
  for flags in args.flags:
    runs.append((flags, *probe(flags, cases, args.iters)))
    print(f"{flags}: {runs[-1][1]}", file=sys.stderr, flush=True)
  runs.append(("", *probe("", cases, args.iters)))
  base = {c: sum(r[c] for f, r, _ in runs if not f and c in r) / 2 for c in cases}
  head = f"{'XLA_FLAGS':<84}" + "".join(f"{c + ' ms':>12}{'ratio':>7}" for c in cases) + f"{'load':>6}"
  lines = [head, "-" * len(head)]
  for flags, r, load in runs:
    cells = "".join(f"{r[c]:>12.0f}{base[c] / r[c]:>7.2f}" if c in r else f"{r.get('error', '-'):>19}"
                    for c in cases)
    lines.append(f"{flags or '(default)':<84}{cells}{load:>6.1f}")
  print("\n".join(lines))
  print(json.dumps({"runs": runs}))


if __name__ == "__main__":
  main()
