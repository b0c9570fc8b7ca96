#include <optional>
#include <string>
#include <vector>

#include "ferry/clock.h"
#include "ferry/manifest.h"
#include "gtest/gtest.h"
#include "node-agent/serving_core_impl.h"

namespace ferry::agent {
namespace {

constexpr char kManifests[] = R"(
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo}
spec:
  runtime: echo
  batching: {maxBatchSize: 8, maxQueueDelayMicros: 1000, policy: fixed, maxQueueSize: 2}
---
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: filter}
spec:
  runtime: wordfilter
  config: {blacklist: [darn]}
  batching: {maxBatchSize: 64, maxQueueDelayMicros: 0, policy: off}
---
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: busy}
spec:
  runtime: echo
  batching: {maxBatchSize: 1, maxQueueSize: 1, policy: off}
  slo:
    latency: {percentile: 99, targetMillis: 5}
    onOverload: default-output
    defaultOutput: "try later"
)";

Tensor BytesTensor(const std::string& name, std::vector<std::string> values) {
  Tensor t;
  t.name = name;
  t.dtype = DataType::kBytes;
  t.shape = {static_cast<int64_t>(values.size())};
  t.bytes = std::move(values);
  return t;
}

std::unique_ptr<InferenceRequest> Request(const std::string& model, Tensor input,
                                          const std::string& id = "r1") {
  auto r = std::make_unique<InferenceRequest>();
  r->model_name = model;
  r->id = id;
  r->inputs.push_back(std::move(input));
  return r;
}

class ServingCoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto specs = ParseManifests(kManifests, "test.yaml", ".");
    ASSERT_TRUE(specs.ok()) << specs.status();
    AgentCoreOptions options;
    options.functions = *specs;
    options.clock = &clock_;
    options.start_threads = false;
    options.gpu_absent_reason = "no GPU: test";
    auto core = AgentCore::Create(options);
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = *std::move(core);
  }

  // Infers and returns the result if it was answered inline; else nullopt (then `pending_`
  // receives it once the batcher runs).
  void Submit(std::unique_ptr<InferenceRequest> request) {
    results_.push_back(std::nullopt);
    const size_t slot = results_.size() - 1;
    core_->Infer(std::move(request), [this, slot](absl::StatusOr<InferenceResponse> r) {
      results_[slot] = std::move(r);
    });
  }

  bool Run(const std::string& name) {
    return core_->host_for_test(name)->batcher_for_test()->RunOnce();
  }

  FakeClock clock_;
  std::unique_ptr<AgentCore> core_;
  std::vector<std::optional<absl::StatusOr<InferenceResponse>>> results_;
};

TEST_F(ServingCoreTest, EchoRoundTripThroughTheBatcher) {
  Submit(Request("echo", BytesTensor("INPUT0", {"hello", "world"}), "abc"));
  ASSERT_FALSE(results_[0].has_value()) << "answered before the batch ran";
  EXPECT_FALSE(Run("echo")) << "departed before the queue delay with 2 of 8 rows";
  clock_.AdvanceMicros(1000);
  ASSERT_TRUE(Run("echo"));
  ASSERT_TRUE(results_[0].has_value());
  ASSERT_TRUE(results_[0]->ok()) << results_[0]->status();
  const InferenceResponse& r = **results_[0];
  EXPECT_EQ(r.model_name, "echo");
  EXPECT_EQ(r.model_version, "1");
  EXPECT_EQ(r.id, "abc");
  ASSERT_EQ(r.outputs.size(), 1u);
  EXPECT_EQ(r.outputs[0].name, "OUTPUT0");
  EXPECT_EQ(r.outputs[0].bytes, (std::vector<std::string>{"hello", "world"}));
  const std::string metrics = core_->MetricsText();
  EXPECT_NE(metrics.find("ferry_inference_request_success{model=\"echo\",version=\"1\"} 1"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("ferry_inference_exec_count{model=\"echo\",version=\"1\"} 1"),
            std::string::npos);
  // policy fixed: the target is maxBatchSize.
  EXPECT_NE(metrics.find("ferry_inference_target_batch_size{model=\"echo\",version=\"1\"} 8"),
            std::string::npos);
}

TEST_F(ServingCoreTest, UnknownModelAndVersionAreNotFound) {
  Submit(Request("nope", BytesTensor("INPUT0", {"x"})));
  ASSERT_TRUE(results_[0].has_value());
  EXPECT_TRUE(absl::IsNotFound(results_[0]->status())) << results_[0]->status();
  auto r = Request("echo", BytesTensor("INPUT0", {"x"}));
  r->model_version = "7";
  Submit(std::move(r));
  ASSERT_TRUE(results_[1].has_value());
  EXPECT_TRUE(absl::IsNotFound(results_[1]->status()));
  EXPECT_TRUE(absl::IsNotFound(core_->ModelReady("nope", "")));
  EXPECT_TRUE(core_->ModelReady("echo", "1").ok());
  EXPECT_FALSE(core_->GetModelMetadata("nope", "").ok());
}

TEST_F(ServingCoreTest, InvalidInputIsRejectedInlineAndCounted) {
  Submit(Request("echo", BytesTensor("WRONG", {"x"})));
  ASSERT_TRUE(results_[0].has_value());
  EXPECT_TRUE(absl::IsInvalidArgument(results_[0]->status()));
  EXPECT_NE(std::string(results_[0]->status().message()).find("echo"), std::string::npos);
  const std::string metrics = core_->MetricsText();
  EXPECT_NE(metrics.find("ferry_inference_request_failure{model=\"echo\",reason=\"invalid\","
                         "version=\"1\"} 1"),
            std::string::npos)
      << metrics;
}

TEST_F(ServingCoreTest, FullQueueAnswersResourceExhaustedAtOnce) {
  Submit(Request("echo", BytesTensor("INPUT0", {"a"})));
  Submit(Request("echo", BytesTensor("INPUT0", {"b"})));
  Submit(Request("echo", BytesTensor("INPUT0", {"c"})));
  ASSERT_FALSE(results_[0].has_value());
  ASSERT_FALSE(results_[1].has_value());
  ASSERT_TRUE(results_[2].has_value()) << "the third request must be answered at once";
  EXPECT_TRUE(absl::IsResourceExhausted(results_[2]->status())) << results_[2]->status();
  clock_.AdvanceMicros(1000);
  while (Run("echo")) {
  }
  ASSERT_TRUE(results_[0].has_value() && results_[0]->ok());
  ASSERT_TRUE(results_[1].has_value() && results_[1]->ok());
  EXPECT_EQ((*results_[1])->outputs[0].bytes[0], "b");
}

TEST_F(ServingCoreTest, DefaultOutputUnderOverload) {
  Submit(Request("busy", BytesTensor("INPUT0", {"a"})));
  Submit(Request("busy", BytesTensor("INPUT0", {"b"})));
  ASSERT_TRUE(results_[1].has_value());
  ASSERT_TRUE(results_[1]->ok()) << results_[1]->status();
  EXPECT_TRUE((*results_[1])->is_default);
  EXPECT_EQ(std::get<std::string>((*results_[1])->parameters.at("default_output")),
            "\"try later\"");
  while (Run("busy")) {
  }
  ASSERT_TRUE(results_[0].has_value() && results_[0]->ok());
  EXPECT_FALSE((*results_[0])->is_default);
}

TEST_F(ServingCoreTest, RequestedOutputsAreFiltered) {
  auto r = Request("filter", BytesTensor("text", {"oh darn it", "fine"}));
  r->outputs.push_back({"count", false, {}});
  Submit(std::move(r));
  ASSERT_TRUE(Run("filter"));
  ASSERT_TRUE(results_[0].has_value() && results_[0]->ok()) << results_[0]->status();
  const auto& outputs = (*results_[0])->outputs;
  ASSERT_EQ(outputs.size(), 1u);
  EXPECT_EQ(outputs[0].name, "count");
  ASSERT_EQ(outputs[0].dtype, DataType::kInt32);
  EXPECT_EQ(outputs[0].as<int32_t>()[0], 1);
  EXPECT_EQ(outputs[0].as<int32_t>()[1], 0);
}

TEST_F(ServingCoreTest, DrainAnswersQueuedWorkAndRefusesNew) {
  Submit(Request("echo", BytesTensor("INPUT0", {"a"})));
  EXPECT_TRUE(core_->IsReady());
  core_->Drain();
  EXPECT_FALSE(core_->IsReady());
  ASSERT_TRUE(results_[0].has_value());
  EXPECT_TRUE(results_[0]->ok()) << results_[0]->status();
  Submit(Request("echo", BytesTensor("INPUT0", {"b"})));
  ASSERT_TRUE(results_[1].has_value());
  EXPECT_TRUE(absl::IsUnavailable(results_[1]->status())) << results_[1]->status();
}

TEST(AgentCoreCreateTest, GpuFunctionOnCpuNodeFailsWithReason) {
  auto specs = ParseManifests(R"(
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: g}
spec:
  runtime: echo
  hardware: {accelerator: gpu, gpuMemoryMiB: 100}
)",
                              "gpu.yaml", ".");
  ASSERT_TRUE(specs.ok()) << specs.status();
  AgentCoreOptions options;
  options.functions = *specs;
  options.gpu_absent_reason = "no GPU: none here";
  auto core = AgentCore::Create(options);
  ASSERT_FALSE(core.ok());
  EXPECT_NE(std::string(core.status().message()).find("spec.hardware.accelerator"),
            std::string::npos);
  EXPECT_NE(std::string(core.status().message()).find("gpu.yaml"), std::string::npos);
}

}  // namespace
}  // namespace ferry::agent
