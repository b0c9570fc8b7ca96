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

}  // namespace ferry::control
