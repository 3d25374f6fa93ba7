"""The base config every `configs/*.py` starts from.

Every key a config may set is defined here with its default, so a typo in a config
file or on the command line is an error (`check_keys`) instead of a silently ignored
setting. Conventions: sizes are (height, width); `bn_momentum` is the decay of the
running statistics (TensorFlow/Flax convention: PyTorch momentum 0.1 == 0.9 here).
"""
from __future__ import annotations

import difflib
import importlib.util
import os

import ml_collections

from jaxseg.errors import ConfigError, UserError, first_line

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # The task family (jaxseg/families): "semantic", or the dotted path of a module with a
  # Family class, e.g. one of another package.
  c.family = "semantic"

  c.dataset = dict(
      name="shapes",
      data_dir="",  # "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
      train_split="train",
      eval_split="val",
      num_classes=6,
      ignore_index=255,
      mean=IMAGENET_MEAN,
      std=IMAGENET_STD,
      thing_classes=(),  # detection family: the dataset classes it detects, in its class order
  )

  c.input = dict(
      crop_size=(513, 513),
      scale_range=(0.5, 2.0),
      scale_step=0.25,  # DeepLab's reference code samples scales in steps of 0.25; 0 = continuous
      flip=True,
      photometric=True,
      cat_max_ratio=0.75,  # re-draw crops where one class covers more than this; 1.0 disables
      # 0: scale_range multiplies the record's size; else the short side becomes base_size x
      # the drawn ratio (FastFCN / EncNet code: base size 520, ratio 0.5-2.0)
      base_size=0,
      rotate_degrees=0.0,  # random rotation in [-d, d] degrees (PSPNet: 10); 0 = none
      rotate_prob=0.5,  # of rotating a record (PSPNet's code: 0.5)
      rotate_image_fill=IMAGENET_MEAN,  # RGB where a rotation uncovers the canvas (PSPNet's code); label: ignore
      blur_prob=0.0,  # of a Gaussian blur of the crop (PSPNet, FastFCN code: 0.5); 0 = none
      blur_kernel=5,  # window (PSPNet's code: 5, OpenCV's sigma 1.1); 0 = sized from the sigma (FastFCN)
      blur_sigma=(0.0, 0.0),  # sigma drawn from this range; (0, 0) = OpenCV's for the window (FastFCN code: (0, 1))
      eval_size=(513, 513),  # every eval image is padded (label 255) to this static size
      num_workers=0,  # grain worker processes of the train and eval streams; 0 = in the main process
      skip_bad_records=False,  # replace an unreadable record by the next one (and count it); leave bad
                               # panoptic segments out (counted as bad_segments in train_log.jsonl)
      # Eval images resized (bilinear), keeping their aspect, by the largest factor that
      # keeps the short side <= eval_short_side and the long side <= eval_long_side (0 = no
      # bound; both 0 = as stored), before the padding to eval_size (which must hold them).
      # ADE20K: (512, 2048), the toolboxes' protocol; PSPNet's author code: long side 512.
      # The labels stay as stored, padded to eval_label_size ((0, 0) = eval_size), and the
      # prediction is resized back to them (bilinear logits, then argmax) to be scored.
      # Instance / panoptic ground truth alike (COCO's protocol): boxes scaled and masks
      # pasted back (detection), mask logits resized back before the inference (universal).
      eval_short_side=0,
      eval_long_side=0,
      eval_label_size=(0, 0),
      canny_edges=False,  # batches carry "edges": Canny of the un-normalised image (Gated-SCNN)
      canny_thresholds=(10, 100),  # cv2.Canny low/high thresholds on the grey image
      # Panoptic / instance targets (jaxseg/data/instances.py) of the families that read them.
      # How a record is scaled before the crop: "ratio" = scale_range x the record (or
      # base_size, as above); "short_side" = the short side drawn from short_side_range
      # (steps of short_side_step, 0 = continuous), the long side at most max_long_side
      # (0 = unbounded), e.g. PANet's multi-scale training 400..1200 under 1333;
      # "fit" = large-scale jitter: scale_range (e.g. 0.1..2.0) x the fit into crop_size.
      scale_mode="ratio",
      short_side_range=(400, 1200),
      short_side_step=0.0,  # float: OneFormer's ADE20K steps of 51.2 (0.1 x 512)
      max_long_side=0,
      crop_image_fill=IMAGENET_MEAN,  # RGB of the image padding of their crops (label 255, panoptic void)
      max_instances=100,  # instances per image in a batch (padded, with a validity mask); extra ones are counted
      instance_mask_stride=1,  # instance masks at crop size / this (e.g. 4: the 1/4 scale of mask heads)
  )

  c.model = dict(
      backbone=dict(
          depth=50,
          width=64,  # channels of the stem; stage widths are width * (1, 2, 4, 8)
          stem="deep",  # "7x7" (torchvision) or "deep" (three 3x3, ResNetV1c)
          output_stride=16,
          multi_grid=(1, 2, 4),  # unit rates of the last stage's blocks; () = none
          contract_dilation=True,  # first block of a dilated stage uses half the rate
          extra_blocks=0,  # cascaded copies of block4 (DeepLabv3 Sec. 3.2 "going deeper")
          dilations=(),  # () = from output_stride; else 4 stage rates on top of the strides (mmseg FastFCN)
          name="resnet",  # "resnet", "stdc1" / "stdc2" (width = base width 64; OS 32) or "swin"
          # Swin (width = embed dim C; OS 32); models.backbones.swin.PRESETS holds Swin-T/S/B/L
          swin_depths=(2, 2, 6, 2),  # blocks per stage
          swin_heads=(3, 6, 12, 24),  # attention heads per stage
          swin_window=7,  # M of the M x M windows
          drop_path_rate=0.0,  # stochastic depth of the last block (linear from 0 over the blocks)
      ),
      # The components: a name and the keys the named module defines (its CONFIG);
      # set them with `neck(...)`, `head(...)` and `aux_head(...)` below.
      neck=neck(""),  # "" = none, or "jpu" (FastFCN: c4 replaced by the JPU output at OS8)
      head=head("aspp"),  # "aspp", "psp", "danet", "encnet", "mcibi", "fcn", "stdc" or "gscnn"
      aux_heads=dict(aux=aux_head()),  # output name -> FCN head; {} = none
      dropout=0.1,
      eval_output_stride=8,  # DeepLabv3 trains at OS16 and evaluates at OS8
      bn_momentum=0.9,
      dtype="float32",  # compute dtype; params stay float32
      align_corners=False,  # bilinear upsampling (PPM, JPU, logits) as PyTorch align_corners=True
      # Attention over the N = h * w positions (DANet's PAM, MCIBI's refinement) runs
      # blockwise over keys once its B x N x N matrix has more elements than this.
      attention_blocked_threshold=2 ** 26,
      attention_block_size=512,  # keys per block
      init_from="",  # start training from this converted checkpoint or work dir (python -m jaxseg.convert)
      init_from_prefix="",  # load only these subtrees, e.g. "backbone" or "backbone,neck"; "" = all
  )

  c.loss = dict(
      # Output (or loss term) -> weight: every term the model produces needs one. DANet:
      # pam, cam; EncNet: se; MCIBI: dataset_context, memory; STDC: aux16, aux32,
      # detail; Gated-SCNN: edge, dual_task, boundary_ce (the terms of its output "edge").
      weights=dict(seg=1.0, aux=0.4),
      class_weights=(),  # () = unweighted; else one weight per class
      ohem=False,  # online hard example mining for every cross-entropy on the label map
      ohem_thresh=0.7,  # hard pixel: probability of the true class below this
      ohem_min_kept=-1,  # keep at least this many pixels per batch; -1 = B * H * W // 16
      # Gated-SCNN's boundary terms (jaxseg.models.heads.gscnn.edge_terms)
      boundary_threshold=0.8,  # boundary CE on pixels where sigmoid(edge) > this
      boundary_radius=2,  # GT boundaries: pixels within this distance of another class
      dual_task_tau=0.5,  # Gumbel-softmax temperature
  )

  c.optim = dict(
      name="sgd",  # "sgd" (PyTorch's, momentum) or "adamw" (decoupled decay)
      lr=0.01,
      momentum=0.9,  # sgd
      adam_b1=0.9,  # adamw
      adam_b2=0.999,
      adam_eps=1e-8,
      weight_decay=1e-4,
      decay_norm_and_bias=False,  # weight decay on BN scale/bias and conv biases too
      no_decay=(),  # path patterns never decayed, e.g. ("norm", "embed", "query") for transformers
      schedule="poly",  # "poly", "cosine" or "step"
      power=0.9,  # poly: lr * (1 - step / steps) ** power
      min_lr_ratio=0.0,  # cosine: the final lr / lr
      decay_steps=(),  # step: lr x decay_gamma at each of these steps, e.g. (120000, 160000)
      decay_gamma=0.1,
      warmup_steps=0,
      warmup="linear",  # "linear" or "exp"
      warmup_ratio=0.1,  # lr multiplier at step 0 of the warmup
      head_lr_mult=1.0,  # lr multiplier of everything outside the backbone
      lr_mults=(),  # (path pattern, lr multiplier) pairs, first match wins, before head_lr_mult:
                    # e.g. (("^backbone/", 0.1),)
      grad_clip=0.0,  # global-norm clipping; 0 disables
      poly_after_warmup=False,  # True: lr x warmup factor, then the decay over (step - W) / (steps - W) (STDC code)
  )

  c.train = dict(
      batch_size=16,  # global batch over all devices and hosts
      steps=30000,
      log_every=50,
      eval_every=2000,
      ckpt_every=2000,
      keep_checkpoints=3,  # the latest K, plus the best by best_metric
      best_metric="miou",  # the evaluation score (higher is better) that picks the best checkpoint and FINAL
      # BatchNorm modules whose paths match these patterns (e.g. ("",) = all) normalise with
      # their running statistics and never update them (jaxseg/models/frozen_bn.py);
      # frozen_bn_affine: their scale and bias get no gradient either.
      frozen_bn=(),
      frozen_bn_affine=True,
      on_nonfinite="skip",  # non-finite loss/gradient: "skip" the update, or "stop"
      max_consecutive_skips=5,  # "skip" stops after this many non-finite steps in a row
      tensorboard_images=3,  # eval predictions drawn into TensorBoard at each evaluation; 0 = none
      # Asynchronous replicas (jaxseg/replicas.py; DeepLabv3 App. B): R device groups step
      # on their own B/R share and average parameters every H steps, D steps late.
      replicas=1,  # R; 1 = synchronous data parallelism
      exchange_every=8,  # H
      exchange_delay=1,  # D, 0 <= D < H: steps the exchange overlaps with
      # Devices on the mesh's `model` axis: kernels (and their momentum) are split over
      # them along output channels (jaxseg/sharding.py); 1 = every device holds all.
      model_axis=1,
  )

  c.eval = dict(
      mode="whole",  # "whole" or "slide"
      crop_size=(513, 513),  # sliding window
      stride=(341, 341),
      scales=(1.0,),  # multi-scale: e.g. (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
      flip=False,
      batch_size=8,
      mask_paste="torchvision",  # detection: how masks are pasted into their boxes (models/detection/paste.py)
  )

  # Named evaluators of the family (semantic: "confusion" -> mIoU, aAcc, mAcc, per-class
  # IoU/acc; "boundary_f" -> boundary F-score at `tolerance` px). Each has its cadence
  # `every`: 0 = train.eval_every, N = every N steps, -1 = never during training
  # (--mode eval runs it). {} evaluates nothing (e.g. pretraining without masks).
  c.evals = dict(confusion=dict(every=0))
  return c


def components(kind):
  """"HEADS" or "NECKS": name -> module (with its CONFIG) of the segmentor's components,
  the detector's (jaxseg.models.detection.detector) and OneFormer's (a head)."""
  from jaxseg.models import segmentor
  from jaxseg.models.detection import detector
  from jaxseg.models.heads.oneformer import oneformer
  other = {"HEADS": {"oneformer": oneformer}, "NECKS": {}}[kind]
  return {**getattr(segmentor, kind), **getattr(detector, kind), **other}


def head(name, **keys):
  """model.head: the head `name` with its keys (jaxseg.models.heads.<module>.CONFIG)
  at their defaults but for `keys`; an unknown key is a ConfigError."""
  HEADS = components("HEADS")
  if name not in HEADS:
    raise ConfigError(f"config key model.head.name: unknown head '{name}' (known: {', '.join(HEADS)})"
                      f"{_suggest(name, HEADS)}")
  return _component("model.head", name, HEADS[name].CONFIG, keys)


def neck(name="", **keys):
  """model.neck: the neck `name` ("" = none) with its keys (its module's CONFIG)."""
  NECKS = components("NECKS")
  if name and name not in NECKS:
    raise ConfigError(f"config key model.neck.name: unknown neck '{name}' (known: '', {', '.join(NECKS)})"
                      f"{_suggest(name, NECKS)}")
  return _component("model.neck", name, NECKS[name].CONFIG if name else {}, keys)


def aux_head(**keys):
  """An entry of model.aux_heads: an FCN head (jaxseg.models.heads.fcn.AUX_CONFIG),
  on c3 with 256 channels unless `keys` say otherwise."""
  from jaxseg.models.heads.fcn import AUX_CONFIG
  return _checked("model.aux_heads.<name>", {**AUX_CONFIG, **keys}, AUX_CONFIG)


def _component(where, name, defaults, keys):
  return {"name": name, **_checked(where, {**defaults, **keys}, defaults, name)}


def _checked(where, keys, defaults, name=None):
  for key in keys:
    if key not in defaults and key != "name":
      of = f" (keys of '{name}': {', '.join(defaults) or 'none'})" if name is not None else ""
      raise ConfigError(f"unknown config key '{where}.{key}'{of}{_suggest(key, defaults)}")
  return keys


def tiny_variant(c):
  """The smoke settings of a paper config's `:tiny` variant, in place: ResNet-10 at
  width 8 on `shapes`, 64x64 crops, 4 steps, whole-image single-scale evaluation.
  The head, neck and output stride of the paper config stay; only widths shrink, and
  the head keeps quickstart's lr whatever its multiplier."""
  c.dataset.update(dict(name="shapes", train_split="train", eval_split="val", num_classes=6))
  c.input.update(dict(crop_size=(64, 64), scale_range=(0.75, 1.5), scale_step=0.0, photometric=True,
                      cat_max_ratio=0.75, eval_size=(160, 160), eval_short_side=0, eval_long_side=0))
  c.model.backbone.update(dict(depth=10, width=8))
  tiny_widths = dict(channels=16, aux_channels=8, transform_channels=8)  # whichever the head has
  c.model.head.update({k: v for k, v in tiny_widths.items() if k in c.model.head})
  if c.model.neck.name:
    c.model.neck.channels = 16
  for aux in c.model.aux_heads.values():
    aux.channels = 8
  c.optim.lr = 0.05 / c.optim.head_lr_mult
  c.train.update(dict(batch_size=8, steps=4, log_every=2, eval_every=4, ckpt_every=2))
  c.train.tensorboard_images = 0  # the tests' many short runs skip compiling the drawing predictor
  c.eval.update(dict(mode="whole", scales=(1.0,), flip=False, batch_size=50))
  return c


def check_keys(config, base=None, prefix=""):
  """Raises ConfigError naming the first key of `config` that `base_config` lacks
  (with the near match): a component's keys (model.head, model.neck, each of
  model.aux_heads) against those its module defines, `evals` against the family's
  evaluators; loss.weights may name any output."""
  if base is None:
    base = base_config()
    if "evals" in config:
      check_evals(config)
    _check_components(config)
  for key in config.keys():
    name = prefix + key
    if name in ("evals", "loss.weights", "model.head", "model.neck", "model.aux_heads"):
      continue
    if key not in base:
      raise ConfigError(f"unknown config key '{name}'{_suggest(key, base.keys())}")
    if isinstance(config[key], ml_collections.ConfigDict):
      if not isinstance(base[key], ml_collections.ConfigDict):
        raise ConfigError(f"config key '{name}' is a value, not a group")
      check_keys(config[key], base[key], name + ".")


def _check_components(config):
  m = config.get("model", {})
  if "head" in m:
    head(m.head.get("name", ""), **{k: v for k, v in m.head.items() if k != "name"})
  if "neck" in m:
    neck(m.neck.get("name", ""), **{k: v for k, v in m.neck.items() if k != "name"})
  for name, keys in m.get("aux_heads", {}).items():
    if not isinstance(keys, ml_collections.ConfigDict):
      raise ConfigError(f"config key model.aux_heads.{name} must be a group of FCN head keys, e.g. aux_head()")
    _checked(f"model.aux_heads.{name}", keys, aux_head())
  for name, weight in config.get("loss", {}).get("weights", {}).items():
    if not isinstance(weight, (int, float)):
      raise ConfigError(f"config key loss.weights.{name} must be a number, got {weight!r}")


def _suggest(key, known):
  close = difflib.get_close_matches(key, list(known), 1)
  return f"; did you mean '{close[0]}'?" if close else ""


def check_evals(config):
  """Every entry of config.evals names an evaluator of the family, with its options."""
  from jaxseg import families
  known = families.get(config).EVALUATORS
  for name, options in config.evals.items():
    if name not in known:
      raise ConfigError(f"config key evals.{name}: the family has no evaluator '{name}' "
                        f"(known: {', '.join(known)}){_suggest(name, known)}")
    if not isinstance(options, (dict, ml_collections.ConfigDict)):
      raise ConfigError(f"config key evals.{name} must be a group of options, e.g. dict(every=0)")
    for key in options:
      if key not in known[name]:
        raise ConfigError(f"unknown config key 'evals.{name}.{key}' (options of '{name}': "
                          f"{', '.join(known[name])}){_suggest(key, known[name])}")


# Keys that are choices rather than defaults to merge: filled by their own rules.
_NOT_MERGED = ("evals", "loss.weights", "model.head", "model.neck", "model.aux_heads")


def _fill_missing(config, base, prefix=""):
  for key, value in base.items():
    if key not in config:
      config[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
    elif prefix + key in _NOT_MERGED:
      continue
    elif isinstance(value, ml_collections.ConfigDict) and isinstance(config[key], ml_collections.ConfigDict):
      _fill_missing(config[key], value, prefix + key + ".")


# Work dirs written before the component configs hold one flat `model` namespace and a
# `loss.<output>_weight` per output. Old model key -> {head name: its key in
# model.head}: a key moves into the head in use when that head read it, and is dropped
# otherwise.
FLAT_HEAD_KEYS = {
    "head_channels": {h: "channels" for h in ("aspp", "psp", "encnet", "fcn", "stdc", "gscnn")},
    "aspp_rates": {"aspp": "rates", "gscnn": "rates", "mcibi": "aspp_rates"},
    "aspp_project_kernel": {"aspp": "project_kernel"},
    "aspp_extra_conv": {"aspp": "extra_conv"},
    "psp_bins": {"psp": "bins"},
    "psp_pooling": {"psp": "pooling"},
    "psp_reduction": {"psp": "reduction"},
    "danet_cam_variant": {"danet": "cam_variant"},
    "encnet_codewords": {"encnet": "codewords"},
    "encnet_reduce_kernel": {"encnet": "reduce_kernel"},
    "mcibi_channels": {"mcibi": "channels"},
    "mcibi_transform_channels": {"mcibi": "transform_channels"},
    "mcibi_momentum": {"mcibi": "momentum"},
    "mcibi_momentum_power": {"mcibi": "momentum_power"},
    "mcibi_update_at_label_size": {"mcibi": "update_at_label_size"},
    "fcn_num_convs": {"fcn": "num_convs"},
    "fcn_concat_input": {"fcn": "concat_input"},
    "fcn_dilation": {"fcn": "dilation"},
    "detail_head": {"stdc": "detail_head"},
    "stdc_classifier_bias": {"stdc": "classifier_bias"},
    "aux_head": {"stdc": "aux_heads"},  # STDC's own aux16 / aux32 heads
    "aux_channels": {"stdc": "aux_channels"},
    "gscnn_shape_channels": {"gscnn": "shape_channels"},
    "gscnn_low_level_channels": {"gscnn": "low_level_channels"},
    "gscnn_shape_stream": {"gscnn": "shape_stream"},
}
# Old model key -> its model key now (shared by the heads that read it).
FLAT_MODEL_KEYS = {"danet_blocked_threshold": "attention_blocked_threshold",
                   "danet_block_size": "attention_block_size"}


def from_flat_keys(config):
  """`config` (a ConfigDict of an earlier version, in place) in the component layout:
  decode_head + the keys of FLAT_HEAD_KEYS -> model.head; neck + jpu_channels ->
  model.neck; aux_head, aux_channels, aux_dilation -> model.aux_heads.aux (no entry
  without aux_head, nor for STDC, whose decoder has its own);
  loss.<output>_weight -> loss.weights[output], with "seg" 1."""
  m = config.model
  name = m.get("decode_head", "aspp")
  head_keys = {new[name]: m[old] for old, new in FLAT_HEAD_KEYS.items() if old in m and name in new}
  neck_name = m.get("neck", "")
  neck_keys = {"channels": m.jpu_channels} if neck_name == "jpu" and "jpu_channels" in m else {}
  aux = {}
  if m.get("aux_head", True) and name != "stdc":
    aux["aux"] = aux_head(**{k: m[old] for old, k in (("aux_channels", "channels"), ("aux_dilation", "dilation"))
                             if old in m})
  moved = {new: m[old] for old, new in FLAT_MODEL_KEYS.items() if old in m}
  flat = set(FLAT_HEAD_KEYS) | set(FLAT_MODEL_KEYS) | {"decode_head", "neck", "jpu_channels", "aux_dilation"}
  kept = {k: v for k, v in m.items() if k not in flat}
  config.model = {**kept, **moved, "head": head(name, **head_keys), "neck": neck(neck_name, **neck_keys),
                  "aux_heads": aux}
  loss = config.get("loss", ml_collections.ConfigDict())
  weights = {k[:-len("_weight")]: v for k, v in loss.items() if k.endswith("_weight")}
  config.loss = {**{k: v for k, v in loss.items() if not k.endswith("_weight")}, "weights": {"seg": 1.0, **weights}}
  return config


def upgrade(config):
  """A config saved by an earlier version (WORKDIR/config.json), in today's keys: the
  flat model keys in the component layout (`from_flat_keys`); keys added since take
  their defaults, a component's from its own module; eval.boundary_f_tolerance > 0 ->
  evals.boundary_f.tolerance."""
  config = ml_collections.ConfigDict(config.to_dict())
  if "model" in config and "head" not in config.model:  # the flat layout
    from_flat_keys(config)
  had_evals = "evals" in config
  tolerance = config.get("eval", {}).get("boundary_f_tolerance", None)
  if tolerance is not None:
    del config.eval["boundary_f_tolerance"]
  _fill_missing(config, base_config())  # keys added since: their defaults
  m = config.model
  m.head = head(m.head.name, **{k: v for k, v in m.head.items() if k != "name"})
  m.neck = neck(m.neck.name, **{k: v for k, v in m.neck.items() if k != "name"})
  m.aux_heads = {k: aux_head(**v) for k, v in m.aux_heads.items()}
  if not had_evals and tolerance:
    config.evals.boundary_f = dict(every=0, tolerance=tolerance)
  return config


def check_override_keys(argv, config=None):
  """Raises ConfigError for a `--config.a.b=v` argument whose key no config has,
  before flag parsing turns it into a traceback; `evals.NAME.KEY` against the
  evaluators of the family of `config` (the --config file's)."""
  base = base_config()
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    key = arg[len("--config."):].split("=", 1)[0]
    if key.startswith("evals.") and config is not None:
      _check_eval_override(key, arg, config)
      continue
    node, path = base, ""
    for part in key.split("."):
      if config is not None and path in _NOT_MERGED:  # the config file's choice of component, weights
        node = _lookup(config, path)
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        raise ConfigError(f"unknown config key '{key}' in {arg}{_suggest(part, known)}")
      node, path = node[part], f"{path}.{part}" if path else part


def _lookup(config, path):
  for part in path.split("."):
    config = config[part] if isinstance(config, ml_collections.ConfigDict) and part in config else None
  return config


def _check_eval_override(key, arg, config):
  from jaxseg import families
  known = families.get(config).EVALUATORS
  _, name, *rest = key.split(".")
  if name not in known:
    raise ConfigError(f"unknown evaluator in {arg} (known: {', '.join(known)}){_suggest(name, known)}")
  if name not in config.evals:
    raise ConfigError(f"{arg}: config.evals has no '{name}'; add it in the config file")
  if rest and rest[0] not in known[name]:
    raise ConfigError(f"unknown config key '{key}' in {arg} (options of '{name}': {', '.join(known[name])})"
                      f"{_suggest(rest[0], known[name])}")


def load_config_file(spec):
  """The config of "path.py" or "path.py:variant", as --config reads it: the one loader
  of the command line, the tools and the benchmarks. A missing file, or one whose
  get_config raises, is a ConfigError of one line naming the file."""
  path, _, variant = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"--config {spec}: no config file {path}")
  try:
    module_spec = importlib.util.spec_from_file_location(f"jaxseg_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(variant) if variant else module.get_config()
  except UserError:
    raise
  except Exception as e:
    raise ConfigError(f"config file {spec} raised {type(e).__name__}: {first_line(e)}") from e


def config_arg(argv):
  """The value of --config in `argv`, or None."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None
