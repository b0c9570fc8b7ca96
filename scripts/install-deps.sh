#!/usr/bin/env bash
# Idempotent dependency installer for ferry, used by `make up` and `make test`.
# Debian packages come from apt-get; Python test clients go into a virtualenv under the build
# folder. Nothing else is downloaded.
set -euo pipefail

BUILD_DIR="${1:-build}"
DEB_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git curl
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  nlohmann-json3-dev libsimdjson-dev libyaml-cpp-dev libboost-dev libopenblas-dev prometheus-cpp-dev
  libsqlite3-dev libutf8proc-dev libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev wrk python3-venv
  linux-perf
  clang-16
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "install-deps: installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: Debian packages present"
fi

VENV="$BUILD_DIR/venv"
# Test clients (tritonclient, requests, pytest), the examples' weight writer (safetensors, numpy)
# and the benchmark's peer and plots (pyzmq, matplotlib); the reference WordPiece tokenizer that
# ferry's is checked against (tokenizers); the OpenAI client that /v1/embeddings is tested with
# (openai).
PY_PACKAGES=("tritonclient[http,grpc]==2.*" numpy pytest requests safetensors pyzmq matplotlib
  "tokenizers==0.23.*" openai)
stamp="$(printf '%s\n' "${PY_PACKAGES[@]}")"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.ferry-packages" 2>/dev/null)" != "$stamp" ]; then
  echo "install-deps: preparing the Python virtualenv in $VENV"
  mkdir -p "$BUILD_DIR"
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
  fi
  "$VENV/bin/python" -m pip install -q "${PY_PACKAGES[@]}"
  printf '%s' "$stamp" > "$VENV/.ferry-packages"
else
  echo "install-deps: Python virtualenv present"
fi
