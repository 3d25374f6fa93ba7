"""PSPNet-R50 pretrained on ImageNet's PSSL pseudo labels (Li et al. 2022, "Distilling
Ensemble of Explanations for Weakly-Supervised Pre-Training of Image Segmentation
Models"; the "PSPNet-ResNet50_PSSL" model).

configs/pspnet_voc.py's model with ResNet-50 (deep stem, output stride 8, PPM bins
(1, 2, 3, 6), auxiliary FCN head at 0.4), trained with the released pretraining recipe
(jaxseg.presets.pssl_pretraining: 1001 classes, background CE weight 0.1, crop 256
after short side 256 x 0.5-2.0, flip, SGD lr 0.01 constant, backbone x0.1, batch 96,
66,725 iterations = the epoch-5 checkpoint the authors fine-tune from, no evaluation).
PSPNet's own rotation and blur are left out: the released recipe has neither. The
released run starts from ImageNet-classification weights for the backbone: convert
them (python -m jaxseg.convert --from torchvision --arch resnet50 ...) and pass
--config.model.init_from=DIR --config.model.init_from_prefix=backbone (that
converted ResNet has the 7x7 stem: add --config.model.backbone.stem=7x7).

Data: the generated labels (python -m jaxseg.pssl.generate; --config.dataset.data_dir=
WORKDIR/tfds) or, with the variant `:released`, PaddleSeg's released labels
(python -m jaxseg.prepare imagenet_pssl/released --manual_dir DIR).
Fine-tune downstream with --config.model.init_from=THIS_WORKDIR (the 1001-class
classifiers are not loaded; see configs/pssl_stdc2_voc_finetune.py).

Variants (--config configs/pssl_pspnet_imagenet.py:NAME): `:released`; `:tiny` smoke.
"""
import importlib.util
import os

from jaxseg import presets


def get_config(variant=""):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pspnet_voc.py")
  spec = importlib.util.spec_from_file_location("pspnet_voc", path)
  pspnet_voc = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(pspnet_voc)
  c = pspnet_voc.get_config()
  presets.resnet(c, 50)
  presets.pssl_pretraining(c)
  return presets.variants(c, variant, "configs/pssl_pspnet_imagenet.py", PSSL_VARIANTS)


PSSL_VARIANTS = {"released": lambda c: c.dataset.update(dict(name="imagenet_pssl/released")),
                 "tiny": presets.pssl_tiny}
