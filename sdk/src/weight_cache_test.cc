#include "ferry/weight_cache.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <utility>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using Blob = std::string;
using LoadResult = absl::StatusOr<std::pair<std::shared_ptr<const Blob>, int64_t>>;

// A loader that counts its calls and returns a value of `bytes` bytes.
std::function<LoadResult()> Loader(int* calls, int64_t bytes, std::string tag = "w") {
  return [calls, bytes, tag]() -> LoadResult {
    ++*calls;
    return std::make_pair(std::make_shared<const Blob>(tag), bytes);
  };
}

TEST(WeightCacheTest, SecondLoadOfTheSameKeyIsAHitAndSharesTheValue) {
  WeightCache cache(/*idle_budget_bytes=*/1000);
  int calls = 0;
  auto a = cache.GetOrLoad<Blob>("k", Loader(&calls, 10));
  auto b = cache.GetOrLoad<Blob>("k", Loader(&calls, 10));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(a->get(), b->get());
  EXPECT_EQ(cache.stats().hits, 1);
  EXPECT_EQ(cache.stats().misses, 1);
}

TEST(WeightCacheTest, IdleEntryWithinBudgetSurvivesItsUser) {
  WeightCache cache(1000);
  int calls = 0;
  {
    auto a = cache.GetOrLoad<Blob>("k", Loader(&calls, 400));
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(cache.stats().idle_bytes, 0);  // in use
  }
  cache.Trim();  // the function unloaded
  EXPECT_EQ(cache.stats().idle_bytes, 400);
  auto again = cache.GetOrLoad<Blob>("k", Loader(&calls, 400));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(calls, 1) << "a scale-up from zero must reuse the cached weights";
}

TEST(WeightCacheTest, IdleEntriesPastTheBudgetAreEvictedOldestFirst) {
  WeightCache cache(1000);
  int calls = 0;
  for (const char* key : {"old", "mid", "new"}) {
    ASSERT_TRUE(cache.GetOrLoad<Blob>(key, Loader(&calls, 400)).ok());  // released at once
  }
  cache.Trim();
  WeightCache::Stats s = cache.stats();
  EXPECT_EQ(s.entries, 2);
  EXPECT_EQ(s.idle_bytes, 800);
  EXPECT_EQ(s.evictions, 1);
  calls = 0;
  ASSERT_TRUE(cache.GetOrLoad<Blob>("new", Loader(&calls, 400)).ok());
  ASSERT_TRUE(cache.GetOrLoad<Blob>("mid", Loader(&calls, 400)).ok());
  EXPECT_EQ(calls, 0);
  ASSERT_TRUE(cache.GetOrLoad<Blob>("old", Loader(&calls, 400)).ok());
  EXPECT_EQ(calls, 1) << "the least recently used entry was the one evicted";
}

TEST(WeightCacheTest, EntriesInUseAreNeverEvictedWhateverTheBudget) {
  WeightCache cache(0);
  int calls = 0;
  auto a = cache.GetOrLoad<Blob>("a", Loader(&calls, 5000));
  auto b = cache.GetOrLoad<Blob>("b", Loader(&calls, 5000));
  ASSERT_TRUE(a.ok() && b.ok());
  cache.Trim();
  EXPECT_EQ(cache.stats().entries, 2);
  EXPECT_EQ(cache.stats().bytes, 10000);
  a->reset();
  cache.Trim();
  EXPECT_EQ(cache.stats().entries, 1) << "budget 0 keeps nothing idle";
}

TEST(WeightCacheTest, FailedLoadCachesNothing) {
  WeightCache cache(1000);
  int calls = 0;
  auto failing = [&calls]() -> LoadResult {
    ++calls;
    return absl::InvalidArgumentError("bad weights");
  };
  EXPECT_EQ(cache.GetOrLoad<Blob>("k", failing).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.GetOrLoad<Blob>("k", failing).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(cache.stats().entries, 0);
}

TEST(WeightCacheTest, FileKeyChangesWhenTheFileChanges) {
  std::string path = ::testing::TempDir() + "/weight_cache_test.bin";
  { std::ofstream(path) << "one"; }
  auto k1 = WeightCache::FileKey("fp32", {path});
  ASSERT_TRUE(k1.ok()) << k1.status();
  { std::ofstream(path) << "four"; }
  auto k2 = WeightCache::FileKey("fp32", {path});
  ASSERT_TRUE(k2.ok());
  EXPECT_NE(*k1, *k2) << "a replaced file must not be served from the cache";
  auto k3 = WeightCache::FileKey("bf16", {path});
  ASSERT_TRUE(k3.ok());
  EXPECT_NE(*k2, *k3);
  EXPECT_EQ(WeightCache::FileKey("fp32", {path + ".missing"}).status().code(),
            absl::StatusCode::kNotFound);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace ferry
