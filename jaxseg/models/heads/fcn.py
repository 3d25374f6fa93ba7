"""FCN head (Long et al. 2015) as toolboxes use it for auxiliary supervision on c3:
3x3 conv + BN + ReLU, dropout, 1x1 classifier."""
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
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, train: bool):
    x = ConvBN(self.channels, 3, bn_momentum=self.bn_momentum, dtype=self.dtype,
               name="conv")(features[self.in_feature], train)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)
