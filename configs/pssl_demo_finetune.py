"""PSSL demonstration, stage 4: semantic `shapes` with few labels, 5% of its train
images (the first 60 of 1,200), fine-tuned from the pseudo-label pretraining of
configs/pssl_demo_pretrain.py or trained from random initialisation, scored on all
200 val images.

The quickstart's model (DeepLabv3, ResNet-10 at width 16, ASPP head, FCN auxiliary
head at 0.4) at output stride 16 (train and eval), 96x96 crops of the image scaled
0.75-1.5, flip, photometric distortion; SGD + poly from lr 0.05, batch 16.

  python -m jaxseg.main --config configs/pssl_demo_finetune.py --workdir DIR \\
      [--config.model.init_from=PRETRAINING_WORKDIR]      (its 7-class classifiers are dropped)
"""
import importlib.util
import os


def get_config():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.py")
  spec = importlib.util.spec_from_file_location("quickstart", path)
  quickstart = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(quickstart)
  c = quickstart.get_config()
  c.dataset.train_split = "train[:5%]"
  c.input.crop_size = (96, 96)
  c.model.backbone.output_stride = 16
  c.model.eval_output_stride = 16
  c.train.update(dict(batch_size=16, steps=200, log_every=50, eval_every=200, ckpt_every=200,
                      tensorboard_images=0))
  c.eval.batch_size = 50
  return c
