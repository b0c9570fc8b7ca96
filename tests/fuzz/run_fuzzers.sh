#!/usr/bin/env bash
# Runs libFuzzer targets built by `make fuzz` (docs/operations.md, "Fuzzing").
#   tests/fuzz/run_fuzzers.sh BUILD_DIR SECONDS [TARGET...]    (default: every target)
# Each target starts from its seed corpus tests/fuzz/corpus/<target>/ (read-only here) and keeps
# what it finds in BUILD_DIR/fuzz-work/corpus/<target>/; a failing input is written to
# BUILD_DIR/fuzz-work/artifacts/<target>/ and the script exits non-zero after the others ran.
# Extra libFuzzer flags can be given in FUZZ_FLAGS (e.g. FUZZ_FLAGS=-runs=10000000).
set -uo pipefail

build_dir="${1:?usage: run_fuzzers.sh BUILD_DIR SECONDS [TARGET...]}"
seconds="${2:?usage: run_fuzzers.sh BUILD_DIR SECONDS [TARGET...]}"
shift 2
root="$(cd "$(dirname "$0")/../.." && pwd)"
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(fuzz_kserve_json fuzz_kserve_binary fuzz_clipper fuzz_grpc_infer fuzz_safetensors
           fuzz_manifest)
fi

# libFuzzer's own RSS check prints a heap profile first, which takes minutes on a 2 GB heap;
# ASan's hard limit, just below it, stops such an input at once (and it is saved as crash-*).
export ASAN_OPTIONS="${ASAN_OPTIONS:-hard_rss_limit_mb=1900:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

failed=()
for target in "${targets[@]}"; do
  bin="$build_dir/tests/fuzz/$target"
  work="$build_dir/fuzz-work"
  mkdir -p "$work/corpus/$target" "$work/artifacts/$target" "$work/logs"
  log="$work/logs/$target.log"
  echo "fuzz: $target for ${seconds}s (log: $log)"
  # shellcheck disable=SC2086  # FUZZ_FLAGS is a list of flags
  "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/$target/" ${FUZZ_FLAGS:-} \
    "$work/corpus/$target" "$root/tests/fuzz/corpus/$target" >"$log" 2>&1
  rc=$?
  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' \
    "$log" | sed "s/^/fuzz: $target: /"
  if ((rc != 0)); then
    failed+=("$target")
    grep -E 'ERROR|SUMMARY|Test unit written' "$log" | sed "s/^/fuzz: $target: /"
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]} (inputs in $build_dir/fuzz-work/artifacts/)"
  exit 1
fi
echo "fuzz: all targets clean"
