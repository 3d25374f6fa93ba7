"""Gated-SCNN (Takikawa et al. 2019, "Gated-SCNN: Gated Shape CNNs for Semantic
Segmentation").

Two streams. The regular stream is the atrous ResNet (c1..c4 at OS8) with three
side outputs (1x1 convs to one channel from c2, c3, c4: the paper's s3, s4, s7). The
shape stream starts from the first-stage feature c1, upsampled to the image size,
and alternates residual blocks, 1x1 convs (channels 32 -> 16 -> 8) and gated
convolution layers (GCL), each gated by one side output:

  alpha = sigmoid(BN(1x1(ReLU(1x1(BN(s || r))))))          (Eq. 1)
  out   = conv1x1(s * (1 + alpha))                         (Eq. 2)

and ends in a 1x1 conv to one channel: the boundary logits ("edge"; sigmoid = the
boundary map). Fusion: the boundary map concatenated with the image gradients (Canny
edges of the un-normalised image) -> 1x1 -> sigmoid -> an extra ASPP branch beside
the 1x1, atrous and image-pooling branches; then a DeepLabv3+ decoder with the
low-level feature c1.

With `shape_stream=False` the same network without the shape stream, side outputs
and edge branch: the DeepLabv3+ baseline of the paper's ablation.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models.backbones.resnet import BasicBlock
from jaxseg.models.heads.aspp import ASPP
from jaxseg.models.layers import ConvBN, resize


def _bn(train, momentum, dtype, name):
  return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5, dtype=dtype, name=name)


class GatedConv(nn.Module):
  """GCL: the shape-stream feature s (B, H, W, C) gated by the regular stream's side
  output r (B, H, W, 1) at the same resolution."""
  features: int
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, s, r, train: bool):
    x = jnp.concatenate([s, r.astype(s.dtype)], axis=-1)
    a = _bn(train, self.bn_momentum, self.dtype, "bn_in")(x)
    a = nn.relu(nn.Conv(x.shape[-1], (1, 1), dtype=self.dtype, name="gate1")(a))
    a = nn.Conv(1, (1, 1), dtype=self.dtype, name="gate2")(a)
    alpha = nn.sigmoid(_bn(train, self.bn_momentum, self.dtype, "bn_gate")(a))  # Eq. 1
    return nn.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype, name="out")(s * (1 + alpha))  # Eq. 2


class ShapeStream(nn.Module):
  """c1 and the side outputs (s3, s4, s7) -> boundary logits (B, H, W, 1) at `size`."""
  channels: Sequence[int] = (64, 32, 16, 8)  # residual block width at the input, then after each 1x1
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, c1, sides, size, train: bool):
    kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)
    x = resize(c1, size)
    width = x.shape[-1]
    for i, (side, out) in enumerate(zip(sides, self.channels[1:])):
      block_width = self.channels[0] if i == 0 else width
      x = BasicBlock(block_width, downsample=width != block_width, **kw, name=f"res{i + 1}")(x, train)
      x = nn.Conv(out, (1, 1), dtype=self.dtype, name=f"reduce{i + 1}")(x)
      x = GatedConv(out, **kw, name=f"gate{i + 1}")(x, resize(side, size), train)
      width = out
    return nn.Conv(1, (1, 1), dtype=self.dtype, name="boundary")(x)


class GSCNNHead(nn.Module):
  num_classes: int
  channels: int = 256
  rates: Sequence[int] = (12, 24, 36)  # already scaled to the output stride
  shape_channels: Sequence[int] = (64, 32, 16, 8)
  low_level_channels: int = 48
  shape_stream: bool = True
  dropout: float = 0.1
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @property
  def uses_edges(self):  # the Segmentor hands the Canny map to heads that ask for it
    return self.shape_stream

  @nn.compact
  def __call__(self, features, train: bool, edges=None):
    kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)
    c1, c4 = features["c1"], features["c4"]
    extra, outputs = [], {}
    if self.shape_stream:
      if edges is None:
        if not self.is_initializing():
          raise ValueError("the Gated-SCNN head needs the Canny edge map (B, H, W): set config "
                           "input.canny_edges=True so that batches carry 'edges'")
        # init sees only the images: the image size is the stride-4 size of c1 times 4
        edges = jnp.zeros((c1.shape[0], c1.shape[1] * 4, c1.shape[2] * 4), self.dtype)
      size = edges.shape[1:3]
      sides = [nn.Conv(1, (1, 1), dtype=self.dtype, name=f"side{i}")(features[k])
               for i, k in ((3, "c2"), (4, "c3"), (7, "c4"))]
      edge_logits = ShapeStream(tuple(self.shape_channels), **kw, name="shape_stream")(c1, sides, size, train)
      # Fusion: sigmoid(1x1([boundary map || image gradients])) -> the ASPP's edge branch.
      fused = jnp.concatenate([nn.sigmoid(edge_logits), edges[..., None].astype(edge_logits.dtype)], -1)
      fused = nn.sigmoid(nn.Conv(1, (1, 1), use_bias=False, dtype=self.dtype, name="fuse")(fused))
      edge_branch = ConvBN(self.channels, 1, **kw, name="edge_branch")(resize(fused, c4.shape[1:3]), train)
      extra, outputs["edge"] = [edge_branch], edge_logits
    x = ASPP(self.channels, self.rates, self.bn_momentum, self.dtype, name="aspp")(c4, train, extra)
    # DeepLabv3+ decoder: ASPP output upsampled to the stride-4 low-level feature.
    low = ConvBN(self.low_level_channels, 1, **kw, name="low_level")(c1, train)
    x = jnp.concatenate([resize(x, c1.shape[1:3]), low], axis=-1)
    x = ConvBN(self.channels, 3, **kw, name="decoder1")(x, train)
    x = ConvBN(self.channels, 3, **kw, name="decoder2")(x, train)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    outputs["seg"] = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)
    return outputs
