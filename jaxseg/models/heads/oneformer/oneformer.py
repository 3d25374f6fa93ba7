"""OneFormer's forward pass (Jain et al. 2023, Fig. 2): image + task -> per-query class
and mask logits, in the order the pieces run:

  features    c1..c4 = backbone(image)                      strides 4, 8, 16, 32
  pixels      {1/32, 1/16, 1/8}, F_1/4 = PixelDecoder(c1..c4)
  task        Q_task = TaskEncoder(CLIP ids of "the task is {task}")
  queries     TransformerDecoder(maps, F_1/4, Q_task): the query transformer, then the
              masked-attention layers with their predictions before and after each

Returns the last layer's predictions ("class_logits" (B, N, K + 1), "mask_logits"
(B, H/4, W/4, N)), every layer's ("aux": the L earlier ones, for deep supervision), the
initial queries (the contrastive loss's) and the task token. The text mapper (training
only) is not part of this forward, as in transformers' OneFormerModel at inference:
OneFormerWithText adds it. `build` makes either from config.model (model.head = the
keys of CONFIG, model.backbone = a ResNet or Swin).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.errors import ConfigError
from jaxseg.models.backbones import swin
from jaxseg.models.backbones.resnet import ResNet
from jaxseg.models.heads.oneformer.pixel_decoder import PixelDecoder
from jaxseg.models.heads.oneformer.task_encoder import TaskEncoder
from jaxseg.models.heads.oneformer.text_mapper import TextMapper
from jaxseg.models.heads.oneformer.transformer_decoder import TransformerDecoder


class OneFormer(nn.Module):
  backbone: nn.Module  # returns {"c1": 1/4, ..., "c4": 1/32} (Swin, ResNet)
  pixel_decoder: PixelDecoder
  transformer_decoder: TransformerDecoder
  task_encoder: TaskEncoder

  @nn.compact
  def __call__(self, images, task_ids, train: bool = False):
    """images (B, H, W, 3) normalised, task_ids (B, 77) from clip_tokenizer.task_ids."""
    if task_ids.ndim != 2 or task_ids.shape[0] != images.shape[0]:
      raise ValueError(f"task_ids: expected (B, 77) with B = {images.shape[0]} as the images, got {task_ids.shape}")
    features = self.backbone(images, train)
    pixels = self.pixel_decoder(features, train)
    task_token = self.task_encoder(task_ids)
    out = self.transformer_decoder(pixels["multi_scale"], pixels["mask_features"], task_token, train)
    return {"class_logits": out["class_logits"][-1], "mask_logits": out["mask_logits"][-1],
            "aux": [{"class_logits": c, "mask_logits": m}
                    for c, m in zip(out["class_logits"][:-1], out["mask_logits"][:-1])],
            "queries": out["queries"], "task_token": task_token}

  def per_task(self, images, task_ids, train: bool = False):
    """The forward pass for several tasks of the same images: backbone and pixel
    decoder once (the task enters only the decoder), then the decoder per task.
    task_ids (T, B, 77) -> [outputs as __call__'s] * T."""
    features = self.backbone(images, train)
    pixels = self.pixel_decoder(features, train)
    out = []
    for ids in task_ids:
      task_token = self.task_encoder(ids)
      o = self.transformer_decoder(pixels["multi_scale"], pixels["mask_features"], task_token, train)
      out.append({"class_logits": o["class_logits"][-1], "mask_logits": o["mask_logits"][-1]})
    return out


class OneFormerWithText(OneFormer):
  """OneFormer in training: its forward pass, plus the text queries of the image's
  ground-truth texts (TextMapper) and the contrastive loss's learned temperature,
  logit_scale = log(1 / tau) initialised at tau = 0.07 (CLIP's; the authors' criterion
  owns it, clamped at exp(.) <= 100 in the loss)."""
  text_mapper: TextMapper | None = None
  temperature: float = 0.07

  @nn.compact
  def __call__(self, images, task_ids, train: bool = False, text_ids=None):
    out = super().__call__(images, task_ids, train)
    if self.text_mapper is not None and text_ids is not None:
      out["texts"] = self.text_mapper(text_ids)  # (B, T + n_ctx, d)
      out["logit_scale"] = self.param("logit_scale", nn.initializers.constant(math.log(1 / self.temperature)), ())
    return out


# model.head keys of OneFormer ("oneformer"), the authors' R-50 configs' values
# (configs/*/oneformer_R50_*.yaml: MODEL.SEM_SEG_HEAD, ONE_FORMER, TEXT_ENCODER, TEST).
CONFIG = dict(
    dim=256,  # d of the pixel decoder (CONVS_DIM), the queries and the decoder (HIDDEN_DIM)
    mask_dim=256,  # MASK_DIM of the mask features and mask embeddings
    groups=32,  # GroupNorm groups of the pixel decoder
    encoder_layers=6,  # TRANSFORMER_ENC_LAYERS: deformable encoder layers
    encoder_heads=8,
    encoder_points=4,  # sampling points per head and level
    encoder_ffn_dim=1024,
    remat=False,  # recompute each encoder layer in the backward pass (memory)
    heads=8,  # NHEADS of the decoder and the query transformer
    decoder_layers=9,  # DEC_LAYERS - 1 (the authors count the prediction before the first layer)
    queries=150,  # NUM_OBJECT_QUERIES N, the task token included
    ffn_dim=2048,  # DIM_FEEDFORWARD
    query_layers=2,  # CLASS_DEC_LAYERS of the query transformer
    dropout=0.1,  # DROPOUT of the query transformer
    text_layers=6,  # TEXT_ENCODER.NUM_LAYERS
    text_width=256,  # TEXT_ENCODER.WIDTH
    text_proj_layers=2,  # PROJ_NUM_LAYERS
    n_ctx=16,  # N_CTX learned context embeddings; the texts are N - n_ctx
    text_causal=True,  # the authors' causal text attention (transformers' never applies it)
    temperature=0.07,  # CONTRASTIVE_TEMPERATURE: initial tau of the query-text contrastive loss
    # Matching and losses (the loss weights are loss.weights: ce, mask, dice, contrastive)
    no_object_weight=0.1,  # NO_OBJECT_WEIGHT of the "no object" class in the CE
    train_points=12544,  # TRAIN_NUM_POINTS sampled per mask for the matching costs and mask losses
    oversample_ratio=3.0,  # OVERSAMPLE_RATIO of the importance sampling
    importance_ratio=0.75,  # IMPORTANCE_SAMPLE_RATIO
)


def build(config, train):
  """OneFormer of config.model: OneFormerWithText (its text mapper and temperature) for
  training, OneFormer otherwise; the parameters of the second are the first's."""
  m = config.model
  h = {**CONFIG, **{k: v for k, v in m.head.items() if k != "name"}}
  dtype = jnp.dtype(m.dtype)
  b = m.backbone
  if b.name == "swin":
    backbone = swin.from_config(b, dtype)
  elif b.name == "resnet":  # detectron2's R-50: 7x7 stem, strides in the 3x3 convs, no dilation
    backbone = ResNet(depth=b.depth, width=b.width, stem=b.stem, output_stride=32, multi_grid=(),
                      bn_momentum=m.bn_momentum, dtype=dtype)
  else:
    raise ConfigError(f"config key model.backbone.name: OneFormer takes 'resnet' or 'swin', got '{b.name}'")
  if h["queries"] <= h["n_ctx"]:
    raise ConfigError(f"config keys model.head.queries ({h['queries']}) must exceed model.head.n_ctx "
                      f"({h['n_ctx']}): the texts are queries - n_ctx")
  parts = dict(
      backbone=backbone,
      # fp32 always: the authors keep the pixel decoder out of mixed precision (their
      # deformable attention runs in fp32), users report NaNs otherwise (OneFormer #136)
      pixel_decoder=PixelDecoder(dim=h["dim"], mask_dim=h["mask_dim"], heads=h["encoder_heads"],
                                 layers=h["encoder_layers"], points=h["encoder_points"],
                                 ffn_dim=h["encoder_ffn_dim"], groups=h["groups"], remat=h["remat"]),
      transformer_decoder=TransformerDecoder(config.dataset.num_classes, dim=h["dim"], mask_dim=h["mask_dim"],
                                             heads=h["heads"], layers=h["decoder_layers"], queries=h["queries"],
                                             ffn_dim=h["ffn_dim"], query_layers=h["query_layers"],
                                             dropout=h["dropout"], dtype=dtype),
      task_encoder=TaskEncoder(h["dim"]))
  if not train:
    return OneFormer(**parts)
  text_mapper = TextMapper(h["dim"], width=h["text_width"], layers=h["text_layers"], proj_layers=h["text_proj_layers"],
                           n_ctx=h["n_ctx"], causal=h["text_causal"], dtype=dtype)
  return OneFormerWithText(**parts, text_mapper=text_mapper, temperature=h["temperature"])
