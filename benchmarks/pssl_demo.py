"""PSSL end to end on a laptop: the paper's chain (Li et al. 2022) on `shapes` instead of
ImageNet and VOC, every stage a normal run of the suite's entry points.

  1. classifiers   python -m jaxseg.main, configs/pssl_demo_classifier.py: an ensemble of
                   small ResNets on shapes_classification (one object per image, its class)
  2. pseudo labels python -m jaxseg.pssl.generate, configs/pssl_demo_generate.py: SmoothGrad
                   explanations of the ensemble -> deciles -> D9 = the class, the rest
                   background (class 6 of 7), as a TFDS dataset; scored here against the
                   view's true masks
  3. pretraining   python -m jaxseg.main, configs/pssl_demo_pretrain.py: DeepLabv3 on the
                   pseudo labels (background CE weight 0.1), no masks seen
  4. fine-tuning   python -m jaxseg.main, configs/pssl_demo_finetune.py: semantic shapes with
                   5% of its train labels, from the pretraining (model.init_from, the
                   7-class classifiers dropped) and from random initialisation, per seed

  python benchmarks/pssl_demo.py [--workdir DIR] [--seeds 2] [--members 2] [--jobs 2]

Prints the classifiers' val accuracy, the pseudo labels' mIoU against the true masks
(with the centre prior as a reference: the tenth of the pixels nearest the centre
labelled with the true class), the fine-tuned val mIoU pretrained vs scratch per seed
(the evaluation at the last step, never the best of several), and the wall time of
every stage. Runs of one stage go `--jobs` at a time. A rerun with the same --workdir
reuses every finished run (each is resumable); the logs are WORKDIR/<run>.log.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")


def launch(cmd, log):
  with open(log, "a") as f:
    f.write(f"$ {' '.join(cmd)}\n")
    f.flush()
    return subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)


def stage(name, runs, jobs):
  """Runs {log path: command} `jobs` at a time; the stage's wall seconds."""
  print(f"== {name}: {len(runs)} run(s)", flush=True)
  start, waiting, running = time.time(), list(runs.items()), []
  while waiting or running:
    while waiting and len(running) < jobs:
      log, cmd = waiting.pop(0)
      running.append((log, launch(cmd, log)))
    log, proc = running.pop(0)
    if proc.wait():
      with open(log) as f:
        tail = f.read()[-3000:]
      sys.exit(f"{name}: {' '.join(proc.args)} failed (exit {proc.returncode}); the end of {log}:\n{tail}")
    print(f"   done: {os.path.basename(log)} ({time.time() - start:.0f}s into the stage)", flush=True)
  return time.time() - start


def train_cmd(config, workdir, *overrides):
  return [sys.executable, "-m", "jaxseg.main", "--config", os.path.join(CONFIGS, config), "--workdir", workdir,
          *overrides]


def last_evaluation(workdir, metric):
  """`metric` of the training evaluation at the last step in WORKDIR/metrics.jsonl."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  rows = [r for r in rows if r.get("mode", "train") == "train" and metric in r]
  return max(rows, key=lambda r: r["step"])[metric]


def pseudo_label_scores(generation_dir):
  """{"pseudo": scores, "centre": scores} (jaxseg.metrics.segmentation_scores over
  shapes' 6 classes, the pseudo background 6 read as 0) of the generated labels and of
  the centre prior, against the true masks of the view, over every generated record."""
  from jaxseg import metrics
  from jaxseg.data import datasets
  generated = datasets.source(datasets.load("pssl_generated", os.path.join(generation_dir, "tfds")), "train")
  view = datasets.source(datasets.load("shapes_classification"), "train")
  cms = {"pseudo": np.zeros((6, 6), np.int64), "centre": np.zeros((6, 6), np.int64)}
  for i in range(len(generated)):
    record = generated[i]
    truth = view[int(record["index"])]
    mask = truth["mask"][..., 0]
    pseudo = record["label"][..., 0].astype(np.int64)
    pseudo[pseudo == 6] = 0
    if pseudo.shape != mask.shape:
      raise ValueError(f"generated record {i}: label {pseudo.shape}, true mask {mask.shape}")
    h, w = mask.shape
    yy, xx = np.mgrid[:h, :w]
    distance = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2
    centre = np.where(distance <= np.sort(distance.ravel())[h * w // 10 - 1], int(truth["label"]), 0)
    cms["pseudo"] += metrics.confusion_matrix(pseudo, mask.astype(np.int64), 6)
    cms["centre"] += metrics.confusion_matrix(centre, mask.astype(np.int64), 6)
  return {k: metrics.segmentation_scores(cm) for k, cm in cms.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default="runs/pssl_demo")
  parser.add_argument("--seeds", type=int, default=2, help="fine-tuning seeds (each: pretrained and scratch)")
  parser.add_argument("--members", type=int, default=2, help="classifiers in the ensemble")
  parser.add_argument("--jobs", type=int, default=2, help="runs of a stage at the same time")
  args = parser.parse_args()
  wd = os.path.abspath(args.workdir)
  os.makedirs(wd, exist_ok=True)
  os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH", "")]))
  # Runs of a stage that differ only by their weights (pretrained or not) compile the same programs once.
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(wd, "jax_cache"))
  load = os.getloadavg()[0]
  times = {}

  members = [os.path.join(wd, f"member{i}") for i in range(args.members)]
  times["1. classifiers"] = stage("classifiers", {
      f"{m}.log": train_cmd("pssl_demo_classifier.py", m, f"--config.seed={i}") for i, m in enumerate(members)},
      args.jobs)
  accuracy = [last_evaluation(m, "accuracy") for m in members]

  labels = os.path.join(wd, "labels")
  times["2. pseudo labels"] = stage("pseudo labels", {f"{labels}.log": [
      sys.executable, "-m", "jaxseg.pssl.generate", "--config", os.path.join(CONFIGS, "pssl_demo_generate.py"),
      "--workdir", labels, f"--config.members={tuple(members)!r}"]}, 1)
  t = time.time()
  quality = pseudo_label_scores(labels)
  times["2. pseudo labels"] += time.time() - t

  pretrained = os.path.join(wd, "pretrain")
  times["3. pretraining"] = stage("pretraining", {f"{pretrained}.log": train_cmd(
      "pssl_demo_pretrain.py", pretrained, f"--config.dataset.data_dir={os.path.join(labels, 'tfds')}")}, 1)

  runs = {}
  for kind, extra in (("pssl", [f"--config.model.init_from={pretrained}"]), ("scratch", [])):
    for seed in range(args.seeds):  # a seed's second run comes after its first: its programs are cached
      out = os.path.join(wd, f"finetune_{kind}_seed{seed}")
      runs[f"{out}.log"] = train_cmd("pssl_demo_finetune.py", out, f"--config.seed={seed}", *extra)
  times["4. fine-tuning"] = stage("fine-tuning", runs, args.jobs)
  miou = {(kind, seed): last_evaluation(os.path.join(wd, f"finetune_{kind}_seed{seed}"), "miou")
          for seed in range(args.seeds) for kind in ("pssl", "scratch")}

  print(f"\nPSSL demonstration on shapes ({wd}; load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end, {os.cpu_count()} CPUs)\n")
  print(f"classifiers (val accuracy): {', '.join(f'{a:.3f}' for a in accuracy)}")
  for name, key in (("pseudo labels", "pseudo"), ("centre prior", "centre")):
    s = quality[key]
    objects = np.mean([v for v in s["per_class_iou"][1:] if v is not None])
    print(f"{name + ' vs true masks:':<30} mIoU {100 * s['miou']:5.2f}  (background IoU "
          f"{100 * s['per_class_iou'][0]:5.2f}, objects {100 * objects:5.2f})")
  print("\n| seed | fine-tuned from PSSL pretraining | from scratch | gain |\n|---|---|---|---|")
  for seed in range(args.seeds):
    p, s = miou["pssl", seed], miou["scratch", seed]
    print(f"| {seed} | {100 * p:.2f} | {100 * s:.2f} | {100 * (p - s):+.2f} |")
  p = np.mean([miou["pssl", s] for s in range(args.seeds)])
  s = np.mean([miou["scratch", s] for s in range(args.seeds)])
  print(f"| mean | {100 * p:.2f} | {100 * s:.2f} | {100 * (p - s):+.2f} |")
  print("\n| stage | wall |\n|---|---|")
  for name, seconds in times.items():
    print(f"| {name} | {seconds / 60:.1f} min |")
  print(f"| total | {sum(times.values()) / 60:.1f} min |")


if __name__ == "__main__":
  main()
