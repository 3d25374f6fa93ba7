"""`cityscapes`: Cityscapes semantic segmentation, 19 evaluation classes.

Config `fine` (default): leftImg8bit_trainvaltest.zip + gtFine_trainvaltest.zip;
splits train (2,975), val (500) and test (1,525 images; their labels are all 255,
since the official test annotations are withheld; the gtFine test files are dummies
and are not read). Config `coarse`: + leftImg8bit_trainextra.zip and gtCoarse.zip;
splits train (2,975), train_extra (19,998) and val (500), all with the coarse labels.

The *_labelIds.png label ids (0-33) map to the 19 train ids of the official
cityscapesScripts table; every other id (void, and the classes not evaluated such as
"parking" or "caravan") becomes 255. Images are the original 2048x1024 PNG bytes.

Config `panoptic`: leftImg8bit_trainvaltest.zip + gtFine_trainvaltest.zip, splits
train (2,975) and val (500), records in the panoptic layout of coco_panoptic
(common.panoptic_features), from the gtFine *_instanceIds.png files with the rules of
cityscapesScripts' createPanopticImgs.py: a value v >= 1000 is instance v % 1000 of
label id v // 1000; a value v < 1000 is the region of label id v, a stuff segment, or
for a class with instances a crowd group (iscrowd 1); the segment id is v itself;
label ids not evaluated (void, and "caravan", "trailer", ...) are void (0). 19
categories in train-id order (metadata category_ids: their label ids), of which the 8
with instances are things (person, rider, car, truck, bus, train, motorcycle, bicycle),
11 stuff. The semantic label is each segment's train id (that of the labelIds files).
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data.builders import common

# (name, label id, official colour) of the 19 evaluated classes, in train-id order.
CLASSES = (
    ("road", 7, (128, 64, 128)), ("sidewalk", 8, (244, 35, 232)), ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)), ("fence", 13, (190, 153, 153)), ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)), ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)), ("terrain", 22, (152, 251, 152)), ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)), ("rider", 25, (255, 0, 0)), ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)), ("bus", 28, (0, 60, 100)), ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)), ("bicycle", 33, (119, 11, 32)),
)
NUM_LABEL_IDS = 34  # label ids 0..33 ("license plate", -1, is never in a labelIds PNG)
TRAIN_ID = np.full(NUM_LABEL_IDS, common.IGNORE, np.uint8)
for _train_id, (_, _label_id, _) in enumerate(CLASSES):
  TRAIN_ID[_label_id] = _train_id

# Label ids of the evaluated classes with instances (cityscapesScripts' hasInstances).
THING_LABEL_IDS = (24, 25, 26, 27, 28, 31, 32, 33)
ISTHING = tuple(label_id in THING_LABEL_IDS for _, label_id, _ in CLASSES)
INSTANCE_OFFSET = 1000  # instanceIds: label id x 1000 + instance number

IMAGES = "leftImg8bit_trainvaltest.zip"
SPLITS = {  # config -> split -> (images archive, labels archive, label folder)
    "fine": {"train": (IMAGES, "gtFine_trainvaltest.zip", "gtFine"),
             "val": (IMAGES, "gtFine_trainvaltest.zip", "gtFine"),
             "test": (IMAGES, None, None)},
    "coarse": {"train": (IMAGES, "gtCoarse.zip", "gtCoarse"),
               "train_extra": ("leftImg8bit_trainextra.zip", "gtCoarse.zip", "gtCoarse"),
               "val": (IMAGES, "gtCoarse.zip", "gtCoarse")},
    "panoptic": {"train": (IMAGES, "gtFine_trainvaltest.zip", "gtFine"),
                 "val": (IMAGES, "gtFine_trainvaltest.zip", "gtFine")},
}


class Cityscapes(common.ArchiveBuilder):
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="fine", description="gtFine labels; test images unlabelled (255)"),
      tfds.core.BuilderConfig(name="coarse", description="gtCoarse labels, with train_extra"),
      tfds.core.BuilderConfig(name="panoptic", description="gtFine panoptic and instance ground truth"),
  ]

  def _info(self):
    meta = dict(classes=[c[0] for c in CLASSES], palette=[list(c[2]) for c in CLASSES])
    panoptic = self.builder_config and self.builder_config.name == "panoptic"
    if panoptic:
      meta.update(category_ids=[c[1] for c in CLASSES], isthing=list(ISTHING))
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=common.panoptic_features("png") if panoptic else common.semantic_features("png"),
        metadata=tfds.core.MetadataDict(**meta),
    )

  def _split_generators(self, dl_manager):
    archives = self._archives(dl_manager)
    return {split: self._split(split, archives[images], labels and archives[labels], folder)
            for split, (images, labels, folder) in SPLITS[self.builder_config.name].items()}

  def _split(self, split, images, labels, folder):
    if self.builder_config.name == "panoptic":
      return self._panoptic_split(split, images, labels)
    suffix = "_leftImg8bit.png"
    names = common.files_under(images, f"leftImg8bit/{split}", suffix)

    def make(name):
      image, size = common.read_image(images, name)
      stem = name.rsplit("/", 1)[1][:-len(suffix)]  # {city}_{seq}_{frame}
      if labels is None:
        label = np.full((*size, 1), common.IGNORE, np.uint8)
      else:
        city = name.split("/")[2]
        label_name = f"{folder}/{split}/{city}/{stem}_{folder}_labelIds.png"
        label_ids = common.read_label_png(labels, label_name)
        train_ids = common.lookup(TRAIN_ID, label_ids, labels.where(label_name), "label ids")
        label = common.check_label(train_ids, size, len(CLASSES), labels.where(label_name))
      return {"image": image, "label": label, "file_name": stem}

    return self._generate_examples(split, ((n.rsplit("/", 1)[1], n) for n in names), make)

  def _panoptic_split(self, split, images, labels):
    suffix = "_leftImg8bit.png"
    names = common.files_under(images, f"leftImg8bit/{split}", suffix)

    def make(item):
      image_id, name = item  # image ids: positions in the sorted split (cityscapesScripts' are names)
      image, size = common.read_image(images, name)
      stem = name.rsplit("/", 1)[1][:-len(suffix)]
      label_name = f"gtFine/{split}/{name.split('/')[2]}/{stem}_gtFine_instanceIds.png"
      where = labels.where(label_name)
      values = common.read_int_png(labels, label_name)
      if values.shape != size:
        raise common.BadExample(f"{where}: instanceIds PNG is {values.shape[0]}x{values.shape[1]} but its image "
                                f"is {size[0]}x{size[1]}")
      label_ids = np.where(values >= INSTANCE_OFFSET, values // INSTANCE_OFFSET, values)
      train_ids = common.lookup(TRAIN_ID, label_ids, where, "label ids")
      ids = np.where(train_ids == common.IGNORE, 0, values)  # classes not evaluated: void
      listed = []
      for v in np.unique(ids):
        if v == 0:
          continue
        category = int(TRAIN_ID[v // INSTANCE_OFFSET if v >= INSTANCE_OFFSET else v])
        listed.append((int(v), category, int(ISTHING[category] and v < INSTANCE_OFFSET)))
      return {"image": image, "file_name": stem, "image_id": image_id,
              **common.panoptic_record(ids, listed, ISTHING)}

    return self._generate_examples(split, ((n.rsplit("/", 1)[1], (i, n)) for i, n in enumerate(names)), make)

