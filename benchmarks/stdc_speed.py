"""Inference speed of STDC1/STDC2-Seg: jaxseg next to a PyTorch implementation of the
same network (written below in plain torch.nn, layer for layer), same device, same
inputs, same run.

  python benchmarks/stdc_speed.py                       # both models, 1024x512 and 1536x768, batch 1 and 8, fp32 and bf16
  python benchmarks/stdc_speed.py --quick --batches 1   # 1 warm-up + 3 timed calls per row
  python benchmarks/stdc_speed.py --check               # first: copy jaxseg's weights into the PyTorch model, compare logits

What is timed is the inference graph: backbone, context path, FFM and seg head, and the
bilinear upsampling of the logits to the input size (as the paper's timing of the
BiSeNet forward); no auxiliary or detail head. Inputs are random normalised float32
images; with --dtypes bfloat16 jaxseg computes in bf16 (model.dtype, params cast
inside) and PyTorch runs the model and input in bf16. PyTorch runs eager (no
torch.compile), channels-last with cudnn.benchmark on a GPU. FPS = batch / seconds
per call. The paper's figures (GTX 1080Ti, TensorRT, fp32 to the best of its
description) are printed beside: STDC1-Seg50 250.4, STDC2-Seg50 188.6,
STDC1-Seg75 126.7, STDC2-Seg75 97.0.

Imports only jaxseg.config and jaxseg.models (so it runs where orbax, grain and
tensorflow are missing: then the jaxseg package __init__ is bypassed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import types

def _threads_from_argv(argv):
  """--threads N must act before jax starts its CPU thread pool: read it early."""
  for i, arg in enumerate(argv):
    if arg.startswith("--threads"):
      return int(arg.split("=", 1)[1] if "=" in arg else argv[i + 1])
  return 0


THREADS = _threads_from_argv(sys.argv)
if THREADS == 1:  # XLA CPU: single-threaded Eigen convolutions and ops
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_cpu_multi_thread_eigen=false").strip()

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as tnn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
try:
  from jaxseg.models.segmentor import build_model
except ImportError:  # no orbax/grain here: load jaxseg.models without the package __init__
  package = types.ModuleType("jaxseg")
  package.__path__ = [os.path.join(ROOT, "jaxseg")]
  sys.modules["jaxseg"] = package
  from jaxseg.models.segmentor import build_model
from jaxseg.models.layers import resize
from jaxseg.tools.timing import timed

PAPER_FPS = {("stdc1", (512, 1024)): 250.4, ("stdc2", (512, 1024)): 188.6,
             ("stdc1", (768, 1536)): 126.7, ("stdc2", (768, 1536)): 97.0}
LAYERS = {"stdc1": (2, 2, 2), "stdc2": (4, 5, 3)}


def load_config(name, dtype):
  from jaxseg.config import load_config_file
  c = load_config_file(os.path.join(ROOT, "configs", f"{name}_cityscapes.py"))
  c.model.dtype = dtype
  return c


# ---- the same network in PyTorch (module names follow jaxseg's parameter names) ----

class ConvBN(tnn.Module):
  def __init__(self, cin, cout, kernel=3, stride=1, relu=True):
    super().__init__()
    self.conv = tnn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
    self.bn = tnn.BatchNorm2d(cout, eps=1e-5)
    self.relu = relu

  def forward(self, x):
    x = self.bn(self.conv(x))
    return F.relu(x) if self.relu else x


class STDCModule(tnn.Module):
  def __init__(self, cin, n, stride, blocks=4):
    super().__init__()
    widths = [n // 2 ** i for i in range(1, blocks)]
    widths.append(widths[-1])
    self.stride = stride
    self.block1 = ConvBN(cin, widths[0], 1)
    if stride == 2:
      self.downsample_conv = tnn.Conv2d(widths[0], widths[0], 3, 2, 1, groups=widths[0], bias=False)
      self.downsample_bn = tnn.BatchNorm2d(widths[0], eps=1e-5)
    self.rest = [f"block{i}" for i in range(2, blocks + 1)]
    for name, cin_, cout in zip(self.rest, widths[:-1], widths[1:]):
      setattr(self, name, ConvBN(cin_, cout, 3))

  def forward(self, x):
    first = self.block1(x)
    y, skip = first, first
    if self.stride == 2:
      y = self.downsample_bn(self.downsample_conv(first))
      skip = F.avg_pool2d(first, 3, 2, 1)
    outs = [skip]
    for name in self.rest:
      y = getattr(self, name)(y)
      outs.append(y)
    return torch.cat(outs, 1)


class STDCNet(tnn.Module):
  def __init__(self, layers, width=64):
    super().__init__()
    self.stage1 = ConvBN(3, width // 2, 3, 2)
    self.stage2 = ConvBN(width // 2, width, 3, 2)
    self.names, cin = [], width
    for s, num in enumerate(layers):
      n = width * 4 * 2 ** s
      for m in range(num):
        setattr(self, f"stage{s + 3}_{m}", STDCModule(cin, n, 2 if m == 0 else 1))
        cin = n
        self.names.append((s, f"stage{s + 3}_{m}"))

  def forward(self, x):
    x = self.stage2(self.stage1(x))
    feats = {}
    for s, name in self.names:
      x = getattr(self, name)(x)
      feats[f"c{s + 2}"] = x
    return feats


class ARM(tnn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    self.conv = ConvBN(cin, cout, 3)
    self.attention = ConvBN(cout, cout, 1, relu=False)

  def forward(self, x):
    f = self.conv(x)
    return f * torch.sigmoid(self.attention(f.mean((2, 3), keepdim=True)))


class FFM(tnn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    self.conv = ConvBN(cin, cout, 1)
    self.squeeze = tnn.Conv2d(cout, cout // 4, 1, bias=False)
    self.excite = tnn.Conv2d(cout // 4, cout, 1, bias=False)

  def forward(self, spatial, context):
    f = self.conv(torch.cat([spatial, context], 1))
    a = torch.sigmoid(self.excite(F.relu(self.squeeze(f.mean((2, 3), keepdim=True)))))
    return f * a + f


class Output(tnn.Module):
  def __init__(self, cin, mid, classes):
    super().__init__()
    self.conv = ConvBN(cin, mid, 3)
    self.classifier = tnn.Conv2d(mid, classes, 1, bias=False)

  def forward(self, x):
    return self.classifier(self.conv(x))


class STDCHead(tnn.Module):
  def __init__(self, width, classes=19, channels=256):
    super().__init__()
    ctx = channels // 2
    self.global_context = ConvBN(width * 16, ctx, 1)
    self.arm32 = ARM(width * 16, ctx)
    self.up32 = ConvBN(ctx, ctx, 3)
    self.arm16 = ARM(width * 8, ctx)
    self.up16 = ConvBN(ctx, ctx, 3)
    self.ffm = FFM(width * 4 + ctx, channels)
    self.seg_head = Output(channels, channels, classes)

  def forward(self, f):
    c2, c3, c4 = f["c2"], f["c3"], f["c4"]
    g = self.global_context(c4.mean((2, 3), keepdim=True))
    p32 = self.arm32(c4) + g
    u32 = self.up32(F.interpolate(p32, c3.shape[2:], mode="nearest"))
    p16 = self.arm16(c3) + u32
    u16 = self.up16(F.interpolate(p16, c2.shape[2:], mode="nearest"))
    return self.seg_head(self.ffm(c2, u16))


class TorchSTDCSeg(tnn.Module):
  def __init__(self, layers, width=64, classes=19):
    super().__init__()
    self.backbone = STDCNet(layers, width)
    self.decode_head = STDCHead(width, classes)

  def forward(self, x):
    seg = self.decode_head(self.backbone(x))
    return F.interpolate(seg, x.shape[2:], mode="bilinear", align_corners=False)


def load_jax_weights(torch_model, variables):
  """Copies jaxseg's params/batch_stats (inference subtree) into the PyTorch model."""
  state = {}
  for collection, renames in (("params", {"kernel": "weight", "scale": "weight", "bias": "bias"}),
                              ("batch_stats", {"mean": "running_mean", "var": "running_var"})):
    flat = jax.tree_util.tree_flatten_with_path(variables[collection])[0]
    for path, value in flat:
      keys = [p.key for p in path]
      if any(k in ("aux16_head", "aux32_head", "detail_head") for k in keys):
        continue
      value = np.array(value)
      if keys[-1] == "kernel":
        value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW (depthwise: (3,3,1,C) -> (C,1,3,3))
      state[".".join(keys[:-1] + [renames[keys[-1]]])] = torch.from_numpy(np.array(value))
  missing, unexpected = torch_model.load_state_dict(state, strict=False)
  missing = [k for k in missing if not k.endswith("num_batches_tracked")]
  if missing or unexpected:
    raise RuntimeError(f"weight transfer: missing {missing[:5]}, unexpected {unexpected[:5]}")


def jax_runner(name, size, batch, dtype):
  config = load_config(name, dtype)
  model = build_model(config)
  x = jax.random.normal(jax.random.key(0), (batch, *size, 3), jnp.float32)
  variables = jax.jit(lambda: model.init({"params": jax.random.key(1)}, x[:1], train=True))()
  variables = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
  apply = jax.jit(lambda v, x: resize(model.apply(v, x, train=False)["seg"], x.shape[1:3]))
  return (lambda: apply(variables, x).block_until_ready()), variables, apply


def torch_runner(name, size, batch, dtype, device):
  model = TorchSTDCSeg(LAYERS[name]).eval().to(device)
  tdtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
  x = torch.randn(batch, 3, *size, device=device)
  if device.type == "cuda":
    model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
  model, x = model.to(tdtype), x.to(tdtype)
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

  def run():
    with torch.inference_mode():
      model(x)
    sync()
  return run, model


def check_same_network(name, device):
  """jaxseg's weights in the PyTorch model give the same logits (fp32, random BN stats)."""
  config = load_config(name, "float32")
  model = build_model(config)
  x = np.random.default_rng(0).normal(size=(1, 128, 256, 3)).astype(np.float32)
  variables = jax.jit(lambda: model.init({"params": jax.random.key(1)}, jnp.asarray(x), train=True))()
  rng = np.random.default_rng(1)  # non-trivial running statistics: mean ~ N(0, 0.1), var ~ U(0.5, 1.5)
  variables["batch_stats"] = flax.traverse_util.unflatten_dict({
      k: jnp.asarray(rng.normal(0, 0.1, v.shape) if k[-1] == "mean" else rng.uniform(0.5, 1.5, v.shape), jnp.float32)
      for k, v in flax.traverse_util.flatten_dict(variables["batch_stats"]).items()})
  out = jax.jit(lambda v, x: resize(model.apply(v, x, train=False)["seg"], x.shape[1:3]))(variables, jnp.asarray(x))
  torch_model = TorchSTDCSeg(LAYERS[name]).eval()
  load_jax_weights(torch_model, variables)
  with torch.inference_mode():
    ref = torch_model(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  if ref.std() < 1e-3 * np.abs(ref).max() or not np.isfinite(ref).all():
    raise SystemExit(f"{name}: degenerate logits, the comparison would prove nothing")
  err = float(np.abs(np.asarray(out) - ref).max() / np.abs(ref).max())
  n_jax = sum(a.size for k, v in variables["params"].items() for a in jax.tree.leaves(
      {h: p for h, p in v.items() if h not in ("aux16_head", "aux32_head", "detail_head")}))
  n_torch = sum(p.numel() for p in torch_model.parameters())
  print(f"check {name}: params jaxseg {n_jax:,} / PyTorch {n_torch:,}; max |logit diff| / max |logit| = {err:.2e}",
        flush=True)
  if n_jax != n_torch or err > 1e-4:
    raise SystemExit(f"{name}: the PyTorch network differs from jaxseg's")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", nargs="+", default=["stdc1", "stdc2"], choices=sorted(LAYERS))
  p.add_argument("--sizes", nargs="*", default=["1024x512", "1536x768"], help="WxH; none: only --check")
  p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
  p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
  p.add_argument("--frameworks", nargs="+", default=["jaxseg", "pytorch"], choices=["jaxseg", "pytorch"])
  p.add_argument("--iters", type=int, default=20)
  p.add_argument("--warmup", type=int, default=5)
  p.add_argument("--quick", action="store_true", help="--iters 3 --warmup 1")
  p.add_argument("--check", action="store_true", help="compare both networks' logits on shared weights first")
  p.add_argument("--json", default="", help="also write the rows to this file")
  p.add_argument("--threads", type=int, default=0,
                 help="CPU threads for PyTorch (and XLA when 1); 0 = their defaults. On a CPU shared "
                      "with other jobs, PyTorch's OpenMP threads stall: --threads 1 compares fairly")
  a = p.parse_args()
  if a.quick:
    a.iters, a.warmup = 3, 1
  if a.threads:
    torch.set_num_threads(a.threads)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  if device.type == "cuda":
    torch.backends.cudnn.benchmark = True
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} on {device} "
        f"({torch.get_num_threads()} threads); {a.iters} timed calls after {a.warmup} warm-up", flush=True)
  if a.check:
    for name in a.models:
      check_same_network(name, device)

  rows = []
  header = f"{'framework':<9} {'model':<6} {'size':>9} {'batch':>5} {'dtype':>8} {'FPS':>8} {'ratio':>6} {'paper FPS':>9}"
  print(header, flush=True)
  for name in a.models:
    for size_s in a.sizes:
      w, h = (int(v) for v in size_s.lower().split("x"))
      for batch in a.batches:
        for dtype in a.dtypes:
          fps = {}
          for fw in a.frameworks:
            if fw == "jaxseg":
              run = jax_runner(name, (h, w), batch, dtype)[0]
            else:
              run = torch_runner(name, (h, w), batch, dtype, device)[0]
            fps[fw] = batch / timed(run, a.iters, a.warmup)
            ratio = fps["jaxseg"] / fps["pytorch"] if len(fps) == 2 else float("nan")
            paper = PAPER_FPS.get((name, (h, w)), float("nan"))
            row = dict(framework=fw, model=name.upper(), size=f"{w}x{h}", batch=batch, dtype=dtype,
                       fps=fps[fw], ratio_jax_over_torch=ratio, paper_fps=paper)
            rows.append(row)
            shown = f"{ratio:.2f}" if len(fps) == 2 else ""  # on the second row of a pair
            print(f"{fw:<9} {row['model']:<6} {row['size']:>9} {batch:>5} {dtype:>8} {fps[fw]:>8.2f} "
                  f"{shown:>6} {paper:>9.1f}", flush=True)
  print("ratio = jaxseg FPS / PyTorch FPS (same row settings); paper: GTX 1080Ti + TensorRT, batch 1")
  if a.json:
    with open(a.json, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
