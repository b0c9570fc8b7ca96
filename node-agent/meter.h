// Pay-per-use metering inside the node agent: per function, the requests that ran, and the busy
// time of the executors split across them.
//
// Each executed batch's execution time (measured by the caller on its injected clock around
// Runtime::Execute; for a pipelined runtime, the batch's share of its device's busy time, see
// batching/pipeline.h) is divided among the batch's requests in proportion to their cost (rows, or
// tokens for text) with largest-remainder rounding to whole microseconds, so that the charges of a
// batch add up to its execution time exactly, and over time a function's charges add up to the
// executors' busy time exactly. The time goes to GPU-seconds when the replica runs on a GPU and to
// CPU-seconds otherwise. Requests the agent sends itself (profiling after a load) are not
// charged: their share is counted as overhead. Model load time is counted apart (load_us) and not
// charged to requests. Quantities are kept in microseconds; seconds and the 1 ms display
// granularity are for presentation only.
//
// The counters are cumulative for the life of the agent process (a function keeps its counters
// across reloads); the heartbeat carries them with a random epoch per process, so the control
// plane can take differences and recognise a restart.
#ifndef FERRY_NODE_AGENT_METER_H_
#define FERRY_NODE_AGENT_METER_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

namespace ferry::agent {

// Splits `busy_us` (>= 0) across requests in proportion to `costs` (each >= 1). Every share is
// the exact proportional share rounded down or up by less than 1 us (largest remainder; ties go to
// the earlier request), and the shares sum to `busy_us` exactly. Empty `costs` gives an empty
// result.
std::vector<int64_t> SplitBusyTime(int64_t busy_us, absl::Span<const int64_t> costs);

// Upper bounds (us) of the latency histogram's buckets: ten per decade from 10 us to 100 s, so a
// percentile read from it is within one bucket (26%) of the truth. A last, unbounded bucket
// follows.
inline constexpr int kLatencyBuckets = 71;
const std::array<int64_t, kLatencyBuckets>& LatencyBoundsUs();

// One function's cumulative counters.
struct FunctionUsageSnapshot {
  std::string function;
  int64_t requests = 0;     // metered requests that ran in a batch
  int64_t cost_units = 0;   // their total cost
  int64_t cpu_us = 0;       // busy time charged to them on CPUs
  int64_t gpu_us = 0;       // ... on GPUs
  int64_t load_us = 0;      // model load time, not charged
  int64_t overhead_us = 0;  // busy time of the agent's own (unmetered) requests
  int64_t batches = 0;
  // Latency of metered requests that ran, per bucket of LatencyBoundsUs() plus the unbounded
  // one (kLatencyBuckets + 1 entries).
  std::vector<int64_t> latency_counts;

  int64_t busy_us() const { return cpu_us + gpu_us + overhead_us; }
};

// One function's meter. Thread-safe; the methods take a short lock (or none).
class FunctionMeter {
 public:
  explicit FunctionMeter(std::string function) : function_(std::move(function)) {}

  // One executed batch: `busy_us` of execution, requests of `costs`; `metered[i]` false marks a
  // request of the agent's own (its share is overhead). Returns each request's charge in us
  // (summing to busy_us).
  std::vector<int64_t> RecordBatch(int64_t busy_us, absl::Span<const int64_t> costs,
                                   absl::Span<const bool> metered, bool on_gpu);
  // A model load that took `load_us`.
  void RecordLoad(int64_t load_us);
  // The end-to-end latency inside the agent of one metered request that ran.
  void RecordLatency(int64_t request_us);

  FunctionUsageSnapshot Snapshot() const;

 private:
  const std::string function_;
  mutable absl::Mutex mu_;
  FunctionUsageSnapshot counters_ ABSL_GUARDED_BY(mu_);
  std::array<std::atomic<int64_t>, kLatencyBuckets + 1> latency_{};
};

// The agent's meters, one per function name, created on first use. Thread-safe.
class Meter {
 public:
  // `epoch` identifies this process's counters; 0 picks a random non-zero one.
  explicit Meter(uint64_t epoch = 0);

  uint64_t epoch() const { return epoch_; }
  // Never null; the address is stable for the Meter's life.
  FunctionMeter* ForFunction(const std::string& function);
  // Every function's counters, sorted by name.
  std::vector<FunctionUsageSnapshot> Snapshot() const;
  // Prometheus text exposition (version 0.0.4) of the ferry_function_* metering metrics.
  std::string PrometheusText() const;

 private:
  const uint64_t epoch_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<FunctionMeter>> functions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_METER_H_
