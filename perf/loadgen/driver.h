// One event-loop thread of ferry-loadgen: its share of the schedule (open loop) or of the
// clients (closed loop), over HTTP/1.1 (Boost.Beast) or gRPC (completion queue).
#ifndef FERRY_PERF_LOADGEN_DRIVER_H_
#define FERRY_PERF_LOADGEN_DRIVER_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "perf/loadgen/options.h"
#include "perf/loadgen/stats.h"

namespace ferry::loadgen {

using Clock = std::chrono::steady_clock;

inline int64_t ToNs(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

struct DriverConfig {
  Mode mode = Mode::kOpen;
  Arrivals arrivals = Arrivals::kPoisson;
  double rate_per_s = 0;    // this thread's share (open loop)
  double phase = 0;         // constant arrivals: offset of this thread's stream, in gaps
  int connections = 1;      // this thread's share
  int max_connections = 1;  // open-loop HTTP growth bound, this thread's share
  int64_t start_ns = 0;     // Clock time the run starts (all threads share it)
  int64_t warmup_ns = 0;
  int64_t duration_ns = 0;
  int64_t drain_ns = 0;
  int64_t late_ns = 0;
  uint64_t seed = 1;
};

// What one thread measured. Only requests scheduled (open) or sent (closed) inside the
// measured window count; throughput counts successful answers that arrived inside it.
struct DriverResult {
  std::vector<int64_t> latencies_ns;  // successful measured requests
  int64_t sent = 0;                   // measured requests written to the wire
  int64_t ok_in_window = 0;
  int64_t late = 0;  // measured requests sent more than late_ns after schedule
  int64_t max_late_ns = 0;
  int64_t connections_opened = 0;
  ErrorTally errors;  // measured requests only
};

// HTTP/1.1 keep-alive over `config.connections` sockets, one request in flight per socket.
// Blocks until the run (window plus drain) ends. `request` is the full wire request.
DriverResult RunHttp(const Options& o, const DriverConfig& config,
                     std::shared_ptr<const std::string> request);

// One request over a fresh connection, blocking; returns its body or an error.
absl::StatusOr<std::string> HttpOnce(const Options& o, const std::string& request);

// KServe v2 ModelInfer over `config.connections` channels, calls multiplexed, one completion
// queue driven by this thread. `request` is the serialized ModelInferRequest.
DriverResult RunGrpc(const Options& o, const DriverConfig& config, const std::string& request);

// One ModelInfer call, blocking; returns the serialized response or an error.
absl::StatusOr<std::string> GrpcOnce(const Options& o, const std::string& request);

}  // namespace ferry::loadgen

#endif  // FERRY_PERF_LOADGEN_DRIVER_H_
