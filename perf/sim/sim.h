// ferry's cluster simulator: a discrete-event simulation on a virtual clock that runs the real
// control-plane code (placement.h PlaceOne/CandidateFits, autoscaler.h Autoscaler, router.h
// PickReplica) against simulated nodes instead of agents and a network.
//
// What is simulated: heterogeneous nodes (CPU-only and GPU nodes of several kinds, with a price
// per hour); per-(function, hardware kind) batch latency a·n + b with log-normal noise; one batch
// queue per replica (when idle it dispatches min(queue, maxBatch) requests); a heartbeat every
// `heartbeat_s` that feeds each function's autoscaler (arrivals since the last one, in-flight
// requests) and reconciles replicas (place up, drain down); replica cold starts; gateway holds for
// functions without a ready replica (bounded queue and timeout); node failures, which the gateway
// sees at once (requests retried elsewhere) and the controller after a lease timeout.
//
// Single-threaded and deterministic for a given seed. Times are microseconds of virtual time.
#ifndef FERRY_PERF_SIM_SIM_H_
#define FERRY_PERF_SIM_SIM_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "control-plane/autoscaler.h"
#include "control-plane/placement.h"
#include "nlohmann/json.hpp"

namespace ferry::sim {

struct NodeType {
  std::string name;
  int count = 1;
  double cpu_cores = 32;
  int64_t memory_bytes = 128LL << 30;
  std::string gpu_kind;  // "" = CPU-only
  int gpu_count = 0;
  int64_t gpu_memory_bytes = 0;
  int compute_capability_x10 = 0;
  double price_per_hour = 1;
};

enum class TraceKind { kPoisson, kGamma, kStep, kRamp, kOnOff, kCsv };

struct TraceSpec {
  TraceKind kind = TraceKind::kPoisson;
  double rate_rps = 10;   // mean (gamma), base (step, ramp start), rate while on (on/off)
  double cv = 4;          // gamma: coefficient of variation of inter-arrival times
  double step_at_s = 60;  // step: when the rate becomes rate × step_factor
  double step_factor = 4;
  double ramp_to_rps = 40;  // ramp: rate at the end of the run
  double on_s = 30, off_s = 30;
  std::vector<double> times_s;  // csv: arrival times, sorted
};

struct FunctionConfig {
  std::string name;
  control::Requirements req;
  // Latency model by hardware kind name ("cpu", "NVIDIA A100", ...).
  std::vector<std::pair<std::string, control::LatencyModel>> profiles;
  control::AutoscalerSettings scaling;
  int initial_replicas = 1;  // also the fixed count of the no-autoscaling baseline
  TraceSpec trace;
};

struct SimConfig {
  std::vector<NodeType> node_types;
  std::vector<FunctionConfig> functions;
  double duration_s = 120;  // arrivals stop here; queues then drain
  uint64_t seed = 1;
  double noise_sigma = 0.1;  // log-normal sigma of batch latency
  double heartbeat_s = 1;
  double lease_timeout_s = 3;   // controller notices a dead node this long after it fails
  double cold_start_cpu_s = 2;  // replica placed -> ready
  double cold_start_gpu_s = 5;
  int64_t hold_queue = 1000;  // gateway hold per function without a ready replica
  // Requests waiting at one replica (the agent batcher's maxQueueSize, default 1024); past it the
  // request is rejected (429). 0 = unbounded.
  int64_t replica_queue_limit = 1024;
  // The agent batcher's delay budget (manifest batching.maxQueueDelayMicros, default 1000) under
  // policy aimd's adaptive delay; 0 = a batch leaves as soon as the executor is free.
  int64_t batch_delay_us = 1000;
  // Replicas that share a GPU take turns on it (time slicing, as CUDA contexts of several
  // processes do without MPS): one batch at a time per GPU, the waiting replicas in turn. false =
  // every replica has the GPU to itself.
  bool gpu_time_slicing = true;
  double hold_timeout_s = 30;
  double fail_fraction = 0;  // nodes failing at fail_at_s (chosen at random)
  double fail_at_s = 60;
  // Arrivals from this time on are also counted apart (steady state: the autoscalers have seen a
  // stable window of load); 0 = no split.
  double warmup_s = 0;
};

enum class Routing { kPowerOfTwo, kRoundRobin, kLeastOutstanding };
enum class PlacementPolicy { kFerry, kFastest, kCheapest };

struct Policy {
  std::string name = "ferry";
  Routing routing = Routing::kPowerOfTwo;
  PlacementPolicy placement = PlacementPolicy::kFerry;
  bool autoscale = true;  // false: initial_replicas, fixed
};

// The four baselines of the simulator plus ferry's policy, by name: ferry, round-robin,
// fastest-gpu, cheapest, fixed-replicas (PolicyNames). Also by name only: least-outstanding
// (ferry's placement and autoscaler, routing by router.h PickLeastOutstanding).
absl::StatusOr<Policy> PolicyByName(const std::string& name);
std::vector<std::string> PolicyNames();

struct GenerateOptions {
  int nodes = 20;
  int functions = 10;
  // Base load of each function's replicas (sized for it) against their throughput within the
  // SLO on the reference hardware.
  double utilization = 0.6;
  TraceSpec trace;  // kind and shape; each function's rate_rps is drawn
  uint64_t seed = 1;
};

// A heterogeneous cluster (CPU nodes; T4, A10G, A100, H100 nodes) and CPU/GPU functions with
// profiles, SLOs sized from them and initial replicas sized for their base rate.
SimConfig Generate(const GenerateOptions& options);

// JSON config (see docs/perf.md "Cluster simulator"); ToJson(Generate(...)) round-trips.
absl::StatusOr<SimConfig> ParseConfig(const nlohmann::json& json);
nlohmann::json ToJson(const SimConfig& config);
// CSV "time_s,function" rows (header optional): sets each named function's trace to kCsv.
absl::Status LoadArrivalsCsv(const std::string& text, SimConfig& config);

// Why a request missed its SLO, attributed at its answer (first match in this order). Names for
// printing: MissCauseName.
enum class MissCause {
  kHeld,           // waited at the gateway for a ready replica (cold start, scale from zero)
  kRetried,        // re-routed after its node failed
  kSlowHardware,   // the batch ran over the SLO, and its hardware's 1-item batch already does
  kBatchTooLarge,  // the batch ran over the SLO, and its size alone (no noise) does
  kExecNoise,      // the batch ran over the SLO only by its noise
  kRouter,         // queued behind others while another ready replica of the function was idle
  kScalingUp,      // queued while the function had replicas placed but not yet ready
  kBurst,          // queued at the ready replicas with nothing starting: load above what they hold
  kCount
};
inline constexpr int kMissCauses = static_cast<int>(MissCause::kCount);
const char* MissCauseName(MissCause cause);

struct FunctionResult {
  std::string name;
  int64_t arrivals = 0, answered = 0, within_slo = 0, rejected = 0, retried = 0;
  int64_t unplaced = 0;  // replicas wanted that placement could not place
  int64_t direction_changes = 0;
  int max_replicas_seen = 0;
  std::array<int64_t, kMissCauses> misses{};           // by MissCause
  int64_t steady_arrivals = 0, steady_within_slo = 0;  // arrivals at or after warmup_s
  double ready_replica_s = 0;    // replica-seconds ready (routable or draining)
  double busy_replica_s = 0;     // replica-seconds executing a batch
  double capacity_requests = 0;  // ready replica-seconds × their throughput within the SLO
  // Step traces: from the step to the first decision up, the first replica placed after it, and
  // that replica ready; -1 when none.
  double step_decision_s = -1, step_placed_s = -1, step_ready_s = -1;
};

struct Decision {
  double t_s;
  int function;
  int from, to;
  bool panic;
  std::string reason;
};

struct TimelinePoint {
  double t_s;
  int replicas, ready;
  double cost_per_hour;
  double arrivals_rps;
  // How full the cluster is (live nodes): shares of its GPU memory and CPU cores held by
  // replicas, and of its GPUs that hold at least one replica.
  double gpu_memory_share = 0, cpu_share = 0, gpus_used_share = 0;
};

struct RunResult {
  std::string policy;
  std::vector<FunctionResult> functions;
  std::vector<Decision> decisions;
  std::vector<TimelinePoint> timeline;
  // (t, function, replicas) at every change of a function's live replica count.
  std::vector<std::tuple<double, int, int>> replica_changes;
  int64_t arrivals = 0, answered = 0, within_slo = 0, rejected = 0, retried = 0;
  std::map<std::string, int64_t> rejected_by_reason;
  int64_t lost = 0;                  // neither answered nor rejected at the end: must be 0
  int64_t placement_violations = 0;  // assignments over capacity / wrong accelerator: must be 0
  std::vector<std::string> violation_examples;
  int64_t placements = 0;
  double cost = 0;  // dollars
  double end_s = 0;
  int failed_nodes = 0;
  int64_t failure_killed_replicas = 0;  // replicas on the failed nodes
  double failure_detected_s = -1;       // the controller's lease expiry, after the failure
  int64_t failure_replaced = 0;         // replicas placed by the first reconcile after it
  double failure_replaced_s = -1;       // that reconcile, after the failure
  int64_t events = 0;
  double wall_s = 0;
  std::array<int64_t, kMissCauses> misses{};  // by MissCause, all functions
  int64_t steady_arrivals = 0, steady_within_slo = 0;
  double steady_attainment() const {
    return steady_arrivals
               ? static_cast<double>(steady_within_slo) / static_cast<double>(steady_arrivals)
               : 1.0;
  }
  // Measured utilisation of the replicas while ready. Busy: the time they executed a batch.
  // Within the SLO: requests answered / what the ready replicas could serve at their throughput
  // within the SLO (placement.h CapacityOf on their hardware), the quantity the autoscaler's
  // targetUtilization aims at.
  double ready_replica_s = 0, busy_replica_s = 0, capacity_requests = 0;
  double busy_utilization() const {
    return ready_replica_s > 0 ? busy_replica_s / ready_replica_s : 0;
  }
  // Time averages of the timeline's cluster shares (TimelinePoint).
  double cluster_gpu_memory_share = 0, cluster_cpu_share = 0, cluster_gpus_used_share = 0;
  double slo_capacity_utilization() const {
    return capacity_requests > 0 ? static_cast<double>(answered) / capacity_requests : 0;
  }
  double slo_attainment() const {
    return arrivals ? static_cast<double>(within_slo) / static_cast<double>(arrivals) : 1.0;
  }
  bool invariants_ok() const {
    return lost == 0 && placement_violations == 0 && answered + rejected == arrivals;
  }
};

absl::StatusOr<RunResult> Run(const SimConfig& config, const Policy& policy);

// The cluster a SimConfig describes (node types expanded in order, GPU kinds interned).
// type_of[i], when given, gets the node type of node i.
control::Cluster BuildCluster(const SimConfig& config, std::vector<int>* type_of = nullptr);

// functions.csv, decisions.csv, timeline.csv, replicas.csv under `dir` (created), each file
// prefixed with the policy name.
absl::Status WriteCsv(const RunResult& result, const SimConfig& config, const std::string& dir);

}  // namespace ferry::sim

#endif  // FERRY_PERF_SIM_SIM_H_
