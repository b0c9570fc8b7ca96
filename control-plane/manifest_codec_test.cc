// The canonical manifest is what agents receive: every field a user sets must survive the
// round trip, or the agent would silently run with the default (as maxQueueBytes and
// maxBatchTokens once did).
#include "control-plane/manifest_codec.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace ferry::control {
namespace {

// Every field set, and none to its default.
constexpr char kEveryField[] = R"(apiVersion: ferry.dev/v1
kind: Function
metadata:
  name: every-field
  labels: {team: search, tier: "2"}
spec:
  runtime: mlp
  model: {uri: "file:///models/m.safetensors"}
  hardware: {accelerator: any, gpuMemoryMiB: 300, minComputeCapability: "8.6", cpuCores: 0.75,
             memoryMiB: 700}
  batching:
    maxBatchSize: 48
    maxQueueDelayMicros: 1500
    policy: fixed
    maxQueueSize: 77
    maxQueueBytes: 123456
    maxBatchTokens: 4096
    timeoutMicros: 25000
    instances: 3
    pipelineDepth: 4
    aimd: {additiveIncrease: 5, holdBand: 0.25, multiplicativeDecrease: 0.5}
  scaling: {minReplicas: 2, maxReplicas: 9, idleSeconds: 42, targetUtilization: 0.6,
            stableWindowSeconds: 30, panicWindowSeconds: 4, panicThreshold: 3,
            maxScaleUpRate: 50, maxScaleDownRate: 4, burstZ: 2.5}
  slo:
    latency: {percentile: 99, targetMillis: 12.5}
    throughput: {minRps: 250}
    maxCostPerMillion: 0.3
    onOverload: default-output
    defaultOutput: {label: unknown}
  config: {activations: [relu, none], inputName: x}
)";

FunctionSpec ParseOne(const std::string& text) {
  absl::StatusOr<std::vector<FunctionSpec>> fns = ParseManifests(text, "f.yaml", "/m");
  EXPECT_TRUE(fns.ok()) << fns.status();
  EXPECT_EQ(fns->size(), 1u);
  return fns->front();
}

TEST(ManifestCodecTest, EveryFieldSurvivesTheCanonicalForm) {
  const FunctionSpec in = ParseOne(kEveryField);
  const std::string canonical = CanonicalManifest(in);
  absl::StatusOr<FunctionSpec> parsed = ParseCanonicalManifest(canonical, "canonical", "/");
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << canonical;
  const FunctionSpec& out = *parsed;
  const FunctionSpec defaults = ParseOne(
      "apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: d}\nspec: {runtime: mlp}\n");

  EXPECT_EQ(out.name, in.name);
  EXPECT_EQ(out.labels, in.labels);
  EXPECT_EQ(out.runtime, in.runtime);
  EXPECT_EQ(out.model_path, in.model_path);
  EXPECT_EQ(out.config, in.config);

  EXPECT_EQ(out.hardware.accelerator, in.hardware.accelerator);
  EXPECT_EQ(out.hardware.gpu_memory_mib, in.hardware.gpu_memory_mib);
  EXPECT_EQ(out.hardware.min_compute_capability, in.hardware.min_compute_capability);
  EXPECT_DOUBLE_EQ(out.hardware.cpu_cores, in.hardware.cpu_cores);
  EXPECT_EQ(out.hardware.memory_mib, in.hardware.memory_mib);

  const BatchingSpec& b = out.batching;
  const BatchingSpec& want = in.batching;
  EXPECT_EQ(b.max_batch_size, want.max_batch_size);
  EXPECT_EQ(b.max_queue_delay_us, want.max_queue_delay_us);
  EXPECT_EQ(b.policy, want.policy);
  EXPECT_EQ(b.max_queue_size, want.max_queue_size);
  EXPECT_EQ(b.max_queue_bytes, want.max_queue_bytes);
  EXPECT_EQ(b.max_batch_tokens, want.max_batch_tokens);
  EXPECT_EQ(b.timeout_us, want.timeout_us);
  EXPECT_EQ(b.instances, want.instances);
  EXPECT_EQ(b.pipeline_depth, want.pipeline_depth);
  EXPECT_EQ(b.aimd.additive_increase, want.aimd.additive_increase);
  EXPECT_DOUBLE_EQ(b.aimd.hold_band, want.aimd.hold_band);
  EXPECT_DOUBLE_EQ(b.aimd.multiplicative_decrease, want.aimd.multiplicative_decrease);

  const ScalingSpec& s = out.scaling;
  EXPECT_EQ(s.min_replicas, in.scaling.min_replicas);
  EXPECT_EQ(s.max_replicas, in.scaling.max_replicas);
  EXPECT_EQ(s.idle_seconds, in.scaling.idle_seconds);
  EXPECT_DOUBLE_EQ(s.target_utilization, in.scaling.target_utilization);
  EXPECT_DOUBLE_EQ(s.stable_window_seconds, in.scaling.stable_window_seconds);
  EXPECT_DOUBLE_EQ(s.panic_window_seconds, in.scaling.panic_window_seconds);
  EXPECT_DOUBLE_EQ(s.panic_threshold, in.scaling.panic_threshold);
  EXPECT_DOUBLE_EQ(s.max_scale_up_rate, in.scaling.max_scale_up_rate);
  EXPECT_DOUBLE_EQ(s.max_scale_down_rate, in.scaling.max_scale_down_rate);
  EXPECT_DOUBLE_EQ(s.burst_z, in.scaling.burst_z);
  EXPECT_DOUBLE_EQ(s.burst_z, 2.5);

  EXPECT_DOUBLE_EQ(out.slo.latency_percentile, in.slo.latency_percentile);
  EXPECT_DOUBLE_EQ(out.slo.latency_target_ms, in.slo.latency_target_ms);
  EXPECT_DOUBLE_EQ(out.slo.min_rps, in.slo.min_rps);
  EXPECT_EQ(out.slo.max_cost_per_million, in.slo.max_cost_per_million);
  EXPECT_EQ(out.slo.on_overload, in.slo.on_overload);
  EXPECT_EQ(out.slo.default_output, in.slo.default_output);

  // The input really differs from the defaults in the fields the codec once dropped, so the
  // checks above can fail.
  EXPECT_NE(want.max_queue_bytes, defaults.batching.max_queue_bytes);
  EXPECT_NE(want.max_batch_tokens, defaults.batching.max_batch_tokens);
  EXPECT_NE(want.pipeline_depth, defaults.batching.pipeline_depth);
  EXPECT_NE(want.instances, defaults.batching.instances);
}

}  // namespace
}  // namespace ferry::control
