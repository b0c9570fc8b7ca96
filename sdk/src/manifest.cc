#include "ferry/manifest.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ferry/config_reader.h"
#include "status_macros.h"
#include "yaml_to_json.h"

namespace ferry {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::vector<std::pair<std::string_view, Accelerator>> kAccelerators = {
    {"cpu", Accelerator::kCpu}, {"gpu", Accelerator::kGpu}, {"any", Accelerator::kAny}};
const std::vector<std::pair<std::string_view, BatchPolicy>> kPolicies = {
    {"aimd", BatchPolicy::kAimd}, {"fixed", BatchPolicy::kFixed}, {"off", BatchPolicy::kOff}};
const std::vector<std::pair<std::string_view, OverloadAction>> kOverloadActions = {
    {"reject", OverloadAction::kReject}, {"default-output", OverloadAction::kDefaultOutput}};

constexpr std::string_view kNameExpected =
    "a name of 1 to 63 characters from [a-z0-9._-], starting and ending with [a-z0-9]";

constexpr std::string_view kRuntimeExpected =
    "a runtime name of 1 to 63 characters from [a-z0-9-], starting with [a-z] (such as echo)";

bool ValidRuntimeName(const std::string& name) {
  if (name.empty() || name.size() > 63 || !(name.front() >= 'a' && name.front() <= 'z')) {
    return false;
  }
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

bool IsDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 63) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  for (char c : name) {
    if (!alnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return alnum(name.front()) && alnum(name.back());
}

struct Metadata {
  std::string name;
  std::map<std::string, std::string> labels;
};

absl::StatusOr<Metadata> ParseMetadata(const FieldReader& doc) {
  if (!doc.Has("metadata")) return doc.Missing("metadata", "a mapping with fields name, labels");
  FERRY_MANIFEST_ASSIGN_OR_RETURN(FieldReader meta, doc.Child("metadata", {"name", "labels"}));
  Metadata out;
  if (!meta.Has("name")) return meta.Missing("name", kNameExpected);
  const json& name = *meta.Get("name");
  if (!name.is_string() || !ValidName(name.get<std::string>())) {
    return meta.Bad("name", kNameExpected);
  }
  out.name = name.get<std::string>();
  if (const json* labels = meta.Get("labels")) {
    if (!labels->is_object()) return meta.Bad("labels", "a mapping of string keys to strings");
    for (const auto& [key, value] : labels->items()) {
      const std::string path = absl::StrCat(meta.Path("labels"), ".", key);
      if (key.empty() || key.size() > 253) {
        return meta.errors().Got(meta.Path("labels"), *labels, "label keys of 1 to 253 characters");
      }
      if (!value.is_string()) {
        return meta.errors().Got(path, value, "a string (quote numbers and booleans)");
      }
      out.labels[key] = value.get<std::string>();
    }
  }
  return out;
}

absl::Status CheckHeader(const FieldReader& doc, std::string_view want_kind, std::string* kind) {
  const std::string api_expected = std::string(kApiVersion);
  if (!doc.Has("apiVersion")) return doc.Missing("apiVersion", api_expected);
  const json& api = *doc.Get("apiVersion");
  if (!api.is_string() || api.get<std::string>() != kApiVersion) {
    return doc.Bad("apiVersion", api_expected);
  }
  const std::string kind_expected =
      want_kind.empty() ? std::string("one of Function, SLO") : std::string(want_kind);
  if (!doc.Has("kind")) return doc.Missing("kind", kind_expected);
  const json& k = *doc.Get("kind");
  const bool ok = k.is_string() && (want_kind.empty() ? (k == "Function" || k == "SLO")
                                                      : k.get<std::string>() == want_kind);
  if (!ok) return doc.Bad("kind", kind_expected);
  *kind = k.get<std::string>();
  return absl::OkStatus();
}

const std::vector<std::string_view> kSloFields = {"latency", "throughput", "maxCostPerMillion",
                                                  "onOverload", "defaultOutput"};

// The SLO fields, shared by kind: SLO documents (at "spec") and inline Function SLOs (at
// "spec.slo"). `fields` has already been checked against the allowed keys.
absl::Status ParseSloFields(const FieldReader& f, SloSpec* slo) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  if (f.Has("latency")) {
    FERRY_MANIFEST_ASSIGN_OR_RETURN(FieldReader lat,
                                    f.Child("latency", {"percentile", "targetMillis"}));
    FERRY_MANIFEST_RETURN_IF_ERROR(
        lat.Number("percentile", 0, true, 100, false, &slo->latency_percentile));
    // Nothing acts on another percentile: the batcher holds every batch to targetMillis and
    // `ferry usage` reports p50/p99. Refused rather than accepted and silently ignored.
    if (slo->latency_percentile != 99.0) {
      return lat.Bad("percentile",
                     "99 (the only percentile ferry supports: the batcher steers every batch to "
                     "targetMillis, and ferry usage reports p99 against it)");
    }
    // A latency block without a target is almost certainly a mistake, not "no latency SLO".
    if (!lat.Has("targetMillis")) {
      return lat.Missing("targetMillis", "a number in (0, 3600000]");
    }
    FERRY_MANIFEST_RETURN_IF_ERROR(
        lat.Number("targetMillis", 0, true, 3'600'000, false, &slo->latency_target_ms));
  }
  if (f.Has("throughput")) {
    FERRY_MANIFEST_ASSIGN_OR_RETURN(FieldReader tp, f.Child("throughput", {"minRps"}));
    FERRY_MANIFEST_RETURN_IF_ERROR(tp.Number("minRps", 0, false, kInf, false, &slo->min_rps));
  }
  if (f.Has("maxCostPerMillion")) {
    double cost = 0;
    FERRY_MANIFEST_RETURN_IF_ERROR(f.Number("maxCostPerMillion", 0, false, kInf, false, &cost));
    slo->max_cost_per_million = cost;
  }
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Enum("onOverload", kOverloadActions, &slo->on_overload));
  if (slo->on_overload == OverloadAction::kDefaultOutput) {
    if (!f.Has("defaultOutput")) {
      return f.Missing("defaultOutput",
                       "a value to answer with (required when onOverload is "
                       "default-output)");
    }
    slo->default_output = *f.Get("defaultOutput");
  } else if (f.Has("defaultOutput")) {
    return f.Bad("defaultOutput", "no defaultOutput unless onOverload is default-output");
  }
  return absl::OkStatus();
}

std::vector<std::string_view> SloFieldList(std::initializer_list<std::string_view> extra = {}) {
  std::vector<std::string_view> out(extra);
  out.insert(out.end(), kSloFields.begin(), kSloFields.end());
  return out;
}

std::string ResolvePath(std::string_view base_dir, const std::string& path) {
  if (base_dir.empty()) return path;
  return (fs::path(std::string(base_dir)) / path).string();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  if (fs::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a folder, expected a file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot be read"));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return text.str();
}

absl::StatusOr<SloSpec> ParseSloDocument(const internal::YamlDocument& doc,
                                         const std::string& source) {
  FieldErrors ctx(doc.prefix);
  FERRY_MANIFEST_ASSIGN_OR_RETURN(
      FieldReader top,
      FieldReader::Open(ctx, "", doc.value, {"apiVersion", "kind", "metadata", "spec"}));
  std::string kind;
  FERRY_MANIFEST_RETURN_IF_ERROR(CheckHeader(top, "SLO", &kind));
  FERRY_MANIFEST_ASSIGN_OR_RETURN(Metadata meta, ParseMetadata(top));
  if (!meta.labels.empty()) {
    // An SLO's settings are copied into the Function that references it; its labels would go
    // nowhere, so they are refused rather than dropped.
    return ctx.Error("metadata.labels",
                     "not allowed on a kind: SLO document (nothing reads them; put labels on the "
                     "Function)");
  }
  SloSpec slo;
  slo.name = meta.name;
  slo.source = source;
  if (!top.Has("spec"))
    return top.Missing("spec", "a mapping with fields " + JoinNames(SloFieldList()));
  FERRY_MANIFEST_ASSIGN_OR_RETURN(FieldReader spec, top.Child("spec", SloFieldList()));
  FERRY_MANIFEST_RETURN_IF_ERROR(ParseSloFields(spec, &slo));
  return slo;
}

absl::Status ParseHardware(const FieldReader& spec, HardwareSpec* hw) {
  if (!spec.Has("hardware")) return absl::OkStatus();
  FERRY_MANIFEST_ASSIGN_OR_RETURN(
      FieldReader f, spec.Child("hardware", {"accelerator", "gpuMemoryMiB", "minComputeCapability",
                                             "cpuCores", "memoryMiB"}));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Enum("accelerator", kAccelerators, &hw->accelerator));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("gpuMemoryMiB", 0, 1 << 24, &hw->gpu_memory_mib));
  if (hw->accelerator == Accelerator::kCpu && hw->gpu_memory_mib > 0) {
    return f.Bad("gpuMemoryMiB", "0 when accelerator is cpu (set accelerator: gpu or any)");
  }
  if (const json* cc = f.Get("minComputeCapability")) {
    constexpr std::string_view kCcExpected = "a compute capability \"X.Y\" such as \"8.0\"";
    // An unquoted 8.6 arrives as a number; its shortest form is the text the user wrote.
    std::string text = cc->is_string()         ? cc->get<std::string>()
                       : cc->is_number_float() ? cc->dump()
                                               : std::string();
    const size_t dot = text.find('.');
    if (dot == std::string::npos || !IsDigits(std::string_view(text).substr(0, dot)) ||
        !IsDigits(std::string_view(text).substr(dot + 1))) {
      return f.Bad("minComputeCapability", kCcExpected);
    }
    if (hw->accelerator == Accelerator::kCpu) {
      return f.Bad("minComputeCapability", "no minComputeCapability when accelerator is cpu");
    }
    hw->min_compute_capability = text;
  }
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Number("cpuCores", 0, true, 1024, false, &hw->cpu_cores));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("memoryMiB", 1, 1 << 24, &hw->memory_mib));
  return absl::OkStatus();
}

absl::Status ParseBatching(const FieldReader& spec, BatchingSpec* b) {
  if (!spec.Has("batching")) return absl::OkStatus();
  FERRY_MANIFEST_ASSIGN_OR_RETURN(
      FieldReader f,
      spec.Child("batching",
                 {"maxBatchSize", "maxQueueDelayMicros", "policy", "maxQueueSize", "maxQueueBytes",
                  "maxBatchTokens", "timeoutMicros", "instances", "pipelineDepth", "aimd"}));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("maxBatchSize", 1, 65536, &b->max_batch_size));
  FERRY_MANIFEST_RETURN_IF_ERROR(
      f.Int("maxQueueDelayMicros", 0, 10'000'000, &b->max_queue_delay_us));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Enum("policy", kPolicies, &b->policy));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("maxQueueSize", 1, 1'000'000, &b->max_queue_size));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("maxQueueBytes", 1, int64_t{1} << 40, &b->max_queue_bytes));
  FERRY_MANIFEST_RETURN_IF_ERROR(
      f.Int("maxBatchTokens", 0, int64_t{1} << 30, &b->max_batch_tokens));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("timeoutMicros", 0, 3'600'000'000LL, &b->timeout_us));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("instances", 1, 64, &b->instances));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("pipelineDepth", 1, 16, &b->pipeline_depth));
  if (f.Has("aimd")) {
    FERRY_MANIFEST_ASSIGN_OR_RETURN(
        FieldReader a, f.Child("aimd", {"additiveIncrease", "holdBand", "multiplicativeDecrease"}));
    FERRY_MANIFEST_RETURN_IF_ERROR(a.Int("additiveIncrease", 1, 65536, &b->aimd.additive_increase));
    FERRY_MANIFEST_RETURN_IF_ERROR(a.Number("holdBand", 0, false, 1, true, &b->aimd.hold_band));
    FERRY_MANIFEST_RETURN_IF_ERROR(
        a.Number("multiplicativeDecrease", 0, true, 1, true, &b->aimd.multiplicative_decrease));
  }
  return absl::OkStatus();
}

absl::Status ParseScaling(const FieldReader& spec, ScalingSpec* s) {
  if (!spec.Has("scaling")) return absl::OkStatus();
  FERRY_MANIFEST_ASSIGN_OR_RETURN(
      FieldReader f,
      spec.Child("scaling", {"minReplicas", "maxReplicas", "idleSeconds", "targetUtilization",
                             "stableWindowSeconds", "panicWindowSeconds", "panicThreshold",
                             "maxScaleUpRate", "maxScaleDownRate", "burstZ"}));
  constexpr int64_t kMaxReplicas = 10'000;
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("minReplicas", 0, kMaxReplicas, &s->min_replicas));
  // Unless given, maxReplicas follows minReplicas up so that "minReplicas: 3" alone is valid.
  s->max_replicas = std::max<int64_t>(s->max_replicas, s->min_replicas);
  FERRY_MANIFEST_RETURN_IF_ERROR(
      f.Int("maxReplicas", std::max<int64_t>(1, s->min_replicas), kMaxReplicas, &s->max_replicas));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("idleSeconds", 0, 31'536'000, &s->idle_seconds));
  // Autoscaler settings (control-plane/autoscaler.h). The panic window defaults to a tenth of
  // the stable window and may not exceed it.
  FERRY_MANIFEST_RETURN_IF_ERROR(
      f.Number("targetUtilization", 0, true, 1, false, &s->target_utilization));
  FERRY_MANIFEST_RETURN_IF_ERROR(
      f.Number("stableWindowSeconds", 0.1, false, 3600, false, &s->stable_window_seconds));
  s->panic_window_seconds = s->stable_window_seconds / 10;
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Number("panicWindowSeconds", 0, true, s->stable_window_seconds,
                                          false, &s->panic_window_seconds));
  FERRY_MANIFEST_RETURN_IF_ERROR(
      f.Number("panicThreshold", 1, true, 100, false, &s->panic_threshold));
  FERRY_MANIFEST_RETURN_IF_ERROR(
      f.Number("maxScaleUpRate", 1, true, 10'000, false, &s->max_scale_up_rate));
  FERRY_MANIFEST_RETURN_IF_ERROR(
      f.Number("maxScaleDownRate", 1, true, 10'000, false, &s->max_scale_down_rate));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Number("burstZ", 0, false, 10, false, &s->burst_z));
  return absl::OkStatus();
}

absl::Status ParseModel(const FieldReader& spec, std::string_view base_dir, FunctionSpec* fn) {
  if (!spec.Has("model")) return absl::OkStatus();
  FERRY_MANIFEST_ASSIGN_OR_RETURN(FieldReader f, spec.Child("model", {"uri"}));
  constexpr std::string_view kUriExpected =
      "a file:// URI such as \"file://models/name\" (relative to the manifest's folder) or "
      "\"file:///abs/path\"";
  if (!f.Has("uri")) return f.Missing("uri", kUriExpected);
  const json& uri = *f.Get("uri");
  if (!uri.is_string()) return f.Bad("uri", kUriExpected);
  const std::string text = uri.get<std::string>();
  constexpr std::string_view kScheme = "file://";
  if (text.rfind(kScheme, 0) != 0) {
    const size_t colon = text.find("://");
    if (colon != std::string::npos) {
      return f.Bad("uri", absl::StrCat(std::string(kUriExpected), "; scheme \"",
                                       text.substr(0, colon), "\" is not supported"));
    }
    return f.Bad("uri", kUriExpected);
  }
  const std::string rel = text.substr(kScheme.size());
  if (rel.empty()) return f.Bad("uri", kUriExpected);
  std::error_code ec;
  fs::path resolved = fs::absolute(fs::path(ResolvePath(base_dir, rel)), ec);
  if (ec) return f.Bad("uri", absl::StrCat(std::string(kUriExpected), " (", ec.message(), ")"));
  fn->model_uri = text;
  fn->model_path = resolved.lexically_normal().string();
  return absl::OkStatus();
}

absl::Status ParseSlo(const FieldReader& spec, std::string_view base_dir, SloSpec* slo) {
  if (!spec.Has("slo")) return absl::OkStatus();
  FERRY_MANIFEST_ASSIGN_OR_RETURN(FieldReader f, spec.Child("slo", SloFieldList({"file"})));
  if (!f.Has("file")) return ParseSloFields(f, slo);
  for (std::string_view other : kSloFields) {
    if (f.Has(other)) {
      return f.Bad(other, "either spec.slo.file or inline SLO fields, not both");
    }
  }
  const json& file = *f.Get("file");
  if (!file.is_string() || file.get<std::string>().empty()) {
    return f.Bad("file", "a path to a kind: SLO file");
  }
  const std::string path = ResolvePath(base_dir, file.get<std::string>());
  absl::StatusOr<SloSpec> loaded = LoadSloFile(path);
  if (absl::IsNotFound(loaded.status())) {
    return f.Bad("file", absl::StrCat("an existing kind: SLO file (", path, " does not exist)"));
  }
  if (!loaded.ok()) {
    return absl::Status(loaded.status().code(),
                        absl::StrCat(std::string(loaded.status().message()), " (referenced from ",
                                     f.errors().where(), ": ", f.Path("file"), ")"));
  }
  *slo = std::move(*loaded);
  return absl::OkStatus();
}

absl::StatusOr<FunctionSpec> ParseFunctionDocument(const FieldReader& top, int document,
                                                   std::string_view source,
                                                   std::string_view base_dir) {
  FunctionSpec fn;
  fn.source = std::string(source);
  fn.document = document;
  fn.base_dir = std::string(base_dir);
  FERRY_MANIFEST_ASSIGN_OR_RETURN(Metadata meta, ParseMetadata(top));
  fn.name = std::move(meta.name);
  fn.labels = std::move(meta.labels);

  const std::vector<std::string_view> spec_fields = {"runtime", "model", "hardware", "batching",
                                                     "scaling", "slo",   "config"};
  if (!top.Has("spec"))
    return top.Missing("spec", "a mapping with fields " + JoinNames(spec_fields));
  FERRY_MANIFEST_ASSIGN_OR_RETURN(FieldReader spec, top.Child("spec", spec_fields));

  // Syntax only: which runtimes exist is known where they are linked (the node agent's runtime
  // registry, ferry/runtime_registry.h), which rejects an unknown name when it loads the
  // function. ferry-control and the CLI never link runtimes.
  if (!spec.Has("runtime")) return spec.Missing("runtime", kRuntimeExpected);
  const json& runtime = *spec.Get("runtime");
  if (!runtime.is_string() || !ValidRuntimeName(runtime.get<std::string>())) {
    return spec.Bad("runtime", kRuntimeExpected);
  }
  fn.runtime = runtime.get<std::string>();

  FERRY_MANIFEST_RETURN_IF_ERROR(ParseModel(spec, base_dir, &fn));
  FERRY_MANIFEST_RETURN_IF_ERROR(ParseHardware(spec, &fn.hardware));
  FERRY_MANIFEST_RETURN_IF_ERROR(ParseBatching(spec, &fn.batching));
  FERRY_MANIFEST_RETURN_IF_ERROR(ParseScaling(spec, &fn.scaling));
  FERRY_MANIFEST_RETURN_IF_ERROR(ParseSlo(spec, base_dir, &fn.slo));
  if (const json* config = spec.Get("config")) {
    if (!config->is_object()) return spec.Bad("config", "a mapping of runtime settings");
    fn.config = *config;
  }
  return fn;
}

// A parsed Function and where it was defined, for duplicate-name messages.
struct LocatedFunction {
  FunctionSpec spec;
  std::string where;
};

absl::Status AddUnique(std::vector<LocatedFunction>& all, std::vector<LocatedFunction> more) {
  for (auto& fn : more) {
    for (const auto& seen : all) {
      if (seen.spec.name == fn.spec.name) {
        return absl::InvalidArgumentError(absl::StrCat(
            fn.where, ": metadata.name: got ", ShowValue(json(fn.spec.name)),
            ", expected a Function name not already used (", seen.where, " defines it too)"));
      }
    }
    all.push_back(std::move(fn));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<LocatedFunction>> ParseLocated(std::string_view text,
                                                          std::string_view source_name,
                                                          std::string_view base_dir) {
  const std::string source(source_name);
  FERRY_MANIFEST_ASSIGN_OR_RETURN(std::vector<internal::YamlDocument> docs,
                                  internal::ParseYamlDocuments(text, source));
  std::vector<LocatedFunction> out;
  for (const internal::YamlDocument& doc : docs) {
    FieldErrors ctx(doc.prefix);
    FERRY_MANIFEST_ASSIGN_OR_RETURN(
        FieldReader top,
        FieldReader::Open(ctx, "", doc.value, {"apiVersion", "kind", "metadata", "spec"}));
    std::string kind;
    FERRY_MANIFEST_RETURN_IF_ERROR(CheckHeader(top, "", &kind));
    if (kind == "SLO") {
      // Validated now so that a broken SLO file fails the load, used only when referenced.
      FERRY_MANIFEST_RETURN_IF_ERROR(ParseSloDocument(doc, source).status());
      continue;
    }
    FERRY_MANIFEST_ASSIGN_OR_RETURN(FunctionSpec fn,
                                    ParseFunctionDocument(top, doc.index, source_name, base_dir));
    std::vector<LocatedFunction> one;
    one.push_back({std::move(fn), doc.prefix});
    FERRY_MANIFEST_RETURN_IF_ERROR(AddUnique(out, std::move(one)));
  }
  return out;
}

std::string ParentDir(const std::string& path) {
  std::string parent = fs::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

bool IsManifestFile(const fs::path& path) {
  const std::string ext = path.extension().string();
  const std::string name = path.filename().string();
  return !name.empty() && name[0] != '.' && (ext == ".yaml" || ext == ".yml" || ext == ".json");
}

}  // namespace

std::string_view AcceleratorName(Accelerator a) {
  switch (a) {
    case Accelerator::kCpu:
      return "cpu";
    case Accelerator::kGpu:
      return "gpu";
    case Accelerator::kAny:
      return "any";
  }
  return "cpu";
}

std::string_view BatchPolicyName(BatchPolicy p) {
  switch (p) {
    case BatchPolicy::kAimd:
      return "aimd";
    case BatchPolicy::kFixed:
      return "fixed";
    case BatchPolicy::kOff:
      return "off";
  }
  return "aimd";
}

std::string_view OverloadActionName(OverloadAction a) {
  switch (a) {
    case OverloadAction::kReject:
      return "reject";
    case OverloadAction::kDefaultOutput:
      return "default-output";
  }
  return "reject";
}

absl::StatusOr<std::vector<FunctionSpec>> ParseManifests(std::string_view text,
                                                         std::string_view source_name,
                                                         std::string_view base_dir) {
  FERRY_MANIFEST_ASSIGN_OR_RETURN(std::vector<LocatedFunction> located,
                                  ParseLocated(text, source_name, base_dir));
  std::vector<FunctionSpec> out;
  out.reserve(located.size());
  for (auto& fn : located) out.push_back(std::move(fn.spec));
  return out;
}

absl::StatusOr<std::vector<FunctionSpec>> LoadManifests(const std::string& file_or_dir) {
  std::error_code ec;
  const fs::file_status status = fs::status(file_or_dir, ec);
  if (ec || !fs::exists(status)) {
    return absl::NotFoundError(absl::StrCat(file_or_dir, ": no such file or folder"));
  }
  std::vector<std::string> files;
  if (fs::is_directory(status)) {
    for (const auto& entry : fs::directory_iterator(file_or_dir, ec)) {
      if (entry.is_regular_file(ec) && IsManifestFile(entry.path())) {
        files.push_back((fs::path(file_or_dir) / entry.path().filename()).string());
      }
    }
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrCat(file_or_dir, ": cannot list folder: ", ec.message()));
    }
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(file_or_dir);
  }

  std::vector<LocatedFunction> all;
  for (const std::string& file : files) {
    FERRY_MANIFEST_ASSIGN_OR_RETURN(std::string text, ReadFile(file));
    FERRY_MANIFEST_ASSIGN_OR_RETURN(std::vector<LocatedFunction> fns,
                                    ParseLocated(text, file, ParentDir(file)));
    FERRY_MANIFEST_RETURN_IF_ERROR(AddUnique(all, std::move(fns)));
  }
  if (all.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no kind: Function documents in ", file_or_dir,
                     fs::is_directory(status) ? " (looked at *.yaml, *.yml and *.json)" : ""));
  }
  std::vector<FunctionSpec> out;
  out.reserve(all.size());
  for (auto& fn : all) out.push_back(std::move(fn.spec));
  return out;
}

absl::StatusOr<SloSpec> LoadSloFile(const std::string& path) {
  FERRY_MANIFEST_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  FERRY_MANIFEST_ASSIGN_OR_RETURN(std::vector<internal::YamlDocument> docs,
                                  internal::ParseYamlDocuments(text, path));
  if (docs.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": got ", docs.size(), " documents, expected exactly one kind: SLO document"));
  }
  return ParseSloDocument(docs[0], path);
}

}  // namespace ferry
