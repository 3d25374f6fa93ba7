"""DeepLabv3 + MCIBI on Cityscapes (Jin et al., ICCV 2021).

Schedule reproduced (paper): ResNet-101 dilated to output stride 8 (deep stem), ASPP
as the within-image context, feature memory 19 x 512 with momentum 0.9 poly-annealed;
loss CE(O) + 0.4 CE(W) + 1.0 CE(O_M) + 0.4 aux; SGD momentum 0.9, lr 0.01 with poly
0.9, weight decay 5e-4, batch 16 (the paper's MCIBI batch), crop 512x1024, random
scale 0.5-2.0, flip, photometric distortion; 80K iterations (the toolbox's
Cityscapes schedule) on the 2,975 fine train images; sliding-window evaluation on
the 500 val images. Reported: Cityscapes test 82.10 mIoU (R-101, trained on train+val).

  --config configs/mcibi_cityscapes.py        single-scale evaluation
  --config configs/mcibi_cityscapes.py:ms     scales {0.5, ..., 1.75} + flip
  --config configs/mcibi_cityscapes.py:tiny   smoke variant on `shapes`
"""
from jaxseg.config import base_config, tiny_variant


def get_config(variant=""):
  c = base_config()
  c.dataset.name = "cityscapes"
  c.dataset.train_split = "train"
  c.dataset.eval_split = "val"
  c.dataset.num_classes = 19
  c.input.crop_size = (512, 1024)
  c.input.scale_range = (0.5, 2.0)
  c.input.scale_step = 0.0
  c.input.eval_size = (1024, 2048)
  c.model.backbone.depth = 101
  c.model.backbone.stem = "deep"
  c.model.backbone.output_stride = 8
  c.model.backbone.multi_grid = ()
  c.model.eval_output_stride = 8
  c.model.decode_head = "mcibi"
  c.model.head_channels = 512
  c.model.mcibi_channels = 512
  c.model.aux_head = True
  c.loss.aux_weight = 0.4
  c.loss.dataset_context_weight = 0.4
  c.loss.memory_weight = 1.0
  c.optim.lr = 0.01
  c.optim.power = 0.9
  c.optim.weight_decay = 5e-4
  c.train.batch_size = 16
  c.train.steps = 80000
  c.train.eval_every = 8000
  c.train.ckpt_every = 2000
  c.eval.mode = "slide"
  c.eval.crop_size = (512, 1024)
  c.eval.stride = (341, 683)
  c.eval.batch_size = 2
  if variant == "ms":
    c.eval.scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    c.eval.flip = True
  elif variant == "tiny":
    _tiny(c)
  elif variant:
    raise ValueError(f"unknown variant '{variant}' of configs/mcibi_cityscapes.py (known: ms, tiny)")
  return c


def _tiny(c):
  """configs/quickstart.py-sized smoke settings (jaxseg.config.tiny_variant) around
  this config's head."""
  tiny_variant(c)
