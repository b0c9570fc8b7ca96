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
#include "perf/sim/oracle.h"
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
ABSL_FLAG(bool, gpu_time_slicing, true,
          "replicas that share a GPU run one batch at a time on it, in turn (false: each has the "
          "GPU to itself)");
ABSL_FLAG(int64_t, batch_delay_us, 1000,
          "agent batcher delay budget (maxQueueDelayMicros) under aimd's adaptive delay; 0 = none");
ABSL_FLAG(double, burst_z, -1,
          "autoscaler burst headroom (AutoscalerSettings::burst_z) for every function; "
          "-1 = the default, 0 = off");
ABSL_FLAG(double, warmup, 0,
          "also report SLO attainment of the arrivals from this time on (s; 0 = no split)");
ABSL_FLAG(double, fail_fraction, 0, "fraction of nodes failing at --fail_at");
ABSL_FLAG(double, fail_at, 60, "failure time (s)");
ABSL_FLAG(std::string, policies, "all",
          "comma list of ferry, round-robin, fastest-gpu, cheapest, fixed-replicas; or all");
ABSL_FLAG(std::string, out, "", "folder for CSVs (none when empty)");
ABSL_FLAG(int, oracle, 0,
          "cost oracle mode: compare ferry's placement with the exhaustive cheapest feasible "
          "assignment on this many random small instances (--seed: the first), then exit");
ABSL_FLAG(bool, oracle_verbose, false,
          "oracle: print every instance where ferry costs over 1.05x the optimum");
ABSL_FLAG(int, oracle_max_types, 4, "oracle instances: most node types");
ABSL_FLAG(int, oracle_max_nodes, 3, "oracle instances: most nodes per type");
ABSL_FLAG(int, oracle_max_functions, 4, "oracle instances: most functions");
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

namespace {

// --oracle: ferry's placement cost over the exhaustive optimum on random small instances, with
// and without the need hint.
int RunOracle(int instances) {
  using namespace ferry::sim;
  const std::string out = absl::GetFlag(FLAGS_out);
  std::ofstream csv;
  if (!out.empty()) {
    std::filesystem::create_directories(out);
    csv.open(out + "/oracle.csv");
    csv << "seed,node_types,nodes,functions,oracle_cost,ferry_cost,ratio,ferry_need_cost,"
           "ratio_need,oracle_replicas,ferry_replicas,ferry_need_replicas,combinations\n";
  }
  std::vector<double> ratios[2];
  double sum_ferry[2] = {0, 0}, sum_best[2] = {0, 0};  // over the instances each placed
  int infeasible = 0, exhausted = 0;
  int ferry_failed[2] = {0, 0};
  for (int i = 0; i < instances; ++i) {
    OracleOptions o;
    o.seed = absl::GetFlag(FLAGS_seed) + static_cast<uint64_t>(i);
    o.max_node_types = absl::GetFlag(FLAGS_oracle_max_types);
    o.max_nodes_per_type = absl::GetFlag(FLAGS_oracle_max_nodes);
    o.max_functions = absl::GetFlag(FLAGS_oracle_max_functions);
    const SimConfig inst = RandomOracleInstance(o);
    const AssignmentCost best = CheapestFeasible(inst);
    if (best.exhausted) ++exhausted;
    if (!best.feasible) {
      ++infeasible;
      continue;
    }
    const AssignmentCost ferry[2] = {FerryPlacement(inst, false), FerryPlacement(inst, true)};
    double ratio[2];
    for (int k = 0; k < 2; ++k) {
      if (!ferry[k].feasible) ++ferry_failed[k];
      ratio[k] = ferry[k].feasible ? ferry[k].cost_per_hour / best.cost_per_hour : -1;
      if (ferry[k].feasible) {
        ratios[k].push_back(ratio[k]);
        sum_ferry[k] += ferry[k].cost_per_hour;
        sum_best[k] += best.cost_per_hour;
      }
    }
    if (absl::GetFlag(FLAGS_oracle_verbose) && (ratio[0] > 1.05 || ratio[0] < 0)) {
      std::printf("seed %llu: ferry $%.3f/h (need hint $%.3f/h) vs optimum $%.3f/h\n",
                  static_cast<unsigned long long>(o.seed), ferry[0].cost_per_hour,
                  ferry[1].cost_per_hour, best.cost_per_hour);
      for (size_t t = 0; t < inst.node_types.size(); ++t) {
        const NodeType& n = inst.node_types[t];
        std::printf("  type %zu %s: %d nodes, %d x %s, %.0f cores, $%.3f/h\n", t, n.name.c_str(),
                    n.count, n.gpu_count, n.gpu_kind.c_str(), n.cpu_cores, n.price_per_hour);
      }
      for (size_t f = 0; f < inst.functions.size(); ++f) {
        const FunctionConfig& fc = inst.functions[f];
        std::string types[3];
        const AssignmentCost* all[3] = {&ferry[0], &ferry[1], &best};
        for (int k = 0; k < 3; ++k) {
          if (!all[k]->feasible) continue;
          for (size_t t = 0; t < inst.node_types.size(); ++t) {
            types[k] += std::to_string(all[k]->replicas_by_type[f][t]) + " ";
          }
        }
        std::printf(
            "  %s %s %.0f rps, %.0f cores, %lld MiB GPU, SLO %.0f ms: ferry [%s] with "
            "need [%s] optimum [%s]\n",
            fc.name.c_str(), fc.req.accelerator == ferry::Accelerator::kGpu ? "gpu" : "cpu",
            fc.trace.rate_rps, fc.req.cpu_cores,
            static_cast<long long>(fc.req.gpu_memory_bytes >> 20), fc.req.latency_target_us / 1000,
            types[0].c_str(), types[1].c_str(), types[2].c_str());
      }
    }
    int nodes = 0;
    for (const NodeType& t : inst.node_types) nodes += t.count;
    if (csv.is_open()) {
      csv << o.seed << ',' << inst.node_types.size() << ',' << nodes << ',' << inst.functions.size()
          << ',' << best.cost_per_hour << ',' << ferry[0].cost_per_hour << ',' << ratio[0] << ','
          << ferry[1].cost_per_hour << ',' << ratio[1] << ',' << best.replicas << ','
          << ferry[0].replicas << ',' << ferry[1].replicas << ',' << best.combinations << '\n';
    }
  }
  const int feasible = instances - infeasible;
  std::printf(
      "oracle: %d instances, %d with a feasible assignment (%d with none), %d not proven "
      "(search limit)\n",
      instances, feasible, infeasible, exhausted);
  for (int k = 0; k < 2; ++k) {
    std::vector<double>& r = ratios[k];
    std::sort(r.begin(), r.end());
    auto q = [&](double p) {
      return r.empty() ? 0.0 : r[std::min(r.size() - 1, static_cast<size_t>(p * r.size()))];
    };
    const auto within =
        std::count_if(r.begin(), r.end(), [](double x) { return x <= 1.05 + 1e-9; });
    const auto exact = std::count_if(r.begin(), r.end(), [](double x) { return x <= 1 + 1e-9; });
    const double n = r.empty() ? 1.0 : static_cast<double>(r.size());
    std::printf(
        "%s: refused a function the oracle placed in %d of %d; cost / cheapest over %zu: "
        "optimal %.1f %%, within 1.05x %.1f %%; p50 %.3f, p90 %.3f, p99 %.3f, max %.3f; "
        "all instances together %.3f\n",
        k == 0 ? "PlaceOne without the need (the controller before it passed one)"
               : "PlaceOne with the need (needed_rps), as the controller calls it",
        ferry_failed[k], feasible, r.size(), 100.0 * static_cast<double>(exact) / n,
        100.0 * static_cast<double>(within) / n, q(0.5), q(0.9), q(0.99),
        r.empty() ? 0.0 : r.back(), sum_best[k] > 0 ? sum_ferry[k] / sum_best[k] : 0.0);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ferry::sim;
  absl::SetProgramUsageMessage("ferry cluster simulator");
  absl::ParseCommandLine(argc, argv);
  if (const int n = absl::GetFlag(FLAGS_oracle); n > 0) return RunOracle(n);
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
    config.batch_delay_us = absl::GetFlag(FLAGS_batch_delay_us);
    config.gpu_time_slicing = absl::GetFlag(FLAGS_gpu_time_slicing);
    config.warmup_s = absl::GetFlag(FLAGS_warmup);
    config.fail_at_s = absl::GetFlag(FLAGS_fail_at);
  }
  if (const double z = absl::GetFlag(FLAGS_burst_z); z >= 0) {
    for (FunctionConfig& f : config.functions) f.scaling.burst_z = z;
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
               "step_ready_s_median,failed_nodes,events,wall_s,busy_utilization,"
               "slo_capacity_utilization,steady_arrivals,steady_slo_attainment";
    for (int c = 0; c < kMissCauses; ++c) summary << ",miss_" << c;
    summary << ",cluster_gpu_memory_share,cluster_cpu_share,cluster_gpus_used_share\n";
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
    std::printf(
        "    utilisation of the ready replicas: busy %.1f %%, load / capacity within the SLO "
        "%.1f %% (%.0f replica-s ready)\n",
        100 * r->busy_utilization(), 100 * r->slo_capacity_utilization(), r->ready_replica_s);
    std::printf(
        "    the cluster (time average): %.1f %% of its GPU memory and %.1f %% of its CPU cores "
        "held by replicas; %.1f %% of its GPUs hold one\n",
        100 * r->cluster_gpu_memory_share, 100 * r->cluster_cpu_share,
        100 * r->cluster_gpus_used_share);
    if (config.warmup_s > 0) {
      std::printf("    from %.0f s on (steady state): %lld arrivals, %.3f %% within the SLO\n",
                  config.warmup_s, static_cast<long long>(r->steady_arrivals),
                  100 * r->steady_attainment());
    }
    const int64_t missed = r->arrivals - r->within_slo;
    if (missed > 0) {
      std::printf("    %lld requests missed the SLO (%.3f %% of arrivals), by cause:\n",
                  static_cast<long long>(missed),
                  100.0 * static_cast<double>(missed) / static_cast<double>(r->arrivals));
      for (int c = 0; c < kMissCauses; ++c) {
        if (r->misses[c] == 0) continue;
        std::printf("      %9lld  %5.2f %%  %s\n", static_cast<long long>(r->misses[c]),
                    100.0 * static_cast<double>(r->misses[c]) / static_cast<double>(r->arrivals),
                    MissCauseName(static_cast<MissCause>(c)));
      }
      if (r->rejected > 0) {
        std::printf("      %9lld  %5.2f %%  rejected (below)\n",
                    static_cast<long long>(r->rejected),
                    100.0 * static_cast<double>(r->rejected) / static_cast<double>(r->arrivals));
      }
    }
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
              << Median(tr) << ',' << r->failed_nodes << ',' << r->events << ',' << r->wall_s << ','
              << r->busy_utilization() << ',' << r->slo_capacity_utilization() << ','
              << r->steady_arrivals << ',' << r->steady_attainment();
      for (int c = 0; c < kMissCauses; ++c) summary << ',' << r->misses[c];
      summary << ',' << r->cluster_gpu_memory_share << ',' << r->cluster_cpu_share << ','
              << r->cluster_gpus_used_share << '\n';
      if (absl::Status s = WriteCsv(*r, config, out); !s.ok()) {
        std::fprintf(stderr, "%s\n", s.ToString().c_str());
        return 1;
      }
    }
  }
  return ok ? 0 : 1;
}
