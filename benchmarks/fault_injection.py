"""Repeated fault injection on the tiny config, with a tally of the outcomes.

  python benchmarks/fault_injection.py --kills 10 --sigterms 5

kill -9: a checkpoint is written every step (so an async save is almost always in
flight) and the process is killed at a random moment; the next start must resume from
an intact checkpoint. SIGTERM: sent at a random step; the process must exit with code
3 after saving, and the next start must resume from that step.
"""
import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config", "configs/quickstart.py:tiny", "--config.train.log_every=1", "--config.train.eval_every=100000"]


def start(workdir, *extra):
  return subprocess.Popen([sys.executable, "-m", "jaxseg.main", *TINY, "--workdir", workdir, *extra], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until_step(proc, step, seen):
  for line in proc.stdout:
    seen.append(line)
    m = re.match(r"\[\s*(\d+)/", line)
    if m and int(m.group(1)) >= step:
      return int(m.group(1))
  return None


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--kills", type=int, default=10)
  p.add_argument("--sigterms", type=int, default=5)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  rng = random.Random(args.seed)
  root = tempfile.mkdtemp(prefix="jaxseg_faults_")
  tally = {"kill -9": [0, 0, 0], "SIGTERM": [0, 0, 0]}  # tries, clean resumes, partial saves named

  workdir = os.path.join(root, "kills")
  steps = ["--config.train.steps=100000", "--config.train.ckpt_every=1", "--config.train.keep_checkpoints=2"]
  last = 0
  for i in range(args.kills + 1):
    seen = []
    proc = start(workdir, *steps)
    first = read_until_step(proc, 1, seen)
    if first is None:  # the start failed: report it and stop
      print(f"start {i} failed (exit {proc.wait()}):\n{''.join(seen)}{proc.stderr.read()[-3000:]}")
      break
    resumed = [l for l in seen if l.startswith("Resumed from")]
    if i:  # every start after a kill must resume from a checkpoint at or after the last one seen saved - 1
      step = int(resumed[0].rsplit("/", 1)[1]) if resumed else -1
      tally["kill -9"][1] += step >= 0 and first == step + 1
      tally["kill -9"][2] += any("partially written" in l for l in seen)
    if i == args.kills:
      proc.kill()
      break
    read_until_step(proc, first + rng.randint(1, 5), seen)
    time.sleep(rng.uniform(0, 0.2))
    proc.kill()
    proc.wait()
    tally["kill -9"][0] += 1

  workdir = os.path.join(root, "sigterm")
  for i in range(args.sigterms):
    seen = []
    proc = start(workdir, "--config.train.steps=100000", "--config.train.ckpt_every=100000")
    first = read_until_step(proc, 1, seen)
    read_until_step(proc, first + rng.randint(1, 6), seen)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    tally["SIGTERM"][0] += 1
    stopped = re.search(r"at step (\d+);", err)
    check = start(workdir, "--config.train.steps=100000", "--config.train.ckpt_every=100000")
    seen = []
    after = read_until_step(check, 1, seen)
    check.kill()
    check.wait()
    # the check run saved nothing (killed before its first checkpoint), so the next round resumes too
    ok = proc.returncode == 3 and stopped and after == int(stopped.group(1)) + 1
    tally["SIGTERM"][1] += bool(ok)
  shutil.rmtree(root, ignore_errors=True)

  print(f"{'fault':<10}{'tries':>7}{'clean resumes':>15}{'partial saves named':>21}")
  for name, (tries, ok, partial) in tally.items():
    print(f"{name:<10}{tries:>7}{ok:>15}{partial if name == 'kill -9' else '-':>21}")


if __name__ == "__main__":
  main()
