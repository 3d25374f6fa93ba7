"""`ade20k_panoptic`: ADE20K panoptic and instance ground truth (150 classes: 100
things, 50 stuff), in the panoptic layout of coco_panoptic (common.panoptic_features).

Archives: ADEChallengeData2016.zip (the SceneParsing images and 150-class semantic
annotations, as `ade20k`) and annotations_instance.tar, the instance annotations of
the 2017 Places Challenge (annotations_instance/{training,validation}/*.png, one per
image). Splits train (20,210) and val (2,000).

What is followed: Mask2Former's (and OneFormer's) datasets/prepare_ade20k_pan_seg.py
and prepare_ade20k_ins_seg.py, which every reported ADE20K PQ / AP number uses:
  * an instance PNG is RGB with R = the instance-challenge class (1..100, 0 = none) and
    G = the instance number (0 = no instance), unique within the image (those scripts
    read channels 0 and 1; B is not read). All pixels of an instance have one class;
  * the 100 instance classes map to SceneParsing classes by Mask2Former's
    ade20k_instance_catid_mapping.txt (THING_OF_INSTANCE_CLASS below); those 100 are
    the things, the other 50 of the 150 the stuff;
  * the panoptic map is pasted stuff first: one segment per stuff class present in the
    semantic annotation (0 = "other" is void), then every instance over it (the two
    annotations overlap a little), iscrowd 0. Pixels of a thing class in the semantic
    map without an instance stay void.
Segment ids (ours; the scripts draw random colours): a stuff class k (0..149) has id
k + 1, instance g of a thing class k has id (k + 1) x 1000 + g. Areas and boxes are of
the pixels each segment keeps in the final map (the scripts' JSON gives a stuff
segment's area before the instances are pasted over it). Categories are the reduced
0..149 of `ade20k` (metadata category_ids: objectInfo150's 1..150), the label each
pixel's segment category, 255 on void. The instances entry holds the thing segments
with their masks as COCO RLE (prepare_ade20k_ins_seg.py's instance ground truth).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data.builders import ade20k, common

IMAGES, INSTANCES = "ADEChallengeData2016.zip", "annotations_instance.tar"
# The SceneParsing class (1..150) of each instance-challenge class 1..100.
THING_OF_INSTANCE_CLASS = (
    8, 9, 11, 13, 15, 16, 19, 20, 21, 23, 24, 25, 28, 31, 32, 33, 34, 36, 37, 38, 39, 40, 42, 43, 44, 45, 46, 48,
    50, 51, 54, 56, 57, 58, 59, 63, 65, 66, 67, 68, 70, 71, 72, 73, 74, 75, 76, 77, 79, 81, 82, 83, 84, 86, 87, 88,
    89, 90, 91, 93, 94, 96, 98, 99, 103, 104, 105, 108, 109, 111, 112, 113, 116, 117, 119, 120, 121, 122, 124, 125,
    126, 127, 128, 130, 131, 133, 134, 135, 136, 137, 138, 139, 140, 143, 144, 145, 147, 148, 149, 150)
NUM_CLASSES = len(ade20k.CLASSES)
ISTHING = tuple(k + 1 in THING_OF_INSTANCE_CLASS for k in range(NUM_CLASSES))
# Instance-challenge class r (R channel) -> reduced category; 255 for r = 0 or > 100.
CATEGORY_OF_R = np.full(256, common.IGNORE, np.int64)
CATEGORY_OF_R[1:101] = np.array(THING_OF_INSTANCE_CLASS) - 1
THING_OFFSET = 1000


def read_instance_png(tree, name):
  """(R, G) of an instance annotation PNG, as (H, W) uint8 each."""
  rgb = np.asarray(common.open_png(tree, name, "instance PNG", ("RGB",), "RGB (R = class, G = instance)"))
  return rgb[..., 0], rgb[..., 1]


def panoptic_ids(semantic, r, g, where):
  """(ids (H, W) int64, [(id, category, iscrowd)]) of a reduced semantic map (255 =
  void) and an instance PNG's R and G, pasted stuff first, then the instances."""
  ids = np.zeros(semantic.shape, np.int64)
  listed = []
  for k in np.unique(semantic).tolist():
    if k != common.IGNORE and not ISTHING[k]:
      ids[semantic == k] = k + 1
      listed.append((k + 1, k, 0))
  for n in np.unique(g).tolist():
    if n == 0:
      continue
    mask = g == n
    classes = np.unique(r[mask])
    if len(classes) != 1 or not 1 <= classes[0] <= len(THING_OF_INSTANCE_CLASS):
      raise common.BadExample(f"{where}: instance {n} has class values (R) {classes[:8].tolist()}, expected "
                              f"one of 1..{len(THING_OF_INSTANCE_CLASS)}")
    category = int(CATEGORY_OF_R[classes[0]])
    ids[mask] = (category + 1) * THING_OFFSET + n
    listed.append(((category + 1) * THING_OFFSET + n, category, 0))
  present = set(np.unique(ids).tolist())
  return ids, [s for s in listed if s[0] in present]  # a stuff class all covered by instances is gone


class Ade20kPanoptic(common.ArchiveBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=common.panoptic_features("jpeg"),
        metadata=tfds.core.MetadataDict(classes=list(ade20k.CLASSES),
                                        palette=common.voc_palette(NUM_CLASSES + 1)[1:],
                                        category_ids=list(range(1, NUM_CLASSES + 1)), isthing=list(ISTHING)),
    )

  def _split_generators(self, dl_manager):
    archives = self._archives(dl_manager)
    return {split: self._split(archives[IMAGES], archives[INSTANCES], split, folder)
            for split, folder in ade20k.SPLITS.items()}

  def _split(self, tree, instances, split, folder):
    names = common.files_under(tree, f"{ade20k.ROOT}images/{folder}", ".jpg")

    def make(item):
      image_id, name = item  # image ids: positions in the sorted split
      image, size = common.read_image(tree, name)
      stem = Path(name).stem
      label_name = f"{ade20k.ROOT}annotations/{folder}/{stem}.png"
      semantic = common.lookup(ade20k.REDUCED, common.read_label_png(tree, label_name), tree.where(label_name),
                               "label values")
      common.check_label(semantic, size, NUM_CLASSES, tree.where(label_name))
      instance_name = f"annotations_instance/{folder}/{stem}.png"
      where = instances.where(instance_name)
      r, g = read_instance_png(instances, instance_name)
      if r.shape != size:
        raise common.BadExample(f"{where}: instance PNG is {r.shape[0]}x{r.shape[1]} but its image is "
                                f"{size[0]}x{size[1]}")
      ids, listed = panoptic_ids(semantic, r, g, where)
      return {"image": image, "file_name": stem, "image_id": image_id,
              **common.panoptic_record(ids, listed, ISTHING)}

    return self._generate_examples(split, ((Path(n).name, (i, n)) for i, n in enumerate(names)), make)
