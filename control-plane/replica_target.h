// How much of a function the controller keeps placed: whole replicas whose throughput within the
// SLO covers the autoscaler's need, within [minReplicas, maxReplicas] replicas.
//
// The autoscaler states its need in requests per second (ScaleDecision::need_rps), not only as a
// replica count, because a count means nothing without the hardware: two replicas on a T4 and
// one on an A10G may serve the same load, and placement (PlacementHints::needed_rps) picks the
// hardware that covers the need most cheaply. The controller and the cluster simulator both
// reconcile through these three functions, so that the simulator measures the controller's rule.
//
// Pure functions; thread-compatible.
#ifndef FERRY_CONTROL_PLANE_REPLICA_TARGET_H_
#define FERRY_CONTROL_PLANE_REPLICA_TARGET_H_

namespace ferry::control {

struct ReplicaTarget {
  int min_replicas = 0;
  int max_replicas = 0;
  double need_rps = 0;  // throughput within the SLO to cover, requests per second
};

// Whether one more replica is wanted when `count` replicas with `have_rps` of throughput in all
// are placed (draining ones excluded): below minReplicas, or the need is not covered and
// maxReplicas allows one more.
bool WantsAnother(const ReplicaTarget& target, int count, double have_rps);

// Whether a replica that provides `replica_rps` may go: above maxReplicas, or above minReplicas
// with the rest still covering the need.
bool MayRemove(const ReplicaTarget& target, int count, double have_rps, double replica_rps);

// The part of the need `have_rps` does not cover (>= 0); PlacementHints::needed_rps of the next
// replica.
double Uncovered(const ReplicaTarget& target, double have_rps);

}  // namespace ferry::control

#endif  // FERRY_CONTROL_PLANE_REPLICA_TARGET_H_
