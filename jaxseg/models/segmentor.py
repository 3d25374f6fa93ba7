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

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from jaxseg.errors import ConfigError
from jaxseg.models.backbones import swin
from jaxseg.models.backbones.resnet import ResNet
from jaxseg.models.backbones.stdc import STDC_LAYERS, STDCNet
from jaxseg.models.heads import aspp, danet, encnet, fcn, gscnn, mcibi, psp, stdc
from jaxseg.models.necks import jpu

# model.head.name -> the head's module: its CONFIG (keys and defaults), its
# build(keys, config, output stride of c4, BN/dtype kwargs) and its LOSSES ({output:
# terms function} of the extra outputs it adds; the others take the cross-entropy).
HEADS = {"aspp": aspp, "psp": psp, "danet": danet, "encnet": encnet, "mcibi": mcibi, "fcn": fcn, "stdc": stdc,
         "gscnn": gscnn}
# model.neck.name -> the neck's module: CONFIG, build(keys, config, BN/dtype kwargs) and
# the OUTPUT_STRIDE of the c4 it hands the head; "" = no neck.
NECKS = {"jpu": jpu}


def component(keys, defaults):
  """A component's config (model.head, model.neck, an entry of model.aux_heads) with
  the keys it leaves out at their defaults (configs saved before a key existed)."""
  return ml_collections.ConfigDict({**defaults, **keys.to_dict()})


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
  os_ = output_stride or m.backbone.output_stride
  common = dict(bn_momentum=m.bn_momentum, dtype=jnp.dtype(m.dtype))
  name = m.backbone.get("name", "resnet")  # work dirs saved before the key existed: ResNet
  if name in STDC_LAYERS:
    if m.neck.name or m.head.name != "stdc" or os_ != 32 or m.eval_output_stride != 32:
      raise ConfigError(f"config keys model.head.name / model.neck.name / model.backbone.output_stride / "
                        f"model.eval_output_stride: an STDC backbone (not dilated) takes the head 'stdc', no "
                        f"neck and output stride 32, got '{m.head.name}' / '{m.neck.name}' / {os_} / "
                        f"{m.eval_output_stride}")
    backbone = STDCNet(STDC_LAYERS[name], m.backbone.width, **common)
  elif name == "swin":
    if os_ != 32:
      raise ConfigError(f"config keys model.backbone.output_stride / model.eval_output_stride: Swin "
                        f"is not dilated, both must be 32 (got {os_})")
    backbone = swin.from_config(m.backbone, common["dtype"])
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
  neck = None
  if m.neck.name:
    if m.neck.name not in NECKS:
      raise ConfigError(f"config key model.neck.name: unknown neck '{m.neck.name}' (known: '', {', '.join(NECKS)})")
    module = NECKS[m.neck.name]
    neck = module.build(component(m.neck, module.CONFIG), config, common)
    os_ = module.OUTPUT_STRIDE  # the stride of the c4 the head sees
  if m.head.name not in HEADS:
    raise ConfigError(f"config key model.head.name: unknown head '{m.head.name}' (known: {', '.join(HEADS)})")
  head = HEADS[m.head.name].build(component(m.head, HEADS[m.head.name].CONFIG), config, os_, common)
  aux = {name: fcn.build_aux(component(keys, fcn.AUX_CONFIG), config, common) for name, keys in m.aux_heads.items()}
  return Segmentor(backbone, head, aux, neck)


def output_losses(config):
  """{output: terms function} of the extra outputs of the head in use."""
  return HEADS[config.model.head.name].LOSSES
