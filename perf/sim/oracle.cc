#include "perf/sim/oracle.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "control-plane/replica_target.h"

namespace ferry::sim {
namespace {

using control::Cluster;
using control::FunctionProfiles;
using control::LatencyModel;
using control::Requirements;

constexpr double kEps = 1e-9;

FunctionProfiles ProfilesOf(const FunctionConfig& f, Cluster& cluster) {
  FunctionProfiles p;
  for (const auto& [kind_name, model] : f.profiles) {
    LatencyModel m = model;
    m.measured = true;
    p.Set(cluster.kinds().Intern(kind_name), m);
  }
  return p;
}

// Throughput the function's replicas must reach together.
double Need(const FunctionConfig& f) {
  const double u = f.scaling.target_utilization > 0 ? f.scaling.target_utilization : 0.7;
  return f.trace.rate_rps / u;
}

// One hardware option of one function: a node type's CPU or one of its GPUs.
struct Option {
  int type;
  bool gpu;
  double throughput;
  double cost;  // price share per hour
};

struct Cover {
  std::vector<int> count;  // per option of the function
  double cost = 0;
};

// Every minimal multiset of options whose throughput reaches `need`.
void Covers(const std::vector<Option>& opts, double need, size_t i, std::vector<int>& count,
            double have, double cost, std::vector<Cover>& out) {
  if (have + kEps >= need) {
    // Minimal: dropping any one replica must fall short.
    for (size_t o = 0; o < opts.size(); ++o) {
      if (count[o] > 0 && have - opts[o].throughput + kEps >= need) return;
    }
    out.push_back({count, cost});
    return;
  }
  if (i == opts.size()) return;
  const int most = static_cast<int>(std::ceil((need - have) / opts[i].throughput - kEps));
  for (int n = 0; n <= most; ++n) {
    count[i] = n;
    Covers(opts, need, i + 1, count, have + n * opts[i].throughput, cost + n * opts[i].cost, out);
  }
  count[i] = 0;
}

// Whether the replicas (function index, gpu?) fit onto the nodes of one type.
class TypePacker {
 public:
  TypePacker(const NodeType& type, const std::vector<Requirements>& reqs)
      : type_(type), reqs_(reqs) {}

  bool Fits(std::vector<std::pair<int, bool>> items) {
    // Biggest first: GPU memory, then cores, then memory.
    std::sort(items.begin(), items.end(), [&](const auto& x, const auto& y) {
      const Requirements& a = reqs_[x.first];
      const Requirements& b = reqs_[y.first];
      const int64_t ga = x.second ? a.gpu_memory_bytes : 0;
      const int64_t gb = y.second ? b.gpu_memory_bytes : 0;
      return std::tie(ga, a.cpu_cores, a.memory_bytes) > std::tie(gb, b.cpu_cores, b.memory_bytes);
    });
    auto key = items;
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    items_ = std::move(items);
    nodes_.assign(type_.count, NodeState{0, 0, std::vector<int64_t>(type_.gpu_count, 0)});
    ++searches_;
    const bool ok = Search(0);
    cache_.emplace(std::move(key), ok);
    return ok;
  }
  int64_t searches() const { return searches_; }

 private:
  struct NodeState {
    double cpu;
    int64_t mem;
    std::vector<int64_t> gpu;
    bool operator==(const NodeState& o) const {
      return cpu == o.cpu && mem == o.mem && gpu == o.gpu;
    }
  };

  bool Search(size_t i) {
    if (i == items_.size()) return true;
    const Requirements& r = reqs_[items_[i].first];
    const bool gpu = items_[i].second;
    for (size_t n = 0; n < nodes_.size(); ++n) {
      NodeState& s = nodes_[n];
      // Identical nodes: trying the first is enough.
      bool seen = false;
      for (size_t m = 0; m < n && !seen; ++m) seen = nodes_[m] == s;
      if (seen) continue;
      if (s.cpu + r.cpu_cores > type_.cpu_cores + kEps) continue;
      if (s.mem + r.memory_bytes > type_.memory_bytes) continue;
      s.cpu += r.cpu_cores;
      s.mem += r.memory_bytes;
      if (!gpu) {
        if (Search(i + 1)) return true;
      } else {
        for (size_t g = 0; g < s.gpu.size(); ++g) {
          bool same = false;
          for (size_t h = 0; h < g && !same; ++h) same = s.gpu[h] == s.gpu[g];
          if (same) continue;
          // One replica per GPU: replicas that share a GPU take turns on it, so a second one
          // would not add the throughput its cover counts on (placement.h prefers an idle GPU
          // for the same reason). Occupied GPUs hold memory + 1, so that a replica without a
          // memory request still occupies its GPU.
          if (s.gpu[g] != 0 || r.gpu_memory_bytes > type_.gpu_memory_bytes) continue;
          s.gpu[g] = r.gpu_memory_bytes + 1;
          const bool ok = Search(i + 1);
          s.gpu[g] = 0;
          if (ok) return true;
        }
      }
      s.cpu -= r.cpu_cores;
      s.mem -= r.memory_bytes;
    }
    return false;
  }

  const NodeType& type_;
  const std::vector<Requirements>& reqs_;
  std::vector<std::pair<int, bool>> items_;
  std::vector<NodeState> nodes_;
  std::map<std::vector<std::pair<int, bool>>, bool> cache_;
  int64_t searches_ = 0;
};

}  // namespace

AssignmentCost CheapestFeasible(const SimConfig& instance, int64_t max_combinations) {
  AssignmentCost out;
  std::vector<int> type_of;
  Cluster cluster = BuildCluster(instance, &type_of);
  const size_t nf = instance.functions.size();
  const size_t nt = instance.node_types.size();
  std::vector<int> first_node(nt, -1);
  for (size_t i = 0; i < type_of.size(); ++i) {
    if (first_node[type_of[i]] < 0) first_node[type_of[i]] = static_cast<int>(i);
  }
  std::vector<Requirements> reqs;
  std::vector<std::vector<Option>> options(nf);
  std::vector<std::vector<Cover>> covers(nf);
  for (size_t f = 0; f < nf; ++f) {
    const FunctionConfig& fc = instance.functions[f];
    reqs.push_back(fc.req);
    const FunctionProfiles profiles = ProfilesOf(fc, cluster);
    for (size_t t = 0; t < nt; ++t) {
      if (first_node[t] < 0) continue;
      const control::NodeSpec& node = cluster.nodes()[first_node[t]];
      for (const bool gpu : {false, true}) {
        if (gpu && node.gpus.empty()) continue;
        const int device = gpu ? node.gpus[0].index : -1;
        // Placement's filters on an empty node of the type (static constraints only).
        if (!control::CandidateFits(cluster, fc.req, profiles, first_node[t], device)) continue;
        const int kind = gpu ? node.gpus[0].kind : control::kCpuKind;
        const double tput = control::CapacityOf(profiles.Get(kind), fc.req).throughput_rps;
        if (tput <= 0) continue;
        options[f].push_back(
            {static_cast<int>(t), gpu, tput, control::PriceShare(node, device, fc.req)});
      }
    }
    std::vector<int> count(options[f].size(), 0);
    Covers(options[f], Need(fc), 0, count, 0, 0, covers[f]);
    if (covers[f].empty()) return out;  // infeasible even alone
    std::sort(covers[f].begin(), covers[f].end(),
              [](const Cover& a, const Cover& b) { return a.cost < b.cost; });
  }
  // Every combination of covers, cheapest first.
  std::vector<std::pair<double, std::vector<int>>> combos;
  std::vector<int> pick(nf, 0);
  std::function<void(size_t, double)> enumerate = [&](size_t f, double cost) {
    if (static_cast<int64_t>(combos.size()) >= max_combinations) {
      out.exhausted = true;
      return;
    }
    if (f == nf) {
      combos.emplace_back(cost, pick);
      return;
    }
    for (size_t c = 0; c < covers[f].size(); ++c) {
      pick[f] = static_cast<int>(c);
      enumerate(f + 1, cost + covers[f][c].cost);
    }
  };
  enumerate(0, 0);
  std::sort(combos.begin(), combos.end());
  std::vector<TypePacker> packers;
  packers.reserve(nt);
  for (size_t t = 0; t < nt; ++t) packers.emplace_back(instance.node_types[t], reqs);
  for (const auto& [cost, choice] : combos) {
    ++out.combinations;
    std::vector<std::vector<std::pair<int, bool>>> by_type(nt);
    for (size_t f = 0; f < nf; ++f) {
      const Cover& c = covers[f][choice[f]];
      for (size_t o = 0; o < c.count.size(); ++o) {
        for (int k = 0; k < c.count[o]; ++k) {
          by_type[options[f][o].type].push_back({static_cast<int>(f), options[f][o].gpu});
        }
      }
    }
    bool fits = true;
    for (size_t t = 0; t < nt && fits; ++t) {
      if (!by_type[t].empty()) fits = packers[t].Fits(by_type[t]);
    }
    if (!fits) continue;
    out.feasible = true;
    out.cost_per_hour = cost;
    out.replicas_by_type.assign(nf, std::vector<int>(nt, 0));
    for (size_t f = 0; f < nf; ++f) {
      const Cover& c = covers[f][choice[f]];
      for (size_t o = 0; o < c.count.size(); ++o) {
        out.replicas_by_type[f][options[f][o].type] += c.count[o];
        out.replicas += c.count[o];
      }
    }
    break;
  }
  for (const TypePacker& p : packers) out.packings += p.searches();
  return out;
}

AssignmentCost FerryPlacement(const SimConfig& instance, bool pass_need) {
  AssignmentCost out;
  std::vector<int> type_of;
  Cluster cluster = BuildCluster(instance, &type_of);
  const size_t nt = instance.node_types.size();
  out.feasible = true;
  for (const FunctionConfig& fc : instance.functions) {
    const FunctionProfiles profiles = ProfilesOf(fc, cluster);
    std::vector<int> by_type(nt, 0);
    std::map<int, int> on_node;
    double have = 0;
    control::ReplicaTarget target;
    target.max_replicas = 1 << 20;
    target.need_rps = Need(fc);
    int count = 0;
    while (control::WantsAnother(target, count, have)) {
      control::PlacementHints hints;
      hints.replicas_on_node.assign(on_node.begin(), on_node.end());
      if (pass_need) hints.needed_rps = control::Uncovered(target, have);
      const control::Decision d = control::PlaceOne(cluster, fc.req, profiles, hints);
      // A replica that could only take a turn on a GPU another replica runs does not add the
      // throughput its cover counts: the need is not served (as the oracle packs one per GPU).
      bool shared = false;
      const control::NodeSpec& node = cluster.nodes()[std::max(0, d.node)];
      for (size_t g = 0; d.placed && d.device_index >= 0 && g < node.gpus.size(); ++g) {
        if (node.gpus[g].index == d.device_index) {
          shared = cluster.usage()[d.node].gpu_replicas[g] > 0;
        }
      }
      if (!d.placed || d.throughput_rps <= 0 || shared) {
        out.feasible = false;
        break;
      }
      cluster.Assign(d.node, d.device_index, fc.req);
      ++on_node[d.node];
      have += d.throughput_rps;
      ++count;
      out.cost_per_hour += control::PriceShare(cluster.nodes()[d.node], d.device_index, fc.req);
      ++out.replicas;
      ++by_type[type_of[d.node]];
    }
    out.replicas_by_type.push_back(std::move(by_type));
  }
  return out;
}

SimConfig RandomOracleInstance(const OracleOptions& o) {
  std::mt19937_64 rng(o.seed);
  std::uniform_real_distribution<double> u(0, 1);
  auto uniform_int = [&](int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng);
  };
  struct Gpu {
    const char* name;
    int64_t mem_gib;
    int cc;
    double price_per_gpu;
    double speed;
  };
  const Gpu gpus[] = {{"NVIDIA T4", 16, 75, 0.975, 1.0},
                      {"NVIDIA A10G", 24, 86, 1.425, 1.7},
                      {"NVIDIA A100", 80, 80, 4.1, 3.5},
                      {"NVIDIA H100", 80, 90, 12.3, 6.0}};
  SimConfig c;
  c.seed = o.seed;
  // Node types: a CPU type (usually) and distinct GPU kinds.
  const int types = uniform_int(2, std::max(2, o.max_node_types));
  std::vector<int> kinds = {0, 1, 2, 3};
  std::shuffle(kinds.begin(), kinds.end(), rng);
  const bool with_cpu = u(rng) < 0.8;
  for (int t = 0; t < types; ++t) {
    NodeType n;
    n.count = uniform_int(1, std::max(1, o.max_nodes_per_type));
    const double jitter = 0.7 + 0.6 * u(rng);
    if (t == 0 && with_cpu) {
      n.name = "cpu";
      n.cpu_cores = 8 * uniform_int(1, 4);
      n.memory_bytes = static_cast<int64_t>(n.cpu_cores * 4) << 30;
      n.price_per_hour = 1.36 * n.cpu_cores / 32 * jitter;
    } else {
      const Gpu& g = gpus[kinds[t % 4]];
      n.name = absl::StrCat("gpu", t);
      n.gpu_kind = g.name;
      n.gpu_count = uniform_int(1, 4);
      n.gpu_memory_bytes = g.mem_gib << 30;
      n.compute_capability_x10 = g.cc;
      n.cpu_cores = 8 * n.gpu_count;
      n.memory_bytes = static_cast<int64_t>(n.cpu_cores * 4) << 30;
      n.price_per_hour = g.price_per_gpu * n.gpu_count * jitter;
    }
    c.node_types.push_back(n);
  }
  const int functions = uniform_int(1, std::max(1, o.max_functions));
  for (int f = 0; f < functions; ++f) {
    FunctionConfig fc;
    fc.name = absl::StrCat("fn-", f);
    const bool gpu = u(rng) < 0.6;
    fc.req.accelerator = gpu ? Accelerator::kGpu : Accelerator::kCpu;
    fc.req.cpu_cores = uniform_int(1, gpu ? 4 : 8);
    fc.req.memory_bytes = static_cast<int64_t>(uniform_int(1, 8)) << 30;
    fc.req.max_batch_size = gpu ? 8 : 4;
    double a_ref, b_ref;
    if (gpu) {
      fc.req.gpu_memory_bytes = static_cast<int64_t>(uniform_int(1, 20)) << 30;
      if (u(rng) < 0.2) fc.req.min_compute_capability_x10 = 80;
      b_ref = 20000 + u(rng) * 60000;
      a_ref = 3000 + u(rng) * 12000;
      for (const Gpu& g : gpus) {
        fc.profiles.push_back({g.name, {a_ref / g.speed, b_ref / g.speed, true}});
      }
    } else {
      b_ref = 5000 + u(rng) * 15000;
      a_ref = 5000 + u(rng) * 15000;
      fc.profiles.push_back({"cpu", {a_ref, b_ref, true}});
    }
    // A tight SLO now and then, which the reference hardware cannot meet.
    const double slack = u(rng) < 0.2 ? 0.8 : 2.5;
    fc.req.latency_target_us =
        std::round(slack * (a_ref * static_cast<double>(fc.req.max_batch_size) / 2 + b_ref));
    const control::Capacity cap = control::CapacityOf(LatencyModel{a_ref, b_ref, true}, fc.req);
    fc.trace.rate_rps = (0.3 + 3.7 * u(rng)) * cap.throughput_rps * fc.scaling.target_utilization;
    c.functions.push_back(std::move(fc));
  }
  return c;
}

}  // namespace ferry::sim
