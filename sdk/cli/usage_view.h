// `ferry usage`: what the CLI shows of the control plane's metered usage (GetUsage). No I/O: the
// caller makes the call and prints what these return, so any client can reuse them.
#ifndef FERRY_SDK_CLI_USAGE_VIEW_H_
#define FERRY_SDK_CLI_USAGE_VIEW_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "ferry_control.pb.h"
#include "nlohmann/json.hpp"

namespace ferry::cli {

// "90s", "15m", "2h", "1d", "1h30m" (groups of digits and a unit s|m|h|d) -> seconds, > 0.
// InvalidArgument naming what was expected otherwise.
absl::StatusOr<int64_t> ParseDurationSeconds(const std::string& text);

// The table: per function requests, p50/p99, CPU-s and GPU-s (1 ms granularity), cost, cost per
// million requests and the SLO's maxCostPerMillion beside it, "OVER" when above it; then a total.
std::string FormatUsageTable(const control::v1::GetUsageResponse& usage);

// `-o json|yaml`: numbers as numbers (seconds and microseconds both), each function with its
// per-node breakdown, and the total.
nlohmann::json UsageToJson(const control::v1::GetUsageResponse& usage);

}  // namespace ferry::cli

#endif  // FERRY_SDK_CLI_USAGE_VIEW_H_
