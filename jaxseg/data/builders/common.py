"""What the builders of the official benchmarks share: finding each archive in the
manual dir (as downloaded, or extracted), reading files out of it, checking every
image and label before it is written, and the colour palettes.

A bad example (unreadable or truncated file, label of another size than its image,
label values outside [0, num_classes) and 255) stops the preparation with an error
naming the file; with `skip_bad_examples` it is left out and listed instead.
"""
from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxseg.data.datasets import ARCHIVES, archives_needed
from jaxseg.errors import DatasetNotFoundError, InputDataError

IGNORE = 255


class BadExample(Exception):
  """One example that cannot be used; the message names its file."""


# Archives, as downloaded or extracted.

class Folder:
  """Files under a folder (an extracted archive), by their path inside the archive."""

  def __init__(self, root):
    self.root = Path(root)

  def read(self, name: str) -> bytes:
    try:
      return (self.root / name).read_bytes()
    except OSError as e:
      raise BadExample(f"{self.root / name}: cannot be read ({e.strerror or e})") from None

  def exists(self, name: str) -> bool:
    return (self.root / name).is_file()

  def names(self, prefix: str):
    """Sorted paths of the files under `prefix`."""
    top = self.root / prefix
    return sorted(str(p.relative_to(self.root)).replace(os.sep, "/")
                  for p in top.rglob("*") if p.is_file()) if top.is_dir() else []

  def where(self, name: str) -> str:
    return str(self.root / name)


class Zip:
  """Files of a zip archive, read in place (zip has random access)."""

  def __init__(self, path):
    self.path = Path(path)
    self.zip = zipfile.ZipFile(self.path)
    self.files = {n.rstrip("/"): n for n in self.zip.namelist() if not n.endswith("/")}

  def read(self, name: str) -> bytes:
    if name not in self.files:
      raise BadExample(f"{self.where(name)}: not in the archive")
    try:
      return self.zip.read(self.files[name])
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:  # CRC error, truncated
      raise BadExample(f"{self.where(name)}: cannot be read ({e})") from None

  def exists(self, name: str) -> bool:
    return name in self.files

  def names(self, prefix: str):
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    return sorted(n for n in self.files if n.startswith(prefix))

  def where(self, name: str) -> str:
    return f"{self.path}:{name}"


class Tar:
  """Files of an uncompressed tar archive, read in place (its members have offsets)."""

  def __init__(self, path):
    self.path = Path(path)
    self.tar = tarfile.open(self.path, "r:")
    self.files = {m.name.removeprefix("./"): m for m in self.tar.getmembers() if m.isfile()}

  def read(self, name: str) -> bytes:
    if name not in self.files:
      raise BadExample(f"{self.where(name)}: not in the archive")
    try:
      data = self.tar.extractfile(self.files[name]).read()
    except (tarfile.TarError, OSError, EOFError) as e:
      raise BadExample(f"{self.where(name)}: cannot be read ({e})") from None
    if len(data) != self.files[name].size:
      raise BadExample(f"{self.where(name)}: truncated archive member")
    return data

  def exists(self, name: str) -> bool:
    return name in self.files

  def names(self, prefix: str):
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    return sorted(n for n in self.files if n.startswith(prefix))

  def where(self, name: str) -> str:
    return f"{self.path}:{name}"


def semantic_features(encoding_format: str):
  """The record of a semantic segmentation dataset: image, class-id label, file name."""
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3), encoding_format=encoding_format),
      "label": tfds.features.Image(shape=(None, None, 1), use_colormap=False),
      "file_name": tfds.features.Text(),
  })


def panoptic_features(encoding_format: str):
  """The record of a panoptic dataset (COCO's layout): image, class-id label, panoptic
  PNG (id = R + 256 G + 256^2 B), its segments, and the COCO instances with RLE masks."""
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3), encoding_format=encoding_format),
      "label": tfds.features.Image(shape=(None, None, 1), use_colormap=False),
      "panoptic": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
      "file_name": tfds.features.Text(),
      "image_id": np.int64,
      "segments": tfds.features.Sequence({
          "id": np.int64, "category": np.int64, "iscrowd": np.int64, "area": np.int64,
          "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32)}),
      "instances": tfds.features.Sequence({
          "category": np.int64, "iscrowd": np.int64, "area": np.float32,
          "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
          "segmentation": tfds.features.Text()}),
  })


def rle_encode(mask):
  """COCO's uncompressed RLE of a boolean (H, W) mask: {"size": [H, W], "counts": run
  lengths over the column-major pixels, alternately 0s and 1s, starting with 0s}."""
  flat = np.asarray(mask, bool).reshape(-1, order="F")
  changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
  bounds = np.concatenate([[0], changes, [flat.size]])
  counts = np.diff(bounds).tolist()
  if flat.size and flat[0]:
    counts = [0] + counts
  return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def panoptic_record(ids, listed, isthing):
  """The "label", "panoptic", "segments" and "instances" entries of panoptic_features
  from (H, W) int64 segment ids (0 = void) and `listed` = [(id, category index,
  iscrowd)] of the segments (each with pixels; the caller checks): segments' area and
  bbox (x, y, w, h) are their pixels'; the label is each pixel's category, 255 on void;
  the instances are the thing segments (crowds included), with COCO's uncompressed RLE
  of their mask as JSON text."""
  import json
  label = np.full(ids.shape, IGNORE, np.uint8)
  segments = {"id": [], "category": [], "iscrowd": [], "area": [], "bbox": []}
  instances = {"category": [], "iscrowd": [], "area": [], "bbox": [], "segmentation": []}
  for sid, category, crowd in listed:
    mask = ids == sid
    ys, xs = np.nonzero(mask)
    bbox = [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]
    label[mask] = category
    for key, value in zip(segments, (sid, category, crowd, int(mask.sum()), bbox)):
      segments[key].append(value)
    if isthing[category]:
      for key, value in zip(instances, (category, crowd, float(mask.sum()), bbox, json.dumps(rle_encode(mask)))):
        instances[key].append(value)
  rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], -1).astype(np.uint8)
  as_array = lambda values, dtype: np.array(values, dtype)
  return {
      "label": label[..., None], "panoptic": rgb,
      "segments": {"id": as_array(segments["id"], np.int64), "category": as_array(segments["category"], np.int64),
                   "iscrowd": as_array(segments["iscrowd"], np.int64), "area": as_array(segments["area"], np.int64),
                   "bbox": as_array(segments["bbox"], np.float32).reshape(-1, 4)},
      "instances": {"category": as_array(instances["category"], np.int64),
                    "iscrowd": as_array(instances["iscrowd"], np.int64),
                    "area": as_array(instances["area"], np.float32),
                    "bbox": as_array(instances["bbox"], np.float32).reshape(-1, 4),
                    "segmentation": list(instances["segmentation"])},
  }


def read_int_png(tree, name: str) -> np.ndarray:
  """The (H, W) int64 values of an 8- or 16-bit greyscale PNG (Cityscapes' instanceIds)."""
  return np.asarray(open_png(tree, name, "PNG", ("I;16", "I", "L"), "8- or 16-bit grey")).astype(np.int64)


def open_png(tree, name: str, what: str, modes, expected: str, data: bytes | None = None):
  """The decoded PIL image of the PNG `name` in `tree` (from its bytes `data` when the
  caller holds them), whose mode is one of `modes`; else BadExample naming the file,
  `what` it is and the `expected` mode."""
  try:
    image = Image.open(io.BytesIO(tree.read(name) if data is None else data))
    image.load()
  except BadExample:
    raise
  except Exception as e:
    raise BadExample(f"{tree.where(name)}: corrupt or truncated {what} ({e})") from None
  if image.mode not in modes:
    raise BadExample(f"{tree.where(name)}: {what} has mode {image.mode}, expected {expected}")
  return image


def files_under(tree, prefix: str, suffix: str):
  """Sorted files under `prefix` ending in `suffix`; InputDataError if there are none
  (a split folder missing from the archive is an error, not an empty split)."""
  names = [n for n in tree.names(prefix) if n.endswith(suffix)]
  if not names:
    raise InputDataError(f"{tree.where(prefix)}: no *{suffix} files (incomplete archive?)")
  return names


def _stem(file: str) -> str:
  for ext in (".tar.gz", ".tgz", ".tar", ".zip"):
    if file.endswith(ext):
      return file[:-len(ext)]
  return file


def locate(name: str, manual_dir):
  """{archive file: Path of the archive or of its extracted folder} for dataset `name`
  (NAME or NAME/CONFIG), or DatasetNotFoundError naming every missing archive, where
  it is obtained, and the folder looked in."""
  manual_dir = Path(os.path.expanduser(str(manual_dir))) if manual_dir else None
  found, missing = {}, []
  for file, marker, _ in ARCHIVES[name]:
    candidates = [] if manual_dir is None else [manual_dir / file, manual_dir / _stem(file), manual_dir]
    path = next((c for c in candidates[:1] if c.is_file()), None)
    markers = (marker,) if isinstance(marker, str) else marker  # any of these paths
    path = path or next((c for c in candidates[1:] if any((c / m).exists() for m in markers)), None)
    if path is None:
      missing.append(file)
    found[file] = path
  if missing:
    where = f"--manual_dir {manual_dir}" if manual_dir else "no --manual_dir given"
    raise DatasetNotFoundError(
        f"dataset '{name}' needs these official archives ({where}; missing: {', '.join(missing)}). "
        f"Put each file, as downloaded or extracted, in the manual dir:\n{archives_needed(name)}")
  return found


def open_archive(path: Path, extract=None):
  """A Folder, Zip or Tar over the archive (or extracted folder) at `path`.
  Compressed tars have no random access: `extract(path)` unpacks them once (TFDS's
  download manager caches the result, so a second run reuses it)."""
  if path.is_dir():
    return Folder(path)
  if path.name.endswith(".zip"):
    return Zip(path)
  if path.name.endswith((".tar.gz", ".tgz")):
    return Folder(extract(path))
  return Tar(path)


# Decoding and checking examples.

def read_image(tree, name: str):
  """(encoded bytes to store, (height, width)) of an image file in `tree`: the
  original bytes of an RGB JPEG/PNG; grey, CMYK or other files converted to RGB and
  encoded as PNG (lossless)."""
  return check_image(tree.read(name), tree.where(name))


def check_image(data: bytes, where: str):
  """read_image of the encoded bytes of the file at `where`."""
  try:
    image = Image.open(io.BytesIO(data))
    image.load()  # decodes everything: a truncated file raises here
  except Exception as e:
    raise BadExample(f"{where}: corrupt or truncated image ({e})") from None
  if image.format not in ("JPEG", "PNG") or image.mode != "RGB":  # stored as RGB: HxWx3 on reading
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG")
    data = out.getvalue()
  return data, (image.height, image.width)


def read_label_png(tree, name: str) -> np.ndarray:
  """The (H, W) class indices of a palette or greyscale label PNG."""
  return np.asarray(open_png(tree, name, "label PNG", ("P", "L"), "palette or 8-bit grey class indices"), np.uint8)


def check_label(label, size, num_classes: int, where: str):
  """`label` (H, W) as stored; BadExample unless it has the image's `size` and its
  values lie in [0, num_classes) or are 255."""
  if label.shape[:2] != tuple(size):
    raise BadExample(f"{where}: label is {label.shape[0]}x{label.shape[1]} but its image is "
                     f"{size[0]}x{size[1]}")
  values = np.unique(label)
  bad = values[(values >= num_classes) & (values != IGNORE)]
  if len(bad):
    raise BadExample(f"{where}: label values {bad[:8].tolist()} outside [0, {num_classes}) and "
                     f"not {IGNORE} (ignore)")
  return label.astype(np.uint8)[..., None]


def lookup(table, values, where: str, what: str):
  """`table[values]`, or BadExample naming the values outside the table."""
  values = np.asarray(values)
  if values.size and (values.min() < 0 or values.max() >= len(table)):
    bad = np.unique(values[(values < 0) | (values >= len(table))])
    raise BadExample(f"{where}: {what} {bad[:8].tolist()} outside [0, {len(table) - 1}]")
  return table[values]


# Colour palettes.

def voc_palette(n: int):
  """The PASCAL VOC colour map (bits of the class index spread over R, G, B), the
  usual palette for datasets without an official one."""
  colors = []
  for i in range(n):
    r = g = b = 0
    c = i
    for j in range(8):
      r |= ((c >> 0) & 1) << (7 - j)
      g |= ((c >> 1) & 1) << (7 - j)
      b |= ((c >> 2) & 1) << (7 - j)
      c >>= 3
    colors.append([r, g, b])
  return colors


# The base of the builders of official archives.

class ArchiveBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A GeneratorBasedBuilder reading the archives of ARCHIVES[archive_key] from the
  manual dir. `skip_bad_examples` (set by jaxseg.prepare) leaves bad examples out
  and lists them in `skipped` instead of failing."""

  skip_bad_examples = False
  MANUAL_DOWNLOAD_INSTRUCTIONS = "See jaxseg.data.datasets.ARCHIVES, or run python -m jaxseg.prepare NAME."

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.skipped = []  # (split, message)

  @property
  def archive_key(self) -> str:
    return f"{self.name}/{self.builder_config.name}" if self.builder_config else self.name

  def _archives(self, dl_manager):
    """{archive file: Folder/Zip/Tar}; fails naming every missing archive."""
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError:  # TFDS: no manual dir, or an empty one
      manual_dir = None
    paths = locate(self.archive_key, manual_dir)
    return {file: open_archive(path, lambda p: Path(dl_manager.extract(p)))
            for file, path in paths.items()}

  def _generate_examples(self, split: str, items, make):
    """Yields (key, make(item)) for the (key, item) pairs of `items`; a BadExample
    fails the preparation, or with skip_bad_examples is listed and left out."""
    for key, item in items:
      try:
        yield key, make(item)
      except BadExample as e:
        if not self.skip_bad_examples:
          raise InputDataError(f"bad example in split '{split}': {e} (rerun with "
                               "--skip_bad_examples to leave such examples out)") from None
        self.skipped.append((split, str(e)))
