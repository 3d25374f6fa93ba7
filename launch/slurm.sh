#!/usr/bin/env bash
# sbatch --nodes=4 --gpus-per-node=8 launch/slurm.sh configs/deeplabv3_voc.py /shared/runs/dlv3 [--config.x=y ...]
#SBATCH --ntasks-per-node=1
#SBATCH --job-name=jaxseg
set -euo pipefail
config=$1 workdir=$2
shift 2
srun python -m jaxseg.main --distributed --config "$config" --workdir "$workdir" "$@"
