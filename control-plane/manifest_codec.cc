#include "control-plane/manifest_codec.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "nlohmann/json.hpp"

namespace ferry::control {
namespace fs = std::filesystem;
using nlohmann::json;

std::string CanonicalManifest(const FunctionSpec& spec) {
  json meta = {{"name", spec.name}};
  if (!spec.labels.empty()) meta["labels"] = spec.labels;
  json hw = {{"accelerator", std::string(AcceleratorName(spec.hardware.accelerator))},
             {"cpuCores", spec.hardware.cpu_cores},
             {"memoryMiB", spec.hardware.memory_mib}};
  if (spec.hardware.accelerator != Accelerator::kCpu) {
    hw["gpuMemoryMiB"] = spec.hardware.gpu_memory_mib;
    if (!spec.hardware.min_compute_capability.empty()) {
      hw["minComputeCapability"] = spec.hardware.min_compute_capability;
    }
  }
  const BatchingSpec& b = spec.batching;
  json batching = {{"maxBatchSize", b.max_batch_size},
                   {"maxQueueDelayMicros", b.max_queue_delay_us},
                   {"policy", std::string(BatchPolicyName(b.policy))},
                   {"maxQueueSize", b.max_queue_size},
                   {"maxQueueBytes", b.max_queue_bytes},
                   {"maxBatchTokens", b.max_batch_tokens},
                   {"timeoutMicros", b.timeout_us},
                   {"instances", b.instances},
                   {"pipelineDepth", b.pipeline_depth},
                   {"aimd",
                    {{"additiveIncrease", b.aimd.additive_increase},
                     {"holdBand", b.aimd.hold_band},
                     {"multiplicativeDecrease", b.aimd.multiplicative_decrease}}}};
  json scaling = {{"minReplicas", spec.scaling.min_replicas},
                  {"maxReplicas", spec.scaling.max_replicas},
                  {"idleSeconds", spec.scaling.idle_seconds},
                  {"targetUtilization", spec.scaling.target_utilization},
                  {"stableWindowSeconds", spec.scaling.stable_window_seconds},
                  {"panicWindowSeconds", spec.scaling.panic_window_seconds},
                  {"panicThreshold", spec.scaling.panic_threshold},
                  {"maxScaleUpRate", spec.scaling.max_scale_up_rate},
                  {"maxScaleDownRate", spec.scaling.max_scale_down_rate},
                  {"burstZ", spec.scaling.burst_z}};
  const SloSpec& s = spec.slo;
  json slo = json::object();
  if (s.latency_target_ms > 0) {
    slo["latency"] = {{"percentile", s.latency_percentile}, {"targetMillis", s.latency_target_ms}};
  }
  slo["throughput"] = {{"minRps", s.min_rps}};
  if (s.max_cost_per_million) slo["maxCostPerMillion"] = *s.max_cost_per_million;
  slo["onOverload"] = std::string(OverloadActionName(s.on_overload));
  if (s.on_overload == OverloadAction::kDefaultOutput) slo["defaultOutput"] = s.default_output;

  json body = {{"runtime", spec.runtime}, {"hardware", hw}, {"batching", batching},
               {"scaling", scaling},      {"slo", slo},     {"config", spec.config}};
  if (!spec.model_uri.empty()) body["model"] = {{"uri", "file://" + spec.model_path}};
  json doc = {{"apiVersion", std::string(kApiVersion)},
              {"kind", "Function"},
              {"metadata", meta},
              {"spec", body}};
  return doc.dump();
}

absl::StatusOr<FunctionSpec> ParseCanonicalManifest(std::string_view text, std::string_view source,
                                                    std::string_view base_dir) {
  absl::StatusOr<std::vector<FunctionSpec>> fns = ParseManifests(text, source, base_dir);
  if (!fns.ok()) return fns.status();
  if (fns->size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        std::string(source), ": expected exactly one Function document, got ", fns->size()));
  }
  return std::move(fns->front());
}

namespace {

// A temporary folder removed on destruction.
class StagingDir {
 public:
  StagingDir() {
    std::error_code ec;
    std::string tmpl = (fs::temp_directory_path(ec) / "ferry-apply-XXXXXX").string();
    if (ec) tmpl = "/tmp/ferry-apply-XXXXXX";
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~StagingDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Where the user's path lives inside the staging folder: "/a/b.yaml" -> STAGE/a/b.yaml,
// "b.yaml" -> STAGE/b.yaml.
fs::path Logical(const std::string& path) {
  fs::path p(path);
  if (!p.is_absolute()) p = fs::path("/") / p;
  return p.lexically_normal();
}

std::string ParentOf(const std::string& path) {
  std::string parent = fs::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

}  // namespace

absl::StatusOr<std::vector<FunctionSpec>> ParseApplyFiles(
    const std::vector<ManifestFileInput>& files) {
  if (files.empty()) return absl::InvalidArgumentError("apply: no manifest files given");
  StagingDir stage;
  if (stage.path().empty()) return absl::InternalError("apply: cannot create a staging folder");
  // Stage every file first, so a Function may reference an SLO file that comes later.
  std::vector<std::string> staged(files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    if (files[i].path.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("apply: file ", i + 1, " has no path"));
    }
    const fs::path target = fs::path(stage.path()) / Logical(files[i].path).relative_path();
    std::error_code ec;
    fs::create_directories(target.parent_path(), ec);
    std::ofstream out(target, std::ios::binary | std::ios::trunc);
    out.write(files[i].content.data(), static_cast<std::streamsize>(files[i].content.size()));
    out.close();
    if (ec || !out) return absl::InternalError(absl::StrCat("apply: cannot stage ", files[i].path));
    staged[i] = target.string();
  }
  auto unstage = [&](const std::string& text) {
    return absl::StrReplaceAll(text, {{stage.path(), ""}});
  };

  std::vector<FunctionSpec> out;
  std::map<std::string, std::string> defined_in;
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string& path = files[i].path;
    absl::StatusOr<std::vector<FunctionSpec>> fns =
        ParseManifests(files[i].content, path, ParentOf(staged[i]));
    if (!fns.ok()) {
      return absl::Status(fns.status().code(), unstage(std::string(fns.status().message())));
    }
    const std::string parent = ParentOf(path);
    for (FunctionSpec& fn : *fns) {
      auto [it, inserted] = defined_in.emplace(fn.name, path);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": metadata.name: got \"", fn.name,
            "\", expected a Function name not already used (", it->second, " defines it too)"));
      }
      fn.source = path;
      fn.base_dir = parent;
      fn.slo.source = unstage(fn.slo.source);
      if (!fn.model_uri.empty()) {
        const std::string rel = fn.model_uri.substr(std::string_view("file://").size());
        const fs::path model = rel.front() == '/' ? fs::path(rel) : fs::path(parent) / rel;
        fn.model_path = model.lexically_normal().string();
      }
      out.push_back(std::move(fn));
    }
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(
        "apply: no kind: Function documents in the given files (SLO files alone change nothing)");
  }
  return out;
}

}  // namespace ferry::control
