// Injectable time source. Everything that decides by time (batcher, autoscaler) takes a Clock so
// that tests advance a FakeClock instead of sleeping.
#ifndef FERRY_CLOCK_H_
#define FERRY_CLOCK_H_

#include <atomic>
#include <cstdint>

namespace ferry {

// Monotonic microseconds. Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMicros() const = 0;
};

// std::chrono::steady_clock. Use RealClock::Get() for the process-wide instance (never deleted).
class RealClock final : public Clock {
 public:
  static Clock* Get();
  int64_t NowMicros() const override;
};

// Manually advanced clock for tests. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_us = 1'000'000) : now_us_(start_us) {}
  int64_t NowMicros() const override { return now_us_.load(std::memory_order_acquire); }
  void AdvanceMicros(int64_t delta_us) { now_us_.fetch_add(delta_us, std::memory_order_acq_rel); }
  void SetMicros(int64_t now_us) { now_us_.store(now_us, std::memory_order_release); }

 private:
  std::atomic<int64_t> now_us_;
};

}  // namespace ferry

#endif  // FERRY_CLOCK_H_
