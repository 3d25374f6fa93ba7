"""Memory of scoring instance and panoptic predictions at each image's stored size (COCO's
protocol): XLA's memory analysis of the compiled post-processing of the detection
(PANet: boxes scaled back, masks pasted on the label canvas) and universal (OneFormer:
mask logits resized to the canvas, cut and resized to the stored size, then the three
tasks' inference) families' `predict`, one eval image on one device, against the same
post-processing on the image canvas (the batch without "label_size").

  python benchmarks/stored_size_eval_memory.py [--configs panet_coco,oneformer_coco,...]

The model's outputs are inputs here (their shapes from the config: D detections with
M x M masks; N queries, K + 1 classes, mask logits at 1/4 of the canvas), so only the
post-processing compiles; nothing runs. The numbers are this host's backend's; on
the CPU backend (GiB, temp + output):

  config                canvas        label canvas   stored size   image canvas
  panet_coco            1408 x 1408   640 x 640      0.08          0.40
  panet_cityscapes      1024 x 2048   1024 x 2048    0.42          0.42
  oneformer_coco        1344 x 1344   640 x 640      2.03          4.26
  oneformer_cityscapes  1024 x 2048   1024 x 2048    5.29          5.29
  oneformer_ade20k      2048 x 2048   2048 x 2048    10.73         10.16
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

from jaxseg import families  # noqa: E402
from jaxseg.config import load_config_file  # noqa: E402
from jaxseg.data import transforms  # noqa: E402

CONFIGS = "panet_coco,panet_cityscapes,oneformer_coco,oneformer_cityscapes,oneformer_ade20k"


def outputs_from(family, config):
  """Replaces the family's model call by outputs of the model's shapes computed from the
  image (so that nothing is a constant): detections or per-task query outputs."""
  canvas = tuple(config.input.eval_size)
  if config.family == "detection":
    d, m = config.model.head.detections, 28
    def detect(model, variables, batch):
      x = batch["image"][:, :d, :m, 0].astype(jnp.float32) / 255  # (1, D, M)
      box = jnp.stack([x[..., 0], x[..., 1], x[..., 0] + 64, x[..., 1] + 64], -1) * 8
      return {"boxes": box, "scores": x[..., 2], "classes": (x[..., 3] * 7).astype(jnp.int32), "valid": x[..., 4] > 0,
              "masks": jnp.broadcast_to(x[..., None], (*x.shape, m))}
    family.detect = detect
    return
  n, k = config.model.head.queries, config.dataset.num_classes
  family._isthing = np.arange(k) < k // 2  # (the dataset's metadata; its values cost nothing here)
  def query_outputs(model, variables, images, tasks):
    low = images[:, ::4, ::4, :1]  # (1, H/4, W/4, 1)
    return [{"class_logits": jnp.broadcast_to(images[:, :n, :k + 1, 0], (1, n, k + 1)),
             "mask_logits": jnp.broadcast_to(low, (*low.shape[:3], n))}] * len(tasks)
  family.query_outputs = query_outputs
  assert canvas[0] % 4 == 0 and canvas[1] % 4 == 0


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--configs", default=CONFIGS)
  args = p.parse_args()
  print(f"backend {jax.default_backend()}, one eval image")
  print("| config | canvas | label canvas | stored size: temp + output GiB | image canvas: temp + output GiB | compile s |")
  print("|---|---|---|---|---|---|")
  for name in args.configs.split(","):
    config = load_config_file(os.path.join(ROOT, "configs", f"{name}.py"))
    family = families.get(config)
    outputs_from(family, config)
    example = family.example(train=False)
    start = time.time()
    sizes = []
    for with_label_size in (True, False):
      batch = {k: jax.ShapeDtypeStruct((1, *v.shape), v.dtype) for k, v in example.items()
               if with_label_size or k != "label_size"}
      m = jax.jit(lambda b: family.predict(None, None, b)).lower(batch).compile().memory_analysis()
      sizes.append((m.temp_size_in_bytes + m.output_size_in_bytes) / 2**30)
    print(f"| {name} | {tuple(config.input.eval_size)} | {transforms.eval_label_canvas(config.input)} | "
          f"{sizes[0]:.2f} | {sizes[1]:.2f} | {time.time() - start:.0f} |", flush=True)


if __name__ == "__main__":
  main()
