import subprocess
import sys


def test_import_jaxseg_without_tensorflow():
  # TensorFlow is made unimportable: importing jaxseg and its training, evaluation and
  # prediction code must not need it (DESIGN.md: only dataset preparation does).
  code = (
      "import sys; sys.modules['tensorflow'] = None\n"
      "import jaxseg, jaxseg.train, jaxseg.main, jaxseg.evaluate, jaxseg.api\n"
      "import jaxseg.data.pipeline, jaxseg.data.datasets\n"
      "assert 'tensorflow' not in [m.split('.')[0] for m, v in sys.modules.items() if v is not None]\n"
      "print('ok')\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip().endswith("ok")


def test_reading_a_prepared_dataset_without_tensorflow(data_dir):
  code = (
      "import sys; sys.modules['tensorflow'] = None\n"
      "from jaxseg.data import datasets\n"
      f"b = datasets.load('shapes', {data_dir!r})\n"
      "r = datasets.source(b, 'val')[0]\n"
      "assert r['image'].ndim == 3 and r['label'].shape[:2] == r['image'].shape[:2]\n"
      "print('ok')\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
