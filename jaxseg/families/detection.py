"""The detection family: two-stage instance segmentation, proposals -> boxes + masks
(PANet, and its "Mask R-CNN" setting: jaxseg.models.detection).

Classes. The detector's classes are the dataset's thing categories, config
dataset.thing_classes (indices into the dataset's classes, e.g. COCO's 80 things of its
133 panoptic categories), in that order: detector class t is dataset class
thing_classes[t]; its predictions are reported in dataset classes again.

Batches (jaxseg.data.instances with which="things", every shape static):
  train  "image" (crop_size, uint8), "image_size" (2,) the region of the crop the image
         covers (the rest is padding, bottom / right; boxes are clipped to it), and the
         ground truth "instance_boxes" (M, 4) xyxy, "instance_classes" (M,) detector
         classes, "instance_masks" (M, h / s, w / s) at input.instance_mask_stride s,
         "instance_valid" (M,), "instance_iscrowd" (M,): the model learns nothing from
         crowd instances, as torchvision's and Detectron2's COCO training drop them.
  eval   "image" (eval_size), "image_size" the resized image's (h, w), "label_size" the
         stored (H, W), and the ground-truth maps "panoptic", "label", "panoptic_crowd"
         the COCO AP evaluator reads (every thing segment of the map, however many), at
         the stored size on the label canvas (input.eval_label_size: COCO 640 x 640).

Training: scale by input.scale_mode (the paper's multi-scale "short_side" 400..1200),
random crop / pad to the canvas, flip; the model's losses (RPN, box head, mask head),
each weighted by loss.weights[term].

Inference (`predict`): the detector's top detections per image (boxes in canvas pixels,
scores, classes, validity) and each one's M x M mask probabilities of its class; COCO's
protocol (torchvision's transform.postprocess, Detectron2's detector_postprocess) then
scales the boxes from the resized image back to the stored one and clips them to it
(paste.boxes_to_image), and pastes the masks inside them at the stored size
(jaxseg.models.detection.paste, convention eval.mask_paste), on the static label canvas
with nothing beyond the stored size -> "instance_masks" (B, D, H, W) bool and the
"instance_*" entries that jaxseg.panoptic_evaluators.CocoAPEvaluator scores against the
stored ground truth: COCO box and mask AP. Test-time augmentation (eval.scales,
factors of the eval resize, and eval.flip; default the one view, scale 1 unflipped):
Detectron's, jaxseg.models.detection.augment: the box head's candidates of every view
merged by union before the per-class NMS, each final box's mask probabilities averaged
over the views; one compiled detector per view canvas.

`jaxseg.load(workdir)` gives a `Detector`: `.instances(images)` resizes each image as
the eval transform does, pads it to input.eval_size (one compiled program for all
sizes), detects, and returns per image masks pasted at the image's own size.
`--mode predict` writes COCO's results JSON (RLE masks, xywh boxes) and overlays.
"""
from __future__ import annotations

import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import sharding
from jaxseg.data import instances, transforms
from jaxseg.errors import ConfigError
from jaxseg.evaluate import normalize
from jaxseg.families import Base
from jaxseg.models.detection import augment, detector, losses, paste
from jaxseg.panoptic_evaluators import OPTIONS, CocoAPEvaluator


def thing_classes(config):
  """The dataset classes of the detector's classes (config dataset.thing_classes)."""
  things = tuple(int(k) for k in config.dataset.get("thing_classes", ()))
  k = config.dataset.num_classes
  if not things:
    raise ConfigError("config key dataset.thing_classes is empty: the detection family needs the dataset "
                      "classes it detects (e.g. tuple(range(80)) for COCO's things)")
  if len(set(things)) != len(things) or not all(0 <= t < k for t in things):
    raise ConfigError(f"config key dataset.thing_classes must be distinct classes in [0, {k}), got {things}")
  return things


def eval_views(config):
  """The test-time views ((scale, flip), ..) of config eval.scales (factors of the eval
  resize, as the semantic family's: each view is the eval-resized image x scale on the
  eval canvas x scale, rounded up to a multiple of 64) and eval.flip (each scale also
  mirrored); ((1.0, False),) is the plain single-scale inference."""
  e = config.eval
  scales = tuple(e.get("scales", (1.0,)))
  if not scales or not all(isinstance(s, (int, float)) and s > 0 for s in scales):
    raise ConfigError(f"config key eval.scales must be positive factors of the eval resize, got {scales}")
  return tuple((float(s), f) for s in scales for f in ((False, True) if e.get("flip", False) else (False,)))


class Family(Base):
  EVALUATORS = {"coco_ap": OPTIONS["coco_ap"]}

  def __init__(self, config):
    super().__init__(config)
    self.things = thing_classes(config)
    # dataset class -> detector class (-1: not a thing)
    self.to_detector = np.full(config.dataset.num_classes, -1, np.int32)
    self.to_detector[list(self.things)] = np.arange(len(self.things))
    self.paste_convention = config.eval.get("mask_paste", "torchvision")
    if self.paste_convention not in paste.CONVENTIONS:
      raise ConfigError(f"config key eval.mask_paste must be one of {', '.join(paste.CONVENTIONS)}, "
                        f"got '{self.paste_convention}'")
    self._isthing = None
    self.views = eval_views(config)
    self._view_models = {}

  # ---------------------------------------------------------------- model
  def build_model(self, train):
    i = self.config.input
    return detector.build_detector(self.config, len(self.things), tuple(i.crop_size if train else i.eval_size))

  def isthing(self):
    """(K,) bool of the detector's classes among the dataset's, which must be things
    in its metadata (read once)."""
    if self._isthing is None:
      isthing = np.zeros(self.config.dataset.num_classes, bool)
      isthing[list(self.things)] = True
      stored = instances.thing_classes(self.builder, self.config.dataset.num_classes)
      if not stored[isthing].all():
        raise ConfigError(f"config key dataset.thing_classes: classes {np.flatnonzero(isthing & ~stored).tolist()} "
                          f"are stuff in dataset '{self.config.dataset.name}'")
      self._isthing = isthing
    return self._isthing

  def example(self, train):
    c = self.config.input
    size = tuple(c.crop_size if train else c.eval_size)
    if not train:
      labels = transforms.eval_label_canvas(c)
      return {"image": np.zeros((*size, 3), np.uint8), "image_size": np.zeros(2, np.int32),
              "label_size": np.zeros(2, np.int32), "panoptic": np.zeros(labels, np.int32),
              "label": np.full(labels, self.config.dataset.ignore_index, np.uint8),
              "panoptic_crowd": np.zeros(labels, np.uint8)}
    m, s = c.max_instances, c.instance_mask_stride
    return {"image": np.zeros((*size, 3), np.uint8), "image_size": np.array(size, np.int32),
            "instance_boxes": np.zeros((m, 4), np.float32), "instance_classes": np.zeros(m, np.int32),
            "instance_masks": np.zeros((m, size[0] // s, size[1] // s), np.uint8),
            "instance_valid": np.zeros(m, bool), "instance_iscrowd": np.zeros(m, np.int32)}

  def init(self, model, key, batch):
    return model.init({"params": key, "sampling": key}, normalize(batch["image"], self.config), batch,
                      batch["image_size"], train=True)

  def apply(self, model, variables, batch, train, rngs=None, **kwargs):
    """The detector on the batch; in training its anchor and RoI sampling draw from the
    step's key (train.py's "dropout" key: the model has no dropout)."""
    if train and rngs is not None:
      rngs = {"sampling": rngs.get("sampling", rngs.get("dropout"))}
    return model.apply(variables, normalize(batch["image"], self.config), batch if train else None,
                       batch["image_size"], train=train, rngs=rngs, **kwargs)

  # ---------------------------------------------------------------- data
  def check_train_input(self):
    instances.check_input(self.config.input)
    for size in (self.config.input.crop_size, self.config.input.eval_size):
      if any(v % 64 for v in size):  # P6 of the canvas at stride 64 (the anchors of every level)
        raise ConfigError(f"config keys input.crop_size / eval_size must be multiples of 64 for the detector's "
                          f"pyramid, got {tuple(size)}")

  def train_transform(self, record, rng, where="record"):
    out = instances.train_targets(record, rng, self.config, self.isthing(), which="things", where=where,
                                  image_size=True)
    del out["label"]
    out["instance_classes"] = np.where(out["instance_valid"], self.to_detector[out["instance_classes"]], 0)
    return out

  def eval_transform(self, record, where="record"):
    out = instances.eval_targets(record, self.config, self.isthing(), which="things", panoptic=True, where=where,
                                 image_size=True)
    return {k: out[k] for k in ("image", "image_size", "label_size", "panoptic", "label", "panoptic_crowd")}

  # ---------------------------------------------------------------- loss and inference
  def loss(self, outputs, batch, rng):
    """The detector's terms (jaxseg.models.detection.losses), each x loss.weights[term]."""
    weights = self.config.loss.weights
    missing = [k for k in losses.TERMS if k not in weights]
    if missing:
      raise ConfigError(f"config key loss.weights lacks {missing} (the detector's terms: {', '.join(losses.TERMS)})")
    terms = losses.detection_losses(outputs, weights={k: weights[k] for k in losses.TERMS},
                                    **detector.loss_options(self.config))
    total = terms.pop("loss")
    return total, terms

  def detect(self, model, variables, batch):
    """The detector's detections on the canvas: {"boxes" (B, D, 4) canvas pixels,
    "scores" (B, D), "classes" (B, D) detector classes, "valid" (B, D),
    "masks" (B, D, M, M) probabilities of each detection's class} (jittable). With
    eval.scales / eval.flip beyond the one view (1.0, no flip): merged over the views
    (jaxseg.models.detection.augment: Detectron's test-time augmentation)."""
    if self.views == ((1.0, False),):
      return self.apply(model, variables, batch, train=False)
    canvases = [augment.view_canvas(self.config.input.eval_size, scale) for scale, _ in self.views]
    models = [self.view_model(canvas) for canvas in canvases]

    def run(i, images, image_sizes, **kwargs):
      return models[i].apply(variables, normalize(images, self.config), None, image_sizes, train=False, **kwargs)

    return augment.detect(run, self.views, canvases, batch["image"], batch["image_size"], model.nms_threshold,
                          model.detections, model.detections_pre_nms)

  def view_model(self, canvas):
    """The detector on a test-time view's canvas (the same parameters)."""
    if canvas not in self._view_models:
      self._view_models[canvas] = detector.build_detector(self.config, len(self.things), canvas)
    return self._view_models[canvas]

  def predict(self, model, variables, batch):
    """The "instance_*" outputs CocoAPEvaluator scores, at each image's stored size
    ("label_size"): boxes scaled back from the resized image ("image_size") and clipped
    to the stored size, masks pasted inside them on the label canvas, nothing beyond
    the stored size; without "label_size" in the batch, on the image canvas."""
    out = self.detect(model, variables, batch)
    b, d = out["scores"].shape
    valid = out["valid"][:, :, None, None]
    if "label_size" in batch:
      size, stored = transforms.eval_label_canvas(self.config.input), batch["label_size"]
      boxes = paste.boxes_to_image(out["boxes"], jnp.maximum(batch["image_size"], 1), stored)  # filler entries: 0
      valid &= ((jnp.arange(size[0])[None, :, None] < stored[:, 0, None, None]) &
                (jnp.arange(size[1])[None, None, :] < stored[:, 1, None, None]))[:, None]
    else:
      size, boxes = batch["image"].shape[1:3], out["boxes"]
    masks = paste.paste_masks(out["masks"].reshape(b * d, *out["masks"].shape[2:]),
                              boxes.reshape(b * d, 4), size, self.paste_convention).reshape(b, d, *size)
    return {"instance_masks": masks & valid, "instance_classes": jnp.asarray(self.things, jnp.int32)[out["classes"]],
            "instance_scores": out["scores"], "instance_boxes": boxes, "instance_valid": out["valid"]}

  # ---------------------------------------------------------------- evaluation
  def categories(self):
    """[{"id", "name", "isthing"}] of the dataset's classes (COCO ids where stored)."""
    meta = self.builder.info.metadata or {}
    k = self.config.dataset.num_classes
    ids = list(meta.get("category_ids", range(k)))
    names = list(meta.get("classes", [str(i) for i in range(k)]))
    isthing = self.isthing()
    return [{"id": int(ids[i]), "name": names[i], "isthing": int(isthing[i])} for i in range(k)]

  def evaluators(self):
    out = {}
    for name, options in self.config.evals.items():
      if name == "coco_ap":
        out[name] = CocoAPEvaluator(self.categories(), tuple(options.get("iou_types", ("bbox", "segm"))))
    return out

  def report(self, scores, step):
    """Per-class box / mask AP of the thing classes, then COCO's summary numbers."""
    names = [c["name"] for c in self.categories()]
    lines = []
    per = {p: scores.get(f"per_class_{p}_ap") for p in ("box", "mask")}
    if any(v is not None for v in per.values()):
      width = max([len(names[t]) for t in self.things] + [5])
      lines = [f"{'class':<{width}}  box AP  mask AP", "-" * (width + 17)]
      fmt = lambda v: "    n/a" if v is None else f"{100 * v:7.2f}"
      for t in self.things:
        box = per["box"][t] if per["box"] is not None else None
        mask = per["mask"][t] if per["mask"] is not None else None
        lines.append(f"{names[t]:<{width}} {fmt(box)}  {fmt(mask)}")
    summary = "  ".join(f"{k} {v:.4f}" for k, v in scores.items()
                        if isinstance(v, float) and (k.startswith("box_") or k.startswith("mask_")))
    lines.append(f"step {step}: {summary}")
    return "\n".join(lines)

  def log_evaluation(self, tb, step, scores, predict, eval_source):
    """The AP scalars (COCO's NaN, no ground truth in a size range, left out)."""
    tb.scalars(step, {k: v for k, v in scores.items() if isinstance(v, float) and np.isfinite(v)
                      and k != "eval_seconds"}, "eval/")

  # ---------------------------------------------------------------- prediction
  def predictor(self, model, variables, step, mesh):
    return Detector(self.config, variables, step, mesh, family=self)

  def write_predictions(self, detector, input_dir, output_dir):
    """OUTPUT_DIR/results.json (COCO's results format: image_id, category_id, score,
    bbox x, y, w, h, segmentation RLE) and <name>_overlay.png per image. An image's
    id is its file name's number where it is one (COCO's 000000000139.jpg -> 139),
    else its position in the sorted folder."""
    from jaxseg.data import datasets
    from jaxseg.prediction_files import InstanceResultsWriter, image_names, read_rgb
    from jaxseg.tools import draw

    names = image_names(input_dir)
    k = self.config.dataset.num_classes
    try:
      categories, builder = self.categories(), self.builder
    except datasets.DatasetNotFoundError:  # predicting needs no data: class indices as ids
      categories, builder = [{"id": i, "name": str(i)} for i in range(k)], None
    palette = datasets.palette(k, builder)
    os.makedirs(output_dir, exist_ok=True)
    writer = InstanceResultsWriter(os.path.join(output_dir, "results.json"), categories)
    for i, name in enumerate(names):
      rgb = read_rgb(input_dir, name)
      found = detector.instances(rgb[None])[0]
      stem = os.path.splitext(name)[0]
      writer.add(int(stem) if stem.isdigit() else i, found["classes"], found["scores"], found["boxes"], found["masks"])
      draw.save_png(os.path.join(output_dir, f"{stem}_overlay.png"),
                    draw.instance_overlay(rgb, found["masks"], found["classes"], found["scores"], found["boxes"],
                                          palette))
      print(f"[{i + 1}/{len(names)}] {name}: {len(found['scores'])} instances", flush=True)
    print(f"wrote {writer.close()} and {len(names)} overlays to {output_dir}")

  def describe(self):
    m = self.config.model
    name = "PANet" if m.head.get("adaptive_pooling", True) else "Mask R-CNN"
    return f"{name} ResNet-{m.backbone.depth}-FPN"


class Detector:
  """`.instances(images)`: uint8 RGB (B, H, W, 3) -> per image {"masks" (n, H, W) bool,
  "classes" (n,) dataset classes, "scores" (n,), "boxes" (n, 4) xyxy in pixels of the
  image}, best first. Each image is resized by the eval rule (input.eval_short_side /
  eval_long_side; and down to fit input.eval_size if still larger), padded to
  input.eval_size, and its masks are pasted at its own size from its boxes scaled back
  (one compiled detector; one paste program per image size)."""

  def __init__(self, config, variables, step, mesh, family=None):
    self.config, self.variables, self.step = config, variables, step
    self.family = family or Family(config)
    self.model = self.family.build_model(train=False)
    self.data_sharding, self.replicated = sharding.data_sharding(mesh), sharding.replicated(mesh)
    self.canvas = tuple(config.input.eval_size)
    self._detect = jax.jit(lambda v, batch: self.family.detect(self.model, v, batch))
    convention = self.family.paste_convention
    things = jnp.asarray(self.family.things, jnp.int32)

    def to_image(out, resized, size):
      boxes = paste.boxes_to_image(out["boxes"], resized[:, None, :], jnp.asarray(size, jnp.float32))
      b, d = out["scores"].shape
      masks = paste.paste_masks(out["masks"].reshape(b * d, *out["masks"].shape[2:]),
                                boxes.reshape(b * d, 4), size, convention).reshape(b, d, *size)
      return masks, boxes, things[out["classes"]]

    self._to_image = jax.jit(to_image, static_argnums=2)

  def resized_size(self, shape):
    """(h, w) an (H, W) image is resized to: the eval rule, within the canvas."""
    i = self.config.input
    h, w = transforms.keep_ratio_size(shape, i.eval_short_side, i.eval_long_side) \
        if (i.eval_short_side or i.eval_long_side) else shape
    if h > self.canvas[0] or w > self.canvas[1]:
      h, w = transforms.keep_ratio_size((h, w), min(self.canvas), max(self.canvas))
      h, w = min(h, self.canvas[0]), min(w, self.canvas[1])
    return h, w

  def instances(self, images):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
      raise ValueError(f"expected uint8 images of shape (B, H, W, 3), got {images.dtype} {images.shape}")
    size = images.shape[1:3]
    h, w = self.resized_size(size)
    canvas = np.zeros((len(images), *self.canvas, 3), np.uint8)
    for b, image in enumerate(images):
      canvas[b, :h, :w] = image if (h, w) == size else cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    resized = np.tile(np.array([h, w], np.int32), (len(images), 1))
    out = self._detect(self.variables, {"image": jnp.asarray(canvas), "image_size": jnp.asarray(resized)})
    masks, boxes, classes = jax.device_get(self._to_image(out, jnp.asarray(resized, jnp.float32), size))
    out = jax.device_get(out)
    found = []
    for b in range(len(images)):
      keep = np.flatnonzero(out["valid"][b])
      keep = keep[np.argsort(-out["scores"][b][keep], kind="stable")]
      found.append({"masks": masks[b][keep], "classes": classes[b][keep], "scores": out["scores"][b][keep],
                    "boxes": boxes[b][keep]})
    return found
