"""OneFormer's forward GFLOPs at the authors' training crops (XLA cost analysis, batch 1,
one task token) and its parameter count, for the R-50 and Swin-L configs of ADE20K,
Cityscapes and COCO (github.com/SHI-Labs/OneFormer, configs/<dataset>/oneformer_R50_*.yaml
and swin/oneformer_swin_large_*.yaml):

  config            crop        classes  queries
  ADE20K R-50       512x512     150      150
  ADE20K Swin-L     640x640     150      250
  Cityscapes R-50   512x1024    19       150
  Cityscapes Swin-L 512x1024    19       250
  COCO R-50         1024x1024   133      150
  COCO Swin-L       1024x1024   133      150

  python benchmarks/oneformer_flops.py                    # all six
  python benchmarks/oneformer_flops.py --only ade20k      # the rows whose name has "ade20k"
  python benchmarks/oneformer_flops.py --compile          # XLA's compiled-program analysis
  python benchmarks/oneformer_flops.py --memory 2,16      # + training-step memory at these batches

The forward pass is the inference model (backbone, pixel decoder, task encoder, query
transformer, 9 decoder layers with their predictions), without the post-processing. By
default the figures are XLA's analysis of the lowered program (nothing is compiled or
run: seconds per row on CPU); --compile analyses the program compiled for the default
backend instead (minutes per Swin-L row on a small CPU). XLA counts a multiply-add as 2
FLOPs; the GMAC column (half) is what fvcore-style counters, as detectron2's
analyze_model, call "FLOPs". Parameters: the inference model's (the authors' README
gives 219M for Swin-L), then with the training-only text mapper (6 layers, width 256,
16 context embeddings, CLIP's 49,408-token embedding).

Measured on CPU (lowered; --compile gives 161.2 for ADE20K R-50, 0.25% more):

  config             crop        K    N   GFLOPs   GMACs  params M  +text M
  ade20k_r50         512x512   150  150    160.8    80.4      47.3     64.9
  ade20k_swin_l      640x640   150  250    876.3   438.2     218.8    236.4
  cityscapes_r50     512x1024   19  150    318.2   159.1      47.3     64.8
  cityscapes_swin_l  512x1024   19  250   1091.2   545.6     218.8    236.3
  coco_r50           1024x1024 133  150    640.4   320.2      47.3     64.9
  coco_swin_l        1024x1024 133  150   2093.9  1046.9     218.8    236.3

Training-step memory (--memory; XLA's memory analysis of the compiled step on this CPU
backend, compiled with --xla_backend_optimization_level=0, which changes LLVM's code
generation, not XLA's buffer assignment; the ADE20K R-50 step: 150 queries, 100
ground-truth slots, 12,544 points, 10 prediction layers, the text mapper; GiB):

  config             crop       batch    args outputs    temp    peak compile s
  ade20k_r50         512x512        2    0.78    0.73   12.28   13.06      1109
  ade20k_r50         512x512       16    1.13    0.73  100.24  101.37      1431
  ade20k_swin_l      640x640        2    2.72    2.64   33.88   36.60       940
  coco_r50           1024x1024      2    0.93    0.73   37.35   38.27       627

(compile seconds on 2 CPU cores shared with other jobs: load average ~25 for the R-50 rows,
the other two at nice 19 beside a test run). Not measured yet: Cityscapes, COCO Swin-L. Batch 2 is a
device's share of the paper's batch 16 on 8 devices (the data-parallel step holds the
same per device, plus the gradient all-reduce); batch 16 on one device is the whole
batch. These are the CPU backend's temporaries (~6.3 GiB per image); an accelerator's
compiler assigns its own (not measured here: no GPU was available).
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
from jaxseg.models.heads.oneformer.oneformer import OneFormer  # noqa: E402
from jaxseg.models.heads.oneformer.pixel_decoder import PixelDecoder  # noqa: E402
from jaxseg.models.heads.oneformer.task_encoder import TaskEncoder  # noqa: E402
from jaxseg.models.heads.oneformer.text_mapper import TextMapper  # noqa: E402
from jaxseg.models.heads.oneformer.transformer_decoder import TransformerDecoder  # noqa: E402
from jaxseg.tools.flops import cost_flops, count  # noqa: E402

CONTEXT = 77  # task and text ids per sequence (CLIP's context)

# name -> (backbone, crop, classes, queries), from the authors' configs (module docstring)
CONFIGS = {
    "ade20k_r50": ("resnet50", (512, 512), 150, 150),
    "ade20k_swin_l": ("swin_l_384", (640, 640), 150, 250),
    "cityscapes_r50": ("resnet50", (512, 1024), 19, 150),
    "cityscapes_swin_l": ("swin_l_384", (512, 1024), 19, 250),
    "coco_r50": ("resnet50", (1024, 1024), 133, 150),
    "coco_swin_l": ("swin_l_384", (1024, 1024), 133, 150),
}


def backbone(name):
  if name == "resnet50":  # detectron2's R-50: 7x7 stem, strides in the 3x3 convs, no dilation
    return ResNet(depth=50, stem="7x7", output_stride=32, multi_grid=())
  p = PRESETS[name]
  return SwinTransformer(width=p["width"], depths=p["swin_depths"], heads=p["swin_heads"], window=p["swin_window"])


def model(backbone_name, classes, queries):
  """The authors' OneFormer: d 256, 6 deformable encoder layers (8 heads, 4 points, FFN
  1024), 9 decoder layers (8 heads, FFN 2048), a 2-layer query transformer."""
  return OneFormer(backbone=backbone(backbone_name), pixel_decoder=PixelDecoder(),
                   transformer_decoder=TransformerDecoder(classes, queries=queries), task_encoder=TaskEncoder())


def measure(name, compile_):
  backbone_name, crop, classes, queries = CONFIGS[name]
  net = model(backbone_name, classes, queries)
  x = jax.ShapeDtypeStruct((1, *crop, 3), jnp.float32)
  ids = jax.ShapeDtypeStruct((1, CONTEXT), jnp.int32)
  variables = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros(x.shape), jnp.zeros(ids.shape, jnp.int32)))
  texts = jax.eval_shape(lambda: TextMapper().init(jax.random.key(0), jnp.zeros((1, 1, CONTEXT), jnp.int32)))

  def forward(v, x, ids):
    out = net.apply(v, x, ids)
    return out["class_logits"], out["mask_logits"]

  t = time.perf_counter()
  lowered = jax.jit(forward).lower(variables, x, ids)
  flops = cost_flops(lowered.compile()) if compile_ else float(lowered.cost_analysis()["flops"])
  params = count(variables["params"])
  return {"name": name, "crop": f"{crop[0]}x{crop[1]}", "classes": classes, "queries": queries,
          "gflops": flops / 1e9, "params_m": params / 1e6, "with_text_m": (params + count(texts["params"])) / 1e6,
          "seconds": time.perf_counter() - t}


CONFIG_FILES = {"ade20k": "oneformer_ade20k", "cityscapes": "oneformer_cityscapes", "coco": "oneformer_coco"}


def train_memory(name, batch):
  """XLA's memory analysis of the compiled training step of the config `name` (the
  family's jaxseg.train.make_train_step: forward in training mode with the text mapper,
  matching and losses at 12,544 points on every layer, backward, AdamW, state donated)
  for `batch` images on one device: (arguments, outputs, temporaries, peak) in GiB, peak
  = arguments + temporaries + outputs not aliased to the donated state; and the compile
  seconds. A data-parallel step holds the same per device at its per-device batch (plus
  the gradient all-reduce)."""
  import importlib.util
  from jaxseg import families
  from jaxseg.train import make_train_step, state_factory
  dataset, _, variant = name.partition("_")
  spec = importlib.util.spec_from_file_location("c", os.path.join(ROOT, "configs", CONFIG_FILES[dataset] + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("swin_l" if variant == "swin_l" else "")
  config.train.batch_size = batch
  family = families.get(config)
  model = family.build_model(train=True)
  _, abstract_state, tx, schedule = state_factory(config, model, family)
  example = family.example(train=True)
  abstract_batch = {k: jax.ShapeDtypeStruct((batch, *v.shape), v.dtype) for k, v in example.items()}
  t = time.perf_counter()
  step = jax.jit(make_train_step(config, model, tx, schedule, family), donate_argnums=0)
  m = step.lower(abstract_state, abstract_batch).compile().memory_analysis()
  gib = lambda n: n / 2**30
  peak = m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
  return (gib(m.argument_size_in_bytes), gib(m.output_size_in_bytes), gib(m.temp_size_in_bytes), gib(peak),
          time.perf_counter() - t)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--only", default="", help="keep the configs whose name contains this")
  p.add_argument("--compile", action="store_true", help="analyse the compiled program, not the lowered one")
  p.add_argument("--memory", default="", help="training-step memory at these ','-separated batch sizes")
  args = p.parse_args()
  names = [n for n in CONFIGS if args.only in n]
  if args.memory:
    print(f"backend {jax.default_backend()}; training step (forward, losses, backward, AdamW), float32; GiB")
    print(f"{'config':<18} {'crop':<10} {'batch':>5} {'args':>7} {'outputs':>7} {'temp':>7} {'peak':>7} "
          f"{'compile s':>9}")
    for name in names:
      for batch in (int(b) for b in args.memory.split(",")):
        a, o, t, peak, seconds = train_memory(name, batch)
        crop = CONFIGS[name][1]
        print(f"{name:<18} {crop[0]}x{crop[1]:<6} {batch:>5} {a:>7.2f} {o:>7.2f} {t:>7.2f} {peak:>7.2f} "
              f"{seconds:>9.0f}", flush=True)
    return
  print(f"backend {jax.default_backend()}; {'compiled' if args.compile else 'lowered'} program, batch 1, float32")
  print(f"{'config':<18} {'crop':<10} {'K':>4} {'N':>4} {'GFLOPs':>8} {'GMACs':>8} {'params M':>9} "
        f"{'+text M':>8} {'s':>6}")
  for name in names:
    r = measure(name, args.compile)
    print(f"{r['name']:<18} {r['crop']:<10} {r['classes']:>4} {r['queries']:>4} {r['gflops']:>8.1f} "
          f"{r['gflops'] / 2:>8.1f} {r['params_m']:>9.1f} {r['with_text_m']:>8.1f} {r['seconds']:>6.1f}", flush=True)


if __name__ == "__main__":
  main()
