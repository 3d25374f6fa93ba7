"""The accelerator benchmark in one command: jaxseg next to PyTorch on the same
synthetic inputs, on one GPU, within 8 minutes (compilation included).

  python benchmarks/gpu_suite.py                     # writes gpu_suite.json, prints the table
  python benchmarks/gpu_suite.py --json out.json --budget_s 420
  python benchmarks/gpu_suite.py --tiny              # the same code paths on CPU, tiny shapes (tested)

Cases, in this order (later cases are skipped, and say so, once a side's share of
--budget_s is spent):
  train  DeepLabv3-R101 OS8 513x513 batch 16 and PSPNet-R101 OS8 512x1024 batch 8,
         bfloat16 and float32: the jitted training step jaxseg trains with (global BN
         over the batch, SGD momentum + poly, auxiliary FCN loss, donated state):
         images/s, step time, compiled memory, MFU = XLA's FLOPs of the compiled step /
         step time / the chip's dense peak (jaxseg.tools.benchmark.PEAK_TFLOPS: bf16,
         or TF32 for float32, XLA's default precision there).
  infer  STDC1 and STDC2 at 512x1024 and 768x1536, batch 1 and 8, bfloat16: FPS of the
         inference graph (benchmarks/stdc_speed.py's).
  memory DANet's position attention (C = 512, OS8) forward + backward at 769x769,
         blocked and naive: XLA's compiled memory.
PyTorch runs the same cases where it has the network: DeepLabv3 built layer for layer
from the same config (jaxseg/tools/torch_deeplabv3.py, torchvision's layout: 7x7
stem, OS8, ASPP 12/24/36, FCN auxiliary head), channels-last, bfloat16 autocast (AMP)
for the bfloat16 rows, TF32 allowed for float32 (as XLA's default); STDC as
benchmarks/stdc_speed.py's plain torch.nn twin, channels-last, with torch.compile
(eager where compiling fails; the JSON says which). Its MFU uses XLA's FLOPs of the
same network. PSPNet and the PAM rows have no PyTorch side.

Each side runs in its own subprocess, jaxseg first, then PyTorch (two native GPU
stacks in one process, or XLA's memory preallocation beside PyTorch, are fragile);
--tiny, a CPU check that compares no timings, runs both at once.
Neither imports TensorFlow or grain. The JSON holds every number, the settings,
the device and the versions.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # jaxseg, and the sibling benchmarks as `benchmarks.NAME`
from jaxseg import huge_pages  # noqa: E402

STDC_SIZES = [(512, 1024), (768, 1536)]


def cases(tiny, cpu_table=False):
  """Every measurement, as plain dicts both sides agree on. --tiny keeps one case of
  each kind and path (ResNet-10 at width 8, STDC1 at 64x128): a minute or two on a CPU."""
  if cpu_table:  # benchmarks/cpu_gap.py's rows: the README's CPU comparison
    return [dict(kind="predict", model="DeepLabv3-R50", config="deeplabv3", depth=50, size=(513, 513), batch=1,
                 dtype="float32"),
            dict(kind="train", model="DeepLabv3-R50", config="deeplabv3", depth=50, size=(321, 321), batch=2,
                 dtype="float32"),
            dict(kind="infer", model="STDC1", config="stdc1", size=(512, 1024), batch=1, dtype="float32")]
  if tiny:
    train = [("DeepLabv3-R101", "deeplabv3", (33, 33), 2, "bfloat16"), ("PSPNet-R101", "pspnet", (33, 49), 2, "float32")]
    stdc = ["stdc1"], [(64, 128)], [1]
    pam = 257  # 33 x 33 positions: more than one 512-key block
  else:
    train = [(m, c, s, b, d) for m, c, s, b in (("DeepLabv3-R101", "deeplabv3", (513, 513), 16),
                                                 ("PSPNet-R101", "pspnet", (512, 1024), 8))
             for d in ("bfloat16", "float32")]
    stdc = ["stdc1", "stdc2"], STDC_SIZES, [1, 8]
    pam = 769
  out = [dict(kind="train", model=m, config=c, size=s, batch=b, dtype=d) for m, c, s, b, d in train]
  out += [dict(kind="infer", model=m.upper(), config=m, size=s, batch=b, dtype="bfloat16")
          for m in stdc[0] for s in stdc[1] for b in stdc[2]]
  out += [dict(kind="memory", model="DANet PAM", config="danet", size=(pam, pam), batch=1, dtype="float32")]
  return out


def case_key(c):
  return f"{c['kind']} {c['model']} {c['size'][0]}x{c['size'][1]} b{c['batch']} {c['dtype']}"


def train_config(case, tiny):
  """The jaxseg config of a training case (the PyTorch side builds its network from it)."""
  from jaxseg.config import tiny_variant
  h, w = case["size"]
  if case["config"] == "deeplabv3":
    from benchmarks.deeplabv3_speed import load_config
    c = load_config(case.get("depth", 101), h, case["batch"], case["dtype"])
  else:
    from jaxseg.convert import load_config_file
    c = load_config_file(os.path.join(ROOT, "configs", "pspnet_cityscapes.py"))
  if tiny:
    tiny_variant(c)
  c.input.crop_size = (h, w)
  c.train.batch_size = case["batch"]
  c.model.dtype = case["dtype"]
  return c


# ---- the jaxseg side ----

def jax_train(case, tiny, iters, warmup):
  import jax

  from jaxseg import sharding
  from jaxseg.models.segmentor import build_model
  from jaxseg.tools.benchmark import compiled_memory_bytes, peak_tflops
  from jaxseg.tools.timing import synthetic_batch, timed
  from jaxseg.tools.flops import cost_flops
  from jaxseg.train import make_train_step, state_factory

  config = train_config(case, tiny)
  mesh = sharding.make_mesh()
  data_sh, repl = sharding.data_sharding(mesh), sharding.replicated(mesh)
  model = build_model(config)
  init_fn, abstract, tx, schedule = state_factory(config, model)
  state_sh = sharding.state_shardings(abstract, mesh)
  state = jax.jit(init_fn, out_shardings=state_sh)(jax.random.key(0))
  data = sharding.global_batch(synthetic_batch(config, case["batch"], tuple(case["size"])), data_sh)
  step = jax.jit(make_train_step(config, model, tx, schedule), in_shardings=(state_sh, data_sh),
                 out_shardings=(state_sh, repl), donate_argnums=0)
  t = time.perf_counter()
  compiled = step.lower(abstract, data).compile()
  compile_s = time.perf_counter() - t
  holder = [state]

  def once():
    holder[0], logs = compiled(holder[0], data)
    jax.block_until_ready(logs["loss"])

  step_s = timed(once, iters, warmup)
  flops = cost_flops(compiled)
  peak = peak_tflops(jax.devices()[0].device_kind, case["dtype"]) if jax.default_backend() != "cpu" else None
  return {"step_ms": 1e3 * step_s, "images_per_sec": case["batch"] / step_s, "compile_s": compile_s,
          "memory_gb": compiled_memory_bytes(compiled) / 2 ** 30, "memory_source": "XLA memory analysis",
          "gflops_per_step": flops / 1e9, "peak_tflops": peak,
          "mfu": flops / step_s / 1e12 / peak if peak else None}


def jax_predict(case, tiny, iters, warmup):
  """DeepLabv3 inference as jaxseg evaluates: normalise, forward, resize, argmax."""
  import jax

  from jaxseg.models.fold_bn import inference_variables
  from jaxseg.models.segmentor import build_model
  from jaxseg.tools.timing import synthetic_batch, timed
  from jaxseg.train import make_predict

  config = train_config(case, tiny)
  model = build_model(config, config.model.eval_output_stride)
  batch = {"image": jax.device_put(synthetic_batch(config, case["batch"], tuple(case["size"]), seed=1)["image"])}
  small = batch["image"][:, :65, :65].astype("float32")  # parameter shapes do not depend on the size
  variables = jax.jit(lambda: model.init({"params": jax.random.key(0)}, small, train=False))()
  variables = inference_variables(variables)  # as jaxseg.load runs (JAXSEG_FOLD_BN=0: unfolded)
  predict = jax.jit(make_predict(config, model))
  t = time.perf_counter()
  compiled = predict.lower(variables, batch).compile()
  compile_s = time.perf_counter() - t
  seconds = timed(lambda: jax.block_until_ready(compiled(variables, batch)), iters, warmup)
  return {"fps": case["batch"] / seconds, "latency_ms": 1e3 * seconds, "compile_s": compile_s}


def jax_stdc(case, tiny, iters, warmup):
  import jax
  import jax.numpy as jnp

  from jaxseg.convert import load_config_file
  from jaxseg.models.fold_bn import inference_variables
  from jaxseg.models.layers import resize
  from jaxseg.models.segmentor import build_model
  from jaxseg.tools.timing import timed

  config = load_config_file(os.path.join(ROOT, "configs", f"{case['config']}_cityscapes.py"))
  config.model.dtype = case["dtype"]
  model = build_model(config)
  x = jax.random.normal(jax.random.key(0), (case["batch"], *case["size"], 3), jnp.float32)
  variables = jax.jit(lambda: model.init({"params": jax.random.key(1)}, x[:1], train=True))()
  variables = inference_variables({"params": variables["params"], "batch_stats": variables["batch_stats"]})
  apply = jax.jit(lambda v, x: resize(model.apply(v, x, train=False)["seg"], x.shape[1:3]))
  t = time.perf_counter()
  compiled = apply.lower(variables, x).compile()
  compile_s = time.perf_counter() - t
  seconds = timed(lambda: jax.block_until_ready(compiled(variables, x)), iters, warmup)
  return {"fps": case["batch"] / seconds, "latency_ms": 1e3 * seconds, "compile_s": compile_s}


def jax_pam(case, tiny, iters, warmup):
  from benchmarks.context_heads import pam_memory
  n, mem = pam_memory(case["size"][0], 32 if tiny else 512)
  return {"positions": n, "blocked_gb": mem["blocked"], "naive_gb": mem["naive"],
          "matrix_gb": n * n * 4 / 2 ** 30}


# ---- the PyTorch side ----

def torch_train(case, tiny, iters, warmup):
  import torch
  from torch.nn import functional as F

  from jaxseg.tools.timing import synthetic_batch, timed
  from jaxseg.tools.torch_deeplabv3 import DeepLabV3

  if case["config"] != "deeplabv3":
    return None
  config = train_config(case, tiny)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
  torch.backends.cudnn.benchmark = True
  torch.manual_seed(0)
  model = DeepLabV3(config).to(device).to(memory_format=torch.channels_last).train()
  o = config.optim
  opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
  size = tuple(case["size"])
  data = synthetic_batch(config, case["batch"], size)
  images = torch.from_numpy(data["image"]).permute(0, 3, 1, 2).to(device)
  labels = torch.from_numpy(data["label"]).long().to(device)
  mean = torch.tensor(config.dataset.mean, device=device).view(1, 3, 1, 1)
  std = torch.tensor(config.dataset.std, device=device).view(1, 3, 1, 1)
  amp = case["dtype"] == "bfloat16"
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  weights = config.loss.weights  # of "seg" and "aux"

  def once():
    x = ((images.float() - mean) / std).contiguous(memory_format=torch.channels_last)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
      out = model(x)
    loss = sum(w * F.cross_entropy(F.interpolate(out[k].float(), size, mode="bilinear", align_corners=False),
                                   labels, ignore_index=config.dataset.ignore_index)
               for k, w in weights.items() if k in out)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sync()

  if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
  t = time.perf_counter()
  once()
  first_s = time.perf_counter() - t
  step_s = timed(once, iters, warmup)
  memory = torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else float("nan")
  del model, opt
  return {"step_ms": 1e3 * step_s, "images_per_sec": case["batch"] / step_s, "first_step_s": first_s,
          "memory_gb": memory, "memory_source": "torch.cuda.max_memory_allocated" if device == "cuda" else "n/a"}


def torch_predict(case, tiny, iters, warmup):
  import torch
  from torch.nn import functional as F

  from jaxseg.tools.timing import synthetic_batch, timed
  from jaxseg.tools.torch_deeplabv3 import DeepLabV3

  config = train_config(case, tiny)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch.manual_seed(0)
  model = DeepLabV3(config, config.model.eval_output_stride).to(device).eval()
  model = model.to(memory_format=torch.channels_last)
  size = tuple(case["size"])
  images = torch.from_numpy(synthetic_batch(config, case["batch"], size, 1)["image"]).permute(0, 3, 1, 2)
  images = images.to(device)
  mean = torch.tensor(config.dataset.mean, device=device).view(1, 3, 1, 1)
  std = torch.tensor(config.dataset.std, device=device).view(1, 3, 1, 1)
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def once():
    with torch.no_grad():
      x = ((images.float() - mean) / std).contiguous(memory_format=torch.channels_last)
      F.interpolate(model(x)["seg"].float(), size, mode="bilinear", align_corners=False).argmax(1)
    sync()
  seconds = timed(once, iters, warmup)
  return {"fps": case["batch"] / seconds, "latency_ms": 1e3 * seconds}


def torch_stdc(case, tiny, iters, warmup):
  import torch

  from jaxseg.tools.timing import timed
  from benchmarks.stdc_speed import torch_runner

  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  torch.backends.cudnn.benchmark = True
  run, model = torch_runner(case["config"], tuple(case["size"]), case["batch"], case["dtype"], device)
  compiled, why, compile_s = "eager", "", None
  if device.type == "cpu":
    why = "not tried on CPU (compiling takes minutes there)"
  else:
    try:
      compiled_model = torch.compile(model)
      x = torch.randn(case["batch"], 3, *case["size"], device=device,
                      dtype=torch.bfloat16 if case["dtype"] == "bfloat16" else torch.float32)
      x = x.contiguous(memory_format=torch.channels_last)
      sync = torch.cuda.synchronize
      t = time.perf_counter()
      with torch.inference_mode():
        compiled_model(x)
      sync()
      compile_s = time.perf_counter() - t

      def run():
        with torch.inference_mode():
          compiled_model(x)
        sync()
      compiled = "torch.compile"
    except Exception as e:  # noqa: BLE001 - no compiler toolchain there: eager is the comparison
      why, compile_s = f"{type(e).__name__}: {str(e)[:200]}", None
  seconds = timed(run, iters, warmup)
  return {"fps": case["batch"] / seconds, "latency_ms": 1e3 * seconds, "mode": compiled,
          "compile_s": compile_s, "compile_error": why}


SIDES = {"jax": {"train": jax_train, "infer": jax_stdc, "memory": jax_pam, "predict": jax_predict},
         "torch": {"train": torch_train, "infer": torch_stdc, "memory": lambda *a: None, "predict": torch_predict}}


def run_side(side, tiny, deadline, out_path, cpu_table=False, iters=None, kinds=None):
  """Measures every case this side has, in order, until `deadline` (time.time())."""
  if side == "jax":
    import jax
    info = {"device": f"{jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()})",
            "version": jax.__version__}
  else:
    import torch
    info = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
            "version": torch.__version__}
  # Proof that the accelerator host needs neither (it has neither).
  info["imported"] = sorted(m for m in ("tensorflow", "grain", "tensorflow_datasets") if m in sys.modules)
  if side == "torch" and tiny:
    import torch
    torch.set_num_threads(1)  # tiny shapes on a shared CPU: threads only contend
  iters, warmup = (iters or (1 if tiny else 10)), (1 if tiny or cpu_table else 3)
  results = {}
  for case in cases(tiny, cpu_table):
    if kinds and case["kind"] not in kinds:
      continue
    key = case_key(case)
    if time.time() > deadline:
      r = {"skipped": "time budget spent"}
    else:
      try:
        r = SIDES[side][case["kind"]](case, tiny, iters, warmup)
      except Exception as e:  # noqa: BLE001 - one failed case (e.g. out of memory) must not lose the others
        r = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
    if r is not None:
      results[key] = r
    print(f"{side}: {key}: {r}", file=sys.stderr, flush=True)
    info["imported"] = sorted(m for m in ("tensorflow", "grain", "tensorflow_datasets") if m in sys.modules)
    with open(out_path, "w") as f:  # after every case: a killed run keeps what it measured
      json.dump({"info": info, "results": results}, f)


def spawn(side, args, deadline, out_path, env=None, extra=()):
  return collect(start(side, args, deadline, out_path, env, extra))


def start(side, args, deadline, out_path, env=None, extra=()):
  """Starts one side's process; `collect` waits for it and reads what it measured."""
  env = {**os.environ, **(env or {})}
  if side == "torch":
    env["JAX_PLATFORMS"] = "cpu"  # its configs import jax: keep it off the GPU
  cmd = [sys.executable, os.path.abspath(__file__), "--side", side, "--deadline", str(deadline), "--out", out_path]
  cmd += (["--tiny"] if args.tiny else []) + list(extra)
  log = tempfile.TemporaryFile("w+")  # not a pipe: a side never blocks on output nobody reads yet
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
  return proc, log, time.time(), deadline, out_path


def collect(started):
  proc, log, t, deadline, out_path = started
  try:
    proc.wait(timeout=max(60, deadline - t + 120))
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
  log.seek(0)
  stderr = log.read()
  log.close()
  got = {"info": {}, "results": {}}
  if os.path.exists(out_path):
    with open(out_path) as f:
      got = json.load(f)
  got["seconds"] = time.time() - t
  if proc.returncode:
    got["exit"] = f"exit {proc.returncode}: {stderr[-2000:]}"
  return got


def ratio(a, b):
  return a / b if a and b else None


def table(report):
  j, t = report["jax"]["results"], report["torch"]["results"]
  fmt = lambda v, f: "-" if v is None or v != v else f.format(v)
  lines = [f"jaxseg (jax {report['jax']['info'].get('version')}) on {report['jax']['info'].get('device')}; "
           f"PyTorch {report['torch']['info'].get('version')} on {report['torch']['info'].get('device')}",
           f"{'case':<44}{'jax img/s':>10}{'jax ms':>9}{'mem GB':>8}{'MFU':>7}{'torch img/s':>12}{'torch ms':>10}"
           f"{'mem GB':>8}{'MFU':>7}{'jax/torch':>10}"]
  lines.append("-" * len(lines[1]))
  for case in report["cases"]:
    key = case_key(case)
    a, b = j.get(key, {}), t.get(key) or {}
    if case["kind"] == "memory":
      lines.append(f"{key:<44}" + ("  " + (a.get("skipped") or a.get("error") or "not measured") if "blocked_gb" not in a else
                   f"  blocked {a['blocked_gb']:.2f} GB, naive {a['naive_gb']:.2f} GB "
                   f"(the N x N matrix alone {a['matrix_gb']:.2f} GB, N = {a['positions']})"))
      continue
    rate = "images_per_sec" if case["kind"] == "train" else "fps"
    ms = "step_ms" if case["kind"] == "train" else "latency_ms"
    note = a.get("skipped") or a.get("error") or b.get("skipped") or b.get("error") or ""
    lines.append(f"{key:<44}{fmt(a.get(rate), '{:.2f}'):>10}{fmt(a.get(ms), '{:.1f}'):>9}"
                 f"{fmt(a.get('memory_gb'), '{:.2f}'):>8}{fmt(a.get('mfu'), '{:.1%}'):>7}"
                 f"{fmt(b.get(rate), '{:.2f}'):>12}{fmt(b.get(ms), '{:.1f}'):>10}"
                 f"{fmt(b.get('memory_gb'), '{:.2f}'):>8}{fmt(b.get('mfu'), '{:.1%}'):>7}"
                 f"{fmt(ratio(a.get(rate), b.get(rate)), '{:.2f}x'):>10}" + (f"  {note[:60]}" if note else ""))
  lines.append("jax/torch > 1: jaxseg faster. Memory: jaxseg from XLA's memory analysis of the compiled "
               "program, PyTorch from torch.cuda.max_memory_allocated. PyTorch's MFU counts XLA's FLOPs of the "
               "same network.")
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--tiny", action="store_true", help="tiny shapes and one timed call: a CPU check of every path")
  p.add_argument("--json", default="gpu_suite.json")
  p.add_argument("--budget_s", type=float, default=420.0, help="wall-clock budget; jaxseg gets 60%% of it first")
  p.add_argument("--no_torch", action="store_true")
  p.add_argument("--side", choices=sorted(SIDES), help=argparse.SUPPRESS)
  p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
  p.add_argument("--out", help=argparse.SUPPRESS)
  p.add_argument("--cpu_table", action="store_true", help=argparse.SUPPRESS)  # benchmarks/cpu_gap.py's cases
  p.add_argument("--iters", type=int, help=argparse.SUPPRESS)
  p.add_argument("--kinds", nargs="*", help=argparse.SUPPRESS)  # only the cases of these kinds
  args = p.parse_args()
  if args.side == "jax":
    huge_pages.reexec()  # as `python -m jaxseg.main` does
  if args.side:
    return run_side(args.side, args.tiny, args.deadline, args.out, args.cpu_table, args.iters, args.kinds)

  t0 = time.time()
  report = {"settings": {"tiny": args.tiny, "budget_s": args.budget_s}, "cases": cases(args.tiny)}
  base = os.path.splitext(os.path.abspath(args.json))[0]
  jax_side = start("jax", args, t0 + 0.6 * args.budget_s, base + ".jax.part")
  # --tiny times nothing worth comparing: both sides at once, each on its own core.
  torch_side = None if args.no_torch or not args.tiny else start("torch", args, t0 + args.budget_s,
                                                                  base + ".torch.part")
  report["jax"] = collect(jax_side)
  # Whatever of its share jaxseg left over goes to PyTorch.
  if not args.no_torch and not args.tiny:
    torch_side = start("torch", args, t0 + args.budget_s, base + ".torch.part")
  report["torch"] = collect(torch_side) if torch_side else {"info": {}, "results": {}}
  for case in report["cases"]:  # PyTorch's MFU from XLA's FLOPs of the same network
    a, b = report["jax"]["results"].get(case_key(case), {}), report["torch"]["results"].get(case_key(case))
    if b and "step_ms" in b and a.get("gflops_per_step") and a.get("peak_tflops"):
      b["mfu"] = a["gflops_per_step"] / b["step_ms"] / a["peak_tflops"]
  report["seconds"] = time.time() - t0
  print(table(report))
  print(f"total {report['seconds']:.0f} s" + "".join(f"; {s}: {report[s]['exit']}" for s in ("jax", "torch")
                                                      if report[s].get("exit")))
  with open(args.json, "w") as f:
    json.dump(report, f, indent=2)
  for side in ("jax", "torch"):
    if os.path.exists(f"{base}.{side}.part"):
      os.remove(f"{base}.{side}.part")
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
