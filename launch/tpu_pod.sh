#!/usr/bin/env bash
# Train on every worker of a Cloud TPU VM pod slice:
#   launch/tpu_pod.sh my-tpu us-central2-b configs/deeplabv3_voc.py gs://bucket/runs/dlv3 [--config.x=y ...]
# The repository is expected at ~/jaxseg on every worker (installed with pip install -e .).
set -euo pipefail
name=$1 zone=$2 config=$3 workdir=$4
shift 4
gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command \
  "cd ~/jaxseg && python -m jaxseg.main --distributed --config $config --workdir $workdir $*"
