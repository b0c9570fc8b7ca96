// The fault registry of health.h; compiled in every build (the CUDA probe lives in device.cc).
#include "cuda/health.h"

#include <atomic>
#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace ferry::cuda {
namespace {

struct Registry {
  // True once any device has a fault: GpuHealth runs on every request of a GPU function, and a
  // healthy process (the usual case) answers it from this flag without the lock.
  std::atomic<bool> any_fault{false};
  absl::Mutex mu;
  std::map<int, std::string> faults ABSL_GUARDED_BY(mu);  // device -> first reason
  int64_t count ABSL_GUARDED_BY(mu) = 0;
};

Registry& Get() {
  static Registry* const registry = new Registry();  // never destroyed: usable at exit
  return *registry;
}

}  // namespace

void ReportGpuFault(int device, std::string_view reason) {
  Registry& r = Get();
  absl::MutexLock lock(&r.mu);
  ++r.count;
  r.faults.emplace(device, std::string(reason));
  r.any_fault.store(true, std::memory_order_release);
}

absl::Status GpuHealth(int device) {
  Registry& r = Get();
  if (!r.any_fault.load(std::memory_order_acquire)) return absl::OkStatus();
  absl::MutexLock lock(&r.mu);
  auto it = r.faults.find(device);
  if (it == r.faults.end()) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat("GPU ", device, " is unusable: its CUDA context is poisoned by a sticky error (",
                   it->second, "); restart the agent"));
}

bool AllGpusHealthy() {
  Registry& r = Get();
  absl::MutexLock lock(&r.mu);
  return r.faults.empty();
}

int64_t GpuFaultCount() {
  Registry& r = Get();
  absl::MutexLock lock(&r.mu);
  return r.count;
}

std::string GpuHealthPrometheusText() {
  Registry& r = Get();
  absl::MutexLock lock(&r.mu);
  std::string out =
      "# HELP ferry_gpu_context_errors_total Sticky CUDA errors that poisoned a GPU's context.\n"
      "# TYPE ferry_gpu_context_errors_total counter\n";
  absl::StrAppend(&out, "ferry_gpu_context_errors_total ", r.count, "\n");
  if (!r.faults.empty()) {
    absl::StrAppend(&out,
                    "# HELP ferry_gpu_healthy 0 for a GPU whose CUDA context is poisoned.\n"
                    "# TYPE ferry_gpu_healthy gauge\n");
    for (const auto& [device, reason] : r.faults) {
      absl::StrAppend(&out, "ferry_gpu_healthy{gpu=\"", device, "\"} 0\n");
    }
  }
  return out;
}

void ResetGpuHealthForTest() {
  Registry& r = Get();
  absl::MutexLock lock(&r.mu);
  r.faults.clear();
  r.count = 0;
  r.any_fault.store(false, std::memory_order_release);
}

}  // namespace ferry::cuda
