#include "sdk/cli/usage_view.h"

#include <cctype>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sdk/cli/cli_util.h"

namespace ferry::cli {
namespace v1 = ::ferry::control::v1;

namespace {

// Seconds to 1 ms, from exact microseconds.
std::string SecondsText(int64_t us) {
  return absl::StrFormat("%.3f", static_cast<double>(us) / 1e6);
}

std::string MsText(double ms) {
  if (ms <= 0) return "-";
  return ms < 10 ? absl::StrFormat("%.2fms", ms) : absl::StrFormat("%.0fms", ms);
}

std::string DollarsText(double v) {
  if (v == 0) return "$0";
  if (v >= 100) return absl::StrFormat("$%.2f", v);
  return absl::StrFormat("$%.4g", v);
}

nlohmann::json SummaryJson(const v1::UsageSummary& s) {
  nlohmann::json j = {
      {"requests", s.requests()},
      {"cost_units", s.cost_units()},
      {"p50_ms", s.p50_ms()},
      {"p99_ms", s.p99_ms()},
      {"cpu_seconds", static_cast<double>(s.cpu_us()) / 1e6},
      {"gpu_seconds", static_cast<double>(s.gpu_us()) / 1e6},
      {"load_seconds", static_cast<double>(s.load_us()) / 1e6},
      {"overhead_seconds", static_cast<double>(s.overhead_us()) / 1e6},
      {"cpu_us", s.cpu_us()},
      {"gpu_us", s.gpu_us()},
      {"load_us", s.load_us()},
      {"overhead_us", s.overhead_us()},
      {"cost", s.cost()},
      {"cost_per_million", s.cost_per_million()},
  };
  if (!s.function().empty()) j["function"] = s.function();
  if (!s.node_id().empty()) j["node"] = s.node_id();
  if (s.has_max_cost_per_million()) {
    j["max_cost_per_million"] = s.max_cost_per_million();
    j["over_budget"] = s.over_budget();
  } else if (!s.function().empty()) {
    j["max_cost_per_million"] = nullptr;
    j["over_budget"] = false;
  }
  return j;
}

}  // namespace

absl::StatusOr<int64_t> ParseDurationSeconds(const std::string& text) {
  auto bad = [&text] {
    return absl::InvalidArgumentError(
        absl::StrCat("--since wants a duration like 90s, 15m, 2h, 1d or 1h30m, got '", text, "'"));
  };
  if (text.empty()) return bad();
  int64_t total = 0;
  size_t i = 0;
  while (i < text.size()) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return bad();
    int64_t n = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      n = n * 10 + (text[i] - '0');
      if (n > int64_t{1} << 40) return bad();  // far beyond any retention
      ++i;
    }
    if (i == text.size()) return bad();  // a unit is required
    static const std::map<char, int64_t> kUnits = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
    auto unit = kUnits.find(text[i]);
    if (unit == kUnits.end()) return bad();
    total += n * unit->second;
    ++i;
  }
  if (total <= 0) return bad();
  return total;
}

std::string FormatUsageTable(const v1::GetUsageResponse& usage) {
  std::vector<std::vector<std::string>> rows = {{"FUNCTION", "REQUESTS", "P50", "P99", "CPU-S",
                                                 "GPU-S", "LOAD-S", "COST", "COST/1M", "MAX/1M",
                                                 "BUDGET"}};
  auto row = [](const std::string& name, const v1::UsageSummary& s, bool total) {
    std::vector<std::string> r = {name,
                                  absl::StrCat(s.requests()),
                                  MsText(s.p50_ms()),
                                  MsText(s.p99_ms()),
                                  SecondsText(s.cpu_us()),
                                  SecondsText(s.gpu_us()),
                                  SecondsText(s.load_us()),
                                  DollarsText(s.cost()),
                                  s.requests() > 0 ? DollarsText(s.cost_per_million()) : "-"};
    if (total || !s.has_max_cost_per_million()) {
      r.push_back("-");
      r.push_back("-");
    } else {
      r.push_back(DollarsText(s.max_cost_per_million()));
      r.push_back(s.over_budget() ? "OVER" : "ok");
    }
    return r;
  };
  for (const auto& f : usage.functions()) rows.push_back(row(f.function(), f, false));
  if (usage.functions_size() > 1) rows.push_back(row("TOTAL", usage.total(), true));
  return FormatTable(rows);
}

nlohmann::json UsageToJson(const v1::GetUsageResponse& usage) {
  nlohmann::json functions = nlohmann::json::array();
  for (const auto& f : usage.functions()) {
    nlohmann::json j = SummaryJson(f);
    j["nodes"] = nlohmann::json::array();
    for (const auto& n : usage.nodes()) {
      if (n.function() == f.function()) j["nodes"].push_back(SummaryJson(n));
    }
    functions.push_back(std::move(j));
  }
  return {{"since_unix_ms", usage.since_unix_ms()},
          {"until_unix_ms", usage.until_unix_ms()},
          {"functions", std::move(functions)},
          {"total", SummaryJson(usage.total())}};
}

}  // namespace ferry::cli
