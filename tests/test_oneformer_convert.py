"""python -m jaxseg.convert --from transformers --arch oneformer, end to end: a small
random OneFormerForUniversalSegmentation (Swin, with its text mapper) saved by
save_pretrained (model.safetensors + config.json) and as a .bin, converted through the
CLI; the converted weights give jaxseg's OneFormer transformers' class and mask logits
and its text mapper transformers' text queries.
"""
import json
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

from jaxseg.convert.__main__ import main
from jaxseg.convert.init_from import read_variables
from jaxseg.convert.io import ConversionError, read_safetensors
from jaxseg.convert.transformers import oneformer_keys, oneformer_modules
from jaxseg.models.heads.oneformer.clip_tokenizer import task_ids
from tests import torch_reference as R

transformers = pytest.importorskip("transformers", reason="the reference is transformers' OneFormer")


def test_convert_oneformer_cli_matches_transformers(tmp_path):
  swin = transformers.SwinConfig(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=4,
                                 out_features=["stage1", "stage2", "stage3", "stage4"])
  config = transformers.OneFormerConfig(
      backbone_config=swin, conv_dim=64, mask_dim=64, hidden_dim=64, num_attention_heads=2, encoder_layers=1,
      encoder_feedforward_dim=96, decoder_layers=4, num_queries=6, num_labels=5, dim_feedforward=80, dropout=0.0,
      is_training=True, text_encoder_width=64, text_encoder_num_layers=1, text_encoder_proj_layers=2,
      text_encoder_n_ctx=2)
  torch.manual_seed(8)
  ref = R.randomize(transformers.OneFormerForUniversalSegmentation(config), seed=8)
  hf = tmp_path / "hf"
  ref.save_pretrained(hf)
  torch.save(ref.state_dict(), hf / "pytorch_model.bin")
  for name, out in (("model.safetensors", "of_st"), ("pytorch_model.bin", "of_bin")):
    assert main(["--from", "transformers", "--arch", "oneformer", "--input", str(hf / name),
                 "--output", str(tmp_path / out)]) == 0

  with open(tmp_path / "of_st" / "config.json") as f:
    ours_config = ml_collections.ConfigDict(json.load(f))
  assert ours_config.family == "universal" and ours_config.dataset.num_classes == 5
  assert {k: ours_config.model.head[k] for k in ("dim", "mask_dim", "heads", "encoder_heads", "encoder_points",
                                                   "encoder_ffn_dim", "decoder_layers", "queries", "ffn_dim",
                                                   "query_layers", "text_layers", "text_width", "n_ctx")} == \
      dict(dim=64, mask_dim=64, heads=2, encoder_heads=2, encoder_points=4, encoder_ffn_dim=96, decoder_layers=3,
           queries=6, ffn_dim=80, query_layers=2, text_layers=1, text_width=64, n_ctx=2)
  params = read_variables(str(tmp_path / "of_st"))["params"]
  jax.tree.map(np.testing.assert_array_equal, params, read_variables(str(tmp_path / "of_bin"))["params"])
  report = json.load(open(tmp_path / "of_st" / "converted.json"))
  # save_pretrained writes the hub's key names, the state dict (the .bin) transformers 5's: every
  # tensor of the file converted, but the loss's class weights and the unused final Swin norm
  loaded = {k for source in report["loaded"] for k in source.split(" + ")}  # q, k, v fused into one
  assert loaded | set(report["skipped"]) == set(read_safetensors(str(hf / "model.safetensors")))
  assert any(k.startswith("model.text_mapper.") for k in loaded) and "criterion.logit_scale" in loaded
  assert "criterion.empty_weight" in report["skipped"] and all(
      re.fullmatch(r"criterion\.empty_weight|model\.pixel_level_module\.encoder\.(swin\.)?layernorm\.(weight|bias)|"
                   r".*\.relative_position_index", k) for k in report["skipped"])

  model, text = oneformer_modules(ours_config)
  text = text.clone(causal=False)  # transformers' text encoder never applies its causal mask
  image = np.random.RandomState(4).randn(2, 64, 96, 3).astype(np.float32)
  ids = task_ids(["panoptic", "instance"])
  text_ids = np.random.RandomState(5).randint(1, 49406, (2, 4, 77))
  text_ids[..., 0], text_ids[..., 9], text_ids[..., 10:] = 49406, 49407, 0  # start, end, padding

  @jax.jit
  def run(p, x, t, texts):
    out = model.apply({"params": {k: v for k, v in p.items() if k not in ("text_mapper", "logit_scale")}}, x, t)
    return out["class_logits"], out["mask_logits"], text.apply({"params": p["text_mapper"]}, texts)
  class_logits, mask_logits, text_queries = run(params, jnp.asarray(image), jnp.asarray(ids), jnp.asarray(text_ids))
  with torch.no_grad():
    theirs = ref(torch.from_numpy(image).permute(0, 3, 1, 2), torch.from_numpy(ids),
                 text_inputs=torch.from_numpy(text_ids))
  R.report("class logits", class_logits, theirs.class_queries_logits.numpy())
  R.report("mask logits", mask_logits, theirs.masks_queries_logits.permute(0, 2, 3, 1).numpy())
  R.report("text queries", text_queries, theirs.text_queries.numpy())
  np.testing.assert_allclose(params["logit_scale"], ref.criterion.logit_scale.item(), rtol=1e-6)


def test_convert_oneformer_names_what_does_not_fit():
  with pytest.raises(ConversionError, match=r"backbone \(dinat\) has no Swin patch embedding"):
    oneformer_keys({"model.pixel_level_module.encoder.embeddings.patch_embeddings.projection.0.weight": 0},
                   {"backbone_config": {"model_type": "dinat"}})
  with pytest.raises(ConversionError, match="conv_dim 32 != hidden_dim 64"):
    oneformer_keys({"model.pixel_level_module.encoder.embeddings.patch_embeddings.projection.weight":
                    np.zeros((16, 3, 4, 4)),
                    **{f"model.pixel_level_module.encoder.encoder.layers.{s}.blocks.0.{n}": np.zeros((9, s + 1))
                       for s in range(4) for n in ("layernorm_before.weight",
                                                    "attention.self.relative_position_bias_table")},
                    "model.transformer_module.queries_embedder.weight": np.zeros((6, 64)),
                    "model.pixel_level_module.decoder.input_projections.0.0.weight": np.zeros((32, 8, 1, 1))}, None)
