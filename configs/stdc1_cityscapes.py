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
saturation 0.5 jitter). The paper is silent on per-module learning rates; the authors'
code trains the FFM and every output head (segmentation, the two auxiliary heads, the
detail head) at lr x10 and the context path (backbone, ARMs, global context) at x1,
as `optim.lr_mults` does here (`--config.optim.lr_mults="()"` trains all at x1).

Seg50 / Seg75 name the inference input: the val images (1024x2048) are resized to
512x1024 (Seg50, the default) or 768x1536 (Seg75), and the logits are upsampled back
to the full label size (`eval.scales` = (0.5,) or (0.75,)). The same trained model
serves both, as in the paper. Reported Cityscapes test mIoU / FPS (GTX 1080Ti,
TensorRT): STDC1-Seg50 71.9 / 250.4, STDC1-Seg75 75.3 / 126.7.

Variants (--config configs/stdc1_cityscapes.py:NAME): plain: Seg50; `:seg75` Seg75;
`:tiny` smoke variant: STDC1 at base width 8 on `shapes`.
"""
from jaxseg import presets
from jaxseg.config import base_config, head, tiny_variant


def get_config(variant="", backbone="stdc1"):
  c = base_config()
  presets.dataset(c, "cityscapes")
  presets.augment(c, (512, 1024), scale_range=(0.125, 1.5), scale_step=0.125, photometric=True)
  c.model.backbone.update(dict(name=backbone, width=64, output_stride=32))
  c.model.eval_output_stride = 32
  # FFM and seg head 256 (the context path 128); the auxiliary and detail heads 64
  c.model.head = head("stdc", channels=256, aux_channels=64, aux_heads=True, detail_head=True)
  c.model.aux_heads = {}  # the decoder's own: "aux16", "aux32"
  c.loss.weights = dict(seg=1.0, aux16=1.0, aux32=1.0, detail=1.0)
  c.loss.update(dict(ohem=True, ohem_thresh=0.7, ohem_min_kept=-1))  # min_kept: B * H * W // 16
  presets.sgd_poly(c, lr=0.01, steps=60000, eval_every=5000, batch_size=48, weight_decay=5e-4)
  # warmup from lr 1e-5, exponential over 1000 steps, then poly
  c.optim.update(dict(warmup="exp", warmup_steps=1000, warmup_ratio=1e-5 / 0.01, poly_after_warmup=True))
  c.optim.lr_mults = ((r"^decode_head/(ffm|seg_head|aux16_head|aux32_head|detail_head)/", 10.0),)
  c.eval.update(dict(mode="whole", scales=(0.5,), batch_size=8))  # Seg50: 512x1024 input
  return presets.variants(c, variant, f"configs/{backbone}_cityscapes.py",
                          {"seg75": lambda c: c.eval.update(dict(scales=(0.75,))), "tiny": _tiny})


def _tiny(c):
  """quickstart-sized smoke settings (jaxseg.config.tiny_variant): the STDC base width
  becomes 8 (stages 32/64/128 channels), the decoder 16 (context 8) and the auxiliary
  and detail heads 8; evaluation at full resolution."""
  tiny_variant(c)
  c.optim.lr = 0.05 / 10  # the heads, at x10, keep quickstart's lr
  c.optim.warmup_steps = 0
  c.optim.poly_after_warmup = False
  c.eval.scales = (1.0,)
