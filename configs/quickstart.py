"""Quickstart: a small DeepLabv3 (ResNet-10 at width 16, OS8) on the embedded `shapes`
dataset; trains in a few minutes on a laptop CPU.

`--config configs/quickstart.py:tiny` is the smoke variant the tests use: the same
code paths on a smaller network, 64x64 crops and a few steps.
"""
from jaxseg.config import base_config


def get_config(variant=""):
  c = base_config()
  c.dataset.name = "shapes"
  c.dataset.num_classes = 6
  c.input.crop_size = (128, 128)
  c.input.scale_range = (0.75, 1.5)
  c.input.scale_step = 0.0
  c.input.eval_size = (160, 160)
  c.model.backbone.depth = 10
  c.model.backbone.width = 16
  c.model.backbone.output_stride = 8
  c.model.eval_output_stride = 8
  c.model.head_channels = 64
  c.model.aux_channels = 32
  c.optim.lr = 0.05
  c.train.batch_size = 16
  c.train.steps = 800
  c.train.log_every = 50
  c.train.eval_every = 400
  c.train.ckpt_every = 200
  c.eval.batch_size = 25
  if variant == "tiny":
    c.input.crop_size = (64, 64)
    c.model.backbone.width = 8
    c.model.backbone.output_stride = 16
    c.model.head_channels = 16
    c.model.aux_channels = 8
    c.train.batch_size = 8
    c.train.steps = 4
    c.train.log_every = 2
    c.train.eval_every = 4
    c.train.ckpt_every = 2
    c.train.tensorboard_images = 0  # tests enable it where they check it
    c.eval.batch_size = 50
  elif variant:
    raise ValueError(f"unknown variant '{variant}' of configs/quickstart.py (known: tiny)")
  return c
