"""DESIGN.md: TensorFlow belongs to dataset preparation only, PyTorch to checkpoint
conversion and the reference tests. Importing jaxseg and reading a prepared dataset
must never import either."""
import subprocess
import sys

from tests.conftest import ROOT

NO_TF_LOADED = ("tf = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'torch')]\n"
                "assert not tf, tf[:5]\n")


def run(code):
  out = subprocess.run([sys.executable, "-c", "import sys\n" + code + NO_TF_LOADED + "print('ok')"],
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().endswith("ok")


def test_import_jaxseg_does_not_import_tensorflow():
  run("import jaxseg, jaxseg.train, jaxseg.main, jaxseg.evaluate, jaxseg.api\n"
      "import jaxseg.data.pipeline, jaxseg.data.datasets, jaxseg.pssl.generate, jaxseg.pssl.explain\n")


def test_reading_a_prepared_dataset_does_not_import_tensorflow(data_dir):
  run("from jaxseg.data import datasets, pipeline\n"
      "from tests.conftest import load_config\n"
      f"b = datasets.load('shapes', {data_dir!r})\n"
      "r = datasets.source(b, 'val')[0]\n"
      "assert r['image'].ndim == 3 and r['label'].shape[:2] == r['image'].shape[:2]\n"
      "pipeline.train_dataset(load_config('quickstart', 'tiny'), datasets.source(b, 'train'))[0]\n")
