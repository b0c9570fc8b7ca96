#!/usr/bin/env bash
# Installs the serving systems that perf/bench_peers.py compares ferry with, each with pip into
# its own virtualenv under $PEERS_DIR/<name>/ (default build/peers): Seldon MLServer, Ray Serve,
# NVIDIA PyTriton and BentoML. Idempotent: a virtualenv whose packages import is left alone.
# A peer that fails to install is reported (its pip log is kept) and the others go on; the
# script exits 0 so that `make bench-peers` still measures those that installed.
#
#   perf/peers/install.sh [PEER...]     # default: mlserver rayserve pytriton bentoml
set -u
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PEERS_DIR="${PEERS_DIR:-$ROOT/build/peers}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$PEERS_DIR"

# name -> pip requirements, and the import that proves the install.
declare -A REQS=(
  [mlserver]="mlserver numpy"
  [rayserve]="ray[serve] numpy"
  [pytriton]="nvidia-pytriton numpy"
  [bentoml]="bentoml numpy"
)
declare -A PROBE=(
  [mlserver]="import mlserver"
  [rayserve]="from ray import serve"
  [pytriton]="from pytriton.triton import Triton"
  [bentoml]="import bentoml"
)

peers=("$@")
[ ${#peers[@]} -eq 0 ] && peers=(mlserver rayserve pytriton bentoml)
for name in "${peers[@]}"; do
  if [ -z "${REQS[$name]:-}" ]; then
    echo "install: unknown peer '$name' (mlserver rayserve pytriton bentoml)" >&2
    continue
  fi
  venv="$PEERS_DIR/$name"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "${PROBE[$name]}" 2>/dev/null; then
    echo "install: $name present ($venv)"
    continue
  fi
  echo "install: $name into $venv (pip install ${REQS[$name]})"
  rm -rf "$venv"
  if ! "$PYTHON" -m venv "$venv" > "$PEERS_DIR/$name.install.log" 2>&1; then
    echo "install: $name: virtualenv failed, see $PEERS_DIR/$name.install.log" >&2
    continue
  fi
  # shellcheck disable=SC2086
  if "$venv/bin/python" -m pip install --quiet ${REQS[$name]} >> "$PEERS_DIR/$name.install.log" 2>&1 &&
     "$venv/bin/python" -c "${PROBE[$name]}" >> "$PEERS_DIR/$name.install.log" 2>&1; then
    echo "install: $name ok"
  else
    echo "install: $name FAILED; last lines of $PEERS_DIR/$name.install.log:" >&2
    tail -5 "$PEERS_DIR/$name.install.log" >&2
  fi
done
exit 0
