"""The semantic segmentation family: dense per-pixel class logits.

Batches: "image" uint8 (B, H, W, 3), "label" (B, H, W) with ignore_index (uint8, or
uint16 where a class id or the ignore index exceeds 255: PSSL's 1001 classes), and
"edges" (B, H, W) in {0, 1} with input.canny_edges (Gated-SCNN). The Segmentor
(jaxseg.models.segmentor) gets the normalised image and the batch, whose keys its
heads read; the loss is the weighted sum of each output's terms (jaxseg.losses);
evaluation scores the argmax of `predict_scores` (whole / slide / multi-scale + flip)
by the evaluators of config.evals: the confusion matrix ("confusion") and the
boundary F-score ("boundary_f").
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import sharding
from jaxseg.data import transforms
from jaxseg.errors import ConfigError
from jaxseg.evaluate import BoundaryF, ConfusionMatrix, normalize, predict_scores, resized_back
from jaxseg.families import Base
from jaxseg.losses import cross_entropy, ohem_cross_entropy
from jaxseg.metrics import format_table
from jaxseg.models.segmentor import build_model, output_losses


def output_weight(name, config):
  """Loss weight of the output (or loss term) `name`: config.loss.weights[name]."""
  if name not in config.loss.weights:
    raise ConfigError(f"config key loss.weights.{name} is missing: the model has an output '{name}' "
                      f"(weights given: {', '.join(config.loss.weights)})")
  return config.loss.weights[name]


def segmentation_loss(outputs, labels, config, key=None):
  """The semantic loss: sum over the terms of every output of the term's weight
  (loss.weights) x the term. An output whose head brings its own terms (the head module's `LOSSES`:
  STDC's detail loss, EncNet's SE loss, Gated-SCNN's edge / dual-task / boundary-CE
  terms of "edge", MCIBI's memory rows) gets those, with `key` for their noise; every
  other output the cross-entropy on the label map (OHEM with loss.ohem). Returns
  (total, terms)."""
  weights = tuple(config.loss.class_weights) or None
  if weights is not None and len(weights) != config.dataset.num_classes:
    raise ConfigError(f"config key loss.class_weights has {len(weights)} entries, "
                      f"dataset.num_classes is {config.dataset.num_classes}")
  ignore, lc, corners = config.dataset.ignore_index, config.loss, config.model.align_corners
  if lc.ohem and not 0 < lc.ohem_thresh <= 1:
    raise ConfigError(f"config key loss.ohem_thresh must be in (0, 1], got {lc.ohem_thresh}")

  def label_ce(logits):
    if lc.ohem:
      return ohem_cross_entropy(logits, labels, ignore, weights, lc.ohem_thresh, lc.ohem_min_kept, corners)
    return cross_entropy(logits, labels, ignore, weights, corners)

  own = output_losses(config)
  terms = {}
  for name, out in outputs.items():
    terms.update(own[name](outputs, labels, config, key) if name in own else {name: label_ce(out)})
  total = sum(terms[n] * output_weight(n, config) for n in terms)
  return total, terms


def label_dtype(dataset):
  """uint8 labels, or uint16 where the classes or the ignore index do not fit in 8 bits."""
  return np.uint8 if max(dataset.num_classes - 1, dataset.ignore_index) <= 255 else np.uint16


class Family(Base):
  # config.evals entries: evaluator -> its options with their defaults
  EVALUATORS = {"confusion": {"every": 0}, "boundary_f": {"every": 0, "tolerance": 3}}

  def build_model(self, train):
    c = self.config
    return build_model(c) if train else build_model(c, c.model.eval_output_stride)

  def resizes_eval_images(self):
    """Whether eval images are resized (input.eval_short_side / eval_long_side), so
    that batches carry the stored labels on their own canvas and the sizes."""
    i = self.config.input
    return bool(i.eval_short_side or i.eval_long_side)

  def label_canvas(self):
    """The static (H, W) of the eval labels: input.eval_label_size, (0, 0) = eval_size."""
    return transforms.eval_label_canvas(self.config.input)

  def example(self, train):
    c = self.config
    size = tuple(c.input.crop_size if train else c.input.eval_size)
    label = size if train else self.label_canvas()
    out = {"image": np.zeros((*size, 3), np.uint8),
           "label": np.full(label, c.dataset.ignore_index, label_dtype(c.dataset))}
    if c.input.get("canny_edges", False):
      out["edges"] = np.zeros(size, np.uint8)
    if not train and self.resizes_eval_images():  # a blank entry: nothing valid
      out.update(image_size=np.zeros(2, np.int32), label_size=np.zeros(2, np.int32))
    return out

  def init(self, model, key, batch):
    return model.init({"params": key, "dropout": key}, normalize(batch["image"], self.config), train=True,
                      batch=batch)

  def apply(self, model, variables, batch, train, **kwargs):
    return model.apply(variables, normalize(batch["image"], self.config), train=train, batch=batch, **kwargs)

  def check_train_input(self):
    transforms.check_train_input(self.config.input)

  def train_transform(self, record, rng, where="record"):
    return transforms.train_transform(record, rng, self.config.input, self.config.dataset.ignore_index, where)

  def eval_transform(self, record, where="record"):
    i = self.config.input
    canny = tuple(i.canny_thresholds) if i.get("canny_edges", False) else None
    return transforms.eval_transform(record, tuple(i.eval_size), self.config.dataset.ignore_index, where,
                                     i.eval_short_side, i.eval_long_side, canny, self.label_canvas())

  def images_batch(self, images):
    """The batch of uint8 RGB `images` (B, H, W, 3) as inference needs it: with the
    Canny maps of the raw images where the model reads them (computed on the host)."""
    batch = {"image": images}
    if self.config.input.get("canny_edges", False):
      batch["edges"] = np.stack([transforms.canny(im, self.config.input.canny_thresholds) for im in images])
    return batch

  def loss(self, outputs, batch, rng):
    return segmentation_loss(outputs, batch["label"], self.config, rng)

  def scores(self, model, variables, batch):
    """(B, H, W, K) class scores at the image size (jittable)."""
    return predict_scores(model, variables, batch, self.config)

  def predict(self, model, variables, batch):
    """{"pred": class ids}: at the image canvas, or with "label_size" in the batch (eval
    images resized) at the stored label's canvas, the scores of the valid region
    resized back to each label's size first (the toolboxes' protocol)."""
    scores = self.scores(model, variables, batch)
    if "label_size" not in batch:
      return {"pred": jnp.argmax(scores, axis=-1)}
    return {"pred": resized_back(scores, batch["image_size"], batch["label_size"], batch["label"].shape[1:3],
                                        self.config.model.get("align_corners", False))}

  def evaluators(self):
    d, out = self.config.dataset, {}
    for name, options in self.config.evals.items():
      if name == "confusion":
        out[name] = ConfusionMatrix(d.num_classes, d.ignore_index)
      elif name == "boundary_f":
        out[name] = BoundaryF(d.num_classes, options.get("tolerance", 3), d.ignore_index)
    return out

  def class_names(self):
    from jaxseg.data import datasets
    return datasets.class_names(self.builder, self.config.dataset.num_classes)

  def report(self, scores, step):
    if "per_class_iou" in scores:
      return format_table(scores, self.class_names(), step)
    return f"step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float))

  def log_evaluation(self, tb, step, scores, predict, eval_source):
    """Scalars, per-class IoU and (train.tensorboard_images > 0) image | ground truth
    | prediction | errors rows of the first eval images. Every process predicts (the
    arrays may span hosts); the writer of process 0 alone writes."""
    tb.scalars(step, {k: v for k, v in scores.items() if isinstance(v, float) and k != "eval_seconds"}, "eval/")
    if "per_class_iou" in scores:
      tb.scalars(step, {n: v for n, v in zip(self.class_names(), scores["per_class_iou"]) if v is not None},
                 "eval/iou/")
    count = self.config.train.tensorboard_images
    if count <= 0:
      return
    from jaxseg.data import datasets, pipeline
    from jaxseg.tools import draw
    c = self.config
    palette = datasets.palette(c.dataset.num_classes, self.builder)
    batch = next(pipeline.eval_batches(c, eval_source, min(count, len(eval_source)), family=self, num_workers=0))
    preds = jax.device_get(predict(batch)["pred"])
    for i, (image, label, pred) in enumerate(self.shown(batch, preds)):
      row = draw.prediction_row(image, label, pred, palette, c.dataset.ignore_index)
      tb.image(step, f"eval/prediction_{i}", draw.grid([row], draw.PREDICTION_TITLES))

  def shown(self, batch, preds):
    """(image, label, prediction) of every eval batch entry as drawn, all of one size:
    with resized eval images (the prediction at the stored label's canvas) the image
    resized back to its label, on the label canvas, the prediction cut to the label
    (ignore beyond); otherwise the canvas as it is. Blank padding entries are left out."""
    if "label_size" not in batch:
      return list(zip(batch["image"], batch["label"], preds))
    import cv2
    out = []
    for image, label, pred, (h, w), (lh, lw) in zip(batch["image"], batch["label"], preds, batch["image_size"],
                                                    batch["label_size"]):
      if h and lh:
        back = np.zeros((*label.shape, 3), np.uint8)
        back[:lh, :lw] = cv2.resize(image[:h, :w], (int(lw), int(lh)), interpolation=cv2.INTER_LINEAR)
        inside = np.zeros(label.shape, bool)
        inside[:lh, :lw] = True
        out.append((back, label, np.where(inside, np.asarray(pred), self.config.dataset.ignore_index)))
    return out

  def predictor(self, model, variables, step, mesh):
    return Segmenter(self.config, variables, step, mesh, family=self)

  def write_predictions(self, seg, input_dir, output_dir):
    """<name>.png (class-id mask, palette PNG) and <name>_overlay.png per image."""
    from PIL import Image

    from jaxseg.data import datasets
    from jaxseg.prediction_files import image_names, read_rgb

    names = image_names(input_dir)
    try:
      builder = self.builder
    except datasets.DatasetNotFoundError:
      builder = None  # predicting needs no data; the palette then has default colours
    palette = datasets.palette(self.config.dataset.num_classes, builder)
    os.makedirs(output_dir, exist_ok=True)
    for i, name in enumerate(names):
      rgb = read_rgb(input_dir, name)
      mask = seg.predict(rgb[None])[0].astype(np.uint8)
      stem = os.path.splitext(name)[0]
      out = Image.fromarray(mask, mode="P")
      out.putpalette(palette.reshape(-1).tolist())
      out.save(os.path.join(output_dir, f"{stem}.png"))
      overlay = (0.5 * rgb + 0.5 * palette[mask]).astype(np.uint8)
      Image.fromarray(overlay).save(os.path.join(output_dir, f"{stem}_overlay.png"))
      print(f"[{i + 1}/{len(names)}] {name}: classes {sorted(set(np.unique(mask).tolist()))}", flush=True)
    print(f"wrote {len(names)} masks and overlays to {output_dir}")

  def describe(self):
    m = self.config.model
    b = m.backbone
    backbone = f"ResNet-{b.depth}" if b.get("name", "resnet") == "resnet" else b.name.upper()
    return f"{m.head.name} {backbone}"


class Segmenter:
  """`.logits(images)` -> (B, H, W, K) float32 scores at the input resolution;
  `.predict(images)` -> (B, H, W) int32 class ids. `images` are uint8 RGB (B, H, W, 3)
  of any size; normalisation and the config's inference mode (whole / slide /
  multi-scale + flip) happen inside."""

  def __init__(self, config, variables, step, mesh, family=None):
    self.config, self.variables, self.step = config, variables, step
    self.family = family or Family(config)
    self.model = self.family.build_model(train=False)
    self.data_sharding, self.replicated = sharding.data_sharding(mesh), sharding.replicated(mesh)
    self._logits = jax.jit(lambda v, batch: self.family.scores(self.model, v, batch))

  def _check(self, images):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
      raise ValueError(f"expected uint8 images of shape (B, H, W, 3), got {images.dtype} {images.shape}")
    return images

  def logits(self, images):
    batch = self.family.images_batch(self._check(images))
    return np.asarray(self._logits(self.variables, jax.tree.map(jnp.asarray, batch)))

  def predict(self, images):
    return self.logits(images).argmax(-1).astype(np.int32)
