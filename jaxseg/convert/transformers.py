"""Hugging Face transformers ResNet (ResNetModel, or ResNetForImageClassification
whose keys start with "resnet."), e.g. microsoft/resnet-50: the torchvision network
under other names. Stage s counts from 0 and layer k of a block from 0; the stride is
on the 3x3 conv (downsample_in_bottleneck=False, the default of these checkpoints).

And transformers' Swin (--arch swin, microsoft/swin-*, or a OneFormer Swin checkpoint
for its backbone): SwinModel / SwinBackbone / SwinForImageClassification keys of the
hub files or of transformers >= 5; the architecture is read from the tensor shapes.

And the whole OneFormerForUniversalSegmentation (--arch oneformer; the hub's shi-labs/oneformer_*_swin_*):
backbone, pixel decoder, task encoder, transformer decoder and, where the checkpoint has
them (a training checkpoint), the text mapper and the contrastive temperature. The numbers
are read from the tensor shapes, but for the attention heads, which come from the
config.json beside the checkpoint (a save_pretrained directory) or, without one, are the
authors' 8 (every released checkpoint's).
"""
from __future__ import annotations

import math
import re

import flax
import jax
import jax.numpy as jnp
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
  if name == "oneformer":  # the whole model; a hub name (shi-labs/oneformer_*_swin_*) gives its Swin
    if classifier:
      raise ConversionError(f"--classifier: --arch {name}: only ImageNet ResNets convert with their classifier")
    return oneformer_arch(name)
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


# OneFormerTaskModel (model.task_encoder.*) and OneFormerTransformerModule
# (model.transformer_module.*) -> jaxseg's TaskEncoder and TransformerDecoder. Every
# attention is torch's MultiheadAttention (fused in_proj) except the decoder layers'
# self-attention, which transformers splits into q/k/v projections: fuse_qkv joins them.
# transformers keeps the decoder's per-level input projections in a plain list (not in the
# state dict); with conv_dim == hidden_dim, every released config, they are identities.
def oneformer_transformer_rows(src="model.", task_dst="task_encoder/", dst="transformer_decoder/"):
  t, q = src + "transformer_module.", src + "transformer_module.decoder.query_transformer.decoder."
  d = src + "transformer_module.decoder."
  qlayer, qours = q + "layers.{i}.", dst + "query_transformer/layer{i}/"
  layer, ours = d + "layers.{i}.", dst + "layer{i}/"
  return [
      (src + "task_encoder.task_mlp.layers.{i}.0", task_dst + "fc{i+1}", "linear"),
      (t + "queries_embedder", dst[:-1], "query_embedding"),
      (t + "level_embed", dst[:-1], "level_embedding"),
      (t + "input_projections.{l}", dst + "input_proj{l}", "conv"),
      (d + "query_input_projection", dst + "query_transformer/input_proj", "conv"),
      *[(qlayer + name, qours + ours_name, "mha") for name, ours_name in (("self_attn", "self_attn"),
                                                                          ("multihead_attn", "cross_attn"))],
      *[(qlayer + name + ".out_proj", qours + ours_name + "/out_proj", "linear")
        for name, ours_name in (("self_attn", "self_attn"), ("multihead_attn", "cross_attn"))],
      (qlayer + "linear{k}", qours + "fc{k}", "linear"),
      (qlayer + "norm{k}", qours + "norm{k}", "layernorm"),
      (q + "norm", dst + "query_transformer/norm", "layernorm"),
      (d + "decoder_norm", dst + "decoder_norm", "layernorm"),
      (d + "class_embed", dst + "class_embed", "linear"),
      (d + "mask_embed.layers.{i}.0", dst + "mask_embed{i}", "linear"),
      (layer + "cross_attn.multihead_attn", ours + "cross_attn", "mha"),
      (layer + "cross_attn.multihead_attn.out_proj", ours + "cross_attn/out_proj", "linear"),
      (layer + "cross_attn.norm", ours + "cross_norm", "layernorm"),
      *[(layer + f"self_attn.self_attn.{p}_proj", ours + f"self_attn/{p}_proj", "linear") for p in "qkv"],
      (layer + "self_attn.self_attn.out_proj", ours + "self_attn/out_proj", "linear"),
      (layer + "self_attn.norm", ours + "self_norm", "layernorm"),
      (layer + "ffn.linear{k}", ours + "fc{k}", "linear"),
      (layer + "ffn.norm", ours + "ffn_norm", "layernorm"),
  ]


def fuse_qkv(out):
  """Separate q/k/v projections (converted as .../q_proj/kernel, ...) -> one fused
  in_proj_kernel (d, 3d) and in_proj_bias (3d,), in q, k, v order as torch fuses them."""
  for key in [k for k in out if k.endswith("/q_proj/kernel")]:
    base = key[:-len("/q_proj/kernel")]
    for leaf, axis in (("kernel", 1), ("bias", 0)):
      parts = [out.pop(f"{base}/{p}_proj/{leaf}") for p in "qkv"]
      out[f"{base}/in_proj_{leaf}"] = (np.concatenate([v for v, _ in parts], axis), " + ".join(s for _, s in parts))


def oneformer_text_mapper_rows(src="model.text_mapper.", dst="text_mapper/"):
  """OneFormerTextMapper (training checkpoints) -> jaxseg's TextMapper."""
  enc, layer, ours = src + "text_encoder.", src + "text_encoder.transformer.layers.{i}.", dst + "text_encoder/layer{i}/"
  return [
      (enc + "token_embedding", dst + "text_encoder", "token_embedding"),
      (enc[:-1], dst + "text_encoder", "positional_embedding"),
      (enc + "ln_final", dst + "text_encoder/norm", "layernorm"),
      (layer + "self_attn", ours + "attn", "mha"),
      (layer + "self_attn.out_proj", ours + "attn/out_proj", "linear"),
      (layer + "layer_norm{k}", ours + "norm{k}", "layernorm"),
      (layer + "mlp.fc{k}", ours + "fc{k}", "linear"),
      (src + "text_projector.layers.{i}.0", dst + "proj{i}", "linear"),
      (src + "prompt_ctx", dst[:-1], "prompt_ctx"),
  ]


def oneformer_swin_rows():
  """Every key of transformers' OneFormerModel (or OneFormerForUniversalSegmentation's
  "model.*") with a Swin backbone -> jaxseg's OneFormer (backbone/, pixel_decoder/,
  task_encoder/, transformer_decoder/); fixed up by oneformer_fixup."""
  return [*[("model.pixel_level_module.encoder." + src, dst, kind) for src, dst, kind in SWIN],
          *oneformer_pixel_decoder_rows(), *oneformer_transformer_rows()]


# the final LayerNorm of the Swin model (unused by SwinBackbone); a training checkpoint's
# text mapper goes through oneformer_text_mapper_rows
ONEFORMER_SKIP = (r"model\.pixel_level_module\.encoder\.(swin\.)?layernorm\..*",)


def oneformer_fixup(out):
  swin_output_norms(out)
  fuse_qkv(out)


# ---------------------------------------------- --arch oneformer: the whole model
ENCODER = "model.pixel_level_module.encoder."
PIXEL_DECODER = "model.pixel_level_module.decoder."
DECODER = "model.transformer_module.decoder."
TEXT = "model.text_mapper."
LEVELS = 3  # the deformable encoder's levels (1/32, 1/16, 1/8), fixed in both codes
TEXT_CONTEXT, TEXT_VOCAB = 77, 49408  # CLIP's, as jaxseg's TextMapper and the authors' configs


def _count(sd, pattern):
  """How many layers i the keys matching `pattern` (with one (\\d+) group) number 0..n-1."""
  found = {int(m.group(1)) for m in map(re.compile(pattern).match, sd) if m}
  if found and found != set(range(len(found))):
    raise ConversionError(f"layers {sorted(found)} of {pattern} are not numbered 0..n-1")
  return len(found)


def oneformer_keys(sd, hf_config):
  """The config keys of the OneFormer of state dict `sd` (transformers' key names) and
  of its config.json (`hf_config`, or None): family, dataset.num_classes, the Swin
  model.backbone and model.head (name "oneformer" and its architecture numbers)."""
  if not any(ENCODER + p + "embeddings.patch_embeddings.projection.weight" in sd for p in ("", "swin.")):
    kind = (hf_config or {}).get("backbone_config", {}).get("model_type", "not a Swin")
    raise ConversionError(f"--arch oneformer: the backbone ({kind}) has no Swin patch embedding under "
                          f"{ENCODER}; jaxseg converts the OneFormer checkpoints with Swin backbones")
  backbone = swin_keys({k[len(ENCODER):]: v for k, v in sd.items() if k.startswith(ENCODER)})
  queries, hidden = shape(sd, "model.transformer_module.queries_embedder.weight")
  dim = shape(sd, PIXEL_DECODER + "input_projections.0.0.weight")[0]
  if dim != hidden:  # transformers' decoder then projects each level by weights it never saves
    raise ConversionError(f"--arch oneformer: conv_dim {dim} != hidden_dim {hidden}; jaxseg's OneFormer (as "
                          "every released checkpoint) has one width for the pixel decoder and the queries")
  heads = int((hf_config or {}).get("num_attention_heads", 8))
  per_head = shape(sd, PIXEL_DECODER + "encoder.layers.0.self_attn.attention_weights.weight")[0]
  if per_head % (heads * LEVELS):
    raise ConversionError(f"--arch oneformer: {per_head} deformable attention weights per query are not "
                          f"{heads} heads x {LEVELS} levels x n points (num_attention_heads of config.json)")
  head = {"name": "oneformer", "dim": int(dim), "mask_dim": shape(sd, PIXEL_DECODER + "mask_projection.weight")[0],
          "groups": 32,  # transformers' GroupNorm(32, conv_dim), the authors' GN
          "encoder_layers": _count(sd, re.escape(PIXEL_DECODER) + r"encoder\.layers\.(\d+)\."),
          "encoder_heads": heads, "encoder_points": per_head // (heads * LEVELS),
          "encoder_ffn_dim": shape(sd, PIXEL_DECODER + "encoder.layers.0.fc1.weight")[0],
          "heads": heads, "decoder_layers": _count(sd, re.escape(DECODER) + r"layers\.(\d+)\."),
          "queries": int(queries), "ffn_dim": shape(sd, DECODER + "layers.0.ffn.linear1.weight")[0],
          "query_layers": _count(sd, re.escape(DECODER) + r"query_transformer\.decoder\.layers\.(\d+)\.")}
  if TEXT + "text_encoder.token_embedding.weight" in sd:
    vocab, width = shape(sd, TEXT + "text_encoder.token_embedding.weight")
    context = shape(sd, TEXT + "text_encoder.positional_embedding")[0]
    if (vocab, context) != (TEXT_VOCAB, TEXT_CONTEXT):
      raise ConversionError(f"--arch oneformer: the text encoder has {vocab} tokens x context {context}, "
                            f"jaxseg's CLIP tokenizer {TEXT_VOCAB} x {TEXT_CONTEXT}")
    head.update(text_layers=_count(sd, re.escape(TEXT) + r"text_encoder\.transformer\.layers\.(\d+)\."),
                text_width=int(width), text_proj_layers=_count(sd, re.escape(TEXT) + r"text_projector\.layers\.(\d+)\."),
                n_ctx=shape(sd, TEXT + "prompt_ctx.weight")[0])
  return {"family": "universal", "dataset.num_classes": shape(sd, DECODER + "class_embed.weight")[0] - 1,
          **backbone, "model.neck.name": "", "model.head": head}


def oneformer_modules(config):
  """(OneFormer, TextMapper or None) of the keys `oneformer_keys` writes into `config`."""
  from jaxseg.models.backbones.swin import from_config
  from jaxseg.models.heads.oneformer.oneformer import OneFormer
  from jaxseg.models.heads.oneformer.pixel_decoder import PixelDecoder
  from jaxseg.models.heads.oneformer.task_encoder import TaskEncoder
  from jaxseg.models.heads.oneformer.text_mapper import TextMapper
  from jaxseg.models.heads.oneformer.transformer_decoder import TransformerDecoder
  h = config.model.head
  model = OneFormer(
      backbone=from_config(config.model.backbone),
      pixel_decoder=PixelDecoder(dim=h.dim, mask_dim=h.mask_dim, heads=h.encoder_heads, layers=h.encoder_layers,
                                 points=h.encoder_points, ffn_dim=h.encoder_ffn_dim, groups=h.groups),
      transformer_decoder=TransformerDecoder(config.dataset.num_classes, dim=h.dim, mask_dim=h.mask_dim,
                                             heads=h.heads, layers=h.decoder_layers, queries=h.queries,
                                             ffn_dim=h.ffn_dim, query_layers=h.query_layers),
      task_encoder=TaskEncoder(h.dim))
  text = None
  if "text_layers" in h:
    text = TextMapper(h.dim, width=h.text_width, layers=h.text_layers, proj_layers=h.text_proj_layers, n_ctx=h.n_ctx)
  return model, text


def oneformer_variables(config, sd):
  """{"params/...": ShapeDtypeStruct} of the OneFormer of `config`: the model's, the text
  mapper's under text_mapper/ and the temperature logit_scale where `sd` has them."""
  model, text = oneformer_modules(config)
  images, ids = jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, TEXT_CONTEXT), jnp.int32)
  tree = jax.eval_shape(lambda: model.init(jax.random.key(0), images, ids))
  out = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")
  if text is not None:
    texts = jax.eval_shape(lambda: text.init(jax.random.key(0), jnp.zeros((1, 1, TEXT_CONTEXT), jnp.int32)))
    out.update({f"params/text_mapper/{k}": v
                for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(texts["params"]), sep="/").items()})
  if "criterion.logit_scale" in sd:
    out["params/logit_scale"] = jax.ShapeDtypeStruct((), jnp.float32)
  return out


def oneformer_arch(name):
  return Arch(name, [*oneformer_swin_rows(), *oneformer_text_mapper_rows(), ("criterion", "", "logit_scale")],
              oneformer_keys, skip=(*ONEFORMER_SKIP, r"criterion\.empty_weight"),  # the CE's class weights
              fixup=oneformer_fixup, config_file="config.json", variables=oneformer_variables)
