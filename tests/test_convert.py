"""jaxseg.convert: PyTorch reference models with random weights (and random BN running
statistics), converted, must compute the same logits / features (max abs difference
<= 1e-4 in fp32). torchvision does not install here, so its models are rebuilt in
tests/torch_reference.py with their exact key names and shapes; the transformers
reference is the real ResNetModel. mmsegmentation's models are checked against the
real package in tests/test_convert_mmseg.py.

The networks are tiny (width 8; "resnet14" = one bottleneck per stage, a depth the
converter accepts like any other) because the key tables are per block: only the
torchvision ResNet-50 test runs a real depth.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jaxseg
from jaxseg import sharding, train
from jaxseg.api import Segmenter, workdir_config
from jaxseg.config import IMAGENET_MEAN, IMAGENET_STD, head
from jaxseg.convert import ConversionError
from jaxseg.convert.__main__ import main as convert_main
from jaxseg.convert.init_from import merge, read_variables
from jaxseg.convert.io import read_state_dict
from jaxseg.errors import NoCheckpointError
from jaxseg.models.layers import resize
from jaxseg.models.segmentor import build_model
from tests import torch_reference as R
from tests.conftest import load_config

TOL = 1e-4
IMAGES = np.random.RandomState(0).randint(0, 256, (2, 67, 61, 3)).astype(np.uint8)  # odd sizes on purpose


def torch_input(images):
  x = (images.astype(np.float32) - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
  return torch.from_numpy(x).permute(0, 3, 1, 2)


def nhwc(t):
  return t.detach().permute(0, 2, 3, 1).numpy()


def save(obj, path):
  torch.save(obj, path)
  return str(path)


def run_convert(tmp_path, source, arch, path, name="out"):
  out = str(tmp_path / name)
  assert convert_main(["--from", source, "--arch", arch, "--input", path, "--output", out]) == 0
  return out


def backbone_features(out, images):
  """c1..c4 of the converted backbone in OUT, as init_from would load it."""
  config = workdir_config(out)
  variables = read_variables(out)
  backbone = build_model(config).backbone
  x = (jnp.asarray(images, jnp.float32) - jnp.float32(IMAGENET_MEAN)) / jnp.float32(IMAGENET_STD)
  feats = jax.jit(lambda v, x: backbone.apply(v, x, train=False))(
      {"params": variables["params"]["backbone"], "batch_stats": variables["batch_stats"]["backbone"]}, x)
  return [np.asarray(feats[f"c{i}"]) for i in range(1, 5)]


def max_diff(ours, theirs):
  assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
  return float(np.abs(ours - theirs).max())


def report(name, diff, scale):
  print(f"\n[{name}] max abs diff {diff:.2e} (reference max |value| {scale:.2f})")


# ------------------------------------------------------------------- align_corners
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(17, 9), (3, 5), (1, 1)])
def test_resize_matches_torch_interpolate(align_corners, size):
  x = np.random.RandomState(1).randn(2, 7, 6, 3).astype(np.float32)
  ours = np.asarray(resize(jnp.asarray(x), size, align_corners=align_corners))
  theirs = nhwc(F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=size, mode="bilinear",
                              align_corners=align_corners))
  assert max_diff(ours, theirs) < 1e-5


# --------------------------------------------------------- whole segmentation models
SEGMENTATION = {
    # id: (source, arch, reference builder)
    "torchvision-deeplabv3": ("torchvision", "deeplabv3_resnet14",
                              lambda: R.TvSegmentation("deeplabv3", 14, 8, 5, aspp_channels=16)),
    "torchvision-fcn": ("torchvision", "fcn_resnet14", lambda: R.TvSegmentation("fcn", 14, 8, 5)),
}


@pytest.mark.parametrize("name", list(SEGMENTATION))
def test_segmentation_model_logits_match(name, tmp_path):
  """Through the files and jaxseg.load for torchvision-deeplabv3; in memory (the same
  conversion, without the orbax round trip) for the others, to keep the tests fast."""
  source, arch, build = SEGMENTATION[name]
  ref = R.randomize(build(), seed=len(name))
  sd = ref.state_dict()
  path = save(sd, tmp_path / "ref.pth")
  if name == "torchvision-deeplabv3":
    out = run_convert(tmp_path, source, arch, path)
    assert sorted(os.listdir(out)) == ["checkpoints", "config.json", "converted.json"]
    seg = jaxseg.load(out)  # the converted dir is a work dir: what eval/predict read
    converted = json.load(open(os.path.join(out, "converted.json")))
  else:
    config, variables, converted = jaxseg.convert.convert_state_dict(read_state_dict(path), source, arch)
    seg = Segmenter(config, variables, 0, sharding.make_mesh())
  ours = seg.logits(IMAGES)
  with torch.no_grad():
    theirs = nhwc(ref(torch_input(IMAGES)))
  diff = max_diff(ours, theirs)
  report(name, diff, np.abs(theirs).max())
  assert np.abs(theirs).max() > 0.1  # the comparison is not between near-zero maps
  assert diff <= TOL
  # Every tensor is accounted for: converted, or a BN counter.
  assert set(converted["loaded"]) | set(converted["skipped"]) == set(sd)
  assert all(k.endswith("num_batches_tracked") for k in converted["skipped"])


# ----------------------------------------------------------------------- backbones
def compare_backbone(out, ref_features, name):
  with torch.no_grad():
    theirs = [nhwc(f) for f in ref_features(torch_input(IMAGES))]
  ours = backbone_features(out, IMAGES)
  diff = max(max_diff(a, b) for a, b in zip(ours, theirs))
  report(name, diff, max(np.abs(t).max() for t in theirs))
  assert diff <= TOL


def test_torchvision_resnet50_backbone(tmp_path):
  ref = R.randomize(R.ResNet(50, 8, num_classes=10), seed=3)
  with torch.no_grad():  # smaller residual branches keep 16 blocks' activations O(1), as trained nets are
    for name, p in ref.named_parameters():
      if name.endswith("bn3.weight"):
        p.mul_(0.25)
  out = run_convert(tmp_path, "torchvision", "resnet50", save(ref.state_dict(), tmp_path / "r50.pth"))
  converted = json.load(open(os.path.join(out, "converted.json")))
  assert converted["backbone_only"] and {"fc.weight", "fc.bias"} <= set(converted["skipped"])
  compare_backbone(out, ref.features, "torchvision-resnet50")


def write_safetensors(sd, path):
  """With the safetensors package when installed, else by the format's definition."""
  try:
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
  except ImportError:
    header, chunks, offset = {}, [], 0
    for k, v in sd.items():
      a = v.numpy()
      dtype = {np.float32: "F32", np.int64: "I64"}[a.dtype.type]
      header[k] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
      chunks.append(a.tobytes())
      offset += a.nbytes
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
      f.write(len(raw).to_bytes(8, "little") + raw + b"".join(chunks))
  return str(path)


def test_safetensors_reader_dtypes(tmp_path):
  save_file = pytest.importorskip("safetensors.torch").save_file
  tensors = {"a": torch.randn(3, 4), "b": torch.randn(2, 5).to(torch.bfloat16), "c": torch.randn(7).half(),
             "d": torch.arange(6).reshape(2, 3)}
  save_file(tensors, str(tmp_path / "t.safetensors"))
  got = read_state_dict(str(tmp_path / "t.safetensors"))
  for k, v in tensors.items():
    np.testing.assert_array_equal(got[k], v.float().numpy() if v.is_floating_point() else v.numpy())


def test_timm_deep_stem_resnet_from_safetensors(tmp_path):
  ref = R.randomize(R.TimmResNetC(14, 8), seed=5)
  path = write_safetensors(ref.state_dict(), tmp_path / "model.safetensors")
  out = run_convert(tmp_path, "timm", "resnet14c.test_tag", path)
  compare_backbone(out, ref.features, "timm-resnet14c")


def test_transformers_resnet_backbone(tmp_path):
  transformers = pytest.importorskip("transformers", reason="the reference is the real ResNetModel")
  config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1],
                                     layer_type="bottleneck")
  torch.manual_seed(0)
  ref = R.randomize(transformers.ResNetForImageClassification(config), seed=6)
  ref.save_pretrained(tmp_path / "hf")  # model.safetensors, keys "resnet.embedder..."
  out = run_convert(tmp_path, "transformers", "resnet-14", str(tmp_path / "hf" / "model.safetensors"))

  def features(x):
    return ref.resnet(x, output_hidden_states=True).hidden_states[1:]

  compare_backbone(out, features, "transformers-resnet")


# ------------------------------------------------------------- whole classifiers
def classifier_logits(out, images):
  """The logits of the converted classifier in OUT (jaxseg.pssl's ensemble member)."""
  from jaxseg.pssl.generate import load_member
  model, variables, _ = load_member(out)
  x = (jnp.asarray(images, jnp.float32) - jnp.float32(IMAGENET_MEAN)) / jnp.float32(IMAGENET_STD)
  return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))


def test_transformers_resnet_classifier_with_its_fc(tmp_path):
  transformers = pytest.importorskip("transformers", reason="the reference is the real ResNetForImageClassification")
  config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1],
                                     layer_type="bottleneck", num_labels=10)
  torch.manual_seed(0)
  ref = R.randomize(transformers.ResNetForImageClassification(config), seed=7)
  ref.save_pretrained(tmp_path / "hf")
  path = str(tmp_path / "hf" / "model.safetensors")
  out = str(tmp_path / "out")
  assert convert_main(["--from", "transformers", "--arch", "resnet-14", "--classifier", "--input", path,
                       "--output", out]) == 0
  converted = json.load(open(os.path.join(out, "converted.json")))
  assert converted["classifier"] and all(k.endswith("num_batches_tracked") for k in converted["skipped"])
  assert converted["loaded"]["classifier.1.weight"] == "params/fc/kernel"
  with torch.no_grad():
    theirs = ref(torch_input(IMAGES)).logits.numpy()
  diff = max_diff(classifier_logits(out, IMAGES), theirs)
  report("transformers-resnet-classifier", diff, float(np.abs(theirs).max()))
  assert diff <= TOL


def test_torchvision_resnet_classifier_with_its_fc(tmp_path):
  ref = R.randomize(R.ResNet(14, 8, num_classes=12), seed=9)
  out = str(tmp_path / "out")
  assert convert_main(["--from", "torchvision", "--arch", "resnet14", "--classifier", "--input",
                       save(ref.state_dict(), tmp_path / "r14.pth"), "--output", out]) == 0
  with torch.no_grad():
    theirs = ref.fc(ref.features(torch_input(IMAGES))[-1].mean((2, 3))).numpy()
  diff = max_diff(classifier_logits(out, IMAGES), theirs)
  report("torchvision-resnet-classifier", diff, float(np.abs(theirs).max()))
  assert diff <= TOL
  assert convert_main(["--from", "mmseg", "--arch", "resnet14_v1c", "--classifier", "--input",
                       str(tmp_path / "r14.pth"), "--output", str(tmp_path / "no")]) == 2


# ------------------------------------------------------------------------ mismatch
def test_mismatch_names_the_key_and_both_shapes_and_writes_nothing(tmp_path, capsys):
  sd = R.randomize(R.ResNet(14, 8)).state_dict()
  bad = dict(sd, **{"layer2.0.conv2.weight": torch.zeros(16, 8, 3, 3)})
  out = tmp_path / "out"
  assert convert_main(["--from", "torchvision", "--arch", "resnet14", "--input",
                       save(bad, tmp_path / "bad.pth"), "--output", str(out)]) == 2
  err = capsys.readouterr().err
  assert "layer2.0.conv2.weight" in err and "(3, 3, 8, 16)" in err and "(3, 3, 16, 16)" in err
  assert not out.exists() and sorted(os.listdir(tmp_path)) == ["bad.pth"]  # no partial or temporary dir
  # A backbone is not a model to evaluate: jaxseg.load says what to do with it.
  backbone = run_convert(tmp_path, "torchvision", "resnet14", save(sd, tmp_path / "good.pth"), "backbone")
  with pytest.raises(NoCheckpointError, match="init_from"):
    jaxseg.load(backbone)

  good = str(tmp_path / "good.pth")
  with pytest.raises(ConversionError, match=r"lacks .* tensor.*layer1_1"):  # wrong arch: ResNet-50 has more blocks
    jaxseg.convert.convert("torchvision", "resnet50", good, str(out))
  with pytest.raises(ConversionError, match=r"extra\.weight \(3,\)"):
    jaxseg.convert.convert("torchvision", "resnet14", save(dict(sd, **{"extra.weight": torch.zeros(3)}),
                                                              tmp_path / "x.pth"), str(out))
  with pytest.raises(ConversionError, match="unknown --arch"):
    jaxseg.convert.convert("mmseg", "segformer_b0", good, str(out))
  assert not out.exists()


# ------------------------------------------------------------------------ init_from
def test_init_from_reports_keys_and_training_starts_from_the_loaded_weights(data_dir, tmp_path):
  ref = R.randomize(R.ResNet(10, 8), seed=7)
  src = run_convert(tmp_path, "torchvision", "resnet10", save(ref.state_dict(), tmp_path / "r10.pth"))
  config = load_config("quickstart", "tiny")  # ResNet-10 at width 8
  config.model.backbone.stem = "7x7"
  config.model.update(dict(init_from=src, init_from_prefix="backbone"))
  config.model.head, config.model.aux_heads = head("fcn"), {}  # assigned: update() would merge the dicts
  config.optim.lr = 0.0  # the one step taken leaves the parameters as they started
  config.train.update(dict(steps=2, log_every=1, eval_every=100, ckpt_every=100))
  workdir = tmp_path / "run"
  state = train.train_and_evaluate(config, str(workdir), stop_after=1)
  loaded = read_variables(src)
  for got, want in zip(jax.tree.leaves(state.params["backbone"]), jax.tree.leaves(loaded["params"]["backbone"])):
    np.testing.assert_array_equal(np.asarray(got), want)
  rep = json.load(open(workdir / "init_from.json"))
  assert len(rep["loaded"]) == len(jax.tree.leaves(loaded)) and not rep["skipped"] and not rep["missing"]

  # Without a prefix the heads are reported missing; from a whole model outside the
  # prefix, skipped; a shape disagreement is an error with both shapes.
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  _, rep = merge(variables, loaded, "")
  assert rep["missing"] and all(k.split("/")[1] == "decode_head" for k in rep["missing"])
  _, rep = merge(variables, {"params": {**loaded["params"], "decode_head": {"x": np.zeros(3)}},
                             "batch_stats": loaded["batch_stats"]}, "backbone")
  assert rep["skipped"] == ["params/decode_head/x (outside init_from_prefix 'backbone')"]
  _, rep = merge(variables, {"params": {**loaded["params"], "decode_head": {"x": np.zeros(3)}},
                             "batch_stats": loaded["batch_stats"]}, "backbone.stem, decode_head")
  assert sorted(rep["loaded"]) == ["batch_stats/backbone/stem/bn/mean", "batch_stats/backbone/stem/bn/var",
                                   "params/backbone/stem/bn/bias", "params/backbone/stem/bn/scale",
                                   "params/backbone/stem/conv/kernel"]
  assert "params/decode_head/x (not in this model)" in rep["skipped"]
  wrong = jax.tree.map(lambda a: a, loaded)
  wrong["params"]["backbone"]["stem"]["conv"]["kernel"] = np.zeros((3, 3, 3, 8), np.float32)
  with pytest.raises(Exception, match=r"backbone/stem/conv/kernel has shape \(3, 3, 3, 8\).*\(7, 7, 3, 8\)"):
    merge(variables, wrong, "backbone")
