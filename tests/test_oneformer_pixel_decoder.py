"""OneFormer's multi-scale deformable attention and pixel decoder against transformers'
own modules (random weights, randomised GroupNorm/LayerNorm affines and level
embedding), and the bilinear sampler against torch's grid_sample, out-of-range points
included. The weights go through jaxseg.convert's OneFormer pixel-decoder table.
"""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxseg.convert import convert_state_dict
from jaxseg.convert.tables import Arch, map_tensors
from jaxseg.convert.transformers import oneformer_pixel_decoder_rows
from jaxseg.models.backbones.swin import SwinBlock, SwinTransformer
from jaxseg.models.heads.oneformer import deformable_attention as da
from jaxseg.models.heads.oneformer.pixel_decoder import PixelDecoder
from tests import torch_reference as R

transformers = pytest.importorskip("transformers", reason="the reference is transformers' OneFormer")
from transformers.models.oneformer import modeling_oneformer as M  # noqa: E402

def test_bilinear_sample_is_grid_sample_with_zero_padding():
  rng = np.random.RandomState(0)
  n, c, h, w, k = 3, 5, 6, 7, 400
  value = rng.randn(n, c, h, w).astype(np.float32)
  loc = rng.uniform(-0.3, 1.3, (n, k, 2)).astype(np.float32)  # a third of the points outside
  # and exactly on the borders, pixel centres and beyond the half-pixel margin
  edges = np.array([[0, 0], [1, 1], [0, 1], [1, 0], [0.5 / w, 0.5 / h], [1 - 0.5 / w, 1 - 0.5 / h],
                    [-0.5 / w, 0.3], [1 + 0.5 / w, 0.3], [0.3, -0.5 / h], [0.3, 1 + 0.5 / h],
                    [-1 / w, 0.5], [1 + 1 / w, 0.5]], np.float32)
  loc[:, :len(edges)] = edges
  theirs = F.grid_sample(torch.from_numpy(value), torch.from_numpy(2 * loc - 1)[:, :, None],
                         mode="bilinear", padding_mode="zeros", align_corners=False)[..., 0]
  flat = jnp.asarray(value.transpose(0, 2, 3, 1).reshape(n, h * w, c))
  ours = jax.jit(da.bilinear_sample, static_argnums=(1, 2))(flat, h, w, jnp.asarray(loc))
  R.report("bilinear_sample vs grid_sample", ours, theirs.permute(0, 2, 1).numpy())
  assert np.abs(np.asarray(ours)[:, 6:10]).max() == 0  # half a pixel beyond the border: all zero padding
  # Gradients reach the locations (through the bilinear weights) and the values.
  g_loc, g_val = jax.grad(lambda l, v: da.bilinear_sample(v, h, w, l).sum(), argnums=(0, 1))(jnp.asarray(loc), flat)
  t_loc = torch.from_numpy(2 * loc - 1).requires_grad_()
  t_val = torch.from_numpy(value).requires_grad_()
  F.grid_sample(t_val, t_loc[:, :, None], mode="bilinear", padding_mode="zeros", align_corners=False).sum().backward()
  R.report("d/d value", g_val, t_val.grad.permute(0, 2, 3, 1).reshape(n, h * w, c).numpy())
  inner = (np.abs(loc - 0.5) < 0.45).all(-1)  # random points inside: the bilinear kinks at pixel
  inner[:, :len(edges)] = False  # centres, where rounding picks one side or the other, are left out
  R.report("d/d location", np.asarray(g_loc)[inner], 2 * t_loc.grad.numpy()[inner])


SHAPES = ((3, 4), (5, 7), (9, 13))  # 1/32, 1/16, 1/8 of a 72x104 image, and odd


def torch_attention(seed, dim=32, heads=2, points=4):
  torch.manual_seed(seed)
  module = M.OneFormerPixelDecoderEncoderMultiscaleDeformableAttention(dim, heads, len(SHAPES), points)
  return R.randomize(module, seed=seed)


def test_ms_deform_attn_matches_transformers():
  ref = torch_attention(3)
  with torch.no_grad():  # offsets of several pixels: many points fall between and outside the maps
    ref.sampling_offsets.weight.mul_(3.0)
    ref.sampling_offsets.bias.mul_(3.0)
  rng = np.random.RandomState(1)
  s = sum(h * w for h, w in SHAPES)
  x = rng.randn(2, s, 32).astype(np.float32)
  pos = rng.randn(2, s, 32).astype(np.float32)
  refs = np.broadcast_to(rng.uniform(0, 1, (2, s, 1, 2)), (2, s, 3, 2)).astype(np.float32)
  shapes = torch.as_tensor(SHAPES)
  with torch.no_grad():
    theirs, _ = ref(torch.from_numpy(x), encoder_hidden_states=torch.from_numpy(x),
                    position_embeddings=torch.from_numpy(pos), reference_points=torch.from_numpy(refs),
                    spatial_shapes=shapes, spatial_shapes_list=list(SHAPES),
                    level_start_index=torch.as_tensor([0, 12, 47]))
  params = {name: {"kernel": getattr(ref, name).weight.detach().numpy().T,
                   "bias": getattr(ref, name).bias.detach().numpy()}
            for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj")}
  for remat in (False, True):
    model = da.MSDeformAttn(32, 2, 3, 4, remat=remat)
    ours = jax.jit(lambda p, q, v, r: model.apply({"params": p}, q, v, r, SHAPES))(params, x + pos, x, refs)
    R.report(f"MSDeformAttn (remat={remat})", ours, theirs.numpy())


def test_ms_deform_attn_initialisation_is_the_reference():
  init = jax.jit(lambda q, v, r: da.MSDeformAttn(32, 2, 3, 4).init(jax.random.key(0), q, v, r, SHAPES))
  ours = init(jnp.zeros((1, 5, 32)), jnp.zeros((1, 12 + 35 + 117, 32)), jnp.zeros((1, 5, 3, 2)))["params"]
  ref = M.OneFormerPixelDecoderEncoderMultiscaleDeformableAttention(32, 2, 3, 4)
  M.OneFormerPreTrainedModel._init_weights(
      M.OneFormerPreTrainedModel(transformers.OneFormerConfig()), ref)
  np.testing.assert_allclose(ours["sampling_offsets"]["bias"], ref.sampling_offsets.bias.detach().numpy(), atol=1e-6)
  for name in ("sampling_offsets", "attention_weights"):
    assert not np.asarray(ours[name]["kernel"]).any()
  assert not np.asarray(ours["attention_weights"]["bias"]).any()
  for name in ("value_proj", "output_proj"):  # xavier uniform: bound sqrt(6 / (fan_in + fan_out))
    kernel = np.asarray(ours[name]["kernel"])
    assert np.abs(kernel).max() <= np.sqrt(6 / 64) and np.abs(kernel).max() > 0.8 * np.sqrt(6 / 64)
    assert not np.asarray(ours[name]["bias"]).any()


def test_pixel_level_module_matches_transformers():
  """Swin backbone + pixel decoder on a random image, against OneFormerPixelLevelModule
  (its SwinBackbone and OneFormerPixelDecoder); the weights of both through the converter
  tables, from the keys a OneFormerForUniversalSegmentation state dict has."""
  swin_config = transformers.SwinConfig(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=4,
                                        out_features=["stage1", "stage2", "stage3", "stage4"])
  config = transformers.OneFormerConfig(backbone_config=swin_config, conv_dim=32, mask_dim=16, num_attention_heads=2,
                                        encoder_layers=2, encoder_feedforward_dim=64, dropout=0.0)
  torch.manual_seed(4)
  ref = R.randomize(M.OneFormerPixelLevelModule(config), seed=4)
  image = np.random.RandomState(2).randn(2, 72, 104, 3).astype(np.float32)  # 1/32: 3x4 (ceil-rounded)
  with torch.no_grad():
    out = ref(torch.from_numpy(image).permute(0, 3, 1, 2))

  sd = {f"model.pixel_level_module.{k}": v.numpy() for k, v in ref.state_dict().items()}
  _, backbone, _ = convert_state_dict(sd, "transformers", "oneformer-swin")
  arch = Arch("oneformer pixel decoder", oneformer_pixel_decoder_rows(), lambda sd: {},
              skip=(r"model\.pixel_level_module\.encoder\..*",))
  mapped, _ = map_tensors(sd, arch)
  params = flax.traverse_util.unflatten_dict({k: v for k, (v, _) in mapped.items()}, sep="/")["params"]
  backbone_model = SwinTransformer(width=32, depths=(2, 2, 2, 2), heads=(1, 2, 4, 8), window=4)
  decoder = PixelDecoder(dim=32, mask_dim=16, heads=2, layers=2, points=4, ffn_dim=64)
  feats = jax.eval_shape(lambda: backbone_model.init(jax.random.key(0), image[:1]))
  expected = jax.eval_shape(lambda v: decoder.init(jax.random.key(0), backbone_model.apply(v, image[:1])), feats)
  assert jax.tree.map(np.shape, params["pixel_decoder"]) == jax.tree.map(lambda s: s.shape, expected["params"])

  @jax.jit
  def forward(pb, pd, x):
    features = backbone_model.apply({"params": pb}, x)
    return features, decoder.apply({"params": pd}, features)
  features, ours = forward(backbone["params"]["backbone"], params["pixel_decoder"], jnp.asarray(image))

  nhwc = lambda t: t.permute(0, 2, 3, 1).numpy()
  for i, t in enumerate(out.encoder_features, 1):
    R.report(f"Swin c{i}", features[f"c{i}"], nhwc(t))
  for name, o, t in zip(("1/32", "1/16", "1/8"), ours["multi_scale"], out.decoder_features):
    R.report(f"pixel decoder {name}", o, nhwc(t))
  R.report("pixel decoder mask features 1/4", ours["mask_features"], nhwc(out.decoder_last_feature))


def random_variables(module, *args):
  """Random fp32 variables of `module` in the shapes its init gives (no init compiled)."""
  rng = np.random.RandomState(0)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args))
  def draw(path, s):
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return jnp.asarray(1 + 0.1 * rng.randn(*s.shape), s.dtype)
    return jnp.asarray(rng.randn(*s.shape) * (0.1 if len(s.shape) == 1 else 1 / np.sqrt(np.prod(s.shape[:-1]))),
                       s.dtype)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def test_bfloat16_compute_keeps_fp32_params_and_stays_close():
  """Compute dtype bfloat16 (the GPU/TPU setting) with fp32 parameters, in the two
  attention modules: the sampling locations and the softmaxes stay fp32 and the outputs
  follow the fp32 ones."""
  rng = np.random.RandomState(0)
  s = sum(h * w for h, w in SHAPES)
  x = jnp.asarray(rng.randn(2, s, 32), jnp.float32)
  refs = jnp.asarray(rng.uniform(0, 1, (2, s, 3, 2)), jnp.float32)
  image = jnp.asarray(rng.randn(2, 10, 14, 16), jnp.float32)
  attn = da.MSDeformAttn(32, 2, 3, 4)
  block = SwinBlock(16, 2, 4, shift=2)
  va = random_variables(attn, x, x, refs, SHAPES)
  va["params"]["sampling_offsets"]["bias"] = va["params"]["sampling_offsets"]["bias"] * 20  # a few pixels
  vb = random_variables(block, image, False)

  @jax.jit
  def run(va, vb, x, refs, image):
    return [(attn.clone(dtype=dtype).apply(va, x, x, refs, SHAPES), block.clone(dtype=dtype).apply(vb, image.astype(dtype), False))
            for dtype in (jnp.float32, jnp.bfloat16)]
  (a, b), (a16, b16) = run(va, vb, x, refs, image)
  assert a16.dtype == b16.dtype == jnp.bfloat16
  for name, ref, low in (("MSDeformAttn", a, a16), ("shifted-window Swin block", b, b16)):
    rel = float(jnp.abs(ref - low.astype(jnp.float32)).max() / jnp.abs(ref).max())
    print(f"\n[bf16 vs fp32 {name}] max abs diff relative to max |fp32| {rel:.2e}")
    assert rel < 0.05
