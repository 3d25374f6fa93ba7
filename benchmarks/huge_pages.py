"""A config's training step with and without glibc's huge-page tunable (jaxseg/huge_pages.py,
what `python -m jaxseg.main` sets for itself): wall, user and system time and minor page
faults per step, each setting in its own process, alternating.

  python benchmarks/huge_pages.py                                  # PANet :tiny, DeepLabv3 quickstart :tiny
  python benchmarks/huge_pages.py --configs configs/panet_coco.py:tiny --repeat 3 --steps 10

The batch is the family's example batch (static shapes: the same program as a real
batch) with a random image. On a shared machine the wall times carry the load; the
system time and page faults do not depend on it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from jaxseg import huge_pages  # noqa: E402

SETTINGS = (("default", {}), ("huge pages", {"GLIBC_TUNABLES": huge_pages.TUNABLE}))  # --child never re-executes


def measure(spec, steps):
  """One process: compile the training step of `spec`, run it once, then time `steps` steps."""
  import jax
  import numpy as np

  from jaxseg import families
  from jaxseg.config import load_config_file
  from jaxseg.state import state_factory
  from jaxseg.train import make_train_step

  config = load_config_file(spec)
  family = families.get(config)
  model = family.build_model(train=True)
  init_fn, _, tx, schedule = state_factory(config, model, family)
  state = jax.jit(init_fn)(jax.random.key(0))
  example = family.example(train=True)
  batch = {k: np.repeat(v[None], config.train.batch_size, 0) for k, v in example.items()}
  batch["image"] = np.random.RandomState(0).randint(0, 255, batch["image"].shape).astype(batch["image"].dtype)
  step = jax.jit(make_train_step(config, model, tx, schedule, family)).lower(state, batch).compile()
  state, logs = step(state, batch)
  jax.block_until_ready(logs)
  r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
  for _ in range(steps):
    state, logs = step(state, batch)
  jax.block_until_ready(logs)
  r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
  return {"wall_ms": 1e3 * (t1 - t0) / steps, "user_ms": 1e3 * (r1.ru_utime - r0.ru_utime) / steps,
          "sys_ms": 1e3 * (r1.ru_stime - r0.ru_stime) / steps, "faults": (r1.ru_minflt - r0.ru_minflt) / steps}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--configs", nargs="+", default=["configs/panet_coco.py:tiny", "configs/quickstart.py:tiny"])
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--repeat", type=int, default=2, help="alternating processes per setting")
  p.add_argument("--child", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    print(json.dumps(measure(args.child, args.steps)))
    return
  if not huge_pages.wanted({}):
    print("note: jaxseg would not set the tunable on this machine (jaxseg/huge_pages.py: wanted)")
  base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "JAXSEG_HUGE_PAGES")}
  print(f"{'config':<32}{'setting':<12}{'wall ms':>9}{'user ms':>9}{'sys ms':>8}{'faults':>9}  load")
  for spec in args.configs:
    for r in range(args.repeat):
      for name, env in SETTINGS:
        load = os.getloadavg()[0]
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", spec, "--steps", str(args.steps)],
                             env={**base, **env}, cwd=ROOT, capture_output=True, text=True)
        if out.returncode:
          raise SystemExit(f"{spec} ({name}) failed:\n{out.stderr[-2000:]}")
        m = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{spec:<32}{name:<12}{m['wall_ms']:>9.0f}{m['user_ms']:>9.0f}{m['sys_ms']:>8.0f}{m['faults']:>9.0f}"
              f"  {load:.1f}", flush=True)


if __name__ == "__main__":
  main()
