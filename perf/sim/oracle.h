// Exhaustive cost oracle for small placement instances: the cheapest feasible assignment of
// replicas to hardware that serves every function's load within its SLO, against which ferry's
// greedy placement (placement.h PlaceOne, one replica at a time) is compared.
//
// An instance is a SimConfig: its node types (each node type is one "hardware option" for a CPU
// replica and, when it has GPUs, one for a GPU replica) and its functions, each with a load
// (trace.rate_rps) and its autoscaler's target utilisation (scaling.target_utilization). A
// function is served when the throughput within its SLO of its replicas (CapacityOf of each
// replica's hardware kind), summed, reaches load / target utilisation. An assignment is feasible
// when every replica passes placement's filters on an empty node of its type (accelerator,
// compute capability, latency fit, cost cap: CandidateFits) and all replicas pack onto the
// nodes (CPU cores, memory; one replica per GPU, within its memory: replicas on one GPU take
// turns on it, so a shared GPU would not give each the throughput counted). Cost: the sum of the
// replicas' price shares
// per hour (PriceShare, placement's cost model), i.e. what the cluster bills for them.
//
// The oracle enumerates, per function, every minimal multiset of options that serves it (no
// replica can be dropped), takes the product over functions in increasing total cost, and
// returns the first whose replicas pack (depth-first search over nodes and devices, identical
// nodes and devices tried once). Exponential: meant for a handful of nodes and functions.
//
// Pure and single-threaded.
#ifndef FERRY_PERF_SIM_ORACLE_H_
#define FERRY_PERF_SIM_ORACLE_H_

#include <cstdint>
#include <vector>

#include "perf/sim/sim.h"

namespace ferry::sim {

struct AssignmentCost {
  bool feasible = false;     // every function served
  double cost_per_hour = 0;  // sum of price shares of the replicas
  int replicas = 0;
  // Per function, replicas per node type (index into SimConfig::node_types).
  std::vector<std::vector<int>> replicas_by_type;
  int64_t combinations = 0;  // oracle: assignments priced; packing searches run
  int64_t packings = 0;
  bool exhausted = false;  // oracle: gave up at the search limit (result not proven optimal)
};

// The cheapest feasible assignment (feasible = false when none exists). `max_combinations`
// bounds the search; past it `exhausted` is set.
AssignmentCost CheapestFeasible(const SimConfig& instance, int64_t max_combinations = 5'000'000);

// ferry's placement: functions in order, each gets replicas from PlaceOne (accounted with
// Cluster::Assign, spreading hints as the controller gives them) until their throughput within
// the SLO reaches load / target utilisation. feasible = false when PlaceOne refuses first.
// `pass_need`: each PlaceOne is told the throughput still wanted (PlacementHints::needed_rps),
// as the controller does (replica_target.h); else it is not (needed_rps 0, how the controller
// called it before it stated its need in requests per second).
AssignmentCost FerryPlacement(const SimConfig& instance, bool pass_need);

struct OracleOptions {
  int max_node_types = 4;
  int max_nodes_per_type = 3;
  int max_functions = 4;
  uint64_t seed = 1;
};

// A random small instance: 2..max_node_types node types drawn from CPU, T4, A10G, A100, H100
// nodes with 1-4 GPUs, prices ±30 % around list, 1..max_nodes_per_type nodes each; 1..max_functions
// CPU or GPU functions (1-20 GiB GPU memory, 1-8 cores) with profiles as Generate draws them and a
// load of 0.3-4 reference replicas.
SimConfig RandomOracleInstance(const OracleOptions& options);

}  // namespace ferry::sim

#endif  // FERRY_PERF_SIM_ORACLE_H_
