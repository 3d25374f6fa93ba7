#!/usr/bin/env bash
# jaxseg on a SLURM GPU cluster: one task per node, every GPU of the node in that task.
#
#   sbatch --nodes=4 --gpus-per-node=8 launch/slurm.sh configs/deeplabv3_voc.py /shared/runs/dlv3 [--config.x=y ...]
#
# jax.distributed.initialize() (--distributed) reads the coordinator address, process
# count and process id from the SLURM environment. The work dir must be on storage all
# nodes share. DRY_RUN=1 bash launch/slurm.sh ... prints the command instead.
#SBATCH --job-name=jaxseg
#SBATCH --ntasks-per-node=1
#SBATCH --output=jaxseg-%j.log
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,8p' "$0" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
command=(srun python -m jaxseg.main --distributed --config "$config" --workdir "$workdir" "$@")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${command[@]}"
  printf '\n'
else
  "${command[@]}"
fi
