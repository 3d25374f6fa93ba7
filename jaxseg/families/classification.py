"""The classification family: one class per image. It trains the classifiers whose
explanations PSSL turns into pseudo labels (jaxseg.pssl.explain.Classifier: a ResNet,
global average pooling, a dense layer), so that a work dir of it is an ensemble member
of python -m jaxseg.pssl.generate as it stands.

Records: {"image" (H, W, 3) uint8, "label": the class index}. Batches: "image" uint8
(B, H, W, 3), the whole image resized (bilinear) to input.crop_size, flipped (input.flip)
and colour-distorted (input.photometric, input.blur_prob) in training; "label" int32
(B,), -1 for the blank entries that pad the last eval batch. Loss: softmax
cross-entropy. Evaluator "accuracy": top-1 accuracy (train.best_metric "accuracy").
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseg import sharding
from jaxseg.data.transforms import blur_and_colour
from jaxseg.errors import InputDataError
from jaxseg.evaluate import normalize
from jaxseg.families import Base


class Accuracy:
  """Top-1 accuracy of outputs["pred"] (B,) against batch["label"] (B,), entries with
  label -1 left out; accumulated on device as (correct, counted)."""

  def init(self):
    return jnp.zeros(2, jnp.int32)

  def update(self, acc, outputs, batch):
    valid = batch["label"] >= 0
    correct = jnp.sum((outputs["pred"] == batch["label"]) & valid)
    return acc + jnp.stack([correct, jnp.sum(valid)]).astype(jnp.int32)

  def result(self, acc):
    correct, counted = (int(v) for v in acc)
    return {"accuracy": correct / max(counted, 1), "num_images": counted}


class Family(Base):
  EVALUATORS = {"accuracy": {"every": 0}}

  def build_model(self, train):
    from jaxseg.pssl.explain import classifier_from_config
    return classifier_from_config(self.config)

  def example(self, train):
    return {"image": np.zeros((*self.config.input.crop_size, 3), np.uint8), "label": np.int32(-1)}

  def init(self, model, key, batch):
    return model.init({"params": key}, normalize(batch["image"], self.config), train=True)

  def apply(self, model, variables, batch, train, **kwargs):
    return model.apply(variables, normalize(batch["image"], self.config), train=train, **kwargs)

  def _record(self, record, where):
    """The record's image resized to input.crop_size and its class, checked."""
    import cv2
    image, label = np.asarray(record["image"]), int(np.asarray(record["label"]))
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
      raise InputDataError(f"{where}: image of {image.dtype} {image.shape}, expected uint8 (H, W, 3)")
    if not 0 <= label < self.config.dataset.num_classes:
      raise InputDataError(f"{where}: class {label} outside dataset.num_classes = {self.config.dataset.num_classes}")
    h, w = self.config.input.crop_size
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR), np.int32(label)

  def train_transform(self, record, rng, where="record"):
    image, label = self._record(record, where)
    if self.config.input.flip and rng.random() < 0.5:
      image = image[:, ::-1]
    return {"image": np.ascontiguousarray(blur_and_colour(image, rng, self.config.input)), "label": label}

  def eval_transform(self, record, where="record"):
    image, label = self._record(record, where)
    return {"image": image, "label": label}

  def loss(self, outputs, batch, rng):
    valid = batch["label"] >= 0
    ce = optax.softmax_cross_entropy_with_integer_labels(outputs.astype(jnp.float32),
                                                         jnp.maximum(batch["label"], 0))
    ce = jnp.sum(ce * valid) / jnp.maximum(jnp.sum(valid), 1)
    return ce, {"ce": ce}

  def predict(self, model, variables, batch):
    return {"pred": jnp.argmax(self.apply(model, variables, batch, train=False), axis=-1).astype(jnp.int32)}

  def evaluators(self):
    return {name: Accuracy() for name in self.config.evals}

  def report(self, scores, step):
    return f"step {step}: accuracy {scores['accuracy']:.4f} on {scores['num_images']} images"

  def predictor(self, model, variables, step, mesh):
    return ImageClassifier(self, model, variables, step, mesh)

  def write_predictions(self, predictor, input_dir, output_dir):
    """predictions.csv: file, class id, class name, probability, one image a line."""
    from jaxseg.data import datasets
    from jaxseg.prediction_files import image_names, read_rgb

    names = image_names(input_dir)
    try:
      classes = datasets.class_names(self.builder, self.config.dataset.num_classes)
    except datasets.DatasetNotFoundError:
      classes = [str(i) for i in range(self.config.dataset.num_classes)]
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "predictions.csv"), "w") as f:
      f.write("file,class,name,probability\n")
      for name in names:
        p = jax.nn.softmax(predictor.logits(read_rgb(input_dir, name)[None])[0])
        k = int(np.argmax(p))
        f.write(f"{name},{k},{classes[k]},{float(p[k]):.4f}\n")
    print(f"wrote the classes of {len(names)} images to {os.path.join(output_dir, 'predictions.csv')}")

  def describe(self):
    b = self.config.model.backbone
    return f"classifier ResNet-{b.depth} (width {b.width})"


class ImageClassifier:
  """`.logits(images)` -> (B, K) float32 class scores of uint8 RGB `images` (B, H, W,
  3), each resized to input.crop_size inside; `.predict(images)` -> (B,) class ids."""

  def __init__(self, family, model, variables, step, mesh):
    self.family, self.variables, self.step = family, variables, step
    self.config = family.config
    self._logits = jax.jit(lambda v, batch: family.apply(model, v, batch, train=False),
                           out_shardings=sharding.replicated(mesh))

  def logits(self, images):
    import cv2
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
      raise ValueError(f"expected uint8 images of shape (B, H, W, 3), got {images.dtype} {images.shape}")
    h, w = self.config.input.crop_size
    resized = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR) for im in images])
    return np.asarray(self._logits(self.variables, {"image": jnp.asarray(resized)}))

  def predict(self, images):
    return self.logits(images).argmax(-1).astype(np.int32)
