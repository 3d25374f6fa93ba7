"""The generation's output on disk: numbered chunks and a manifest, written so that a
job killed at any moment (kill -9 included) leaves nothing a reader accepts that is
not complete.

  WORKDIR/manifest.json       {"settings": {...}, "chunks": {"00003": {"start", "stop", "sha256"}}}
  WORKDIR/chunks/00003.npz    index (n,) int64, classes (n,) int64, deciles (n, h, w) uint8

A chunk is written to a temporary name, flushed and fsynced, then renamed into place
(atomic on POSIX); the manifest is rewritten the same way after it. A reader takes a
chunk only if the manifest lists it and its bytes hash to the listed sha256: a chunk
renamed but not yet listed (killed between the two) is recomputed, a leftover
temporary file is ignored and removed on the next start.
"""
from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np

from jaxseg.errors import InputDataError, UserError

MANIFEST = "manifest.json"


def _write_atomic(path, data: bytes):
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
  try:
    os.fsync(dir_fd)  # the rename itself survives a crash
  finally:
    os.close(dir_fd)


class ChunkStore:
  """Chunks of one generation work dir, for settings `settings` (a dict of the values
  that determine the labels: a restart with other settings is an error naming them)."""

  def __init__(self, workdir, settings, writer=True):
    self.workdir = os.path.abspath(workdir)
    self.dir = os.path.join(self.workdir, "chunks")
    self.manifest_path = os.path.join(self.workdir, MANIFEST)
    self.settings = json.loads(json.dumps(settings))  # as it reads back
    if writer:
      os.makedirs(self.dir, exist_ok=True)
      for name in os.listdir(self.dir):  # a killed writer's temporary files
        if ".tmp-" in name:
          os.remove(os.path.join(self.dir, name))
    self.manifest = self._read_manifest()
    if writer and not os.path.exists(self.manifest_path):
      self._write_manifest()

  def _read_manifest(self):
    if not os.path.exists(self.manifest_path):
      return {"settings": self.settings, "chunks": {}}
    try:
      with open(self.manifest_path) as f:
        manifest = json.load(f)
    except ValueError as e:
      raise InputDataError(f"{self.manifest_path} is not valid JSON ({e})") from None
    differ = sorted(k for k in set(manifest["settings"]) | set(self.settings)
                    if manifest["settings"].get(k) != self.settings.get(k))
    if differ:
      raise UserError(f"{self.workdir} holds chunks generated with other settings ("
                      + "; ".join(f"{k}: {manifest['settings'].get(k)!r} there, {self.settings.get(k)!r} now"
                                  for k in differ) + "); use a new --workdir")
    return manifest

  def _write_manifest(self):
    _write_atomic(self.manifest_path, json.dumps(self.manifest, indent=1, sort_keys=True).encode())

  def path(self, number):
    return os.path.join(self.dir, f"{number:05d}.npz")

  def done(self):
    """The number of chunks complete from chunk 0 on (where a restart continues)."""
    n = 0
    while f"{n:05d}" in self.manifest["chunks"]:
      n += 1
    return n

  def write(self, number, start, index, classes, deciles):
    """Writes chunk `number` (records [start, start + len(index)) of the source)."""
    out = io.BytesIO()
    np.savez(out, index=np.asarray(index, np.int64), classes=np.asarray(classes, np.int64),
             deciles=np.asarray(deciles, np.uint8))
    data = out.getvalue()
    _write_atomic(self.path(number), data)
    self.manifest["chunks"][f"{number:05d}"] = {"start": int(start), "stop": int(start + len(index)),
                                                "sha256": hashlib.sha256(data).hexdigest()}
    self._write_manifest()

  def read(self, number):
    """{"index", "classes", "deciles"} of chunk `number`, checked against the manifest."""
    entry = self.manifest["chunks"].get(f"{number:05d}")
    path = self.path(number)
    if entry is None:
      raise InputDataError(f"{path}: not listed in {self.manifest_path} (an unfinished chunk)")
    try:
      with open(path, "rb") as f:
        data = f.read()
    except OSError as e:
      raise InputDataError(f"{path}: cannot be read ({e.strerror or e})") from None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
      raise InputDataError(f"{path}: its bytes do not match the sha256 of {self.manifest_path} "
                           "(a corrupt chunk; delete it and its manifest entry and rerun the generation)")
    with np.load(io.BytesIO(data)) as z:
      chunk = {k: z[k] for k in ("index", "classes", "deciles")}
    if chunk["index"][0] != entry["start"] or len(chunk["index"]) != entry["stop"] - entry["start"]:
      raise InputDataError(f"{path}: holds records {chunk['index'][0]}.. but the manifest lists "
                           f"[{entry['start']}, {entry['stop']})")
    return chunk
