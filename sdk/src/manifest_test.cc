#include "ferry/manifest.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A fresh folder per test under the test temp dir.
class ManifestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = (fs::path(::testing::TempDir()) /
            (std::string("ferry_manifest_") + info->name() + "_" + std::to_string(::getpid())))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& text) {
    const fs::path path = fs::path(dir_) / name;
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text;
    return path.string();
  }

  std::string dir_;
};

constexpr char kDesignManifest[] = R"(apiVersion: ferry.dev/v1
kind: Function
metadata: {name: minilm}
spec:
  runtime: sentence-embedding        # echo | wordfilter | mlp | sentence-embedding | plugin
  model: {uri: "file://models/all-MiniLM-L6-v2"}
  hardware:
    accelerator: gpu                 # gpu | cpu | any
    gpuMemoryMiB: 1024
    minComputeCapability: "8.0"
    cpuCores: 1
    memoryMiB: 2048
  batching: {maxBatchSize: 256, maxQueueDelayMicros: 5000, policy: aimd}   # aimd | fixed | off
  scaling: {minReplicas: 0, maxReplicas: 8, idleSeconds: 300}
  slo: {file: minilm.slo.yaml}       # or inline
)";

constexpr char kDesignSlo[] = R"(apiVersion: ferry.dev/v1
kind: SLO
metadata: {name: minilm}
spec:
  latency: {percentile: 99, targetMillis: 20}
  throughput: {minRps: 2000}
  maxCostPerMillion: 0.40            # optional: cheapest hardware that meets the SLO wins
  onOverload: reject                 # reject (429) | default-output
)";

constexpr char kMinimal[] = R"(apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo}
spec: {runtime: echo}
)";

TEST_F(ManifestTest, DesignExampleParsesAllFields) {
  const std::string manifest = Write("minilm.yaml", kDesignManifest);
  const std::string slo_file = Write("minilm.slo.yaml", kDesignSlo);

  absl::StatusOr<std::vector<FunctionSpec>> fns = LoadManifests(manifest);
  ASSERT_TRUE(fns.ok()) << fns.status();
  ASSERT_EQ(fns->size(), 1u);
  const FunctionSpec& fn = (*fns)[0];
  EXPECT_EQ(fn.name, "minilm");
  EXPECT_TRUE(fn.labels.empty());
  EXPECT_EQ(fn.runtime, "sentence-embedding");
  EXPECT_EQ(fn.model_uri, "file://models/all-MiniLM-L6-v2");
  EXPECT_EQ(fn.model_path,
            fs::absolute(fs::path(dir_) / "models/all-MiniLM-L6-v2").lexically_normal().string());
  EXPECT_EQ(fn.hardware.accelerator, Accelerator::kGpu);
  EXPECT_EQ(fn.hardware.gpu_memory_mib, 1024);
  EXPECT_EQ(fn.hardware.min_compute_capability, "8.0");
  EXPECT_DOUBLE_EQ(fn.hardware.cpu_cores, 1.0);
  EXPECT_EQ(fn.hardware.memory_mib, 2048);
  EXPECT_EQ(fn.batching.max_batch_size, 256);
  EXPECT_EQ(fn.batching.max_queue_delay_us, 5000);
  EXPECT_EQ(fn.batching.policy, BatchPolicy::kAimd);
  EXPECT_EQ(fn.scaling.min_replicas, 0);
  EXPECT_EQ(fn.scaling.max_replicas, 8);
  EXPECT_EQ(fn.scaling.idle_seconds, 300);
  EXPECT_EQ(fn.slo.name, "minilm");
  EXPECT_EQ(fn.slo.source, slo_file);
  EXPECT_DOUBLE_EQ(fn.slo.latency_percentile, 99.0);
  EXPECT_DOUBLE_EQ(fn.slo.latency_target_ms, 20.0);
  EXPECT_EQ(fn.slo.latency_target_us(), 20000);
  EXPECT_DOUBLE_EQ(fn.slo.min_rps, 2000.0);
  ASSERT_TRUE(fn.slo.max_cost_per_million.has_value());
  EXPECT_DOUBLE_EQ(*fn.slo.max_cost_per_million, 0.40);
  EXPECT_EQ(fn.slo.on_overload, OverloadAction::kReject);
  EXPECT_EQ(fn.config, nlohmann::json::object());
  EXPECT_EQ(fn.source, manifest);
  EXPECT_EQ(fn.base_dir, dir_);

  // Loading the folder finds the same Function; the SLO file alone is not a Function.
  absl::StatusOr<std::vector<FunctionSpec>> from_dir = LoadManifests(dir_);
  ASSERT_TRUE(from_dir.ok()) << from_dir.status();
  ASSERT_EQ(from_dir->size(), 1u);
  EXPECT_EQ((*from_dir)[0].slo.latency_target_us(), 20000);
}

TEST_F(ManifestTest, JsonForm) {
  constexpr char kJson[] = R"({
  "apiVersion": "ferry.dev/v1",
  "kind": "Function",
  "metadata": {"name": "mlp-small", "labels": {"team": "search"}},
  "spec": {
    "runtime": "mlp",
    "model": {"uri": "file:///srv/models/mlp"},
    "hardware": {"accelerator": "any", "gpuMemoryMiB": 256, "cpuCores": 0.5},
    "batching": {"maxBatchSize": 64, "policy": "fixed", "timeoutMicros": 250000,
                 "instances": 2, "maxQueueSize": 100, "maxQueueBytes": 1048576,
                 "maxBatchTokens": 4096, "pipelineDepth": 3},
    "slo": {"latency": {"targetMillis": 7.5}, "onOverload": "reject"},
    "config": {"layers": [4, 8, 2], "activation": "relu", "seed": null}
  }
})";
  absl::StatusOr<std::vector<FunctionSpec>> fns = ParseManifests(kJson, "mlp.json", dir_);
  ASSERT_TRUE(fns.ok()) << fns.status();
  ASSERT_EQ(fns->size(), 1u);
  const FunctionSpec& fn = (*fns)[0];
  EXPECT_EQ(fn.name, "mlp-small");
  EXPECT_EQ(fn.labels, (std::map<std::string, std::string>{{"team", "search"}}));
  EXPECT_EQ(fn.model_path, "/srv/models/mlp");
  EXPECT_EQ(fn.hardware.accelerator, Accelerator::kAny);
  EXPECT_DOUBLE_EQ(fn.hardware.cpu_cores, 0.5);
  EXPECT_EQ(fn.batching.policy, BatchPolicy::kFixed);
  EXPECT_EQ(fn.batching.timeout_us, 250000);
  EXPECT_EQ(fn.batching.instances, 2);
  EXPECT_EQ(fn.batching.max_queue_size, 100);
  EXPECT_EQ(fn.batching.max_queue_bytes, 1048576);
  EXPECT_EQ(fn.batching.max_batch_tokens, 4096);
  EXPECT_EQ(fn.batching.pipeline_depth, 3);
  EXPECT_EQ(fn.slo.latency_target_us(), 7500);
  EXPECT_DOUBLE_EQ(fn.slo.latency_percentile, 99.0);
  EXPECT_EQ(fn.slo.name, "");
  EXPECT_EQ(fn.slo.source, "");
  EXPECT_EQ(fn.config,
            nlohmann::json::parse(R"({"layers": [4, 8, 2], "activation": "relu", "seed": null})"));
  EXPECT_TRUE(fn.config["layers"][0].is_number_integer());
  EXPECT_EQ(fn.source, "mlp.json");
  EXPECT_EQ(fn.base_dir, dir_);
}

TEST_F(ManifestTest, MultiDocumentKeepsOrderAndSkipsSloDocuments) {
  constexpr char kText[] = R"(apiVersion: ferry.dev/v1
kind: Function
metadata: {name: b}
spec: {runtime: echo}
---
apiVersion: ferry.dev/v1
kind: SLO
metadata: {name: unused}
spec: {latency: {targetMillis: 5}}
---
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: a}
spec: {runtime: wordfilter, config: {words: [x, y]}}
---
)";
  absl::StatusOr<std::vector<FunctionSpec>> fns = ParseManifests(kText, "multi.yaml", "");
  ASSERT_TRUE(fns.ok()) << fns.status();
  ASSERT_EQ(fns->size(), 2u);
  EXPECT_EQ((*fns)[0].name, "b");
  EXPECT_EQ((*fns)[0].runtime, "echo");
  EXPECT_EQ((*fns)[1].name, "a");
  EXPECT_EQ((*fns)[1].config["words"], nlohmann::json::parse(R"(["x", "y"])"));
}

TEST_F(ManifestTest, SloFileResolvesRelativeToManifestFolder) {
  Write("fns/slos/tight.yaml", R"(apiVersion: ferry.dev/v1
kind: SLO
metadata: {name: tight}
spec:
  latency: {percentile: 99, targetMillis: 2}
  onOverload: default-output
  defaultOutput: {outputs: [{name: y, datatype: FP32, shape: [1], data: [0.0]}]}
)");
  const std::string manifest = Write("fns/f.yaml", R"(apiVersion: ferry.dev/v1
kind: Function
metadata: {name: f}
spec:
  runtime: echo
  slo: {file: slos/tight.yaml}
)");
  absl::StatusOr<std::vector<FunctionSpec>> fns = LoadManifests(manifest);
  ASSERT_TRUE(fns.ok()) << fns.status();
  const SloSpec& slo = (*fns)[0].slo;
  EXPECT_EQ(slo.name, "tight");
  EXPECT_EQ(slo.source, (fs::path(dir_) / "fns" / "slos/tight.yaml").string());
  EXPECT_DOUBLE_EQ(slo.latency_percentile, 99.0);
  EXPECT_EQ(slo.latency_target_us(), 2000);
  EXPECT_EQ(slo.on_overload, OverloadAction::kDefaultOutput);
  EXPECT_EQ(slo.default_output["outputs"][0]["name"], "y");

  absl::StatusOr<SloSpec> direct = LoadSloFile(slo.source);
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_EQ(direct->name, "tight");
}

TEST_F(ManifestTest, InlineSloAndEveryOptionalField) {
  constexpr char kText[] = R"(apiVersion: ferry.dev/v1
kind: Function
metadata:
  name: full.fn_1
  labels: {team: ml, "version": "2"}
spec:
  runtime: plugin
  model: {uri: "file://../shared/model.bin"}
  hardware: {accelerator: gpu, gpuMemoryMiB: 512, minComputeCapability: 8.6, memoryMiB: 4096}
  batching:
    maxBatchSize: 16.0
    maxQueueDelayMicros: 0
    policy: "off"
    aimd: {additiveIncrease: 4, holdBand: 0.2, multiplicativeDecrease: 0.5}
  scaling: {minReplicas: 3, idleSeconds: 0}
  slo:
    latency: {percentile: 99.0, targetMillis: 50}
    throughput: {minRps: 10}
    maxCostPerMillion: 0
    onOverload: default-output
    defaultOutput: [1, "two", null]
  config: {library: libx.so}
)";
  absl::StatusOr<std::vector<FunctionSpec>> fns = ParseManifests(kText, "m.yaml", "/etc/ferry/fns");
  ASSERT_TRUE(fns.ok()) << fns.status();
  const FunctionSpec& fn = (*fns)[0];
  EXPECT_EQ(fn.name, "full.fn_1");
  EXPECT_EQ(fn.labels.at("version"), "2");
  EXPECT_EQ(fn.model_path, "/etc/ferry/shared/model.bin");
  EXPECT_EQ(fn.hardware.min_compute_capability, "8.6");
  EXPECT_EQ(fn.hardware.memory_mib, 4096);
  EXPECT_EQ(fn.batching.max_batch_size, 16);
  EXPECT_EQ(fn.batching.max_queue_delay_us, 0);
  EXPECT_EQ(fn.batching.policy, BatchPolicy::kOff);
  EXPECT_EQ(fn.batching.aimd.additive_increase, 4);
  EXPECT_DOUBLE_EQ(fn.batching.aimd.hold_band, 0.2);
  EXPECT_DOUBLE_EQ(fn.batching.aimd.multiplicative_decrease, 0.5);
  EXPECT_EQ(fn.scaling.min_replicas, 3);
  EXPECT_EQ(fn.scaling.max_replicas, 3);  // follows minReplicas up when not given
  EXPECT_EQ(fn.scaling.idle_seconds, 0);
  EXPECT_DOUBLE_EQ(fn.slo.latency_percentile, 99.0);
  EXPECT_EQ(fn.slo.latency_target_us(), 50000);
  EXPECT_DOUBLE_EQ(fn.slo.min_rps, 10.0);
  ASSERT_TRUE(fn.slo.max_cost_per_million.has_value());
  EXPECT_DOUBLE_EQ(*fn.slo.max_cost_per_million, 0.0);
  EXPECT_EQ(fn.slo.on_overload, OverloadAction::kDefaultOutput);
  EXPECT_EQ(fn.slo.default_output, nlohmann::json::parse(R"([1, "two", null])"));
  EXPECT_EQ(fn.config["library"], "libx.so");
}

TEST_F(ManifestTest, Defaults) {
  absl::StatusOr<std::vector<FunctionSpec>> fns = ParseManifests(kMinimal, "m.yaml", dir_);
  ASSERT_TRUE(fns.ok()) << fns.status();
  const FunctionSpec& fn = (*fns)[0];
  const FunctionSpec defaults;
  EXPECT_EQ(fn.name, "echo");
  EXPECT_EQ(fn.model_uri, "");
  EXPECT_EQ(fn.model_path, "");
  EXPECT_EQ(fn.hardware.accelerator, Accelerator::kCpu);
  EXPECT_EQ(fn.hardware.gpu_memory_mib, 0);
  EXPECT_EQ(fn.hardware.min_compute_capability, "");
  EXPECT_DOUBLE_EQ(fn.hardware.cpu_cores, 1.0);
  EXPECT_EQ(fn.hardware.memory_mib, 512);
  EXPECT_EQ(fn.batching.max_batch_size, 32);
  EXPECT_EQ(fn.batching.max_queue_delay_us, 1000);
  EXPECT_EQ(fn.batching.policy, BatchPolicy::kAimd);
  EXPECT_EQ(fn.batching.max_queue_size, 1024);
  EXPECT_EQ(fn.batching.timeout_us, 0);
  EXPECT_EQ(fn.batching.instances, 1);
  EXPECT_EQ(fn.batching.pipeline_depth, 2);
  EXPECT_EQ(fn.batching.aimd.additive_increase, defaults.batching.aimd.additive_increase);
  EXPECT_DOUBLE_EQ(fn.batching.aimd.hold_band, defaults.batching.aimd.hold_band);
  EXPECT_EQ(fn.scaling.min_replicas, 1);
  EXPECT_EQ(fn.scaling.max_replicas, 1);
  EXPECT_EQ(fn.scaling.idle_seconds, 300);
  EXPECT_EQ(fn.slo.latency_target_ms, 0.0);
  EXPECT_DOUBLE_EQ(fn.slo.latency_percentile, 99.0);
  EXPECT_FALSE(fn.slo.max_cost_per_million.has_value());
  EXPECT_EQ(fn.slo.on_overload, OverloadAction::kReject);
  EXPECT_TRUE(fn.slo.default_output.is_null());
  EXPECT_EQ(fn.config, nlohmann::json::object());
}

TEST_F(ManifestTest, EmptySectionsMeanDefaults) {
  constexpr char kText[] = R"(apiVersion: ferry.dev/v1
kind: Function
metadata: {name: e}
spec:
  runtime: echo
  batching:
  hardware: ~
  config:
)";
  absl::StatusOr<std::vector<FunctionSpec>> fns = ParseManifests(kText, "m.yaml", "");
  ASSERT_TRUE(fns.ok()) << fns.status();
  EXPECT_EQ((*fns)[0].batching.max_batch_size, 32);
  EXPECT_EQ((*fns)[0].config, nlohmann::json::object());
}

TEST_F(ManifestTest, ScalarTypingFollowsYamlCoreSchema) {
  constexpr char kText[] = R"(apiVersion: ferry.dev/v1
kind: Function
metadata: {name: t}
spec:
  runtime: echo
  config:
    int: 42
    neg: -7
    hex: 0x1F
    float: 1.5
    exp: 1e3
    yes_bool: true
    no_bool: FALSE
    tilde: ~
    null_word: null
    quoted_int: "42"
    quoted_bool: 'true'
    quoted_null: "null"
    word: hello
    yes_word: yes
    version: 1.2.3
    block: |
      12
    list: [1, two, 3.0]
)";
  absl::StatusOr<std::vector<FunctionSpec>> fns = ParseManifests(kText, "m.yaml", "");
  ASSERT_TRUE(fns.ok()) << fns.status();
  const nlohmann::json& c = (*fns)[0].config;
  EXPECT_TRUE(c["int"].is_number_integer());
  EXPECT_EQ(c["int"].get<int64_t>(), 42);
  EXPECT_EQ(c["neg"].get<int64_t>(), -7);
  EXPECT_EQ(c["hex"].get<int64_t>(), 31);
  EXPECT_TRUE(c["float"].is_number_float());
  EXPECT_DOUBLE_EQ(c["float"].get<double>(), 1.5);
  EXPECT_TRUE(c["exp"].is_number_float());
  EXPECT_DOUBLE_EQ(c["exp"].get<double>(), 1000.0);
  EXPECT_EQ(c["yes_bool"], true);
  EXPECT_EQ(c["no_bool"], false);
  EXPECT_TRUE(c["tilde"].is_null());
  EXPECT_TRUE(c["null_word"].is_null());
  EXPECT_EQ(c["quoted_int"], "42");
  EXPECT_EQ(c["quoted_bool"], "true");
  EXPECT_EQ(c["quoted_null"], "null");
  EXPECT_EQ(c["word"], "hello");
  EXPECT_EQ(c["yes_word"], "yes");  // YAML 1.2: only true/false are booleans
  EXPECT_EQ(c["version"], "1.2.3");
  EXPECT_EQ(c["block"], "12\n");
  EXPECT_EQ(c["list"], nlohmann::json::parse(R"([1, "two", 3.0])"));
}

struct BadCase {
  std::string label;
  std::string spec_yaml;          // appended under "spec:" of a valid Function document
  std::vector<std::string> want;  // substrings of the error message
};

TEST_F(ManifestTest, BadSpecFieldsNameThePathAndWhatWasExpected) {
  const std::vector<BadCase> cases = {
      {"wrong type",
       "  runtime: echo\n  batching: {maxBatchSize: big}\n",
       {"m.yaml: spec.batching.maxBatchSize: got \"big\", expected an integer in [1, 65536]"}},
      {"quoted number stays a string",
       "  runtime: echo\n  batching: {maxBatchSize: \"32\"}\n",
       {"spec.batching.maxBatchSize: got \"32\", expected an integer"}},
      {"fractional integer",
       "  runtime: echo\n  batching: {instances: 1.5}\n",
       {"spec.batching.instances: got 1.5, expected an integer in [1, 64]"}},
      {"out of range",
       "  runtime: echo\n  batching: {maxBatchSize: -3}\n",
       {"m.yaml: spec.batching.maxBatchSize: got -3, expected an integer in [1, 65536]"}},
      {"queue bytes out of range",
       "  runtime: echo\n  batching: {maxQueueBytes: 0}\n",
       {"spec.batching.maxQueueBytes: got 0, expected an integer in [1, 1099511627776]"}},
      {"batch tokens out of range",
       "  runtime: echo\n  batching: {maxBatchTokens: -1}\n",
       {"spec.batching.maxBatchTokens: got -1, expected an integer in [0, 1073741824]"}},
      {"pipeline depth out of range",
       "  runtime: echo\n  batching: {pipelineDepth: 0}\n",
       {"spec.batching.pipelineDepth: got 0, expected an integer in [1, 16]"}},
      {"delay out of range",
       "  runtime: echo\n  batching: {maxQueueDelayMicros: 10000001}\n",
       {"spec.batching.maxQueueDelayMicros: got 10000001, expected an integer in [0, 10000000]"}},
      {"unknown field",
       "  runtime: echo\n  batching: {maxBatchSze: 8}\n",
       {"spec.batching.maxBatchSze: unknown field", "did you mean maxBatchSize?",
        "expected one of maxBatchSize, maxQueueDelayMicros, policy"}},
      {"unknown spec field",
       "  runtime: echo\n  replicas: 3\n",
       {"spec.replicas: unknown field",
        "runtime, model, hardware, batching, scaling, slo, config"}},
      {"unknown aimd field",
       "  runtime: echo\n  batching: {aimd: {decrease: 0.5}}\n",
       {"spec.batching.aimd.decrease: unknown field"}},
      {"bad enum",
       "  runtime: echo\n  batching: {policy: adaptive}\n",
       {"spec.batching.policy: got \"adaptive\", expected one of aimd, fixed, off"}},
      {"bad accelerator",
       "  runtime: echo\n  hardware: {accelerator: tpu}\n",
       {"spec.hardware.accelerator: got \"tpu\", expected one of cpu, gpu, any"}},
      // Only the spelling: which runtimes exist is the node agent's registry's business.
      {"bad runtime name",
       "  runtime: Tensor_Flow\n",
       {"spec.runtime: got \"Tensor_Flow\", expected a runtime name of 1 to 63 characters"}},
      {"runtime not a string",
       "  runtime: [echo]\n",
       {"spec.runtime: got [\"echo\"], expected a runtime name"}},
      {"missing runtime",
       "  batching: {maxBatchSize: 4}\n",
       {"m.yaml: spec.runtime: missing, expected a runtime name"}},
      {"bad uri scheme",
       "  runtime: mlp\n  model: {uri: \"s3://bucket/model\"}\n",
       {"spec.model.uri: got \"s3://bucket/model\", expected a file:// URI",
        "scheme \"s3\" is not supported"}},
      {"uri without scheme",
       "  runtime: mlp\n  model: {uri: models/x}\n",
       {"spec.model.uri: got \"models/x\", expected a file:// URI"}},
      {"empty file uri",
       "  runtime: mlp\n  model: {uri: \"file://\"}\n",
       {"spec.model.uri: got \"file://\", expected a file:// URI"}},
      {"missing slo file",
       "  runtime: echo\n  slo: {file: nope.slo.yaml}\n",
       {"spec.slo.file: got \"nope.slo.yaml\", expected an existing kind: SLO file",
        "does not exist"}},
      {"slo file and inline fields",
       "  runtime: echo\n  slo: {file: x.yaml, onOverload: reject}\n",
       {"spec.slo.onOverload: got \"reject\", expected either spec.slo.file or inline"}},
      {"default-output without defaultOutput",
       "  runtime: echo\n  slo: {onOverload: default-output}\n",
       {"spec.slo.defaultOutput: missing, expected", "required when onOverload is default-output"}},
      {"defaultOutput with reject",
       "  runtime: echo\n  slo: {defaultOutput: 1}\n",
       {"spec.slo.defaultOutput: got 1, expected no defaultOutput unless onOverload"}},
      {"bad onOverload",
       "  runtime: echo\n  slo: {onOverload: drop}\n",
       {"spec.slo.onOverload: got \"drop\", expected one of reject, default-output"}},
      {"percentile zero",
       "  runtime: echo\n  slo: {latency: {percentile: 0, targetMillis: 5}}\n",
       {"spec.slo.latency.percentile: got 0, expected a number in (0, 100]"}},
      {"percentile other than 99 is refused, not ignored",
       "  runtime: echo\n  slo: {latency: {percentile: 95, targetMillis: 5}}\n",
       {"m.yaml: spec.slo.latency.percentile: got 95, expected 99 (the only percentile ferry "
        "supports"}},
      {"percentile 99.9 is refused too",
       "  runtime: echo\n  slo: {latency: {percentile: 99.9, targetMillis: 5}}\n",
       {"spec.slo.latency.percentile: got 99.9, expected 99"}},
      {"latency without target",
       "  runtime: echo\n  slo: {latency: {percentile: 99}}\n",
       {"spec.slo.latency.targetMillis: missing, expected a number in (0, 3600000]"}},
      {"negative rps",
       "  runtime: echo\n  slo: {throughput: {minRps: -1}}\n",
       {"spec.slo.throughput.minRps: got -1, expected a number >= 0"}},
      {"gpu memory on cpu",
       "  runtime: echo\n  hardware: {gpuMemoryMiB: 1024}\n",
       {"spec.hardware.gpuMemoryMiB: got 1024, expected 0 when accelerator is cpu"}},
      {"bad compute capability",
       "  runtime: echo\n  hardware: {accelerator: gpu, "
       "minComputeCapability: ampere}\n",
       {"spec.hardware.minComputeCapability: got \"ampere\", expected a compute capability"}},
      {"zero cpu cores",
       "  runtime: echo\n  hardware: {cpuCores: 0}\n",
       {"spec.hardware.cpuCores: got 0, expected a number in (0, 1024]"}},
      {"max below min replicas",
       "  runtime: echo\n  scaling: {minReplicas: 4, maxReplicas: 2}\n",
       {"spec.scaling.maxReplicas: got 2, expected an integer in [4, 10000]"}},
      {"hold band one",
       "  runtime: echo\n  batching: {aimd: {holdBand: 1}}\n",
       {"spec.batching.aimd.holdBand: got 1, expected a number in [0, 1)"}},
      {"decrease one",
       "  runtime: echo\n  batching: {aimd: {multiplicativeDecrease: 1.0}}\n",
       {"spec.batching.aimd.multiplicativeDecrease: got 1.0, expected a number in (0, 1)"}},
      {"config not a mapping",
       "  runtime: echo\n  config: [1, 2]\n",
       {"spec.config: got [1,2], expected a mapping"}},
      {"section not a mapping",
       "  runtime: echo\n  batching: 5\n",
       {"spec.batching: got 5, expected a mapping with fields maxBatchSize"}},
      {"infinite number",
       "  runtime: echo\n  hardware: {cpuCores: .inf}\n",
       {"spec.hardware.cpuCores: got .inf, expected a number in (0, 1024]"}},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.label);
    const std::string text =
        "apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: f}\nspec:\n" + c.spec_yaml;
    absl::StatusOr<std::vector<FunctionSpec>> fns = ParseManifests(text, "m.yaml", dir_);
    ASSERT_FALSE(fns.ok());
    EXPECT_EQ(fns.status().code(), absl::StatusCode::kInvalidArgument);
    for (const std::string& want : c.want) {
      EXPECT_THAT(std::string(fns.status().message()), HasSubstr(want));
    }
  }
}

// The parser links no runtime: any well-spelled name parses, and the node agent's registry
// rejects names it does not carry when it loads the function.
TEST_F(ManifestTest, RuntimeNamesAreCheckedForSpellingOnly) {
  absl::StatusOr<std::vector<FunctionSpec>> fns = ParseManifests(
      "apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: f}\nspec: {runtime: "
      "tensorflow-2}\n",
      "m.yaml", dir_);
  ASSERT_TRUE(fns.ok()) << fns.status();
  EXPECT_EQ((*fns)[0].runtime, "tensorflow-2");
  EXPECT_EQ((*fns)[0].document, 0);
}

TEST_F(ManifestTest, BadDocumentsNameThePathAndWhatWasExpected) {
  const std::vector<BadCase> cases = {
      {"bad apiVersion",
       "apiVersion: ferry.dev/v2\nkind: Function\n",
       {"m.yaml: apiVersion: got \"ferry.dev/v2\", expected ferry.dev/v1"}},
      {"missing apiVersion",
       "kind: Function\n",
       {"m.yaml: apiVersion: missing, expected ferry.dev/v1"}},
      {"bad kind",
       "apiVersion: ferry.dev/v1\nkind: Deployment\n",
       {"m.yaml: kind: got \"Deployment\", expected one of Function, SLO"}},
      {"unknown top-level field",
       "apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: f}\nspec: {runtime: echo}\n"
       "status: {}\n",
       {"m.yaml: status: unknown field, expected one of apiVersion, kind, metadata, spec"}},
      {"missing metadata",
       "apiVersion: ferry.dev/v1\nkind: Function\nspec: {runtime: echo}\n",
       {"m.yaml: metadata: missing"}},
      {"missing name",
       "apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {labels: {}}\n"
       "spec: {runtime: echo}\n",
       {"m.yaml: metadata.name: missing, expected a name of 1 to 63 characters"}},
      {"bad name chars",
       "apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: My_Func}\n"
       "spec: {runtime: echo}\n",
       {"metadata.name: got \"My_Func\", expected a name of 1 to 63 characters from [a-z0-9._-]"}},
      {"name ends with dash",
       "apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: f-}\n"
       "spec: {runtime: echo}\n",
       {"metadata.name: got \"f-\""}},
      {"label value not a string",
       "apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: f, labels: {v: 2}}\n"
       "spec: {runtime: echo}\n",
       {"metadata.labels.v: got 2, expected a string"}},
      {"missing spec",
       "apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: f}\n",
       {"m.yaml: spec: missing, expected a mapping"}},
      {"document not a mapping",
       "- a\n- b\n",
       {"m.yaml: got [\"a\",\"b\"], expected a mapping with fields apiVersion, kind, metadata, "
        "spec"}},
      {"malformed YAML",
       "apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: f\n"
       "spec: {runtime: echo}\n",
       {"m.yaml: line 4", "invalid YAML"}},
      {"bad indentation",
       "apiVersion: ferry.dev/v1\nkind: Function\nmetadata:\n  name: f\n"
       " spec: x\n",
       {"m.yaml: line 5", "invalid YAML"}},
      {"duplicate key",
       "apiVersion: ferry.dev/v1\nkind: Function\nkind: SLO\n",
       {"m.yaml: kind: duplicate key (line 3, column 1)"}},
      {"duplicate names",
       "apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: f}\nspec: {runtime: echo}\n"
       "---\napiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: f}\n"
       "spec: {runtime: mlp}\n",
       {"m.yaml document 2: metadata.name: got \"f\", expected a Function name not already used "
        "(m.yaml document 1 defines it too)"}},
      {"error in second document",
       "apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: f}\nspec: {runtime: echo}\n"
       "---\napiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: g}\n"
       "spec: {runtime: echo, scaling: {idleSeconds: -1}}\n",
       {"m.yaml document 2: spec.scaling.idleSeconds: got -1, expected an integer in [0, "}},
      {"bad SLO document",
       "apiVersion: ferry.dev/v1\nkind: SLO\nmetadata: {name: s}\nspec: {latency: {targetMillis: "
       "0}}\n",
       {"m.yaml: spec.latency.targetMillis: got 0, expected a number in (0, 3600000]"}},
      {"Function field in SLO document",
       "apiVersion: ferry.dev/v1\nkind: SLO\nmetadata: {name: s}\nspec: {runtime: echo}\n",
       {"m.yaml: spec.runtime: unknown field, expected one of latency, throughput"}},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.label);
    absl::StatusOr<std::vector<FunctionSpec>> fns = ParseManifests(c.spec_yaml, "m.yaml", dir_);
    ASSERT_FALSE(fns.ok());
    EXPECT_EQ(fns.status().code(), absl::StatusCode::kInvalidArgument);
    for (const std::string& want : c.want) {
      EXPECT_THAT(std::string(fns.status().message()), HasSubstr(want));
    }
  }
}

TEST_F(ManifestTest, ExactErrorFormat) {
  constexpr char kText[] = R"(apiVersion: ferry.dev/v1
kind: Function
metadata: {name: mlp}
spec:
  runtime: mlp
  batching: {maxBatchSize: -3}
)";
  absl::StatusOr<std::vector<FunctionSpec>> fns =
      ParseManifests(kText, "examples/mlp.yaml", "examples");
  ASSERT_FALSE(fns.ok());
  EXPECT_EQ(std::string(fns.status().message()),
            "examples/mlp.yaml: spec.batching.maxBatchSize: got -3, expected an integer in [1, "
            "65536]");
}

TEST_F(ManifestTest, ErrorsInsideReferencedSloFileNameThatFile) {
  const std::string slo = Write("bad.slo.yaml", R"(apiVersion: ferry.dev/v1
kind: SLO
metadata: {name: bad}
spec: {latency: {targetMillis: -5}}
)");
  const std::string manifest = Write("f.yaml", R"(apiVersion: ferry.dev/v1
kind: Function
metadata: {name: f}
spec: {runtime: echo, slo: {file: bad.slo.yaml}}
)");
  absl::StatusOr<std::vector<FunctionSpec>> fns = LoadManifests(manifest);
  ASSERT_FALSE(fns.ok());
  EXPECT_THAT(std::string(fns.status().message()),
              HasSubstr(slo + ": spec.latency.targetMillis: got -5, expected a number in (0, "));
  EXPECT_THAT(std::string(fns.status().message()),
              HasSubstr("referenced from " + manifest + ": spec.slo.file"));
}

TEST_F(ManifestTest, FieldsNothingReadsAreRefused) {
  // Labels on an SLO document would be dropped when its settings are copied into the Function.
  const std::string slo = Write("labelled.slo.yaml", R"(apiVersion: ferry.dev/v1
kind: SLO
metadata: {name: s, labels: {tier: gold}}
spec:
  latency: {targetMillis: 5}
)");
  absl::StatusOr<SloSpec> loaded = LoadSloFile(slo);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(std::string(loaded.status().message()),
            slo +
                ": metadata.labels: not allowed on a kind: SLO document (nothing reads them; "
                "put labels on the Function)");
  // The same document inside a manifest file is validated, and refused, too.
  absl::StatusOr<std::vector<FunctionSpec>> fns = ParseManifests(
      "apiVersion: ferry.dev/v1\nkind: SLO\nmetadata: {name: s, labels: {a: b}}\nspec: {}\n"
      "---\napiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: f}\nspec: {runtime: echo}\n",
      "both.yaml", dir_);
  ASSERT_FALSE(fns.ok());
  EXPECT_THAT(std::string(fns.status().message()),
              HasSubstr("both.yaml document 1: metadata.labels: not allowed on a kind: SLO"));
  // A latency percentile other than 99 would change nothing: refused with the field path.
  fns = ParseManifests(
      "apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: f}\nspec:\n  runtime: echo\n"
      "  slo: {latency: {percentile: 99.9, targetMillis: 5}}\n",
      "f.yaml", dir_);
  ASSERT_FALSE(fns.ok());
  EXPECT_EQ(std::string(fns.status().message()),
            "f.yaml: spec.slo.latency.percentile: got 99.9, expected 99 (the only percentile ferry "
            "supports: the batcher steers every batch to targetMillis, and ferry usage reports p99 "
            "against it)");
  // 99 (the default) is accepted, written or not.
  fns = ParseManifests(
      "apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: f}\nspec:\n  runtime: echo\n"
      "  slo: {latency: {percentile: 99, targetMillis: 5}}\n",
      "f.yaml", dir_);
  ASSERT_TRUE(fns.ok()) << fns.status();
}

TEST_F(ManifestTest, SloFileMustHoldOneSloDocument) {
  const std::string fn_file = Write("f.yaml", kMinimal);
  absl::StatusOr<SloSpec> slo = LoadSloFile(fn_file);
  ASSERT_FALSE(slo.ok());
  EXPECT_THAT(std::string(slo.status().message()),
              HasSubstr(fn_file + ": kind: got \"Function\", expected SLO"));

  const std::string two = Write("two.yaml", std::string(kDesignSlo) + "---\n" + kDesignSlo);
  slo = LoadSloFile(two);
  ASSERT_FALSE(slo.ok());
  EXPECT_THAT(std::string(slo.status().message()),
              HasSubstr("got 2 documents, expected exactly one kind: SLO document"));

  EXPECT_EQ(LoadSloFile(dir_ + "/missing.yaml").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ManifestTest, FolderLoadsEveryManifestFileInNameOrder) {
  Write("b.yaml", R"(apiVersion: ferry.dev/v1
kind: Function
metadata: {name: b}
spec: {runtime: echo}
)");
  Write("a.json", R"({"apiVersion": "ferry.dev/v1", "kind": "Function",
    "metadata": {"name": "a"}, "spec": {"runtime": "echo", "slo": {"file": "s.yml"}}})");
  Write("s.yml", kDesignSlo);
  Write("c.yml", R"(apiVersion: ferry.dev/v1
kind: Function
metadata: {name: c}
spec: {runtime: mlp}
---
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: d}
spec: {runtime: echo}
)");
  Write("notes.txt", "not a manifest");
  Write("sub/e.yaml", "not: parsed");  // folders are not searched recursively

  absl::StatusOr<std::vector<FunctionSpec>> fns = LoadManifests(dir_);
  ASSERT_TRUE(fns.ok()) << fns.status();
  std::vector<std::string> names;
  for (const auto& fn : *fns) names.push_back(fn.name);
  EXPECT_THAT(names, ElementsAre("a", "b", "c", "d"));
  EXPECT_EQ((*fns)[0].source, (fs::path(dir_) / "a.json").string());
  EXPECT_EQ((*fns)[0].base_dir, dir_);
  EXPECT_EQ((*fns)[0].slo.latency_target_us(), 20000);
  EXPECT_EQ((*fns)[2].source, (fs::path(dir_) / "c.yml").string());
}

TEST_F(ManifestTest, DuplicateNamesAcrossFilesNameBothFiles) {
  const std::string first = Write("1.yaml", kMinimal);
  const std::string second = Write("2.yaml", kMinimal);
  absl::StatusOr<std::vector<FunctionSpec>> fns = LoadManifests(dir_);
  ASSERT_FALSE(fns.ok());
  EXPECT_EQ(fns.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(fns.status().message()),
              HasSubstr(second +
                        ": metadata.name: got \"echo\", expected a Function name not "
                        "already used (" +
                        first + " defines it too)"));
}

TEST_F(ManifestTest, OneBadFileFailsTheWholeFolder) {
  Write("a.yaml", kMinimal);
  const std::string bad = Write("b.yaml", "apiVersion: ferry.dev/v1\nkind: Function\n");
  absl::StatusOr<std::vector<FunctionSpec>> fns = LoadManifests(dir_);
  ASSERT_FALSE(fns.ok());
  EXPECT_THAT(std::string(fns.status().message()), HasSubstr(bad + ": metadata: missing"));
}

TEST_F(ManifestTest, MissingPathAndEmptyFolders) {
  const std::string missing = dir_ + "/nowhere";
  absl::StatusOr<std::vector<FunctionSpec>> fns = LoadManifests(missing);
  ASSERT_FALSE(fns.ok());
  EXPECT_EQ(fns.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(fns.status().message()), HasSubstr(missing));

  fns = LoadManifests(dir_);
  ASSERT_FALSE(fns.ok());
  EXPECT_THAT(std::string(fns.status().message()),
              HasSubstr("no kind: Function documents in " + dir_));

  Write("only.slo.yaml", kDesignSlo);
  fns = LoadManifests(dir_);
  ASSERT_FALSE(fns.ok());
  EXPECT_THAT(std::string(fns.status().message()),
              HasSubstr("no kind: Function documents in " + dir_));
}

TEST_F(ManifestTest, AliasBombIsRejected) {
  std::string text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  char prev = 'a';
  for (char c = 'b'; c <= 'h'; ++c) {
    text += std::string(1, c) + ": &" + c + " [";
    for (int i = 0; i < 10; ++i) text += std::string(i ? ", *" : "*") + prev;
    text += "]\n";
    prev = c;
  }
  const std::string doc =
      "apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: f}\nspec:\n  runtime: echo\n"
      "  config:\n" +
      [&] {
        std::string indented;
        size_t start = 0;
        while (start < text.size()) {
          const size_t end = text.find('\n', start);
          indented += "    " + text.substr(start, end - start + 1);
          start = end + 1;
        }
        return indented;
      }();
  absl::StatusOr<std::vector<FunctionSpec>> fns = ParseManifests(doc, "m.yaml", "");
  ASSERT_FALSE(fns.ok());
  EXPECT_THAT(std::string(fns.status().message()), HasSubstr("more than 1000000 nodes"));
}

// Under the node cap, a long scalar aliased 100,000 times would still expand an 800-byte text
// into 60 MB (found by tests/fuzz/fuzz_manifest).
TEST(ManifestAliases, LongScalarAliasBombIsRejected) {
  std::string text = "a: &a \"" + std::string(600, 'x') + "\"\n";
  char prev = 'a';
  for (char c = 'b'; c <= 'f'; ++c) {
    text += std::string(1, c) + ": &" + c + " [";
    for (int i = 0; i < 10; ++i) text += std::string(i ? ", *" : "*") + prev;
    text += "]\n";
    prev = c;
  }
  absl::StatusOr<std::vector<FunctionSpec>> fns = ParseManifests(text, "m.yaml", "");
  ASSERT_FALSE(fns.ok());
  EXPECT_EQ(fns.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(fns.status().message()),
              HasSubstr("more than 16777216 bytes of keys and scalars"));
}

// yaml-cpp 0.7 alone reads these as endless empty documents and allocates until memory runs out
// (found by tests/fuzz/fuzz_manifest).
TEST(ManifestYaml, StrayFlowEntryIsAnError) {
  for (const char* text : {",", "[1],", "apiVersion: ferry.dev/v1\n---\n\"x\",\n"}) {
    absl::StatusOr<std::vector<FunctionSpec>> fns = ParseManifests(text, "m.yaml", "");
    ASSERT_FALSE(fns.ok()) << text;
    EXPECT_EQ(fns.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(fns.status().message()),
                HasSubstr("m.yaml: invalid YAML: more than 1000 documents"))
        << text;
  }
}

TEST(ManifestNames, EnumNames) {
  EXPECT_EQ(AcceleratorName(Accelerator::kCpu), "cpu");
  EXPECT_EQ(AcceleratorName(Accelerator::kGpu), "gpu");
  EXPECT_EQ(AcceleratorName(Accelerator::kAny), "any");
  EXPECT_EQ(BatchPolicyName(BatchPolicy::kAimd), "aimd");
  EXPECT_EQ(BatchPolicyName(BatchPolicy::kFixed), "fixed");
  EXPECT_EQ(BatchPolicyName(BatchPolicy::kOff), "off");
  EXPECT_EQ(OverloadActionName(OverloadAction::kReject), "reject");
  EXPECT_EQ(OverloadActionName(OverloadAction::kDefaultOutput), "default-output");
}

}  // namespace
}  // namespace ferry
