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
