#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ferry/clock.h"
#include "ferry/manifest.h"
#include "ferry/runtime_registry.h"
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

TEST_F(ServingCoreTest, FrontEndRejectionsAreCountedOnKnownFunctionsOnly) {
  const std::string invalid =
      "ferry_inference_request_failure{model=\"echo\",reason=\"invalid\",version=\"1\"} ";
  core_->RecordRejected("echo", "", absl::InvalidArgumentError("bad shape"));
  core_->RecordRejected("echo", "1", absl::InvalidArgumentError("bad datatype"));
  // Not refusals of the request's content, or not for a function this agent serves.
  core_->RecordRejected("echo", "", absl::ResourceExhaustedError("busy"));
  core_->RecordRejected("echo", "7", absl::InvalidArgumentError("no such version"));
  core_->RecordRejected("nope", "", absl::InvalidArgumentError("unknown"));
  const std::string metrics = core_->MetricsText();
  EXPECT_NE(metrics.find(invalid + "2"), std::string::npos) << metrics;
  EXPECT_EQ(metrics.find("model=\"nope\""), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("ferry_inference_request_failure{model=\"echo\",reason=\"overload\","
                         "version=\"1\"} 0"),
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

// An echo function next to two that cannot load here: one asks for a GPU on a CPU-only node,
// one names a runtime this build does not have.
constexpr char kMixedManifests[] = R"(
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo}
spec:
  runtime: echo
  batching: {maxBatchSize: 4, maxQueueDelayMicros: 0, policy: off}
---
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: g}
spec:
  runtime: echo
  hardware: {accelerator: gpu, gpuMemoryMiB: 100}
---
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: ghost}
spec:
  runtime: no-such-runtime
)";

AgentCoreOptions MixedOptions(bool exit_on_load_error) {
  auto specs = ParseManifests(kMixedManifests, "mixed.yaml", ".");
  EXPECT_TRUE(specs.ok()) << specs.status();
  AgentCoreOptions options;
  if (specs.ok()) options.functions = *specs;
  options.start_threads = false;
  options.gpu_absent_reason = "no GPU: none here";
  options.exit_on_load_error = exit_on_load_error;
  return options;
}

std::string Message(const absl::Status& status) { return std::string(status.message()); }

TEST(AgentCoreCreateTest, FailedFunctionIsReportedAndTheOthersServe) {
  auto core = AgentCore::Create(MixedOptions(/*exit_on_load_error=*/false));
  ASSERT_TRUE(core.ok()) << core.status();
  AgentCore& c = **core;
  EXPECT_TRUE(c.IsReady()) << "one failed function must not make the agent unready";
  EXPECT_EQ(c.LoadedFunctions(), std::vector<std::string>{"echo"});
  const std::map<std::string, absl::Status> failed = c.FailedFunctions();
  ASSERT_EQ(failed.size(), 2u);

  // echo serves.
  EXPECT_TRUE(c.ModelReady("echo", "").ok());
  std::optional<absl::StatusOr<InferenceResponse>> echo;
  c.Infer(Request("echo", BytesTensor("INPUT0", {"hi"})),
          [&](absl::StatusOr<InferenceResponse> r) { echo = std::move(r); });
  ASSERT_TRUE(c.host_for_test("echo")->batcher_for_test()->RunOnce());
  ASSERT_TRUE(echo.has_value() && echo->ok()) << (echo ? echo->status() : absl::OkStatus());
  EXPECT_EQ((*echo)->outputs[0].bytes, std::vector<std::string>{"hi"});

  // Each failed one answers Unavailable, with its load error, on ready, metadata and infer.
  const std::map<std::string, std::string> reasons = {
      {"g", "spec.hardware.accelerator is gpu but this node has no GPU (no GPU: none here)"},
      {"ghost", "no-such-runtime"}};
  for (const auto& [name, reason] : reasons) {
    SCOPED_TRACE(name);
    const std::string prefix = "function '" + name + "' failed to load: ";
    ASSERT_EQ(failed.count(name), 1u);
    EXPECT_TRUE(absl::IsUnavailable(failed.at(name))) << failed.at(name);
    const absl::Status ready = c.ModelReady(name, "");
    EXPECT_TRUE(absl::IsUnavailable(ready)) << ready;
    EXPECT_EQ(Message(ready).rfind(prefix, 0), 0u) << ready;
    EXPECT_NE(Message(ready).find(reason), std::string::npos) << ready;
    EXPECT_NE(Message(ready).find("mixed.yaml"), std::string::npos) << ready;
    const auto metadata = c.GetModelMetadata(name, "");
    EXPECT_EQ(metadata.status(), ready);
    EXPECT_EQ(c.FindModelMetadata(name, "").status(), ready);
    std::optional<absl::StatusOr<InferenceResponse>> result;
    c.Infer(Request(name, BytesTensor("INPUT0", {"x"})),
            [&](absl::StatusOr<InferenceResponse> r) { result = std::move(r); });
    ASSERT_TRUE(result.has_value()) << "a failed function answers inline";
    EXPECT_EQ(result->status(), ready);
  }
  EXPECT_TRUE(absl::IsNotFound(c.ModelReady("nope", "")));

  // A later successful load of that name replaces the failure; unloading forgets one.
  auto echo_spec = ParseManifests(R"(
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: ghost}
spec: {runtime: echo}
)",
                                  "fixed.yaml", ".");
  ASSERT_TRUE(echo_spec.ok()) << echo_spec.status();
  ASSERT_TRUE(c.LoadFunction(echo_spec->front(), /*use_gpu=*/false).ok());
  EXPECT_TRUE(c.ModelReady("ghost", "").ok());
  EXPECT_TRUE(c.UnloadFunction("g").ok());
  EXPECT_TRUE(absl::IsNotFound(c.ModelReady("g", "")));
  EXPECT_TRUE(c.FailedFunctions().empty());
}

TEST(AgentCoreCreateTest, ExitOnLoadErrorKeepsCreateStrict) {
  auto core = AgentCore::Create(MixedOptions(/*exit_on_load_error=*/true));
  ASSERT_FALSE(core.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(core.status())) << core.status();
  EXPECT_NE(Message(core.status()).find("spec.hardware.accelerator"), std::string::npos);
  EXPECT_NE(Message(core.status()).find("mixed.yaml"), std::string::npos);
  EXPECT_NE(Message(core.status()).find("'g'"), std::string::npos);
}

TEST(AgentCoreCreateTest, DuplicateNamesAlwaysRefuse) {
  AgentCoreOptions options = MixedOptions(/*exit_on_load_error=*/false);
  ASSERT_FALSE(options.functions.empty());
  options.functions.push_back(options.functions.front());
  auto core = AgentCore::Create(options);
  ASSERT_FALSE(core.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(core.status())) << core.status();
  EXPECT_NE(Message(core.status()).find("'echo' is defined twice"), std::string::npos);
}

// Fails every load, saying which device the agent asked for, so the tests can see the
// RuntimeContext a function gets.
absl::StatusOr<std::unique_ptr<Runtime>> CreateContextProbe(const FunctionSpec&,
                                                            const RuntimeContext& context) {
  return absl::InternalError(
      absl::StrCat("probe: use_gpu=", context.use_gpu, " gpu_index=", context.gpu_index));
}
FERRY_REGISTER_RUNTIME("context-probe", "tests: reports its RuntimeContext", &CreateContextProbe);

TEST(AgentCoreCreateTest, TheChosenGpuReachesTheRuntime) {
  auto specs = ParseManifests(R"(
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: p}
spec:
  runtime: context-probe
  hardware: {accelerator: gpu, gpuMemoryMiB: 100}
)",
                              "probe.yaml", ".");
  ASSERT_TRUE(specs.ok()) << specs.status();
  AgentCoreOptions options;
  options.functions = *specs;
  options.start_threads = false;
  options.num_gpus = 4;
  options.gpu_index = 2;
  auto core = AgentCore::Create(options);
  ASSERT_TRUE(core.ok()) << core.status();
  EXPECT_NE(Message((*core)->ModelReady("p", "")).find("probe: use_gpu=1 gpu_index=2"),
            std::string::npos)
      << (*core)->ModelReady("p", "");
  // Under a control plane the replica's device index comes with each load.
  const absl::Status load = (*core)->LoadFunction(specs->front(), /*use_gpu=*/true, 3);
  EXPECT_NE(Message(load).find("probe: use_gpu=1 gpu_index=3"), std::string::npos) << load;

  options.gpu_index = 4;  // not on this node
  core = AgentCore::Create(options);
  ASSERT_TRUE(core.ok()) << core.status();
  EXPECT_NE(Message((*core)->ModelReady("p", "")).find("needs GPU 4 but this node has 4"),
            std::string::npos)
      << (*core)->ModelReady("p", "");
}

}  // namespace
}  // namespace ferry::agent
