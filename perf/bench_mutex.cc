// Cost of an uncontended absl::Mutex lock/unlock with abseil's debug deadlock detection on (the
// default of some builds, Debian's among them) and off (what ferry-agent and ferry-control set
// at start; docs/perf.md, "Mutex deadlock detection").
//   build/perf/bench_mutex
#include "absl/synchronization/mutex.h"
#include "benchmark/benchmark.h"

namespace {

void LockUnlock(benchmark::State& state, absl::OnDeadlockCycle mode) {
  absl::SetMutexDeadlockDetectionMode(mode);
  absl::Mutex mu;
  for (auto _ : state) {
    mu.Lock();
    mu.Unlock();
  }
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kAbort);
}

void BM_MutexDeadlockDetectionOn(benchmark::State& state) {
  LockUnlock(state, absl::OnDeadlockCycle::kAbort);
}
BENCHMARK(BM_MutexDeadlockDetectionOn);

void BM_MutexDeadlockDetectionOff(benchmark::State& state) {
  LockUnlock(state, absl::OnDeadlockCycle::kIgnore);
}
BENCHMARK(BM_MutexDeadlockDetectionOff);

}  // namespace

BENCHMARK_MAIN();
