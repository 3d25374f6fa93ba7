"""Gated-SCNN on Cityscapes (Takikawa et al. 2019, "Gated-SCNN: Gated Shape CNNs for
Semantic Segmentation").

Schedule (paper): SGD momentum 0.9, lr 0.01 with poly power 1.0, weight decay 1e-4,
batch 16 with SyncBN (global BN here), crop 720, random scale 0.5-2.0 and flip on the
2,975 fine train images; losses lambda = (20, 1, 1, 1): 20 x class-balanced BCE of
the boundaries, the segmentation CE, 1 x dual-task regulariser (Gumbel softmax tau
0.5), 1 x CE on pixels where the boundary map > 0.8. Regular stream: ResNet-101 at
output stride 8 (deep stem), the documented substitute for the paper's WideResNet-38;
ASPP rates (12, 24, 36) at OS8 plus image pooling and the edge branch; DeepLabv3+
decoder on c1. Image gradients: Canny (10, 100) of the un-normalised image.
Steps: 35,000 (about 190 epochs at batch 16), this config's choice: PAPERS.md gives no count.
Not reproduced: the paper's class-weighted CE and class-uniform sampling (set
loss.class_weights to weight the CE). Unlike the authors' code, the boundary BCE
applies the sigmoid once, Canny sees the raw image (not the normalised one cast to
uint8), and the dual-task loss smooths with the paper's Gaussian filter.
Reported (WideResNet-38, val, full resolution): 80.8 mIoU (DeepLabv3+ 78.8), boundary
F-score 73.6 at 3 px (DeepLabv3+ 69.7). Evaluation here: whole 1024x2048 images at OS8
with mIoU and the boundary F-score at 3 px.

Variants (--config configs/gscnn_cityscapes.py:NAME): plain: Gated-SCNN; `:noshape` the
same network without the shape stream; `:tiny` smoke variant on `shapes`;
`:tiny_noshape` smoke variant without the shape stream.
"""
from jaxseg import presets
from jaxseg.config import base_config, head, tiny_variant


def get_config(variant=""):
  c = base_config()
  presets.dataset(c, "cityscapes")
  presets.augment(c, (720, 720))
  c.input.update(dict(canny_edges=True, canny_thresholds=(10, 100)))
  presets.resnet(c, 101)
  c.model.head = head("gscnn", channels=256, rates=(6, 12, 18),  # x2 at OS8: (12, 24, 36)
                      shape_channels=(64, 32, 16, 8), low_level_channels=48)
  c.model.aux_heads = {}
  c.loss.weights = dict(seg=1.0, edge=20.0, dual_task=1.0, boundary_ce=1.0)  # lambda = (20, 1, 1, 1)
  c.loss.update(dict(boundary_threshold=0.8, boundary_radius=2, dual_task_tau=0.5))
  presets.sgd_poly(c, lr=0.01, steps=35000, eval_every=5000, power=1.0)
  c.eval.update(dict(mode="whole", batch_size=2))
  c.evals.boundary_f = dict(every=0, tolerance=3)  # the paper's boundary F-score at 3 px
  return presets.variants(c, variant, "configs/gscnn_cityscapes.py",
                          {"noshape": _noshape, "tiny": _tiny, "tiny_noshape": lambda c: _noshape(_tiny(c))})


def _noshape(c):
  c.model.head.shape_stream = False
  c.input.canny_edges = False
  return c


def _tiny(c):
  """jaxseg.config.tiny_variant around this head, with a narrow shape stream."""
  tiny_variant(c)
  c.model.head.update(dict(shape_channels=(16, 8, 8, 4), low_level_channels=8))
  return c
