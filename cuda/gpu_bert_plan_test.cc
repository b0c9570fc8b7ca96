// GpuBert's CPU half, which runs in every build: the packed layout the kernels read (ids,
// positions, offsets, attention tiles), its validation, the split into passes, the buffer bound
// and the precision names; plus what Create says without a GPU.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "cuda/device.h"
#include "cuda/gpu_bert.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::cuda {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

BertPackLimits Limits() {
  BertPackLimits l;
  l.vocab_size = 100;
  l.max_len = 64;
  l.max_tokens = 200;
  l.max_sequences = 8;
  return l;
}

TEST(BertPackTest, LaysOutIdsPositionsOffsetsAndTiles) {
  // Lengths 3, 33 (two tiles: queries 0-31 and 32) and 1.
  std::vector<int32_t> mid(33);
  for (int i = 0; i < 33; ++i) mid[i] = 50 + i % 40;
  const std::vector<std::vector<int32_t>> seqs = {{1, 2, 3}, mid, {99}};
  std::vector<int32_t> buf(BertPackCapacity(Limits()), -7);
  BertPackedBatch b;
  ASSERT_TRUE(PackBertBatch(seqs, Limits(), buf.data(), buf.size(), &b).ok());
  EXPECT_EQ(b.num_seqs, 3);
  EXPECT_EQ(b.tokens, 37);
  EXPECT_EQ(b.max_len, 33);
  EXPECT_EQ(b.num_tiles, 4);
  EXPECT_EQ(b.ids, 0u);
  EXPECT_EQ(b.positions, 37u);
  EXPECT_EQ(b.offsets, 74u);
  EXPECT_EQ(b.tiles, 78u);
  EXPECT_EQ(b.total, 86u);
  // ids in order, positions restart per sequence.
  EXPECT_THAT(std::vector<int32_t>(buf.begin(), buf.begin() + 3), ElementsAre(1, 2, 3));
  EXPECT_EQ(buf[3], 50);
  EXPECT_EQ(buf[35], 50 + 32 % 40);
  EXPECT_EQ(buf[36], 99);
  EXPECT_THAT(std::vector<int32_t>(buf.begin() + 37, buf.begin() + 41), ElementsAre(0, 1, 2, 0));
  EXPECT_EQ(buf[37 + 35], 32);
  EXPECT_EQ(buf[37 + 36], 0);
  EXPECT_THAT(std::vector<int32_t>(buf.begin() + 74, buf.begin() + 78), ElementsAre(0, 3, 36, 37));
  EXPECT_THAT(std::vector<int32_t>(buf.begin() + 78, buf.begin() + 86),
              ElementsAre(0, 0, 1, 0, 1, 32, 2, 0));
  EXPECT_EQ(buf[86], -7);  // nothing written past `total`
}

TEST(BertPackTest, RefusesBadInputNamingTheSequence) {
  std::vector<int32_t> buf(BertPackCapacity(Limits()));
  BertPackedBatch b;
  auto pack = [&](const std::vector<std::vector<int32_t>>& seqs) {
    return PackBertBatch(seqs, Limits(), buf.data(), buf.size(), &b);
  };
  EXPECT_THAT(std::string(pack({{1}, {}}).message()), HasSubstr("sequence 1 has 0 tokens"));
  EXPECT_THAT(std::string(pack({{1}, std::vector<int32_t>(65, 1)}).message()),
              HasSubstr("sequence 1 has 65 tokens; expected 1 to 64"));
  EXPECT_THAT(std::string(pack({{1, 100}}).message()),
              HasSubstr("sequence 0: token id 100 outside the vocabulary of 100"));
  EXPECT_THAT(std::string(pack({{-1}}).message()), HasSubstr("token id -1"));
  EXPECT_THAT(std::string(pack(std::vector<std::vector<int32_t>>(9, {1})).message()),
              HasSubstr("9 sequences; at most 8"));
  EXPECT_THAT(
      std::string(
          pack(std::vector<std::vector<int32_t>>(4, std::vector<int32_t>(51, 1))).message()),
      HasSubstr("204 tokens; at most 200"));
  EXPECT_EQ(PackBertBatch({{1, 2}}, Limits(), buf.data(), 3, &b).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(pack({}).ok());
  EXPECT_EQ(b.num_seqs, 0);
  EXPECT_EQ(b.total, 1u);  // offsets[0]
}

// The capacity bound holds for every mix of lengths that fits the limits (random draws).
TEST(BertPackTest, CapacityCoversEveryPassWithinTheLimits) {
  std::mt19937 rng(std::random_device{}());
  BertPackLimits limits = Limits();
  limits.max_len = 64;
  const size_t capacity = BertPackCapacity(limits);
  std::vector<int32_t> buf(capacity);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<std::vector<int32_t>> seqs;
    int64_t tokens = 0;
    const int len_max = std::uniform_int_distribution<int>(1, 64)(rng);
    while (static_cast<int64_t>(seqs.size()) < limits.max_sequences) {
      const int len = std::uniform_int_distribution<int>(1, len_max)(rng);
      if (tokens + len > limits.max_tokens) break;
      seqs.emplace_back(len, 5);
      tokens += len;
    }
    BertPackedBatch b;
    ASSERT_TRUE(PackBertBatch(seqs, limits, buf.data(), buf.size(), &b).ok()) << trial;
    EXPECT_LE(b.total, capacity);
  }
}

TEST(BertPackTest, SplitsIntoPassesWithinTokenAndSequenceLimits) {
  auto lens = [](std::vector<int> ls) {
    std::vector<std::vector<int32_t>> seqs;
    for (int l : ls) seqs.emplace_back(l, 1);
    return seqs;
  };
  using Runs = std::vector<std::pair<size_t, size_t>>;
  EXPECT_EQ(SplitBertPasses(lens({}), 10, 4), Runs{});
  EXPECT_EQ(SplitBertPasses(lens({3, 3, 3, 3}), 10, 4), (Runs{{0, 3}, {3, 4}}));
  EXPECT_EQ(SplitBertPasses(lens({1, 1, 1, 1, 1}), 100, 2), (Runs{{0, 2}, {2, 4}, {4, 5}}));
  // A sequence longer than the token budget gets a pass of its own.
  EXPECT_EQ(SplitBertPasses(lens({2, 20, 2}), 10, 4), (Runs{{0, 1}, {1, 2}, {2, 3}}));
  EXPECT_EQ(SplitBertPasses(lens({5, 5}), 10, 4), (Runs{{0, 2}}));
}

TEST(BertPrecisionTest, NamesRoundTrip) {
  for (BertDType t : {BertDType::kFp32, BertDType::kFp16, BertDType::kBf16}) {
    BertDType back = BertDType::kFp32;
    ASSERT_TRUE(BertDTypeFromName(BertDTypeName(t), &back));
    EXPECT_EQ(back, t);
  }
  BertDType t;
  EXPECT_FALSE(BertDTypeFromName("FP16", &t));
  EXPECT_FALSE(BertDTypeFromName("tf32", &t));
  EXPECT_EQ(BertDTypeSize(BertDType::kFp32), 4u);
  EXPECT_EQ(BertStorage(Precision::kTf32), BertDType::kFp32);
  EXPECT_EQ(BertStorage(Precision::kFp32), BertDType::kFp32);
  EXPECT_EQ(BertStorage(Precision::kFp16), BertDType::kFp16);
  EXPECT_EQ(BertStorage(Precision::kBf16), BertDType::kBf16);
  EXPECT_EQ(BertDTypeSize(BertDType::kBf16), 2u);
}

TEST(GpuBertTest, CreateWithoutAGpuSaysWhy) {
  if (ListGpus().ok()) GTEST_SKIP() << "a GPU is present; cuda_bert_kernels_test covers Create";
  GpuBertModel model;  // never reaches the shapes check's success path
  auto bert = GpuBert::Create(GpuBert::Options{}, model);
  ASSERT_FALSE(bert.ok());
  // Bad shapes are reported before the GPU is looked for in a CUDA build; a CPU-only build says
  // so at once.
  EXPECT_TRUE(bert.status().code() == absl::StatusCode::kInvalidArgument ||
              bert.status().code() == absl::StatusCode::kFailedPrecondition)
      << bert.status();
}

}  // namespace
}  // namespace ferry::cuda
