import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Most tests compile the same tiny programs, many in `python -m jaxseg.main` subprocesses:
# a compilation cache shared by the session (and inherited by the subprocesses) compiles
# each once. Set before any test module imports JAX.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxseg-test-jit-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
# Every program, not only those compiling for over a second (JAX's default): the eval
# and init programs of a tiny run compile in under a second each, many times over.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The programs are tiny, so compiling dominates: without LLVM's optimisations a tiny CLI
# run takes 25 s instead of 40 s. The subprocesses inherit the flag (see `devices_env`).
FAST_COMPILE = "--xla_backend_optimization_level=0"
XLA_FLAGS = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = f"{XLA_FLAGS} {FAST_COMPILE}".strip()

# torchvision's PyPI build cannot load its operators on a CPU-only PyTorch, and its import
# (also from inside transformers) then fails: the first import defines the two it needs
# first (tests/torchvision_reference.py). Costs nothing unless torchvision is imported.
from tests.torchvision_reference import DefineOpsOnImport  # noqa: E402

sys.meta_path.insert(0, DefineOpsOnImport())


def devices_env(n, optimized=False):
  """Environment entries for a subprocess with `n` simulated CPU devices; `optimized`:
  with XLA's default optimisation (at level 0, 2 processes x 2 devices and 1 x 4 round
  the first step's gradients 6e-5 apart, too far for the multi-host test's 1e-5)."""
  return {"XLA_FLAGS": f"{XLA_FLAGS if optimized else os.environ['XLA_FLAGS']} "
                       f"--xla_force_host_platform_device_count={n}".strip(), "JAX_PLATFORMS": "cpu"}



def background_check(script, devices):
  """Runs `script` with `devices` simulated CPU devices in a process started now, beside
  the tests that follow (a lone process keeps about one core of two busy); yields the
  process (read it with .communicate()) and kills it if still running at teardown. For
  module fixtures that a file's first test asks for."""
  proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, **devices_env(devices)},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  yield proc
  if proc.poll() is None:
    proc.kill()
    proc.wait()

def load_config(name, variant=""):
  """configs/<name>.py's get_config(variant), as `--config configs/<name>.py:variant`."""
  spec = importlib.util.spec_from_file_location(f"configs_{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """A TFDS data dir holding the prepared `shapes` dataset, shared by the session
  (and by the subprocesses it starts, through $TFDS_DATA_DIR)."""
  path = os.environ.get("JAXSEG_TEST_DATA_DIR") or str(tmp_path_factory.mktemp("tfds"))
  os.environ["TFDS_DATA_DIR"] = path
  from jaxseg.data import datasets
  datasets.dataset_dir("shapes", path)
  return path


@pytest.fixture(scope="session")
def tiny_run(data_dir, tmp_path_factory):
  """(work dir, stdout) of `configs/quickstart.py:tiny` trained by the CLI: 4 steps,
  checkpoints 2 and 4, evaluated at step 4. Shared by the session: a test that changes
  it (other than appending --mode eval rows) works on a copy (`copy_tiny_run`)."""
  workdir = str(tmp_path_factory.mktemp("tiny_run"))
  out = run_cli("--config", "configs/quickstart.py:tiny", "--workdir", workdir)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, out.stdout


def copy_tiny_run(tiny_run, workdir):
  shutil.copytree(tiny_run[0], workdir)
  return str(workdir)


def run_cli(*args, env=None, timeout=600):
  """Runs `python -m jaxseg.main ARGS`; returns the CompletedProcess (text)."""
  return subprocess.run([sys.executable, "-m", "jaxseg.main", *args], cwd=ROOT, env={**os.environ, **(env or {})},
                        capture_output=True, text=True, timeout=timeout)
