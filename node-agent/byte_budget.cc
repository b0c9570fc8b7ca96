#include "node-agent/byte_budget.h"

#include <utility>

namespace ferry::agent {

bool ByteBudget::TryAcquire(int64_t bytes) {
  if (bytes < 0) return false;
  int64_t used = in_use_bytes_.load(std::memory_order_relaxed);
  do {
    // Written so that it cannot overflow: `used` never exceeds the capacity.
    if (bytes > capacity_bytes_ - used) return false;
  } while (!in_use_bytes_.compare_exchange_weak(used, used + bytes, std::memory_order_acq_rel,
                                                std::memory_order_relaxed));
  return true;
}

void ByteBudget::Release(int64_t bytes) {
  if (bytes > 0) in_use_bytes_.fetch_sub(bytes, std::memory_order_acq_rel);
}

ByteBudget::Lease ByteBudget::TryLease(int64_t bytes, bool* ok) {
  *ok = TryAcquire(bytes);
  return Lease(this, *ok ? bytes : 0);
}

ByteBudget::Lease::Lease(Lease&& other) noexcept
    : budget_(std::exchange(other.budget_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

ByteBudget::Lease& ByteBudget::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Reset();
    budget_ = std::exchange(other.budget_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

bool ByteBudget::Lease::TryGrow(int64_t more_bytes) {
  if (more_bytes < 0) return false;
  if (budget_ == nullptr) return true;
  if (!budget_->TryAcquire(more_bytes)) return false;
  bytes_ += more_bytes;
  return true;
}

void ByteBudget::Lease::Reset() {
  if (budget_ != nullptr) budget_->Release(bytes_);
  bytes_ = 0;
}

}  // namespace ferry::agent
