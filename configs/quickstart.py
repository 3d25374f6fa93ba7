"""Quickstart: a small DeepLabv3 (ResNet-10 at width 16, OS8) on the embedded `shapes`
dataset. Trains in a few minutes on a laptop CPU."""
from jaxseg.config import base_config


def get_config():
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
  c.optim.weight_decay = 1e-4
  c.train.batch_size = 16
  c.train.steps = 1500
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.ckpt_every = 500
  c.eval.batch_size = 25
  return c
