"""PSPNet-R50 fine-tuned on ADE20K from a PSSL pretraining (Li et al. 2022): PaddleSeg's
ADE20K recipe (configs/_base_/ade20k.yml; PSSL changes nothing downstream but the
initial weights, PaddleSeg configs/pssl/README.md) on the model of
configs/pssl_pspnet_imagenet.py (ResNet-50 with the deep stem, output stride 8, PPM
bins (1, 2, 3, 6), auxiliary FCN head at 0.4), so that everything but the 1001-class
classifiers loads:

  data   ade20k train (20,210 images, 150 classes); scale 0.5-2.0 in steps of 0.25,
         crop 512 (padded), flip, photometric distortion (RandomDistort 0.4); none of
         PSPNet's own rotation and blur
  optim  SGD momentum 0.9, weight decay 4e-5, lr 0.01, poly 0.9 to 0 over 80K
         iterations, no warmup, every module at lr x1; global batch 16 (4 per GPU, 4
         GPUs assumed)
  eval   the 2,000 val images by the suite's ADE20K protocol (jaxseg.presets.dataset:
         short side 512, long side <= 2048, scored at the stored label size) with 512
         windows at stride 341. PaddleSeg's val runs the whole image as stored, which a
         static canvas can only approximate: padding a whole image changes what the
         pyramid pooling averages over.

  python -m jaxseg.main --config configs/pssl_pspnet_ade20k_finetune.py --workdir runs/pspnet_ade_pssl \\
      --config.model.init_from=runs/pssl_pspnet     (the work dir of configs/pssl_pspnet_imagenet.py)

Variants: `:ms` multi-scale + flip evaluation; `:tiny` smoke variant on `shapes`.
"""
import importlib.util
import os

from jaxseg import presets


def get_config(variant=""):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pssl_pspnet_voc_finetune.py")
  spec = importlib.util.spec_from_file_location("pssl_pspnet_voc_finetune", path)
  voc = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(voc)
  c = voc.sibling("pspnet_voc").get_config()  # the pretraining's model
  presets.resnet(c, 50)
  voc.paddleseg_pspnet(c, "ade20k", steps=80000, eval_every=8000)
  presets.slide(c, (512, 512), (341, 341), batch_size=8)
  return presets.variants(c, variant, "configs/pssl_pspnet_ade20k_finetune.py")
