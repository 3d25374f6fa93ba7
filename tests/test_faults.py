"""Fault injection: preemption, kill -9 during async saves, non-finite losses, an
unwritable or full work dir, a damaged checkpoint, a corrupt record."""
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxseg
from jaxseg import train
from jaxseg.data import pipeline
from jaxseg.errors import CheckpointMismatchError, InputDataError, NonFiniteError, WorkdirError
from jaxseg.models.segmentor import build_model
from tests.conftest import ROOT, copy_tiny_run, load_config, run_cli

TINY = "configs/quickstart.py:tiny"
# Most runs here test resuming and checkpoints, not evaluation: without it (it would
# run at the last step) each run is seconds shorter.
NO_EVAL = "--config.evals.confusion.every=-1"


def tiny(steps, evaluate=True, **train_overrides):
  config = load_config("quickstart", "tiny")
  config.train.steps = steps
  config.train.update(train_overrides)
  if not evaluate:
    config.evals.confusion.every = -1
  return config


def start(workdir, *overrides):
  return subprocess.Popen([sys.executable, "-m", "jaxseg.main", "--config", TINY, "--workdir", workdir,
                           *overrides], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(proc, step):
  """Reads the progress lines of `proc` until the one of `step` (or a later one)."""
  for line in proc.stdout:
    if line.startswith("[") and int(line[1:line.index("/")]) >= step:
      return int(line[1:line.index("/")])
  raise AssertionError(f"process ended before step {step}: {proc.wait()} {proc.stderr.read()[-2000:]}")


def assert_same_variables(workdir_a, workdir_b, atol=1e-6):
  a, b = jaxseg.load(workdir_a), jaxseg.load(workdir_b)
  assert a.step == b.step
  for x, y in zip(jax.tree.leaves(a.variables), jax.tree.leaves(b.variables)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


def test_sigterm_checkpoints_and_the_resumed_run_equals_an_uninterrupted_one(data_dir, tmp_path):
  overrides = ["--config.train.steps=12", "--config.train.log_every=1", "--config.train.ckpt_every=100",
               "--config.train.eval_every=100", NO_EVAL]
  full = str(tmp_path / "full")  # the uninterrupted run: in this process (the signal is not its subject)
  train.train_and_evaluate(tiny(12, evaluate=False, log_every=1, ckpt_every=100, eval_every=100), full)
  resumed = str(tmp_path / "resumed")
  proc = start(resumed, *overrides)
  wait_for_step(proc, random.Random(os.getpid()).randint(2, 8))
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 3, err[-2000:]  # the distinct "preempted" exit code
  assert "stopped by SIGTERM at step" in err and "Traceback" not in err
  stopped_at = int(err.split("at step ")[1].split(";")[0])
  assert os.listdir(os.path.join(resumed, "checkpoints")) == [str(stopped_at)]
  out = run_cli("--config", TINY, "--workdir", resumed, *overrides)
  assert out.returncode == 0 and "Resumed from" in out.stdout, out.stderr[-2000:]
  assert_same_variables(full, resumed)


def test_kill_9_during_async_saves_always_resumes_from_an_intact_checkpoint(data_dir, tmp_path):
  # A checkpoint every step, so a save is in flight almost all the time; each round
  # kills the process at a random moment just after a step's save began.
  # Each kill lands by step 10 or so; the resumed run then goes on to step 20.
  workdir = str(tmp_path / "run")
  overrides = ["--config.train.steps=20", "--config.train.log_every=1", "--config.train.ckpt_every=1",
               "--config.train.eval_every=1000", "--config.train.keep_checkpoints=2", NO_EVAL]
  rng = random.Random(1)
  for _ in range(2):
    proc = start(workdir, *overrides)
    first = wait_for_step(proc, 1)
    wait_for_step(proc, first + rng.randint(1, 4))
    time.sleep(rng.uniform(0, 0.15))
    proc.kill()
    proc.wait()
  out = run_cli("--config", TINY, "--workdir", workdir, *overrides)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Resumed from" in out.stdout
  assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())[-1] == 20
  assert jaxseg.load(workdir).step == 20


def nan_batch(shape=(8, 64, 64)):
  rng = np.random.default_rng(0)
  return {"image": jnp.asarray(rng.uniform(0, 255, (*shape, 3)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, 6, shape), jnp.uint8)}


def test_a_non_finite_step_leaves_the_state_unchanged():
  config = tiny(10)
  model = build_model(config)
  init_fn, _, tx, schedule = train.state_factory(config, model)
  step = jax.jit(train.make_train_step(config, model, tx, schedule))
  state = init_fn(jax.random.key(0))
  good = nan_batch()
  bad = {**good, "image": good["image"].at[0, 3, 3, 0].set(jnp.nan)}
  after_bad, logs = step(state, bad)
  assert not bool(logs["finite"]) and int(after_bad.step) == 1
  for a, b in zip(jax.tree.leaves((state.params, state.batch_stats, state.opt_state)),
                  jax.tree.leaves((after_bad.params, after_bad.batch_stats, after_bad.opt_state))):
    np.testing.assert_array_equal(a, b)
  after_good, logs = step(after_bad, good)  # training goes on after a skipped step
  assert bool(logs["finite"])
  assert not np.allclose(after_good.params["decode_head"]["classifier"]["kernel"],
                         state.params["decode_head"]["classifier"]["kernel"])


@pytest.mark.parametrize("policy,message", [
    ("stop", "non-finite loss term(s) aux, seg at step 3 (train.on_nonfinite='stop')"),
    ("skip", "2 consecutive non-finite steps ending at step 4"),
])
def test_non_finite_policies_keep_the_last_good_checkpoint(tiny_run, tmp_path, policy, message):
  workdir = copy_tiny_run(tiny_run, tmp_path / "run")
  shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))  # a run that has reached step 2
  # The resumed run divides by a zero std: every loss from step 3 on is non-finite.
  config = tiny(8, ckpt_every=2, eval_every=100, on_nonfinite=policy, max_consecutive_skips=2)
  config.dataset.std = (0.0, 0.0, 0.0)
  with pytest.raises(NonFiniteError, match=message.replace("(", r"\(").replace(")", r"\)")):
    train.train_and_evaluate(config, workdir)
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["2"]
  assert jaxseg.load(workdir).step == 2


def test_non_finite_exit_code(data_dir, tmp_path):
  out = run_cli("--config", TINY, "--workdir", str(tmp_path), "--config.dataset.std=(0.0,0.0,0.0)",
                "--config.train.on_nonfinite=stop")
  assert out.returncode == 4 and "jaxseg: error: non-finite" in out.stderr and "Traceback" not in out.stderr


def test_unwritable_work_dir_fails_at_start(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(WorkdirError, match="is not writable"):
    train.check_writable(str(blocker / "run"))
  out = run_cli("--config", TINY, "--workdir", str(blocker / "run"))
  assert out.returncode == 2 and "jaxseg: error: work dir" in out.stderr and "Traceback" not in out.stderr


@pytest.fixture
def small_disk(tmp_path):
  """A 2 MB tmpfs (needs mount privileges; root in CI)."""
  mount = tmp_path / "disk"
  mount.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                    capture_output=True).returncode != 0:
    pytest.skip("cannot mount a tmpfs here")
  yield mount
  subprocess.run(["umount", "-l", str(mount)])


def fill(disk, leave_bytes):
  stat = os.statvfs(disk)
  with open(disk / "filler", "wb") as f:
    f.write(b"\0" * max(stat.f_bavail * stat.f_frsize - leave_bytes, 0))


def test_full_disk_fails_at_start(small_disk):
  fill(small_disk, 0)
  with pytest.raises(WorkdirError, match="No space left on device"):
    train.check_writable(str(small_disk / "run"))


def test_full_disk_at_save_is_reported_and_nothing_is_lost(data_dir, small_disk):
  fill(small_disk, 300_000)  # room for config.json and logs, not for a 1 MB checkpoint
  out = run_cli("--config", TINY, "--workdir", str(small_disk / "run"), NO_EVAL)
  assert out.returncode == 2, out.stderr[-3000:]
  # ENOSPC reaches us as the OS's message or, from tensorstore's writer, as its errno
  assert "a checkpoint write to" in out.stdout
  assert "No space left on device" in out.stdout or "os_error_code='28'" in out.stdout, out.stdout[-3000:]
  # (orbax also logs its own errors on stderr; ours is the one-line summary)
  assert "jaxseg: error: the last checkpoint (step 4) could not be written" in out.stderr


def test_damaged_checkpoint_is_a_clear_error_and_restore_picks_another(tiny_run, tmp_path):
  workdir = copy_tiny_run(tiny_run, tmp_path / "run")  # checkpoints 2 and 4
  state_dir = os.path.join(workdir, "checkpoints", "4", "state")
  for root, _, files in os.walk(state_dir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "r+b") as f:  # truncate every file of the state to half
        f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(CheckpointMismatchError, match=r"checkpoints/4 is unreadable .*--restore .*checkpoints/2"):
    train.train_and_evaluate(tiny(6, evaluate=False, ckpt_every=2, eval_every=100), workdir)
  out = run_cli("--config", TINY, "--workdir", workdir, "--config.train.steps=6", NO_EVAL,
                "--restore", os.path.join(workdir, "checkpoints", "2"))
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Resumed from" in out.stdout and "checkpoints/2" in out.stdout


class FlakySource:
  """Records of 70x70 zeros; record 7 cannot be decoded."""

  def __len__(self):
    return 20

  def __getitem__(self, i):
    if i == 7:
      raise OSError("corrupt PNG data")
    return {"image": np.full((70, 70, 3), i, np.uint8), "label": np.zeros((70, 70, 1), np.uint8),
            "file_name": b"r%d" % i}


def test_unreadable_record_names_split_and_record_or_is_skipped():
  config = tiny(4)
  config.input.photometric = False  # keep each record's pixel value
  batches = pipeline.train_iterator(pipeline.train_dataset(config, pipeline.CheckedSource(FlakySource(), "train")),
                                    config)
  with pytest.raises(InputDataError, match="split 'train' record 7 cannot be read"):
    for _ in range(4):  # 32 draws from 20 records: record 7 is among them
      next(batches)
  source = pipeline.CheckedSource(FlakySource(), "train", skip=True)
  ds = pipeline.train_dataset(config, source)
  images = np.concatenate([ds[i]["image"] for i in range(4)])
  assert source.skipped == {7}
  assert 7 not in np.unique(images[:, 0, 0, 0])  # never seen: replaced by record 8
