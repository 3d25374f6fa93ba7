"""Forward FLOPs and parameters of a config's model, per module.

  python -m jaxseg.tools.flops --config configs/deeplabv3_voc.py --size 512
  python -m jaxseg.tools.flops --config configs/pspnet_cityscapes.py --size 1024,2048 --json out.json

FLOPs are XLA's cost analysis of the compiled forward pass (inference: the model at
model.eval_output_stride, batch 1 unless --batch), of the whole model and of each
module compiled on its own (backbone, neck, decode head; the auxiliary heads, which
run in training only, are listed apart). XLA counts a multiply-add as 2 FLOPs;
toolboxes that report "FLOPs" as multiply-accumulates (MACs) give half these numbers.
Nothing is executed, so large sizes are cheap to analyse.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp


def cost_flops(compiled) -> float:
  """FLOPs of a compiled program from XLA's cost analysis (NaN if it has none)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", float("nan")))


def parse_size(text, default=None):
  """"512" -> (512, 512); "512,1024" -> (512, 1024); "" -> default."""
  if not text:
    return tuple(default)
  parts = [int(p) for p in str(text).replace("x", ",").split(",")]
  if len(parts) not in (1, 2) or min(parts) < 1:
    raise ValueError(f"--size must be H or H,W with positive integers, got '{text}'")
  return (parts[0], parts[-1])


def abstract_variables(model, size, batch=1):
  """Shapes of the model's variables (nothing is allocated)."""
  x = jax.ShapeDtypeStruct((batch, *size, 3), jnp.float32)
  return jax.eval_shape(lambda k, x: model.init({"params": k, "dropout": k}, x, train=True),
                        jax.random.key(0), x)


def count(tree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))


def module_table(config, size=None, batch=1):
  """[{module, gflops, params}] of the forward pass at `size` (default: the training
  crop): "total" first, then backbone, neck, decode_head and the auxiliary heads."""
  from jaxseg.models.segmentor import build_model

  size = tuple(size or config.input.crop_size)
  model = build_model(config, config.model.eval_output_stride)
  variables = abstract_variables(model, size, batch)
  params = variables["params"]
  x = jax.ShapeDtypeStruct((batch, *size, 3), jnp.float32)

  def compiled_flops(fn, *args):
    return cost_flops(jax.jit(fn).lower(variables, *args).compile())

  def backbone(v, x):
    return model.bind(v).backbone(x, False)

  def neck(v, f):
    return model.bind(v).neck(f, False)

  def head(v, f):
    return model.bind(v).decode_head(f, False)

  features = jax.eval_shape(backbone, variables, x)
  rows = [{"module": "total", "gflops": compiled_flops(lambda v, x: model.apply(v, x)["seg"], x),
           "params": count(params) - sum(count(p) for k, p in params.items() if k.startswith("aux_heads_")),
           "note": "inference forward (auxiliary heads excluded)"},
          {"module": "backbone", "gflops": compiled_flops(backbone, x), "params": count(params["backbone"]),
           "note": f"ResNet-{config.model.backbone.depth}, width {config.model.backbone.width}, "
                   f"OS{config.model.eval_output_stride}"}]
  if model.neck is not None:
    rows.append({"module": "neck", "gflops": compiled_flops(neck, features), "params": count(params["neck"]),
                 "note": config.model.neck.name})
    features = jax.eval_shape(neck, variables, features)
  rows.append({"module": "decode_head", "gflops": compiled_flops(head, features),
               "params": count(params["decode_head"]), "note": config.model.head.name})
  for name in model.aux_heads:
    def aux(v, f, name=name):
      return model.bind(v).aux_heads[name](f, False)
    rows.append({"module": f"aux_heads.{name}", "gflops": compiled_flops(aux, features),
                 "params": count(params[f"aux_heads_{name}"]), "note": "training only"})
  for row in rows:
    row["gflops"] /= 1e9
  return rows


def format_rows(rows, size, batch):
  lines = [f"forward at {size[0]}x{size[1]}, batch {batch} (XLA cost analysis; 1 multiply-add = 2 FLOPs)",
           f"{'module':<16}{'GFLOPs':>12}{'params (M)':>13}  note", "-" * 64]
  for r in rows:
    lines.append(f"{r['module']:<16}{r['gflops']:>12.4g}{r['params'] / 1e6:>13.3f}  {r['note']}")
  return "\n".join(lines)


def define_flags():
  from absl import flags
  flags.DEFINE_string("size", "", "Input size H or H,W (default: the config's input.crop_size).")
  flags.DEFINE_integer("batch", 1, "Batch size of the analysed forward pass.")
  flags.DEFINE_string("json", "", "Also write the table here as JSON.")


def main(argv):
  from absl import flags

  from jaxseg.main import resolved_config
  f = flags.FLAGS
  config = resolved_config(argv)
  size = parse_size(f.size, config.input.crop_size)
  rows = module_table(config, size, f.batch)
  print(format_rows(rows, size, f.batch))
  if f.json:
    with open(f.json, "w") as out:
      json.dump({"size": size, "batch": f.batch, "modules": rows}, out, indent=2)
    print(f"wrote {f.json}")


if __name__ == "__main__":
  from jaxseg.main import run
  define_flags()
  run(main)
