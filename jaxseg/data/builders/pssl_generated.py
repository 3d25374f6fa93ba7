"""`pssl_generated`: the pseudo labels of `python -m jaxseg.pssl.generate` with their
images, a semantic segmentation dataset of K + 1 classes (ImageNet: 1001, class 1000
the background).

The manual dir is the generation work dir (manifest.json + chunks/); jaxseg.pssl.generate
builds this dataset itself under WORKDIR/tfds when its last chunk is done. Every
chunk must be complete and match the manifest's sha256, or the preparation stops
naming the chunk. Split train: one record per source record (keyed by its index in
the source, record `index`).

Records: image (the source record's encoded bytes, as stored), label (uint16 PNG: the
image's class on the top decile D9, the background class elsewhere), deciles (uint8
PNG, 0..9: the ensemble explanation's decile, resized with nearest neighbours from the
generation's input size to the image's), class, file_name. Metadata: classes (the
source's class names + "background").
"""
from __future__ import annotations

import io
import json
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxseg.errors import DatasetNotFoundError, InputDataError


class PsslGenerated(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "--manual_dir: the work dir of python -m jaxseg.pssl.generate."

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.Image(shape=(None, None, 1), dtype=np.uint16, encoding_format="png"),
            "deciles": tfds.features.Image(shape=(None, None, 1), encoding_format="png", use_colormap=False),
            "class": np.int64,
            "index": np.int64,
            "file_name": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    from jaxseg.pssl.chunks import MANIFEST, ChunkStore
    try:
      workdir = str(dl_manager.manual_dir)
    except AssertionError:
      workdir = ""
    path = os.path.join(workdir, MANIFEST)
    if not workdir or not os.path.exists(path):
      raise DatasetNotFoundError(f"pssl_generated: no {MANIFEST} in --manual_dir '{workdir}' (give the work "
                                 "dir of python -m jaxseg.pssl.generate)")
    with open(path) as f:
      settings = json.load(f)["settings"]
    store = ChunkStore(workdir, settings, writer=False)
    per_chunk = settings["batch_size"] * settings["chunk_batches"]
    num_chunks = -(-settings["num_records"] // per_chunk)
    if store.done() < num_chunks:
      raise InputDataError(f"pssl_generated: {workdir} holds {store.done()} of {num_chunks} chunks; finish the "
                           "generation first (rerun python -m jaxseg.pssl.generate with the same --workdir)")
    source = tfds.builder_from_directory(settings["source_dir"])
    names = list((source.info.metadata or {}).get("classes", []))
    if len(names) == settings["background"]:
      self.info.metadata.update(classes=names + ["background"])
    raw = source.as_data_source(settings["source"]["split"], decoders={"image": tfds.decode.SkipDecoding()})
    return {"train": self._generate_examples(store, num_chunks, raw, settings["background"])}

  def _generate_examples(self, store, num_chunks, raw, background):
    import cv2
    for number in range(num_chunks):
      chunk = store.read(number)
      for index, cls, deciles in zip(chunk["index"], chunk["classes"], chunk["deciles"]):
        record = raw[int(index)]
        data = record["image"]
        try:
          width, height = Image.open(io.BytesIO(data)).size
        except Exception as e:
          raise InputDataError(f"source record {index}: unreadable image ({e})") from None
        d = cv2.resize(deciles, (width, height), interpolation=cv2.INTER_NEAREST)
        label = np.where(d == 9, cls, background).astype(np.uint16)  # T(D9) = T(I), T(D<9) = B
        name = record.get("file_name", b"")
        name = name.decode() if isinstance(name, bytes) else str(name)
        yield int(index), {"image": data, "label": label[..., None], "deciles": d[..., None],
                           "class": int(cls), "index": int(index), "file_name": name or str(int(index))}
