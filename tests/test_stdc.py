"""STDC: module arithmetic against the paper's formula, detail ground truth against
numpy (and the authors' formula away from borders and ignore regions), OHEM against
numpy, the inference graph without training-only heads, the warmup-then-poly
schedule, and the tiny config from the command line."""
import json
import math
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxseg.config import head
from jaxseg.errors import ConfigError
from jaxseg.families.semantic import segmentation_loss
from jaxseg.losses import ohem_cross_entropy, ohem_keep
from jaxseg.models.heads.stdc import detail_loss, detail_targets
from jaxseg.models.backbones.stdc import STDCClassifier, STDCModule, STDCNet
from jaxseg.models.segmentor import build_model
from jaxseg.optim import learning_rate_schedule
from tests.conftest import load_config, run_cli


def kernels(params):
  flat = flax.traverse_util.flatten_dict(params)
  return {"/".join(k[:-1]): v.shape for k, v in flat.items() if k[-1] == "kernel"}


@pytest.mark.parametrize("blocks", [3, 4, 5])
@pytest.mark.parametrize("stride", [1, 2])
def test_stdc_module_channels_and_parameter_count(blocks, stride):
  m_in, n = 48, 64
  module = STDCModule(n, stride, blocks)
  x = jnp.ones((1, 8, 8, m_in))
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))
  y = jax.eval_shape(lambda v: module.apply(v, x, train=False), variables)
  assert y.shape == (1, 8 // stride, 8 // stride, n)
  # Block widths N/2, N/4, ..., N/2^(n-1), N/2^(n-1); 1x1 first, 3x3 after.
  widths = [n // 2 ** i for i in range(1, blocks)] + [n // 2 ** (blocks - 1)]
  assert sum(widths) == n
  k = kernels(variables["params"])
  assert k["block1/conv"] == (1, 1, m_in, widths[0])
  for i in range(2, blocks + 1):
    assert k[f"block{i}/conv"] == (3, 3, widths[i - 2], widths[i - 1])
  # Paper, Sec. 3.1: S_param = M*N/2 + sum_{i=2}^{n-1} 9 * N/2^(i-1) * N/2^i
  #                            + 9 * (N/2^(n-1))^2 = NM/2 + 3N^2/2 * (1 + 1/2^(2n-3))
  formula = m_in * n / 2 + sum(9 * n / 2 ** (i - 1) * n / 2 ** i for i in range(2, blocks)) \
      + 9 * (n / 2 ** (blocks - 1)) ** 2
  assert formula == n * m_in / 2 + 1.5 * n * n * (1 + 1 / 2 ** (2 * blocks - 3))
  conv = sum(math.prod(s) for name, s in k.items() if name.startswith("block"))
  assert conv == formula
  if stride == 2:  # + the depthwise 3x3 on block 1's N/2 channels
    assert k["downsample_conv"] == (3, 3, 1, n // 2)
  else:
    assert "downsample_conv" not in k
  bn = sum(v.size for path, v in flax.traverse_util.flatten_dict(variables["params"]).items()
           if path[-1] in ("scale", "bias"))
  assert bn == 2 * n + (n if stride == 2 else 0)


def test_stride2_module_pools_block1_into_the_concatenation():
  module = STDCModule(32, 2)
  x = jax.random.normal(jax.random.key(0), (1, 6, 6, 8))

  @jax.jit
  def run():  # one compilation for both
    variables = module.init(jax.random.key(1), x, train=False)
    return module.apply(variables, x, train=False, capture_intermediates=True)

  y, state = run()
  b1 = np.asarray(state["intermediates"]["block1"]["__call__"][0])
  # 3x3/2 average pool with zero padding counted (PyTorch AvgPool2d(3, 2, 1)).
  padded = np.pad(b1, ((0, 0), (1, 1), (1, 1), (0, 0)))
  ref = np.stack([np.stack([padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].sum((1, 2)) / 9 for j in range(3)], 1)
                  for i in range(3)], 1)
  np.testing.assert_allclose(y[..., :16], ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,layers", [("stdc1", (2, 2, 2)), ("stdc2", (4, 5, 3))])
def test_stdc_backbone_strides_widths_and_classifier(name, layers):
  x = jnp.zeros((1, 64, 96, 3))
  net = STDCNet(layers, 64)
  variables = jax.eval_shape(lambda: net.init(jax.random.key(0), x))
  feats = jax.eval_shape(lambda v: net.apply(v, x), variables)
  assert {k: v.shape for k, v in feats.items()} == {
      "c1": (1, 16, 24, 64), "c2": (1, 8, 12, 256), "c3": (1, 4, 6, 512), "c4": (1, 2, 3, 1024)}
  stages = {p.split("/")[0] for p in kernels(variables["params"])}
  assert sum(s.startswith("stage3") for s in stages) == layers[0]
  assert sum(s.startswith("stage4") for s in stages) == layers[1]
  assert sum(s.startswith("stage5") for s in stages) == layers[2]
  # The ImageNet classifier's "backbone" subtree is the segmentor's backbone.
  clf = STDCClassifier(layers, 64)
  cvars = jax.eval_shape(lambda: clf.init(jax.random.key(0), x))
  assert jax.tree.map(lambda a: a.shape, cvars["params"]["backbone"]) == \
      jax.tree.map(lambda a: a.shape, variables["params"])
  assert jax.eval_shape(lambda v: clf.apply(v, x), cvars).shape == (1, 1000)
  seg = build_model(load_config(f"{name}_cityscapes"))
  svars = jax.eval_shape(lambda: seg.init(jax.random.key(0), x, train=True))
  assert jax.tree.map(lambda a: a.shape, svars["params"]["backbone"]) == \
      jax.tree.map(lambda a: a.shape, variables["params"])


def numpy_detail_targets(labels, ignore=255):
  """The definition, pixel by pixel: at stride s the sample (s*i, s*j) is an edge when
  sum over its valid in-image neighbours of (c - n) > 0.1 and it is itself valid; the
  samples are repeated to s x s blocks, fused 0.6/0.3/0.1 and thresholded at 0.1."""
  b, h, w = labels.shape
  fused = np.zeros((b, h, w), np.float32)
  for s, weight in ((1, 0.6), (2, 0.3), (4, 0.1)):
    edges = np.zeros((b, -(-h // s), -(-w // s)), np.float32)
    for n in range(b):
      for i in range(edges.shape[1]):
        for j in range(edges.shape[2]):
          y, x = s * i, s * j
          c = int(labels[n, y, x])
          if c == ignore:
            continue
          r = 0
          for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
              yy, xx = y + dy, x + dx
              if (dy or dx) and 0 <= yy < h and 0 <= xx < w and labels[n, yy, xx] != ignore:
                r += c - int(labels[n, yy, xx])
          edges[n, i, j] = r > 0.1
    fused += np.float32(weight) * edges[:, np.arange(h) // s][:, :, np.arange(w) // s]
  return ((fused > np.float32(0.1)) & (labels != ignore)).astype(np.float32)


def official_detail_targets(labels):
  """The authors' formula with PyTorch (zero-padded convs, clamp, nearest upsampling)."""
  lap = torch.tensor([[-1., -1, -1], [-1, 8, -1], [-1, -1, -1]]).reshape(1, 1, 3, 3)
  g = torch.from_numpy(labels).float()[:, None]
  maps = []
  for s in (1, 2, 4):
    t = F.conv2d(g, lap, stride=s, padding=1).clamp(min=0)
    t = F.interpolate(t, g.shape[2:], mode="nearest")
    maps.append((t > 0.1).float())
  fused = F.conv2d(torch.cat(maps, 1), torch.tensor([0.6, 0.3, 0.1]).reshape(1, 3, 1, 1))
  return (fused > 0.1).float()[:, 0].numpy()


def blocky_labels(rng, b, h, w, classes=5):
  small = rng.integers(0, classes, size=(b, h // 4 + 1, w // 4 + 1))
  labels = np.repeat(np.repeat(small, 4, 1), 4, 2)[:, :h, :w]
  noise = rng.random((b, h, w)) < 0.05  # isolated pixels: fine detail
  return np.where(noise, rng.integers(0, classes, size=(b, h, w)), labels).astype(np.int32)


def test_detail_targets_match_numpy_with_an_ignore_region():
  rng = np.random.default_rng(0)
  labels = blocky_labels(rng, 2, 30, 37)  # sizes not divisible by the strides
  labels[0, 5:17, 9:25] = 255
  labels[1, :, 30:] = 255  # crop padding on the right
  got = np.asarray(jax.jit(detail_targets)(jnp.asarray(labels)))
  np.testing.assert_array_equal(got, numpy_detail_targets(labels))
  assert 0.05 < got.mean() < 0.6 and got[labels == 255].sum() == 0


def test_detail_targets_equal_the_authors_formula_inside_the_image():
  # Without ignore pixels, away from the border (where their zero padding makes edges).
  labels = blocky_labels(np.random.default_rng(1), 2, 32, 40)
  got = np.asarray(jax.jit(detail_targets)(jnp.asarray(labels)))
  np.testing.assert_array_equal(got[:, 4:-4, 4:-4], official_detail_targets(labels)[:, 4:-4, 4:-4])


def test_ignore_region_makes_no_false_edges():
  labels = np.full((1, 32, 32), 3, np.int32)
  labels[0, 8:20, 10:22] = 255
  assert official_detail_targets(labels)[0, 4:-4, 4:-4].sum() > 0  # the authors' code finds edges
  targets = jax.jit(detail_targets)
  assert np.asarray(targets(jnp.asarray(labels))).sum() == 0
  labels[0, 24:, :] = 1  # a real boundary is still found next to the ignore region
  t = np.asarray(targets(jnp.asarray(labels)))[0]
  assert t[23].sum() > 0 and t[:22].sum() == 0


def test_detail_loss_is_bce_plus_dice_on_valid_pixels():
  rng = np.random.default_rng(2)
  labels = blocky_labels(rng, 2, 16, 16)
  labels[0, :4] = 255
  logits = rng.normal(size=(2, 16, 16, 1)).astype(np.float32)  # at label size: no resize
  t = numpy_detail_targets(labels)
  v = (labels != 255).astype(np.float64)
  x = logits[..., 0].astype(np.float64)
  p = 1 / (1 + np.exp(-x))
  bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
  bce = (bce * v).sum() / v.sum()
  pv = p * v
  dice = 1 - (2 * (pv * t).sum((1, 2)) + 1) / (pv.sum((1, 2)) + t.sum((1, 2)) + 1)
  np.testing.assert_allclose(jax.jit(detail_loss)(jnp.asarray(logits), jnp.asarray(labels)), bce + dice.mean(),
                             rtol=1e-5)


def numpy_ohem(logits, labels, thresh, min_kept, ignore=255):
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  valid = labels != ignore
  nll = -np.take_along_axis(logp, np.where(valid, labels, 0)[..., None], -1)[..., 0]
  hard = valid & (nll > -np.log(thresh))
  if hard.sum() >= min_kept:
    keep = hard
  else:  # the min_kept largest losses among the valid pixels
    order = np.argsort(-np.where(valid, nll, -1).reshape(-1), kind="stable")[:min_kept]
    keep = np.zeros(labels.size, bool)
    keep[order] = True
    keep = keep.reshape(labels.shape) & valid
  return keep, nll[keep].mean()


def test_ohem_keeps_the_right_pixels():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 4, size=(2, 32, 32)).astype(np.int32)
  labels[:, :5] = 255  # 1,728 valid pixels
  noise = rng.normal(size=(2, 32, 32, 4))
  onehot = np.eye(4)[np.where(labels == 255, 0, labels)]
  easy = rng.random((2, 32, 32, 1)) < 0.97
  cases = [  # (logits, min_kept, pixels kept)
      (noise, 100, "hard"),  # nearly all hard (p < 0.7): all hard ones, more than 100
      (noise + 8 * onehot * easy, 100, 100),  # ~3% hard: the 100 highest losses
      (noise + 8 * onehot * easy, -1, 2 * 32 * 32 // 16),  # default: B*H*W/16 = 128
      (noise + 8 * onehot * easy, 5000, 1728),  # more than the valid pixels: all of them
  ]
  keep_fn = jax.jit(ohem_keep, static_argnums=(2, 3))
  loss_fn = jax.jit(ohem_cross_entropy, static_argnums=(2, 3, 4, 5))
  for logits, min_kept, expected in cases:
    kept = 2 * 32 * 32 // 16 if min_kept == -1 else min_kept
    ref_keep, ref_loss = numpy_ohem(logits, labels, 0.7, kept)
    logits = jnp.asarray(logits, jnp.float32)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits),
                               jnp.asarray(np.where(labels == 255, 0, labels))[..., None], -1)[..., 0]
    keep = np.asarray(keep_fn(nll, jnp.asarray(labels != 255), 0.7, min_kept))
    np.testing.assert_array_equal(keep, ref_keep)
    hard = (ref_keep.sum() > 1000) if expected == "hard" else keep.sum() == expected
    assert hard, (min_kept, keep.sum())
    np.testing.assert_allclose(loss_fn(logits, jnp.asarray(labels), 255, None, 0.7, min_kept), ref_loss, rtol=1e-5)


def test_segmentation_loss_terms_and_weights():
  config = load_config("stdc1_cityscapes", "tiny")
  config.loss.weights.update(dict(aux16=0.5, aux32=0.25, detail=2.0))
  rng = np.random.default_rng(4)
  labels = jnp.asarray(blocky_labels(rng, 2, 32, 32, 6))
  outputs = {k: jnp.asarray(rng.normal(size=(2, 8, 8, c)), jnp.float32)
             for k, c in (("seg", 6), ("aux16", 6), ("aux32", 6), ("detail", 1))}
  total, terms = jax.jit(lambda o, l: segmentation_loss(o, l, config))(outputs, labels)
  assert set(terms) == {"seg", "aux16", "aux32", "detail"}
  np.testing.assert_allclose(terms["detail"], jax.jit(detail_loss)(outputs["detail"], labels), rtol=1e-6)
  np.testing.assert_allclose(terms["seg"], jax.jit(ohem_cross_entropy)(outputs["seg"], labels), rtol=1e-6)
  np.testing.assert_allclose(total, terms["seg"] + 0.5 * terms["aux16"] + 0.25 * terms["aux32"]
                             + 2.0 * terms["detail"], rtol=1e-6)
  config.loss.ohem_thresh = 1.5
  with pytest.raises(ConfigError, match="loss.ohem_thresh"):
    segmentation_loss(outputs, labels, config)


def conv_count(jaxpr):
  return str(jaxpr).count("conv_general_dilated")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_inference_graph_has_no_auxiliary_or_detail_ops(dtype, monkeypatch):
  monkeypatch.setenv("JAXSEG_POINTWISE_CONV", "xla")  # every kernel one convolution (CPU makes 1x1s matmuls
  monkeypatch.setenv("JAXSEG_DEPTHWISE_CONV", "xla")  # and depthwise ones nine slices)
  config = load_config("stdc1_cityscapes", "tiny")
  config.model.dtype = dtype
  model = build_model(config)
  x = jnp.zeros((1, 64, 64, 3))
  variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, x, train=True))
  head = variables["params"]["decode_head"]
  assert {"detail_head", "aux16_head", "aux32_head"} <= set(head)
  # Inference runs with those parameters removed: it never reads them ...
  pruned = {c: {**v, "decode_head": {k: h for k, h in v["decode_head"].items()
                                     if k not in ("detail_head", "aux16_head", "aux32_head")}}
            for c, v in variables.items()}
  out = jax.eval_shape(lambda v: model.apply(v, x, train=False), pruned)
  assert set(out) == {"seg"} and out["seg"].dtype == jnp.dtype(dtype)
  # ... and its graph has one convolution per remaining kernel, none of the heads'.
  n_kernels = lambda p: len(kernels(p))
  eval_jaxpr = jax.make_jaxpr(lambda v: model.apply(v, x, train=False))(variables)
  assert conv_count(eval_jaxpr) == n_kernels(pruned["params"])
  train_jaxpr = jax.make_jaxpr(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables)
  assert conv_count(train_jaxpr) == n_kernels(variables["params"]) > conv_count(eval_jaxpr)
  if dtype == "bfloat16":  # compute in bf16, params stay fp32
    assert "bf16" in str(eval_jaxpr) and all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))


def test_stdc_config_errors_name_the_key():
  config = load_config("stdc1_cityscapes", "tiny")
  config.model.backbone.name = "stdc3"
  with pytest.raises(ConfigError, match="model.backbone.name"):
    build_model(config)
  config = load_config("stdc2_cityscapes", "tiny")
  config.model.head = head("aspp")
  with pytest.raises(ConfigError, match="model.head.name"):
    build_model(config)
  config = load_config("stdc1_cityscapes")
  config.model.backbone.output_stride = 8
  with pytest.raises(ConfigError, match="output_stride"):
    build_model(config)


def test_exponential_warmup_then_poly_as_the_authors_code():
  # BiSeNet/STDC code: lr = 1e-5 * (lr0 / 1e-5) ** (it / W) for it <= W, then
  # lr0 * (1 - (it - W) / (T - W)) ** 0.9.
  o = load_config("stdc1_cityscapes").optim
  total = 60000
  lr = learning_rate_schedule(o, total)

  def official(it, lr0=0.01, start=1e-5, warm=1000):
    if it <= warm:
      return start * (lr0 / start) ** (it / warm)
    return lr0 * (1 - (it - warm) / (total - warm)) ** 0.9

  for it in (0, 1, 500, 999, 1000, 1001, 30000, 59999, 60000):
    np.testing.assert_allclose(lr(it), official(it), rtol=2e-5, atol=1e-9)  # float32 steps
  o.warmup_steps = total
  with pytest.raises(ConfigError, match="optim.warmup_steps"):
    learning_rate_schedule(o, total)


def test_tiny_config_trains_and_evaluates_from_the_cli(data_dir, tmp_path):
  out = run_cli("--config", "configs/stdc1_cityscapes.py:tiny", "--workdir", str(tmp_path))
  assert out.returncode == 0, out.stderr[-3000:]
  log = [json.loads(l) for l in open(os.path.join(tmp_path, "train_log.jsonl"))]
  assert {"loss_seg", "loss_aux16", "loss_aux32", "loss_detail"} <= set(log[-1])
  assert all(np.isfinite(r["loss"]) for r in log)
  metrics = [json.loads(l) for l in open(os.path.join(tmp_path, "metrics.jsonl"))]
  assert metrics[-1]["step"] == 4 and 0 <= metrics[-1]["miou"] <= 1
  assert "stdc STDC1" in out.stdout


def test_heads_train_at_ten_times_the_context_path_lr():
  """The authors' code: FFM and every output head at lr x10; backbone, ARMs and the
  global context at x1."""
  from jaxseg.optim import lr_multipliers
  config = load_config("stdc1_cityscapes", "tiny")
  model = build_model(config)
  params = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                                             jnp.zeros((1, 64, 64, 3)), train=True))["params"]
  mults = lr_multipliers(params, config.optim)
  for name in ("ffm", "seg_head", "aux16_head", "aux32_head", "detail_head"):
    assert set(jax.tree.leaves(mults["decode_head"][name])) == {10.0}, name
  for name in ("arm16", "arm32", "global_context", "up16", "up32"):
    assert set(jax.tree.leaves(mults["decode_head"][name])) == {1.0}, name
  assert set(jax.tree.leaves(mults["backbone"])) == {1.0}
