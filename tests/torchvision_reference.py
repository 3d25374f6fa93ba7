"""torchvision as a numerical reference on a CPU-only PyTorch.

PyPI's torchvision 0.28.0 (the release that goes with torch 2.13) is a CUDA build: on
the CPU build of torch its compiled operators (torchvision/_C.so) do not load, and
`import torchvision` then fails ("operator torchvision::nms does not exist") while
registering fake kernels for the operators torchvision::nms and torchvision::qnms, which
the library would have defined. It fails the same inside any package that imports it
(transformers' OneFormer modules do), so tests/conftest.py puts `DefineOpsOnImport` first
on the import path: the first import of torchvision, by anyone, defines them first.

`define_missing_ops()`, only when that library cannot be loaded, defines the two operator
schemas itself, so the import succeeds. torchvision's Python code then runs its own pure-PyTorch
paths where it has them: `roi_align` picks `_roi_align` when the ops are missing (run
here eagerly, without the torch.compile it is wrapped in: the same arithmetic, without
compiling C++ on every test run), given the one rule of the compiled kernels it lacks
(`with_kernel_bounds`). Only `nms` has no such path: it becomes `numpy_nms`
below, torchvision's kernel written out (greedy by descending score, ties by index,
IoU > threshold suppresses, float32); `install()` puts both in place for the tests
that compare with torchvision. Where torchvision's operators load, neither changes
anything.
"""
from __future__ import annotations

import glob
import importlib.abc
import importlib.util
import os
import sys

import numpy as np

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_library = None  # the torch.library.Library holding the schemas (kept alive: dropping it undefines them)


def _ops_load(torch):
  """Whether torchvision's compiled operators load into this torch (trying changes nothing
  if they do not)."""
  spec = importlib.util.find_spec("torchvision")
  paths = glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so")) if spec else []
  if not paths:
    return False
  try:
    torch.ops.load_library(paths[0])
    return True
  except (OSError, RuntimeError):
    return False


def numpy_nms(boxes, scores, iou_threshold):
  """torchvision.ops.nms on the CPU: the kept indices (int64), by descending score."""
  import torch
  b = boxes.detach().cpu().numpy().astype(np.float32)
  s = scores.detach().cpu().numpy()
  order = np.argsort(-s, kind="stable")
  area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  suppressed = np.zeros(len(b), bool)
  keep = []
  for i in order:
    if suppressed[i]:
      continue
    keep.append(i)
    w = np.clip(np.minimum(b[i, 2], b[:, 2]) - np.maximum(b[i, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(b[i, 3], b[:, 3]) - np.maximum(b[i, 1], b[:, 1]), 0, None)
    inter = w * h
    suppressed |= inter / (area[i] + area - inter) > np.float32(iou_threshold)
  return torch.as_tensor(np.asarray(keep, np.int64), device=boxes.device)


def define_missing_ops():
  """Defines torchvision::nms / qnms when torchvision's library cannot define them."""
  global _library
  import torch
  if _library is not None or _ops_load(torch):
    return
  _library = torch.library.Library("torchvision", "DEF")
  _library.define("nms" + _SCHEMA)
  _library.define("qnms" + _SCHEMA)


class DefineOpsOnImport(importlib.abc.MetaPathFinder):
  """A meta path entry that runs `define_missing_ops` when torchvision is first imported,
  whoever imports it (tests/conftest.py installs it: nothing is imported before that)."""

  def find_spec(self, name, path=None, target=None):
    if name == "torchvision":
      sys.meta_path.remove(self)
      define_missing_ops()
    return None  # the import goes on as usual


def install():
  """Makes `import torchvision` work and gives it the NMS and RoIAlign it lacks (see
  above); False where torchvision is not installed."""
  if importlib.util.find_spec("torchvision") is None:
    return False
  define_missing_ops()
  import torchvision
  import torchvision.ops.boxes
  import torchvision.ops.roi_align
  if torchvision.extension._has_ops():  # its own operators: nothing to replace
    return True
  torchvision.ops.boxes.nms = torchvision.ops.nms = numpy_nms  # batched_nms calls the module's nms
  module = sys.modules["torchvision.ops.roi_align"]  # torchvision.ops.roi_align is the function
  module._roi_align = getattr(module._roi_align, "__wrapped__", module._roi_align)  # eager
  if not getattr(module._bilinear_interpolate, "kernel_bounds", False):
    module._bilinear_interpolate = with_kernel_bounds(module._bilinear_interpolate)
  return True


def with_kernel_bounds(bilinear_interpolate):
  """torchvision's fallback `_bilinear_interpolate` with the rule of its compiled kernels
  (roi_align_kernel.cpp, the CUDA kernel alike) that the fallback leaves out: a sample at
  y < -1 or y > H (or x alike) contributes 0. Without it a RoI thinner than a feature
  pixel at the image's right or bottom edge (aligned=False widens it to one pixel) would
  read the last column where torchvision's own operators read 0."""
  def interpolate(input, roi_batch_ind, y, x, ymask, xmask):
    val = bilinear_interpolate(input, roi_batch_ind, y, x, ymask, xmask)  # (K, C, PH, PW, IY, IX)
    height, width = input.shape[-2:]
    inside_y = ((y >= -1.0) & (y <= height)).to(val.dtype)  # (K, PH, IY)
    inside_x = ((x >= -1.0) & (x <= width)).to(val.dtype)  # (K, PW, IX)
    return val * inside_y[:, None, :, None, :, None] * inside_x[:, None, None, :, None, :]
  interpolate.kernel_bounds = True
  return interpolate
