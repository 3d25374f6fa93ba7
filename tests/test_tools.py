"""jaxseg.tools and the training outputs around them, on one tiny trained work dir:
TensorBoard events, the FINAL line, visualize, browse_dataset, flops, benchmark,
print_config."""
import contextlib
import glob
import io
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from jaxseg import tensorboard
from jaxseg.tools import draw
from tests.conftest import ROOT, load_config


def tool(name, *args):
  out = subprocess.run([sys.executable, "-m", f"jaxseg.tools.{name}", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def read_jsonl(path):
  return [json.loads(line) for line in open(path)]


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
  """(workdir, stdout) of quickstart:tiny, evaluated at steps 2 and 4, with
  TensorBoard prediction images."""
  from jaxseg import train
  config = load_config("quickstart", "tiny")
  config.train.eval_every = 2
  config.train.tensorboard_images = 2
  workdir = str(tmp_path_factory.mktemp("tools_run"))
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    train.train_and_evaluate(config, workdir)
  return workdir, stdout.getvalue()


def distinct_colors(image):
  return len(np.unique(image.reshape(-1, image.shape[-1]), axis=0))


def test_final_line_names_the_best_checkpoint(trained):
  workdir, stdout = trained
  evals = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  assert [e["step"] for e in evals] == [2, 4]
  best = max(evals, key=lambda e: e["miou"])
  path = os.path.join(os.path.abspath(workdir), "checkpoints", str(best["step"]))
  assert os.path.isdir(path)
  assert stdout.strip().splitlines()[-1] == f"FINAL best mIoU {best['miou']:.4f} at step {best['step']}: {path}"
  assert "background" in stdout and "img/s" in stdout and "ETA" in stdout


def read_tensorboard(logdir):
  """TensorBoard's own reader over `logdir`: ({(step, tag): value}, {(step, tag): PNG bytes}).
  Its `notf` switch keeps TensorFlow out of this process (the reader's stub decodes
  the records)."""
  sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(
      logdir, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0})
  events.Reload()
  tags = events.Tags()
  scalars = {(e.step, tag): e.value for tag in tags["scalars"] for e in events.Scalars(tag)}
  images = {(e.step, tag): e.encoded_image_string for tag in tags["images"] for e in events.Images(tag)}
  return scalars, images


def test_tensorboard_events_parse_back(trained):
  workdir, _ = trained
  assert len(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))) == 1
  scalars, images = read_tensorboard(os.path.join(workdir, "tensorboard"))
  for r in read_jsonl(os.path.join(workdir, "train_log.jsonl")):
    for key in ("loss", "loss_seg", "loss_aux", "lr", "images_per_sec"):
      assert scalars[(r["step"], f"train/{key}")] == pytest.approx(r[key], rel=1e-6)
  names = ["background", "disk", "square", "triangle", "ring", "cross"]
  for e in read_jsonl(os.path.join(workdir, "metrics.jsonl")):
    assert scalars[(e["step"], "eval/miou")] == pytest.approx(e["miou"], rel=1e-6)
    for name, iou in zip(names, e["per_class_iou"]):
      if iou is not None:
        assert scalars[(e["step"], f"eval/iou/{name}")] == pytest.approx(iou, rel=1e-6)
  assert set(images) == {(s, f"eval/prediction_{i}") for s in (2, 4) for i in range(2)}
  png = np.asarray(Image.open(io.BytesIO(images[(4, "eval/prediction_0")])))
  assert png.shape[1] == 4 + 4 * (160 + 4) and png.shape[0] > 160 and distinct_colors(png) > 8


def test_tensorboard_write_failure_never_ends_a_run(tmp_path, capsys):
  writer = tensorboard.Writer(str(tmp_path / "tb"))
  writer.scalars(1, {"loss": 0.5})
  writer.writer._py_recordio_writer._writer = open("/dev/full", "wb")  # every flush: ENOSPC
  writer.scalars(2, {"loss": 0.25})
  writer.image(2, "eval/prediction_0", np.zeros((4, 4, 3), np.uint8))
  writer.close()
  assert capsys.readouterr().out.count("WARNING: cannot write TensorBoard events") == 1
  scalars, _ = read_tensorboard(str(tmp_path / "tb"))
  assert scalars == {(1, "loss"): 0.5}


def test_visualize_figures_show_the_data(trained, tmp_path):
  from jaxseg.metrics import segmentation_scores
  from jaxseg.tools import visualize
  workdir, _ = trained
  paths, data = visualize.write_all(workdir, str(tmp_path), num=3)
  assert sorted(os.listdir(tmp_path)) == ["confusion.png", "loss.png", "miou.png", "predictions.png"]
  # Predictions: 3 rows of 4 panels of 160x160 at the eval size, then the legend.
  fig = np.asarray(Image.open(paths["predictions"]).convert("RGB"))
  assert fig.shape[1] == 4 + 4 * 164 and fig.shape[0] > 21 + 3 * 164
  images, labels, preds = data["predictions"]
  palette = load_palette()
  for r in range(3):
    y, panel = 21 + r * 164, lambda c: fig[21 + r * 164:21 + r * 164 + 160, 4 + c * 164:4 + c * 164 + 160]
    np.testing.assert_array_equal(panel(0), images[r])
    np.testing.assert_array_equal(panel(1), palette[labels[r]])
    np.testing.assert_array_equal(panel(2), palette[preds[r]])
    wrong = (preds[r] != labels[r]) & (labels[r] != 255)
    assert (panel(3)[wrong] == (220, 30, 30)).all() and (panel(3)[~wrong & (labels[r] != 255)] == 0).all()
    assert y and distinct_colors(panel(1)) >= 2 and not np.array_equal(panel(1), panel(2))
  # Confusion matrix: the same evaluation as training's last one.
  final = read_jsonl(os.path.join(workdir, "metrics.jsonl"))[-1]
  assert segmentation_scores(data["confusion"])["miou"] == pytest.approx(final["miou"], abs=1e-6)
  heat = np.asarray(Image.open(paths["confusion"]).convert("RGB"))
  assert heat.shape[0] > 6 * 36 and heat.shape[1] > 6 * 36 and distinct_colors(heat) > 10
  # Curves: the plotted series are the logs, and their lines are drawn.
  log = read_jsonl(os.path.join(workdir, "train_log.jsonl"))
  steps, loss = data["loss"]["loss"]
  assert list(steps) == [r["step"] for r in log] and list(loss) == [r["loss"] for r in log]
  assert set(data["loss"]) == {"loss", "loss_seg", "loss_aux"}
  steps, miou = data["miou"]["miou"]
  assert list(steps) == [2, 4] and list(miou) == [e["miou"] for e in read_jsonl(os.path.join(workdir, "metrics.jsonl"))]
  for name in ("loss", "miou"):
    plot = np.asarray(Image.open(paths[name]).convert("RGB"))
    assert plot.shape == (400, 640, 3)
    for color in draw.COLORS[:3]:
      assert (plot == color).all(-1).sum() > 50  # each series' line and markers


def load_palette():
  from jaxseg.data import datasets
  return datasets.palette(6, datasets.load("shapes", os.environ["TFDS_DATA_DIR"]))


def test_browse_dataset_shows_the_training_pipeline(data_dir):
  from jaxseg.data import datasets, pipeline
  config = load_config("quickstart", "tiny")
  from jaxseg.tools import browse_dataset
  fig, _ = browse_dataset.figure(config, num=4, columns=2)
  assert fig.shape[1] == 4 + 6 * 68 and fig.shape[0] > 21 + 2 * 68
  # The panels are the pipeline's first samples with the config's batch of 4.
  config.train.batch_size = 4
  source = datasets.source(datasets.load("shapes", data_dir), "train")
  samples = pipeline.train_dataset(config, source)[0]
  palette = load_palette()
  for i in range(4):
    y, x = 21 + (i // 2) * 68, 4 + (i % 2) * 3 * 68
    np.testing.assert_array_equal(fig[y:y + 64, x:x + 64], samples["image"][i])
    np.testing.assert_array_equal(fig[y:y + 64, x + 68:x + 132], palette[samples["label"][i]])
  assert distinct_colors(fig) > 50


def test_flops_per_module_add_up():
  from jaxseg.models.segmentor import build_model
  from jaxseg.tools import flops
  config = load_config("fastfcn_pascal_context", "tiny")
  rows = {r["module"]: r for r in flops.module_table(config, (64, 64))}
  assert list(rows) == ["total", "backbone", "neck", "decode_head", "aux_heads.aux"]
  parts = sum(rows[k]["gflops"] for k in ("backbone", "neck", "decode_head"))
  assert parts == pytest.approx(rows["total"]["gflops"], rel=0.03) and rows["backbone"]["gflops"] > 0
  variables = flops.abstract_variables(build_model(config), (64, 64))
  assert rows["total"]["params"] + rows["aux_heads.aux"]["params"] == flops.count(variables["params"])


def test_flops_counts_a_known_convolution():
  """XLA counts 2 FLOPs per multiply-add of the taps that fall inside the image: a
  7x7 stride-2 conv (padding 3) on 64x64 has 4, 6, 7 x 29 and 5 valid taps per output
  row (and column) = 218 per dimension."""
  import jax
  import jax.numpy as jnp
  from jaxseg.models.layers import conv
  from jaxseg.tools.flops import cost_flops
  layer = conv(8, 7, 2)
  x = jnp.zeros((1, 64, 64, 3))
  params = layer.init(jax.random.key(0), x)
  compiled = jax.jit(layer.apply).lower(params, x).compile()
  assert cost_flops(compiled) == 2 * 218 * 218 * 8 * 3


def test_benchmark_measures_both_sides():
  from jaxseg.tools import benchmark
  config = load_config("quickstart", "tiny")
  config.model.head.channels = 8
  config.model.aux_heads = {}  # a smaller program to compile
  result = json.loads(json.dumps(benchmark.benchmark(config, (64, 64), 2, iters=1, warmup=0)))
  stdout = benchmark.format_table(result)
  j = result["jax"]
  assert result["settings"]["size"] == [64, 64] and result["settings"]["batch"] == 2
  for key in ("train_step_ms", "infer_latency_ms", "train_compile_s", "train_gflops_per_step",
              "peak_memory_gb", "infer_gflops"):
    assert j[key] > 0, key
  assert j["train_images_per_sec"] == pytest.approx(2e3 / j["train_step_ms"])
  assert j["mfu"] is None and "XLA memory analysis" in j["peak_memory_source"]  # CPU
  assert result["torch"]["train_step_ms"] > 0 and result["torch"]["infer_latency_ms"] > 0
  assert "train images/s" in stdout and "PyTorch" in stdout and "jaxseg / PyTorch" in stdout


def test_torch_deeplabv3_has_the_parameters_of_the_jaxseg_model():
  from jaxseg.models.segmentor import build_model
  from jaxseg.tools import flops
  from jaxseg.tools.torch_deeplabv3 import DeepLabV3
  for variant in ({}, {"backbone.stem": "7x7", "backbone.depth": 50, "backbone.extra_blocks": 1,
                       "backbone.output_stride": 8}):
    config = load_config("quickstart", "tiny")
    for key, value in variant.items():
      group, name = key.split(".") if "." in key else ("", key)
      (config.model[group] if group else config.model)[name] = value
    jax_params = flops.count(flops.abstract_variables(build_model(config), (64, 64))["params"])
    torch_model = DeepLabV3(config)
    assert sum(p.numel() for p in torch_model.parameters()) == jax_params
    import torch
    out = torch_model.eval()(torch.zeros(1, 3, 64, 64))["seg"]
    assert tuple(out.shape) == (1, 6, 64 // config.model.backbone.output_stride,
                                64 // config.model.backbone.output_stride)


def test_peak_flops_table():
  from jaxseg.tools.benchmark import peak_tflops
  assert peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.0
  assert peak_tflops("NVIDIA H100 PCIe", "float32") == 378.0
  assert peak_tflops("TPU v5 lite", "bfloat16") == 197.0
  assert peak_tflops("cpu", "float32") is None


def test_print_config_round_trips_overrides():
  stdout = tool("print_config", "--config", "configs/pspnet_voc.py:tiny", "--config.train.steps=123",
                "--config.model.head.bins=1,3", "--config.optim.lr=0.25")
  config = json.loads(stdout)
  assert config["train"]["steps"] == 123 and config["model"]["head"]["bins"] == [1, 3]
  assert config["optim"]["lr"] == 0.25 and config["model"]["head"]["name"] == "psp"
  from jaxseg.config import base_config
  assert set(config) == set(base_config())  # every group, resolved
  changed = tool("print_config", "--config", "configs/quickstart.py:tiny", "--config.train.steps=7", "--changed")
  assert "train.steps = 7" in changed.splitlines() and "seed" not in changed
  out = subprocess.run([sys.executable, "-m", "jaxseg.tools.print_config", "--config",
                        "configs/quickstart.py", "--config.train.stepz=1"], cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 2 and "train.stepz" in out.stderr and "did you mean 'steps'" in out.stderr


def test_benchmark_and_flops_need_neither_tensorflow_nor_grain():
  code = ("import sys\n"
          "for m in ('grain', 'tensorflow', 'tensorflow_datasets'):\n"
          "  sys.modules[m] = None  # importing them now fails\n"
          "from jaxseg.tools import benchmark, flops\n"
          "import jaxseg.train, jaxseg.tools.print_config\n"
          "print('ok')\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_panoptic_overlay_colours_segments_and_outlines_their_boundaries():
  ids = np.zeros((6, 8), np.int64)
  ids[1:4, 1:4], ids[1:4, 4:7] = 5, 9  # two instances of class 2 side by side; the rest void
  image = np.full((6, 8, 3), 100, np.uint8)
  palette = np.zeros((256, 3), np.uint8)
  palette[2] = (200, 0, 0)
  edge = draw.outlines(ids)
  want = np.zeros_like(edge)  # both sides of every change between a pixel and its lower / right neighbour
  for y in range(6):
    for x in range(8):
      for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        if 0 <= y + dy < 6 and 0 <= x + dx < 8 and ids[y + dy, x + dx] != ids[y, x]:
          want[y, x] = True
  np.testing.assert_array_equal(edge, want)
  assert not draw.outlines(np.full((4, 4), 3)).any()
  out = draw.panoptic_overlay(image, ids, {5: 2, 9: 2}, palette)
  assert (out[edge] == 255).all() and (out[(ids == 0) & ~edge] == 100).all()
  inner5, inner9 = out[2, 2], out[2, 5]  # inside each instance: blended red, in two shades
  assert inner5[0] > 100 and inner5[1] == inner5[2] == 50 and inner9[0] > 100 and inner5[0] != inner9[0]
