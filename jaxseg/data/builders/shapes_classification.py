"""`shapes_classification`: the classification view of `shapes`, PSSL's ImageNet in
miniature (configs/pssl_demo_*.py).

Each image holds one object of one of shapes' five classes, drawn as `shapes` draws
its objects (the same shapes, sizes, textures and hue bands) on the same cluttered
background; the record's class is that object's. The class ids are shapes' own (1
disk .. 5 cross; 0, background, is never a record's class), so a classifier of this
view and the pseudo labels explained from it speak the ids of the semantic dataset,
and a model pretrained on the pseudo labels (5 + 1 classes + the background class 6:
7) fine-tunes on `shapes` (6) with its classifier dropped, as an ImageNet pretraining
(1001) is fine-tuned on VOC (21). The true mask (the object's class on it, 0
elsewhere, 255 on the 1-px boundary band as in `shapes`) is kept for scoring the
pseudo labels; training the classifiers never reads it. Everything derives from
(split, index); the seed streams differ from those of `shapes`, so no image of the
view is an image of `shapes`.
"""
from __future__ import annotations

import cv2
import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data.builders.shapes import CLASSES, PALETTE, _shape_mask, _texture, background

SPLITS = {"train": (1200, 2), "val": (200, 3)}  # name -> (size, seed stream); shapes uses 0 and 1


def make_example(split: str, index: int):
  """(image uint8 HxWx3, class in 1..5, mask uint8 HxW) of record `index` of `split`."""
  rng = np.random.default_rng([SPLITS[split][1], index])
  h, w = (int(v) for v in rng.integers(14, 21, 2) * 8)  # 112..160, as shapes
  image = background(rng, h, w)
  cls = int(rng.integers(1, len(CLASSES)))
  mask = _shape_mask(rng, cls, h, w)
  image[mask] = _texture(rng, cls, h, w)[mask]
  label = (mask * cls).astype(np.uint8)
  band = cv2.dilate(label, np.ones((3, 3), np.uint8)) != cv2.erode(label, np.ones((3, 3), np.uint8))
  label[band] = 255
  image = cv2.GaussianBlur(image, (3, 3), 0.6) + rng.normal(0, 4, (h, w, 3))
  return np.clip(image, 0, 255).astype(np.uint8), cls, label


class ShapesClassification(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": np.int64,
            "mask": tfds.features.Image(shape=(None, None, 1), use_colormap=False),
            "file_name": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(classes=list(CLASSES), palette=[list(p) for p in PALETTE]),
    )

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split):
    for i in range(SPLITS[split][0]):
      image, cls, mask = make_example(split, i)
      yield i, {"image": image, "label": cls, "mask": mask[..., None], "file_name": f"{split}_{i:05d}"}
