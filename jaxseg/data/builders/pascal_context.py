"""`pascal_context`: PASCAL Context, the 59- and 60-class benchmarks.

Archives: VOC 2010's VOCtrainval_03-May-2010.tar (JPEGImages, ImageSets/Main/
{train,val}.txt) and the Context annotations trainval.tar.gz (trainval/<id>.mat, a
`LabelMap` of the 459 full-context classes, 0 = unlabelled). Splits train (4,998) and
val (5,105): the VOC 2010 Main lists, every one of whose images has a Context map.

The benchmarks keep the 59 most frequent classes (59_context_labels.txt): config `59`
(default) maps them to 0..58 and everything else (unlabelled and the other 400
classes) to 255 (ignore), as the 59-class results are counted; config `60` maps them to
1..59 and everything else to 0, a background class that is evaluated.
"""
from __future__ import annotations

import io

import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data.builders import common

# (index among the 459 classes of labels.txt, name) of the 59 benchmark classes.
CONTEXT_59 = (
    (2, "aeroplane"), (9, "bag"), (18, "bed"), (19, "bedclothes"), (22, "bench"), (23, "bicycle"),
    (25, "bird"), (31, "boat"), (33, "book"), (34, "bottle"), (44, "building"), (45, "bus"),
    (46, "cabinet"), (59, "car"), (65, "cat"), (68, "ceiling"), (72, "chair"), (80, "cloth"),
    (85, "computer"), (98, "cow"), (104, "cup"), (105, "curtain"), (113, "dog"), (115, "door"),
    (144, "fence"), (158, "floor"), (159, "flower"), (162, "food"), (187, "grass"), (189, "ground"),
    (207, "horse"), (220, "keyboard"), (232, "light"), (258, "motorbike"), (259, "mountain"),
    (260, "mouse"), (284, "person"), (295, "plate"), (296, "platform"), (308, "pottedplant"),
    (324, "road"), (326, "rock"), (347, "sheep"), (349, "shelves"), (354, "sidewalk"), (355, "sign"),
    (360, "sky"), (366, "snow"), (368, "sofa"), (397, "table"), (415, "track"), (416, "train"),
    (420, "tree"), (424, "truck"), (427, "tvmonitor"), (440, "wall"), (445, "water"),
    (454, "window"), (458, "wood"),
)
NUM_FULL = 460  # LabelMap values: 0 (unlabelled) and the 459 classes


def label_table(config: str):
  """(460,) uint8: LabelMap value -> class index of the `59` or `60` benchmark."""
  table = np.full(NUM_FULL, common.IGNORE if config == "59" else 0, np.uint8)
  for k, (full_index, _) in enumerate(CONTEXT_59):
    table[full_index] = k if config == "59" else k + 1
  return table


def class_names(config: str):
  names = [name for _, name in CONTEXT_59]
  return names if config == "59" else ["background"] + names


VOC = "VOCdevkit/VOC2010/"


class PascalContext(common.ArchiveBuilder):
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="59", description="59 classes, everything else ignored (255)"),
      tfds.core.BuilderConfig(name="60", description="59 classes + background (0)"),
  ]

  def _info(self):
    names = class_names(self.builder_config.name)
    palette = common.voc_palette(60)  # background + the 59 classes
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=common.semantic_features("jpeg"),
        # The same colour for a class in both configs: background is colour 0.
        metadata=tfds.core.MetadataDict(classes=names, palette=palette[60 - len(names):]),
    )

  def _split_generators(self, dl_manager):
    archives = self._archives(dl_manager)
    voc, context = archives["VOCtrainval_03-May-2010.tar"], archives["trainval.tar.gz"]
    table = label_table(self.builder_config.name)
    splits = {}
    for split in ("train", "val"):
      try:
        text = voc.read(f"{VOC}ImageSets/Main/{split}.txt").decode()
      except common.BadExample as e:
        raise common.InputDataError(f"image list {e}") from None
      ids = [line.split()[0] for line in text.splitlines() if line.strip()]
      splits[split] = self._split(voc, context, split, ids, table)
    return splits

  def _split(self, voc, context, split, ids, table):
    import scipy.io  # only the .mat builders need scipy (setup.py extra "prepare")

    def make(image_id):
      image, size = common.read_image(voc, f"{VOC}JPEGImages/{image_id}.jpg")
      name = f"trainval/{image_id}.mat"
      where = context.where(name)
      data = context.read(name)
      try:
        full = scipy.io.loadmat(io.BytesIO(data))["LabelMap"]
      except Exception as e:
        raise common.BadExample(f"{where}: not a Context LabelMap .mat file "
                                f"({type(e).__name__}: {e})") from None
      label = common.lookup(table, full.astype(np.int64), where, "LabelMap values")
      n = len(class_names(self.builder_config.name))
      return {"image": image, "label": common.check_label(label, size, n, where), "file_name": image_id}

    return self._generate_examples(split, ((i, i) for i in ids), make)
