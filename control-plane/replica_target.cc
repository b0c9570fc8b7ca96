#include "control-plane/replica_target.h"

#include <algorithm>

namespace ferry::control {
namespace {

// Relative slack: a need met to within a millionth is met (sums of per-replica throughputs
// carry rounding).
bool Covers(double have_rps, double need_rps) {
  return have_rps >= need_rps - 1e-6 * std::max(1.0, need_rps);
}

}  // namespace

bool WantsAnother(const ReplicaTarget& target, int count, double have_rps) {
  if (count >= target.max_replicas) return false;
  return count < target.min_replicas || !Covers(have_rps, target.need_rps);
}

bool MayRemove(const ReplicaTarget& target, int count, double have_rps, double replica_rps) {
  if (count <= 0) return false;
  if (count > target.max_replicas) return true;
  if (count <= target.min_replicas) return false;
  return Covers(have_rps - replica_rps, target.need_rps);
}

double Uncovered(const ReplicaTarget& target, double have_rps) {
  return Covers(have_rps, target.need_rps) ? 0.0 : target.need_rps - have_rps;
}

}  // namespace ferry::control
