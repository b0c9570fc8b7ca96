#include "node-agent/serving_core_impl.h"

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ferry/runtime.h"
#include "ferry/runtime_registry.h"

namespace ferry::agent {

namespace {

// Creates `spec`'s runtime, on GPU `gpu_index` when `use_gpu` (falling back to the CPU for
// `any`).
absl::StatusOr<std::unique_ptr<Runtime>> MakeRuntime(const FunctionSpec& spec, bool use_gpu,
                                                     int gpu_index, bool* on_gpu) {
  RuntimeContext context;
  context.use_gpu = use_gpu;
  context.gpu_index = gpu_index;
  auto runtime = RuntimeRegistry::Global().Create(spec, context);
  if (!runtime.ok() && context.use_gpu && spec.hardware.accelerator == Accelerator::kAny) {
    // "any" means the function also runs on a CPU: fall back when the GPU path is missing.
    context.use_gpu = false;
    runtime = RuntimeRegistry::Global().Create(spec, context);
  }
  *on_gpu = context.use_gpu;
  return runtime;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AgentCore>> AgentCore::Create(const AgentCoreOptions& options) {
  // A name defined twice is the user's configuration error: refuse before loading anything.
  std::set<std::string> names;
  for (const FunctionSpec& spec : options.functions) {
    if (!names.insert(spec.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(spec.source, ": function '", spec.name, "' is defined twice"));
    }
  }
  std::unique_ptr<AgentCore> core(new AgentCore());
  core->clock_ = options.clock;
  core->start_threads_ = options.start_threads;
  for (const FunctionSpec& spec : options.functions) {
    absl::Status placement;  // why this node cannot run it, if so
    bool use_gpu = false;
    switch (spec.hardware.accelerator) {
      case Accelerator::kGpu:
        use_gpu = true;
        if (options.num_gpus == 0) {
          placement = absl::FailedPreconditionError(
              absl::StrCat(spec.source, ": function '", spec.name,
                           "': spec.hardware.accelerator is gpu but this node has no GPU (",
                           options.gpu_absent_reason, ")"));
        } else if (options.gpu_index < 0 || options.gpu_index >= options.num_gpus) {
          placement = absl::FailedPreconditionError(
              absl::StrCat(spec.source, ": function '", spec.name, "' needs GPU ",
                           options.gpu_index, " but this node has ", options.num_gpus));
        }
        break;
      case Accelerator::kAny:
        use_gpu = options.gpu_index >= 0 && options.gpu_index < options.num_gpus;
        break;
      case Accelerator::kCpu:
        break;
    }
    absl::StatusOr<std::unique_ptr<FunctionHost>> host =
        placement.ok() ? core->BuildHost(spec, use_gpu, options.gpu_index)
                       : absl::StatusOr<std::unique_ptr<FunctionHost>>(placement);
    absl::MutexLock lock(&core->mu_);
    if (host.ok()) {
      core->hosts_.emplace(spec.name, std::shared_ptr<FunctionHost>(*std::move(host)));
    } else if (options.exit_on_load_error) {
      return host.status();
    } else {
      // Kept, as Unavailable: the function exists but cannot serve; the agent serves the rest.
      core->failed_.emplace(
          spec.name, absl::UnavailableError(absl::StrCat(
                         "function '", spec.name, "' failed to load: ", host.status().message())));
    }
  }
  return core;
}

absl::StatusOr<std::unique_ptr<FunctionHost>> AgentCore::BuildHost(const FunctionSpec& spec,
                                                                   bool use_gpu, int gpu_index) {
  Clock* const clock = clock_ != nullptr ? clock_ : RealClock::Get();
  const int64_t load_start_us = clock->NowMicros();
  bool on_gpu = false;
  auto runtime = MakeRuntime(spec, use_gpu, gpu_index, &on_gpu);
  if (!runtime.ok()) return runtime.status();
  FunctionHostOptions host_options;
  host_options.spec = spec;
  host_options.clock = clock_;
  host_options.start_threads = start_threads_;
  host_options.meter = meter_.ForFunction(spec.name);
  host_options.on_gpu = on_gpu;
  auto host = FunctionHost::Create(host_options, *std::move(runtime),
                                   metrics_.ForFunction(spec.name, kDefaultVersion));
  if (!host.ok()) return host.status();
  host_options.meter->RecordLoad(clock->NowMicros() - load_start_us);
  return host;
}

absl::Status AgentCore::LoadFunction(const FunctionSpec& spec, bool use_gpu, int gpu_index) {
  // Load outside the lock: a model load may take seconds while requests keep flowing.
  auto host = BuildHost(spec, use_gpu, gpu_index);
  if (!host.ok()) return host.status();
  std::shared_ptr<FunctionHost> old;
  {
    absl::MutexLock lock(&mu_);
    std::shared_ptr<FunctionHost>& slot = hosts_[spec.name];
    old = std::move(slot);
    slot = std::shared_ptr<FunctionHost>(*std::move(host));
    failed_.erase(spec.name);
  }
  if (old != nullptr) old->Drain();  // its accepted requests finish; new ones go to the new host
  return absl::OkStatus();
}

absl::Status AgentCore::UnloadFunction(const std::string& name) {
  std::shared_ptr<FunctionHost> old;
  {
    absl::MutexLock lock(&mu_);
    auto it = hosts_.find(name);
    if (it == hosts_.end()) {
      if (failed_.erase(name) > 0) return absl::OkStatus();
      return absl::NotFoundError(absl::StrCat("function '", name, "' is not loaded"));
    }
    old = std::move(it->second);
    hosts_.erase(it);
  }
  // A request that found the host just before it was removed may still reach it and gets
  // Unavailable; everything it accepted is answered before Drain returns.
  old->Drain();
  return absl::OkStatus();
}

std::vector<std::string> AgentCore::LoadedFunctions() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> names;
  for (const auto& [name, host] : hosts_) names.push_back(name);
  return names;
}

std::map<std::string, absl::Status> AgentCore::FailedFunctions() const {
  absl::MutexLock lock(&mu_);
  return failed_;
}

std::shared_ptr<FunctionHost> AgentCore::Host(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = hosts_.find(name);
  return it == hosts_.end() ? nullptr : it->second;
}

AgentCore::~AgentCore() { Drain(); }

void AgentCore::Drain() {
  draining_.store(true, std::memory_order_release);
  std::vector<std::shared_ptr<FunctionHost>> hosts;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [name, host] : hosts_) hosts.push_back(host);
  }
  for (auto& host : hosts) host->Drain();
}

std::string AgentCore::MetricsText() const {
  std::vector<std::shared_ptr<FunctionHost>> hosts;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, host] : hosts_) hosts.push_back(host);
  }
  for (const auto& host : hosts) host->RefreshGauges();
  return metrics_.Serialize() + meter_.PrometheusText();
}

FunctionHost* AgentCore::host_for_test(const std::string& name) { return Host(name).get(); }

ServerMetadata AgentCore::GetServerMetadata() const {
  ServerMetadata md;
  md.name = "ferry";
  md.version = FERRY_VERSION;
  md.extensions = {"binary_tensor_data", "clipper_predict", "metrics"};
  return md;
}

absl::StatusOr<std::shared_ptr<FunctionHost>> AgentCore::Find(const std::string& name,
                                                              const std::string& version) const {
  std::shared_ptr<FunctionHost> host;
  {
    absl::MutexLock lock(&mu_);
    if (auto it = hosts_.find(name); it != hosts_.end()) {
      host = it->second;
    } else if (auto failed = failed_.find(name); failed != failed_.end()) {
      return failed->second;  // known, but not ready: ready, metadata and infer all say why
    }
  }
  if (host == nullptr) {
    return absl::NotFoundError(absl::StrCat("unknown model '", name, "'"));
  }
  if (!version.empty() && version != kDefaultVersion) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' has no version '", version,
                                            "' (versions: ", kDefaultVersion, ")"));
  }
  return host;
}

absl::StatusOr<ModelMetadata> AgentCore::GetModelMetadata(const std::string& name,
                                                          const std::string& version) const {
  auto host = Find(name, version);
  if (!host.ok()) return host.status();
  return (*host)->metadata();
}

absl::StatusOr<std::shared_ptr<const ModelMetadata>> AgentCore::FindModelMetadata(
    const std::string& name, const std::string& version) const {
  auto host = Find(name, version);
  if (!host.ok()) return host.status();
  // Shares ownership of the host: no copy on the request path.
  return std::shared_ptr<const ModelMetadata>(*host, &(*host)->metadata());
}

absl::Status AgentCore::ModelReady(const std::string& name, const std::string& version) const {
  auto host = Find(name, version);
  if (!host.ok()) return host.status();
  if (!IsReady()) return absl::UnavailableError("the agent is stopping");
  return absl::OkStatus();
}

void AgentCore::Infer(std::unique_ptr<InferenceRequest> request, InferDone done) {
  auto host = Find(request->model_name, request->model_version);
  if (!host.ok()) {
    done(host.status());
    return;
  }
  // While draining, the batcher itself answers Unavailable, so accepted work still completes.
  (*host)->Infer(std::move(request), std::move(done));
}

void AgentCore::RecordRejected(const std::string& name, const std::string& version,
                               const absl::Status& status) {
  // Only what the function host would itself count as invalid; a request for an unknown (or
  // failed) function has no function metrics to land on.
  if (!absl::IsInvalidArgument(status)) return;
  if (!Find(name, version).ok()) return;
  metrics_.ForFunction(name, kDefaultVersion)->RecordFailure(FailureReason::kInvalid, 0);
}

}  // namespace ferry::agent
