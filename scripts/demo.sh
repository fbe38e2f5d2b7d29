#!/usr/bin/env bash
# The main job on the sample bag shipped in data/: pseudo-labels -> gallery -> training ->
# export -> 2D->3D labels -> 3D student -> replay through the ROS 2 nodes -> report.
# Run by `make demo` after scripts/setup_env.sh. Output: demo_out/ (DSSEG_DEMO_OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${DSSEG_VENV:-.venv}
# shellcheck disable=SC1091
source "$VENV/bin/activate"

# Network rule: DDS discovery stays on this machine, with a domain id of our own.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${DSSEG_DEMO_DOMAIN_ID:-$((10 + $$ % 90))}
export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$ROOT/config/fastdds_shm.xml}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}

BAG=${DSSEG_DEMO_BAG:-data/sample_kitti}
CFG=${DSSEG_DEMO_CONFIG:-config/demo.yaml}
OUT=${DSSEG_DEMO_OUT:-demo_out}
rm -rf "$OUT"
mkdir -p "$OUT"
TIMINGS=$OUT/timings.json
echo '{}' > "$TIMINGS"
STEPS=9
n=0
t_start=$(date +%s)

stage() {
  local name=$1
  shift
  n=$((n + 1))
  printf '\n==> [%d/%d] %s\n    $ %s\n' "$n" "$STEPS" "$name" "$*"
  local t0 t1
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  python - "$TIMINGS" "$name" "$t0" "$t1" <<'PY'
import json, sys
path, name, t0, t1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
data = json.load(open(path))
data[name] = round(t1 - t0, 2)
json.dump(data, open(path, 'w'), indent=1)
print(f'    done in {t1 - t0:.1f} s')
PY
}

stage 'calibration check: LiDAR on camera' \
  dsseg frames "$BAG" --out "$OUT/frames" --max-frames 4
echo
echo '(The first run on a machine compiles dsseg'"'"'s numba kernels as they are first used, about a'
echo ' minute in all, mostly in the next step; they are cached in ~/.cache/dsseg for later runs.)'
stage 'pseudo-labels (ground + proposals + k-means)' \
  dsseg pseudo-label "$BAG" --out "$OUT/dataset" --config "$CFG"
stage 'pseudo-class gallery' \
  dsseg gallery "$OUT/dataset"
stage 'train the image segmenter (short CPU run)' \
  dsseg train "$OUT/dataset" --out "$OUT/run" --config "$CFG"
stage 'export to ONNX (checked against eager)' \
  dsseg export "$OUT/run" --format onnx --out "$OUT/run/model.onnx"
stage '2D->3D label transfer + geometric smoothing' \
  dsseg label-points "$BAG" --model "$OUT/run/model.onnx" --out "$OUT/points" --config "$CFG"
stage 'train the 3D student (short CPU run)' \
  dsseg train-3d "$OUT/points" --out "$OUT/run3d" --config "$CFG"
stage 'replay the bag through the ROS 2 nodes, recording their outputs' \
  dsseg run --config config/dsseg.yaml --replay "$BAG" --model "$OUT/run/model.onnx" \
  --student "$OUT/run3d" --rate 0.1 \
  --record "$OUT/replay_bag"
stage 'report' \
  dsseg report "$BAG" --out "$OUT/report" --recorded "$OUT/replay_bag" --run "$OUT/run" \
  --dataset "$OUT/dataset" --timings "$TIMINGS"

printf '\nDemo finished in %d s.\n' "$(( $(date +%s) - t_start ))"
printf 'Pictures:\n'
printf '  report        %s\n' "$ROOT/$OUT/report/index.html"
printf '  gallery       %s\n' "$ROOT/$OUT/dataset/gallery/gallery.html"
printf '  LiDAR overlay %s\n' "$ROOT/$OUT/frames/"
