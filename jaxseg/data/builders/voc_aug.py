"""`voc_aug`: PASCAL VOC 2012 segmentation with the SBD extra annotations.

Archives: VOCtrainval_11-May-2012.tar (JPEGImages, SegmentationClass palette PNGs,
ImageSets/Segmentation/{train,val}.txt) and SBD's benchmark.tgz
(benchmark_RELEASE/dataset/cls/*.mat with GTcls.Segmentation, train.txt, val.txt).

Splits: `train` (VOC train, 1,464), `val` (VOC val, 1,449) and `train_aug` = VOC train
+ SBD train + SBD val minus VOC val (10,582 on the real data). An image of VOC train
keeps VOC's own label (with the 255 border band); the others take SBD's, which has no
border band. 21 classes; 255 (VOC's object borders and "difficult" regions) is ignore.
Images are VOC 2012's JPEGImages, stored as the original JPEG bytes.
"""
from __future__ import annotations

import io

import tensorflow_datasets as tfds

from jaxseg.data.builders import common

CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
           "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
           "sheep", "sofa", "train", "tvmonitor")
VOC = "VOCdevkit/VOC2012/"
SBD = "benchmark_RELEASE/dataset/"


def _ids(tree, name):
  try:
    text = tree.read(name).decode()
  except common.BadExample as e:
    raise common.InputDataError(f"image list {e}") from None
  return [line.split()[0] for line in text.splitlines() if line.strip()]


def read_sbd_mat(tree, name):
  """The (H, W) class map GTcls.Segmentation of an SBD .mat file."""
  import scipy.io  # only this builder needs scipy (setup.py extra "prepare")
  data = tree.read(name)
  try:
    return scipy.io.loadmat(io.BytesIO(data))["GTcls"]["Segmentation"][0, 0]
  except Exception as e:
    raise common.BadExample(f"{tree.where(name)}: not an SBD GTcls .mat file "
                            f"({type(e).__name__}: {e})") from None


class VocAug(common.ArchiveBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=common.semantic_features("jpeg"),
        metadata=tfds.core.MetadataDict(classes=list(CLASSES), palette=common.voc_palette(len(CLASSES))),
    )

  def _split_generators(self, dl_manager):
    archives = self._archives(dl_manager)
    voc, sbd = archives["VOCtrainval_11-May-2012.tar"], archives["benchmark.tgz"]
    voc_train = _ids(voc, VOC + "ImageSets/Segmentation/train.txt")
    voc_val = _ids(voc, VOC + "ImageSets/Segmentation/val.txt")
    sbd_ids = _ids(sbd, SBD + "train.txt") + _ids(sbd, SBD + "val.txt")
    aug = sorted(set(voc_train) | (set(sbd_ids) - set(voc_val)))
    voc_labelled = set(voc_train)
    return {
        "train": self._generate(voc, sbd, "train", [(i, True) for i in voc_train]),
        "val": self._generate(voc, sbd, "val", [(i, True) for i in voc_val]),
        "train_aug": self._generate(voc, sbd, "train_aug", [(i, i in voc_labelled) for i in aug]),
    }

  def _generate(self, voc, sbd, split, items):
    def make(item):
      image_id, from_voc = item
      image_tree, image_name = voc, f"{VOC}JPEGImages/{image_id}.jpg"
      if not voc.exists(image_name) and sbd.exists(f"{SBD}img/{image_id}.jpg"):
        image_tree, image_name = sbd, f"{SBD}img/{image_id}.jpg"
      image, size = common.read_image(image_tree, image_name)
      if from_voc:
        name = f"{VOC}SegmentationClass/{image_id}.png"
        label, where = common.read_label_png(voc, name), voc.where(name)
      else:
        name = f"{SBD}cls/{image_id}.mat"
        label, where = read_sbd_mat(sbd, name), sbd.where(name)
      label = common.check_label(label, size, len(CLASSES), where)
      return {"image": image, "label": label, "file_name": image_id}

    return self._generate_examples(split, ((image_id, (image_id, v)) for image_id, v in items), make)
