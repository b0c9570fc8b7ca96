#include "control-plane/placement.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace ferry::control {

int KindTable::Intern(std::string_view name) {
  auto it = ids_.find(std::string(name));
  if (it != ids_.end()) return it->second;
  const int id = static_cast<int>(names_.size());
  names_.emplace_back(name);
  ids_.emplace(std::string(name), id);
  return id;
}

int KindTable::Find(std::string_view name) const {
  auto it = ids_.find(std::string(name));
  return it == ids_.end() ? -1 : it->second;
}

int ParseComputeCapability(std::string_view view) {
  const std::string text(view);  // this Abseil's string_view is not std::string_view
  const size_t dot = text.find('.');
  int major = 0;
  int minor = 0;
  if (dot == std::string_view::npos) {
    if (!absl::SimpleAtoi(text, &major)) return 0;
  } else if (!absl::SimpleAtoi(text.substr(0, dot), &major) ||
             !absl::SimpleAtoi(text.substr(dot + 1), &minor)) {
    return 0;
  }
  if (major < 0 || minor < 0 || minor > 9) return 0;
  return major * 10 + minor;
}

Requirements RequirementsOf(const FunctionSpec& spec) {
  Requirements r;
  r.accelerator = spec.hardware.accelerator;
  r.gpu_memory_bytes = spec.hardware.gpu_memory_mib << 20;
  r.min_compute_capability_x10 = ParseComputeCapability(spec.hardware.min_compute_capability);
  r.cpu_cores = spec.hardware.cpu_cores;
  r.memory_bytes = spec.hardware.memory_mib << 20;
  r.latency_target_us = spec.slo.latency_target_ms * 1000.0;
  r.max_cost_per_million = spec.slo.max_cost_per_million;
  r.max_batch_size = std::max<int64_t>(1, spec.batching.max_batch_size);
  r.instances = std::max<int64_t>(1, spec.batching.instances);
  return r;
}

LatencyModel DefaultLatencyModel(bool gpu) {
  return gpu ? LatencyModel{100.0, 2000.0, false} : LatencyModel{1000.0, 2000.0, false};
}

std::optional<LatencyModel> FitLatency(const std::vector<std::pair<int, double>>& points) {
  if (points.empty()) return std::nullopt;
  const double n = static_cast<double>(points.size());
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const auto& [x, y] : points) {
    sx += x;
    sy += y;
    sxx += static_cast<double>(x) * x;
    sxy += static_cast<double>(x) * y;
  }
  LatencyModel m;
  m.measured = true;
  const double denom = n * sxx - sx * sx;
  if (points.size() < 2 || std::abs(denom) < 1e-9) {
    // One batch size: assume latency grows linearly through the origin, which never
    // overestimates what larger batches achieve.
    m.a_us = sy / sx;
    m.b_us = 0;
    return m;
  }
  m.a_us = (n * sxy - sx * sy) / denom;
  m.b_us = (sy - m.a_us * sx) / n;
  if (m.a_us < 0) {
    // Larger batches measured faster than small ones: small batches waited for company in the
    // batcher. Trust the largest batch, which departs at once, and scale linearly from it.
    const auto& largest = *std::max_element(points.begin(), points.end());
    m.a_us = largest.second / largest.first;
    m.b_us = 0;
    return m;
  }
  if (m.b_us < 0) {
    m.b_us = 0;
    m.a_us = sxy / sxx;
  }
  return m;
}

Capacity CapacityOf(const LatencyModel& model, const Requirements& req) {
  Capacity c;
  const double lat1 = model.a_us + model.b_us;
  int64_t n = req.max_batch_size;
  if (req.latency_target_us > 0) {
    c.meets_latency = lat1 <= req.latency_target_us;
    const double budget = req.latency_target_us / 2;
    if (model.a_us > 0) {
      const double fit = std::floor((budget - model.b_us) / model.a_us);
      n = fit < 1 ? 1 : std::min<int64_t>(req.max_batch_size, static_cast<int64_t>(fit));
    }
  }
  c.batch = n;
  const double lat = std::max(1.0, model.a_us * static_cast<double>(n) + model.b_us);
  c.throughput_rps = static_cast<double>(n) / lat * 1e6 * static_cast<double>(req.instances);
  return c;
}

int DesiredReplicaCount(const FunctionSpec& spec, double throughput_rps_per_replica) {
  int64_t want = spec.scaling.min_replicas;
  if (spec.slo.min_rps > 0 && throughput_rps_per_replica > 0) {
    want = std::max<int64_t>(
        want, static_cast<int64_t>(std::ceil(spec.slo.min_rps / throughput_rps_per_replica)));
  }
  want = std::min<int64_t>(want, spec.scaling.max_replicas);
  return static_cast<int>(std::max<int64_t>(0, want));
}

LatencyModel FunctionProfiles::Get(int kind) const {
  for (const auto& [k, m] : by_kind) {
    if (k == kind) return m;
  }
  return DefaultLatencyModel(kind != kCpuKind);
}

void FunctionProfiles::Set(int kind, const LatencyModel& model) {
  for (auto& [k, m] : by_kind) {
    if (k == kind) {
      m = model;
      return;
    }
  }
  by_kind.emplace_back(kind, model);
}

int Cluster::AddNode(NodeSpec spec) {
  NodeUsage u;
  u.gpu_bytes.assign(spec.gpus.size(), 0);
  u.gpu_replicas.assign(spec.gpus.size(), 0);
  nodes_.push_back(std::move(spec));
  usage_.push_back(std::move(u));
  return static_cast<int>(nodes_.size()) - 1;
}

void Cluster::ReplaceNode(int i, NodeSpec spec) {
  usage_[i] = NodeUsage();
  usage_[i].gpu_bytes.assign(spec.gpus.size(), 0);
  usage_[i].gpu_replicas.assign(spec.gpus.size(), 0);
  nodes_[i] = std::move(spec);
}

namespace {

int GpuSlot(const NodeSpec& node, int device_index) {
  for (size_t i = 0; i < node.gpus.size(); ++i) {
    if (node.gpus[i].index == device_index) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace

void Cluster::Assign(int node, int device_index, const Requirements& req) {
  NodeUsage& u = usage_[node];
  u.cpu_cores += req.cpu_cores;
  u.memory_bytes += req.memory_bytes;
  if (device_index >= 0) {
    const int slot = GpuSlot(nodes_[node], device_index);
    if (slot >= 0) {
      u.gpu_bytes[slot] += req.gpu_memory_bytes;
      ++u.gpu_replicas[slot];
    }
  }
}

void Cluster::Release(int node, int device_index, const Requirements& req) {
  NodeUsage& u = usage_[node];
  u.cpu_cores = std::max(0.0, u.cpu_cores - req.cpu_cores);
  u.memory_bytes = std::max<int64_t>(0, u.memory_bytes - req.memory_bytes);
  if (device_index >= 0) {
    const int slot = GpuSlot(nodes_[node], device_index);
    if (slot >= 0) {
      u.gpu_bytes[slot] = std::max<int64_t>(0, u.gpu_bytes[slot] - req.gpu_memory_bytes);
      u.gpu_replicas[slot] = std::max(0, u.gpu_replicas[slot] - 1);
    }
  }
}

double PriceShare(const NodeSpec& node, int device_index, const Requirements& req) {
  if (device_index >= 0) {
    return node.price_per_hour / static_cast<double>(std::max<size_t>(1, node.gpus.size()));
  }
  if (node.cpu_cores <= 0) return node.price_per_hour;
  return node.price_per_hour * std::min(1.0, req.cpu_cores / node.cpu_cores);
}

std::string FormatMiB(int64_t bytes) { return absl::StrCat(bytes >> 20); }

namespace {

// Floating-point slack so that e.g. 4 × 0.1 cores fit into 0.4.
constexpr double kCpuEpsilon = 1e-9;

// One candidate: a node's CPU (gpu == nullptr) or one of its GPUs.
struct Candidate {
  int node = 0;
  const NodeSpec* spec = nullptr;
  const NodeUsage* usage = nullptr;
  const GpuDevice* gpu = nullptr;
  int64_t gpu_used = 0;
  int gpu_replicas = 0;
};

// Per-cycle state shared by the plugins (the scheduler's CycleState).
struct CycleState {
  const Requirements* req = nullptr;
  const FunctionProfiles* profiles = nullptr;
  const KindTable* kinds = nullptr;
  // Per hardware kind, computed once per cycle.
  std::vector<Capacity> capacity;
  std::vector<LatencyModel> model;

  void Init(const Cluster& cluster, const Requirements& r, const FunctionProfiles& p) {
    req = &r;
    profiles = &p;
    kinds = &cluster.kinds();
    const int n = cluster.kinds().size();
    capacity.resize(n);
    model.resize(n);
    for (int k = 0; k < n; ++k) {
      model[k] = p.Get(k);
      capacity[k] = CapacityOf(model[k], r);
    }
  }
  int KindOf(const Candidate& c) const { return c.gpu == nullptr ? kCpuKind : c.gpu->kind; }
  // The cost the score ranks: per request at full throughput, or, with a known need, per
  // request of the need when it is covered by whole replicas of the candidate's hardware (the
  // rounding up is what makes a big GPU win for a small load).
  //
  // A GPU that already runs k replicas is time-sliced among k + 1: its candidate is scored at
  // 1 / (k + 1) of the throughput (what the new replica gets while all are busy), so an idle GPU
  // wins unless sharing is still the cheaper cover. Sharing stays possible (several models on
  // one GPU of a small node), it is just not free.
  double ScoredCost(const Candidate& c, double needed_rps) const {
    const double slices = 1.0 + (c.gpu != nullptr ? c.gpu_replicas : 0);
    const double full = CostPerMillion(c) * slices;
    const double rps = capacity[KindOf(c)].throughput_rps / slices;
    if (!(needed_rps > 0) || !std::isfinite(full) || rps <= 0) return full;
    const double replicas = std::ceil(needed_rps / rps - 1e-9);
    return full * replicas * rps / needed_rps;
  }
  double CostPerMillion(const Candidate& c) const {
    const Capacity& cap = capacity[KindOf(c)];
    const double share = PriceShare(*c.spec, c.gpu ? c.gpu->index : -1, *req);
    if (cap.throughput_rps <= 0) return std::numeric_limits<double>::infinity();
    return share / 3600.0 / cap.throughput_rps * 1e6;
  }
};

// --- Filter plugins -------------------------------------------------------------------------

enum FilterId {
  kNodeReady,
  kAcceleratorKind,
  kComputeCapability,
  kGpuMemory,
  kCpuCores,
  kMemory,
  kLatencyFit,
  kCostCap,
  kNumFilters
};

struct FilterPlugin {
  const char* name;
  // true when the candidate passes; else *detail holds the value the message reports.
  bool (*filter)(const CycleState&, const Candidate&, double* detail);
  // Whether detail a describes a node that is closer to fitting than b.
  bool higher_is_closer;
  // "1 has no GPU" / "2 have no GPU": count, best detail.
  std::string (*describe)(const CycleState&, int count, double detail);
};

const char* Has(int n) { return n == 1 ? "has" : "have"; }
const char* AtMost(int n) { return n == 1 ? "" : "at most "; }

std::string Num(double v) { return absl::StrFormat("%g", v); }

std::string CcText(int x10) { return absl::StrCat(x10 / 10, ".", x10 % 10); }

const std::array<FilterPlugin, kNumFilters> kFilters = {{
    {"NodeReady", [](const CycleState&, const Candidate& c, double*) { return c.spec->ready; },
     true,
     [](const CycleState&, int n, double) {
       return absl::StrCat(n, n == 1 ? " is" : " are", " not ready (lease lost)");
     }},
    {"AcceleratorKind",
     [](const CycleState& s, const Candidate& c, double*) {
       // A GPU function's CPU candidate exists only to report "no GPU".
       return !(s.req->accelerator == Accelerator::kGpu && c.gpu == nullptr);
     },
     true,
     [](const CycleState&, int n, double) { return absl::StrCat(n, " ", Has(n), " no GPU"); }},
    {"ComputeCapability",
     [](const CycleState& s, const Candidate& c, double* d) {
       if (c.gpu == nullptr || s.req->min_compute_capability_x10 == 0) return true;
       *d = c.gpu->compute_capability_x10;
       return c.gpu->compute_capability_x10 >= s.req->min_compute_capability_x10;
     },
     true,
     [](const CycleState& s, int n, double d) {
       return absl::StrCat(n, " ", Has(n), " GPU compute capability ", AtMost(n),
                           CcText(static_cast<int>(d)), " (needs ",
                           CcText(s.req->min_compute_capability_x10), ")");
     }},
    {"GpuMemory",
     [](const CycleState& s, const Candidate& c, double* d) {
       if (c.gpu == nullptr) return true;
       const int64_t free_bytes = c.gpu->memory_bytes - c.gpu_used;
       *d = static_cast<double>(free_bytes);
       return free_bytes >= s.req->gpu_memory_bytes;
     },
     true,
     [](const CycleState& s, int n, double d) {
       return absl::StrCat(n, " ", Has(n), " ", AtMost(n), FormatMiB(static_cast<int64_t>(d)),
                           " MiB free GPU memory (needs ", FormatMiB(s.req->gpu_memory_bytes), ")");
     }},
    {"CpuCores",
     [](const CycleState& s, const Candidate& c, double* d) {
       const double free_cores = c.spec->cpu_cores - c.usage->cpu_cores;
       *d = free_cores;
       return free_cores + kCpuEpsilon >= s.req->cpu_cores;
     },
     true,
     [](const CycleState& s, int n, double d) {
       return absl::StrCat(n, " ", Has(n), " ", AtMost(n), Num(std::max(0.0, d)),
                           " free CPU cores (needs ", Num(s.req->cpu_cores), ")");
     }},
    {"Memory",
     [](const CycleState& s, const Candidate& c, double* d) {
       const int64_t free_bytes = c.spec->memory_bytes - c.usage->memory_bytes;
       *d = static_cast<double>(free_bytes);
       return free_bytes >= s.req->memory_bytes;
     },
     true,
     [](const CycleState& s, int n, double d) {
       return absl::StrCat(n, " ", Has(n), " ", AtMost(n),
                           FormatMiB(std::max<int64_t>(0, static_cast<int64_t>(d))),
                           " MiB free memory (needs ", FormatMiB(s.req->memory_bytes), ")");
     }},
    {"LatencyFit",
     [](const CycleState& s, const Candidate& c, double* d) {
       const int kind = s.KindOf(c);
       if (!s.model[kind].measured) return true;
       *d = s.model[kind].a_us + s.model[kind].b_us;
       return s.capacity[kind].meets_latency;
     },
     false,
     [](const CycleState& s, int n, double d) {
       return absl::StrCat(n, " ", n == 1 ? "runs" : "run", " a 1-item batch in ",
                           n == 1 ? "" : "at least ", Num(d / 1000.0), " ms (measured), over the ",
                           Num(s.req->latency_target_us / 1000.0), " ms latency target");
     }},
    {"CostCap",
     [](const CycleState& s, const Candidate& c, double* d) {
       if (!s.req->max_cost_per_million.has_value()) return true;
       const double cost = s.CostPerMillion(c);
       *d = cost;
       return cost <= *s.req->max_cost_per_million;
     },
     false,
     [](const CycleState& s, int n, double d) {
       return absl::StrCat(n, " ", n == 1 ? "costs" : "cost", " ", n == 1 ? "" : "at least ",
                           absl::StrFormat("$%.4g", d), " per million requests (cap ",
                           absl::StrFormat("$%.4g", *s.req->max_cost_per_million), ")");
     }},
}};

// Runs the filters on one candidate; returns kNumFilters when it passes, else the failing one.
inline int RunFilters(const CycleState& s, const Candidate& c, double* detail) {
  for (int f = 0; f < kNumFilters; ++f) {
    if (!kFilters[f].filter(s, c, detail)) return f;
  }
  return kNumFilters;
}

// Calls fn(candidate) for each candidate of a node; stops early when fn returns false.
template <typename Fn>
void ForEachCandidate(const Cluster& cluster, const Requirements& req, int node, Fn fn) {
  Candidate c;
  c.node = node;
  c.spec = &cluster.nodes()[node];
  c.usage = &cluster.usage()[node];
  const bool want_gpu = req.accelerator != Accelerator::kCpu;
  const bool want_cpu = req.accelerator != Accelerator::kGpu;
  if (want_gpu) {
    for (size_t g = 0; g < c.spec->gpus.size(); ++g) {
      c.gpu = &c.spec->gpus[g];
      c.gpu_used = c.usage->gpu_bytes[g];
      c.gpu_replicas = c.usage->gpu_replicas[g];
      if (!fn(c)) return;
    }
  }
  // A GPU function on a GPU-less node still gets one (CPU) candidate so that "no GPU" is said.
  if (want_cpu || c.spec->gpus.empty()) {
    c.gpu = nullptr;
    c.gpu_used = 0;
    c.gpu_replicas = 0;
    fn(c);
  }
}

// --- Score plugins --------------------------------------------------------------------------

struct Scored {
  Candidate c;
  double cost = 0;
};

int ReplicasOn(const PlacementHints& hints, int node) {
  for (const auto& [n, count] : hints.replicas_on_node) {
    if (n == node) return count;
  }
  return 0;
}

bool IsWarm(const PlacementHints& hints, int node) {
  return std::binary_search(hints.warm_nodes.begin(), hints.warm_nodes.end(), node);
}

constexpr double kCostWeight = 2;
constexpr double kSpreadWeight = 1;
constexpr double kWarmWeight = 1;
// Candidates costing more than this factor of the cheapest are not scored at all.
constexpr double kCostBand = 1.05;

std::string ExplainNoFit(const Cluster& cluster, const CycleState& s) {
  const int total = static_cast<int>(cluster.nodes().size());
  if (total == 0) return "0/0 nodes fit: no nodes are registered";
  std::array<int, kNumFilters> count{};
  std::array<double, kNumFilters> best{};
  for (int node = 0; node < total; ++node) {
    int furthest = -1;
    double furthest_detail = 0;
    ForEachCandidate(cluster, *s.req, node, [&](const Candidate& c) {
      double d = 0;
      const int f = RunFilters(s, c, &d);
      const bool closer =
          f > furthest || (f == furthest && (kFilters[f].higher_is_closer ? d > furthest_detail
                                                                          : d < furthest_detail));
      if (closer) {
        furthest = f;
        furthest_detail = d;
      }
      return true;
    });
    if (furthest < 0 || furthest >= kNumFilters) continue;
    const FilterPlugin& p = kFilters[furthest];
    if (count[furthest] == 0 || (p.higher_is_closer ? furthest_detail > best[furthest]
                                                    : furthest_detail < best[furthest])) {
      best[furthest] = furthest_detail;
    }
    ++count[furthest];
  }
  std::vector<std::string> parts;
  for (int f = 0; f < kNumFilters; ++f) {
    if (count[f] > 0) parts.push_back(kFilters[f].describe(s, count[f], best[f]));
  }
  return absl::StrCat("0/", total, " nodes fit: ", absl::StrJoin(parts, ", "));
}

}  // namespace

bool CandidateFits(const Cluster& cluster, const Requirements& req,
                   const FunctionProfiles& profiles, int node, int device_index, std::string* why) {
  CycleState s;
  s.Init(cluster, req, profiles);
  bool found = false;
  bool fits = false;
  ForEachCandidate(cluster, req, node, [&](const Candidate& c) {
    const int dev = c.gpu ? c.gpu->index : -1;
    if (dev != device_index) return true;
    found = true;
    double d = 0;
    const int f = RunFilters(s, c, &d);
    fits = f == kNumFilters;
    if (!fits && why != nullptr)
      *why = absl::StrCat(kFilters[f].name, ": ", kFilters[f].describe(s, 1, d));
    return false;
  });
  if (!found && why != nullptr) *why = "no such candidate on the node";
  return found && fits;
}

Decision PlaceOne(const Cluster& cluster, const Requirements& req, const FunctionProfiles& profiles,
                  const PlacementHints& hints) {
  CycleState s;
  s.Init(cluster, req, profiles);
  const int total = static_cast<int>(cluster.nodes().size());

  // Filter: each node's best (cheapest) passing candidate.
  std::vector<Scored> feasible;
  feasible.reserve(64);
  double min_cost = std::numeric_limits<double>::infinity();
  for (int node = 0; node < total; ++node) {
    if (!cluster.nodes()[node].ready) continue;
    Scored best;
    bool any = false;
    ForEachCandidate(cluster, req, node, [&](const Candidate& c) {
      double d = 0;
      if (RunFilters(s, c, &d) != kNumFilters) return true;
      const double cost = s.ScoredCost(c, hints.needed_rps);
      // Among one node's GPUs, prefer an idle one (below, a busy GPU counts only where no idle
      // one fits anywhere), then the cheapest, then the one with the most free memory.
      const bool shared = c.gpu != nullptr && c.gpu_replicas > 0;
      const bool best_shared = any && best.c.gpu != nullptr && best.c.gpu_replicas > 0;
      if (!any || (best_shared && !shared) ||
          (shared == best_shared &&
           (cost < best.cost ||
            (cost == best.cost && c.gpu != nullptr && best.c.gpu != nullptr &&
             c.gpu->memory_bytes - c.gpu_used > best.c.gpu->memory_bytes - best.c.gpu_used)))) {
        best.c = c;
        best.cost = cost;
        any = true;
      }
      return true;
    });
    if (!any) continue;
    min_cost = std::min(min_cost, best.cost);
    feasible.push_back(best);
  }

  Decision out;
  if (feasible.empty()) {
    out.reason = ExplainNoFit(cluster, s);
    return out;
  }
  // A GPU that runs a replica already is a candidate only when no idle one (or CPU) fits: the
  // replica pays the GPU's whole price share either way, and on a shared GPU it gets a turn,
  // not the GPU. (In the simulator, with replicas taking turns on a shared GPU, letting cost pick
  // a shared cheap GPU over an idle dear one took attainment under bursts from 99.9 % to 96 %.)
  const auto shared = [](const Scored& f) { return f.c.gpu != nullptr && f.c.gpu_replicas > 0; };
  if (!std::all_of(feasible.begin(), feasible.end(), shared)) {
    std::erase_if(feasible, shared);
    min_cost = std::numeric_limits<double>::infinity();
    for (const Scored& f : feasible) min_cost = std::min(min_cost, f.cost);
  }

  // Score: weighted sum of normalised (0..100) plugin scores, among the candidates within
  // kCostBand of the cheapest. Spreading and warmth are worth a few percent of cost, never more:
  // with the band left open, a second replica's spreading score (50 more than on a node that
  // holds one) outbid a node 25 % cheaper, and across a cluster those choices add up.
  double best_score = -1;
  const Scored* winner = nullptr;
  double winner_free = 0;
  for (const Scored& f : feasible) {
    if (std::isfinite(min_cost) && f.cost > min_cost * kCostBand) continue;
    const double cost_score =
        f.cost <= 0 || !std::isfinite(min_cost) ? 100.0 : 100.0 * min_cost / f.cost;
    // Warmth only counts where the function has no replica yet: a second replica on the same
    // node buys no availability, so spreading decides there.
    const int on_node = ReplicasOn(hints, f.c.node);
    const double warm_score = on_node == 0 && IsWarm(hints, f.c.node) ? 100.0 : 0.0;
    const double spread_score = 100.0 / (1.0 + on_node);
    const double score =
        kCostWeight * cost_score + kSpreadWeight * spread_score + kWarmWeight * warm_score;
    const double free_cpu = f.c.spec->cpu_cores - f.c.usage->cpu_cores;
    if (score > best_score + 1e-9 ||
        (std::abs(score - best_score) <= 1e-9 && free_cpu > winner_free)) {
      best_score = score;
      winner = &f;
      winner_free = free_cpu;
    }
  }
  out.placed = true;
  out.node = winner->c.node;
  out.device_index = winner->c.gpu ? winner->c.gpu->index : -1;
  out.kind = s.KindOf(winner->c);
  out.cost_per_million = s.CostPerMillion(winner->c);
  out.throughput_rps = s.capacity[out.kind].throughput_rps;
  return out;
}

}  // namespace ferry::control
