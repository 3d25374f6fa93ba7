"""Where the CPU time of DeepLabv3-R50 (and, with --cases stdc, of STDC1) goes: the XLA:CPU operations (thunks) of one
traced call of the inference graph (OS8, 513x513, batch 1: normalise, forward,
resize, argmax) and of the training step (321x321, batch 2, SGD, auxiliary FCN
loss), each operation's time, share and kind, summed per kind.

  python benchmarks/cpu_profile.py                       # both cases, top 25 operations
  python benchmarks/cpu_profile.py --cases infer --top 40
  python benchmarks/cpu_profile.py --cases stdc --iters 3    # STDC1 inference, 512x1024 batch 1
  XLA_FLAGS=... JAXSEG_DILATED_CONV=xla python benchmarks/cpu_profile.py   # another setting

The times come from jax.profiler: XLA:CPU's thunk executor records one event per
operation, with its HLO name; the kind is read from the compiled HLO (what the
fusion computes: a convolution with its window, a matmul, a reduction, data movement
such as slices, pads and transposes, or elementwise work such as BatchNorm and ReLU).
Independent operations run concurrently on the executor's threads, so the shares
are of the summed operation time; "busy" is that sum over the wall time (2.0 on two
cores fully used by this process) and "cpu" the process's CPU time over the wall
time. The load average is printed: on a shared machine every figure is inflated.
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import gpu_suite  # noqa: E402


def build_infer():
  """(compiled inference, its arguments), as benchmarks/gpu_suite.py's DeepLabv3 row."""
  from jaxseg.models.segmentor import build_model
  from jaxseg.models.fold_bn import inference_variables
  from jaxseg.tools.timing import synthetic_batch
  from jaxseg.train import make_predict
  case = gpu_suite.cases(False, cpu_table=True)[0]
  config = gpu_suite.train_config(case, False)
  model = build_model(config, config.model.eval_output_stride)
  batch = {"image": jax.device_put(synthetic_batch(config, 1, tuple(case["size"]), seed=1)["image"])}
  small = batch["image"][:, :65, :65].astype("float32")
  variables = jax.jit(lambda: model.init({"params": jax.random.key(0)}, small, train=False))()
  variables = inference_variables(variables)
  return jax.jit(make_predict(config, model)).lower(variables, batch).compile(), (variables, batch)


def build_train():
  """(compiled training step, its arguments), as benchmarks/gpu_suite.py's training row."""
  from jaxseg import sharding
  from jaxseg.models.segmentor import build_model
  from jaxseg.tools.timing import synthetic_batch
  from jaxseg.train import make_train_step, state_factory
  case = gpu_suite.cases(False, cpu_table=True)[1]
  config = gpu_suite.train_config(case, False)
  mesh = sharding.make_mesh()
  model = build_model(config)
  init_fn, abstract, tx, schedule = state_factory(config, model)
  state = jax.jit(init_fn)(jax.random.key(0))
  data = sharding.global_batch(synthetic_batch(config, case["batch"], tuple(case["size"])),
                               sharding.data_sharding(mesh))
  step = jax.jit(make_train_step(config, model, tx, schedule))  # not donated: the same state every call
  return step.lower(abstract, data).compile(), (state, data)


def build_stdc():
  """(compiled STDC1 inference at 512x1024 batch 1, its arguments), as benchmarks/gpu_suite.py's row."""
  import jax.numpy as jnp
  from jaxseg.convert import load_config_file
  from jaxseg.models.fold_bn import inference_variables
  from jaxseg.models.layers import resize
  from jaxseg.models.segmentor import build_model
  config = load_config_file(os.path.join(gpu_suite.ROOT, "configs", "stdc1_cityscapes.py"))
  model = build_model(config)
  x = jax.random.normal(jax.random.key(0), (1, 512, 1024, 3), jnp.float32)
  variables = jax.jit(lambda: model.init({"params": jax.random.key(1)}, x[:, :64, :128], train=True))()
  variables = inference_variables({"params": variables["params"], "batch_stats": variables["batch_stats"]})
  apply = jax.jit(lambda v, x: resize(model.apply(v, x, train=False)["seg"], x.shape[1:3]))
  return apply.lower(variables, x).compile(), (variables, x)


CASES = {"infer": ("DeepLabv3-R50 OS8 inference 513x513 b1", build_infer),
         "train": ("DeepLabv3-R50 OS8 training step 321x321 b2", build_train),
         "stdc": ("STDC1 inference 512x1024 b1", build_stdc)}


def hlo_kinds(hlo_text):
  """{instruction name: (kind, what)} for the top-level instructions of the entry
  computation, the kind read from the instruction or the computation it calls."""
  bodies, name = {}, None
  for line in hlo_text.splitlines():
    m = re.match(r"^(?:ENTRY )?%(\S+) ", line)
    if m:
      name, bodies[m.group(1)] = m.group(1), []
    elif name and line.strip() != "}":
      bodies[name].append(line)
  kinds = {}
  for line in hlo_text.splitlines():
    m = re.match(r"^\s+(?:ROOT )?%(\S+) = (\S+) (\S+)\(", line)
    if not m:
      continue
    inst, shape, op = m.groups()
    called = re.search(r"calls=%([\w.\-]+)", line)
    body = "\n".join(bodies.get(called.group(1), [])) if called else line
    where = re.search(r'op_name="[^/"]*/?([^"]*)"', line)
    where = where.group(1) if where else ""
    conv = re.search(r"convolution\(.*window=\{size=(\w+)([^}]*)\}", body)
    if conv:
      kind = f"conv {conv.group(1)}" + (" dilated" if "rhs_dilate" in conv.group(2) else "") + (
        " strided" if "stride=" in conv.group(2) else "")
    elif re.search(r" dot\(", body):
      kind = "matmul"
    elif re.search(r" (reduce|reduce-window)\(", body):
      kind = "reduction"
    elif re.search(r" (gather|scatter)\(", body):
      kind = "gather/scatter"
    elif re.search(r" (transpose|copy)\(", body) and not re.search(r" (add|multiply|maximum|subtract)\(", body):
      kind = "transpose/copy"
    elif re.search(r" (slice|dynamic-slice|pad|concatenate|dynamic-update-slice)\(", body) and not re.search(
        r" (multiply|maximum|rsqrt|subtract)\(", body):
      kind = "slice/pad/concat"
    elif re.search(r" (slice|dynamic-slice|pad|concatenate|dynamic-update-slice)\(", body):
      kind = "slice + elementwise"
    elif op in ("parameter", "constant", "tuple", "get-tuple-element", "bitcast"):
      kind = "free"
    else:
      kind = "elementwise"
    kinds[inst] = (kind, f"{shape} {where[-70:]}")
  return kinds


def trace_ops(compiled, args, iters):
  """({op: total ms}, {op: count}, wall s, cpu s) of `iters` traced calls."""
  jax.block_until_ready(compiled(*args))  # warm
  with tempfile.TemporaryDirectory() as d:
    cpu0, t = os.times(), time.perf_counter()
    jax.profiler.start_trace(d)
    for _ in range(iters):
      jax.block_until_ready(compiled(*args))
    jax.profiler.stop_trace()
    wall, cpu1 = time.perf_counter() - t, os.times()
    data = jax.profiler.ProfileData.from_file(sorted(glob.glob(f"{d}/**/*.xplane.pb", recursive=True))[-1])
  ms, count = collections.Counter(), collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      for e in line.events:
        op = dict(e.stats).get("hlo_op")
        if op:
          ms[op] += e.duration_ns / 1e6 / iters
          count[op] += 1
  cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
  return ms, count, wall / iters, cpu / iters


def report(title, ms, kinds, wall, cpu, top):
  total = sum(ms.values())
  by_kind = collections.Counter()
  for op, t in ms.items():
    by_kind[kinds.get(op, ("?", ""))[0]] += t
  lines = [f"== {title}: {1e3 * wall:.0f} ms wall per call, operations {total:.0f} ms summed, "
           f"busy {total / 1e3 / wall:.2f}, cpu {cpu / wall:.2f}, load {'/'.join(f'{v:.1f}' for v in os.getloadavg())}",
           f"{'kind':<24}{'ms':>9}{'share':>8}"]
  lines += [f"{k:<24}{t:>9.0f}{t / total:>8.1%}" for k, t in by_kind.most_common()]
  lines.append(f"{'top operations':<32}{'ms':>9}{'share':>8}  {'kind':<22}shape, where")
  for op, t in ms.most_common(top):
    kind, what = kinds.get(op, ("?", ""))
    lines.append(f"{op[:32]:<32}{t:>9.0f}{t / total:>8.1%}  {kind:<22}{what}")
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--cases", nargs="+", default=["infer", "train"], choices=list(CASES))
  p.add_argument("--iters", type=int, default=1, help="traced calls per case (after one untraced)")
  p.add_argument("--top", type=int, default=25)
  args = p.parse_args()
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, XLA_FLAGS='{os.environ.get('XLA_FLAGS', '')}', "
        f"JAXSEG_DILATED_CONV={os.environ.get('JAXSEG_DILATED_CONV', 'auto')}, "
        f"JAXSEG_FOLD_BN={os.environ.get('JAXSEG_FOLD_BN', '1')}")
  for name in args.cases:
    title, build = CASES[name]
    compiled, call_args = build()
    ms, _, wall, cpu = trace_ops(compiled, call_args, args.iters)
    print(report(title, ms, hlo_kinds(compiled.as_text()), wall, cpu, args.top), flush=True)


if __name__ == "__main__":
  main()
