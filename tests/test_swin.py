"""Swin Transformer backbone: transformers' SwinBackbone (random weights, randomised
LayerNorm affines and relative position bias tables) converted with python -m
jaxseg.convert computes the same four stage features, on an input whose size is a
multiple of neither the patch nor any stage's window (so every padding path runs).
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxseg.api import workdir_config
from jaxseg.convert import ConversionError, convert_state_dict
from jaxseg.convert.__main__ import main as convert_main
from jaxseg.convert.init_from import read_variables
from jaxseg.models.backbones import swin
from jaxseg.models.segmentor import build_model
from tests import torch_reference as R

transformers = pytest.importorskip("transformers", reason="the reference is transformers' Swin")

TOL = 1e-4
TINY = dict(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=4)
X = np.random.RandomState(0).randn(2, 60, 76, 3).astype(np.float32)  # stages 15x19, 8x10, 4x5, 2x3


def tiny_backbone(seed):
  config = transformers.SwinConfig(**TINY, out_features=["stage1", "stage2", "stage3", "stage4"])
  torch.manual_seed(seed)
  return R.randomize(transformers.SwinBackbone(config), seed=seed)


def features_of(out, x):
  config = workdir_config(out)
  backbone = build_model(config).backbone
  params = read_variables(out)["params"]["backbone"]
  return jax.jit(lambda p, x: backbone.apply({"params": p}, x))(params, jnp.asarray(x))


def test_swin_backbone_matches_transformers(tmp_path):
  ref = tiny_backbone(seed=1)
  path = str(tmp_path / "swin.pth")
  torch.save(ref.state_dict(), path)  # transformers >= 5 key names ("swin.encoder...attention.q_proj")
  out = str(tmp_path / "out")
  assert convert_main(["--from", "transformers", "--arch", "swin", "--input", path, "--output", out]) == 0
  config = workdir_config(out).model.backbone
  assert (config.name, config.width, tuple(config.swin_depths), tuple(config.swin_heads), config.swin_window) \
      == ("swin", 32, (2, 2, 2, 2), (1, 2, 4, 8), 4)

  with torch.no_grad():
    theirs = [f.permute(0, 2, 3, 1).numpy() for f in ref(torch.from_numpy(X).permute(0, 3, 1, 2)).feature_maps]
  ours = features_of(out, X)
  for i, t in enumerate(theirs, 1):
    o = np.asarray(ours[f"c{i}"])
    assert o.shape == t.shape, (i, o.shape, t.shape)
    diff = np.abs(o - t).max()
    print(f"\n[swin c{i} {o.shape[1:3]}] max abs diff {diff:.2e}, max rel {diff / np.abs(t).max():.2e}")
    assert diff <= TOL * max(1.0, np.abs(t).max())


def test_swin_key_generations_and_classification_checkpoints_convert_alike(tmp_path):
  """The hub files' names (attention.self.query, intermediate.dense, no "swin." in a
  SwinBackbone), a SwinForImageClassification (its head and final norm skipped, the stage
  norms new) and a OneFormer checkpoint's backbone all give the same variables."""
  ref = tiny_backbone(seed=2)
  sd = {k: v.numpy() for k, v in ref.state_dict().items()}
  legacy = {}
  for k, v in sd.items():
    k = k.removeprefix("swin.")
    for new, old in (("attention.q_proj", "attention.self.query"), ("attention.k_proj", "attention.self.key"),
                     ("attention.v_proj", "attention.self.value"), ("attention.o_proj", "attention.output.dense"),
                     ("attention.relative_position_bias.", "attention.self."), ("mlp.fc1", "intermediate.dense"),
                     ("mlp.fc2", "output.dense")):
      k = k.replace(new, old)
    legacy[k] = v
  legacy["encoder.layers.0.blocks.0.attention.self.relative_position_index"] = np.zeros(256, np.int64)
  _, base, _ = convert_state_dict(sd, "transformers", "swin")
  _, old, report = convert_state_dict(legacy, "transformers", "microsoft/swin-tiny-patch4-window7-224")
  assert "encoder.layers.0.blocks.0.attention.self.relative_position_index" in report["skipped"]
  oneformer = {f"model.pixel_level_module.encoder.{k}": v for k, v in sd.items()}
  oneformer["model.transformer_module.decoder.query_embed.weight"] = np.zeros((3, 32), np.float32)
  _, of, report = convert_state_dict(oneformer, "transformers", "shi-labs/oneformer_ade20k_swin_tiny")
  assert report["skipped"] == ["model.transformer_module.decoder.query_embed.weight",
                               "swin.layernorm.bias", "swin.layernorm.weight"]  # SwinModel's final norm
  classifier = {f"swin.{k}": v for k, v in legacy.items() if not k.startswith("hidden_states_norms")}
  classifier["classifier.weight"] = np.zeros((10, 256), np.float32)
  _, cls, _ = convert_state_dict(classifier, "transformers", "swin")
  flat = lambda t: {"/".join(map(str, p)): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(t)}
  base, old, of, cls = flat(base), flat(old), flat(of), flat(cls)
  assert sorted(base) == sorted(old) == sorted(of) == sorted(cls)
  for k in base:
    np.testing.assert_array_equal(old[k], base[k])
    np.testing.assert_array_equal(of[k], base[k])
    if "'norm" in k and "block" not in k and "merge" not in k:  # the stage output norms: LayerNorm init
      np.testing.assert_array_equal(cls[k], np.ones_like(base[k]) if "scale" in k else np.zeros_like(base[k]))
    else:
      np.testing.assert_array_equal(cls[k], base[k])

  bad = dict(sd, **{"swin.embeddings.patch_embeddings.projection.weight": np.zeros((32, 3, 2, 2), np.float32)})
  with pytest.raises(ConversionError, match="patch size 2"):
    convert_state_dict(bad, "transformers", "swin")


def timm_layout(sd, new_merging):
  """transformers' SwinBackbone state dict under timm's names (timm.models.swin_transformer):
  q, k, v fused into one qkv (C -> 3C); the merging under the next stage (timm >= 0.9) or
  its own (the original release)."""
  out = {}
  for k, v in sd.items():
    m = re.fullmatch(r"swin\.encoder\.layers\.(\d)\.blocks\.(\d)\.(.*)", k)
    if m:
      s, b, rest = m.groups()
      if rest.startswith(("attention.k_proj", "attention.v_proj")):
        continue
      if rest.startswith("attention.q_proj"):
        leaf = rest.rsplit(".", 1)[1]
        parts = [sd[f"swin.encoder.layers.{s}.blocks.{b}.attention.{n}_proj.{leaf}"] for n in "qkv"]
        out[f"layers.{s}.blocks.{b}.attn.qkv.{leaf}"] = np.concatenate(parts, 0)
        continue
      for new, old in (("layernorm_before", "norm1"), ("layernorm_after", "norm2"), ("attention.o_proj", "attn.proj"),
                       ("attention.relative_position_bias.", "attn.")):
        rest = rest.replace(new, old)
      out[f"layers.{s}.blocks.{b}.{rest}"] = v
      continue
    m = re.fullmatch(r"swin\.encoder\.layers\.(\d)\.downsample\.(.*)", k)
    if m:
      out[f"layers.{int(m.group(1)) + new_merging}.downsample.{m.group(2)}"] = v
      continue
    k = k.replace("swin.embeddings.patch_embeddings.projection", "patch_embed.proj")
    k = k.replace("swin.embeddings.norm", "patch_embed.norm").replace("swin.layernorm", "norm")
    out[k] = v
  return out


def test_timm_microsoft_and_authors_swin_keys_convert_to_the_same_variables():
  ref = tiny_backbone(seed=3)
  sd = {k: v.numpy() for k, v in ref.state_dict().items()}
  flat = lambda t: {"/".join(map(str, p)): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(t)}
  _, expected, _ = convert_state_dict(sd, "transformers", "swin")
  expected = flat(expected)
  norms = {k: v for k, v in sd.items() if k.startswith("hidden_states_norms")}
  layout = {k: v for k, v in timm_layout(sd, True).items() if not k.startswith("hidden_states_norms")}
  layout["head.fc.weight"] = np.zeros((10, 256), np.float32)
  # timm >= 0.9 (an ImageNet classifier: new stage norms), the Microsoft release (buffers
  # stored), and the authors' OneFormer checkpoint (backbone.*, norm0..norm3, a head)
  original = {k: v for k, v in timm_layout(sd, False).items() if not k.startswith("hidden_states_norms")}
  original["layers.0.blocks.1.attn_mask"] = np.zeros((16, 16, 16), np.float32)
  original["layers.0.blocks.0.attn.relative_position_index"] = np.zeros((16, 16), np.int64)
  d2 = {f"backbone.{k}": v for k, v in original.items() if not k.startswith("norm.")}
  d2.update({f"backbone.norm{int(k[len('hidden_states_norms.stage')]) - 1}.{k.rsplit('.', 1)[1]}": v
             for k, v in norms.items()})
  d2["sem_seg_head.predictor.class_embed.weight"] = np.zeros((3, 32), np.float32)
  for name, state, new_norms in (("swin_tiny_patch4_window7_224.ms_in1k", layout, True),
                                 ("swin_large_patch4_window12_384", original, True), ("swin_l_oneformer", d2, False)):
    config, got, report = convert_state_dict(state, "timm", name)
    assert tuple(config.model.backbone.swin_heads) == (1, 2, 4, 8) and config.model.backbone.swin_window == 4
    got = flat(got)
    assert sorted(got) == sorted(expected), name
    for k in expected:
      if new_norms and "'norm" in k and "block" not in k and "merge" not in k:
        np.testing.assert_array_equal(got[k], np.ones_like(got[k]) if "scale" in k else np.zeros_like(got[k]))
      else:
        np.testing.assert_array_equal(got[k], expected[k], err_msg=f"{name}: {k}")


def test_shifted_window_mask_and_relative_index():
  """The mask separates exactly the tokens of different regions after the roll; the bias
  index of (i, j) is determined by their (dy, dx)."""
  m, s = 4, 2
  mask = swin.shifted_window_mask(8, 8, m, s)
  assert mask.shape == (4, 16, 16)
  assert (mask[0] == 0).all()  # the top-left window holds one region
  rows = np.arange(8)
  region = (rows >= 4).astype(int) + (rows >= 6)
  label = region[:, None] * 3 + region[None, :]
  last = label[4:, 4:].reshape(-1)  # the bottom-right window: four regions
  np.testing.assert_array_equal(mask[3] == 0, last[:, None] == last[None, :])
  index = swin.relative_position_index(m)
  yx = np.stack(np.meshgrid(np.arange(m), np.arange(m), indexing="ij"), -1).reshape(-1, 2)
  d = yx[:, None] - yx[None, :]
  same = (d[:, :, None, None] == d[None, None]).all(-1)
  np.testing.assert_array_equal(same, index[:, :, None, None] == index[None, None])
  assert index.min() == 0 and index.max() == (2 * m - 1) ** 2 - 1


def test_drop_path_drops_whole_samples_linearly_over_depth():
  x = jnp.ones((512, 3, 3, 4))
  y = swin.DropPath(0.25).apply({}, x, train=True, rngs={"dropout": jax.random.key(0)})
  per_sample = np.asarray(y).reshape(512, -1)
  assert set(np.unique(per_sample).tolist()) <= {0.0, float(np.float32(1 / 0.75))}
  assert (per_sample.min(1) == per_sample.max(1)).all()  # one decision per sample
  assert abs((per_sample[:, 0] == 0).mean() - 0.25) < 0.06
  np.testing.assert_array_equal(swin.DropPath(0.25).apply({}, x, train=False), x)
  # Linear over all blocks as the reference: rate * i / (blocks - 1) (transformers' SwinEncoder dpr)
  depths, rate = (2, 2, 6, 2), 0.3
  expected = [rate * i / (sum(depths) - 1) for i in range(sum(depths))]
  np.testing.assert_allclose(np.concatenate(swin.drop_path_rates(depths, rate)), expected, rtol=1e-12)
  assert [len(r) for r in swin.drop_path_rates(depths, rate)] == list(depths)
