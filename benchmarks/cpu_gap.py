"""jaxseg next to PyTorch on this CPU, before and after jaxseg's CPU work, in one run:

  python benchmarks/cpu_gap.py                 # the README's CPU table
  python benchmarks/cpu_gap.py --iters 5 --json cpu_gap.json

Rows: DeepLabv3-R50 OS8 inference at 513x513 batch 1 (normalise, forward, resize,
argmax), its training step at 321x321 batch 2 (SGD, auxiliary FCN loss), and STDC1
inference at 512x1024 batch 1; float32. "before" is jaxseg with XLA's convolutions
throughout, XLA's resize, BatchNorm unfolded (BEFORE below: none of
jaxseg's CPU work); "after" is jaxseg's default (jaxseg/models/atrous_conv.py: dilated,
3x3, 1x1 and depthwise convolutions and their gradients lowered for CPU;
jaxseg/models/fold_bn.py: BatchNorm folded for inference; jaxseg/models/layers.py: the
bilinear resize as two taps per axis; jaxseg/huge_pages.py: glibc's huge-page tunable,
which `python -m jaxseg.main` sets for itself). "PyTorch hp" is PyTorch with that same
tunable, to tell jaxseg's gain from one any program would get. Each side runs in
its own process, one after another, PyTorch first (the cases and both sides' code are
benchmarks/gpu_suite.py's, whose PyTorch DeepLabv3 is built layer for layer from the
same config). On a CPU shared with other jobs the load changes between the sides: the
load average is printed before each; --repeat runs the sides again and reports
each run's row.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import gpu_suite  # noqa: E402
from jaxseg import huge_pages  # noqa: E402

BEFORE = {"JAXSEG_DILATED_CONV": "xla", "JAXSEG_POINTWISE_CONV": "xla", "JAXSEG_FOLD_BN": "0",
          "JAXSEG_DEPTHWISE_CONV": "xla", "JAXSEG_RESIZE": "xla", "JAXSEG_HUGE_PAGES": "0"}
# PyTorch as users run it, and with the malloc tunable jaxseg's command line sets for itself
# (jaxseg/huge_pages.py): does the same tunable help PyTorch as much?
SIDES = [("PyTorch", "torch", {}), ("PyTorch hp", "torch", {"GLIBC_TUNABLES": huge_pages.TUNABLE}),
         ("jaxseg before", "jax", BEFORE), ("jaxseg after", "jax", {})]
RATIOS = [("jaxseg before", "PyTorch", "before/torch"), ("jaxseg after", "PyTorch", "after/torch"),
          ("jaxseg after", "PyTorch hp", "after/torch hp")]


def table(report):
  head = (f"{'case':<52}" + "".join(f"{label:>15}" for label, _, _ in SIDES)
          + "".join(f"{name:>16}" for _, _, name in RATIOS))
  lines = [head, "-" * len(head)]
  for case in report["cases"]:
    key = gpu_suite.case_key(case)
    ms = "step_ms" if case["kind"] == "train" else "latency_ms"
    for r, run in enumerate(report["runs"]):
      times = {label: run.get(label, {}).get("results", {}).get(key, {}).get(ms) for label, _, _ in SIDES}
      cells = list(times.values())
      ratios = [times[t] / times[j] if times[j] and times[t] else None for j, t, _ in RATIOS]
      name = key + " (ms)" + (f" run {r + 1}" if len(report["runs"]) > 1 else "")
      lines.append(f"{name:<52}" + "".join(f"{c:>15.0f}" if c else f"{'-':>15}" for c in cells)
                   + "".join(f"{x:>15.2f}x" if x else f"{'-':>16}" for x in ratios))
  lines.append("ratio = PyTorch time / jaxseg time (>1: jaxseg faster). before: "
               + " ".join(f"{k}={v}" for k, v in BEFORE.items()) + f"; XLA_FLAGS='{report['xla_flags']}'.")
  for r, run in enumerate(report["runs"]):
    lines.append(f"run {r + 1}, load average (1/5/15 min) before each side: "
                 + "; ".join(f"{label} {'/'.join(f'{v:.1f}' for v in run[label]['load_before'])}"
                             for label, _, _ in SIDES))
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--iters", type=int, default=3)
  p.add_argument("--repeat", type=int, default=1, help="runs of the three sides, one after another")
  p.add_argument("--json", default="cpu_gap.json")
  p.add_argument("--kinds", nargs="+", default=["predict", "train", "infer"],
                 help="the rows to measure: predict (DeepLabv3), train (DeepLabv3), infer (STDC1)")
  args = p.parse_args()
  args.tiny = False
  base = os.path.splitext(os.path.abspath(args.json))[0]
  report = {"cases": [c for c in gpu_suite.cases(False, cpu_table=True) if c["kind"] in args.kinds], "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "runs": []}
  for _ in range(args.repeat):
    run = {}
    for label, side, env in SIDES:
      load = os.getloadavg()
      got = gpu_suite.spawn(side, args, time.time() + 3600, f"{base}.{side}.part", env,
                            ["--cpu_table", "--iters", str(args.iters), "--kinds", *args.kinds])
      got["load_before"] = load
      run[label] = got
      os.remove(f"{base}.{side}.part")
      print(f"{label}: {got['results']}", file=sys.stderr, flush=True)
    report["runs"].append(run)
    with open(args.json, "w") as f:  # after every run: an interrupted --repeat keeps what it measured
      json.dump(report, f, indent=2)
  print(table(report))


if __name__ == "__main__":
  main()
