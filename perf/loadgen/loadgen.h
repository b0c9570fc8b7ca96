// One measured run of ferry-loadgen (all threads), its summary and its CSV row.
#ifndef FERRY_PERF_LOADGEN_LOADGEN_H_
#define FERRY_PERF_LOADGEN_LOADGEN_H_

#include <string>
#include <vector>

#include "perf/loadgen/driver.h"
#include "perf/loadgen/options.h"
#include "perf/loadgen/stats.h"

namespace ferry::loadgen {

struct RunSummary {
  double offered_rate = 0;  // requests/s; 0 for closed loop
  LatencySummary latency;
  DriverResult merged;  // latencies sorted by Summarize
  double throughput_rps = 0;
};

// Merges per-thread results and summarises them over a window of `duration_s`.
RunSummary Merge(std::vector<DriverResult> parts, double offered_rate, double duration_s);

std::string CsvHeader();
std::string CsvRow(const Options& o, const RunSummary& s);

}  // namespace ferry::loadgen

#endif  // FERRY_PERF_LOADGEN_LOADGEN_H_
