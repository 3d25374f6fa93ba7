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
import jax
import jax.numpy as jnp

from jaxseg.errors import ConfigError
from jaxseg.losses import bce_with_logits, cross_entropy
from jaxseg.metrics import disk, fill_ignore, shift
from jaxseg.models.backbones.resnet import BasicBlock
from jaxseg.models.heads.aspp import ASPP, scaled_rates
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

  @nn.compact
  def __call__(self, features, train: bool, batch=None):
    edges = (batch or {}).get("edges")  # the Canny map (B, H, W) in {0, 1} of the image
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


# Losses (Sec. 3.3): the boundary terms of the output "edge".

def boundary_targets(labels, radius=2, ignore_index=255):
  """Gated-SCNN's boundary ground truth from a label map (B, H, W): 1 at pixels within
  Euclidean distance `radius` of a pixel of another class, 0 elsewhere, and
  `ignore_index` at ignored pixels. Ignore is no class: neither the image border nor
  a void region makes edges; an ignore band up to 2 x radius wide between two classes
  (VOC-style contour bands) is first filled from both sides (`fill_ignore`), so the
  pixels beside it are boundaries."""
  labels = labels.astype(jnp.int32)
  filled = fill_ignore(labels, int(radius), ignore_index)
  edge = jnp.zeros(labels.shape, bool)
  for dy, dx in disk(radius):
    other = shift(filled, dy, dx, ignore_index)
    edge = edge | ((other != labels) & (other != ignore_index))
  return jnp.where(labels == ignore_index, ignore_index, edge.astype(jnp.int32))


def balanced_bce(logits, targets, ignore_index=255):
  """Class-balanced binary cross-entropy (HED, used by Gated-SCNN) of boundary logits
  (B, h, w, 1), upsampled to the targets (B, H, W) in {0, 1, ignore}: positives weigh
  |negatives| / |valid|, negatives |positives| / |valid|, averaged over valid pixels.
  Takes logits: the sigmoid is applied once, here."""
  x = resize(logits.astype(jnp.float32), targets.shape[1:3])[..., 0]
  pos, neg = targets == 1, targets == 0
  n_pos, n_neg = jnp.sum(pos), jnp.sum(neg)
  total = jnp.maximum(n_pos + n_neg, 1).astype(jnp.float32)
  weight = jnp.where(pos, n_neg / total, jnp.where(neg, n_pos / total, 0.0))
  return jnp.sum(weight * bce_with_logits(x, pos)) / total


def _smooth(x, sigma=1.0, radius=2):
  """Separable Gaussian filter of (B, H, W, K), replicating the border."""
  t = jnp.arange(-radius, radius + 1, dtype=x.dtype)
  g = jnp.exp(-t * t / (2 * sigma * sigma))
  g = g / g.sum()
  for axis in (1, 2):
    pad = [(0, 0)] * 4
    pad[axis] = (radius, radius)
    p = jnp.pad(x, pad, mode="edge")
    n = x.shape[axis]
    x = sum(g[i] * jax.lax.slice_in_dim(p, i, i + n, axis=axis) for i in range(2 * radius + 1))
  return x


def boundary_magnitude_sq(p):
  """|grad(G * p)|^2 / 2 per channel: forward differences of the Gaussian-smoothed
  maps (0 past the last row/column), halved so a one-hot map's values are <= 1."""
  p = _smooth(p)
  gy = jnp.pad(p[:, 1:] - p[:, :-1], ((0, 0), (0, 1), (0, 0), (0, 0)))
  gx = jnp.pad(p[:, :, 1:] - p[:, :, :-1], ((0, 0), (0, 0), (0, 1), (0, 0)))
  return (gx * gx + gy * gy) / 2


def dual_task_loss(logits, labels, key, tau=0.5, ignore_index=255):
  """Gated-SCNN's dual-task regulariser (Eq. 5): L1 between zeta, the boundaries of the
  predicted segmentation, and zeta-hat, those of the ground truth, over the pixels
  where either is non-zero.

  zeta = |grad(G * softmax((logits + gumbel) / tau))| / sqrt(2), the Gumbel softmax
  standing in for the argmax so the term is differentiable; zeta-hat the same of the
  one-hot labels. Pixels within the filter's reach (3 px) of an ignore pixel are left
  out, so ignore regions make no boundary."""
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  logits = resize(logits.astype(dtype), labels.shape[1:3])
  k = logits.shape[-1]
  soft = jax.nn.softmax((logits + jax.random.gumbel(key, logits.shape, dtype)) / tau, axis=-1)
  valid = labels != ignore_index
  onehot = jax.nn.one_hot(jnp.where(valid, labels, k), k, dtype=dtype)  # ignore -> all zeros
  near = (~valid).astype(jnp.float32)
  for window in ((1, 7, 1), (1, 1, 7)):  # separable 7x7 max: any ignore within 3 px
    near = jax.lax.reduce_window(near, jnp.float32(0), jax.lax.max, window, (1, 1, 1), "SAME")
  far = near == 0
  sq_pred, sq_gt = boundary_magnitude_sq(soft), boundary_magnitude_sq(onehot)
  # sqrt with a floor: finite gradients where the magnitude is 0
  zeta, zeta_gt = jnp.sqrt(sq_pred + 1e-12), jnp.sqrt(sq_gt + 1e-12)
  plus = ((sq_pred > 1e-10) | (sq_gt > 1e-10)) & far[..., None]
  return jnp.sum(jnp.abs(zeta - zeta_gt) * plus) / jnp.maximum(jnp.sum(plus), 1)


def edge_terms(outputs, labels, config, key):
  """The three boundary terms of Gated-SCNN that its boundary logits "edge" bring
  (lambda1, lambda3, lambda4 x these):
  "edge": balanced BCE of the boundary logits vs `boundary_targets`;
  "dual_task": the dual-task regulariser of the segmentation logits (Gumbel noise
  from `key`);
  "boundary_ce": CE of the segmentation on the pixels where sigmoid(edge) > threshold."""
  if key is None:
    raise ValueError("the Gated-SCNN loss needs a PRNG key for its dual-task term")
  seg_logits, edge_logits = outputs["seg"], outputs["edge"]
  c, ignore = config.loss, config.dataset.ignore_index
  weights = tuple(c.class_weights) or None
  edge = resize(edge_logits.astype(jnp.float32), labels.shape[1:3])[..., 0]
  on_boundary = jax.nn.sigmoid(jax.lax.stop_gradient(edge)) > c.boundary_threshold
  return {
      "edge": balanced_bce(edge_logits, boundary_targets(labels, c.boundary_radius, ignore), ignore),
      "dual_task": dual_task_loss(seg_logits, labels, key, c.dual_task_tau, ignore),
      "boundary_ce": cross_entropy(seg_logits, jnp.where(on_boundary, labels, ignore), ignore, weights),
  }


LOSSES = {"edge": edge_terms}  # output -> its terms


# model.head of name "gscnn": its keys with their defaults (jaxseg.config.head)
CONFIG = dict(
    channels=256,
    rates=(6, 12, 18),  # ASPP's, at output stride 16; scaled by 16 / OS
    shape_channels=(64, 32, 16, 8),  # shape stream: residual block, then after each 1x1
    low_level_channels=48,  # the DeepLabv3+ decoder's reduction of c1
    shape_stream=True,  # False: the same network without shape stream (DeepLabv3+)
)


def build(h, config, output_stride, common):
  if h.shape_stream and not config.input.canny_edges:
    raise ConfigError("config key input.canny_edges must be True for model.head.name='gscnn' "
                      "with the shape stream (its fusion takes the Canny edges of the image)")
  if len(h.shape_channels) != 4:
    raise ConfigError(f"config key model.head.shape_channels needs 4 widths (residual block, then "
                      f"after each of the three 1x1 convs), got {tuple(h.shape_channels)}")
  return GSCNNHead(config.dataset.num_classes, h.channels, scaled_rates(h.rates, output_stride),
                   tuple(h.shape_channels), h.low_level_channels, h.shape_stream, config.model.dropout, **common)
