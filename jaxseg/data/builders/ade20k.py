"""`ade20k`: ADE20K SceneParsing (ADEChallengeData2016), 150 classes.

Archive: ADEChallengeData2016.zip (images/{training,validation}/*.jpg and
annotations/{training,validation}/*.png, one 8-bit class index per pixel, 0 = "other").
Splits train (20,210) and val (2,000).

Labels are stored reduced ("reduce zero label", as every benchmark on ADE20K counts):
0 ("other", not a class) becomes 255 (ignore) and classes 1..150 become 0..149.
Images are the original JPEG bytes; the palette is the VOC colour map.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data.builders import common

# The 150 classes of objectInfo150.csv, in index order (first name of each entry).
CLASSES = tuple(n.replace("_", " ") for n in """
wall building sky floor tree ceiling road bed windowpane grass cabinet sidewalk person earth door
table mountain plant curtain chair car water painting sofa shelf house sea mirror rug field armchair
seat fence desk rock wardrobe lamp bathtub railing cushion base box column signboard chest_of_drawers
counter sand sink skyscraper fireplace refrigerator grandstand path stairs runway case pool_table
pillow screen_door stairway river bridge bookcase blind coffee_table toilet flower book hill bench
countertop stove palm kitchen_island computer swivel_chair boat bar arcade_machine hovel bus towel
light truck tower chandelier awning streetlight booth television_receiver airplane dirt_track apparel
pole land bannister escalator ottoman bottle buffet poster stage van ship fountain conveyer_belt
canopy washer plaything swimming_pool stool barrel basket waterfall tent bag minibike cradle oven ball
food step tank trade_name microwave pot animal bicycle lake dishwasher screen blanket sculpture hood
sconce vase traffic_light tray ashcan fan pier crt_screen plate monitor bulletin_board shower radiator
glass clock flag""".split())
# Reduce zero label: 0 -> ignore, k -> k - 1.
REDUCED = np.array([common.IGNORE] + list(range(len(CLASSES))), np.uint8)
ROOT = "ADEChallengeData2016/"
SPLITS = {"train": "training", "val": "validation"}


class Ade20k(common.ArchiveBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=common.semantic_features("jpeg"),
        metadata=tfds.core.MetadataDict(classes=list(CLASSES),
                                        palette=common.voc_palette(len(CLASSES) + 1)[1:]),
    )

  def _split_generators(self, dl_manager):
    tree = self._archives(dl_manager)["ADEChallengeData2016.zip"]
    return {split: self._split(tree, split, folder) for split, folder in SPLITS.items()}

  def _split(self, tree, split, folder):
    names = common.files_under(tree, f"{ROOT}images/{folder}", ".jpg")

    def make(name):
      image, size = common.read_image(tree, name)
      stem = name.rsplit("/", 1)[1][:-len(".jpg")]
      label_name = f"{ROOT}annotations/{folder}/{stem}.png"
      where = tree.where(label_name)
      label = common.lookup(REDUCED, common.read_label_png(tree, label_name), where, "label values")
      return {"image": image, "label": common.check_label(label, size, len(CLASSES), where),
              "file_name": stem}

    return self._generate_examples(split, ((n.rsplit("/", 1)[1], n) for n in names), make)
