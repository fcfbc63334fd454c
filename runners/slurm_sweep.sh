#!/usr/bin/env bash
# Run a cbl sweep on a SLURM allocation: one Ray head on the first node, Ray workers on
# the others, the sweep driver on the head. Storage must be a folder every node sees
# (an NFS/Lustre path): trials keep their checkpoints there.
#
#   sbatch runners/slurm_sweep.sh search_spaces/ablation.yaml --set data.root=/data/LA
#
#SBATCH --job-name=cbl-sweep
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --gpus-per-task=4
#SBATCH --time=48:00:00
set -euo pipefail
SPACE=${1:?usage: sbatch runners/slurm_sweep.sh SPACE.yaml [cbl-search run options]}
shift
STORAGE=${CBL_STORAGE:-$PWD/cbl_runs}        # shared filesystem
PORT=${RAY_PORT:-6379}

nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
head=${nodes[0]}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address | awk '{print $1}')
export RAY_ADDRESS="$head_ip:$PORT"

echo "Ray head on $head ($RAY_ADDRESS), ${#nodes[@]} node(s)"
srun --nodes=1 --ntasks=1 -w "$head" \
  ray start --head --node-ip-address="$head_ip" --port="$PORT" \
  --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="${SLURM_GPUS_PER_TASK:-0}" --block &
sleep 10
for node in "${nodes[@]:1}"; do
  srun --nodes=1 --ntasks=1 -w "$node" \
    ray start --address="$RAY_ADDRESS" \
    --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="${SLURM_GPUS_PER_TASK:-0}" --block &
done
sleep 10

# An interrupted job (time limit, preemption) is continued by resubmitting: run --resume
# picks the experiment up where it stopped.
cbl-search run "$SPACE" --storage "$STORAGE" --address "$RAY_ADDRESS" --resume "$@"
