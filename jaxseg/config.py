"""The base config every `configs/*.py` starts from.

Every key a config may set is defined here with its default, so a typo in a config
file or on the command line is an error (`check_keys`) instead of a silently ignored
setting. Conventions: sizes are (height, width); `bn_momentum` is the decay of the
running statistics (TensorFlow/Flax convention: PyTorch momentum 0.1 == 0.9 here).
"""
from __future__ import annotations

import difflib

import ml_collections

from jaxseg.errors import ConfigError

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

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
      eval_size=(513, 513),  # every eval image is padded (label 255) to this static size
      num_workers=0,  # grain worker processes; 0 = augment in the training process
      skip_bad_records=False,  # replace an unreadable record by the next one (and count it)
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
      ),
      neck="",  # "" or "jpu" (FastFCN: c4 replaced by the JPU output at OS8)
      jpu_channels=512,
      decode_head="aspp",  # "aspp", "psp", "danet", "encnet" or "mcibi"
      head_channels=256,
      aspp_rates=(6, 12, 18),  # at output stride 16; scaled by 16 / OS
      psp_bins=(1, 2, 3, 6),
      psp_pooling="avg",  # "avg" or "max" (PSPNet ablation: avg is better)
      psp_reduction=True,  # 1x1 conv to C / len(bins) per branch; False keeps C
      danet_cam_variant="paper",  # "paper": softmax(XX^T); "official" (code): softmax(rowmax - XX^T)
      danet_blocked_threshold=2 ** 26,  # B*N*N elements above which PAM runs blockwise
      danet_block_size=512,  # keys per block of the blockwise PAM (and MCIBI's attention)
      encnet_codewords=32,  # K of EncNet's encoding layer
      mcibi_channels=512,  # C of the pixel representations R and the memory rows
      mcibi_transform_channels=256,  # query/key/value width of the context refinement
      mcibi_momentum=0.9,  # m0 of the memory update, poly-annealed to 0 over train.steps
      mcibi_momentum_power=0.9,  # p
      mcibi_update_at_label_size=True,  # paper: upsample R to the labels; False: labels to R
      dropout=0.1,
      aux_head=True,
      aux_channels=256,
      eval_output_stride=8,  # DeepLabv3 trains at OS16 and evaluates at OS8
      bn_momentum=0.9,
      dtype="float32",  # compute dtype; params stay float32
  )

  c.loss = dict(
      aux_weight=0.4,  # weight of the output "aux"; every extra output X uses loss.X_weight
      pam_weight=1.0,  # DANet's PAM-only output (1:1:1 as the official code)
      cam_weight=1.0,  # DANet's CAM-only output
      dataset_context_weight=0.4,  # MCIBI alpha: CE of the class distribution W
      memory_weight=1.0,  # MCIBI beta: CE of H2 on the memory rows
      se_weight=0.2,  # EncNet's Semantic Encoding loss (official FastFCN/EncNet code: 0.2)
      class_weights=(),  # () = unweighted; else one weight per class
  )

  c.optim = dict(
      lr=0.01,
      momentum=0.9,
      weight_decay=1e-4,
      decay_norm_and_bias=False,  # weight decay on BN scale/bias and conv biases too
      power=0.9,  # poly: lr * (1 - step / steps) ** power
      warmup_steps=0,
      warmup="linear",  # "linear" or "exp"
      warmup_ratio=0.1,  # lr multiplier at step 0 of the warmup
      head_lr_mult=1.0,  # lr multiplier of everything outside the backbone
      grad_clip=0.0,  # global-norm clipping; 0 disables
  )

  c.train = dict(
      batch_size=16,  # global batch over all devices and hosts
      steps=30000,
      log_every=50,
      eval_every=2000,
      ckpt_every=2000,
      keep_checkpoints=3,  # the latest K, plus the best by mIoU
      on_nonfinite="skip",  # non-finite loss/gradient: "skip" the update, or "stop"
      max_consecutive_skips=5,  # "skip" stops after this many non-finite steps in a row
      # Asynchronous replicas (jaxseg/replicas.py; DeepLabv3 App. B): R device groups step
      # on their own B/R share and average parameters every H steps, D steps late.
      replicas=1,  # R; 1 = synchronous data parallelism
      exchange_every=8,  # H
      exchange_delay=1,  # D, 0 <= D < H: steps the exchange overlaps with
  )

  c.eval = dict(
      mode="whole",  # "whole" or "slide"
      crop_size=(513, 513),  # sliding window
      stride=(341, 341),
      scales=(1.0,),  # multi-scale: e.g. (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
      flip=False,
      batch_size=8,
  )
  return c


def tiny_variant(c):
  """The smoke settings of a paper config's `:tiny` variant, in place: ResNet-10 at
  width 8 on `shapes`, 64x64 crops, 4 steps, whole-image single-scale evaluation.
  The head, neck and output stride of the paper config stay; only widths shrink, and
  the head keeps quickstart's lr whatever its multiplier."""
  c.dataset.update(dict(name="shapes", train_split="train", eval_split="val", num_classes=6))
  c.input.update(dict(crop_size=(64, 64), scale_range=(0.75, 1.5), scale_step=0.0, photometric=True,
                      cat_max_ratio=0.75, eval_size=(160, 160)))
  c.model.backbone.update(dict(depth=10, width=8))
  c.model.update(dict(head_channels=16, aux_channels=8, jpu_channels=16, mcibi_channels=16,
                      mcibi_transform_channels=8))
  c.optim.lr = 0.05 / c.optim.head_lr_mult
  c.train.update(dict(batch_size=8, steps=4, log_every=2, eval_every=4, ckpt_every=2))
  c.eval.update(dict(mode="whole", scales=(1.0,), flip=False, batch_size=50))
  return c


def check_keys(config, base=None, prefix=""):
  """Raises ConfigError naming the first key of `config` that `base_config` lacks."""
  base = base_config() if base is None else base
  for key in config.keys():
    name = prefix + key
    if key not in base:
      raise ConfigError(f"unknown config key '{name}'")
    if isinstance(config[key], ml_collections.ConfigDict):
      if not isinstance(base[key], ml_collections.ConfigDict):
        raise ConfigError(f"config key '{name}' is a value, not a group")
      check_keys(config[key], base[key], name + ".")


def check_override_keys(argv):
  """Raises ConfigError for a `--config.a.b=v` argument whose key no config has,
  before flag parsing turns it into a traceback."""
  base = base_config()
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    key = arg[len("--config."):].split("=", 1)[0]
    node = base
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        close = difflib.get_close_matches(part, list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else [], 1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown config key '{key}' in {arg}{hint}")
      node = node[part]
