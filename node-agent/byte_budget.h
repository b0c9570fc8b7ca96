// An agent-wide budget for request bytes in flight: both front ends charge each request's size
// before they hold it in memory (HTTP at header time from Content-Length, or as a chunked body
// grows; gRPC by message size) and give it back once the response is written or the call ended.
// A request that does not fit is refused at once (429 / RESOURCE_EXHAUSTED) instead of waiting,
// so that the memory request payloads can take is set by configuration, not by clients.
#ifndef FERRY_NODE_AGENT_BYTE_BUDGET_H_
#define FERRY_NODE_AGENT_BYTE_BUDGET_H_

#include <atomic>
#include <cstdint>

namespace ferry::agent {

// Thread-safe, lock-free. Never blocks.
class ByteBudget {
 public:
  // Bytes charged to one request; returns them to the budget when destroyed or Reset. Move-only.
  // Not thread-safe itself (one owner), but any number of leases may live on any threads. The
  // budget must outlive every lease taken from it.
  class Lease {
   public:
    Lease() = default;  // holds nothing
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { Reset(); }

    // Charges `more_bytes` (>= 0) in addition; false (and nothing charged) when that would
    // exceed the budget. A lease that holds nothing and has no budget (default-constructed) is
    // an unlimited one: TryGrow always succeeds and charges nothing.
    bool TryGrow(int64_t more_bytes);
    // Returns everything held.
    void Reset();
    int64_t bytes() const { return bytes_; }

   private:
    friend class ByteBudget;
    Lease(ByteBudget* budget, int64_t bytes) : budget_(budget), bytes_(bytes) {}
    ByteBudget* budget_ = nullptr;
    int64_t bytes_ = 0;
  };

  // `capacity_bytes` must be positive.
  explicit ByteBudget(int64_t capacity_bytes) : capacity_bytes_(capacity_bytes) {}
  ByteBudget(const ByteBudget&) = delete;
  ByteBudget& operator=(const ByteBudget&) = delete;

  // Charges `bytes` (>= 0) if they fit in what is left; false (and nothing charged) otherwise.
  // A request larger than the whole capacity never fits.
  bool TryAcquire(int64_t bytes);
  // Returns bytes charged by TryAcquire.
  void Release(int64_t bytes);

  // TryAcquire wrapped in a lease; `*ok` says whether it succeeded (if not, the lease holds
  // nothing but may still TryGrow on this budget).
  Lease TryLease(int64_t bytes, bool* ok);
  // An empty lease on this budget, to grow as a body of unknown length arrives.
  Lease EmptyLease() { return Lease(this, 0); }

  int64_t capacity_bytes() const { return capacity_bytes_; }
  // Bytes charged now (a snapshot).
  int64_t in_use_bytes() const { return in_use_bytes_.load(std::memory_order_relaxed); }

 private:
  const int64_t capacity_bytes_;
  std::atomic<int64_t> in_use_bytes_{0};
};

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_BYTE_BUDGET_H_
