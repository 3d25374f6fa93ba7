#!/usr/bin/env bash
# jaxseg on a Cloud TPU VM pod slice: the same command on every worker.
#
#   launch/tpu_pod.sh create  NAME ZONE [ACCELERATOR] [VERSION]   create the slice (default v4-32)
#   launch/tpu_pod.sh setup   NAME ZONE                           copy this checkout, pip install -e .
#   launch/tpu_pod.sh train   NAME ZONE CONFIG WORKDIR [--config.x=y ...]
#   launch/tpu_pod.sh eval    NAME ZONE CONFIG WORKDIR [--config.x=y ...]
#   launch/tpu_pod.sh logs    NAME ZONE                           follow worker 0's log
#   launch/tpu_pod.sh delete  NAME ZONE
#
# DRY_RUN=1 prints the commands instead of running them. WORKDIR must be storage every
# worker shares (gs://bucket/...): orbax writes each checkpoint from all hosts together.
set -euo pipefail

run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

usage() {
  sed -n '2,12p' "$0" >&2
  exit 2
}

[[ $# -ge 3 ]] || usage
action=$1 name=$2 zone=$3
shift 3
remote_dir=jaxseg  # relative to the workers' home directory
log=/tmp/jaxseg.log

on_all_workers() {
  run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$1"
}

case "$action" in
  create)
    run gcloud compute tpus tpu-vm create "$name" --zone "$zone" \
      --accelerator-type "${1:-v4-32}" --version "${2:-tpu-ubuntu2204-base}"
    ;;
  setup)
    repo=$(cd "$(dirname "$0")/.." && pwd)
    run gcloud compute tpus tpu-vm scp --recurse "$repo" "$name:$remote_dir" --zone "$zone" --worker=all
    on_all_workers "cd $remote_dir && pip install -e . 'jax[tpu]'"
    ;;
  train | eval)
    [[ $# -ge 2 ]] || usage
    config=$1 workdir=$2
    shift 2
    overrides=$(printf ' %q' "$@")
    # --distributed: jax.distributed.initialize() finds the coordinator and process ids
    # from the TPU environment; every worker reads its own slice of the data.
    on_all_workers "cd $remote_dir && nohup python -m jaxseg.main --distributed --mode $action \
--config $config --workdir $workdir$overrides > $log 2>&1 &"
    ;;
  logs)
    run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=0 --command "tail -f $log"
    ;;
  delete)
    run gcloud compute tpus tpu-vm delete "$name" --zone "$zone" --quiet
    ;;
  *)
    usage
    ;;
esac
