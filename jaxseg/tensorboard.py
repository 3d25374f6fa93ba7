"""TensorBoard event files written (and read back) without TensorFlow.

An event file is a sequence of TFRecords (uint64 length, masked crc32c of the length,
the bytes, masked crc32c of the bytes), each holding one `tensorboard.Event` protobuf.
The few messages used here are encoded by hand:

  Event   {1: wall_time double, 2: step int64, 3: file_version string, 5: summary}
  Summary {1: repeated Value}
  Value   {1: tag string, 2: simple_value float, 4: image}
  Image   {1: height, 2: width, 3: colorspace, 4: encoded_image_string (PNG)}

`tensorboard --logdir WORKDIR` shows what training writes to WORKDIR/tensorboard.
"""
from __future__ import annotations

import io
import os
import socket
import struct
import time

import numpy as np

# crc32c (Castagnoli, reflected polynomial 0x82F63B78), table-driven.
_CRC_TABLE = []
for _n in range(256):
  _c = _n
  for _ in range(8):
    _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
  _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  table = _CRC_TABLE
  for b in data:
    crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
  """TFRecord's masked crc32c: rotate right by 15 and add a constant."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# Protobuf wire format: field key = number << 3 | wire type (0 varint, 1 fixed64,
# 2 length-delimited, 5 fixed32).
def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1  # negative int64 as two's complement
  out = bytearray()
  while True:
    byte = n & 0x7F
    n >>= 7
    if n:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _field(number, wire, payload: bytes) -> bytes:
  if wire == 2:
    payload = _varint(len(payload)) + payload
  return _varint(number << 3 | wire) + payload


def _event(step, summary=b"", file_version=None, wall_time=None) -> bytes:
  out = _field(1, 1, struct.pack("<d", time.time() if wall_time is None else wall_time))
  out += _field(2, 0, _varint(int(step)))
  if file_version is not None:
    out += _field(3, 2, file_version.encode())
  if summary:
    out += _field(5, 2, summary)
  return out


def _scalar_value(tag, value) -> bytes:
  return _field(1, 2, _field(1, 2, tag.encode()) + _field(2, 5, struct.pack("<f", float(value))))


def _image_value(tag, image) -> bytes:
  from PIL import Image
  image = np.asarray(image, np.uint8)
  png = io.BytesIO()
  Image.fromarray(image).save(png, format="PNG")
  h, w = image.shape[:2]
  channels = 1 if image.ndim == 2 else image.shape[2]
  msg = (_field(1, 0, _varint(h)) + _field(2, 0, _varint(w)) + _field(3, 0, _varint(channels))
         + _field(4, 2, png.getvalue()))
  return _field(1, 2, _field(1, 2, tag.encode()) + _field(4, 2, msg))


class Writer:
  """Appends scalars and images to one event file under `logdir`. With
  `enabled=False` (every process but the first) it writes nothing. A failed write
  (disk full) is reported once and never ends training."""

  def __init__(self, logdir, enabled=True):
    self.path, self.file, self.failed = None, None, False
    if not enabled:
      return
    try:
      os.makedirs(logdir, exist_ok=True)
      name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
      self.path = os.path.join(logdir, name)
      self.file = open(self.path, "ab")
      self._write(_event(0, file_version="brain.Event:2"))
    except OSError as e:
      self._fail(e)

  def _fail(self, e):
    if not self.failed:
      print(f"WARNING: cannot write TensorBoard events to {self.path}: {e.strerror or e}", flush=True)
    self.failed, self.file = True, None

  def _write(self, record: bytes):
    if self.file is None:
      return
    try:
      header = struct.pack("<Q", len(record))
      self.file.write(header + struct.pack("<I", masked_crc(header)) + record
                      + struct.pack("<I", masked_crc(record)))
      self.file.flush()
    except OSError as e:
      self._fail(e)

  def scalars(self, step, values: dict, prefix=""):
    """One event with a scalar per (tag, value); non-numbers are left out."""
    if self.file is None:
      return
    summary = b"".join(_scalar_value(prefix + k, v) for k, v in values.items()
                       if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool))
    self._write(_event(step, summary))

  def image(self, step, tag, image):
    """`image`: uint8 (H, W, 3) RGB or (H, W) grey, stored as PNG."""
    if self.file is not None:
      self._write(_event(step, _image_value(tag, image)))

  def close(self):
    if self.file is not None:
      self.file.close()
      self.file = None


# Reading back (tests, and scripts that want the numbers without TensorBoard).
def _parse(buf: bytes) -> dict:
  """{field number: [values]} of one protobuf message (bytes for length-delimited,
  int for varint, raw 4/8 bytes for fixed32/fixed64)."""
  out, i = {}, 0
  while i < len(buf):
    key, i = _read_varint(buf, i)
    number, wire = key >> 3, key & 7
    if wire == 0:
      value, i = _read_varint(buf, i)
    elif wire == 1:
      value, i = buf[i:i + 8], i + 8
    elif wire == 2:
      n, i = _read_varint(buf, i)
      value, i = buf[i:i + n], i + n
    elif wire == 5:
      value, i = buf[i:i + 4], i + 4
    else:
      raise ValueError(f"unsupported protobuf wire type {wire}")
    out.setdefault(number, []).append(value)
  return out


def _read_varint(buf, i):
  shift = result = 0
  while True:
    b = buf[i]
    i += 1
    result |= (b & 0x7F) << shift
    shift += 7
    if not b & 0x80:
      return result, i


def records(path):
  """The records of a TFRecord file; a crc mismatch raises ValueError naming the offset."""
  with open(path, "rb") as f:
    data = f.read()
  i = 0
  while i < len(data):
    header = data[i:i + 8]
    if len(header) < 8:
      raise ValueError(f"{path}: truncated record header at byte {i}")
    (n,) = struct.unpack("<Q", header)
    (crc,) = struct.unpack("<I", data[i + 8:i + 12])
    if crc != masked_crc(header):
      raise ValueError(f"{path}: bad length crc at byte {i}")
    record = data[i + 12:i + 12 + n]
    (crc,) = struct.unpack("<I", data[i + 12 + n:i + 16 + n])
    if len(record) < n or crc != masked_crc(record):
      raise ValueError(f"{path}: bad data crc at byte {i}")
    yield record
    i += 16 + n


def read_events(path):
  """[(step, wall_time, tag, value)] of an event file: value is a float for scalars
  and the PNG bytes for images. The file-version event is left out."""
  out = []
  for record in records(path):
    event = _parse(record)
    step = event.get(2, [0])[0]
    step = step - (1 << 64) if step >= 1 << 63 else step
    (wall,) = struct.unpack("<d", event[1][0])
    for summary in event.get(5, []):
      for value in _parse(summary).get(1, []):
        v = _parse(value)
        tag = v[1][0].decode()
        if 2 in v:
          out.append((step, wall, tag, struct.unpack("<f", v[2][0])[0]))
        elif 4 in v:
          out.append((step, wall, tag, _parse(v[4][0])[4][0]))
  return out
