#!/usr/bin/env bash
# Set up everything dsseg needs on a fresh machine, into ./.venv. Safe to run again: it does
# nothing when the requirement files have not changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DSSEG_VENV:-.venv}
PY=${PYTHON:-python3}

log() { printf '[setup] %s\n' "$*" >&2; }

# System libraries: open3d needs libusb; torch/open3d need libgomp.
need_apt=()
for lib in libusb-1.0.so.0 libgomp.so.1; do
  ldconfig -p 2>/dev/null | grep -q "$lib" || need_apt+=("$lib")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing system packages (libusb-1.0-0 libgomp1)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 libgomp1 >/dev/null
  else
    log "missing system libraries ${need_apt[*]}: install libusb-1.0-0 and libgomp1 with your"
    log "package manager (open3d-based features will be unavailable until then)"
  fi
fi

stamp="$VENV/.dsseg-setup"
want=$(cat requirements/ci.txt requirements/no-deps.txt setup.py | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  log "environment up to date ($VENV)"
  exit 0
fi

[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
log "installing pinned requirements (torch CPU, ROS 2 wheels, ...): a few minutes on first run"
"${pip[@]}" install --upgrade pip setuptools wheel
"${pip[@]}" install -r requirements/ci.txt
"${pip[@]}" install --no-deps -r requirements/no-deps.txt
"${pip[@]}" install --no-deps --no-build-isolation -e .

# No CPU torchvision wheel exists here, and timm/open_clip import it. On machines without
# one, point the venv at the minimal stand-in kept in the test tree (never packaged).
if ! "$VENV/bin/python" -c 'import torchvision' 2>/dev/null; then
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$PWD/test/stubs" > "$site/dsseg-torchvision-stub.pth"
  log "torchvision not installed: using the test-tree stand-in (test/stubs/torchvision)"
fi
echo "$want" > "$stamp"
log "done: activate with 'source $VENV/bin/activate'"
