"""Training input pipeline throughput: images/s of the real path (array_record ->
grain -> decode -> random scale, crop, flip, photometric -> batch) per CPU core and
with worker processes, at VOC-like and Cityscapes-like image sizes.

  python benchmarks/pipeline_throughput.py                     # table on this machine
  python benchmarks/pipeline_throughput.py --gpu_rate 40       # + cores to feed 40 img/s

The datasets are built with the real builders (voc_aug, cityscapes) from miniature
archives in the official layouts (tests/fake_archives.py helpers) whose images have
the real sizes: VOC 500x375 JPEG, Cityscapes 2048x1024 PNG, with smooth content so
that the files compress like photographs. Each setting runs in its own process pinned
to the first C cores (os.sched_setaffinity), so "per core" means exactly that.
Settings: cores C x grain worker processes W (W = 0: augmentation in the main process,
on grain's read threads). img/CPU-s (W = 0 only) divides the images by the CPU time
the process used, which stays meaningful on a machine shared with other work.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# name -> (config, crop, dataset, split)
CASES = {
    "voc 513": ("deeplabv3_voc", (513, 513), "voc_aug", "train"),
    "cityscapes 512x1024": ("mcibi_cityscapes", (512, 1024), "cityscapes", "train"),
}


def smooth_image(rng, h, w):
  """A photograph-like image: upsampled noise plus gradients (compresses like a photo)."""
  import cv2
  low = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
  image = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
  image += rng.integers(-6, 7, (h, w, 3), dtype=np.int16)  # sensor noise
  return np.clip(image, 0, 255).astype(np.uint8)


def build(data_dir, num_images):
  """Writes the miniature archives and prepares voc_aug and cityscapes (in a child
  process: TensorFlow stays out of this one, which forks grain workers)."""
  import io

  from PIL import Image

  from tests import fake_archives as fake

  rng = np.random.default_rng(0)
  manual = os.path.join(data_dir, "manual")

  def encode(array, fmt):
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()

  voc, sbd, ids = {}, {}, [f"2008_{i:06d}" for i in range(num_images)]
  for image_id in ids:
    voc[f"VOCdevkit/VOC2012/JPEGImages/{image_id}.jpg"] = encode(smooth_image(rng, 375, 500), "JPEG")
    label = np.zeros((375, 500), np.uint8)
    label[100:300, 150:400] = rng.integers(1, 21)
    voc[f"VOCdevkit/VOC2012/SegmentationClass/{image_id}.png"] = fake.palette_png(label)
  voc["VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt"] = "\n".join(ids).encode()
  voc["VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"] = ids[0].encode()
  sbd["benchmark_RELEASE/dataset/train.txt"] = sbd["benchmark_RELEASE/dataset/val.txt"] = b""
  images, labels = {}, {}
  for i in range(num_images):
    stem = f"aachen_{i:06d}_000019"
    images[f"leftImg8bit/train/aachen/{stem}_leftImg8bit.png"] = encode(smooth_image(rng, 1024, 2048), "PNG")
    ids_map = np.full((1024, 2048), 7, np.uint8)
    ids_map[:400] = 23
    ids_map[500:700, 300:900] = 26
    labels[f"gtFine/train/aachen/{stem}_gtFine_labelIds.png"] = encode(ids_map, "PNG")
  for split in ("val", "test"):
    images[f"leftImg8bit/{split}/x/x_000000_000000_leftImg8bit.png"] = encode(smooth_image(rng, 64, 128), "PNG")
    labels[f"gtFine/{split}/x/x_000000_000000_gtFine_labelIds.png"] = encode(np.zeros((64, 128), np.uint8), "PNG")
  fake.write({"VOCtrainval_11-May-2012.tar": voc, "benchmark.tgz": sbd,
              "leftImg8bit_trainvaltest.zip": images, "gtFine_trainvaltest.zip": labels}, manual,
             extracted=("benchmark.tgz",))
  for name in ("voc_aug", "cityscapes"):
    subprocess.run([sys.executable, "-m", "jaxseg.prepare", name, "--manual_dir", manual,
                    "--data_dir", os.path.join(data_dir, "tfds")], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(case, data_dir, workers, batches, batch_size):
  """Images/s of `batches` training batches after two warm-up batches."""
  from jaxseg.data import datasets, pipeline
  from jaxseg.config import load_config_file

  config_name, crop, dataset, split = CASES[case]
  config = load_config_file(os.path.join(ROOT, "configs", f"{config_name}.py"))
  config.input.crop_size, config.input.num_workers = crop, workers
  config.train.batch_size = batch_size
  source = datasets.source(datasets.load(dataset, os.path.join(data_dir, "tfds")), split)
  iterator = pipeline.train_iterator(pipeline.train_dataset(config, source), config)
  for _ in range(2):
    next(iterator)
  start, cpu = time.perf_counter(), time.process_time()
  for _ in range(batches):
    batch = next(iterator)
  assert batch["image"].shape == (batch_size, *crop, 3)
  images = batches * batch_size
  # Images per CPU-second of this process (all its threads): the per-core rate on a
  # busy machine too. Meaningless with worker processes, whose CPU time it misses.
  per_cpu_second = images / (time.process_time() - cpu) if not workers else float("nan")
  return images / (time.perf_counter() - start), per_cpu_second


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--images", type=int, default=32, help="images per fake dataset")
  parser.add_argument("--batches", type=int, default=6)
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--settings", default="1x0,1x1,2x0,2x2",
                      help="comma-separated CORESxWORKERS")
  parser.add_argument("--gpu_rate", type=float, default=0.0,
                      help="training images/s of one GPU, to say how many cores keep it busy")
  parser.add_argument("--data_dir", default="")
  parser.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args.child:  # one setting, pinned to the first C cores
    case, cores, workers = args.child.split("|")
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:int(cores)]))
    from absl import flags
    flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags
    print(json.dumps(measure(case, args.data_dir, int(workers), args.batches, args.batch_size)))
    return

  data_dir = args.data_dir or tempfile.mkdtemp(prefix="jaxseg_pipeline_")
  if not os.path.isdir(os.path.join(data_dir, "tfds", "cityscapes")):
    start = time.perf_counter()
    build(data_dir, args.images)
    print(f"built the miniature datasets ({args.images} images each) in "
          f"{time.perf_counter() - start:.0f}s under {data_dir}")
  available = len(os.sched_getaffinity(0))
  print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
  print(f"{'case':<22} {'cores':>5} {'workers':>7} {'img/s':>8} {'img/s/core':>10} {'img/CPU-s':>9}"
        + (f" {'cores for GPU':>13}" if args.gpu_rate else ""))
  for case in CASES:
    for setting in args.settings.split(","):
      cores, workers = (int(v) for v in setting.split("x"))
      if cores > available:
        continue
      out = subprocess.run([sys.executable, __file__, "--child", f"{case}|{cores}|{workers}",
                            "--data_dir", data_dir, "--batches", str(args.batches),
                            "--batch_size", str(args.batch_size)],
                           cwd=ROOT, capture_output=True, text=True, check=True)
      rate, per_cpu_second = json.loads(out.stdout.strip().splitlines()[-1])
      need = f" {args.gpu_rate / (rate / cores):>13.1f}" if args.gpu_rate else ""
      print(f"{case:<22} {cores:>5} {workers:>7} {rate:>8.1f} {rate / cores:>10.1f} "
            f"{per_cpu_second:>9.1f}{need}", flush=True)


if __name__ == "__main__":
  main()
