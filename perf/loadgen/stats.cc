#include "perf/loadgen/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ferry::loadgen {

int64_t Percentile(const std::vector<int64_t>& sorted_ns, double q) {
  if (sorted_ns.empty()) return 0;
  q = std::clamp(q, 0.0, 1.0);
  // Nearest rank: ceil(q * n), 1-based. The small epsilon keeps 0.99 * 100 from rounding up to
  // rank 100 through floating-point error (0.99 * 100 = 99.00000000000001).
  double rank = std::ceil(q * static_cast<double>(sorted_ns.size()) - 1e-9);
  size_t index = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return sorted_ns[std::min(index, sorted_ns.size() - 1)];
}

LatencySummary Summarize(std::vector<int64_t>& latencies_ns) {
  LatencySummary s;
  if (latencies_ns.empty()) return s;
  std::sort(latencies_ns.begin(), latencies_ns.end());
  s.count = static_cast<int64_t>(latencies_ns.size());
  long double sum = std::accumulate(latencies_ns.begin(), latencies_ns.end(), 0.0L);
  s.mean_us = static_cast<double>(sum / latencies_ns.size()) / 1e3;
  s.p50_us = Percentile(latencies_ns, 0.50) / 1e3;
  s.p90_us = Percentile(latencies_ns, 0.90) / 1e3;
  s.p99_us = Percentile(latencies_ns, 0.99) / 1e3;
  s.p999_us = Percentile(latencies_ns, 0.999) / 1e3;
  s.max_us = latencies_ns.back() / 1e3;
  return s;
}

std::string FormatErrors(const ErrorTally& errors) {
  return absl::StrJoin(errors, ";", [](std::string* out, const auto& kv) {
    absl::StrAppend(out, kv.first, ":", kv.second);
  });
}

}  // namespace ferry::loadgen
