#!/usr/bin/env bash
# Packs what perf/device/run.sh needs on a GPU machine that has the NVIDIA driver and the CUDA
# toolkit but none of ferry's other dependencies: stripped copies of the GPU binaries and every
# non-system shared library that they, ferry-agent and the test binaries load, into one archive.
#
#   perf/device/bundle.sh [BUILD_DIR]        (default: build; run from the repository root)
#
# Output, all under BUILD_DIR/device-libs/ (carry that one folder to the GPU machine):
#   bundle.tar.xz   lib/ (shared libraries), bin/ (stripped binaries), plugins/ and, when
#                   models/all-MiniLM-L6-v2 exists (make models), model/all-MiniLM-L6-v2 for the
#                   sentence-embedding checks; run.sh unpacks it
#   MANIFEST.txt    what is inside, with sizes
#
# FERRY_BUNDLE_MODEL: fp16 (default: the model's F32 weights packed as F16, half the size; ferry
# and sentence-transformers both load that same folder, so their comparison is like for like),
# fp32 (the weights as they are) or none (no model: the sentence-embedding device checks skip).
#
# Left out on purpose:
#   - glibc, libstdc++, libgcc_s and the NVIDIA driver (libcuda, libnvidia-*): they must match
#     the machine and are always there;
#   - cuBLAS (libcublas, libcublasLt): libcublasLt alone is over 500 MB and the toolkit ships no
#     static cuBLAS, so run.sh uses the GPU machine's own CUDA toolkit copy;
#   - the CUDA runtime: ferry links it statically (CUDA::cudart_static).
set -euo pipefail

build_dir="${1:-build}"
build_dir="${build_dir%/}"
if [[ ! -d "$build_dir" ]]; then
  echo "bundle.sh: no build folder '$build_dir' (run from the repository root)" >&2
  exit 1
fi
out="$build_dir/device-libs"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/lib" "$stage/bin"

# Binaries run on the GPU machine (copied, stripped) and binaries whose libraries are bundled.
run_bins=(cuda/cuda_kernels_test perf/ferry_gpu_mlp_bench kernels/kernels_runtime_test
  cuda/cuda_bert_kernels_test kernels/kernels_bert_encoder_test perf/ferry_gpu_bert_bench
  node-agent/ferry-agent control-plane/ferry-control perf/control_gpu_check
  kernels/kernels_plugin_runtime_test perf/loadgen/ferry-loadgen)
lib_bins=("${run_bins[@]}" node-agent/ferry-agent)
while IFS= read -r f; do
  lib_bins+=("${f#"$build_dir"/}")
done < <(find "$build_dir" -path "$out" -prune -o -path '*/CMakeFiles' -prune -o \
           -type f -executable -name '*_test' -print | sort)

is_system_lib() {
  case "$1" in
    linux-vdso.so* | ld-linux*.so* | libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | \
      librt.so.* | libutil.so.* | libresolv.so.* | libanl.so.* | libnsl.so.* | libmvec.so.* | \
      libstdc++.so.* | libgcc_s.so.*) return 0 ;;
    libcuda.so* | libnvidia-*.so*) return 0 ;;
    libcublas.so* | libcublasLt.so*) return 0 ;;
  esac
  return 1
}

declare -A seen=()
missing=0
for rel in "${lib_bins[@]}"; do
  bin="$build_dir/$rel"
  if [[ ! -x "$bin" ]]; then
    echo "bundle.sh: note: $bin not built, skipped"
    continue
  fi
  while read -r name arrow path _; do
    [[ "$arrow" == "=>" ]] || continue
    is_system_lib "$name" && continue
    if [[ "$path" == "not" ]]; then
      echo "bundle.sh: $rel needs $name, which is not found here" >&2
      missing=1
      continue
    fi
    [[ -n "${seen[$name]:-}" ]] && continue
    seen[$name]=1
    cp -L "$path" "$stage/lib/$name"
  done < <(ldd "$bin")
done
[[ "$missing" == 0 ]] || exit 1

for rel in "${run_bins[@]}"; do
  bin="$build_dir/$rel"
  if [[ -x "$bin" ]]; then
    strip --strip-debug -o "$stage/bin/$(basename "$rel")" "$bin"
  else
    echo "bundle.sh: $bin is missing; build it first" >&2
    exit 1
  fi
done

# The plugin test loads its test plugins and the example plugins (the GPU one launches its own
# kernel) from folders given by FERRY_TEST_PLUGIN_DIR / FERRY_EXAMPLE_PLUGIN_DIR on the device.
mkdir -p "$stage/plugins/test" "$stage/plugins/examples"
cp "$build_dir"/kernels/test_plugins/*.so "$stage/plugins/test/" 2>/dev/null || true
cp "$build_dir"/plugins/*.so "$stage/plugins/examples/" 2>/dev/null || true

# The sentence-embedding model for the GPU encoder's checks and the sentence-transformers
# comparison (perf/device/bert_st_check.py): nothing is downloaded on the GPU machine.
packed_dirs=(lib bin plugins)
model_src="models/all-MiniLM-L6-v2"
case "${FERRY_BUNDLE_MODEL:-fp16}" in
  none) echo "bundle.sh: FERRY_BUNDLE_MODEL=none: no model packed" ;;
  fp16 | fp32)
    if [[ -f "$model_src/model.safetensors" ]]; then
      python="python3"
      [[ -x "$build_dir/venv/bin/python" ]] && python="$build_dir/venv/bin/python"
      "$python" perf/device/pack_model.py "$model_src" "$stage/model/all-MiniLM-L6-v2" \
        --dtype "${FERRY_BUNDLE_MODEL:-fp16}" || exit 1
      packed_dirs+=(model)
    else
      echo "bundle.sh: note: no $model_src (make models): the sentence-embedding device checks" \
        "will skip"
    fi
    ;;
  *)
    echo "bundle.sh: FERRY_BUNDLE_MODEL must be fp16, fp32 or none" >&2
    exit 1
    ;;
esac

rm -rf "$out"
mkdir -p "$out"
(cd "$stage" && find "${packed_dirs[@]}" -type f -printf '%10s  %p\n' | sort -k2) \
  >"$out/MANIFEST.txt"
# xz shrinks OpenBLAS (its kernels for every x86 generation) about 8x; the carried tree is small.
XZ_OPT="-6 -T2" tar -C "$stage" -cJf "$out/bundle.tar.xz" "${packed_dirs[@]}"

raw=$(du -sb "$stage" | cut -f1)
packed=$(stat -c %s "$out/bundle.tar.xz")
echo "bundle.sh: $(ls "$stage/lib" | wc -l) libraries + $(ls "$stage/bin" | wc -l) binaries," \
  "$((raw / 1048576)) MiB unpacked, $((packed / 1048576)) MiB packed: $out/bundle.tar.xz"
