#include "node-agent/log_limiter.h"

#include "gtest/gtest.h"

namespace ferry::agent {
namespace {

TEST(LogLimiterTest, AtMostNPerSecondThenSaysHowManyWereDropped) {
  FakeClock clock(5'000'000);
  LogLimiter limiter(3, &clock);
  EXPECT_EQ(limiter.Admit(), 0);
  EXPECT_EQ(limiter.Admit(), 0);
  EXPECT_EQ(limiter.Admit(), 0);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(limiter.Admit(), -1);
  clock.AdvanceMicros(999'999);
  EXPECT_EQ(limiter.Admit(), -1);  // still the same window
  clock.AdvanceMicros(1);
  EXPECT_EQ(limiter.Admit(), 1001);  // the next window's first line reports the drops
  EXPECT_EQ(limiter.Admit(), 0);
}

}  // namespace
}  // namespace ferry::agent
