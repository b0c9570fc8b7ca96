// Placement: which node (and which GPU on it) runs the next replica of a function.
//
// Shaped like the Kubernetes scheduler: every node of the cluster is checked by filter plugins
// (hard constraints) and the nodes that pass are ranked by score plugins; the best one wins. A
// node offers one or more candidates: its CPU, and each of its GPUs; a node passes when one of its
// candidates passes every filter, and it is scored by its best candidate.
//
// Filters, in order: node ready (lease), accelerator kind, minimum compute capability, free GPU
// memory (accounted as replicas are placed), free CPU cores, free memory, latency fit (a measured
// profile whose 1-item batch already misses the SLO target), cost cap (SLO maxCostPerMillion).
// Scores (0..100 each, weighted sum): cost per request within the SLO (weight 2; with a known
// need, PlacementHints::needed_rps, per request of that need served by whole replicas), spreading a
// function's replicas across nodes (weight 1: 100 / (1 + its replicas on the node)), warm affinity
// for nodes that hold the weights but run no replica of the function yet (weight 1). Only the
// candidates whose cost is within 1.05x of the cheapest are scored: spreading and warmth choose
// among near-equal prices and never buy a replica that costs more than 5 % over the cheapest.
// A GPU that already runs a replica is considered only when no idle GPU (or CPU, for `any`)
// passes the filters; among shared GPUs one running k replicas is scored at 1 / (k + 1) of its
// throughput (the replicas take turns on it). Ties go to the node with more free CPU, then to
// the lower node index.
//
// Cost model. A replica's share of a node's price: price / number of GPUs for a GPU replica,
// price × cpuCores / node cores for a CPU replica. Its throughput within the SLO comes from the
// latency model latency_us(n) = a·n + b of its hardware kind: the largest batch n ≤ maxBatchSize
// with latency_us(n) ≤ target / 2 (the other half is left to queueing), throughput = n /
// latency(n) × instances (at least n = 1). Cost per million requests = share per second /
// throughput × 10^6. Without a measured profile the stated conservative default is used:
// CPU latency_us(n) = 2000 + 1000·n, GPU latency_us(n) = 2000 + 100·n.
//
// Pure: no I/O, no clock, no locks. Not thread-safe; callers serialise use of a Cluster.
#ifndef FERRY_CONTROL_PLANE_PLACEMENT_H_
#define FERRY_CONTROL_PLANE_PLACEMENT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ferry/manifest.h"

namespace ferry::control {

// Hardware kinds ("cpu", "NVIDIA H200", ...) interned as small integers; kind 0 is "cpu".
class KindTable {
 public:
  KindTable() { Intern("cpu"); }
  int Intern(std::string_view name);
  // -1 when unknown.
  int Find(std::string_view name) const;
  const std::string& Name(int kind) const { return names_[kind]; }
  int size() const { return static_cast<int>(names_.size()); }

 private:
  std::vector<std::string> names_;
  std::unordered_map<std::string, int> ids_;
};

inline constexpr int kCpuKind = 0;

struct GpuDevice {
  int index = 0;  // CUDA ordinal on the node
  int kind = 0;   // KindTable id of its name
  int64_t memory_bytes = 0;
  int compute_capability_x10 = 0;  // "9.0" -> 90
};

struct NodeSpec {
  std::string id;
  double cpu_cores = 0;
  int64_t memory_bytes = 0;
  std::vector<GpuDevice> gpus;
  double price_per_hour = 0;  // dollars
  bool ready = true;          // lease active
};

struct NodeUsage {
  double cpu_cores = 0;
  int64_t memory_bytes = 0;
  std::vector<int64_t> gpu_bytes;  // per GpuDevice, same order as NodeSpec::gpus
  std::vector<int> gpu_replicas;   // replicas on each GpuDevice, same order
};

// What placement needs of a FunctionSpec.
struct Requirements {
  Accelerator accelerator = Accelerator::kCpu;
  int64_t gpu_memory_bytes = 0;
  int min_compute_capability_x10 = 0;  // 0 = none
  double cpu_cores = 1;
  int64_t memory_bytes = 0;
  double latency_target_us = 0;  // 0 = no latency target
  std::optional<double> max_cost_per_million;
  int64_t max_batch_size = 1;
  int64_t instances = 1;
};

Requirements RequirementsOf(const FunctionSpec& spec);
// "8.6" -> 86; 0 when empty or malformed.
int ParseComputeCapability(std::string_view text);

// latency_us(n) = a_us * n + b_us for one function on one hardware kind.
struct LatencyModel {
  double a_us = 0;
  double b_us = 0;
  bool measured = false;
};

LatencyModel DefaultLatencyModel(bool gpu);

// Least-squares fit of points (batch size, latency_us), never negative: with a negative slope
// (small batches that waited in the batcher) the line through the origin and the largest batch;
// with a negative intercept the least-squares line through the origin. nullopt without points.
std::optional<LatencyModel> FitLatency(const std::vector<std::pair<int, double>>& points);

struct Capacity {
  int64_t batch = 1;          // batch size used within the SLO
  double throughput_rps = 0;  // one replica
  bool meets_latency = true;  // latency(1) <= target (always true without a target)
};

Capacity CapacityOf(const LatencyModel& model, const Requirements& req);

// The number of replicas a function wants: ceil(minRps / throughput per replica) within
// [minReplicas, maxReplicas].
int DesiredReplicaCount(const FunctionSpec& spec, double throughput_rps_per_replica);

// Measured latency models of one function, by hardware kind.
struct FunctionProfiles {
  std::vector<std::pair<int, LatencyModel>> by_kind;
  // The measured model of `kind`, else the default for CPU (kind 0) or GPU.
  LatencyModel Get(int kind) const;
  void Set(int kind, const LatencyModel& model);
};

// Per-function facts that score plugins use.
struct PlacementHints {
  // Nodes (indices into Cluster::nodes) that already hold a replica of this function, with how
  // many; for spreading.
  std::vector<std::pair<int, int>> replicas_on_node;
  // Nodes that hold the function's weights (sorted indices); for warm affinity.
  std::vector<int> warm_nodes;
  // Throughput within the SLO (requests per second) still wanted from new replicas of the
  // function; 0 = unknown. When set, the cost score ranks a candidate by what covering that need
  // with replicas of its hardware costs, share × ceil(need / throughput), rather than by its
  // price per request at full throughput: for a load that fills no replica, one replica of a
  // bigger GPU can cost less than three of a GPU that is cheaper per request when full.
  double needed_rps = 0;
};

struct Decision {
  bool placed = false;
  int node = -1;          // index into Cluster::nodes
  int device_index = -1;  // GpuDevice::index; -1 = CPU
  int kind = kCpuKind;
  double cost_per_million = 0;
  double throughput_rps = 0;
  std::string reason;  // when not placed: "0/3 nodes fit: 2 have no GPU, 1 has ..."
};

class Cluster {
 public:
  int AddNode(NodeSpec spec);
  const std::vector<NodeSpec>& nodes() const { return nodes_; }
  const std::vector<NodeUsage>& usage() const { return usage_; }
  NodeSpec& mutable_node(int i) { return nodes_[i]; }
  // New inventory for node i; its usage restarts at zero (release its replicas first).
  void ReplaceNode(int i, NodeSpec spec);
  KindTable& kinds() { return kinds_; }
  const KindTable& kinds() const { return kinds_; }

  // Accounts (or un-accounts) one replica on node `node`, device `device_index` (-1 = CPU).
  void Assign(int node, int device_index, const Requirements& req);
  void Release(int node, int device_index, const Requirements& req);

 private:
  KindTable kinds_;
  std::vector<NodeSpec> nodes_;
  std::vector<NodeUsage> usage_;
};

// Chooses where one more replica goes; does not account it (call Cluster::Assign).
Decision PlaceOne(const Cluster& cluster, const Requirements& req, const FunctionProfiles& profiles,
                  const PlacementHints& hints);

// Whether the candidate (node, device_index) passes every filter; `why` gets the first failing
// filter's description. Used by tests and to re-check existing replicas.
bool CandidateFits(const Cluster& cluster, const Requirements& req,
                   const FunctionProfiles& profiles, int node, int device_index,
                   std::string* why = nullptr);

// Share of the node's price per hour that one replica on the candidate pays.
double PriceShare(const NodeSpec& node, int device_index, const Requirements& req);

std::string FormatMiB(int64_t bytes);

}  // namespace ferry::control

#endif  // FERRY_CONTROL_PLANE_PLACEMENT_H_
