"""STDC1 on Cityscapes (Fan et al., CVPR 2021, "Rethinking BiSeNet For Real-time
Semantic Segmentation").

Schedule reproduced (paper, Sec. 4.1): STDC1 backbone ([2, 2, 2] STDC modules, base
width 64; ImageNet-pretrained in the paper: train `STDCClassifier` or pass weights),
BiSeNet context path with ARMs on 1/32 and 1/16 and the FFM with the 1/8 feature; OHEM
cross-entropy (p < 0.7, at least B*H*W/16 pixels) on the output and the two auxiliary
heads, weights 1:1:1; detail guidance on stage 3 (BCE + dice, weight 1); SGD momentum
0.9, lr 0.01, weight decay 5e-4, batch 48, 60K iterations, exponential warmup from 1e-5
over 1,000 iterations then poly 0.9 (the authors' code); crop 512x1024 from the full
1024x2048 images randomly scaled by 0.125-1.5 in steps of 0.125, flip, colour jitter
(the pipeline's photometric distortion stands in for the paper's brightness/contrast/
saturation 0.5 jitter). Not reproduced: the authors' x10 lr on the FFM and output heads
(their code, not the paper).

Seg50 / Seg75 name the inference input: the val images (1024x2048) are resized to
512x1024 (Seg50, the default) or 768x1536 (Seg75), and the logits are upsampled back
to the full label size (`eval.scales` = (0.5,) or (0.75,)). The same trained model
serves both, as in the paper. Reported Cityscapes test mIoU / FPS (GTX 1080Ti,
TensorRT): STDC1-Seg50 71.9 / 250.4, STDC1-Seg75 75.3 / 126.7.

  --config configs/stdc1_cityscapes.py         Seg50
  --config configs/stdc1_cityscapes.py:seg75   Seg75
  --config configs/stdc1_cityscapes.py:tiny    smoke variant: STDC1 at base width 8 on `shapes`
"""
from jaxseg.config import base_config, tiny_variant


def get_config(variant="", backbone="stdc1"):
  c = base_config()
  c.dataset.name = "cityscapes"
  c.dataset.train_split = "train"
  c.dataset.eval_split = "val"
  c.dataset.num_classes = 19
  c.input.crop_size = (512, 1024)
  c.input.scale_range = (0.125, 1.5)
  c.input.scale_step = 0.125
  c.input.photometric = True
  c.input.cat_max_ratio = 1.0
  c.input.eval_size = (1024, 2048)
  c.model.backbone.name = backbone
  c.model.backbone.width = 64
  c.model.backbone.output_stride = 32
  c.model.eval_output_stride = 32
  c.model.decode_head = "stdc"
  c.model.head_channels = 256  # FFM and seg head; the context path has 128
  c.model.aux_channels = 64  # auxiliary and detail heads
  c.model.aux_head = True
  c.model.detail_head = True
  c.loss.aux16_weight = 1.0
  c.loss.aux32_weight = 1.0
  c.loss.detail_weight = 1.0
  c.loss.ohem = True
  c.loss.ohem_thresh = 0.7
  c.loss.ohem_min_kept = -1  # B * H * W // 16
  c.optim.lr = 0.01
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.power = 0.9
  c.optim.warmup = "exp"
  c.optim.warmup_steps = 1000
  c.optim.warmup_ratio = 1e-5 / 0.01  # warmup starts at lr 1e-5
  c.optim.poly_after_warmup = True
  c.train.batch_size = 48
  c.train.steps = 60000
  c.train.eval_every = 5000
  c.train.ckpt_every = 2000
  c.eval.mode = "whole"
  c.eval.scales = (0.5,)  # Seg50: 512x1024 input
  c.eval.batch_size = 8
  if variant == "seg75":
    c.eval.scales = (0.75,)  # Seg75: 768x1536 input
  elif variant == "tiny":
    _tiny(c)
  elif variant:
    raise ValueError(f"unknown variant '{variant}' of configs/{backbone}_cityscapes.py (known: seg75, tiny)")
  return c


def _tiny(c):
  """quickstart-sized smoke settings (jaxseg.config.tiny_variant): the STDC base width
  becomes 8 (stages 32/64/128 channels), the decoder 16 (context 8) and the auxiliary
  and detail heads 8; evaluation at full resolution."""
  tiny_variant(c)
  c.optim.warmup_steps = 0
  c.optim.poly_after_warmup = False
  c.eval.scales = (1.0,)
