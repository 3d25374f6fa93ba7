"""The command line, end to end on the tiny config: train -> eval -> predict, and the
one-line errors for bad input."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT, run_cli

TINY = "configs/quickstart.py:tiny"


@pytest.fixture
def trained(tiny_run):
  """(work dir, stdout) of `python -m jaxseg.main --config TINY --workdir DIR`."""
  return tiny_run


def test_train_writes_the_work_dir(trained):
  workdir, stdout = trained
  assert {"config.json", "metrics.jsonl", "train_log.jsonl", "checkpoints"} <= set(os.listdir(workdir))
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  log = [json.loads(l) for l in open(os.path.join(workdir, "train_log.jsonl"))]
  assert [r["step"] for r in log] == [2, 4]
  assert {"loss", "lr", "images_per_sec", "loss_seg", "loss_aux"} <= set(log[0])
  assert "img/s" in stdout and "ETA" in stdout and "mIoU" in stdout
  assert json.load(open(os.path.join(workdir, "config.json")))["model"]["backbone"]["depth"] == 10


def test_eval_reports_the_training_miou(trained):
  workdir, train_stdout = trained
  final = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))][-1]
  out = run_cli("--config", TINY, "--workdir", workdir, "--mode", "eval")
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stderr.strip() == "", out.stderr[-3000:]  # a healthy work dir: no warnings
  line = f"step 4: mIoU {final['miou']:.4f}"
  assert line in train_stdout and line in out.stdout
  # --mode eval appends its row, naming the checkpoint it restored and its settings.
  row = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))][-1]
  assert row["mode"] == "eval" and row["step"] == 4 and row["miou"] == pytest.approx(final["miou"], abs=1e-6)
  assert row["checkpoint"] == os.path.join(os.path.abspath(workdir), "checkpoints", "4")
  assert row["settings"]["evals"] == {"confusion": {"every": 0}} and row["settings"]["eval"]["mode"] == "whole"
  assert final["evaluators"] == ["confusion"] and "mode" not in final
  assert "background" in out.stdout and "triangle" in out.stdout  # per-class table with names


def test_predict_writes_masks_and_overlays(trained, tmp_path):
  workdir, _ = trained
  images = tmp_path / "images"
  images.mkdir()
  from jaxseg.data.builders.shapes import make_example
  for i in range(2):
    cv2.imwrite(str(images / f"img{i}.jpg"), make_example("val", i)[0][..., ::-1])
  out_dir = tmp_path / "pred"
  out = run_cli("--config", TINY, "--workdir", workdir, "--mode", "predict", "--input", str(images),
                "--output", str(out_dir))
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stderr.strip() == "", out.stderr[-3000:]
  assert sorted(os.listdir(out_dir)) == ["img0.png", "img0_overlay.png", "img1.png", "img1_overlay.png"]
  from PIL import Image
  mask = Image.open(out_dir / "img0.png")
  assert mask.mode == "P" and mask.size[::-1] == make_example("val", 0)[1].shape
  assert np.asarray(mask).max() < 6
  # jaxseg.load gives the same prediction
  import jaxseg
  seg = jaxseg.load(workdir)
  image = make_example("val", 0)[0]
  logits = seg.logits(image[None])
  assert logits.shape == (1, *image.shape[:2], 6)
  np.testing.assert_array_equal(seg.predict(image[None])[0], logits[0].argmax(-1))


def one_line_error(out, *fragments):
  assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
  lines = out.stderr.strip().splitlines()
  assert lines and lines[-1].startswith("jaxseg: error:"), out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  for fragment in fragments:
    assert fragment in lines[-1], lines[-1]


def test_unknown_config_key_on_the_command_line(tmp_path):
  out = run_cli("--config", TINY, "--workdir", str(tmp_path), "--config.train.stepz=3")
  one_line_error(out, "unknown config key 'train.stepz'", "did you mean 'steps'")


def test_unknown_config_key_in_a_config_file(tmp_path):
  path = tmp_path / "typo.py"
  path.write_text("from jaxseg.config import base_config\n\ndef get_config():\n"
                  "  c = base_config()\n  c.optim.learning_rate = 0.1\n  return c\n")
  out = run_cli("--config", str(path), "--workdir", str(tmp_path / "w"))
  one_line_error(out, "unknown config key 'optim.learning_rate'")


def test_missing_or_raising_config_file_is_one_line(tmp_path):
  out = run_cli("--config", "configs/nonexist.py", "--workdir", str(tmp_path / "w"))
  one_line_error(out, "configs/nonexist.py")
  path = tmp_path / "raises.py"
  path.write_text("def get_config(variant=''):\n  raise ValueError('no such schedule')\n")
  out = run_cli("--config", f"{path}:big", "--workdir", str(tmp_path / "w"))
  one_line_error(out, str(path), "ValueError: no such schedule")
  # The tools share the loader.
  out = subprocess.run([sys.executable, "-m", "jaxseg.tools.print_config", "--config", "configs/nonexist.py:tiny"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  one_line_error(out, "configs/nonexist.py")


def test_unknown_evaluator_suggests_the_near_match(tmp_path):
  out = run_cli("--config", "configs/gscnn_cityscapes.py:tiny", "--workdir", str(tmp_path / "w"),
                "--config.evals.boundary_f.tolerence=2")
  one_line_error(out, "evals.boundary_f.tolerence", "did you mean 'tolerance'")


def test_missing_dataset_names_it_and_the_prepare_command(tmp_path):
  out = run_cli("--config", "configs/deeplabv3_voc.py", "--workdir", str(tmp_path / "w"),
                env={"TFDS_DATA_DIR": str(tmp_path / "empty")})
  one_line_error(out, "dataset 'voc_aug' is not prepared", "python -m jaxseg.prepare voc_aug")


def test_unreadable_image_in_predict_mode(trained, tmp_path):
  workdir, _ = trained
  (tmp_path / "broken.png").write_bytes(b"not a png")
  out = run_cli("--config", TINY, "--workdir", workdir, "--mode", "predict", "--input", str(tmp_path))
  one_line_error(out, "cannot read image", "broken.png")


def test_work_dir_of_a_different_model(trained):
  workdir, _ = trained
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  out = run_cli("--config", TINY, "--workdir", workdir, "--config.model.backbone.depth=18")
  one_line_error(out, "different model", "model.backbone.depth")
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before  # nothing lost


def test_eval_without_a_checkpoint(tmp_path):
  out = run_cli("--config", TINY, "--workdir", str(tmp_path), "--mode", "eval")
  one_line_error(out, "no checkpoint in")
