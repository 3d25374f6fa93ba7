import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Most tests compile the same tiny programs, many in `python -m jaxseg.main` subprocesses:
# a compilation cache shared by the session (and inherited by the subprocesses) compiles
# each once. Set before any test module imports JAX.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="jaxseg-test-jit-cache-"))
# The programs are tiny, so compiling dominates: without LLVM's optimisations a tiny CLI
# run takes 25 s instead of 40 s. The subprocesses inherit the flag (see `devices_env`).
FAST_COMPILE = "--xla_backend_optimization_level=0"
XLA_FLAGS = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = f"{XLA_FLAGS} {FAST_COMPILE}".strip()


def devices_env(n, optimized=False):
  """Environment entries for a subprocess with `n` simulated CPU devices; `optimized`:
  with XLA's default optimisation (at level 0, 2 processes x 2 devices and 1 x 4 round
  the first step's gradients 6e-5 apart, too far for the multi-host test's 1e-5)."""
  return {"XLA_FLAGS": f"{XLA_FLAGS if optimized else os.environ['XLA_FLAGS']} "
                       f"--xla_force_host_platform_device_count={n}".strip(), "JAX_PLATFORMS": "cpu"}


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


def run_cli(*args, env=None, timeout=600):
  """Runs `python -m jaxseg.main ARGS`; returns the CompletedProcess (text)."""
  return subprocess.run([sys.executable, "-m", "jaxseg.main", *args], cwd=ROOT, env={**os.environ, **(env or {})},
                        capture_output=True, text=True, timeout=timeout)
