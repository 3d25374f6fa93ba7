"""PSSL pseudo-label generation: the ensemble explanation of every record of a
classification dataset, as deciles, then a TFDS dataset of images + pseudo labels +
deciles for pretraining.

  python -m jaxseg.pssl.generate --config configs/pssl_generate_imagenet.py --workdir runs/pssl_labels
  (then train with dataset.name="pssl_generated", dataset.data_dir="runs/pssl_labels/tfds")

The members are classifier directories: `python -m jaxseg.convert --classifier` of
torchvision / timm / transformers ResNets, or any directory holding a config.json
(model.backbone.*, dataset.num_classes) and a checkpoint of jaxseg.pssl.explain's
Classifier. Each record's image is resized to `input_size` (bilinear, the whole
image: no crop) and normalised; the deciles are computed at that size (jitted, the
batch sharded over every device of every host, each host reading its own rows of each
global batch) and stored per chunk (jaxseg/pssl/chunks.py). A restarted job continues
after the last complete chunk. When all chunks are done, the TFDS dataset
`pssl_generated` is built under WORKDIR/tfds (in a subprocess: TensorFlow never
enters this process), the deciles resized (nearest) to each image's stored size.
Multi-host: --distributed or --coordinator_address/--num_processes/--process_id, as
for python -m jaxseg.main.
"""
from __future__ import annotations

import concurrent.futures
import math
import os
import subprocess
import sys
import time

import numpy as np
from ml_collections import ConfigDict

from jaxseg.config import IMAGENET_MEAN, IMAGENET_STD
from jaxseg.errors import ConfigError, InputDataError, UserError


def default_config():
  """Every key a generation config may set, with its default (the paper's values)."""
  c = ConfigDict()
  c.source = dict(
      name="imagenet_pssl",  # a prepared TFDS dataset of {"image", "label": class index} records
      data_dir="",  # "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
      split="train",
      num_records=0,  # the first N records only; 0 = all
  )
  c.members = ()  # classifier directories (the paper: 15+ ImageNet classifiers)
  c.input_size = (224, 224)
  c.mean = IMAGENET_MEAN
  c.std = IMAGENET_STD
  c.samples = 50  # SmoothGrad's noisy copies
  c.noise = 0.1  # sigma = noise * (max - min) of the normalised image
  c.seed = 0
  c.batch_size = 32  # global, over all devices of all hosts
  c.chunk_batches = 16  # global batches per chunk (the unit of resumption)
  c.log_every = 1  # chunks between progress lines
  c.build_dataset = True  # build the TFDS dataset when every chunk is done
  return c


def check_config(config):
  base = default_config()
  for key in config.keys():
    if key not in base:
      raise ConfigError(f"unknown generation config key '{key}' (known: {', '.join(base.keys())})")
  for key in config.source.keys():
    if key not in base.source:
      raise ConfigError(f"unknown generation config key 'source.{key}' (known: {', '.join(base.source.keys())})")
  if not config.members:
    raise ConfigError("generation config key members is empty: give the classifier directories")
  if config.samples < 1 or config.noise < 0:
    raise ConfigError(f"generation config: samples must be >= 1 and noise >= 0 (got {config.samples}, "
                      f"{config.noise})")


def load_member(path):
  """(Classifier, variables, num_classes) of the classifier directory `path`."""
  from jaxseg.api import workdir_config
  from jaxseg.convert.init_from import read_variables
  from jaxseg.pssl.explain import classifier_from_config
  config = workdir_config(path)
  variables = read_variables(path, process_local=True)  # no collective: hosts read on their own
  if "fc" not in variables["params"] or "backbone" not in variables["params"]:
    raise InputDataError(f"member {path}: not a classifier (its variables have no 'fc' and 'backbone'; "
                         "convert ImageNet weights with python -m jaxseg.convert --classifier)")
  return classifier_from_config(config), variables, config.dataset.num_classes


def settings_of(config, source_dir, num_records, num_classes):
  """What determines the labels: a restart must agree on all of it."""
  return {"source": config.source.to_dict(), "source_dir": str(source_dir), "num_records": num_records,
          "members": [os.path.abspath(m) for m in config.members], "input_size": list(config.input_size),
          "mean": list(config.mean), "std": list(config.std), "samples": config.samples, "noise": config.noise,
          "seed": config.seed, "batch_size": config.batch_size, "chunk_batches": config.chunk_batches,
          "background": num_classes}


def load_rows(source, indices, size, num_classes, where, pool):
  """uint8 (n, h, w, 3) images resized to `size` and int32 (n,) classes of `indices`."""
  import cv2

  def one(i):
    try:
      record = source[int(i)]
    except Exception as e:
      raise InputDataError(f"{where} record {i} cannot be read ({type(e).__name__}: {e})") from e
    image = np.asarray(record["image"])
    if image.ndim != 3 or image.shape[2] != 3:
      raise InputDataError(f"{where} record {i}: image of shape {image.shape}, expected (H, W, 3)")
    if not 0 <= int(record["label"]) < num_classes:
      raise InputDataError(f"{where} record {i}: class {int(record['label'])} outside the members' "
                           f"{num_classes} classes")
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR), int(record["label"])

  rows = list(pool.map(one, indices))
  return np.stack([r[0] for r in rows]), np.asarray([r[1] for r in rows], np.int32)


def generate(config, workdir):
  """Generates every missing chunk of `workdir`, then (config.build_dataset) the TFDS
  dataset; returns the path of the dataset's data dir (WORKDIR/tfds)."""
  import jax
  import jax.numpy as jnp
  from jax.experimental import multihost_utils

  from jaxseg import sharding
  from jaxseg.data import datasets
  from jaxseg.pssl.chunks import ChunkStore
  from jaxseg.pssl.explain import make_explainer

  check_config(config)
  members = [load_member(p) for p in config.members]
  classes_of = {m[2] for m in members}
  if len(classes_of) != 1:
    raise ConfigError(f"generation config key members: the classifiers predict different numbers of "
                      f"classes ({sorted(classes_of)})")
  num_classes = classes_of.pop()
  source_dir = datasets.dataset_dir(config.source.name, config.source.data_dir)
  source = datasets.source(datasets.load(config.source.name, config.source.data_dir), config.source.split)
  n = len(source) if config.source.num_records <= 0 else min(len(source), config.source.num_records)

  mesh = sharding.make_mesh()
  b, procs, me = config.batch_size, jax.process_count(), jax.process_index()
  if b % mesh.size:
    raise ConfigError(f"generation config batch_size {b} is not divisible by the {mesh.size} devices")
  per_chunk = b * config.chunk_batches
  num_chunks = math.ceil(n / per_chunk)
  store = ChunkStore(workdir, settings_of(config, source_dir, n, num_classes), writer=me == 0)
  if me == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  first = int(multihost_utils.broadcast_one_to_all(np.int32(store.done())))  # every host starts there

  data_sh, repl = sharding.data_sharding(mesh), sharding.replicated(mesh)
  explain_fn = make_explainer([m[0] for m in members], config.samples, config.noise)
  mean, std = jnp.asarray(config.mean, jnp.float32), jnp.asarray(config.std, jnp.float32)
  base_key = jax.random.key(config.seed)

  def step(variables, images, classes, indices):
    keys = jax.vmap(lambda i: jax.random.fold_in(base_key, i))(indices)  # a record's noise: its index only
    return explain_fn(variables, (images.astype(jnp.float32) - mean) / std, classes, keys)

  explain = jax.jit(step, in_shardings=(repl, data_sh, data_sh, data_sh), out_shardings=data_sh)
  variables = jax.device_put([m[1] for m in members], repl)
  rows = slice(me * b // procs, (me + 1) * b // procs)  # this host's rows of every global batch
  where = f"dataset '{config.source.name}' split '{config.source.split}'"
  size = tuple(config.input_size)

  def launch(start):
    """Dispatches global batch [start, start + b) (indices past n repeat the last one)."""
    indices = np.minimum(np.arange(start, start + b), n - 1).astype(np.int32)
    images, classes = load_rows(source, indices[rows], size, num_classes, where, pool)
    batch = sharding.global_batch({"images": images, "classes": classes, "indices": indices[rows]}, data_sh)
    return indices, batch["classes"], explain(variables, batch["images"], batch["classes"], batch["indices"])

  print(f"pssl.generate: {n} records of {where}, {len(members)} member(s), {config.samples} samples, "
        f"{num_chunks} chunk(s) of {per_chunk}; {first} already done", flush=True)
  t0, done_images = time.time(), 0
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    for chunk in range(first, num_chunks):
      start, stop = chunk * per_chunk, min((chunk + 1) * per_chunk, n)
      starts = list(range(start, stop, b))
      parts, pending = [], launch(starts[0])
      for i in range(len(starts)):
        nxt = launch(starts[i + 1]) if i + 1 < len(starts) else None  # overlaps the device's work
        indices, classes, out = pending
        parts.append((indices, *multihost_utils.process_allgather((classes, out), tiled=True)))
        pending = nxt
      indices = np.concatenate([p[0] for p in parts])
      classes = np.concatenate([np.asarray(p[1]) for p in parts])
      deciles = np.concatenate([np.asarray(p[2]) for p in parts])
      keep = np.arange(start, start + len(indices)) < stop  # drop the padding of the last batch
      if me == 0:
        store.write(chunk, start, indices[keep], classes[keep], deciles[keep])
      done_images += stop - start
      if (chunk + 1 - first) % config.log_every == 0 or chunk == num_chunks - 1:
        rate = done_images / max(time.time() - t0, 1e-9)
        eta = (n - stop) / max(rate, 1e-9)
        print(f"chunk {chunk + 1}/{num_chunks}: {stop}/{n} images, {rate:.2f} images/s, "
              f"ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}", flush=True)
  multihost_utils.sync_global_devices("pssl chunks written")
  tfds_dir = os.path.join(os.path.abspath(workdir), "tfds")
  if config.build_dataset and me == 0:
    build_dataset(workdir)
  return tfds_dir


def build_dataset(workdir):
  """Builds TFDS `pssl_generated` under WORKDIR/tfds from the finished chunks, in a
  subprocess (python -m jaxseg.prepare)."""
  workdir = os.path.abspath(workdir)
  cmd = [sys.executable, "-m", "jaxseg.prepare", "pssl_generated", "--manual_dir", workdir,
         "--data_dir", os.path.join(workdir, "tfds")]
  print(f"building the TFDS dataset: {' '.join(cmd)}", flush=True)
  out = subprocess.run(cmd)
  if out.returncode:
    raise UserError(f"building the dataset failed (exit {out.returncode}): rerun {' '.join(cmd)}")


def main(argv):
  from absl import app, logging

  from jaxseg.main import FLAGS, start_distributed
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError("--config and --workdir are required")
  logging.set_verbosity(logging.WARNING)
  start_distributed()
  generate(FLAGS.config, FLAGS.workdir)


def run():
  from absl import app

  from jaxseg.main import EXIT_USER_ERROR  # noqa: F401  (defines --config, --workdir, --distributed, ...)
  try:
    app.run(main)
  except UserError as e:
    print(f"pssl.generate: error: {e}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
  run()
