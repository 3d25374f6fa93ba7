"""The STDC segmentation decoder (Fan et al. 2021): BiSeNet's context path and feature
fusion on an STDC backbone, with two auxiliary heads and the detail head in training.

  context path: g = ConvBNReLU_1x1(GAP(c4))                      global context, 1/32
                p32 = ARM(c4) + g;   u32 = ConvBNReLU_3x3(up2(p32))     -> 1/16
                p16 = ARM(c3) + u32; u16 = ConvBNReLU_3x3(up2(p16))     -> 1/8
  ARM(x):       f = ConvBNReLU_3x3(x);  f * sigmoid(BN(conv_1x1(GAP(f))))
  FFM(c2, u16): f = ConvBNReLU_1x1([c2, u16]);  a = sigmoid(conv(ReLU(conv(GAP(f)))));  f * a + f
  seg = Output(FFM), Output(x) = conv_1x1(ConvBNReLU_3x3(x))
  training only: "aux16" = Output(u16) (the 1/16 path), "aux32" = Output(u32) (the 1/32
                 path), "detail" = Output(c2) with one channel (detail guidance, 1/8).

The context path width is channels / 2 (128 for the paper's 256); the up2
upsampling is nearest, as PyTorch's in the authors' code. At inference only the "seg" branch is
traced: the auxiliary and detail heads cost nothing.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.errors import ConfigError
from jaxseg.losses import bce_with_logits
from jaxseg.models.layers import ConvBN, resize


class AttentionRefinement(nn.Module):
  features: int
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    f = ConvBN(self.features, 3, bn_momentum=self.bn_momentum, dtype=self.dtype, name="conv")(x, train)
    a = ConvBN(self.features, 1, relu=False, bn_momentum=self.bn_momentum, dtype=self.dtype,
               name="attention")(jnp.mean(f, axis=(1, 2), keepdims=True), train)
    return f * nn.sigmoid(a)


class FeatureFusion(nn.Module):
  features: int
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, spatial, context, train: bool):
    f = ConvBN(self.features, 1, bn_momentum=self.bn_momentum, dtype=self.dtype,
               name="conv")(jnp.concatenate([spatial, context], axis=-1), train)
    a = jnp.mean(f, axis=(1, 2), keepdims=True)
    a = nn.relu(nn.Conv(self.features // 4, (1, 1), use_bias=False, dtype=self.dtype, name="squeeze")(a))
    a = nn.sigmoid(nn.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype, name="excite")(a))
    return f * a + f


class Output(nn.Module):
  """3x3 ConvBNReLU + 1x1 conv to the classes (BiSeNet's output head; the authors'
  classifier has no bias, mmsegmentation's has one)."""
  num_classes: int
  channels: int
  bias: bool = False
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = ConvBN(self.channels, 3, bn_momentum=self.bn_momentum, dtype=self.dtype, name="conv")(x, train)
    return nn.Conv(self.num_classes, (1, 1), use_bias=self.bias, dtype=self.dtype, name="classifier")(x)


def up_to(x, like):
  """Nearest upsampling to `like`'s size as PyTorch's (the authors' and mmseg's code):
  source index floor(i * in / out). jax.image.resize's half-pixel rule picks other
  rows when the sizes are not multiples of 32."""
  (h, w), (oh, ow) = x.shape[1:3], like.shape[1:3]
  rows = np.minimum(np.floor(np.arange(oh, dtype=np.float32) * np.float32(h / oh)), h - 1).astype(np.int32)
  cols = np.minimum(np.floor(np.arange(ow, dtype=np.float32) * np.float32(w / ow)), w - 1).astype(np.int32)
  return x[:, rows][:, :, cols]


class STDCHead(nn.Module):
  num_classes: int
  channels: int = 256  # FFM and seg head width; the context path has half
  aux_channels: int = 64  # width of the auxiliary and detail heads
  aux_heads: bool = True
  detail_head: bool = True
  classifier_bias: bool = False
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, train: bool, batch=None):
    kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)
    c2, c3, c4 = features["c2"], features["c3"], features["c4"]
    context = self.channels // 2
    g = ConvBN(context, 1, **kw, name="global_context")(jnp.mean(c4, axis=(1, 2), keepdims=True), train)
    p32 = AttentionRefinement(context, **kw, name="arm32")(c4, train) + g  # g broadcasts over 1/32
    u32 = ConvBN(context, 3, **kw, name="up32")(up_to(p32, c3), train)
    p16 = AttentionRefinement(context, **kw, name="arm16")(c3, train) + u32
    u16 = ConvBN(context, 3, **kw, name="up16")(up_to(p16, c2), train)
    fused = FeatureFusion(self.channels, **kw, name="ffm")(c2, u16, train)
    bias = self.classifier_bias
    outputs = {"seg": Output(self.num_classes, self.channels, bias, **kw, name="seg_head")(fused, train)}
    if train:  # training-only supervision; never traced at inference
      if self.aux_heads:
        outputs["aux16"] = Output(self.num_classes, self.aux_channels, bias, **kw, name="aux16_head")(u16, train)
        outputs["aux32"] = Output(self.num_classes, self.aux_channels, bias, **kw, name="aux32_head")(u32, train)
      if self.detail_head:
        outputs["detail"] = Output(1, self.aux_channels, **kw, name="detail_head")(c2, train)
    return outputs


# Losses of the outputs this head adds (the others take the cross-entropy).

LAPLACIAN = ((-1, -1, -1), (-1, 8, -1), (-1, -1, -1))


def detail_targets(labels, ignore_index=255, strides=(1, 2, 4), fuse=(0.6, 0.3, 0.1), threshold=0.1):
  """STDC's detail ground truth (B, H, W) in {0, 1} from the label map.

  At each stride s the Laplacian kernel [[-1,-1,-1],[-1,8,-1],[-1,-1,-1]] is applied
  to the class ids at pixels (s*i, s*j) (a stride-s conv), thresholded (> 0.1), and
  upsampled by repetition (nearest); the three maps are fused by a 1x1 conv with the
  paper's weights (0.6, 0.3, 0.1) and thresholded again (> 0.1). The fuse weights
  are a fixed constant: the authors' code makes them a parameter, but the hard
  threshold after them passes no gradient, so they never leave their initial value.
  Ignored and out-of-image neighbours contribute nothing (8c - sum n becomes the sum
  of c - n over the valid neighbours), so neither the image border nor an ignore
  region makes edges; ignored pixels are never edges.
  """
  b, h, w = labels.shape
  valid = labels != ignore_index
  lab = jnp.where(valid, labels, 0).astype(jnp.float32)
  lab_p = jnp.pad(lab, ((0, 0), (1, 1), (1, 1)))
  valid_p = jnp.pad(valid, ((0, 0), (1, 1), (1, 1)))
  fused = jnp.zeros((b, h, w), jnp.float32)
  for s, weight in zip(strides, fuse):
    hs, ws = -(-h // s), -(-w // s)  # a padded 3x3 conv with stride s: ceil(H / s) outputs
    at = lambda x, dy, dx: x[:, 1 + dy::s, 1 + dx::s][:, :hs, :ws]
    centre, centre_valid = at(lab_p, 0, 0), at(valid_p, 0, 0)
    response = jnp.zeros((b, hs, ws), jnp.float32)
    for dy in (-1, 0, 1):
      for dx in (-1, 0, 1):
        k = LAPLACIAN[dy + 1][dx + 1]
        if k < 0:  # 8c - sum_n n = sum_n (c - n) over the valid neighbours n
          response += jnp.where(at(valid_p, dy, dx), centre - at(lab_p, dy, dx), 0.0)
    edges = ((response > threshold) & centre_valid).astype(jnp.float32)
    edges = jnp.repeat(jnp.repeat(edges, s, axis=1), s, axis=2)[:, :h, :w]
    fused = fused + jnp.float32(weight) * edges
  return ((fused > jnp.float32(threshold)) & valid).astype(jnp.float32)


def detail_loss(logits, labels, ignore_index=255):
  """STDC's detail loss: BCE + dice between sigmoid(logits), bilinearly upsampled to the
  labels, and `detail_targets(labels)`, over the non-ignored pixels. Dice per image:
  1 - (2 sum p t + 1) / (sum p + sum t + 1), averaged over the batch."""
  target = jax.lax.stop_gradient(detail_targets(labels, ignore_index))
  valid = (labels != ignore_index).astype(jnp.float32)
  x = resize(logits.astype(jnp.float32), labels.shape[1:3])[..., 0]
  bce = jnp.sum(bce_with_logits(x, target) * valid) / jnp.maximum(jnp.sum(valid), 1.0)
  p = jax.nn.sigmoid(x) * valid
  dice = 1 - (2 * jnp.sum(p * target, (1, 2)) + 1) / (jnp.sum(p, (1, 2)) + jnp.sum(target, (1, 2)) + 1)
  return bce + jnp.mean(dice)


def detail_terms(outputs, labels, config, key=None):
  return {"detail": detail_loss(outputs["detail"], labels, config.dataset.ignore_index)}


# output -> its terms; "aux16" and "aux32" take the cross-entropy on the labels
LOSSES = {"detail": detail_terms}


# model.head of name "stdc": its keys with their defaults (jaxseg.config.head)
CONFIG = dict(
    channels=256,  # FFM and seg head; the context path has half
    aux_channels=64,  # the auxiliary and detail heads
    aux_heads=True,  # the outputs "aux16" and "aux32" in training
    detail_head=True,  # detail guidance on the 1/8 feature ("detail", training only)
    classifier_bias=False,  # the 1x1 classifiers: no bias (authors' code); mmseg's have one
)


def build(h, config, output_stride, common):
  if output_stride != 32:
    raise ConfigError(f"config key model.backbone.output_stride: the STDC head takes c2/c3/c4 at "
                      f"strides 8/16/32, got output stride {output_stride}")
  return STDCHead(config.dataset.num_classes, h.channels, h.aux_channels, h.aux_heads, h.detail_head,
                  h.classifier_bias, **common)
