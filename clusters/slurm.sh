#!/bin/bash
# A Ray cluster inside a SLURM allocation (as Ray's docs describe), then a resablate sweep on it.
#   MLFLOW_TRACKING_URI=http://mlflow.internal:5000 sbatch clusters/slurm.sh sweeps/shortcut_depth.yaml
# MLFLOW_TRACKING_URI must name an MLflow server every node reaches (clusters/README.md). Paths
# every node of the allocation must see (a shared home does, as on most clusters):
#   RESABLATE_VENV     the venv jobs share (default ~/.venvs/resablate), installed once
#   RESABLATE_STORAGE  checkpoints and trial folders (default ~/resablate-storage), --storage
#   RESABLATE_DATA     torchvision data sets, when a sweep reads one (data.root otherwise)
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
PROJECT=${SLURM_SUBMIT_DIR:-$PWD}
VENV=${RESABLATE_VENV:-$HOME/.venvs/resablate}
STORAGE=${RESABLATE_STORAGE:-$HOME/resablate-storage}

# This package, installed once into a venv every job shares (again when the checkout or its
# pyproject.toml changes); the lock keeps two jobs that start together from installing at once.
stamp="$PROJECT $(sha256sum "$PROJECT/pyproject.toml" | cut -d' ' -f1)"
mkdir -p "$(dirname "$VENV")"
(
  flock 9
  if [ "$(cat "$VENV/.resablate-installed" 2>/dev/null)" != "$stamp" ]; then
    [ -x "$VENV/bin/pip" ] || python3 -m venv --clear "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e "$PROJECT"
    echo "$stamp" > "$VENV/.resablate-installed"  # written last: a killed install runs again
  fi
) 9> "$VENV.lock"
# shellcheck disable=SC1091
source "$VENV/bin/activate"  # srun passes this environment (PATH: the venv's ray) to each step

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

# the sweep checks that every node sees the storage (and the data sets) before it starts
resablate sweep "$SWEEP" --address "$head_ip:$port" --tracking-uri "$MLFLOW_TRACKING_URI" \
  --storage "$STORAGE" "$@"
