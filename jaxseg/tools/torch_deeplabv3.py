"""A plain PyTorch DeepLabv3 built from a jaxseg config, layer for layer the network
jaxseg builds (ResNet with the same stem, blocks, strides and dilations; ASPP with
image pooling and projection; dropout and classifier; FCN auxiliary head on c3), so
that the benchmark compares the frameworks on the same computation. Used only by the
benchmark's PyTorch comparison, which runs it in its own process
(`python -m jaxseg.tools.torch_deeplabv3` with a JSON request on stdin) so that
PyTorch never shares a process with TensorFlow or an initialised JAX backend.
"""
import json
import sys
import time

import ml_collections
import torch
from torch import nn
from torch.nn import functional as F

from jaxseg.errors import ConfigError
from jaxseg.models.backbones.resnet import DEPTHS, stage_strides_and_rates
from jaxseg.models.heads.aspp import scaled_rates
from jaxseg.tools.timing import synthetic_batch, timed


def conv_bn(cin, cout, k=3, stride=1, dilation=1, relu=True):
  layers = [nn.Conv2d(cin, cout, k, stride, dilation * (k - 1) // 2, dilation, bias=False),
            nn.BatchNorm2d(cout)]
  return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class Block(nn.Module):
  """Bottleneck (1x1, 3x3 with the stride, 1x1 x4) or basic block (two 3x3)."""

  def __init__(self, cin, width, stride, dilation, dilation2, bottleneck):
    super().__init__()
    cout = width * (4 if bottleneck else 1)
    if bottleneck:
      self.body = nn.Sequential(conv_bn(cin, width, 1), conv_bn(width, width, 3, stride, dilation),
                                conv_bn(width, cout, 1, relu=False))
    else:
      self.body = nn.Sequential(conv_bn(cin, width, 3, stride, dilation),
                                conv_bn(width, width, 3, 1, dilation2, relu=False))
    self.down = conv_bn(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else None

  def forward(self, x):
    return F.relu(self.body(x) + (x if self.down is None else self.down(x)))


def block_plan(b, output_stride):
  """[(stage, width multiple, stride, dilation, dilation2)] per block: the plan of
  jaxseg's ResNet (multi-grid on the last stage, contracted first dilation, cascaded
  extra blocks)."""
  sizes, _ = DEPTHS[b.depth]
  plan = stage_strides_and_rates(output_stride)
  stages = [(i, n, *plan[i]) for i, n in enumerate(sizes)]
  stages += [(3, sizes[3], 1, plan[3][1] * 2 ** (j + 1)) for j in range(b.extra_blocks)]
  out = []
  for s, (i, n, stride, rate) in enumerate(stages):
    for k in range(n):
      if i == 3 and b.multi_grid:
        dilation = rate * b.multi_grid[k % len(b.multi_grid)]
      elif k == 0 and b.contract_dilation and rate > 1:
        dilation = rate // 2
      else:
        dilation = rate
      out.append((s, i, stride if k == 0 else 1, dilation, max(dilation, rate)))
  return out


class DeepLabV3(nn.Module):
  """Returns {"seg": logits, "aux": logits (training, with model.aux_heads.aux)} at the
  feature resolution, as jaxseg's Segmentor."""

  def __init__(self, config, output_stride=None):
    super().__init__()
    m, k = config.model, config.dataset.num_classes
    h, aux = m.head, m.aux_heads.get("aux")
    if h.name != "aspp" or h.project_kernel != 1 or h.extra_conv or m.neck.name or set(m.aux_heads) - {"aux"} or (
        aux is not None and (aux.feature, aux.num_convs, aux.concat_input, aux.dilation) != ("c3", 1, False, 1)):
      raise ConfigError(f"no PyTorch equivalent of model.head '{h.name}', model.neck '{m.neck.name}', "
                        f"model.aux_heads {list(m.aux_heads)} (the comparison covers DeepLabv3: the 'aspp' head "
                        "with 1x1 projection, no neck, at most the FCN head 'aux' on c3)")
    b = m.backbone
    os_ = output_stride or b.output_stride
    _, bottleneck = DEPTHS[b.depth]
    w = b.width
    if b.stem == "7x7":
      stem = [conv_bn(3, w, 7, 2)]
    else:
      stem = [conv_bn(3, w // 2, 3, 2), conv_bn(w // 2, w // 2, 3), conv_bn(w // 2, w, 3)]
    self.stem = nn.Sequential(*stem, nn.MaxPool2d(3, 2, 1))
    stages, cin = {}, w
    for s, i, stride, d1, d2 in block_plan(b, os_):
      width = w * 2 ** i
      stages.setdefault(s, []).append(Block(cin, width, stride, d1, d2, bottleneck))
      cin = width * (4 if bottleneck else 1)
    self.stages = nn.ModuleList(nn.Sequential(*blocks) for _, blocks in sorted(stages.items()))
    c3 = w * 4 * (4 if bottleneck else 1)
    c = h.channels
    self.aspp = nn.ModuleList([conv_bn(cin, c, 1)] + [conv_bn(cin, c, 3, dilation=r)
                                                      for r in scaled_rates(h.rates, os_)])
    self.pool = conv_bn(cin, c, 1)
    self.project = conv_bn((len(self.aspp) + 1) * c, c, 1)
    self.head = nn.Sequential(nn.Dropout(m.dropout), nn.Conv2d(c, k, 1))
    self.aux = nn.Sequential(conv_bn(c3, aux.channels, 3), nn.Dropout(m.dropout),
                             nn.Conv2d(aux.channels, k, 1)) if aux is not None else None

  def forward(self, x):
    x = self.stem(x)
    for i, stage in enumerate(self.stages):
      x = stage(x)
      if i == 2:
        c3 = x
    pooled = self.pool(F.adaptive_avg_pool2d(x, 1)).expand(-1, -1, *x.shape[-2:])
    out = {"seg": self.head(self.project(torch.cat([b(x) for b in self.aspp] + [pooled], 1)))}
    if self.training and self.aux is not None:
      out["aux"] = self.aux(c3)
    return out


def measure(config, size, batch, infer_batch=1, iters=5, warmup=1):
  """The same network, loss and optimizer in PyTorch (eager, channels-last), on CUDA
  if available: the dict of measurements that the benchmark's table prints."""

  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch.manual_seed(0)
  model = DeepLabV3(config).to(device).to(memory_format=torch.channels_last)
  infer_model = DeepLabV3(config, config.model.eval_output_stride).to(device).eval()
  infer_model = infer_model.to(memory_format=torch.channels_last)
  torch.backends.cudnn.benchmark = True
  o = config.optim
  opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
  data = synthetic_batch(config, batch, size)
  images = torch.from_numpy(data["image"]).permute(0, 3, 1, 2).to(device)
  labels = torch.from_numpy(data["label"]).long().to(device)
  infer_images = torch.from_numpy(synthetic_batch(config, infer_batch, size, 1)["image"]).permute(0, 3, 1, 2)
  infer_images = infer_images.to(device)
  mean = torch.tensor(config.dataset.mean, device=device).view(1, 3, 1, 1)
  std = torch.tensor(config.dataset.std, device=device).view(1, 3, 1, 1)
  low = config.model.dtype in ("bfloat16", "float16")
  autocast = lambda: torch.autocast(device, dtype=torch.bfloat16, enabled=low)
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  weights = config.loss.weights  # of "seg" and "aux"
  ignore = config.dataset.ignore_index

  def train_once():
    x = ((images.float() - mean) / std).contiguous(memory_format=torch.channels_last)
    with autocast():
      out = model(x)
    loss = sum(w * F.cross_entropy(F.interpolate(out[k].float(), size, mode="bilinear", align_corners=False),
                                   labels, ignore_index=ignore) for k, w in weights.items() if k in out)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sync()

  def infer_once():
    with torch.no_grad(), autocast():
      x = ((infer_images.float() - mean) / std).contiguous(memory_format=torch.channels_last)
      F.interpolate(infer_model(x)["seg"].float(), size, mode="bilinear", align_corners=False).argmax(1)
    sync()

  if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
  model.train()
  t = time.perf_counter()
  train_once()
  first = time.perf_counter() - t
  step_s = timed(train_once, iters, warmup)
  memory = torch.cuda.max_memory_allocated() if device == "cuda" else float("nan")
  latency = timed(infer_once, iters, warmup)
  return {
      "train_step_ms": 1e3 * step_s, "train_images_per_sec": batch / step_s,
      "infer_latency_ms": 1e3 * latency, "infer_fps": infer_batch / latency,
      "first_step_s": first, "peak_memory_gb": memory / 2 ** 30,
      "peak_memory_source": "torch.cuda.max_memory_allocated" if device == "cuda" else "n/a on CPU",
      "params": sum(p.numel() for p in model.parameters()), "device": device,
      "torch_version": torch.__version__, "threads": torch.get_num_threads(),
  }


if __name__ == "__main__":
  # stdin: {"config": the config as JSON, "args": [size, batch, infer_batch, iters, warmup]};
  # stdout: the measurements as JSON. Exit status 3: a config with no PyTorch equivalent.
  request = json.load(sys.stdin)
  try:
    result = measure(ml_collections.ConfigDict(request["config"]), *request["args"])
  except ConfigError as e:
    print(e, file=sys.stderr)
    sys.exit(3)
  print(json.dumps(result))
