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
#   gpu_precision.csv       LinearStack at fp32/tf32/bf16/fp16, eager vs CUDA graphs, achieved
#                           TFLOP/s and fraction of the card's peak, per batch size
#   control_gpu.json        ferry-control placed an accelerator: gpu function on the GPU (+ logs)
#   gpu_bert.csv            sentence-embedding GPU encoder (all-MiniLM-L6-v2): tokens/s by batch
#                           and length at fp16/bf16/fp32, fraction of peak, single-request latency;
#                           then the same for sentence-transformers on this GPU
#   gpu_bert_check.json     cosine of ferry's GPU embeddings against sentence-transformers', also
#                           through ferry-agent's POST /embed on the GPU, and that HTTP path's
#                           single-sentence latency
#   pipeline.csv            through the agent under saturating load: rows/s, latency, GPU busy
#                           fraction (agent counter and nvidia-smi), per-stage means, for
#                           pipelineDepth 2 and 1 on the GPU and for a CPU replica (pipeline_check.py)
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
  rm -rf "${bundle:?}/lib" "${bundle:?}/bin" "${bundle:?}/plugins" "${bundle:?}/model"
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
if command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1; then
  # A GPU is here: a test that cannot reach it fails instead of skipping (driver mismatch, a
  # missing library), so this run is not green by accident.
  export FERRY_REQUIRE_GPU=1
  echo "FERRY_REQUIRE_GPU=1 (nvidia-smi works: GPU tests must not skip)"
  nvidia-smi
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
else
  echo "nvidia-smi: missing or failing (no usable NVIDIA driver here)"
fi

section "cuda_kernels_test"
gtest_args=()
[[ -n "${OUT:-}" ]] && gtest_args+=("--gtest_output=xml:$results/cuda_kernels_test.xml")
timeout 180 "$tests_bin" "${gtest_args[@]}"
test_rc=$?
echo "cuda_kernels_test exit status: $test_rc"
[[ "$test_rc" == 0 ]] || status=1

section "ferry_gpu_mlp_bench"
timeout 300 "$bench_bin" --csv "$results/gpu_mlp.csv" \
  --precision-csv "$results/gpu_precision.csv" --runs "${FERRY_BENCH_RUNS:-200}"
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

# The sentence-embedding runtime's GPU encoder: its kernels and the whole encoder against CPU
# references (random models), then the real model (packed by bundle.sh) against
# sentence-transformers, and the throughput of both. About 2 minutes.
section "cuda_bert_kernels_test (BERT kernels and GpuBert vs CPU references)"
timeout 150 "$(bin_path cuda/cuda_bert_kernels_test)"
bert_rc=$?
echo "cuda_bert_kernels_test exit status: $bert_rc"
[[ "$bert_rc" == 0 ]] || status=1

section "kernels_bert_encoder_test (GPU encoder vs the CPU encoder at every precision)"
timeout 150 "$(bin_path kernels/kernels_bert_encoder_test)"
enc_rc=$?
echo "kernels_bert_encoder_test exit status: $enc_rc"
[[ "$enc_rc" == 0 ]] || status=1

section "sentence-embedding on the GPU: ferry_gpu_bert_bench and sentence-transformers"
model_dir=""
for d in "$bundle/model/all-MiniLM-L6-v2" models/all-MiniLM-L6-v2; do
  [[ -f "$d/model.safetensors" ]] && model_dir="$d" && break
done
bert_bench_bin="$(bin_path perf/ferry_gpu_bert_bench)"
if [[ -z "$model_dir" ]]; then
  echo "skipped: no all-MiniLM-L6-v2 folder (make models before perf/device/bundle.sh)"
elif [[ -z "${FERRY_REQUIRE_GPU:-}" ]]; then
  echo "skipped: no usable GPU here"
else
  rm -f "$results/gpu_bert.csv"
  timeout 150 "$bert_bench_bin" bench "$model_dir" --csv "$results/gpu_bert.csv"
  bert_bench_rc=$?
  echo "ferry_gpu_bert_bench exit status: $bert_bench_rc"
  [[ "$bert_bench_rc" == 0 ]] || status=1
  PYTHONUNBUFFERED=1 timeout 240 python3 perf/device/bert_st_check.py \
    --bench-bin "$bert_bench_bin" --model "$model_dir" --csv "$results/gpu_bert.csv" \
    --check-json "$results/gpu_bert_check.json" --agent-bin "$agent_bin" \
    --log-dir "$(mktemp -d)"
  st_rc=$?
  echo "bert_st_check exit status: $st_rc (cosine floors: fp32 0.99999, fp16/bf16 0.999)"
  [[ "$st_rc" == 0 ]] || status=1
fi

section "pipeline: GPU busy fraction through the agent, pipelineDepth 2 vs 1, vs the CPU replica"
loadgen_bin="$(bin_path perf/loadgen/ferry-loadgen)"
if [[ -z "${FERRY_REQUIRE_GPU:-}" ]]; then
  echo "pipeline_check: skipped, no usable GPU here"
elif [[ ! -x "$loadgen_bin" ]]; then
  echo "pipeline_check: $loadgen_bin missing (build ferry-loadgen before bundle.sh)"
  status=1
elif python3 -c 'import numpy' 2>/dev/null; then
  PYTHONUNBUFFERED=1 timeout 300 python3 perf/device/pipeline_check.py "$agent_bin" \
    "$loadgen_bin" "$results"
  pipe_rc=$?
  echo "pipeline_check exit status: $pipe_rc (results in pipeline.csv; goal: busy >= 0.90 on)"
  [[ "$pipe_rc" == 0 ]] || status=1
else
  echo "pipeline_check: skipped, python3 has no numpy here"
fi

section "done in $((SECONDS - start_s)) s, status $status"
exit "$status"
