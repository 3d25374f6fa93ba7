"""PSSL pseudo-label generation for ImageNet train (Li et al. 2022), the config of
python -m jaxseg.pssl.generate (its keys: jaxseg.pssl.generate.default_config).

The paper's settings: SmoothGrad with 50 noisy copies, noise 0.1 x (max - min), an
ensemble of 15+ ImageNet classifiers (convert each with python -m jaxseg.convert
--classifier and list the output directories in `members`), every image of
imagenet_pssl's train split (python -m jaxseg.prepare imagenet_pssl) explained at
224x224, 1001 classes (background 1000).

  python -m jaxseg.pssl.generate --config configs/pssl_generate_imagenet.py --workdir runs/pssl_labels \\
      --config.members="('members/tv_r50','members/tv_r101','members/timm_r152')"
"""
from jaxseg.pssl.generate import default_config


def get_config():
  c = default_config()
  c.source.update(dict(name="imagenet_pssl", split="train"))
  c.members = ()  # the converted classifiers: required
  c.input_size = (224, 224)
  c.samples = 50
  c.noise = 0.1
  c.batch_size = 64  # global; a multiple of the device count
  c.chunk_batches = 16  # 1,024 images per chunk: the unit of resumption
  return c
