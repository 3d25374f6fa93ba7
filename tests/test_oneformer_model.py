"""OneFormer's whole forward pass (Swin + pixel decoder + task encoder + transformer
decoder) against transformers' OneFormerModel at a tiny config, random weights
(randomised norm affines and embeddings), the real task ids of the three tasks; all
weights through jaxseg.convert's OneFormer rows, from the state dict's own keys.
"""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxseg.convert.tables import Arch, map_tensors
from jaxseg.convert.transformers import ONEFORMER_SKIP, oneformer_fixup, oneformer_swin_rows
from jaxseg.models.backbones.swin import SwinTransformer
from jaxseg.models.heads.oneformer.clip_tokenizer import task_ids
from jaxseg.models.heads.oneformer.oneformer import OneFormer
from jaxseg.models.heads.oneformer.pixel_decoder import PixelDecoder
from jaxseg.models.heads.oneformer.task_encoder import TaskEncoder
from jaxseg.models.heads.oneformer.transformer_decoder import TransformerDecoder, attention_mask
from jaxseg.models.layers import resize
from tests import torch_reference as R

transformers = pytest.importorskip("transformers", reason="the reference is transformers' OneFormer")
from transformers.models.oneformer import modeling_oneformer as M  # noqa: E402

def test_oneformer_model_matches_transformers():
  swin = transformers.SwinConfig(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=4,
                                 out_features=["stage1", "stage2", "stage3", "stage4"])
  config = transformers.OneFormerConfig(backbone_config=swin, conv_dim=32, mask_dim=32, hidden_dim=32,
                                        num_attention_heads=2, encoder_layers=1, encoder_feedforward_dim=64,
                                        decoder_layers=4, num_queries=6, num_labels=5, dim_feedforward=64,
                                        dropout=0.0)
  torch.manual_seed(6)
  ref = R.randomize(M.OneFormerModel(config), seed=6)
  image = np.random.RandomState(3).randn(3, 64, 96, 3).astype(np.float32)  # 1/32: 2x3, 1/4: 16x24
  ids = task_ids(["semantic", "instance", "panoptic"])
  with torch.no_grad():
    out = ref(torch.from_numpy(image).permute(0, 3, 1, 2), torch.from_numpy(ids))

  sd = {k if k.startswith("model.") else f"model.{k}": v.numpy() for k, v in ref.state_dict().items()}
  mapped, _ = map_tensors(sd, Arch("oneformer", oneformer_swin_rows(), lambda sd: {}, skip=ONEFORMER_SKIP))
  oneformer_fixup(mapped)
  params = flax.traverse_util.unflatten_dict({k: v for k, (v, _) in mapped.items()}, sep="/")["params"]
  model = OneFormer(
      backbone=SwinTransformer(width=32, depths=(1, 1, 1, 1), heads=(1, 2, 4, 8), window=4),
      pixel_decoder=PixelDecoder(dim=32, mask_dim=32, heads=2, layers=1, points=4, ffn_dim=64),
      transformer_decoder=TransformerDecoder(5, dim=32, mask_dim=32, heads=2, layers=3, queries=6, ffn_dim=64,
                                             dropout=0.0),
      task_encoder=TaskEncoder(32))
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0), image, ids))["params"]
  assert jax.tree.map(np.shape, params) == jax.tree.map(lambda s: s.shape, expected)  # every weight, no other
  ours = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t))(params, jnp.asarray(image), jnp.asarray(ids))

  R.report("task token", ours["task_token"], out.task_token.numpy())
  theirs = [(a["class_queries_logits"], a["masks_queries_logits"])
            for a in out.transformer_decoder_auxiliary_predictions]
  theirs.append((out.transformer_decoder_class_predictions, out.transformer_decoder_mask_predictions))
  mine = [(a["class_logits"], a["mask_logits"]) for a in ours["aux"]] + [(ours["class_logits"], ours["mask_logits"])]
  sizes = ((2, 3), (4, 6), (8, 12))
  for i, ((c, m), (tc, tm)) in enumerate(zip(mine, theirs)):
    tm = tm.permute(0, 2, 3, 1).numpy()
    if i < len(mine) - 1:  # the mask the next layer attends with: not trivial, no value at the threshold
      size = sizes[(i + 1) % 3]
      blocked = np.asarray(attention_mask(jnp.asarray(tm), size))
      margin = float(np.abs(np.asarray(resize(jnp.asarray(tm), size))).min())
      print(f"\n[mask for layer {i}] {blocked.mean():.0%} masked, smallest |logit| {margin:.2e}")
      assert 0.1 < blocked.mean() < 0.9 and margin > 1e-5
    R.report(f"class logits after {i} layers", c, tc.numpy())
    R.report(f"mask logits after {i} layers", m, tm)
  R.report("initial queries", ours["queries"], out.transformer_decoder_contrastive_queries.numpy())
