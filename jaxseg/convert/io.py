"""Reading PyTorch checkpoints without the library that wrote them.

`.pth`/`.pt`/`.bin`: torch.load(weights_only=True), which unpickles tensors and plain
containers only. `.safetensors`: parsed here with numpy (an 8-byte little-endian
header length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw
bytes), so no extra package is needed.
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np

from jaxseg.errors import CheckpointMismatchError, InputDataError


class ConversionError(CheckpointMismatchError):
  """A checkpoint that does not fit the chosen architecture (key, shapes)."""


SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
                      "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def read_safetensors(path):
  with open(path, "rb") as f:
    raw = f.read()
  try:
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
  except (struct.error, ValueError) as e:
    raise InputDataError(f"{path} is not a safetensors file ({e})") from e
  data = memoryview(raw)[8 + n:]
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    start, end = info["data_offsets"]
    if info["dtype"] == "BF16":  # bfloat16 = the top half of a float32
      arr = (np.frombuffer(data[start:end], "<u2").astype(np.uint32) << 16).view(np.float32)
    elif info["dtype"] in SAFETENSORS_DTYPES:
      arr = np.frombuffer(data[start:end], SAFETENSORS_DTYPES[info["dtype"]])
    else:
      raise InputDataError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
    out[name] = arr.reshape(info["shape"])
  return out


def read_torch(path):
  try:
    import torch
  except ImportError as e:
    raise InputDataError(f"reading {path} needs PyTorch (pip install torch; the CPU build is "
                         "enough), or convert the file to .safetensors") from e
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:
    raise InputDataError(
        f"cannot read {path} with torch.load(weights_only=True) "
        f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); if you trust the file, save "
        "its state dict alone: torch.save(torch.load(PATH, weights_only=False)['state_dict'], 'sd.pth')") from e
  # Training checkpoints wrap the weights: {"state_dict": ...} (mmseg), {"model": ...}.
  for key in ("state_dict", "model", "module"):
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
  if not isinstance(obj, dict):
    raise InputDataError(f"{path} holds a {type(obj).__name__}, not a state dict")
  out = {}
  for name, value in obj.items():
    if not isinstance(value, torch.Tensor):
      continue  # metadata
    value = value.detach()
    out[name] = (value.float() if value.is_floating_point() else value).numpy()
  return out


def read_beside(path, name):
  """The JSON file `name` in the directory of checkpoint `path` (a transformers
  save_pretrained directory's config.json), or None where there is none."""
  file = os.path.join(os.path.dirname(os.path.abspath(path)), name)
  if not os.path.isfile(path) or not os.path.isfile(file):
    return None
  try:
    with open(file) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise InputDataError(f"{file} (read with {path}) is not a JSON file ({e})") from e


def read_state_dict(path):
  """{name: numpy array} of a .pth/.pt/.bin or .safetensors file; a "module." prefix
  (DataParallel) is dropped."""
  if not os.path.isfile(path):
    raise InputDataError(f"--input {path}: no such file")
  sd = read_safetensors(path) if path.endswith(".safetensors") else read_torch(path)
  if not sd:
    raise InputDataError(f"{path} holds no tensors")
  if all(k.startswith("module.") for k in sd):
    sd = {k[len("module."):]: v for k, v in sd.items()}
  return sd
