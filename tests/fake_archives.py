"""Miniature copies of the official dataset archives: the same archive names, folder
layouts, file names and file formats (JPEG/PNG images, palette and greyscale label
PNGs, SBD/Context/devkit .mat files, COCO JSON + panoptic PNGs), a few images each.

Each `make_*` returns {archive file name: {path inside the archive: bytes}} plus the
expected values the tests check against; `write` materialises them in a manual dir as
archives (tar, tgz, zip) or already extracted.
"""
from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from jaxseg.data.builders.common import voc_palette


def jpeg(h, w, seed=0):
  rng = np.random.default_rng(seed)
  out = io.BytesIO()
  Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(out, "JPEG")
  return out.getvalue()


def png(array):
  out = io.BytesIO()
  Image.fromarray(np.asarray(array)).save(out, "PNG")
  return out.getvalue()


def palette_png(label):
  image = Image.fromarray(label.astype(np.uint8), mode="P")
  image.putpalette([c for rgb in voc_palette(256) for c in rgb])
  out = io.BytesIO()
  image.save(out, "PNG")
  return out.getvalue()


def mat(**variables):
  out = io.BytesIO()
  scipy.io.savemat(out, variables)
  return out.getvalue()


def truncated(data):
  return data[:len(data) // 2]


def write(archives, manual_dir, extracted=()):
  """Writes each archive into `manual_dir` (tar, tgz/tar.gz or zip after its name), or,
  for the names in `extracted`, its files into manual_dir/<name without extension>/."""
  manual_dir = Path(manual_dir)
  manual_dir.mkdir(parents=True, exist_ok=True)
  for name, files in archives.items():
    if name in extracted:
      stem = name
      for ext in (".tar.gz", ".tgz", ".tar", ".zip"):
        stem = stem[:-len(ext)] if stem.endswith(ext) else stem
      for path, data in files.items():
        (manual_dir / stem / path).parent.mkdir(parents=True, exist_ok=True)
        (manual_dir / stem / path).write_bytes(data)
    elif name.endswith(".zip"):
      with zipfile.ZipFile(manual_dir / name, "w") as z:
        for path, data in files.items():
          z.writestr(path, data)
    else:
      mode = "w:gz" if name.endswith((".tgz", ".tar.gz")) else "w"
      with tarfile.open(manual_dir / name, mode) as t:
        for path, data in files.items():
          info = tarfile.TarInfo(path)
          info.size = len(data)
          t.addfile(info, io.BytesIO(data))
  return manual_dir


def _label(rng, h, w, values):
  return rng.choice(np.asarray(values), (h, w)).astype(np.uint8)


def make_voc_aug():
  """VOC train {a, b, c}, val {d, e}; SBD train {b, f, d}, val {g, h}: train_aug =
  {a, b, c} + {f, g, h} (d is VOC val) = 6."""
  rng = np.random.default_rng(0)
  ids = {k: f"2008_{i:06d}" for i, k in enumerate("abcdefgh")}
  voc, sbd, labels = {}, {}, {}
  root = "VOCdevkit/VOC2012/"
  for k, image_id in ids.items():
    h, w = 20 + rng.integers(0, 8), 24 + rng.integers(0, 8)
    voc[f"{root}JPEGImages/{image_id}.jpg"] = jpeg(h, w, seed=len(voc))
    if k in "abcde":  # VOC segmentation: classes 0..20 with the 255 border band
      label = _label(rng, h, w, [0, 15, 20])
      label[0, :] = 255
      voc[f"{root}SegmentationClass/{image_id}.png"] = palette_png(label)
      labels[("voc", image_id)] = label
    if k in "bdfgh":  # SBD: no border band
      seg = _label(rng, h, w, [0, 1, 7])
      sbd[f"benchmark_RELEASE/dataset/cls/{image_id}.mat"] = mat(
          GTcls={"Segmentation": seg, "Boundaries": np.zeros((1, 21), object),
                 "CategoriesPresent": np.array([[1], [7]], np.uint8)})
      sbd[f"benchmark_RELEASE/dataset/img/{image_id}.jpg"] = jpeg(h, w)
      labels[("sbd", image_id)] = seg
  voc[f"{root}JPEGImages/2012_999999.jpg"] = jpeg(10, 10)  # in no list
  lines = lambda keys: "".join(ids[k] + "\n" for k in keys).encode()
  voc[f"{root}ImageSets/Segmentation/train.txt"] = lines("abc")
  voc[f"{root}ImageSets/Segmentation/val.txt"] = lines("de")
  voc[f"{root}ImageSets/Segmentation/trainval.txt"] = lines("abcde")
  sbd["benchmark_RELEASE/dataset/train.txt"] = lines("bfd")
  sbd["benchmark_RELEASE/dataset/val.txt"] = lines("gh")
  expected = {
      "train": [ids[k] for k in "abc"], "val": [ids[k] for k in "de"],
      "train_aug": sorted(ids[k] for k in "abcfgh"),
      "labels": {image_id: labels[("voc", image_id)] if k in "abc" or k in "de" else labels[("sbd", image_id)]
                 for k, image_id in ids.items() if ("voc", image_id) in labels or ("sbd", image_id) in labels},
  }
  return {"VOCtrainval_11-May-2012.tar": voc, "benchmark.tgz": sbd}, expected


CITYSCAPES_IDS = list(range(-1, 34))  # raw label ids appear as 0..33 in labelIds PNGs


def make_cityscapes(coarse=False):
  rng = np.random.default_rng(1)
  images, fine, coarse_files, extra_images, label_ids = {}, {}, {}, {}, {}
  layout = {"train": ["aachen", "bremen"], "val": ["frankfurt"], "test": ["berlin"]}
  counts = {"train": 2, "val": 2, "test": 1}
  if coarse:
    layout["train_extra"] = ["augsburg"]
    counts["train_extra"] = 2
  for split, cities in layout.items():
    for city in cities:
      for i in range(counts[split]):
        stem = f"{city}_{i:06d}_000019"
        h, w = 16, 32
        target = extra_images if split == "train_extra" else images
        target[f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"] = png(
            rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        ids = rng.integers(0, 34, (h, w)).astype(np.uint8)
        label_ids[stem] = ids
        if split != "train_extra":
          fine[f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png"] = png(ids if split != "test" else ids * 0)
          fine[f"gtFine/{split}/{city}/{stem}_gtFine_color.png"] = png(np.zeros((h, w, 3), np.uint8))
          fine[f"gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png"] = png(ids.astype(np.uint16) * 1000)
          fine[f"gtFine/{split}/{city}/{stem}_gtFine_polygons.json"] = b"{}"
        if split != "test":
          coarse_files[f"gtCoarse/{split}/{city}/{stem}_gtCoarse_labelIds.png"] = png(ids)
  images["README"] = images["license.txt"] = b"fake"
  archives = {"leftImg8bit_trainvaltest.zip": images, "gtFine_trainvaltest.zip": fine}
  if coarse:
    archives = {"leftImg8bit_trainvaltest.zip": images, "leftImg8bit_trainextra.zip": extra_images,
                "gtCoarse.zip": coarse_files}
  splits = ("train", "train_extra", "val") if coarse else ("train", "val", "test")
  return archives, {"counts": {s: len(layout[s]) * counts[s] for s in splits}, "label_ids": label_ids}


def make_ade20k():
  rng = np.random.default_rng(2)
  files, labels = {}, {}
  root = "ADEChallengeData2016/"
  for split, folder, prefix, n in (("train", "training", "ADE_train", 3), ("val", "validation", "ADE_val", 2)):
    for i in range(1, n + 1):
      stem = f"{prefix}_{i:08d}"
      h, w = 18 + i, 26
      files[f"{root}images/{folder}/{stem}.jpg"] = jpeg(h, w, seed=i)
      label = _label(rng, h, w, [0, 1, 2, 150])
      files[f"{root}annotations/{folder}/{stem}.png"] = png(label)
      labels[stem] = label
  files[f"{root}objectInfo150.csv"] = b"Idx,Ratio,Train,Val,Name\n1,0.1,1,1,wall\n"
  files[f"{root}sceneCategories.txt"] = b"ADE_train_00000001 airport\n"
  return {"ADEChallengeData2016.zip": files}, {"counts": {"train": 3, "val": 2}, "labels": labels}


def make_pascal_context():
  rng = np.random.default_rng(3)
  voc, context, maps = {}, {}, {}
  root = "VOCdevkit/VOC2010/"
  train, val = ["2008_000002", "2008_000003", "2009_000001"], ["2008_000008", "2010_000001"]
  for image_id in train + val:
    h, w = 15, 21
    voc[f"{root}JPEGImages/{image_id}.jpg"] = jpeg(h, w)
    full = rng.choice(np.array([0, 2, 9, 458, 1, 100, 459]), (h, w)).astype(np.uint16)
    context[f"trainval/{image_id}.mat"] = mat(LabelMap=full)
    maps[image_id] = full
  voc[f"{root}ImageSets/Main/train.txt"] = "".join(i + "\n" for i in train).encode()
  voc[f"{root}ImageSets/Main/val.txt"] = "".join(i + "\n" for i in val).encode()
  voc[f"{root}ImageSets/Main/aeroplane_train.txt"] = f"{train[0]} -1\n".encode()
  voc[f"{root}JPEGImages/2007_000001.jpg"] = jpeg(9, 9)  # VOC image without Context labels, in no list
  return ({"VOCtrainval_03-May-2010.tar": voc, "trainval.tar.gz": context},
          {"counts": {"train": 3, "val": 2}, "maps": maps})


COCO_CATEGORIES = [  # a thing, another thing, two stuff categories (COCO ids)
    {"id": 1, "name": "person", "supercategory": "person", "isthing": 1},
    {"id": 3, "name": "car", "supercategory": "vehicle", "isthing": 1},
    {"id": 184, "name": "tree-merged", "supercategory": "plant", "isthing": 0},
    {"id": 92, "name": "banner", "supercategory": "textile", "isthing": 0},
]


def make_coco_panoptic(nested_zip=True):
  archives = {"train2017.zip": {}, "val2017.zip": {}, "panoptic_annotations_trainval2017.zip": {},
              "annotations_trainval2017.zip": {}}
  truth = {}
  image_id = 100
  for folder, n in (("train2017", 3), ("val2017", 2)):
    pan = {"images": [], "annotations": [], "categories": COCO_CATEGORIES}
    inst = {"images": [], "annotations": [], "categories": [c for c in COCO_CATEGORIES if c["isthing"]]}
    pngs = {}
    for _ in range(n):
      image_id += 1
      h, w = 12, 16
      name = f"{image_id:012d}"
      archives[f"{folder}.zip"][f"{folder}/{name}.jpg"] = jpeg(h, w, seed=image_id)
      ids = np.zeros((h, w), np.int64)
      ids[:, 4:8], ids[:, 8:12], ids[:6, 12:] = 5, 256 * 3 + 7, 65536 * 2 + 1  # 0 = unlabelled on the rest
      ids[6:, 12:] = 9
      segments = [{"id": 5, "category_id": 1, "iscrowd": 0, "area": 48, "bbox": [4, 0, 4, 12]},
                  {"id": 775, "category_id": 3, "iscrowd": 1, "area": 48, "bbox": [8, 0, 4, 12]},
                  {"id": 131073, "category_id": 184, "iscrowd": 0, "area": 24, "bbox": [12, 0, 4, 6]},
                  {"id": 9, "category_id": 92, "iscrowd": 0, "area": 24, "bbox": [12, 6, 4, 6]}]
      rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
      pngs[f"panoptic_{folder}/{name}.png"] = png(rgb)
      pan["images"].append({"id": image_id, "file_name": f"{name}.jpg", "height": h, "width": w})
      pan["annotations"].append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": segments})
      inst["images"].append({"id": image_id, "file_name": f"{name}.jpg", "height": h, "width": w})
      inst["annotations"] += [
          {"id": 10 * image_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "area": 40.5,
           "bbox": [4.0, 0.0, 4.0, 12.0], "segmentation": [[4, 0, 8, 0, 8, 12, 4, 12]]},
          {"id": 10 * image_id + 1, "image_id": image_id, "category_id": 3, "iscrowd": 1, "area": 48.0,
           "bbox": [8.0, 0.0, 4.0, 12.0], "segmentation": {"size": [h, w], "counts": [96, 48, 48]}}]
      semantic = np.full((h, w), 255, np.uint8)  # indices by sorted COCO id: 1, 3, 92, 184
      semantic[:, 4:8], semantic[:, 8:12], semantic[:6, 12:], semantic[6:, 12:] = 0, 1, 3, 2
      truth[image_id] = semantic
    panoptic = archives["panoptic_annotations_trainval2017.zip"]
    panoptic[f"annotations/panoptic_{folder}.json"] = json.dumps(pan).encode()
    if nested_zip:
      inner = io.BytesIO()
      with zipfile.ZipFile(inner, "w") as z:
        for path, data in pngs.items():
          z.writestr(path, data)
      panoptic[f"annotations/panoptic_{folder}.zip"] = inner.getvalue()
    else:
      panoptic.update({f"annotations/{p}": d for p, d in pngs.items()})
    archives["annotations_trainval2017.zip"][f"annotations/instances_{folder}.json"] = json.dumps(inst).encode()
  return archives, {"counts": {"train": 3, "val": 2}, "semantic": truth}


IMAGENET_SYNSETS = [  # (ILSVRC2012_ID, WNID, words, num_children): ids are not in WNID order
    (1, "n02084071", "dog", 0), (2, "n01440764", "tench", 0), (3, "n04592741", "wing", 0),
    (1001, "n00001740", "entity", 3),
]


def make_imagenet():
  leaves = [s for s in IMAGENET_SYNSETS if s[3] == 0]
  synsets = np.array([tuple(s) for s in IMAGENET_SYNSETS],
                     dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")])
  devkit = {"ILSVRC2012_devkit_t12/data/meta.mat": mat(synsets=synsets)}
  train, class_of = {}, {}
  for k, (_, wnid, _, _) in enumerate(leaves):
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as t:
      for i in range(2):
        data = jpeg(10 + i, 12, seed=k * 10 + i)
        info = tarfile.TarInfo(f"{wnid}_{i}.JPEG")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
        class_of[f"{wnid}_{i}"] = wnid
    train[f"{wnid}.tar"] = inner.getvalue()
  val_ids = [3, 1, 2, 1]  # ILSVRC2012_ID of ILSVRC2012_val_0000000{1..4}
  val = {f"ILSVRC2012_val_{i + 1:08d}.JPEG": jpeg(9, 9, seed=50 + i) for i in range(len(val_ids))}
  devkit["ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"] = (
      "".join(f"{v}\n" for v in val_ids).encode())
  wnid_of_id = {s[0]: s[1] for s in IMAGENET_SYNSETS}
  class_of.update({f"ILSVRC2012_val_{i + 1:08d}": wnid_of_id[v] for i, v in enumerate(val_ids)})
  return ({"ILSVRC2012_img_train.tar": train, "ILSVRC2012_img_val.tar": val,
           "ILSVRC2012_devkit_t12.tar.gz": devkit},
          {"counts": {"train": 6, "val": 4}, "class_of": class_of,
           "wnids": sorted(s[1] for s in leaves)})


def make_cityscapes_panoptic():
  """gtFine *_instanceIds.png in cityscapesScripts' encoding: train (2 images) and val
  (1). Per image: sky and road (stuff), cars k and k + 1 (label id 26 x 1000 + k), a
  car crowd group (26), a person and a rider, building, and regions that are void: a
  trailer instance and a caravan group (classes not evaluated) and unlabelled (0).
  Expected: {stem: [(segment id, train id, iscrowd, area)]}."""
  rng = np.random.default_rng(11)
  images, fine, expected = {}, {}, {}
  for split, city, n in (("train", "aachen", 2), ("val", "frankfurt", 1)):
    for i in range(n):
      stem = f"{city}_{i:06d}_000019"
      v = np.zeros((16, 32), np.uint16)
      k = 3 * i + 1
      v[0:4], v[4:8, :16], v[4:8, 16:24], v[4:8, 24:] = 23, 7, 26000 + k, 26000 + k + 1
      v[8:12, :8], v[8:12, 8:16], v[8:12, 16:24] = 26, 24000, 30000  # car crowd, person, trailer
      v[12:, :16], v[12:, 16:20], v[12:, 20:28] = 11, 25000, 29  # building, rider, caravan group
      images[f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"] = png(rng.integers(0, 255, (16, 32, 3),
                                                                                          dtype=np.uint8))
      folder = f"gtFine/{split}/{city}/{stem}_gtFine"
      fine[f"{folder}_instanceIds.png"] = png(v)
      fine[f"{folder}_labelIds.png"] = png(np.where(v >= 1000, v // 1000, v).astype(np.uint8))
      fine[f"{folder}_polygons.json"] = b"{}"
      expected[stem] = sorted([(7, 0, 0, 64), (11, 2, 0, 64), (23, 10, 0, 128), (26, 13, 1, 32),
                               (24000, 11, 0, 32), (25000, 12, 0, 16), (26000 + k, 13, 0, 32),
                               (26000 + k + 1, 13, 0, 32)])
  images["leftImg8bit/test/berlin/berlin_000000_000019_leftImg8bit.png"] = png(np.zeros((16, 32, 3), np.uint8))
  return ({"leftImg8bit_trainvaltest.zip": images, "gtFine_trainvaltest.zip": fine},
          {"counts": {"train": 2, "val": 1}, "segments": expected})


def make_ade20k_panoptic():
  """ADEChallengeData2016.zip (semantic, 1..150 with 0 = other) and
  annotations_instance.tar (R = instance-challenge class, G = instance number): train
  2 images, val 1. Per image: wall and floor (stuff), two persons (instance class 4 ->
  SceneParsing 13), a car (9 -> 21) covering half of the car pixels of the semantic map
  (the rest void), a chair (8 -> 20) pasted over floor, "other" (0, void).
  Expected: {stem: [(segment id, category, area)]}."""
  zip_files, tar_files, expected = {}, {}, {}
  root = "ADEChallengeData2016/"
  for split, folder, prefix, n in (("train", "training", "ADE_train", 2), ("val", "validation", "ADE_val", 1)):
    for i in range(1, n + 1):
      stem = f"{prefix}_{i:08d}"
      sem, r, g = (np.zeros((20, 24), np.uint8) for _ in range(3))
      sem[0:5], sem[5:10], sem[10:, :12], sem[10:, 12:] = 1, 4, 13, 21  # wall, floor, person, car
      sem[0:3, 20:] = 0  # other
      r[10:, :12], g[10:, :6], g[10:, 6:12] = 4, i, i + 1  # two persons
      r[10:, 12:18], g[10:, 12:18] = 9, 7  # a car
      r[5:10, :4], g[5:10, :4] = 8, 9  # a chair over the floor of the semantic map
      zip_files[f"{root}images/{folder}/{stem}.jpg"] = jpeg(20, 24, seed=i)
      zip_files[f"{root}annotations/{folder}/{stem}.png"] = png(sem)
      tar_files[f"annotations_instance/{folder}/{stem}.png"] = png(np.stack([r, g, np.zeros_like(r)], -1))
      expected[stem] = sorted([(1, 0, 5 * 24 - 12), (4, 3, 5 * 20), (13000 + i, 12, 60), (13000 + i + 1, 12, 60),
                               (21007, 20, 60), (20009, 19, 20)])
  return ({"ADEChallengeData2016.zip": zip_files, "annotations_instance.tar": tar_files},
          {"counts": {"train": 2, "val": 1}, "segments": expected})


def npz(**arrays):
  out = io.BytesIO()
  np.savez_compressed(out, **arrays)
  return out.getvalue()


def make_pssl_released(imagenet):
  """PaddleSeg's PSSL label release for the images of make_imagenet() (`imagenet`: its
  (archives, expected)): train.txt, the synsets list and one
  train/<wnid>/<image>.JPEG_eiseg.npz (arr_0: 1 on the object, 0 elsewhere) per
  image, but for the last image, which the release leaves out."""
  archives, expected = imagenet
  files, masks = {}, {}
  rng = np.random.default_rng(7)
  names = []
  for wnid, inner in sorted(archives["ILSVRC2012_img_train.tar"].items()):
    with tarfile.open(fileobj=io.BytesIO(inner)) as t:
      for member in t.getmembers():
        h, w = Image.open(io.BytesIO(t.extractfile(member).read())).size[::-1]
        names.append((wnid[:-4], member.name, (h, w)))
  for wnid, image, (h, w) in names[:-1]:
    mask = (rng.random((h, w)) < 0.3).astype(np.uint8)
    files[f"train/{wnid}/{image}_eiseg.npz"] = npz(arr_0=mask)
    masks[image.rsplit(".", 1)[0]] = mask
  files["train.txt"] = "".join(f"{n}\n" for n in sorted(k for k in files if k.endswith(".npz"))).encode()
  files["imagenet_lsvrc_2015_synsets.txt"] = "".join(f"{w}\n" for w in expected["wnids"]).encode()
  return {"pssl2.1_consensus.tar": files}, {"masks": masks, "left_out": names[-1][1].rsplit(".", 1)[0]}
