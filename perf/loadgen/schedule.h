// Open-loop arrival schedules: when each request is due, independent of when earlier ones were
// answered. Latency is measured from these times, so a server that falls behind shows its queue
// (no coordinated omission).
#ifndef FERRY_PERF_LOADGEN_SCHEDULE_H_
#define FERRY_PERF_LOADGEN_SCHEDULE_H_

#include <cstdint>
#include <random>

namespace ferry::loadgen {

enum class Arrivals { kPoisson, kConstant };

// Successive arrival offsets (nanoseconds from the start of the run) at `rate_per_s`.
// Poisson: exponential gaps from a seeded RNG (the same seed gives the same schedule);
// constant: evenly spaced, first one at `phase` of a gap (so that several threads' constant
// streams interleave instead of firing together). Not thread-safe: one per driving thread.
class ArrivalSchedule {
 public:
  ArrivalSchedule(Arrivals arrivals, double rate_per_s, uint64_t seed, double phase = 0.0);

  // The offset of the next arrival, nanoseconds; non-decreasing.
  int64_t Next();

 private:
  Arrivals arrivals_;
  double gap_ns_;
  double next_ns_;
  std::mt19937_64 rng_;
  std::exponential_distribution<double> exponential_;
};

}  // namespace ferry::loadgen

#endif  // FERRY_PERF_LOADGEN_SCHEDULE_H_
