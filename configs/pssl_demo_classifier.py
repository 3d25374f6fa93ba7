"""PSSL demonstration, stage 1: an ensemble member, a small ResNet classifier trained on
`shapes_classification` (the classification view of `shapes`: one object per image,
its class as the label), the stand-in for the paper's ImageNet classifiers
(benchmarks/pssl_demo.py runs the whole chain).

ResNet-10 at width 16, 7x7 stem, OS 32, global average pooling and a dense layer over
shapes' 6 class ids (jaxseg.pssl.explain.Classifier, the model python -m
jaxseg.pssl.generate explains); whole images resized to 64x64, flip and photometric
distortion; SGD + poly from lr 0.05. Members differ by --config.seed (and may differ
by --config.model.backbone.depth). The work dir is a member of configs/pssl_demo_generate.py.

Variants: `:tiny` smoke variant.
"""
from jaxseg.config import base_config


def get_config(variant=""):
  c = base_config()
  c.family = "classification"
  c.dataset.update(dict(name="shapes_classification", train_split="train", eval_split="val", num_classes=6))
  c.input.update(dict(crop_size=(64, 64), flip=True, photometric=True))
  c.model.backbone.update(dict(depth=10, width=16, stem="7x7", output_stride=32, multi_grid=()))
  c.optim.update(dict(lr=0.05, weight_decay=1e-4))
  c.train.update(dict(batch_size=32, steps=150, log_every=50, eval_every=150, ckpt_every=150,
                      best_metric="accuracy", tensorboard_images=0))
  c.evals = dict(accuracy=dict(every=0))
  c.eval.batch_size = 50
  if variant == "tiny":
    c.input.crop_size = (32, 32)
    c.model.backbone.width = 8
    c.train.update(dict(batch_size=8, steps=4, log_every=2, eval_every=4, ckpt_every=2))
  elif variant:
    raise ValueError(f"unknown variant '{variant}' of configs/pssl_demo_classifier.py (known: tiny)")
  return c
