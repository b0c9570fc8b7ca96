// Deployment manifests (kind: Function) and SLO specs (kind: SLO), as users write them in YAML
// or JSON, Kubernetes style. Parsing validates every field: an error is an InvalidArgument
// status whose message names the file, the document index when a file holds several, the
// field path (e.g. "spec.batching.maxBatchSize"), the bad value and what was expected.
#ifndef FERRY_MANIFEST_H_
#define FERRY_MANIFEST_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace ferry {

inline constexpr std::string_view kApiVersion = "ferry.dev/v1";

enum class Accelerator { kCpu, kGpu, kAny };
enum class BatchPolicy { kAimd, kFixed, kOff };
enum class OverloadAction { kReject, kDefaultOutput };

std::string_view AcceleratorName(Accelerator a);        // "cpu" | "gpu" | "any"
std::string_view BatchPolicyName(BatchPolicy p);        // "aimd" | "fixed" | "off"
std::string_view OverloadActionName(OverloadAction a);  // "reject" | "default-output"

struct HardwareSpec {
  Accelerator accelerator = Accelerator::kCpu;  // manifest default: cpu
  int64_t gpu_memory_mib = 0;
  std::string min_compute_capability;  // "" or "8.0"
  double cpu_cores = 1.0;
  int64_t memory_mib = 512;
};

struct AimdSpec {
  int64_t additive_increase = 2;         // aimd.additiveIncrease
  double hold_band = 0.10;               // aimd.holdBand: hold within this fraction below the SLO
  double multiplicative_decrease = 0.9;  // aimd.multiplicativeDecrease, in (0, 1)
};

struct BatchingSpec {
  int64_t max_batch_size = 32;                   // maxBatchSize, in batch units (rows), 1..65536
  int64_t max_queue_delay_us = 1000;             // maxQueueDelayMicros, 0..10'000'000
  BatchPolicy policy = BatchPolicy::kAimd;       // policy
  int64_t max_queue_size = 1024;                 // maxQueueSize (requests), 1..1'000'000
  int64_t max_queue_bytes = int64_t{256} << 20;  // maxQueueBytes: payload bytes queued, 1..2^40
  // maxBatchTokens: token budget of one batch (Runtime::Cost: tokens for text runtimes, rows
  // otherwise), 0 = off, 0..2^30. A batch leaves when the next request would pass it.
  int64_t max_batch_tokens = 0;
  int64_t timeout_us = 0;  // timeoutMicros: default per-request timeout, 0 = none
  int64_t instances = 1;   // instances: concurrent executors, 1..64
  // pipelineDepth: batches in flight at once through a staged (GPU) runtime's pipeline, 1..16;
  // 1 = no overlap between batches. Ignored by runtimes without stages.
  int64_t pipeline_depth = 2;
  AimdSpec aimd;  // aimd: {...}
};

struct ScalingSpec {
  int64_t min_replicas = 1;    // minReplicas >= 0
  int64_t max_replicas = 1;    // maxReplicas >= max(1, minReplicas)
  int64_t idle_seconds = 300;  // idleSeconds >= 0: no request this long takes a function to 0
  // Autoscaler (control-plane/autoscaler.h; Knative KPA defaults).
  double target_utilization = 0.7;    // targetUtilization, (0, 1]
  double stable_window_seconds = 60;  // stableWindowSeconds, [0.1, 3600]
  double panic_window_seconds = 6;    // panicWindowSeconds, (0, stable]; default stable / 10
  double panic_threshold = 2.0;       // panicThreshold, (1, 100]: x ready replicas
  double max_scale_up_rate = 1000;    // maxScaleUpRate, (1, 10000]: x ready per decision
  double max_scale_down_rate = 2.0;   // maxScaleDownRate, (1, 10000]: / current per decision
  // burstZ, [0, 10]: burst headroom in standard deviations of one SLO window's arrivals; only
  // for a function with a latency target; 0 = off (control-plane/autoscaler.h).
  double burst_z = 4.0;
};

struct SloSpec {
  std::string name;                            // metadata.name of the SLO document; "" when inline
  std::string source;                          // file it came from, or "" when inline
  double latency_percentile = 99.0;            // latency.percentile, (0, 100]
  double latency_target_ms = 0.0;              // latency.targetMillis, > 0; 0 = no latency SLO
  double min_rps = 0.0;                        // throughput.minRps >= 0
  std::optional<double> max_cost_per_million;  // maxCostPerMillion >= 0
  OverloadAction on_overload = OverloadAction::kReject;  // onOverload
  // defaultOutput: what an overloaded request gets with onOverload: default-output.
  nlohmann::json default_output;

  int64_t latency_target_us() const { return static_cast<int64_t>(latency_target_ms * 1000.0); }
};

struct FunctionSpec {
  std::string name;                           // metadata.name: [a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?
  std::map<std::string, std::string> labels;  // metadata.labels
  // spec.runtime: a name in the node agent's runtime registry (echo, wordfilter, mlp, plugin, ...).
  // The manifest parser checks only its spelling; see ferry/runtime_registry.h.
  std::string runtime;
  // spec.model.uri as written, and resolved to an absolute local path for file:// URIs (relative
  // paths resolve against the manifest's folder). Empty when the runtime needs no model.
  std::string model_uri;
  std::string model_path;
  HardwareSpec hardware;
  BatchingSpec batching;
  ScalingSpec scaling;
  SloSpec slo;
  // spec.config: runtime-specific settings, validated by the runtime with ferry/config_reader.h
  // (which reports paths under "spec.config").
  nlohmann::json config = nlohmann::json::object();

  std::string source;    // the manifest file, for messages
  int document = 0;      // 1-based document index when `source` holds several, else 0
  std::string base_dir;  // folder that relative paths in this spec resolve against
};

// Parses every document in `text` (YAML or JSON; several YAML documents separated by "---").
// Documents of kind SLO are accepted and only used when referenced by a Function's
// `spec.slo.file`. `source_name` names the text in errors; `base_dir` resolves relative paths.
absl::StatusOr<std::vector<FunctionSpec>> ParseManifests(std::string_view text,
                                                         std::string_view source_name,
                                                         std::string_view base_dir);

// Parses one file, or every *.yaml, *.yml and *.json file in a folder (not recursive, in name
// order). Function names must be unique across all of them. All-or-nothing: any error fails
// the whole load.
absl::StatusOr<std::vector<FunctionSpec>> LoadManifests(const std::string& file_or_dir);

// Parses an SLO file (kind: SLO).
absl::StatusOr<SloSpec> LoadSloFile(const std::string& path);

}  // namespace ferry

#endif  // FERRY_MANIFEST_H_
