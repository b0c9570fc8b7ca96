// Metering in the control plane: usage per function and node, priced and kept per minute.
//
// Agents send, in every heartbeat, each function's cumulative counters since the agent process
// started (requests, CPU/GPU microseconds charged to requests, load and overhead microseconds, a
// latency histogram) with a random epoch per process. The ledger takes the difference from the
// last counters it saw for that node and function (its baseline). A new epoch, or a counter that
// went down, means the agent restarted: the counters started again from zero, so all of them are
// new usage.
//
// Each difference is priced with the node's price per hour, split the way placement's cost model
// splits it (control-plane/placement.h): a GPU-second costs price / (GPUs on the node) / 3600, a
// CPU-second price / (usable cores) / 3600; load and overhead time are not charged. It is added
// to the row of (current Unix minute, function, node).
//
// Persistence: every flush_interval_ms the new rows are added in the state store together with
// the baselines they were taken against, in one transaction. After a restart (even kill -9) the
// ledger reloads the baselines, so what an agent counted before the last flush is not counted
// again and what it counted after is taken from its next heartbeat: nothing is lost or counted
// twice unless an agent restarts while the control plane is down (its unreported counters die
// with it). A store without usage support (StateStore::AddUsage Unimplemented) keeps usage in
// memory only.
//
// Thread-safe.
#ifndef FERRY_CONTROL_PLANE_USAGE_H_
#define FERRY_CONTROL_PLANE_USAGE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "control-plane/state_store.h"
#include "ferry/clock.h"
#include "ferry_control.pb.h"

namespace ferry::control {

// Unix-epoch microseconds from the system clock (wall time: usage rows outlive the process).
class SystemClock final : public Clock {
 public:
  static Clock* Get();  // process-wide, never deleted
  int64_t NowMicros() const override;
};

struct UsageLedgerOptions {
  StateStore* store = nullptr;  // not owned; required
  Clock* wall_clock = nullptr;  // Unix-epoch microseconds; not owned; nullptr = SystemClock
  int64_t flush_interval_ms = 1000;
};

// What a node's usage is priced with (from its registration).
struct NodePricing {
  double price_per_hour = 0;  // dollars
  double cpu_cores = 0;
  int gpus = 0;
};

// Estimates the q-quantile (0..1) of a latency histogram (bucket upper bound us -> count, bound 0
// = unbounded) by linear interpolation inside the bucket it falls in; in milliseconds. 0 when
// empty; a quantile in the unbounded bucket reads as the largest bound.
double HistogramQuantileMs(const std::map<int64_t, int64_t>& latency, double q);

class UsageLedger {
 public:
  // Loads the stored baselines. Blocks on the store.
  static absl::StatusOr<std::unique_ptr<UsageLedger>> Create(const UsageLedgerOptions& options);

  // One heartbeat of `node`: takes the differences of its counters. Never blocks on the store.
  void Ingest(const std::string& node, const NodePricing& pricing, uint64_t epoch,
              const google::protobuf::RepeatedPtrField<v1::FunctionUsage>& usage);

  // Writes what was ingested since the last flush (when `force`, or flush_interval_ms passed
  // since the last one). Blocks on the store. Concurrent calls are serialised.
  absl::Status Flush(bool force);

  // Usage of the minutes from `since_seconds` ago (0 = all kept) until now, of `function` ("" =
  // all). SLO fields are left for the caller. Blocks on the store.
  absl::StatusOr<v1::GetUsageResponse> Query(int64_t since_seconds, const std::string& function);

 private:
  using RowKey = std::tuple<int64_t, std::string, std::string>;  // minute, function, node
  using BaseKey = std::pair<std::string, std::string>;           // node, function

  explicit UsageLedger(const UsageLedgerOptions& options);

  const UsageLedgerOptions options_;
  Clock* const wall_clock_;
  absl::Mutex flush_mu_;  // serialises Flush; taken before mu_
  absl::Mutex mu_;
  std::map<BaseKey, UsageBaseline> baselines_ ABSL_GUARDED_BY(mu_);
  std::map<BaseKey, bool> dirty_baselines_ ABSL_GUARDED_BY(mu_);
  std::map<RowKey, UsageRecord> pending_ ABSL_GUARDED_BY(mu_);   // not yet flushed
  std::map<RowKey, UsageRecord> flushing_ ABSL_GUARDED_BY(mu_);  // being written
  std::map<RowKey, UsageRecord> memory_ ABSL_GUARDED_BY(mu_);    // store keeps no usage
  bool store_has_usage_ ABSL_GUARDED_BY(mu_) = true;
  int64_t last_flush_us_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ferry::control

#endif  // FERRY_CONTROL_PLANE_USAGE_H_
