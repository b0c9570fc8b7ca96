// A staged runtime behind FunctionHost: batches go through the pipeline (not Execute), requests
// fail alone, and the per-stage, device-busy and GPU-seconds series come out of it. The fake
// "device" finishes inside Launch after advancing the FakeClock, so every time is exact.
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/notification.h"
#include "ferry/clock.h"
#include "ferry/manifest.h"
#include "ferry/runtime.h"
#include "ferry/staged_runtime.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "node-agent/function_host.h"
#include "node-agent/meter.h"
#include "node-agent/metrics.h"

namespace ferry::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr int64_t kDeviceUs = 100;  // what one batch takes on the fake device

// y = 2x over FP32 [-1, 2]; a request whose first value is negative fails on its own (in Pack).
class DoublingRuntime : public Runtime, public StagedRuntime {
 public:
  DoublingRuntime(FakeClock* clock, bool staged) : clock_(clock), staged_(staged), slots_(2) {
    sig_.platform = "test_doubling";
    sig_.inputs.push_back(TensorSpec{"x", DataType::kFp32, {-1, 2}});
    sig_.outputs.push_back(TensorSpec{"y", DataType::kFp32, {-1, 2}});
  }
  const ModelSignature& signature() const override { return sig_; }
  absl::Status Execute(absl::Span<RuntimeCall> batch) override {
    ++executes_;
    for (RuntimeCall& c : batch) c.response->outputs.push_back(Double(c.request->inputs[0]));
    return absl::OkStatus();
  }
  StagedRuntime* staged() override { return staged_ ? this : nullptr; }

  int num_slots() const override { return 2; }
  absl::Status Pack(int slot, absl::Span<RuntimeCall> batch) override {
    ++packs_;
    std::vector<float>& in = slots_[slot];
    in.clear();
    for (RuntimeCall& c : batch) {
      const Tensor& x = c.request->inputs[0];
      if (x.as<float>()[0] < 0) {
        c.status = absl::InvalidArgumentError("negative input");
        continue;
      }
      in.insert(in.end(), x.as<float>(), x.as<float>() + x.element_count());
    }
    return absl::OkStatus();
  }
  absl::Status Launch(int slot, StageDone done) override {
    for (float& v : slots_[slot]) v *= 2;
    clock_->AdvanceMicros(kDeviceUs);
    done(absl::OkStatus());
    return absl::OkStatus();
  }
  absl::Status Unpack(int slot, absl::Span<RuntimeCall> batch) override {
    size_t at = 0;
    for (RuntimeCall& c : batch) {
      if (!c.status.ok()) continue;
      Tensor y{"y", DataType::kFp32, c.request->inputs[0].shape, {}, {}};
      const size_t n = static_cast<size_t>(y.element_count());
      y.data.assign(reinterpret_cast<const char*>(slots_[slot].data() + at), n * sizeof(float));
      at += n;
      c.response->outputs.push_back(std::move(y));
    }
    return absl::OkStatus();
  }
  void Release(int slot) override {
    ++releases_;
    slots_[slot].clear();
  }
  DeviceStageTimes StageTimes(int) override {
    return {.h2d_us = 10, .compute_us = 80, .d2h_us = 10};
  }

  int executes_ = 0;
  int packs_ = 0;
  int releases_ = 0;

 private:
  static Tensor Double(const Tensor& x) {
    Tensor y{"y", DataType::kFp32, x.shape, x.data, {}};
    auto* v = reinterpret_cast<float*>(y.data.data());
    for (int64_t i = 0; i < y.element_count(); ++i) v[i] *= 2;
    return y;
  }

  FakeClock* const clock_;
  const bool staged_;
  ModelSignature sig_;
  std::vector<std::vector<float>> slots_;
};

std::unique_ptr<InferenceRequest> Request(float first, float second) {
  auto r = std::make_unique<InferenceRequest>();
  Tensor x{"x", DataType::kFp32, {1, 2}, std::string(2 * sizeof(float), '\0'), {}};
  const float v[2] = {first, second};
  std::memcpy(x.data.data(), v, sizeof(v));
  r->inputs.push_back(std::move(x));
  return r;
}

class FunctionHostPipelineTest : public ::testing::Test {
 protected:
  std::unique_ptr<FunctionHost> Make(const std::string& name, bool staged,
                                     DoublingRuntime** runtime) {
    FunctionSpec spec;
    spec.name = name;
    spec.runtime = "doubling";
    spec.batching.policy = BatchPolicy::kFixed;
    spec.batching.max_batch_size = 8;
    spec.batching.max_queue_delay_us = 0;
    spec.batching.pipeline_depth = 2;
    FunctionHostOptions options;
    options.spec = spec;
    options.clock = &clock_;
    options.start_threads = false;
    options.meter = meter_.ForFunction(name);
    options.on_gpu = true;
    options.gpu_index = 0;
    auto rt = std::make_unique<DoublingRuntime>(&clock_, staged);
    *runtime = rt.get();
    auto host = FunctionHost::Create(options, std::move(rt), metrics_.ForFunction(name, "1"));
    EXPECT_TRUE(host.ok()) << host.status();
    return host.ok() ? *std::move(host) : nullptr;
  }

  FakeClock clock_;
  AgentMetrics metrics_;
  Meter meter_{1};
};

TEST_F(FunctionHostPipelineTest, StagedRuntimeRunsThroughThePipelineWithStageMetrics) {
  DoublingRuntime* rt = nullptr;
  std::unique_ptr<FunctionHost> host = Make("fake", /*staged=*/true, &rt);
  ASSERT_NE(host, nullptr);
  ASSERT_NE(host->pipeline(), nullptr);
  EXPECT_EQ(host->pipeline()->max_in_flight(), 2);

  std::vector<absl::StatusOr<InferenceResponse>> got(3, absl::UnknownError("no answer"));
  absl::Notification answered[3];
  const float first[3] = {1, -1, 3};
  for (int i = 0; i < 3; ++i) {
    host->Infer(Request(first[i], 10), [&got, &answered, i](absl::StatusOr<InferenceResponse> r) {
      got[i] = std::move(r);
      answered[i].Notify();
    });
  }
  ASSERT_TRUE(host->batcher_for_test()->RunOnce());  // one batch of 3: pack, launch
  // The pipeline's own thread scatters the results.
  for (absl::Notification& n : answered) n.WaitForNotification();

  ASSERT_TRUE(got[0].ok()) << got[0].status();
  ASSERT_EQ(got[0]->outputs.size(), 1u);
  EXPECT_EQ(got[0]->outputs[0].as<float>()[0], 2.0f);
  EXPECT_EQ(got[0]->outputs[0].as<float>()[1], 20.0f);
  EXPECT_EQ(got[1].status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(got[2].ok()) << got[2].status();
  EXPECT_EQ(got[2]->outputs[0].as<float>()[0], 6.0f);
  EXPECT_EQ(rt->executes_, 0);  // the synchronous path was not used
  EXPECT_EQ(rt->packs_, 1);
  host->Drain();
  EXPECT_EQ(rt->releases_, 1);

  // GPU-seconds: the batch's device time, split over its three requests.
  const FunctionUsageSnapshot usage = meter_.ForFunction("fake")->Snapshot();
  EXPECT_EQ(usage.gpu_us, kDeviceUs);
  EXPECT_EQ(usage.cpu_us, 0);
  EXPECT_EQ(usage.batches, 1);

  host->RefreshGauges();  // busy 100 us of 100 us since the pipeline started
  std::string text = metrics_.Serialize();
  EXPECT_THAT(text, HasSubstr("ferry_device_busy_duration_us{model=\"fake\",version=\"1\"} 100"));
  EXPECT_THAT(text, HasSubstr("ferry_device_busy_fraction{model=\"fake\",version=\"1\"} 1"));
  for (const char* stage : {"queue", "pack", "h2d", "compute", "d2h", "scatter"}) {
    EXPECT_THAT(text, HasSubstr(std::string("ferry_pipeline_stage_duration_us_count{model=\"fake\""
                                            ",stage=\"") +
                                stage + "\",version=\"1\"}"))
        << stage;
  }
  EXPECT_THAT(text, HasSubstr("ferry_pipeline_stage_duration_us_sum{model=\"fake\","
                              "stage=\"compute\",version=\"1\"} 80"));
  clock_.AdvanceMicros(300);  // idle
  host->RefreshGauges();
  text = metrics_.Serialize();
  EXPECT_THAT(text, HasSubstr("ferry_device_busy_fraction{model=\"fake\",version=\"1\"} 0"));
}

TEST_F(FunctionHostPipelineTest, RuntimeWithoutStagesKeepsExecuteAndHasNoPipelineSeries) {
  DoublingRuntime* rt = nullptr;
  std::unique_ptr<FunctionHost> host = Make("plain", /*staged=*/false, &rt);
  ASSERT_NE(host, nullptr);
  EXPECT_EQ(host->pipeline(), nullptr);
  absl::StatusOr<InferenceResponse> got = absl::UnknownError("no answer");
  host->Infer(Request(4, 5), [&got](absl::StatusOr<InferenceResponse> r) { got = std::move(r); });
  ASSERT_TRUE(host->batcher_for_test()->RunOnce());  // manual mode: runs on this thread
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->outputs[0].as<float>()[1], 10.0f);
  EXPECT_EQ(rt->executes_, 1);
  EXPECT_EQ(rt->packs_, 0);
  host->RefreshGauges();
  const std::string text = metrics_.Serialize();
  EXPECT_THAT(text, Not(HasSubstr("ferry_pipeline_stage_duration_us_count{model=\"plain\"")));
  EXPECT_THAT(text, Not(HasSubstr("ferry_device_busy_fraction{model=\"plain\"")));
}

}  // namespace
}  // namespace ferry::agent
