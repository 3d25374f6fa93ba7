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
only) is not part of this forward, as in transformers' OneFormerModel at inference.
"""
from __future__ import annotations

import flax.linen as nn

from jaxseg.models.heads.oneformer.pixel_decoder import PixelDecoder
from jaxseg.models.heads.oneformer.task_encoder import TaskEncoder
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
