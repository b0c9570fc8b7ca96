#include "control-plane/router.h"

namespace ferry::control {

int PickReplica(std::span<const int64_t> outstanding, std::mt19937_64& rng) {
  const size_t n = outstanding.size();
  if (n == 0) return -1;
  if (n == 1) return 0;
  const size_t a = rng() % n;
  size_t b = rng() % (n - 1);
  if (b >= a) ++b;
  return static_cast<int>(outstanding[a] <= outstanding[b] ? a : b);
}

int PickLeastOutstanding(std::span<const int64_t> outstanding, std::mt19937_64& rng) {
  const size_t n = outstanding.size();
  if (n == 0) return -1;
  size_t best = 0;
  uint64_t ties = 1;
  for (size_t i = 1; i < n; ++i) {
    if (outstanding[i] < outstanding[best]) {
      best = i;
      ties = 1;
    } else if (outstanding[i] == outstanding[best] && rng() % ++ties == 0) {
      best = i;  // reservoir sampling: each of the tied replicas with probability 1 / ties
    }
  }
  return static_cast<int>(best);
}

}  // namespace ferry::control
