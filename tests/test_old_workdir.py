"""A work dir written by an earlier version (tests/data/workdir_v0: `quickstart.py:tiny`
at narrower widths, its config.json with the flat model keys of that version, orbax
checkpoint 4) still evaluates with --mode eval and loads with jaxseg.load, with the
numbers it had."""
import json
import shutil

import numpy as np

from tests.conftest import ROOT, run_cli

OLD = ROOT / "tests" / "data" / "workdir_v0"


def copy_of_old_workdir(tmp_path):
  workdir = tmp_path / "workdir_v0"
  shutil.copytree(OLD, workdir)
  return workdir


def test_old_workdir_evaluates_with_its_miou(data_dir, tmp_path):
  workdir = copy_of_old_workdir(tmp_path)
  recorded = json.loads((OLD / "metrics.jsonl").read_text().splitlines()[-1])
  out = run_cli("--workdir", str(workdir), "--mode", "eval")
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert len(rows) == 2 and rows[-1]["mode"] == "eval" and rows[-1]["step"] == 4
  assert abs(rows[-1]["miou"] - recorded["miou"]) < 1e-3, (rows[-1]["miou"], recorded["miou"])
  assert f"step 4: mIoU {rows[-1]['miou']:.4f}" in out.stdout


def test_old_workdir_loads_with_the_same_logits():
  import jaxseg
  seg = jaxseg.load(str(OLD))
  image = np.random.default_rng(0).integers(0, 256, (1, 32, 40, 3), dtype=np.uint8)
  want = np.load(ROOT / "tests" / "data" / "workdir_v0_logits.npy")
  assert seg.step == 4
  np.testing.assert_allclose(seg.logits(image), want, rtol=1e-4, atol=1e-4)
