// Whether each GPU's CUDA context is still usable, process-wide, as plain C++.
//
// Some CUDA errors are "sticky": an illegal address, a kernel that traps or asserts, a launch
// timeout, an uncorrectable ECC error. After one, the context of that GPU is poisoned: every
// later CUDA call in the process on that device fails the same way, and only a new process gets a
// working context. The agent therefore marks the functions on that GPU not ready and reports
// itself not live, so that an orchestrator restarts it.
//
// Thread-safe; the state only ever goes from healthy to faulted (except in tests).
#ifndef FERRY_CUDA_HEALTH_H_
#define FERRY_CUDA_HEALTH_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace ferry::cuda {

// Records that GPU `device`'s context is poisoned. The first reason for a device is kept; every
// report is counted.
void ReportGpuFault(int device, std::string_view reason);

// OK while `device` has no recorded fault, else Unavailable("GPU <d> is unusable: <reason> ...").
absl::Status GpuHealth(int device);

// true while no GPU has a recorded fault.
bool AllGpusHealthy();

// Sticky errors reported since the process started (or the last reset).
int64_t GpuFaultCount();

// Prometheus text: ferry_gpu_context_errors_total (counter) and ferry_gpu_healthy{gpu} (gauge,
// one per faulted GPU, 0) — the counter is always present so alerts can rate() it.
std::string GpuHealthPrometheusText();

// Called after a GPU path on `device` failed: decides whether the failure poisoned the
// context. It clears the non-sticky "last error", synchronises the device (an error path: it
// waits for the device's outstanding work, so buffers can be released safely afterwards) and, if
// the device still reports an error, records the fault (ReportGpuFault) and returns
// GpuHealth(device). OK when the device is still usable. Blocks. Without CUDA in the build: OK.
absl::Status CheckGpuAfterError(int device);

// Tests only: forgets every fault and the count.
void ResetGpuHealthForTest();

}  // namespace ferry::cuda

#endif  // FERRY_CUDA_HEALTH_H_
