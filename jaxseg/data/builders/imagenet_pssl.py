"""`imagenet_pssl`: ImageNet-1k (ILSVRC 2012) for PSSL. Config `classes` (the default):
the images with their class, the input of PSSL's pseudo-label generation
(python -m jaxseg.pssl.generate). Config `released`: the train images with the pseudo
labels PaddleSeg released, a 1001-class semantic segmentation dataset.

Archives, all from image-net.org: ILSVRC2012_img_train.tar (one tar per class,
n01440764.tar, ...), ILSVRC2012_img_val.tar (ILSVRC2012_val_00000001.JPEG, ...) and the
development kit ILSVRC2012_devkit_t12.tar.gz, whose data/meta.mat names the 1,000
classes and data/ILSVRC2012_validation_ground_truth.txt gives each val image's class
(as an ILSVRC2012_ID). The train archive may be given extracted (a folder of the class
tars, or of class folders of JPEGs); it is read as a stream, never unpacked to disk.
Splits train (1,281,167) and val (50,000).

Records of `classes`: image (original JPEG bytes; the few CMYK or PNG files re-encoded
as RGB PNG), label (class index 0..999 in the sorted WNID order used by most ImageNet
models) and file_name. Metadata: classes (WNIDs) and class_words (their WordNet words).

`released` reads, besides the train archive and the devkit, PaddleSeg's label release
(pssl2.1_consensus: train.txt listing train/<wnid>/<image>.JPEG_eiseg.npz, one .npz per
labelled train image, array arr_0 of the image's size, 1 on the object), given
extracted (or as a tar) in the manual dir as pssl2.1_consensus. As PaddleSeg's
PSSLDataset reads it: arr_0 == 1 -> the image's class, anything else -> background
1000. Records: image, label (uint16 PNG, 0..1000), class, file_name; split train holds
the images train.txt lists (1,281,121 in the release); train images it does not list
are left out and counted, a listed label whose image is missing is an error. Metadata:
classes (the 1000 WNIDs + "background").
"""
from __future__ import annotations

import io
import tarfile

import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data.builders import common

DEVKIT = "ILSVRC2012_devkit_t12/data/"


def read_devkit(tree):
  """(sorted WNIDs, their words, {ILSVRC2012_ID: class index}) of the devkit's meta.mat."""
  import scipy.io  # setup.py extra "prepare"
  name = DEVKIT + "meta.mat"
  try:
    synsets = scipy.io.loadmat(io.BytesIO(tree.read(name)), squeeze_me=True)["synsets"]
    leaves = [(str(s["WNID"]), str(s["words"]), int(s["ILSVRC2012_ID"]))
              for s in synsets if int(s["num_children"]) == 0]
  except Exception as e:
    raise common.InputDataError(f"{tree.where(name)}: not the devkit's synsets "
                                f"({type(e).__name__}: {e})") from None
  leaves.sort()
  wnids = [w for w, _, _ in leaves]
  return wnids, [words for _, words, _ in leaves], {i: k for k, (_, _, i) in enumerate(leaves)}


RELEASED = "pssl2.1_consensus.tar"
BACKGROUND = 1000  # T(D<9) = B: the released labels' background class


class ImagenetPssl(common.ArchiveBuilder):
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="classes", description="images + class (train, val)"),
      tfds.core.BuilderConfig(name="released", description="train images + PaddleSeg's released PSSL labels"),
  ]

  def _info(self):
    if self.builder_config.name == "released":
      features = {
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
          "label": tfds.features.Image(shape=(None, None, 1), dtype=np.uint16, encoding_format="png"),
          "class": tfds.features.ClassLabel(num_classes=1000),
          "file_name": tfds.features.Text(),
      }
    else:
      features = {
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(num_classes=1000),
          "file_name": tfds.features.Text(),
      }
    return tfds.core.DatasetInfo(builder=self, description=__doc__, features=tfds.features.FeaturesDict(features),
                                 metadata=tfds.core.MetadataDict())  # classes, class_words: from the devkit

  def _split_generators(self, dl_manager):
    archives = self._archives(dl_manager)
    wnids, words, by_ilsvrc_id = read_devkit(archives["ILSVRC2012_devkit_t12.tar.gz"])
    if self.builder_config.name == "released":
      self.info.metadata.update(classes=wnids + ["background"], class_words=words + ["background"])
      return {"train": self._released(archives["ILSVRC2012_img_train.tar"], archives[RELEASED],
                                      {w: k for k, w in enumerate(wnids)})}
    self.info.metadata.update(classes=wnids, class_words=words)
    devkit = archives["ILSVRC2012_devkit_t12.tar.gz"]
    truth = DEVKIT + "ILSVRC2012_validation_ground_truth.txt"
    try:
      val_ids = [int(v) for v in devkit.read(truth).decode().split()]
      val_labels = [by_ilsvrc_id[i] for i in val_ids]
    except (common.BadExample, ValueError, KeyError) as e:
      raise common.InputDataError(f"{devkit.where(truth)}: unreadable or names an unknown "
                                  f"class ({e})") from None
    return {"train": self._train(archives["ILSVRC2012_img_train.tar"], {w: k for k, w in enumerate(wnids)}),
            "val": self._val(archives["ILSVRC2012_img_val.tar"], val_labels)}

  def _make(self, item):
    where, data, label = item
    if isinstance(data, common.BadExample):
      raise data
    image, _ = common.check_image(data, where)
    base = where.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return {"image": image, "label": label, "file_name": base.rsplit(".", 1)[0]}

  def _train(self, tree, classes):
    return self._generate_examples("train", train_images(tree, classes), self._make)

  def _released(self, tree, labels, classes):
    """The train images that the release's train.txt lists, with their labels."""
    listed = set(labels.read("train.txt").decode().split()) if labels.exists("train.txt") else set()
    if not listed:
      raise common.InputDataError(f"{labels.where('train.txt')}: missing or empty (the release's list of labels)")
    seen, unlabelled, wnid_of = set(), [], {k: w for w, k in classes.items()}

    def items():
      for key, (where, data, label) in train_images(tree, classes):
        name = f"train/{wnid_of[label]}/{key.rsplit('/', 1)[-1]}_eiseg.npz"
        if isinstance(data, common.BadExample):  # a corrupt class tar: reported by _make_released
          yield key, (where, data, label, labels, name)
          continue
        if name not in listed:
          unlabelled.append(where)
          continue
        seen.add(name)
        yield key, (where, data, label, labels, name)
      missing = sorted(listed - seen)
      if missing:
        raise common.InputDataError(f"{labels.where('train.txt')} lists {len(missing)} label(s) whose train image "
                                    f"is not in the archive: {', '.join(missing[:5])}")
      print(f"imagenet_pssl/released: {len(seen)} labelled train images; {len(unlabelled)} without a "
            "released label left out", flush=True)

    return self._generate_examples("train", items(), self._make_released)

  def _make_released(self, item):
    where, data, cls, labels, name = item
    if isinstance(data, common.BadExample):
      raise data
    image, size = common.check_image(data, where)
    try:
      with np.load(io.BytesIO(labels.read(name))) as z:
        pssl = z["arr_0"]
    except common.BadExample:
      raise
    except Exception as e:
      raise common.BadExample(f"{labels.where(name)}: not a label .npz with arr_0 ({type(e).__name__}: {e})") from None
    if pssl.shape[:2] != tuple(size):
      raise common.BadExample(f"{labels.where(name)}: arr_0 is {pssl.shape}, its image {where} is "
                              f"{size[0]}x{size[1]}")
    label = np.where(pssl.reshape(size) == 1, cls, BACKGROUND).astype(np.uint16)  # PaddleSeg's PSSLDataset
    base = where.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return {"image": image, "label": label[..., None], "class": cls, "file_name": base.rsplit(".", 1)[0]}

  def _val(self, tree, labels):
    names = sorted(n for n in tree.names("") if n.rsplit("/", 1)[-1].startswith("ILSVRC2012_val_"))
    if len(names) != len(labels):
      raise common.InputDataError(f"{tree.where('')}: {len(names)} val images but the ground truth "
                                  f"lists {len(labels)}")

    def items():
      for name in names:  # ILSVRC2012_val_00000001.JPEG is line 1 of the ground truth
        number = name.rsplit("_", 1)[-1].split(".")[0]
        label = labels[int(number) - 1] if number.isdigit() and 0 < int(number) <= len(labels) else None
        try:
          data = tree.read(name)
          if label is None:
            raise common.BadExample(f"{tree.where(name)}: no ground truth line for this file name")
        except common.BadExample as e:
          data, label = e, 0
        yield name.rsplit("/", 1)[-1], (tree.where(name), data, label)

    return self._generate_examples("val", items(), self._make)


def train_images(tree, classes):
  """(key, (where, image bytes or BadExample, class)) of every train image, class by
  class, each class tar read as a stream."""
  for wnid in sorted(classes):
    if tree.exists(f"{wnid}.tar"):  # the class tar, read as a stream
      where = tree.where(f"{wnid}.tar")
      try:
        fileobj = (open(where, "rb") if isinstance(tree, common.Folder)
                   else tree.tar.extractfile(tree.files[f"{wnid}.tar"]))
        with fileobj, tarfile.open(fileobj=fileobj, mode="r|") as inner:
          for member in inner:
            if member.isfile():
              yield member.name, (f"{where}:{member.name}", inner.extractfile(member).read(),
                                  classes[wnid])
      except (tarfile.TarError, OSError, EOFError) as e:
        yield f"{wnid}.tar", (where, common.BadExample(f"{where}: corrupt class tar ({e})"), 0)
    elif isinstance(tree, common.Folder) and (tree.root / wnid).is_dir():  # extracted class
      for name in tree.names(wnid):
        yield name.rsplit("/", 1)[-1], (tree.where(name), tree.read(name), classes[wnid])
    else:
      raise common.InputDataError(f"{tree.where(wnid + '.tar')}: missing class {wnid}")
