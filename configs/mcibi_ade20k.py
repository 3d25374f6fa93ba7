"""DeepLabv3 + MCIBI on ADE20K (Jin et al., ICCV 2021, "Mining Contextual Information
Beyond Image for Semantic Segmentation").

Schedule reproduced (paper): ResNet-50 dilated to output stride 8 (deep stem, as the
authors' toolbox), ASPP as the within-image context; feature memory of 150 x 512 rows
updated with momentum 0.9 poly-annealed (power 0.9); loss CE(O) + 0.4 CE(W) +
1.0 CE(O_M) + 0.4 aux; SGD momentum 0.9, lr 0.01 with poly 0.9, weight decay 5e-4,
batch 16, crop 512, random scale 0.5-2.0, flip, photometric distortion; 160K
iterations (the toolbox's ADE20K schedule). Sliding-window evaluation on the 2,000
val images resized to short side 512 (the toolbox's protocol; mIoU counted on the
labels resized alike). Reported val mIoU (ss / ms+flip): R-50 44.39 / 45.97,
R-101 45.66 / 47.27 (--config.model.backbone.depth=101).

  --config configs/mcibi_ade20k.py        single-scale evaluation
  --config configs/mcibi_ade20k.py:ms     scales {0.5, ..., 1.75} + flip
  --config configs/mcibi_ade20k.py:tiny   smoke variant: the same head, tiny, on `shapes`
"""
from jaxseg.config import base_config, tiny_variant


def get_config(variant=""):
  c = base_config()
  c.dataset.name = "ade20k"
  c.dataset.train_split = "train"
  c.dataset.eval_split = "val"
  c.dataset.num_classes = 150
  c.input.crop_size = (512, 512)
  c.input.scale_range = (0.5, 2.0)
  c.input.scale_step = 0.0
  # ADE20K protocol: each val image resized to short side 512 (label: nearest), then
  # padded to this canvas; the rare image more elongated than 2:1 is shrunk to fit it
  # (the toolboxes cap the long side at 2048: eval_size (2048, 2048) matches that
  # exactly, at about 4x the evaluation cost).
  c.input.eval_short_side = 512
  c.input.eval_size = (1024, 1024)
  c.model.backbone.depth = 50
  c.model.backbone.stem = "deep"
  c.model.backbone.output_stride = 8
  c.model.backbone.multi_grid = ()
  c.model.eval_output_stride = 8
  c.model.decode_head = "mcibi"
  c.model.head_channels = 512
  c.model.mcibi_channels = 512
  c.model.aux_head = True
  c.loss.aux_weight = 0.4
  c.loss.dataset_context_weight = 0.4  # alpha
  c.loss.memory_weight = 1.0  # beta
  c.optim.lr = 0.01
  c.optim.power = 0.9
  c.optim.weight_decay = 5e-4
  c.train.batch_size = 16
  c.train.steps = 160000
  c.train.eval_every = 16000
  c.train.ckpt_every = 2000
  c.eval.mode = "slide"
  c.eval.crop_size = (512, 512)
  c.eval.stride = (341, 341)
  c.eval.batch_size = 8
  if variant == "ms":
    c.eval.scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    c.eval.flip = True
  elif variant == "tiny":
    _tiny(c)
  elif variant:
    raise ValueError(f"unknown variant '{variant}' of configs/mcibi_ade20k.py (known: ms, tiny)")
  return c


def _tiny(c):
  """configs/quickstart.py-sized smoke settings (jaxseg.config.tiny_variant) around
  this config's head."""
  tiny_variant(c)
