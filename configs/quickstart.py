"""Quickstart: a small DeepLabv3 (ResNet-10 at width 16, OS8) on the embedded `shapes`
dataset; trains in a few minutes on a laptop CPU.

`--config configs/quickstart.py:tiny` is the smoke variant the tests use: the same
code paths on a smaller network, 64x64 crops and a few steps.
"""
from jaxseg.config import aux_head, base_config, head


def get_config(variant=""):
  c = base_config()
  c.dataset.update(dict(name="shapes", num_classes=6))
  c.input.update(dict(crop_size=(128, 128), scale_range=(0.75, 1.5), scale_step=0.0, eval_size=(160, 160)))
  c.model.backbone.update(dict(depth=10, width=16, output_stride=8))
  c.model.eval_output_stride = 8
  c.model.head = head("aspp", channels=64)
  c.model.aux_heads = dict(aux=aux_head(channels=32))  # weight 0.4
  c.optim.lr = 0.05
  c.train.update(dict(batch_size=16, steps=800, log_every=50, eval_every=400, ckpt_every=200))
  c.eval.batch_size = 25
  if variant == "tiny":
    c.input.crop_size = (64, 64)
    c.model.backbone.update(dict(width=8, output_stride=16))
    c.model.head.channels = 16
    c.model.aux_heads.aux.channels = 8
    # tensorboard_images: the tests enable it where they check it
    c.train.update(dict(batch_size=8, steps=4, log_every=2, eval_every=4, ckpt_every=2, tensorboard_images=0))
    c.eval.batch_size = 50
  elif variant:
    raise ValueError(f"unknown variant '{variant}' of configs/quickstart.py (known: tiny)")
  return c
