"""PSSL demonstration, stage 2: the pseudo labels of `shapes_classification`'s train
split (python -m jaxseg.pssl.generate; its keys: jaxseg.pssl.generate.default_config),
explained by the ensemble of configs/pssl_demo_classifier.py work dirs at their input
size, 64x64. The paper's rules (SmoothGrad, noise 0.1 x (max - min), per-model
normalisation, deciles, D9 -> the class) with 8 noisy copies instead of 50, on the
first 480 of the 1,200 train images, to fit a laptop's minutes; the background is
class 6 (shapes' 6 class ids + 1: 7 classes).

  python -m jaxseg.pssl.generate --config configs/pssl_demo_generate.py --workdir DIR \\
      --config.members="('runs/member0','runs/member1')"
"""
from jaxseg.pssl.generate import default_config


def get_config():
  c = default_config()
  c.source.update(dict(name="shapes_classification", split="train", num_records=480))  # the first 480
  c.members = ()  # the classifier work dirs: required
  c.input_size = (64, 64)
  c.samples = 8
  c.noise = 0.1
  c.batch_size = 32
  c.chunk_batches = 5  # 160 images per chunk
  return c
