#!/bin/bash
# A Ray cluster inside a SLURM allocation (as Ray's docs describe), then a resablate sweep on it.
#   sbatch clusters/slurm.sh sweeps/shortcut_depth.yaml
# MLFLOW_TRACKING_URI must name an MLflow server every node reaches (clusters/README.md).
#SBATCH --job-name=resablate
#SBATCH --nodes=3
#SBATCH --exclusive
#SBATCH --tasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --gpus-per-task=1
#SBATCH --time=24:00:00
set -euo pipefail
SWEEP=${1:?usage: sbatch clusters/slurm.sh SWEEP.yaml [resablate sweep options]}
shift
: "${MLFLOW_TRACKING_URI:?set MLFLOW_TRACKING_URI to your MLflow server}"

# this package in the job's environment (a venv on shared storage, made once)
python -m pip install --quiet -e "${SLURM_SUBMIT_DIR:-.}"

# token authentication: a fresh token per job, in the environment of every step, never on disk
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$(python -c "import secrets; print(secrets.token_hex(32))")
export RAY_AUTH_TOKEN

nodes=$(scontrol show hostnames "$SLURM_JOB_NODELIST")
read -r -a hosts <<< "$(echo $nodes)"
head=${hosts[0]}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address | awk '{print $1}')
port=6379

srun --nodes=1 --ntasks=1 -w "$head" \
  ray start --head --node-ip-address="$head_ip" --port=$port --dashboard-host=127.0.0.1 \
  --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus=1 --block &
sleep 20
for host in "${hosts[@]:1}"; do
  srun --nodes=1 --ntasks=1 -w "$host" \
    ray start --address="$head_ip:$port" --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus=1 --block &
  sleep 5
done

resablate sweep "$SWEEP" --address "$head_ip:$port" --tracking-uri "$MLFLOW_TRACKING_URI" "$@"
