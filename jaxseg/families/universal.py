"""The mask-classification ("universal") family: OneFormer (Jain et al. 2023), one
task-conditioned model trained once for semantic, instance and panoptic segmentation.

  model       jaxseg.models.heads.oneformer.oneformer.build: a ResNet or Swin backbone
              (model.backbone), the pixel decoder, task encoder, transformer decoder and,
              in training, the text mapper and the contrastive temperature (model.head,
              the keys of oneformer.CONFIG)
  training    per image a task drawn uniformly (the record's rng; the authors' mapper
              draws u ~ U(0, 1): semantic below 0.33, instance below 0.66, else panoptic),
              its ground truth derived from the panoptic annotation (crowd segments left
              out, as the authors' mapper does):
                semantic   one mask per class present, the segments of a class merged
                instance   one mask per thing segment
                panoptic   one mask per segment, stuff and things
              padded to input.max_instances masks with a validity flag; the task text
              "the task is {task}" as 77 CLIP ids; the texts of the text mapper, "a photo
              with a {class}" per ground-truth mask in class order, padded with "a/an
              {task} photo" to N - n_ctx texts, each 77 CLIP ids
  loss        Hungarian matching + CE / mask BCE / dice on sampled points, on every
              decoder layer, and the query-text contrastive loss
              (jaxseg.models.heads.oneformer.losses), weighted by loss.weights
  evaluation  from one checkpoint, each task with its own task token, as the paper
              reports them: PQ ("panoptic_quality", the panoptic token), COCO mask AP
              ("coco_ap", the instance token), mIoU ("confusion", the semantic token);
              the post-processing (jaxseg.models.heads.oneformer.postprocess) takes the
              thresholds of config.evals.<evaluator>
  predictor   jaxseg.load(workdir): .panoptic, .instances, .predict (semantic), each
              taking the task, and .query_outputs(images, task)

Evaluation runs on the static input.eval_size canvas, each image at its top left, the
rest filled with the mean colour (0 once normalised: the authors' padding). The model
has no key-padding mask (nor has the authors'): its attention also reads the padding,
which the authors keep below 32 px (their size divisibility) where a canvas holding both
orientations of ADE20K's resized images (2048 x 2048) is mostly padding; scores there
can differ from the authors' per-image padding. The predictions are scored at each
image's stored size, as the authors' (detectron2's) evaluation does: the mask logits,
resized bilinearly to the canvas, are cut to the image ("image_size") and resized
bilinearly (align_corners=False) to the stored size ("label_size") before every task's
inference (the authors' oneformer_model.py: F.interpolate to the padded batch, then
sem_seg_postprocess before the semantic, panoptic and instance inference, which
SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE or PANOPTIC_ON or INSTANCE_ON selects), on the
static label canvas (input.eval_label_size) with nothing beyond the stored size: void in
the panoptic map and in no query's area, outside the instance masks, their scores and
boxes, ignored by the semantic ground truth. The predictor pads each batch to a multiple
of 32, as they do.

Batches (training): "image" uint8 (B, h, w, 3), "task_ids" (B, 77), "text_ids" (B, T,
77), and the sampled task's ground truth "instance_classes" (B, M) int32,
"instance_masks" (B, M, h / s, w / s) uint8 (s = input.instance_mask_stride),
"instance_valid" (B, M) bool. Evaluation: "image", "image_size" (B, 2) the rows and
columns the image covers, "label_size" (B, 2) its stored size, and the panoptic ground
truth of jaxseg.data.instances.eval_targets ("label", "panoptic", "panoptic_crowd") at
the stored size on the label canvas.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import sharding
from jaxseg.data import instances, transforms
from jaxseg.errors import ConfigError
from jaxseg.evaluate import ConfusionMatrix, normalize, resized_back
from jaxseg.families import Base
from jaxseg.metrics import format_table
from jaxseg.models.heads.oneformer import losses, postprocess
from jaxseg.models.heads.oneformer.clip_tokenizer import TASKS, default_tokenizer, task_ids
from jaxseg.models.heads.oneformer.oneformer import CONFIG, OneFormer, build
from jaxseg.models.layers import resize
from jaxseg.panoptic_evaluators import OPTIONS, CocoAPEvaluator, PanopticQualityEvaluator

TASK_DRAW = (0.33, 0.66)  # the authors' INPUT.TASK_PROB: u < 0.33 semantic, < 0.66 instance, else panoptic
PAD_TEXT = {"semantic": "a semantic photo", "instance": "an instance photo", "panoptic": "a panoptic photo"}
EVALUATOR_TASK = {"panoptic_quality": "panoptic", "coco_ap": "instance", "confusion": "semantic"}
SIZE_DIVISIBILITY = 32  # the authors' predictor pads images to a multiple of the backbone's stride
EVAL_KEYS = ("image", "label", "panoptic", "panoptic_crowd")  # and "image_size", "label_size"


def head_keys(config):
  """model.head's keys, those it leaves out at oneformer.CONFIG's defaults."""
  return {**CONFIG, **{k: v for k, v in config.model.head.items() if k != "name"}}


# ---------------------------------------------------------------- ground truth per task

def task_targets(t, task, isthing, slots):
  """(classes (M,), masks (M, h, w), valid (M,)) of `task` from the targets of
  instances.train_targets(which="all"): every segment but the crowds (panoptic), the
  thing segments among them (instance), or one mask per class, its segments merged
  (semantic; in order of each class's largest segment)."""
  keep = t["instance_valid"] & (t["instance_iscrowd"] == 0)
  if task == "instance":
    keep &= np.asarray(isthing, bool)[t["instance_classes"]]
  classes, masks = t["instance_classes"][keep], t["instance_masks"][keep]
  if task == "semantic":
    present, first = np.unique(classes, return_index=True)
    present = present[np.argsort(first)]
    masks = np.stack([masks[classes == k].max(0) for k in present]) if len(present) else masks
    classes = present
  n = len(classes)
  out_classes = np.zeros(slots, np.int32)
  out_masks = np.zeros((slots, *t["instance_masks"].shape[1:]), np.uint8)
  out_classes[:n], out_masks[:n] = classes, masks
  return out_classes, out_masks, np.arange(slots) < n


class TextTable:
  """The CLIP ids of the text mapper's texts: "a photo with a {class}" per class, and
  the padding text of each task, tokenised once."""

  def __init__(self, class_names):
    tokenize = default_tokenizer()
    self.classes = tokenize([f"a photo with a {name}" for name in class_names])
    self.padding = {task: tokenize([text])[0] for task, text in PAD_TEXT.items()}

  def __call__(self, classes, valid, task, count):
    """(count, 77) ids: one text per valid mask, in class order, then the task's padding
    text (the authors' mapper; texts beyond `count` are left out)."""
    ids = np.broadcast_to(self.padding[task], (count, self.classes.shape[1])).copy()
    mine = np.sort(np.asarray(classes)[np.asarray(valid, bool)])[:count]
    ids[:len(mine)] = self.classes[mine]
    return ids


class PanopticQuality(PanopticQualityEvaluator):
  """PQ of the panoptic task's predictions: the host half of the panoptic inference
  (postprocess.panoptic_segments: overlap test, one segment per stuff class) on every
  batch's "panoptic_queries", then panoptic_evaluators' PQ."""

  def __init__(self, categories, isthing, overlap_threshold):
    super().__init__(categories)
    self.isthing, self.overlap_threshold = np.asarray(isthing, bool), overlap_threshold

  def update(self, acc, outputs, batch):
    segments = postprocess.panoptic_segments(outputs["panoptic_queries"], self.isthing, self.overlap_threshold)
    return super().update(acc, segments, batch)


# ------------------------------------------------------------------------------ family

class Family(Base):
  # config.evals entries: evaluator -> its options with their defaults (the thresholds
  # of the authors' COCO / Cityscapes configs; ADE20K's object mask threshold is 0.5)
  EVALUATORS = {
      "panoptic_quality": {**OPTIONS["panoptic_quality"], "object_mask_threshold": 0.8, "overlap_threshold": 0.8},
      "coco_ap": {**OPTIONS["coco_ap"], "iou_types": ("segm",), "max_detections": 150},
      "confusion": {"every": 0},
  }

  def __init__(self, config):
    super().__init__(config)
    self._texts = self._isthing = None  # from the dataset's metadata, on first use

  # -- model
  def build_model(self, train):
    return build(self.config, train)

  def text_count(self):
    h = head_keys(self.config)
    return h["queries"] - h["n_ctx"]

  def example(self, train):
    c = self.config
    if not train:
      blank = instances.blank(c, train=False, panoptic=True)
      return {"image_size": np.zeros(2, np.int32), "label_size": np.zeros(2, np.int32),
              **{k: blank[k] for k in EVAL_KEYS}}
    blank = instances.blank(c, train=True)
    return {"task_ids": np.zeros(77, np.int32), "text_ids": np.zeros((self.text_count(), 77), np.int32),
            **{k: blank[k] for k in ("image", "instance_classes", "instance_masks", "instance_valid")}}

  def init(self, model, key, batch):
    return model.init({"params": key, "dropout": key}, normalize(batch["image"], self.config), batch["task_ids"],
                      train=True, text_ids=batch["text_ids"])

  def apply(self, model, variables, batch, train, **kwargs):
    return model.apply(variables, normalize(batch["image"], self.config), batch["task_ids"], train=train,
                       text_ids=batch.get("text_ids"), **kwargs)

  # -- data
  def isthing(self):
    """(K,) bool: the thing classes (the dataset's metadata)."""
    if self._isthing is None:
      self._isthing = instances.thing_classes(self.builder, self.config.dataset.num_classes)
    return self._isthing

  def texts(self):
    if self._texts is None:
      self._texts = TextTable(self.class_names())
    return self._texts

  def __getstate__(self):  # grain's worker processes get the tables, not the builder
    self.texts(), self.isthing()
    return super().__getstate__()

  def check_train_input(self):
    instances.check_input(self.config.input)

  def train_transform(self, record, rng, where="record"):
    isthing = self.isthing()
    t = instances.train_targets(record, rng, self.config, isthing, which="all", where=where)
    task = TASKS[int(np.searchsorted(TASK_DRAW, rng.random(), side="right"))]
    classes, masks, valid = task_targets(t, task, isthing, self.config.input.max_instances)
    out = {"image": t["image"], "task_ids": task_ids([task])[0],
           "text_ids": self.texts()(classes, valid, task, self.text_count()),
           "instance_classes": classes, "instance_masks": masks, "instance_valid": valid}
    return {**out, **{k: v for k, v in t.items() if k.startswith("count_")}}

  def eval_transform(self, record, where="record"):
    t = instances.eval_targets(record, self.config, self.isthing(), which="things", panoptic=True, where=where,
                               image_size=True)
    h, w = t["image_size"]
    image = t["image"].copy()  # the canvas beyond the image: the mean colour, not black
    mean = np.round(np.asarray(self.config.dataset.mean)).astype(np.uint8)
    image[h:], image[:, w:] = mean, mean
    return {"image": image, "image_size": t["image_size"], "label_size": t["label_size"],
            **{k: t[k] for k in EVAL_KEYS[1:]}}

  # -- loss
  def loss_weights(self):
    """loss.weights of the terms (class, mask, dice, contrastive; every layer alike)."""
    w = self.config.loss.weights
    missing = [k for k in losses.WEIGHTS if k not in w]
    if missing:
      raise ConfigError(f"config key loss.weights.{missing[0]} is missing (OneFormer's terms: "
                        f"{', '.join(losses.WEIGHTS)})")
    return {k: float(w[k]) for k in losses.WEIGHTS}

  def loss(self, outputs, batch, rng):
    """sum over the layers l and terms t of loss.weights[t] x L_t^l (the matching costs
    weigh class, BCE and dice alike)."""
    h, w = head_keys(self.config), self.loss_weights()
    terms = losses.oneformer_losses(
        outputs, batch, rng, outputs.get("texts"), outputs.get("logit_scale"),
        num_classes=self.config.dataset.num_classes, num_points=h["train_points"],
        oversample_ratio=h["oversample_ratio"], importance_sample_ratio=h["importance_ratio"],
        no_object_weight=h["no_object_weight"], cost_weights=(w["class"], w["mask"], w["dice"]))
    return losses.total(terms, w), terms

  # -- inference
  def query_outputs(self, model, variables, images, tasks):
    """[{"class_logits" (B, N, K + 1), "mask_logits" (B, H/4, W/4, N)}] per task of
    `tasks` for normalised images: the backbone and pixel decoder run once."""
    ids = jnp.asarray(np.stack([np.broadcast_to(task_ids([t])[0], (images.shape[0], 77)) for t in tasks]))
    return model.apply(variables, images, ids, method=OneFormer.per_task)

  def tasks(self):
    """The tasks the evaluators of config.evals score, in TASKS order."""
    wanted = {EVALUATOR_TASK[name] for name in self.config.evals}
    return [t for t in TASKS if t in wanted]

  def postprocess(self, task, out, size, inside=None):
    """One task's predictions from its raw outputs, on the (H, W) canvas `size`
    (jaxseg.models.heads.oneformer.postprocess, the thresholds of config.evals): "pred"
    (semantic), "panoptic_queries" (panoptic: the jittable half; PanopticQuality does the
    rest on the host), "instance_*" (instance: the top max_detections of queries x
    classes, stuff picks not valid); `inside` (B, H, W) the image's pixels, or None."""
    c, m, o = out["class_logits"], out["mask_logits"], self.evaluator_options()
    if task == "semantic":
      return {"pred": jnp.argmax(postprocess.semantic_scores(c, m, size), -1).astype(jnp.int32)}
    if task == "panoptic":
      return {"panoptic_queries": postprocess.panoptic_queries(
          c, m, size, o["panoptic_quality"]["object_mask_threshold"], inside)}
    return postprocess.instance_predictions(c, m, size, o["coco_ap"]["max_detections"], self.isthing(), inside)

  def evaluator_options(self):
    """{evaluator: its options}, config.evals' over the defaults."""
    evals = self.config.get("evals", {})
    return {n: {**d, **(dict(evals[n]) if n in evals else {})} for n, d in self.EVALUATORS.items()}

  def predict(self, model, variables, batch):
    """The predictions of every task an evaluator of config.evals scores, each with its
    own task token (see postprocess): at each image's stored size on the label canvas
    where eval images are resized (the module docstring), else on the image canvas
    (the stored size is the image's), cut to "image_size" where the batch has it."""
    images = normalize(batch["image"], self.config)
    canvas = images.shape[1:3]
    size, valid, to_size = canvas, batch.get("image_size"), lambda m: m
    i = self.config.input
    if "label_size" in batch and (i.eval_short_side or i.eval_long_side):
      size, valid = transforms.eval_label_canvas(i), batch["label_size"]
      to_size = lambda m: resized_back(resize(m.astype(jnp.float32), canvas), batch["image_size"], valid, size,
                                       reduce=lambda x: x)  # sem_seg_postprocess on the static label canvas
    inside = None if valid is None else ((jnp.arange(size[0])[None, :, None] < valid[:, 0, None, None]) &
                                         (jnp.arange(size[1])[None, None, :] < valid[:, 1, None, None]))
    tasks = self.tasks()
    out = {}
    for task, raw in zip(tasks, self.query_outputs(model, variables, images, tasks)):
      raw = {"class_logits": raw["class_logits"], "mask_logits": to_size(raw["mask_logits"])}
      out.update(self.postprocess(task, raw, size, inside))
    return out

  def categories(self):
    """COCO category entries {"id", "name", "isthing"} of the dataset's classes."""
    meta = self.builder.info.metadata or {}
    ids = list(meta.get("category_ids", range(self.config.dataset.num_classes)))
    return [{"id": int(i), "name": n, "isthing": int(t)}
            for i, n, t in zip(ids, self.class_names(), self.isthing())]

  def evaluators(self):
    d, o, out = self.config.dataset, self.evaluator_options(), {}
    for name in self.config.evals:
      if name == "panoptic_quality":
        out[name] = PanopticQuality(self.categories(), self.isthing(), o[name]["overlap_threshold"])
      elif name == "coco_ap":
        out[name] = CocoAPEvaluator(self.categories(), tuple(o[name]["iou_types"]))
      elif name == "confusion":
        out[name] = ConfusionMatrix(d.num_classes, d.ignore_index)
    return out

  def class_names(self):
    from jaxseg.data import datasets
    return datasets.class_names(self.builder, self.config.dataset.num_classes)

  def report(self, scores, step):
    lines = []
    if "pq" in scores:
      lines.append(f"step {step}: PQ {scores['pq']:.4f} (SQ {scores['sq']:.4f}, RQ {scores['rq']:.4f}; things "
                   f"{scores['pq_things']:.4f}, stuff {scores['pq_stuff']:.4f})  [panoptic task]")
    ap = {k: v for k, v in scores.items() if k.startswith("mask_ap") and isinstance(v, float)}
    if ap:
      lines.append(f"step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in sorted(ap.items())) + "  [instance task]")
    if "per_class_iou" in scores:
      lines.append(format_table(scores, self.class_names(), step) + "\n  [semantic task]")
    return "\n".join(lines) or f"step {step}: no scores"

  def describe(self):
    b, h = self.config.model.backbone, head_keys(self.config)
    backbone = f"ResNet-{b.depth}" if b.name == "resnet" else f"Swin (C={b.width}, depths {tuple(b.swin_depths)})"
    return f"OneFormer {backbone}, {h['queries']} queries, {h['decoder_layers']} decoder layers"

  # -- jaxseg.load and --mode predict
  def predictor(self, model, variables, step, mesh):
    return Predictor(self, model, variables, step, mesh)

  def write_predictions(self, predictor, input_dir, output_dir):
    """COCO's panoptic format (OUTPUT_DIR/panoptic/<name>.png + panoptic.json, the
    panoptic task) and COCO's results JSON (OUTPUT_DIR/instances.json, RLE masks, the
    instance task) for every image of `input_dir`; image ids 1, 2, ... in name order."""
    from jaxseg.prediction_files import InstanceResultsWriter, PanopticWriter, image_names, read_rgb

    names = image_names(input_dir)
    categories = self.categories()
    panoptic = PanopticWriter(os.path.join(output_dir, "panoptic"), categories)
    results = InstanceResultsWriter(os.path.join(output_dir, "instances.json"), categories)
    for image_id, name in enumerate(names, 1):
      rgb = read_rgb(input_dir, name)[None]
      ids, segments = predictor.panoptic(rgb)
      panoptic.add(image_id, name, ids[0], [s["category"] for s in segments[0]])
      masks, classes, scores, boxes = predictor.instances(rgb)[0]
      results.add(image_id, classes, scores, boxes, masks)
      print(f"[{image_id}/{len(names)}] {name}: {len(segments[0])} segments, {len(classes)} instances", flush=True)
    print(f"wrote {panoptic.close()} (PNGs beside it) and {results.close()}")


class Predictor:
  """What jaxseg.load returns for a universal work dir. Every method takes uint8 RGB
  images (B, H, W, 3) of any size (padded at the bottom and right to a multiple of 32
  with the mean colour, i.e. 0 once normalised, as the authors' batching; the mask
  logits cut back to (H, W) before the post-processing) and the task whose token
  conditions the queries:

    query_outputs(images, task)  {"class_logits" (B, N, K + 1), "mask_logits" (B, N,
                                 ceil(H / 4), ceil(W / 4))}: the raw last-layer outputs
    logits(images, task)         (B, H, W, K) semantic scores sum_q p_q(c) m_q
    predict(images, task)        (B, H, W) int32 class ids (their argmax)
    panoptic(images, task)       ((B, H, W) int32 segment ids (0 void), per image the
                                 segments [{"id", "category", "isthing", "score"}])
    instances(images, task)      per image (masks (n, H, W) bool, classes (n,), scores
                                 (n,), boxes (n, 4) xyxy) of its valid detections

  with the thresholds of the work dir's config.evals (panoptic_quality, coco_ap)."""

  def __init__(self, family, model, variables, step, mesh):
    self.family, self.config, self.variables, self.step = family, family.config, variables, step
    self.replicated = sharding.replicated(mesh)
    self.options = family.evaluator_options()

    def run(v, images, task, what, size):
      raw = family.query_outputs(model, v, normalize(images, family.config), [task])[0]
      c, m = raw["class_logits"], raw["mask_logits"]
      if what == "raw":
        return {"class_logits": c, "mask_logits": jnp.transpose(m, (0, 3, 1, 2))}
      # the mask logits resized to the padded canvas and cut to the image (`size`) before
      # inference, as the authors' sem_seg_postprocess: areas count the image's pixels only
      m = resize(m.astype(jnp.float32), tuple(images.shape[1:3]))[:, :size[0], :size[1]]
      if what == "semantic":
        return postprocess.semantic_scores(c, m, size)
      if what == "panoptic":
        return postprocess.panoptic_queries(c, m, size, self.options["panoptic_quality"]["object_mask_threshold"])
      return postprocess.instance_predictions(c, m, size, self.options["coco_ap"]["max_detections"],
                                              family.isthing())

    self._run = jax.jit(run, static_argnums=(2, 3, 4))

  def _padded(self, images):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
      raise ValueError(f"expected uint8 images of shape (B, H, W, 3), got {images.dtype} {images.shape}")
    h, w = images.shape[1:3]
    ph, pw = -h % SIZE_DIVISIBILITY, -w % SIZE_DIVISIBILITY
    if ph or pw:
      mean = np.round(np.asarray(self.config.dataset.mean)).astype(np.uint8)
      images = np.concatenate([images, np.broadcast_to(mean, (images.shape[0], ph, w, 3))], 1)
      images = np.concatenate([images, np.broadcast_to(mean, (images.shape[0], h + ph, pw, 3))], 2)
    return jnp.asarray(images), (h, w)

  def _task(self, task):
    if task not in TASKS:
      raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return task

  def query_outputs(self, images, task="panoptic"):
    x, (h, w) = self._padded(images)
    out = jax.device_get(self._run(self.variables, x, self._task(task), "raw", (h, w)))
    return {"class_logits": out["class_logits"], "mask_logits": out["mask_logits"][:, :, :-(-h // 4), :-(-w // 4)]}

  def logits(self, images, task="semantic"):
    x, (h, w) = self._padded(images)
    return np.asarray(self._run(self.variables, x, self._task(task), "semantic", (h, w)))

  def predict(self, images, task="semantic"):
    return self.logits(images, task).argmax(-1).astype(np.int32)

  def panoptic(self, images, task="panoptic"):
    x, (h, w) = self._padded(images)
    queries = jax.device_get(self._run(self.variables, x, self._task(task), "panoptic", (h, w)))
    out = postprocess.panoptic_segments(queries, self.family.isthing(),
                                        self.options["panoptic_quality"]["overlap_threshold"])
    return out["panoptic"], out["segments"]

  def instances(self, images, task="instance"):
    x, (h, w) = self._padded(images)
    out = jax.device_get(self._run(self.variables, x, self._task(task), "instance", (h, w)))
    return [tuple(out[f"instance_{k}"][b][valid] for k in ("masks", "classes", "scores", "boxes"))
            for b, valid in enumerate(out["instance_valid"])]
