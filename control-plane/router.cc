#include "control-plane/router.h"

namespace ferry::control {

int PickReplica(std::span<const int64_t> outstanding, std::mt19937_64& rng) {
  return PickReplica(outstanding, {}, rng);
}

int PickReplica(std::span<const int64_t> outstanding, std::span<const double> throughput_rps,
                std::mt19937_64& rng) {
  const size_t n = outstanding.size();
  if (n == 0) return -1;
  if (n == 1) return 0;
  const size_t a = rng() % n;
  size_t b = rng() % (n - 1);
  if (b >= a) ++b;
  const bool weighted =
      throughput_rps.size() == n && throughput_rps[a] > 0 && throughput_rps[b] > 0;
  if (!weighted) return static_cast<int>(outstanding[a] <= outstanding[b] ? a : b);
  // The time until a new request would be served: (outstanding + 1) / throughput, compared
  // without dividing.
  const double ta = static_cast<double>(outstanding[a] + 1) * throughput_rps[b];
  const double tb = static_cast<double>(outstanding[b] + 1) * throughput_rps[a];
  return static_cast<int>(ta <= tb ? a : b);
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
