"""PSSL demonstration, stage 3: configs/pssl_demo_finetune.py's segmentation model (the
quickstart's DeepLabv3, ResNet-10 at width 16) pretrained from scratch on the pseudo
labels of configs/pssl_demo_generate.py, with PSSL's class handling (as
jaxseg.presets.pssl_pretraining for ImageNet's 1001): the view's 6 class ids + the
background class 6 = 7 classes, cross-entropy with background weight 0.1, no
evaluation (no masks to score). Unlike the released recipe (which starts from an
ImageNet-classification backbone: lr 0.01 held constant, backbone x0.1) every module
starts from random weights here, so the schedule is the fine-tuning's (SGD + poly from
0.05, all modules x1).

  python -m jaxseg.main --config configs/pssl_demo_pretrain.py --workdir DIR \\
      --config.dataset.data_dir=GENERATION_WORKDIR/tfds
"""
import importlib.util
import os


def get_config():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pssl_demo_finetune.py")
  spec = importlib.util.spec_from_file_location("pssl_demo_finetune", path)
  finetune = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(finetune)
  c = finetune.get_config()
  classes = 7  # shapes' class ids 0..5 (0 never a view's class) + background 6
  c.dataset.update(dict(name="pssl_generated", data_dir="", train_split="train", eval_split="train",
                        num_classes=classes))
  c.loss.class_weights = (1.0,) * (classes - 1) + (0.1,)  # w(background) = 0.1
  c.train.update(dict(steps=300, eval_every=300, ckpt_every=300))
  c.evals = {}
  return c
