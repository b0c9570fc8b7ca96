#!/usr/bin/env bash
# The GPU check of ferry, in one run of a few minutes: GPU facts, the CUDA unit tests, and the
# GpuMlp micro-benchmark against OpenBLAS.
#
#   perf/device/run.sh            (from the repository root)
#
# Expects a build made elsewhere with perf/device/bundle.sh run afterwards, so that
# build/device-libs/ holds bundle.tar.xz (binaries and their shared libraries); the GPU machine
# needs only the NVIDIA driver and the CUDA toolkit's cuBLAS. Without the bundle it runs the
# binaries straight from build/. Results go to $OUT when set, else perf/results/:
#   cuda_kernels_test.xml   GoogleTest report
#   gpu_mlp.csv             benchmark table
#   control_gpu.json        ferry-control placed an accelerator: gpu function on the GPU (+ logs)
# Environment: FERRY_BUILD_DIR (default build), FERRY_BENCH_RUNS (default 200).
# Exit status: non-zero when a test fails or a binary cannot start; on a machine without a GPU
# the tests skip and the benchmark says "no GPU", and the script succeeds.
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 1
build_dir="${FERRY_BUILD_DIR:-build}"
bundle="$build_dir/device-libs"
results="${OUT:-perf/results}"
mkdir -p "$results"
start_s=$SECONDS

section() { printf '\n==== %s ====\n' "$*"; }

section "unpack"
bin_dir=""
if [[ -f "$bundle/bundle.tar.xz" ]]; then
  rm -rf "${bundle:?}/lib" "${bundle:?}/bin" "${bundle:?}/plugins"
  if command -v xz >/dev/null; then
    tar -C "$bundle" -xJf "$bundle/bundle.tar.xz" || exit 1
  else
    # Some images lack xz(1); Python's tarfile reads .tar.xz by itself.
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
      "$bundle/bundle.tar.xz" "$bundle" || exit 1
  fi
  bin_dir="$bundle/bin"
  export LD_LIBRARY_PATH="$PWD/$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "bundle: $(ls "$bundle/lib" | wc -l) libraries, binaries from $bin_dir"
else
  echo "no $bundle/bundle.tar.xz: running binaries from $build_dir with the system's libraries"
fi

bin_path() {  # bin_path <path under the build folder>
  if [[ -n "$bin_dir" && -x "$bin_dir/$(basename "$1")" ]]; then
    echo "$bin_dir/$(basename "$1")"
  else
    echo "$build_dir/$1"
  fi
}
tests_bin="$(bin_path cuda/cuda_kernels_test)"
bench_bin="$(bin_path perf/ferry_gpu_mlp_bench)"

# cuBLAS is not bundled (libcublasLt is over 500 MB): use the machine's CUDA toolkit or the
# cuBLAS that a Python CUDA wheel brought. The loader may already know one (ldconfig, RUNPATH).
# ferry loads it with dlopen, so it must be on the loader's path.
if ! ldconfig -p 2>/dev/null | grep -q 'libcublas.so.13 '; then
  cublas="$(find "${CUDA_HOME:-/usr/local/cuda}/" /usr/local /opt /usr/lib /usr/lib64 \
    -name 'libcublas.so.13' \( -type f -o -type l \) 2>/dev/null | head -n 1)"
  if [[ -n "$cublas" ]]; then
    cublas_dir="$(dirname "$cublas")"
    export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$cublas_dir"
    echo "cuBLAS: $cublas_dir"
  fi
fi

status=0
for b in "$tests_bin" "$bench_bin"; do
  if [[ ! -x "$b" ]]; then
    echo "missing $b: build it and run perf/device/bundle.sh first" >&2
    exit 1
  fi
  if ldd "$b" | grep 'not found'; then
    echo "$b cannot start: the libraries above are missing" >&2
    status=1
  fi
done
[[ "$status" == 0 ]] || exit 1

section "GPU"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
else
  echo "nvidia-smi: not found (no NVIDIA driver here)"
fi

section "cuda_kernels_test"
gtest_args=()
[[ -n "${OUT:-}" ]] && gtest_args+=("--gtest_output=xml:$results/cuda_kernels_test.xml")
timeout 180 "$tests_bin" "${gtest_args[@]}"
test_rc=$?
echo "cuda_kernels_test exit status: $test_rc"
[[ "$test_rc" == 0 ]] || status=1

section "ferry_gpu_mlp_bench"
timeout 240 "$bench_bin" --csv "$results/gpu_mlp.csv" --runs "${FERRY_BENCH_RUNS:-200}"
bench_rc=$?
echo "ferry_gpu_mlp_bench exit status: $bench_rc"
[[ "$bench_rc" == 0 ]] || status=1

section "kernels_runtime_test (mlp runtime on the GPU)"
runtime_bin="$(bin_path kernels/kernels_runtime_test)"
timeout 120 "$runtime_bin" ${OUT:+--gtest_output=xml:$results/kernels_runtime_test.xml}
rt_rc=$?
echo "kernels_runtime_test exit status: $rt_rc"
[[ "$rt_rc" == 0 ]] || status=1

section "kernels_plugin_runtime_test (C plugin ABI; the GPU example plugin on this GPU)"
plugin_bin="$(bin_path kernels/kernels_plugin_runtime_test)"
if [[ -n "$bin_dir" ]]; then
  export FERRY_TEST_PLUGIN_DIR="$PWD/$bundle/plugins/test"
  export FERRY_EXAMPLE_PLUGIN_DIR="$PWD/$bundle/plugins/examples"
fi
timeout 120 "$plugin_bin" ${OUT:+--gtest_output=xml:$results/kernels_plugin_runtime_test.xml}
plugin_rc=$?
echo "kernels_plugin_runtime_test exit status: $plugin_rc"
[[ "$plugin_rc" == 0 ]] || status=1

section "ferry-agent serving an MLP on the GPU and on the CPU"
agent_bin="$(bin_path node-agent/ferry-agent)"
if ! command -v nvidia-smi >/dev/null; then
  echo "agent_gpu_check: skipped, no GPU here"
elif python3 -c 'import numpy' 2>/dev/null; then
  timeout 180 python3 perf/device/agent_gpu_check.py "$agent_bin" "$results"
  agent_rc=$?
  echo "agent_gpu_check exit status: $agent_rc"
  [[ "$agent_rc" == 0 ]] || status=1
else
  echo "agent_gpu_check: skipped, python3 has no numpy here"
fi

section "ferry-control placing an accelerator: gpu function on this GPU (end to end)"
control_check_bin="$(bin_path perf/control_gpu_check)"
timeout 150 "$control_check_bin" --control-bin "$(bin_path control-plane/ferry-control)" \
  --agent-bin "$agent_bin" --out "$results"
control_rc=$?
echo "control_gpu_check exit status: $control_rc (2 = no GPU here, skipped)"
[[ "$control_rc" == 0 || "$control_rc" == 2 ]] || status=1

section "done in $((SECONDS - start_s)) s, status $status"
exit "$status"
