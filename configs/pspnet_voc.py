"""PSPNet on PASCAL VOC 2012 aug (Zhao et al. 2017, "Pyramid Scene Parsing Network").

Schedule reproduced (paper and author code): ResNet-101 with the deep stem,
dilated to output stride 8; pyramid pooling with average pools to bins (1, 2, 3, 6),
each reduced to 2048/4 = 512 channels; auxiliary FCN loss on layer3 with weight 0.4;
SGD momentum 0.9, lr 0.01 with poly 0.9, weight decay 1e-4, batch 16 with SyncBN
(global BN here), crop 473, 30K iterations on train_aug (10,582 images); random scale
0.5-2.0 and flip. Not reproduced: the paper's random rotation (+-10 degrees) and
Gaussian blur, which the pipeline does not implement. Evaluation by sliding 473
windows (stride 2/3 of the window) on the 1,449 val images.
Reported val mIoU (author code, ss / ms): PSP-101 79.07 / 79.63 (PSP-50 77.05 / 78.02
with --config.model.backbone.depth=50).

  --config configs/pspnet_voc.py        single-scale evaluation
  --config configs/pspnet_voc.py:ms     scales {0.5, ..., 1.75} + flip
  --config configs/pspnet_voc.py:tiny   smoke variant: the same head, tiny, on `shapes`
"""
from jaxseg.config import base_config, tiny_variant


def get_config(variant=""):
  c = base_config()
  c.dataset.name = "voc_aug"
  c.dataset.train_split = "train_aug"
  c.dataset.eval_split = "val"
  c.dataset.num_classes = 21
  c.input.crop_size = (473, 473)
  c.input.scale_range = (0.5, 2.0)
  c.input.scale_step = 0.0  # continuous scales
  c.input.photometric = False  # the paper's extra augmentations are rotation and blur
  c.input.cat_max_ratio = 1.0
  c.input.eval_size = (512, 512)  # VOC images are at most 500x500
  c.model.backbone.depth = 101
  c.model.backbone.stem = "deep"
  c.model.backbone.output_stride = 8
  c.model.backbone.multi_grid = ()  # PSPNet has no multi-grid
  c.model.eval_output_stride = 8
  c.model.decode_head = "psp"
  c.model.head_channels = 512
  c.model.psp_bins = (1, 2, 3, 6)
  c.model.psp_pooling = "avg"  # avg beats max in the paper's ablation
  c.model.psp_reduction = True  # and so does the reduction to C/4 per branch
  c.model.dropout = 0.1
  c.model.aux_head = True
  c.model.aux_channels = 256
  c.loss.aux_weight = 0.4  # the best weight of the paper's ablation
  c.optim.lr = 0.01
  c.optim.power = 0.9
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.train.batch_size = 16
  c.train.steps = 30000
  c.train.eval_every = 5000
  c.train.ckpt_every = 1000
  c.eval.mode = "slide"
  c.eval.crop_size = (473, 473)
  c.eval.stride = (316, 316)
  c.eval.batch_size = 8
  if variant == "ms":
    c.eval.scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    c.eval.flip = True
  elif variant == "tiny":
    _tiny(c)
  elif variant:
    raise ValueError(f"unknown variant '{variant}' of configs/pspnet_voc.py (known: ms, tiny)")
  return c


def _tiny(c):
  """configs/quickstart.py-sized smoke settings (jaxseg.config.tiny_variant) around
  this config's head."""
  tiny_variant(c)
