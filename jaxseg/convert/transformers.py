"""Hugging Face transformers ResNet (ResNetModel, or ResNetForImageClassification
whose keys start with "resnet."), e.g. microsoft/resnet-50: the torchvision network
under other names. Stage s counts from 0 and layer k of a block from 0; the stride is
on the 3x3 conv (downsample_in_bottleneck=False, the default of these checkpoints).

And transformers' Swin (--arch swin, microsoft/swin-*, or a OneFormer Swin checkpoint
for its backbone): SwinModel / SwinBackbone / SwinForImageClassification keys of the
hub files or of transformers >= 5; the architecture is read from the tensor shapes.
"""
from __future__ import annotations

import math
import re

import numpy as np

from jaxseg.convert.io import ConversionError
from jaxseg.convert.tables import Arch, backbone_keys, classifier_arch, parse_depth, shape

RESNET = [
    ("embedder.embedder.convolution", "backbone/stem/conv", "conv"),
    ("embedder.embedder.normalization", "backbone/stem/bn", "bn"),
    ("encoder.stages.{s}.layers.{b}.shortcut.convolution", "backbone/layer{s+1}_{b}/downsample/conv", "conv"),
    ("encoder.stages.{s}.layers.{b}.shortcut.normalization", "backbone/layer{s+1}_{b}/downsample/bn", "bn"),
    ("encoder.stages.{s}.layers.{b}.layer.{k}.convolution", "backbone/layer{s+1}_{b}/conv{k+1}/conv", "conv"),
    ("encoder.stages.{s}.layers.{b}.layer.{k}.normalization", "backbone/layer{s+1}_{b}/conv{k+1}/bn", "bn"),
]


def arch(name, classifier=False):
  if re.fullmatch(r"(microsoft/)?swin.*|(shi-labs/)?oneformer.*swin.*", name):
    if classifier:
      raise ConversionError(f"--classifier: --arch {name}: only ImageNet ResNets convert with their classifier")
    return swin_arch(name)
  m = re.fullmatch(r"(microsoft/)?resnet-?(?P<depth>\d+)", name)
  depth = parse_depth(name, m, "resnet-18/34/50/101/152 (as microsoft/resnet-50)")
  keys = lambda sd: backbone_keys(depth, shape(sd, "embedder.embedder.convolution.weight")[0], "7x7")
  if classifier:  # ResNetForImageClassification: classifier = Sequential(Flatten, Linear)
    return classifier_arch(name, RESNET, "classifier.1", keys, strip_prefix="resnet.")
  return Arch(name, RESNET, keys, skip=(r"classifier\..*",), strip_prefix="resnet.", backbone_only=True)


# transformers' Swin (SwinModel, SwinBackbone, SwinForImageClassification; OneFormer's
# pixel_level_module.encoder is a SwinBackbone). Both key generations: the hub files
# (attention.self.query, intermediate.dense, ...) and transformers >= 5's own
# (attention.q_proj, mlp.fc1, ...); SwinBackbone >= 5 nests the model under "swin.".
def _swin_rows(p):
  block = p + "encoder.layers.{s}.blocks.{b}."
  ours = "backbone/stage{s+1}_block{b}/"
  return [
      (p + "embeddings.patch_embeddings.projection", "backbone/patch_embed", "conv"),
      (p + "embeddings.norm", "backbone/patch_norm", "layernorm"),
      (block + "layernorm_before", ours + "norm1", "layernorm"),
      (block + "layernorm_after", ours + "norm2", "layernorm"),
      *[(block + f"attention.{name}", ours + f"attn/{dst}", "linear")
        for name, dst in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"), ("o_proj", "proj"),
                          ("self.query", "query"), ("self.key", "key"), ("self.value", "value"),
                          ("output.dense", "proj"))],
      (block + "attention.relative_position_bias", ours + "attn", "rel_bias"),
      (block + "attention.self", ours + "attn", "rel_bias"),
      (block + "mlp.fc1", ours + "fc1", "linear"),
      (block + "mlp.fc2", ours + "fc2", "linear"),
      (block + "intermediate.dense", ours + "fc1", "linear"),
      (block + "output.dense", ours + "fc2", "linear"),
      (p + "encoder.layers.{s}.downsample.reduction", "backbone/merge{s+1}/reduction", "linear"),
      (p + "encoder.layers.{s}.downsample.norm", "backbone/merge{s+1}/norm", "layernorm"),
  ]


SWIN = [*_swin_rows(""), *_swin_rows("swin."),
        ("hidden_states_norms.stage{s}", "backbone/norm{s}", "layernorm")]  # SwinBackbone's output norms


def swin_keys(sd):
  """The model.backbone keys of the Swin of state dict `sd` (with or without "swin.")."""
  p = "swin." if any(k.startswith("swin.embeddings.") for k in sd) else ""
  width, _, patch, _ = shape(sd, p + "embeddings.patch_embeddings.projection.weight")
  if patch != 4:
    raise ConversionError(f"{p}embeddings.patch_embeddings.projection.weight: patch size {patch}, "
                          "jaxseg's Swin has 4")
  blocks = {}
  for k in sd:
    m = re.match(re.escape(p) + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.layernorm_before\.weight$", k)
    if m:
      blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
  depths = tuple(len(blocks.get(s, ())) for s in range(4))
  if sorted(blocks) != [0, 1, 2, 3] or any(blocks[s] != set(range(depths[s])) for s in range(4)):
    raise ConversionError(f"expected 4 stages of blocks 0..n-1 under {p}encoder.layers, found "
                          f"{ {s: sorted(b) for s, b in sorted(blocks.items())} }")
  table = [k for k in sd if re.fullmatch(re.escape(p) + r"encoder\.layers\.(\d)\.blocks\.0\.attention\."
                                         r"(self|relative_position_bias)\.relative_position_bias_table", k)]
  heads = tuple(int(sd[k].shape[1]) for k in sorted(table))
  window = (math.isqrt(int(sd[sorted(table)[0]].shape[0])) + 1) // 2  # (2M - 1)^2 rows
  return {"model.backbone.name": "swin", "model.backbone.width": int(width),
          "model.backbone.swin_depths": depths, "model.backbone.swin_heads": heads,
          "model.backbone.swin_window": window, "model.backbone.output_stride": 32,
          "model.eval_output_stride": 32}


def swin_output_norms(out):
  """A classification checkpoint (SwinModel) has no output norm per stage: those start as
  LayerNorm's initialisation (scale 1, bias 0), as the dense-prediction code starts them."""
  for s in range(1, 5):
    if f"params/backbone/norm{s}/scale" not in out:
      width = out["params/backbone/patch_embed/kernel"][0].shape[-1] * 2 ** (s - 1)
      out[f"params/backbone/norm{s}/scale"] = (np.ones(width, np.float32), "(new LayerNorm: 1)")
      out[f"params/backbone/norm{s}/bias"] = (np.zeros(width, np.float32), "(new LayerNorm: 0)")


def swin_arch(name):
  """Swin from transformers: "swin" or a hub name (microsoft/swin-tiny-patch4-window7-224, ...);
  a whole OneFormer checkpoint gives its backbone (model.pixel_level_module.encoder.*)."""
  return Arch(name, SWIN, swin_keys, fixup=swin_output_norms, backbone_only=True,
              skip=(r"classifier\..*", r"(swin\.)?layernorm\..*"),  # the classifier's head and final norm
              strip_prefix="model.pixel_level_module.encoder.")


# OneFormerPixelDecoder (model.pixel_level_module.decoder.*) -> jaxseg's PixelDecoder: its
# input projections per level (0 = 1/32), the encoder layers, the 1/4 FPN level ("adapter_1"
# lateral, "layer_1" output) and the mask-feature projection.
def oneformer_pixel_decoder_rows(src="model.pixel_level_module.decoder.", dst="pixel_decoder/"):
  layer, ours = src + "encoder.layers.{i}.", dst + "encoder_layer{i}/"
  return [
      (src + "input_projections.{l}.0", dst + "proj{l}", "conv"),
      (src + "input_projections.{l}.1", dst + "proj{l}_norm", "layernorm"),  # GroupNorm: weight, bias
      (src[:-1], dst[:-1], "level_embed"),
      *[(layer + f"self_attn.{name}", ours + f"attn/{name}", "linear")
        for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj")],
      (layer + "self_attn_layer_norm", ours + "norm1", "layernorm"),
      (layer + "fc1", ours + "fc1", "linear"),
      (layer + "fc2", ours + "fc2", "linear"),
      (layer + "final_layer_norm", ours + "norm2", "layernorm"),
      (src + "adapter_1.0", dst + "lateral", "conv"),
      (src + "adapter_1.1", dst + "lateral_norm", "layernorm"),
      (src + "layer_1.0", dst + "output", "conv"),
      (src + "layer_1.1", dst + "output_norm", "layernorm"),
      (src + "mask_projection", dst + "mask_features", "conv"),
  ]
