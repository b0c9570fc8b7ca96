// Replica choice for one request: the gateway's power-of-two-choices, as a pure function so that
// the cluster simulator (perf/sim) runs the same code the gateway runs.
//
// Two distinct replicas are drawn uniformly at random and the one with fewer outstanding requests
// wins (ties go to the first draw). With one replica no random number is drawn. Where the
// replicas' throughputs are known (they run on different hardware), the one that would serve a
// new request sooner wins: the lower (outstanding + 1) / throughput. Unweighted, a clump split
// evenly between an A10G and a T4 replica of one function leaves the T4's share waiting longest;
// in the simulator's 1,000-node bursty runs, round robin (blind to speed) attains 0.7-1.0 points
// less within the SLO than the weighted choice (docs/perf.md, "Cluster simulator").
//
// Pure: no I/O, no locks, no clock; the caller owns the random generator (not thread-safe, one
// per thread).
#ifndef FERRY_CONTROL_PLANE_ROUTER_H_
#define FERRY_CONTROL_PLANE_ROUTER_H_

#include <cstdint>
#include <random>
#include <span>

namespace ferry::control {

// `outstanding[i]`: requests in flight at replica i (a load snapshot). Returns the index chosen,
// or -1 when `outstanding` is empty.
int PickReplica(std::span<const int64_t> outstanding, std::mt19937_64& rng);
// `throughput_rps[i]`: replica i's throughput within the SLO (requests per second); used when it
// has one entry per replica and both drawn entries are > 0, else as above.
int PickReplica(std::span<const int64_t> outstanding, std::span<const double> throughput_rps,
                std::mt19937_64& rng);

// Full scan: the replica with the fewest outstanding requests, ties broken uniformly at random
// (join the shortest queue). Draws one random number per tie.
int PickLeastOutstanding(std::span<const int64_t> outstanding, std::mt19937_64& rng);

}  // namespace ferry::control

#endif  // FERRY_CONTROL_PLANE_ROUTER_H_
