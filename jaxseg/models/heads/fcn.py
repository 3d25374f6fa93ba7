"""FCN head (Long et al. 2015) as toolboxes use it: 3x3 conv + BN + ReLU, dropout, 1x1
classifier (the auxiliary head on c3, torchvision's FCN). mmsegmentation's FCN models
stack `num_convs` such convs and, with `concat_input`, fuse [input, their output] by
one more 3x3 conv + BN + ReLU before the dropout; their "fcn-d6" models dilate the
stacked convs (not the fusion) by 6."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models.layers import ConvBN


class FCNHead(nn.Module):
  num_classes: int
  channels: int = 256
  in_feature: str = "c3"
  dropout: float = 0.1
  num_convs: int = 1
  concat_input: bool = False
  dilation: int = 1  # of the stacked 3x3 convs
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, train: bool, batch=None):
    kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)
    x = inputs = features[self.in_feature]
    for i in range(self.num_convs):
      x = ConvBN(self.channels, 3, dilation=self.dilation, **kw,
                 name="conv" if i == 0 else f"conv{i + 1}")(x, train)
    if self.concat_input:
      x = ConvBN(self.channels, 3, **kw, name="conv_cat")(jnp.concatenate([inputs, x], axis=-1), train)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)


# model.head of name "fcn" (on c4: torchvision's fcn_resnet50/101 with one 3x3 conv,
# mmseg's fcn_r50-d8 with num_convs 2 and concat_input, its fcn-d6 with dilation 6):
# its keys with their defaults (jaxseg.config.head).
CONFIG = dict(channels=256, num_convs=1, concat_input=False, dilation=1)
LOSSES = {}  # the output "seg" takes the cross-entropy
# Each entry of model.aux_heads (an FCN head on `feature`, its output named by the
# entry and weighted by loss.weights[name]; jaxseg.config.aux_head).
AUX_CONFIG = dict(feature="c3", channels=256, num_convs=1, concat_input=False, dilation=1)


def build(h, config, output_stride, common):
  return FCNHead(config.dataset.num_classes, h.channels, "c4", config.model.dropout, h.num_convs, h.concat_input,
                 h.dilation, **common)


def build_aux(a, config, common):
  """An auxiliary head of model.aux_heads (e.g. the FCN head on c3 with weight 0.4)."""
  return FCNHead(config.dataset.num_classes, a.channels, a.feature, config.model.dropout, a.num_convs,
                 a.concat_input, a.dilation, **common)
