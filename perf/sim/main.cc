// ferry-sim: runs ferry's control-plane policy and the simulator's baselines over one cluster and
// trace, and writes CSVs (plot them with perf/sim/plot.py). See docs/perf.md, "Cluster simulator".
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_split.h"
#include "perf/sim/sim.h"

ABSL_FLAG(std::string, config, "", "JSON cluster + functions config; empty = generate one");
ABSL_FLAG(int, nodes, 50, "generated cluster: nodes");
ABSL_FLAG(int, functions, 50, "generated functions");
ABSL_FLAG(double, utilization, 0.6,
          "generated: base load / throughput within the SLO of the replicas sized for it");
ABSL_FLAG(std::string, trace, "gamma", "poisson | gamma | step | ramp | onoff");
ABSL_FLAG(double, cv, 4, "gamma trace: coefficient of variation of inter-arrival times");
ABSL_FLAG(double, step_at, 60, "step trace: when (s)");
ABSL_FLAG(double, step_factor, 4, "step trace: rate multiplier");
ABSL_FLAG(std::string, arrivals_csv, "", "CSV of time_s,function arrivals (overrides traces)");
ABSL_FLAG(double, duration, 120, "seconds of arrivals");
ABSL_FLAG(uint64_t, seed, 1, "random seed");
ABSL_FLAG(int64_t, replica_queue_limit, 1024,
          "requests waiting per replica before 429 (the agent's maxQueueSize); 0 = unbounded");
ABSL_FLAG(double, fail_fraction, 0, "fraction of nodes failing at --fail_at");
ABSL_FLAG(double, fail_at, 60, "failure time (s)");
ABSL_FLAG(std::string, policies, "all",
          "comma list of ferry, round-robin, fastest-gpu, cheapest, fixed-replicas; or all");
ABSL_FLAG(std::string, out, "", "folder for CSVs (none when empty)");
ABSL_FLAG(std::string, write_config, "", "write the (generated) config as JSON here");

namespace {

double Median(std::vector<double> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return x < 0; }), v.end());
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

namespace ferry::sim {
absl::StatusOr<TraceKind> ParseTraceKind(const std::string& s);
}

int main(int argc, char** argv) {
  using namespace ferry::sim;
  absl::SetProgramUsageMessage("ferry cluster simulator");
  absl::ParseCommandLine(argc, argv);
  SimConfig config;
  if (const std::string path = absl::GetFlag(FLAGS_config); !path.empty()) {
    std::ifstream in(path);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      std::fprintf(stderr, "%s: %s\n", path.c_str(), e.what());
      return 2;
    }
    auto c = ParseConfig(j);
    if (!c.ok()) {
      std::fprintf(stderr, "%s: %s\n", path.c_str(), c.status().ToString().c_str());
      return 2;
    }
    config = *std::move(c);
  } else {
    GenerateOptions g;
    g.nodes = absl::GetFlag(FLAGS_nodes);
    g.functions = absl::GetFlag(FLAGS_functions);
    g.utilization = absl::GetFlag(FLAGS_utilization);
    g.seed = absl::GetFlag(FLAGS_seed);
    auto kind = ParseTraceKind(absl::GetFlag(FLAGS_trace));
    if (!kind.ok()) {
      std::fprintf(stderr, "%s\n", kind.status().ToString().c_str());
      return 2;
    }
    g.trace.kind = *kind;
    g.trace.cv = absl::GetFlag(FLAGS_cv);
    g.trace.step_at_s = absl::GetFlag(FLAGS_step_at);
    g.trace.step_factor = absl::GetFlag(FLAGS_step_factor);
    config = Generate(g);
    config.duration_s = absl::GetFlag(FLAGS_duration);
    config.fail_fraction = absl::GetFlag(FLAGS_fail_fraction);
    config.replica_queue_limit = absl::GetFlag(FLAGS_replica_queue_limit);
    config.fail_at_s = absl::GetFlag(FLAGS_fail_at);
  }
  if (const std::string csv = absl::GetFlag(FLAGS_arrivals_csv); !csv.empty()) {
    std::ifstream in(csv);
    std::stringstream ss;
    ss << in.rdbuf();
    if (absl::Status s = LoadArrivalsCsv(ss.str(), config); !s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 2;
    }
  }
  if (const std::string w = absl::GetFlag(FLAGS_write_config); !w.empty()) {
    std::ofstream(w) << ToJson(config).dump(1) << "\n";
  }
  std::vector<std::string> names = PolicyNames();
  if (absl::GetFlag(FLAGS_policies) != "all") {
    names = absl::StrSplit(absl::GetFlag(FLAGS_policies), ',', absl::SkipEmpty());
  }
  int nodes = 0;
  for (const NodeType& t : config.node_types) nodes += t.count;
  std::printf("cluster: %d nodes, %zu functions, %.0f s of arrivals\n", nodes,
              config.functions.size(), config.duration_s);
  const std::string out = absl::GetFlag(FLAGS_out);
  std::ofstream summary;
  if (!out.empty()) {
    std::filesystem::create_directories(out);
    summary.open(out + "/summary.csv");
    summary << "policy,arrivals,slo_attainment,cost_usd,rejected,retried,lost,"
               "placement_violations,placements,decisions,direction_changes_per_60s_mean,"
               "direction_changes_per_60s_max,step_decision_s_median,step_placed_s_median,"
               "step_ready_s_median,failed_nodes,events,wall_s\n";
  }
  std::printf("%-15s %9s %9s %10s %8s %8s %5s %5s %6s %7s %7s %6s %6s %6s %7s\n", "policy",
              "arrivals", "in-SLO%", "cost $", "rejected", "retried", "lost", "viol", "dec",
              "dc/60s", "dcmax", "t_dec", "t_plc", "t_rdy", "wall s");
  bool ok = true;
  for (const std::string& name : names) {
    auto policy = PolicyByName(name);
    if (!policy.ok()) {
      std::fprintf(stderr, "%s\n", policy.status().ToString().c_str());
      return 2;
    }
    auto r = Run(config, *policy);
    if (!r.ok()) {
      std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
      return 1;
    }
    const double minutes = std::max(1.0, config.duration_s / 60.0);
    double dc_sum = 0, dc_max = 0;
    std::vector<double> td, tp, tr;
    for (const FunctionResult& f : r->functions) {
      dc_sum += static_cast<double>(f.direction_changes) / minutes;
      dc_max = std::max(dc_max, static_cast<double>(f.direction_changes) / minutes);
      td.push_back(f.step_decision_s);
      tp.push_back(f.step_placed_s);
      tr.push_back(f.step_ready_s);
    }
    const double dc_mean = r->functions.empty() ? 0 : dc_sum / r->functions.size();
    std::printf(
        "%-15s %9lld %9.3f %10.2f %8lld %8lld %5lld %5lld %6zu %7.3f %7.2f %6.1f %6.1f "
        "%6.1f %7.1f\n",
        name.c_str(), static_cast<long long>(r->arrivals), 100 * r->slo_attainment(), r->cost,
        static_cast<long long>(r->rejected), static_cast<long long>(r->retried),
        static_cast<long long>(r->lost), static_cast<long long>(r->placement_violations),
        r->decisions.size(), dc_mean, dc_max, Median(td), Median(tp), Median(tr), r->wall_s);
    for (const auto& [reason, n] : r->rejected_by_reason) {
      std::printf("    rejected %lld: %s\n", static_cast<long long>(n), reason.c_str());
    }
    if (r->failed_nodes > 0) {
      std::printf(
          "    failure: %d nodes at %.0f s held %lld replicas; detected after %.1f s; "
          "%lld requests retried on other replicas; %lld replicas placed %.1f s after "
          "the failure\n",
          r->failed_nodes, config.fail_at_s, static_cast<long long>(r->failure_killed_replicas),
          r->failure_detected_s, static_cast<long long>(r->retried),
          static_cast<long long>(r->failure_replaced), r->failure_replaced_s);
    }
    for (const std::string& v : r->violation_examples) std::printf("    VIOLATION %s\n", v.c_str());
    if (!r->invariants_ok()) {
      ok = false;
      std::printf("    INVARIANT FAILED: %lld lost, %lld placement violations\n",
                  static_cast<long long>(r->lost), static_cast<long long>(r->placement_violations));
    }
    if (!out.empty()) {
      summary << name << ',' << r->arrivals << ',' << r->slo_attainment() << ',' << r->cost << ','
              << r->rejected << ',' << r->retried << ',' << r->lost << ','
              << r->placement_violations << ',' << r->placements << ',' << r->decisions.size()
              << ',' << dc_mean << ',' << dc_max << ',' << Median(td) << ',' << Median(tp) << ','
              << Median(tr) << ',' << r->failed_nodes << ',' << r->events << ',' << r->wall_s
              << '\n';
      if (absl::Status s = WriteCsv(*r, config, out); !s.ok()) {
        std::fprintf(stderr, "%s\n", s.ToString().c_str());
        return 1;
      }
    }
  }
  return ok ? 0 : 1;
}
