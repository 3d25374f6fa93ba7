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
      short_side_step=0,
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
          name="resnet",  # "resnet", or "stdc1" / "stdc2" (width = base width 64; OS 32)
      ),
      neck="",  # "" or "jpu" (FastFCN: c4 replaced by the JPU output at OS8)
      jpu_channels=512,
      decode_head="aspp",  # "aspp", "psp", "danet", "encnet", "mcibi", "fcn", "stdc" or "gscnn"
      head_channels=256,
      aspp_rates=(6, 12, 18),  # at output stride 16; scaled by 16 / OS
      psp_bins=(1, 2, 3, 6),
      psp_pooling="avg",  # "avg" or "max" (PSPNet ablation: avg is better)
      psp_reduction=True,  # 1x1 conv to C / len(bins) per branch; False keeps C
      danet_cam_variant="paper",  # "paper": softmax(XX^T); "official" (code): softmax(rowmax - XX^T)
      danet_blocked_threshold=2 ** 26,  # B*N*N elements above which PAM runs blockwise
      danet_block_size=512,  # keys per block of the blockwise PAM (and MCIBI's attention)
      encnet_codewords=32,  # K of EncNet's encoding layer
      encnet_reduce_kernel=0,  # its first conv: 0 = 1x1 behind the JPU (official code), else 3x3
      mcibi_channels=512,  # C of the pixel representations R and the memory rows
      mcibi_transform_channels=256,  # query/key/value width of the context refinement
      mcibi_momentum=0.9,  # m0 of the memory update, poly-annealed to 0 over train.steps
      mcibi_momentum_power=0.9,  # p
      mcibi_update_at_label_size=True,  # paper: upsample R to the labels; False: labels to R
      detail_head=True,  # STDC detail guidance on the 1/8 feature (training only; decode_head "stdc")
      fcn_num_convs=1,  # decode_head "fcn": 3x3 conv + BN + ReLU layers (mmseg's FCN: 2)
      fcn_concat_input=False,  # and one more on [c4, their output] (mmseg's FCN: True)
      fcn_dilation=1,  # of those stacked convs (mmseg's fcn-d6 models: 6)
      stdc_classifier_bias=False,  # STDC's 1x1 classifiers: no bias (authors' code); mmseg's have one
      gscnn_shape_channels=(64, 32, 16, 8),  # shape stream: residual block, then after each 1x1
      gscnn_low_level_channels=48,  # DeepLabv3+ decoder's reduction of c1
      gscnn_shape_stream=True,  # False: the same network without shape stream (DeepLabv3+)
      dropout=0.1,
      aux_head=True,
      aux_channels=256,
      aux_dilation=1,  # of the auxiliary FCN head's 3x3 conv (mmseg's fcn-d6 models: 6)
      eval_output_stride=8,  # DeepLabv3 trains at OS16 and evaluates at OS8
      bn_momentum=0.9,
      dtype="float32",  # compute dtype; params stay float32
      aspp_project_kernel=1,  # ASPP projection conv: 1 (paper, torchvision) or 3 (mmsegmentation)
      aspp_extra_conv=False,  # torchvision's DeepLabHead: 3x3 conv + BN + ReLU before the classifier
      align_corners=False,  # bilinear upsampling (PPM, JPU, logits) as PyTorch align_corners=True
      init_from="",  # start training from this converted checkpoint or work dir (python -m jaxseg.convert)
      init_from_prefix="",  # load only these subtrees, e.g. "backbone" or "backbone,neck"; "" = all
  )

  c.loss = dict(
      aux_weight=0.4,  # weight of the output "aux"; every extra output X uses loss.X_weight
      pam_weight=1.0,  # DANet's PAM-only output (1:1:1 as the official code)
      cam_weight=1.0,  # DANet's CAM-only output
      dataset_context_weight=0.4,  # MCIBI alpha: CE of the class distribution W
      memory_weight=1.0,  # MCIBI beta: CE of H2 on the memory rows
      se_weight=0.2,  # EncNet's Semantic Encoding loss (official FastFCN/EncNet code: 0.2)
      class_weights=(),  # () = unweighted; else one weight per class
      aux16_weight=1.0,  # STDC's auxiliary heads on the 1/16 and 1/32 context paths
      aux32_weight=1.0,
      detail_weight=1.0,  # STDC detail loss (BCE + dice against the Laplacian detail map)
      ohem=False,  # online hard example mining for every cross-entropy on the label map
      ohem_thresh=0.7,  # hard pixel: probability of the true class below this
      ohem_min_kept=-1,  # keep at least this many pixels per batch; -1 = B * H * W // 16
      edge_weight=20.0,  # Gated-SCNN lambda1: class-balanced BCE of the boundary logits "edge"
      dual_task_weight=1.0,  # lambda3: L1 of the soft segmentation's boundaries vs the GT's
      boundary_ce_weight=1.0,  # lambda4: CE on pixels where sigmoid(edge) > boundary_threshold
      boundary_threshold=0.8,
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
  )

  # Named evaluators of the family (semantic: "confusion" -> mIoU, aAcc, mAcc, per-class
  # IoU/acc; "boundary_f" -> boundary F-score at `tolerance` px). Each has its cadence
  # `every`: 0 = train.eval_every, N = every N steps, -1 = never during training
  # (--mode eval runs it). {} evaluates nothing (e.g. pretraining without masks).
  c.evals = dict(confusion=dict(every=0))
  return c


# The model keys each component reads besides the shared ones (backbone, widths,
# dropout, BN): a work dir of one head resumes whatever the keys of the other heads.
HEAD_KEYS = {
    "aspp": ("aspp_rates", "aspp_project_kernel", "aspp_extra_conv"),
    "psp": ("psp_bins", "psp_pooling", "psp_reduction"),
    "danet": ("danet_cam_variant", "danet_blocked_threshold", "danet_block_size"),
    "encnet": ("encnet_codewords", "encnet_reduce_kernel"),
    "mcibi": ("mcibi_channels", "mcibi_transform_channels", "mcibi_momentum", "mcibi_momentum_power",
              "mcibi_update_at_label_size", "aspp_rates", "danet_blocked_threshold", "danet_block_size"),
    "fcn": ("fcn_num_convs", "fcn_concat_input"),
    "stdc": ("detail_head", "stdc_classifier_bias"),
    "gscnn": ("gscnn_shape_channels", "gscnn_low_level_channels", "gscnn_shape_stream", "aspp_rates"),
}
NECK_KEYS = {"jpu": ("jpu_channels",)}


def inactive_model_keys(model):
  """The `model.*` keys (dotted) of the heads and necks that `model` does not use."""
  head, neck = model.get("decode_head", "aspp"), model.get("neck", "")
  active = set(HEAD_KEYS.get(head, ())) | set(NECK_KEYS.get(neck, ()))
  every = {k for keys in (*HEAD_KEYS.values(), *NECK_KEYS.values()) for k in keys}
  return {f"model.{k}" for k in every - active}


def tiny_variant(c):
  """The smoke settings of a paper config's `:tiny` variant, in place: ResNet-10 at
  width 8 on `shapes`, 64x64 crops, 4 steps, whole-image single-scale evaluation.
  The head, neck and output stride of the paper config stay; only widths shrink, and
  the head keeps quickstart's lr whatever its multiplier."""
  c.dataset.update(dict(name="shapes", train_split="train", eval_split="val", num_classes=6))
  c.input.update(dict(crop_size=(64, 64), scale_range=(0.75, 1.5), scale_step=0.0, photometric=True,
                      cat_max_ratio=0.75, eval_size=(160, 160), eval_short_side=0, eval_long_side=0))
  c.model.backbone.update(dict(depth=10, width=8))
  c.model.update(dict(head_channels=16, aux_channels=8, jpu_channels=16, mcibi_channels=16,
                      mcibi_transform_channels=8))
  c.optim.lr = 0.05 / c.optim.head_lr_mult
  c.train.update(dict(batch_size=8, steps=4, log_every=2, eval_every=4, ckpt_every=2))
  c.train.tensorboard_images = 0  # the tests' many short runs skip compiling the drawing predictor
  c.eval.update(dict(mode="whole", scales=(1.0,), flip=False, batch_size=50))
  return c


def check_keys(config, base=None, prefix=""):
  """Raises ConfigError naming the first key of `config` that `base_config` lacks
  (with the near match), and checks `evals` against the family's evaluators."""
  if base is None:
    base = base_config()
    if "evals" in config:
      check_evals(config)
  for key in config.keys():
    name = prefix + key
    if name == "evals":
      continue
    if key not in base:
      raise ConfigError(f"unknown config key '{name}'{_suggest(key, base.keys())}")
    if isinstance(config[key], ml_collections.ConfigDict):
      if not isinstance(base[key], ml_collections.ConfigDict):
        raise ConfigError(f"config key '{name}' is a value, not a group")
      check_keys(config[key], base[key], name + ".")


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


def _fill_missing(config, base):
  for key, value in base.items():
    if key not in config:
      config[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
    elif key == "evals":  # a choice of evaluators, not defaults to merge
      continue
    elif isinstance(value, ml_collections.ConfigDict) and isinstance(config[key], ml_collections.ConfigDict):
      _fill_missing(config[key], value)


def upgrade(config):
  """A config saved by an earlier version (WORKDIR/config.json), in today's keys: keys
  added since take their defaults; eval.boundary_f_tolerance > 0 ->
  evals.boundary_f.tolerance."""
  config = ml_collections.ConfigDict(config.to_dict())
  had_evals = "evals" in config
  tolerance = config.get("eval", {}).get("boundary_f_tolerance", None)
  if tolerance is not None:
    del config.eval["boundary_f_tolerance"]
  _fill_missing(config, base_config())  # keys added since: their defaults
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
    node = base
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        raise ConfigError(f"unknown config key '{key}' in {arg}{_suggest(part, known)}")
      node = node[part]


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
