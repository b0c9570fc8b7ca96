#include "node-agent/byte_budget.h"

#include <atomic>
#include <cstdint>
#include <limits>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace ferry::agent {
namespace {

TEST(ByteBudgetTest, AcquireUpToCapacityThenRefuse) {
  ByteBudget budget(100);
  EXPECT_TRUE(budget.TryAcquire(60));
  EXPECT_TRUE(budget.TryAcquire(40));
  EXPECT_EQ(budget.in_use_bytes(), 100);
  EXPECT_FALSE(budget.TryAcquire(1));
  EXPECT_TRUE(budget.TryAcquire(0));
  budget.Release(40);
  EXPECT_EQ(budget.in_use_bytes(), 60);
  EXPECT_FALSE(budget.TryAcquire(41));  // refused whole: nothing is charged
  EXPECT_EQ(budget.in_use_bytes(), 60);
  EXPECT_TRUE(budget.TryAcquire(40));
}

TEST(ByteBudgetTest, HugeAndNegativeRequestsNeverFitAndDoNotOverflow) {
  ByteBudget budget(std::numeric_limits<int64_t>::max() - 1);
  EXPECT_TRUE(budget.TryAcquire(std::numeric_limits<int64_t>::max() - 10));
  EXPECT_FALSE(budget.TryAcquire(std::numeric_limits<int64_t>::max()));
  EXPECT_FALSE(budget.TryAcquire(10));
  EXPECT_FALSE(budget.TryAcquire(-5));
  ByteBudget small(10);
  EXPECT_FALSE(small.TryAcquire(11));
  EXPECT_EQ(small.in_use_bytes(), 0);
}

TEST(ByteBudgetTest, LeaseReleasesOnDestructionAndMove) {
  ByteBudget budget(100);
  {
    bool ok = false;
    ByteBudget::Lease lease = budget.TryLease(70, &ok);
    ASSERT_TRUE(ok);
    EXPECT_EQ(lease.bytes(), 70);
    EXPECT_EQ(budget.in_use_bytes(), 70);
    bool second_ok = true;
    ByteBudget::Lease refused = budget.TryLease(31, &second_ok);
    EXPECT_FALSE(second_ok);
    EXPECT_EQ(refused.bytes(), 0);
    EXPECT_EQ(budget.in_use_bytes(), 70);

    ByteBudget::Lease moved = std::move(lease);
    EXPECT_EQ(moved.bytes(), 70);
    EXPECT_EQ(lease.bytes(), 0);  // NOLINT(bugprone-use-after-move): moved-from is empty
    EXPECT_EQ(budget.in_use_bytes(), 70);
    ByteBudget::Lease assigned = budget.EmptyLease();
    assigned = std::move(moved);
    EXPECT_EQ(budget.in_use_bytes(), 70);
  }
  EXPECT_EQ(budget.in_use_bytes(), 0);
}

TEST(ByteBudgetTest, LeaseGrowsAsAChunkedBodyArrives) {
  ByteBudget budget(100);
  ByteBudget::Lease lease = budget.EmptyLease();
  EXPECT_TRUE(lease.TryGrow(50));
  EXPECT_TRUE(lease.TryGrow(50));
  EXPECT_FALSE(lease.TryGrow(1));
  EXPECT_EQ(lease.bytes(), 100);
  EXPECT_EQ(budget.in_use_bytes(), 100);
  lease.Reset();
  EXPECT_EQ(budget.in_use_bytes(), 0);
  // A reset lease can be used again (an HTTP connection reuses one per request).
  EXPECT_TRUE(lease.TryGrow(10));
  EXPECT_EQ(budget.in_use_bytes(), 10);
}

TEST(ByteBudgetTest, DefaultLeaseIsUnlimitedAndChargesNothing) {
  ByteBudget::Lease lease;
  EXPECT_TRUE(lease.TryGrow(int64_t{1} << 40));
  EXPECT_EQ(lease.bytes(), 0);
}

TEST(ByteBudgetTest, ConcurrentLeasesNeverExceedCapacity) {
  constexpr int64_t kCapacity = 1000;
  ByteBudget budget(kCapacity);
  std::atomic<int64_t> peak{0};
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        bool ok = false;
        ByteBudget::Lease lease = budget.TryLease(300, &ok);
        if (!ok) {
          refused.fetch_add(1);
          continue;
        }
        const int64_t now = budget.in_use_bytes();
        int64_t seen = peak.load();
        while (now > seen && !peak.compare_exchange_weak(seen, now)) {
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(peak.load(), kCapacity);
  EXPECT_EQ(budget.in_use_bytes(), 0);
}

}  // namespace
}  // namespace ferry::agent
