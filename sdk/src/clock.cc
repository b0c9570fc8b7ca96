#include "ferry/clock.h"

#include <chrono>

namespace ferry {

Clock* RealClock::Get() {
  static RealClock* clock = new RealClock();  // never destroyed: threads may outlive statics
  return clock;
}

int64_t RealClock::NowMicros() const {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace ferry
