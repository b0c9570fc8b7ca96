#include "node-agent/meter.h"

#include <cstdint>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "ferry/clock.h"
#include "ferry/manifest.h"
#include "ferry/runtime.h"
#include "gtest/gtest.h"
#include "node-agent/function_host.h"
#include "node-agent/metrics.h"

namespace ferry::agent {
namespace {

int64_t Sum(const std::vector<int64_t>& v) {
  return std::accumulate(v.begin(), v.end(), int64_t{0});
}

TEST(SplitBusyTimeTest, SharesSumToBusyTimeExactly) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 2000; ++round) {
    const int n = 1 + static_cast<int>(rng() % 40);
    std::vector<int64_t> costs(n);
    for (auto& c : costs) c = 1 + static_cast<int64_t>(rng() % 300);
    const int64_t busy = static_cast<int64_t>(rng() % 5'000'000);
    const std::vector<int64_t> shares = SplitBusyTime(busy, costs);
    ASSERT_EQ(shares.size(), costs.size());
    ASSERT_EQ(Sum(shares), busy) << "round " << round;
    const double total = static_cast<double>(Sum(costs));
    for (int i = 0; i < n; ++i) {
      const double exact = static_cast<double>(busy) * static_cast<double>(costs[i]) / total;
      EXPECT_LT(std::abs(static_cast<double>(shares[i]) - exact), 1.0) << "round " << round;
    }
  }
}

TEST(SplitBusyTimeTest, ProportionalToCost) {
  // 1000 us over costs 1, 3, 6: exactly 100, 300, 600.
  EXPECT_EQ(SplitBusyTime(1000, {1, 3, 6}), (std::vector<int64_t>{100, 300, 600}));
  // 10 us over three equal requests: 3.33 each; the one spare microsecond goes to the first
  // (largest remainder, ties to the earlier request).
  EXPECT_EQ(SplitBusyTime(10, {1, 1, 1}), (std::vector<int64_t>{4, 3, 3}));
  // 7 us over costs 1 and 2: exact 2.33 and 4.67; the larger remainder (0.67) gets the spare.
  EXPECT_EQ(SplitBusyTime(7, {1, 2}), (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(SplitBusyTime(0, {5, 5}), (std::vector<int64_t>{0, 0}));
  EXPECT_TRUE(SplitBusyTime(100, {}).empty());
  // Large values do not overflow: a day of busy time over huge costs.
  const int64_t day_us = int64_t{86'400} * 1'000'000;
  const std::vector<int64_t> big = SplitBusyTime(day_us, {int64_t{1} << 40, int64_t{1} << 41});
  EXPECT_EQ(Sum(big), day_us);
  EXPECT_EQ(big[1], 2 * big[0]);
}

TEST(FunctionMeterTest, UnmeteredShareIsOverheadAndLoadIsSeparate) {
  FunctionMeter meter("f");
  const bool metered[] = {true, false, true};
  const std::vector<int64_t> charges = meter.RecordBatch(900, {1, 1, 1}, metered, false);
  EXPECT_EQ(charges, (std::vector<int64_t>{300, 300, 300}));
  meter.RecordBatch(400, {2, 2}, {}, /*on_gpu=*/true);  // empty span = all metered
  meter.RecordLoad(250'000);
  const FunctionUsageSnapshot s = meter.Snapshot();
  EXPECT_EQ(s.requests, 4);
  EXPECT_EQ(s.cost_units, 6);
  EXPECT_EQ(s.cpu_us, 600);
  EXPECT_EQ(s.gpu_us, 400);
  EXPECT_EQ(s.overhead_us, 300);
  EXPECT_EQ(s.busy_us(), 1300);
  EXPECT_EQ(s.load_us, 250'000);  // never charged to a request
  EXPECT_EQ(s.batches, 2);
}

TEST(FunctionMeterTest, LatencyBuckets) {
  const auto& bounds = LatencyBoundsUs();
  EXPECT_EQ(bounds.front(), 10);
  EXPECT_EQ(bounds[10], 100);
  EXPECT_EQ(bounds.back(), 100'000'000);
  for (size_t i = 1; i < bounds.size(); ++i) EXPECT_LT(bounds[i - 1], bounds[i]);
  FunctionMeter meter("f");
  meter.RecordLatency(5);            // <= 10
  meter.RecordLatency(100);          // (79, 100]
  meter.RecordLatency(101);          // (100, 126]
  meter.RecordLatency(500'000'000);  // beyond every bound
  const FunctionUsageSnapshot s = meter.Snapshot();
  ASSERT_EQ(s.latency_counts.size(), static_cast<size_t>(kLatencyBuckets + 1));
  EXPECT_EQ(s.latency_counts[0], 1);
  EXPECT_EQ(s.latency_counts[10], 1);
  EXPECT_EQ(s.latency_counts[11], 1);
  EXPECT_EQ(s.latency_counts[kLatencyBuckets], 1);
}

TEST(MeterTest, PrometheusTextAndEpoch) {
  Meter meter(42);
  EXPECT_EQ(meter.epoch(), 42u);
  EXPECT_NE(Meter().epoch(), 0u);
  EXPECT_EQ(meter.ForFunction("a"), meter.ForFunction("a"));
  meter.ForFunction("a")->RecordBatch(1'500'001, {1}, {}, false);
  meter.ForFunction("b")->RecordLoad(2'000'000);
  const std::string text = meter.PrometheusText();
  EXPECT_NE(text.find("# TYPE ferry_function_cpu_seconds_total counter"), std::string::npos);
  EXPECT_NE(text.find("ferry_function_cpu_seconds_total{function=\"a\"} 1.500001\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("ferry_function_requests_total{function=\"a\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("ferry_function_load_seconds_total{function=\"b\"} 2.000000\n"),
            std::string::npos);
  EXPECT_NE(text.find("ferry_function_busy_seconds_total{function=\"a\"} 1.500001\n"),
            std::string::npos);
}

// A runtime whose batches take 1000 us + 10 us per row on a fake clock.
class SlowRuntime final : public Runtime {
 public:
  explicit SlowRuntime(FakeClock* clock) : clock_(clock) {
    signature_.platform = "test";
    signature_.inputs = {{"x", DataType::kFp32, {-1}}};
    signature_.outputs = {{"y", DataType::kFp32, {-1}}};
  }
  const ModelSignature& signature() const override { return signature_; }
  absl::Status Execute(absl::Span<RuntimeCall> batch) override {
    int64_t rows = 0;
    for (RuntimeCall& call : batch) {
      rows += call.request->inputs[0].shape[0];
      Tensor out = call.request->inputs[0];
      out.name = "y";
      call.response->outputs.push_back(std::move(out));
    }
    busy_us_ += 1000 + 10 * rows;
    clock_->AdvanceMicros(1000 + 10 * rows);
    return absl::OkStatus();
  }
  int64_t busy_us_ = 0;

 private:
  FakeClock* clock_;
  ModelSignature signature_;
};

std::unique_ptr<InferenceRequest> Rows(int64_t rows) {
  auto r = std::make_unique<InferenceRequest>();
  r->model_name = "slow";
  Tensor t;
  t.name = "x";
  t.dtype = DataType::kFp32;
  t.shape = {rows};
  t.data.assign(static_cast<size_t>(rows) * 4, '\0');
  r->inputs.push_back(std::move(t));
  return r;
}

TEST(FunctionHostMeteringTest, ChargesAddUpToTheExecutorsBusyTime) {
  FakeClock clock;
  auto runtime = std::make_unique<SlowRuntime>(&clock);
  SlowRuntime* raw = runtime.get();
  AgentMetrics metrics;
  Meter meter;
  FunctionHostOptions options;
  auto specs = ParseManifests(R"(
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: slow}
spec:
  runtime: echo
  batching: {maxBatchSize: 64, maxQueueDelayMicros: 1000000, policy: fixed}
)",
                              "slow.yaml", ".");
  ASSERT_TRUE(specs.ok()) << specs.status();
  options.spec = specs->front();
  options.clock = &clock;
  options.start_threads = false;
  options.meter = meter.ForFunction("slow");
  options.on_gpu = true;
  auto host = FunctionHost::Create(options, std::move(runtime), metrics.ForFunction("slow", "1"));
  ASSERT_TRUE(host.ok()) << host.status();

  int answered = 0;
  auto done = [&](absl::StatusOr<InferenceResponse> r) {
    EXPECT_TRUE(r.ok()) << r.status();
    ++answered;
  };
  // Batch 1: rows 1, 2, 7 (and a profiling request of 10 rows that is not charged).
  (*host)->Infer(Rows(1), done);
  (*host)->Infer(Rows(2), done);
  (*host)->Infer(Rows(7), done);
  (*host)->InferUnmetered(Rows(10), done);
  clock.AdvanceMicros(1'000'000);  // the delay budget is spent: the batch departs
  ASSERT_TRUE((*host)->batcher_for_test()->RunOnce());
  // Batch 1 took 1000 + 10 * 20 = 1200 us: the metered rows (10 of 20) pay 600 us.
  FunctionUsageSnapshot s = meter.ForFunction("slow")->Snapshot();
  EXPECT_EQ(s.requests, 3);
  EXPECT_EQ(s.cost_units, 10);
  EXPECT_EQ(s.gpu_us, 600);
  EXPECT_EQ(s.cpu_us, 0);
  EXPECT_EQ(s.overhead_us, 600);
  EXPECT_EQ(s.busy_us(), raw->busy_us_);

  // Batch 2: three 1-row requests over 1030 us: 343.33 each, sums exactly.
  for (int i = 0; i < 3; ++i) (*host)->Infer(Rows(1), done);
  clock.AdvanceMicros(1'000'000);
  ASSERT_TRUE((*host)->batcher_for_test()->RunOnce());
  s = meter.ForFunction("slow")->Snapshot();
  EXPECT_EQ(answered, 7);
  EXPECT_EQ(s.requests, 6);
  EXPECT_EQ(s.gpu_us, 600 + 1030);
  EXPECT_EQ(s.busy_us(), raw->busy_us_);
  EXPECT_EQ(s.batches, 2);
  // Every metered request's latency was recorded: 1 s queued plus its batch.
  int64_t latencies = 0;
  for (int64_t c : s.latency_counts) latencies += c;
  EXPECT_EQ(latencies, 6);
}

}  // namespace
}  // namespace ferry::agent
