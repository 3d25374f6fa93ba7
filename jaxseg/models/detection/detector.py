"""The detection family's model from config.model: a ResNet backbone (c1..c4 at strides 4..32,
not dilated), the neck "fpn" (FPN, with PANet's bottom-up path as `bottom_up`) and the head
"panet" (RPN + box and mask heads, jaxseg.models.detection.panet).

The "Mask R-CNN" setting is the same components with
  model.neck = neck("fpn", bottom_up=False)
  model.head = head("panet", adaptive_pooling=False, fc_fusion=False)
(torchvision's maskrcnn_resnet50_fpn when the backbone is ResNet-50 with the 7x7 stem and
frozen BN: train.frozen_bn; its maskrcnn_resnet50_fpn_v2 with neck norm "bn" and head
rpn_conv_depth=2, box_head_layers="4conv1fc", head_norm="bn": presets.mask_rcnn_v2).
A component's keys are its module's fields, with their defaults: the PANet module's
options, and the smooth-L1 betas of its losses.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jaxseg.errors import ConfigError
from jaxseg.models.backbones.resnet import ResNet
from jaxseg.models.detection.panet import PANet
from jaxseg.models.necks.fpn import FPN

# PANet fields the family fills itself, not config keys
_DERIVED = ("backbone", "neck", "num_classes", "image_size", "dtype", "bn_momentum", "parent", "name")


def _defaults(module, derived=()):
  return {f.name: f.default for f in dataclasses.fields(module)
          if f.name not in derived and f.default is not dataclasses.MISSING}


class FPNNeck:
  """model.neck "fpn": FPN (P2..P6, `channels`) + bottom-up path N2..N6 (`bottom_up`)."""
  CONFIG = _defaults(FPN, ("bn_momentum", "dtype", "parent", "name"))
  CONFIG["bottom_up"] = True  # PANet; False: the Mask R-CNN setting


class PANetHead:
  """model.head "panet": the options of jaxseg.models.detection.panet.PANet, and the
  betas of the smooth-L1 box losses (torchvision: 1/9 for both; Detectron's box head 1)."""
  CONFIG = {**_defaults(PANet, _DERIVED), "rpn_beta": 1 / 9, "box_beta": 1 / 9}


NECKS = {"fpn": FPNNeck}
HEADS = {"panet": PANetHead}
LOSS_KEYS = ("rpn_beta", "box_beta")  # head keys of the losses, not of the module


def _value(v):
  return tuple(v) if isinstance(v, list) else v


def build_detector(config, num_classes, canvas):
  """The PANet module of config.model for `num_classes` thing classes on the static
  `canvas` (H, W)."""
  m = config.model
  if m.backbone.get("name", "resnet") != "resnet":
    raise ConfigError(f"config key model.backbone.name: the detector takes a ResNet, got '{m.backbone.name}'")
  if m.neck.name != "fpn" or m.head.name != "panet":
    raise ConfigError(f"config keys model.neck.name / model.head.name: the detection family takes the neck 'fpn' "
                      f"and the head 'panet', got '{m.neck.name}' / '{m.head.name}'")
  if m.backbone.output_stride != 32:
    raise ConfigError(f"config key model.backbone.output_stride must be 32 for the FPN (c4 at 1/32), "
                      f"got {m.backbone.output_stride}")
  dtype = jnp.dtype(m.dtype)
  backbone = ResNet(depth=m.backbone.depth, width=m.backbone.width, stem=m.backbone.stem, output_stride=32,
                    multi_grid=(), contract_dilation=m.backbone.contract_dilation, extra_blocks=0,
                    bn_momentum=m.bn_momentum, dtype=dtype)
  neck_keys = {k: _value(m.neck.get(k, v)) for k, v in FPNNeck.CONFIG.items()}
  neck = FPN(**neck_keys, bn_momentum=m.bn_momentum, dtype=dtype)
  head_keys = {k: _value(m.head.get(k, v)) for k, v in PANetHead.CONFIG.items() if k not in LOSS_KEYS}
  return PANet(backbone=backbone, neck=neck, num_classes=num_classes, image_size=tuple(canvas), dtype=dtype,
               bn_momentum=m.bn_momentum, **head_keys)


def loss_options(config):
  """{"rpn_beta", "box_beta"} of config.model.head."""
  return {k: config.model.head.get(k, PANetHead.CONFIG[k]) for k in LOSS_KEYS}
