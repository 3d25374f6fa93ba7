"""Segmentor = backbone (+ neck) + decode head + auxiliary heads.

`Segmentor(...)(images, train, batch)` takes normalised NHWC float images and the
batch dict they came from, and returns a dict of logits at feature resolution: "seg"
from the decode head, plus in training one entry per auxiliary head ("aux") and any
extra output of the decode head (DANet's "pam", "cam", EncNet's class-presence logits
"se", Gated-SCNN's boundary logits "edge"). Every decode head is called as
`head(features, train, batch)` and reads the batch keys it needs (MCIBI the "label"
for its memory update, Gated-SCNN the Canny "edges"). Losses and inference resize the
outputs to the label/image size.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.errors import ConfigError
from jaxseg.models.backbones import swin
from jaxseg.models.backbones.resnet import ResNet
from jaxseg.models.backbones.stdc import STDC_LAYERS, STDCNet
from jaxseg.models.heads import encnet, gscnn, mcibi, stdc
from jaxseg.models.heads.aspp import DeepLabV3Head, scaled_rates
from jaxseg.models.heads.danet import DANetHead
from jaxseg.models.heads.encnet import EncNetHead
from jaxseg.models.heads.fcn import FCNHead
from jaxseg.models.heads.gscnn import GSCNNHead
from jaxseg.models.heads.mcibi import MCIBIHead
from jaxseg.models.heads.psp import PSPHead
from jaxseg.models.heads.stdc import STDCHead
from jaxseg.models.necks.jpu import JPU


class Segmentor(nn.Module):
  backbone: nn.Module
  decode_head: nn.Module
  aux_heads: dict[str, nn.Module]
  neck: nn.Module | None = None  # rewrites the feature dict (FastFCN's JPU replaces c4)

  @nn.compact
  def __call__(self, images, train: bool = False, batch=None):
    features = self.backbone(images, train)
    if self.neck is not None:
      features = self.neck(features, train)
    out = self.decode_head(features, train, batch or {})  # logits, or a dict of logits with "seg"
    outputs = dict(out) if isinstance(out, dict) else {"seg": out}
    if not train:  # extra and auxiliary outputs only supervise training
      return {"seg": outputs["seg"]}
    for name, head in self.aux_heads.items():
      outputs[name] = head(features, train)
    return outputs


def build_model(config, output_stride: int | None = None) -> Segmentor:
  """The segmentor described by `config.model`, optionally at another output stride
  (same parameters: only strides, dilations and ASPP rates change)."""
  m = config.model
  num_classes = config.dataset.num_classes
  os_ = output_stride or m.backbone.output_stride
  dtype = jnp.dtype(m.dtype)
  common = dict(bn_momentum=m.bn_momentum, dtype=dtype)
  name = m.backbone.get("name", "resnet")  # work dirs saved before the key existed: ResNet
  if name in STDC_LAYERS:
    return build_stdc(config, common)
  if name == "swin":
    if os_ != 32:
      raise ConfigError(f"config keys model.backbone.output_stride / model.eval_output_stride: Swin "
                        f"is not dilated, both must be 32 (got {os_})")
    backbone = swin.from_config(m.backbone, dtype)
  elif name == "resnet":
    backbone = ResNet(depth=m.backbone.depth, width=m.backbone.width, stem=m.backbone.stem,
                      output_stride=os_, multi_grid=tuple(m.backbone.multi_grid),
                      contract_dilation=m.backbone.contract_dilation,
                      extra_blocks=m.backbone.extra_blocks,
                      dilations=tuple(m.backbone.get("dilations", ())),  # work dirs saved before the key
                      **common)
  else:
    raise ConfigError(f"config key model.backbone.name: unknown backbone '{name}' "
                     f"(known: resnet, swin, {', '.join(STDC_LAYERS)})")
  neck = build_neck(m, common)
  # The stride of the c4 the head sees: the JPU hands it c2's OS8 resolution.
  head_os = 8 if m.neck == "jpu" else os_
  make_head = HEADS.get(m.decode_head)
  if make_head is None:
    raise ConfigError(f"config key model.decode_head: unknown head '{m.decode_head}' "
                     f"(known: {', '.join(HEADS)})")
  aux = {}
  if m.aux_head:
    aux["aux"] = FCNHead(num_classes, m.aux_channels, "c3", m.dropout, dilation=m.get("aux_dilation", 1), **common)
  return Segmentor(backbone, make_head(config, head_os, common), aux, neck)


def build_stdc(config, common):
  """STDC1/2 + its BiSeNet-style decoder, whose auxiliary ("aux16", "aux32") and detail
  outputs come from the decode head in training."""
  m = config.model
  if m.decode_head != "stdc" or m.neck:
    raise ConfigError(f"config keys model.decode_head / model.neck: an STDC backbone takes "
                     f"decode_head='stdc' and no neck, got '{m.decode_head}' / '{m.neck}'")
  if m.backbone.output_stride != 32 or m.eval_output_stride != 32:
    raise ConfigError("config keys model.backbone.output_stride / model.eval_output_stride: "
                     "STDC is not dilated, both must be 32")
  backbone = STDCNet(STDC_LAYERS[m.backbone.name], m.backbone.width, **common)
  return Segmentor(backbone, _stdc(config, 32, common), {})


def build_neck(m, common):
  if m.neck == "":
    return None
  if m.neck == "jpu":
    return JPU(m.jpu_channels, **common, align_corners=m.align_corners)
  raise ConfigError(f"config key model.neck: unknown neck '{m.neck}' (known: '', jpu)")


def _aspp(config, os_, common):
  m, num_classes = config.model, config.dataset.num_classes
  if m.aspp_project_kernel not in (1, 3):
    raise ConfigError(f"config key model.aspp_project_kernel must be 1 or 3, got {m.aspp_project_kernel}")
  return DeepLabV3Head(num_classes, m.head_channels, scaled_rates(m.aspp_rates, os_), m.dropout, **common,
                       project_kernel=m.aspp_project_kernel, extra_conv=m.aspp_extra_conv)


def _psp(config, os_, common):
  m, num_classes = config.model, config.dataset.num_classes
  if m.psp_pooling not in ("avg", "max"):
    raise ConfigError(f"config key model.psp_pooling must be 'avg' or 'max', got '{m.psp_pooling}'")
  if not m.psp_bins or any(int(n) != n or n < 1 for n in m.psp_bins):
    raise ConfigError(f"config key model.psp_bins must be positive integers, got {tuple(m.psp_bins)}")
  return PSPHead(num_classes, m.head_channels, tuple(int(n) for n in m.psp_bins), m.psp_pooling,
                 m.psp_reduction, m.dropout, **common, align_corners=m.align_corners)


def _danet(config, os_, common):
  m, num_classes = config.model, config.dataset.num_classes
  if m.danet_cam_variant not in ("paper", "official"):
    raise ConfigError(f"config key model.danet_cam_variant must be 'paper' or 'official', "
                     f"got '{m.danet_cam_variant}'")
  if m.danet_block_size < 1:
    raise ConfigError(f"config key model.danet_block_size must be >= 1, got {m.danet_block_size}")
  return DANetHead(num_classes, m.danet_cam_variant, int(m.danet_blocked_threshold),
                   m.danet_block_size, m.dropout, **common)


def _encnet(config, os_, common):
  m = config.model
  # Behind the JPU the official code reduces the 2048 channels with a 1x1 conv, else 3x3.
  kernel = m.get("encnet_reduce_kernel", 0) or (1 if m.neck == "jpu" else 3)
  return EncNetHead(config.dataset.num_classes, m.head_channels, m.encnet_codewords, kernel, m.dropout, **common)


def _mcibi(config, os_, common):
  m = config.model
  return MCIBIHead(config.dataset.num_classes, m.mcibi_channels, m.mcibi_transform_channels,
                   scaled_rates(m.aspp_rates, os_), config.train.steps, m.mcibi_momentum,
                   m.mcibi_momentum_power, m.mcibi_update_at_label_size, int(m.danet_blocked_threshold),
                   m.danet_block_size, m.dropout, config.dataset.ignore_index, **common)


def _fcn(config, os_, common):
  """FCN decode head on c4: torchvision's fcn_resnet50/101 (one 3x3 conv + BN + ReLU),
  or mmseg's fcn_r50-d8 (model.fcn_num_convs = 2, model.fcn_concat_input; fcn-d6:
  model.fcn_dilation = 6)."""
  m = config.model
  return FCNHead(config.dataset.num_classes, m.head_channels, "c4", m.dropout, m.get("fcn_num_convs", 1),
                 m.get("fcn_concat_input", False), m.get("fcn_dilation", 1), **common)


def _stdc(config, os_, common):
  m = config.model
  if os_ != 32:
    raise ConfigError(f"config key model.backbone.output_stride: the STDC head takes c2/c3/c4 at "
                     f"strides 8/16/32, got output stride {os_}")
  return STDCHead(config.dataset.num_classes, m.head_channels, m.aux_channels, m.aux_head,
                  m.detail_head, m.get("stdc_classifier_bias", False), **common)


def _gscnn(config, os_, common):
  m = config.model
  if m.gscnn_shape_stream and not config.input.canny_edges:
    raise ConfigError("config key input.canny_edges must be True for model.decode_head='gscnn' "
                      "with the shape stream (its fusion takes the Canny edges of the image)")
  if len(m.gscnn_shape_channels) != 4:
    raise ConfigError(f"config key model.gscnn_shape_channels needs 4 widths (residual block, then "
                      f"after each of the three 1x1 convs), got {tuple(m.gscnn_shape_channels)}")
  return GSCNNHead(config.dataset.num_classes, m.head_channels, scaled_rates(m.aspp_rates, os_),
                   tuple(m.gscnn_shape_channels), m.gscnn_low_level_channels, m.gscnn_shape_stream,
                   m.dropout, **common)


# model.decode_head -> (config, output stride of c4, BN/dtype kwargs) -> head
HEADS = {"aspp": _aspp, "psp": _psp, "danet": _danet, "encnet": _encnet, "mcibi": _mcibi, "fcn": _fcn,
         "stdc": _stdc, "gscnn": _gscnn}

# model.decode_head -> the losses of the extra outputs its head adds ({output: terms
# function}, next to the head); every other output takes the cross-entropy.
HEAD_LOSSES = {"encnet": encnet.LOSSES, "gscnn": gscnn.LOSSES, "mcibi": mcibi.LOSSES, "stdc": stdc.LOSSES}


def output_losses(config):
  return HEAD_LOSSES.get(config.model.decode_head, {})
