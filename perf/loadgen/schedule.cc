#include "perf/loadgen/schedule.h"

namespace ferry::loadgen {

ArrivalSchedule::ArrivalSchedule(Arrivals arrivals, double rate_per_s, uint64_t seed, double phase)
    : arrivals_(arrivals),
      gap_ns_(1e9 / rate_per_s),
      next_ns_(arrivals == Arrivals::kConstant ? phase * 1e9 / rate_per_s : 0.0),
      rng_(seed),
      exponential_(rate_per_s / 1e9) {}

int64_t ArrivalSchedule::Next() {
  if (arrivals_ == Arrivals::kPoisson) {
    next_ns_ += exponential_(rng_);
    return static_cast<int64_t>(next_ns_);
  }
  int64_t at = static_cast<int64_t>(next_ns_);
  next_ns_ += gap_ns_;
  return at;
}

}  // namespace ferry::loadgen
