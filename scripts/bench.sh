#!/usr/bin/env bash
# Run every benchmark in bench/ (each prints ratios against an anchor measured in the same run).
set -euo pipefail
cd "$(dirname "$0")/.."
source "${DSSEG_VENV:-.venv}/bin/activate"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((10 + $$ % 90))}
export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$PWD/config/fastdds_shm.xml}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for b in bench/bench_*.py; do
  echo "=== $b"
  python "$b"
done
