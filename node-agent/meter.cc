#include "node-agent/meter.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ferry::agent {

std::vector<int64_t> SplitBusyTime(int64_t busy_us, absl::Span<const int64_t> costs) {
  std::vector<int64_t> shares(costs.size(), 0);
  if (costs.empty()) return shares;
  busy_us = std::max<int64_t>(0, busy_us);
  __int128 total_cost = 0;
  for (int64_t c : costs) total_cost += std::max<int64_t>(1, c);
  // Exact share i = busy * cost_i / total: its floor, plus one microsecond for the requests with
  // the largest remainders until the floors add up to busy. 128-bit products cannot overflow.
  std::vector<std::pair<__int128, size_t>> remainders(costs.size());
  int64_t assigned = 0;
  for (size_t i = 0; i < costs.size(); ++i) {
    const __int128 scaled = static_cast<__int128>(busy_us) * std::max<int64_t>(1, costs[i]);
    shares[i] = static_cast<int64_t>(scaled / total_cost);
    remainders[i] = {scaled % total_cost, i};
    assigned += shares[i];
  }
  int64_t left = busy_us - assigned;  // < number of requests
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t k = 0; left > 0 && k < remainders.size(); ++k, --left) ++shares[remainders[k].second];
  return shares;
}

const std::array<int64_t, kLatencyBuckets>& LatencyBoundsUs() {
  static const std::array<int64_t, kLatencyBuckets> bounds = [] {
    std::array<int64_t, kLatencyBuckets> b{};
    for (int k = 0; k < kLatencyBuckets; ++k) {
      b[k] = static_cast<int64_t>(std::llround(std::pow(10.0, 1.0 + k / 10.0)));
    }
    return b;
  }();
  return bounds;
}

std::vector<int64_t> FunctionMeter::RecordBatch(int64_t busy_us, absl::Span<const int64_t> costs,
                                                absl::Span<const bool> metered, bool on_gpu) {
  std::vector<int64_t> charges = SplitBusyTime(busy_us, costs);
  int64_t charged = 0, overhead = 0, requests = 0, units = 0;
  for (size_t i = 0; i < charges.size(); ++i) {
    if (i < metered.size() && !metered[i]) {
      overhead += charges[i];
      continue;
    }
    charged += charges[i];
    ++requests;
    units += costs[i];
  }
  absl::MutexLock lock(&mu_);
  (on_gpu ? counters_.gpu_us : counters_.cpu_us) += charged;
  counters_.overhead_us += overhead;
  counters_.requests += requests;
  counters_.cost_units += units;
  ++counters_.batches;
  return charges;
}

void FunctionMeter::RecordLoad(int64_t load_us) {
  absl::MutexLock lock(&mu_);
  counters_.load_us += std::max<int64_t>(0, load_us);
}

void FunctionMeter::RecordLatency(int64_t request_us) {
  const auto& bounds = LatencyBoundsUs();
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(bounds.begin(), bounds.end(), request_us) - bounds.begin());
  latency_[bucket].fetch_add(1, std::memory_order_relaxed);
}

FunctionUsageSnapshot FunctionMeter::Snapshot() const {
  FunctionUsageSnapshot s;
  {
    absl::MutexLock lock(&mu_);
    s = counters_;
  }
  s.function = function_;
  s.latency_counts.resize(latency_.size());
  for (size_t i = 0; i < latency_.size(); ++i) {
    s.latency_counts[i] = latency_[i].load(std::memory_order_relaxed);
  }
  return s;
}

Meter::Meter(uint64_t epoch)
    : epoch_([epoch] {
        if (epoch != 0) return epoch;
        std::random_device rd;
        uint64_t e = 0;
        while (e == 0) e = (static_cast<uint64_t>(rd()) << 32) ^ rd();
        return e;
      }()) {}

FunctionMeter* Meter::ForFunction(const std::string& function) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<FunctionMeter>& slot = functions_[function];
  if (slot == nullptr) slot = std::make_unique<FunctionMeter>(function);
  return slot.get();
}

std::vector<FunctionUsageSnapshot> Meter::Snapshot() const {
  std::vector<const FunctionMeter*> meters;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, m] : functions_) meters.push_back(m.get());
  }
  std::vector<FunctionUsageSnapshot> out;
  out.reserve(meters.size());
  for (const FunctionMeter* m : meters) out.push_back(m->Snapshot());
  return out;
}

namespace {

std::string EscapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

std::string Seconds(int64_t us) {
  return absl::StrFormat("%d.%06d", us / 1'000'000, us % 1'000'000);
}

}  // namespace

std::string Meter::PrometheusText() const {
  const std::vector<FunctionUsageSnapshot> all = Snapshot();
  struct Family {
    const char* name;
    const char* help;
    std::string (*value)(const FunctionUsageSnapshot&);
  };
  static const Family kFamilies[] = {
      {"ferry_function_requests_total", "Metered requests that ran in a batch",
       [](const FunctionUsageSnapshot& s) { return absl::StrCat(s.requests); }},
      {"ferry_function_cost_units_total", "Batch units (rows or tokens) of metered requests",
       [](const FunctionUsageSnapshot& s) { return absl::StrCat(s.cost_units); }},
      {"ferry_function_cpu_seconds_total",
       "Execution time on CPUs charged to requests (split by cost), seconds",
       [](const FunctionUsageSnapshot& s) { return Seconds(s.cpu_us); }},
      {"ferry_function_gpu_seconds_total",
       "Execution time on GPUs charged to requests (split by cost), seconds",
       [](const FunctionUsageSnapshot& s) { return Seconds(s.gpu_us); }},
      {"ferry_function_overhead_seconds_total",
       "Execution time of the agent's own requests (profiling), not charged, seconds",
       [](const FunctionUsageSnapshot& s) { return Seconds(s.overhead_us); }},
      {"ferry_function_busy_seconds_total", "Executor busy time: cpu + gpu + overhead seconds",
       [](const FunctionUsageSnapshot& s) { return Seconds(s.busy_us()); }},
      {"ferry_function_load_seconds_total", "Model load time, not charged to requests, seconds",
       [](const FunctionUsageSnapshot& s) { return Seconds(s.load_us); }},
  };
  std::string out;
  for (const Family& f : kFamilies) {
    absl::StrAppend(&out, "# HELP ", f.name, " ", f.help, "\n# TYPE ", f.name, " counter\n");
    for (const FunctionUsageSnapshot& s : all) {
      absl::StrAppend(&out, f.name, "{function=\"", EscapeLabel(s.function), "\"} ", f.value(s),
                      "\n");
    }
  }
  return out;
}

}  // namespace ferry::agent
