"""`coco_panoptic`: COCO 2017 panoptic segmentation (133 categories: 80 things, 53
stuff), with the instance annotations of the same images.

Archives: train2017.zip and val2017.zip (images), panoptic_annotations_trainval2017.zip
(annotations/panoptic_{train,val}2017.json and the zips of their PNGs,
annotations/panoptic_{train,val}2017.zip, which may also be given extracted as
annotations/panoptic_{train,val}2017/) and annotations_trainval2017.zip
(annotations/instances_{train,val}2017.json). Splits train (118,287) and val (5,000).

Each record:
  image       the original JPEG bytes (grey or CMYK images re-encoded as RGB PNG)
  label       semantic map: category index 0..132 (categories sorted by COCO id, as in
              metadata `classes`), 255 where the panoptic PNG is 0 (unlabelled)
  panoptic    the panoptic PNG as stored by COCO: segment id = R + 256 G + 256^2 B
  segments    one entry per segment of the PNG: id, category (index 0..132), iscrowd,
              area (pixels) and bbox (x, y, w, h), from panoptic_*.json
  instances   the objects of instances_*.json: category (index 0..132, a thing),
              iscrowd, area, bbox (x, y, w, h) and segmentation, the JSON text of COCO's
              polygons (list) or RLE (dict, iscrowd), for box and mask AP with COCO's
              tools
  image_id, file_name
Semantic, instance and panoptic ground truth all derive from `panoptic` + `segments`.
Metadata: classes, palette (the VOC colour map), category_ids, isthing.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data.builders import common

PANOPTIC = "panoptic_annotations_trainval2017.zip"
INSTANCES = "annotations_trainval2017.zip"
SPLITS = {"train": "train2017", "val": "val2017"}


def _json(tree, name):
  try:
    return json.loads(tree.read(name))
  except common.BadExample as e:
    raise common.InputDataError(f"annotation file {e}") from None
  except ValueError as e:
    raise common.InputDataError(f"{tree.where(name)}: not valid JSON ({e})") from None


def _png_tree(tree, split, cache_dir: Path):
  """The tree of panoptic_{split}.zip's PNGs: the extracted folder, the inner zip in
  place, or (inside the outer zip, which has no random access into it) the inner zip
  copied once to `cache_dir`."""
  folder, inner = f"annotations/panoptic_{split}", f"annotations/panoptic_{split}.zip"
  if isinstance(tree, common.Folder):
    if (tree.root / folder).is_dir():
      return common.Folder(tree.root / "annotations")  # holds panoptic_{split}/NAME.png
    if tree.exists(inner):
      return common.Zip(tree.root / inner)
  elif tree.exists(inner):
    target = cache_dir / f"panoptic_{split}.zip"
    size = tree.zip.getinfo(tree.files[inner]).file_size
    if not target.exists() or target.stat().st_size != size:
      cache_dir.mkdir(parents=True, exist_ok=True)
      print(f"Copying {tree.where(inner)} ({size / 2**30:.1f} GiB) to {target} (once) ...", flush=True)
      with tree.zip.open(tree.files[inner]) as src, open(f"{target}.tmp", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)
      Path(f"{target}.tmp").rename(target)
    return common.Zip(target)
  raise common.InputDataError(f"{tree.where(inner)}: missing (the panoptic PNGs of {split})")


def read_panoptic_png(tree, name):
  """The (H, W) int64 segment ids of a panoptic PNG, and its bytes."""
  data = tree.read(name)
  rgb = np.asarray(common.open_png(tree, name, "panoptic PNG", ("RGB",), "RGB", data)).astype(np.int64)
  return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2], data


class CocoPanoptic(common.ArchiveBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=common.panoptic_features("jpeg"),
        # Filled from the annotation files' category list by _split_generators.
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    archives = self._archives(dl_manager)
    panoptic = archives[PANOPTIC]
    # The categories, from the (small) val file; each split's file must list the same.
    cats = sorted(_json(panoptic, "annotations/panoptic_val2017.json")["categories"],
                  key=lambda c: c["id"])
    self.info.metadata.update(
        classes=[c["name"] for c in cats], palette=common.voc_palette(len(cats)),
        category_ids=[c["id"] for c in cats], isthing=[bool(c["isthing"]) for c in cats])
    cache = Path(str(dl_manager.download_dir)) / "coco_panoptic"
    return {split: self._split(split, folder, archives, cats, cache) for split, folder in SPLITS.items()}

  def _split(self, split, folder, archives, cats, cache):
    """The examples of one split; its annotation files are read when it is generated."""
    panoptic, instances, images = archives[PANOPTIC], archives[INSTANCES], archives[f"{folder}.zip"]
    pan_name, inst_name = f"annotations/panoptic_{folder}.json", f"annotations/instances_{folder}.json"
    pan, inst = _json(panoptic, pan_name), _json(instances, inst_name)
    if sorted(c["id"] for c in pan["categories"]) != [c["id"] for c in cats]:
      raise common.InputDataError(f"{panoptic.where(pan_name)}: its categories differ from "
                                  "those of panoptic_val2017.json")
    pngs, inst_where = _png_tree(panoptic, folder, cache), instances.where(inst_name)
    index = {c["id"]: k for k, c in enumerate(cats)}
    by_image = {}
    for ann in inst["annotations"]:
      by_image.setdefault(ann["image_id"], []).append(ann)
    file_names = {im["id"]: im["file_name"] for im in pan["images"]}

    def category(cat_id, where):
      if cat_id not in index:
        raise common.BadExample(f"{where}: unknown category id {cat_id}")
      return index[cat_id]

    def make(ann):
      image_name = f"{folder}/{file_names.get(ann['image_id'], ann['file_name'][:-4] + '.jpg')}"
      image, size = common.read_image(images, image_name)
      png_name = f"panoptic_{folder}/{ann['file_name']}"
      where = pngs.where(png_name)
      ids, png = read_panoptic_png(pngs, png_name)
      if ids.shape != size:
        raise common.BadExample(f"{where}: panoptic PNG is {ids.shape[0]}x{ids.shape[1]} but its "
                                f"image is {size[0]}x{size[1]}")
      segments = ann["segments_info"]
      # Semantic map: each segment's category, 255 where the id is 0 (unlabelled).
      table = {0: common.IGNORE}
      for s in segments:
        table[s["id"]] = category(s["category_id"], where)
      present, inverse = np.unique(ids, return_inverse=True)
      unknown = [int(v) for v in present if v not in table]
      if unknown:
        raise common.BadExample(f"{where}: segment ids {unknown[:8]} are not in segments_info")
      label = np.array([table[int(v)] for v in present], np.uint8)[inverse.reshape(ids.shape)]
      objects = by_image.get(ann["image_id"], [])
      return {
          "image": image,
          "label": common.check_label(label, size, len(cats), where),
          "panoptic": png,
          "file_name": Path(image_name).stem,
          "image_id": ann["image_id"],
          "segments": {
              "id": np.array([s["id"] for s in segments], np.int64),
              "category": np.array([table[s["id"]] for s in segments], np.int64),
              "iscrowd": np.array([s.get("iscrowd", 0) for s in segments], np.int64),
              "area": np.array([s["area"] for s in segments], np.int64),
              "bbox": np.array([s["bbox"] for s in segments], np.float32).reshape(-1, 4)},
          "instances": {
              "category": np.array([category(o["category_id"], f"{inst_where} annotation {o['id']}")
                                    for o in objects], np.int64),
              "iscrowd": np.array([o.get("iscrowd", 0) for o in objects], np.int64),
              "area": np.array([o["area"] for o in objects], np.float32),
              "bbox": np.array([o["bbox"] for o in objects], np.float32).reshape(-1, 4),
              "segmentation": [json.dumps(o["segmentation"]) for o in objects]},
      }

    anns = sorted(pan["annotations"], key=lambda a: a["image_id"])
    yield from self._generate_examples(split, ((a["image_id"], a) for a in anns), make)
