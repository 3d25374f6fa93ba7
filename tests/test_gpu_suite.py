"""benchmarks/gpu_suite.py runs end to end in its CPU tiny mode, so that the first
time it meets a GPU it does not break on a typo."""
import json
import subprocess
import sys

from tests.conftest import ROOT


def test_gpu_suite_tiny_measures_every_case_on_both_sides(tmp_path):
  out = tmp_path / "suite.json"
  proc = subprocess.run([sys.executable, "benchmarks/gpu_suite.py", "--tiny", "--json", str(out),
                         "--budget_s", "1200"], cwd=ROOT, capture_output=True, text=True, timeout=1500)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  report = json.loads(out.read_text())
  jax_side, torch_side = report["jax"], report["torch"]
  assert "exit" not in jax_side and "exit" not in torch_side, (jax_side.get("exit"), torch_side.get("exit"))
  assert jax_side["info"]["imported"] == [] and torch_side["info"]["imported"] == []  # no TensorFlow, no grain
  for case in report["cases"]:
    key = f"{case['kind']} {case['model']} {case['size'][0]}x{case['size'][1]} b{case['batch']} {case['dtype']}"
    j = jax_side["results"][key]
    assert "error" not in j and "skipped" not in j, (key, j)
    if case["kind"] == "train":
      assert j["step_ms"] > 0 and j["gflops_per_step"] > 0 and j["memory_gb"] > 0 and j["mfu"] is None  # CPU
    elif case["kind"] == "infer":
      assert j["fps"] > 0
    else:
      assert 0 < j["blocked_gb"] < j["naive_gb"]
    t = torch_side["results"].get(key)
    if case["config"] in ("deeplabv3", "stdc1"):  # the networks PyTorch has
      assert t and "error" not in t and (t.get("step_ms") or t.get("latency_ms")) > 0, (key, t)
    else:
      assert t is None, key
  assert "DeepLabv3-R101" in proc.stdout and "jax/torch" in proc.stdout and "blocked" in proc.stdout
  assert not list(tmp_path.glob("*.part"))
