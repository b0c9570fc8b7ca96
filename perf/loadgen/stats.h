// Latency summaries for ferry-loadgen: percentiles over every recorded sample (no histogram
// bucketing, so p99.9 of a 10 s run is exact), and the error tally by kind.
#ifndef FERRY_PERF_LOADGEN_STATS_H_
#define FERRY_PERF_LOADGEN_STATS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ferry::loadgen {

// Nearest-rank percentile of `sorted_ns` (ascending): the smallest sample such that at least
// `q` (0 < q <= 1) of all samples are <= it. Returns 0 for an empty input. Pure; no allocation.
int64_t Percentile(const std::vector<int64_t>& sorted_ns, double q);

struct LatencySummary {
  int64_t count = 0;
  double mean_us = 0;
  double p50_us = 0;
  double p90_us = 0;
  double p99_us = 0;
  double p999_us = 0;
  double max_us = 0;
};

// Sorts `latencies_ns` in place and summarises it (microseconds out).
LatencySummary Summarize(std::vector<int64_t>& latencies_ns);

// Error counts by kind: "http_503", "grpc_UNAVAILABLE", "transport_eof", "timeout", ...
using ErrorTally = std::map<std::string, int64_t>;

// "http_503:3;timeout:1" (kinds in name order), "" when there are none.
std::string FormatErrors(const ErrorTally& errors);

}  // namespace ferry::loadgen

#endif  // FERRY_PERF_LOADGEN_STATS_H_
