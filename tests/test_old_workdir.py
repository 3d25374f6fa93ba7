"""A work dir written by an earlier version (tests/data/workdir_v0: `quickstart.py:tiny`
at narrower widths, its config.json with the flat model keys of that version, orbax
checkpoint 4) still evaluates with --mode eval and loads with jaxseg.load, with the
numbers it had."""
import json
import shutil

import numpy as np

from tests.conftest import ROOT, load_config, run_cli

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


def old_workdir_config(**optim):
  """quickstart.py:tiny at the old work dir's widths, in today's keys."""
  config = load_config("quickstart", "tiny")
  config.model.backbone.width = 4
  config.model.head.channels = 8
  config.model.aux_heads.aux.channels = 4
  config.optim.update(optim)
  return config


def test_old_optimizer_state_under_new_lr_groups_is_one_line_naming_init_from(data_dir, tmp_path):
  """Head lr x10 splits the optimizer state into the groups "x1" and "x10": the old
  work dir's single-group state cannot resume; one line says so and names the way to
  start from its weights, which then load in full."""
  import jax

  from jaxseg import families
  from jaxseg.convert.init_from import init_from, read_variables
  from jaxseg.state import state_factory

  workdir = copy_of_old_workdir(tmp_path)
  out = run_cli("--config", "configs/quickstart.py:tiny", "--workdir", str(workdir), "--config.train.steps=6",
                "--config.model.backbone.width=4", "--config.model.head.channels=8",
                "--config.model.aux_heads.aux.channels=4", "--config.optim.head_lr_mult=10")
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
  line = out.stderr.strip().splitlines()[-1]
  assert line.startswith("jaxseg: error:") and "optimizer state" in line, line
  assert f"--config.model.init_from={workdir}" in line, line
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["4"]  # nothing lost, nothing written

  config = old_workdir_config(head_lr_mult=10.0)
  config.model.init_from = str(workdir)
  family = families.get(config)
  init_fn, _, _, _ = state_factory(config, family.build_model(train=True), family)
  (tmp_path / "new").mkdir()
  state = init_from(jax.jit(init_fn)(jax.random.key(1)), config, str(tmp_path / "new"))
  report = json.loads((tmp_path / "new" / "init_from.json").read_text())
  assert not report["missing"] and not report["skipped"]
  old = read_variables(str(workdir))
  for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(old["params"])):
    np.testing.assert_array_equal(np.asarray(got), want)
