#include "node-agent/serving_core_impl.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cuda/device.h"
#include "cuda/health.h"
#include "ferry/runtime.h"
#include "ferry/runtime_registry.h"

namespace ferry::agent {

namespace {

// Creates `spec`'s runtime, on GPU `gpu_index` when `use_gpu` (falling back to the CPU for
// `any`).
absl::StatusOr<std::unique_ptr<Runtime>> MakeRuntime(const FunctionSpec& spec, bool use_gpu,
                                                     int gpu_index, WeightCache* weight_cache,
                                                     bool* on_gpu, std::string* gpu_error) {
  RuntimeContext context;
  context.use_gpu = use_gpu;
  context.gpu_index = gpu_index;
  context.weight_cache = weight_cache;
  auto runtime = RuntimeRegistry::Global().Create(spec, context);
  if (!runtime.ok() && context.use_gpu && spec.hardware.accelerator == Accelerator::kAny) {
    // "any" means the function also runs on a CPU: fall back when the GPU path is missing.
    *gpu_error = std::string(runtime.status().message());
    context.use_gpu = false;
    runtime = RuntimeRegistry::Global().Create(spec, context);
  }
  *on_gpu = context.use_gpu;
  return runtime;
}

// The weight cache in the Prometheus text format (a handful of node-wide series, so written here
// rather than registered per function like the families in metrics.h).
std::string WeightCacheText(const WeightCache::Stats& s, const WeightCache& cache) {
  return absl::StrCat(
      "# HELP ferry_weight_cache_bytes Prepared weights held in host memory, by whether a loaded "
      "function uses them.\n# TYPE ferry_weight_cache_bytes gauge\n",
      "ferry_weight_cache_bytes{state=\"in_use\"} ", s.bytes - s.idle_bytes, "\n",
      "ferry_weight_cache_bytes{state=\"idle\"} ", s.idle_bytes, "\n",
      "# HELP ferry_weight_cache_budget_bytes Most bytes kept for weights no function uses "
      "(--weight-cache-mib).\n# TYPE ferry_weight_cache_budget_bytes gauge\n",
      "ferry_weight_cache_budget_bytes ", cache.idle_budget_bytes(), "\n",
      "# HELP ferry_weight_cache_lookups_total Weight loads, by whether the cache had them.\n",
      "# TYPE ferry_weight_cache_lookups_total counter\n",
      "ferry_weight_cache_lookups_total{result=\"hit\"} ", s.hits, "\n",
      "ferry_weight_cache_lookups_total{result=\"miss\"} ", s.misses, "\n",
      "# HELP ferry_weight_cache_evictions_total Idle weights dropped to stay within the "
      "budget.\n# TYPE ferry_weight_cache_evictions_total counter\n",
      "ferry_weight_cache_evictions_total ", s.evictions, "\n");
}

// Memory of each GPU this agent may use, as the driver (NVML) reports it at this scrape. Both
// families are always declared, so a CPU-only agent shows them without samples; a GPU whose
// driver does not answer NVML has no sample (no CUDA context is created to ask).
std::string GpuMemoryText(const std::vector<int>& gpus) {
  std::string used =
      "# HELP ferry_gpu_memory_used_bytes Device memory in use on the GPU, by every process "
      "(the driver's count, NVML).\n# TYPE ferry_gpu_memory_used_bytes gauge\n";
  std::string total =
      "# HELP ferry_gpu_memory_total_bytes Device memory of the GPU (NVML).\n"
      "# TYPE ferry_gpu_memory_total_bytes gauge\n";
  for (const int gpu : gpus) {
    const absl::StatusOr<cuda::GpuMemoryInfo> memory = cuda::GetGpuMemory(gpu);
    if (!memory.ok()) continue;
    absl::StrAppend(&used, "ferry_gpu_memory_used_bytes{gpu=\"", gpu, "\"} ", memory->used_bytes,
                    "\n");
    absl::StrAppend(&total, "ferry_gpu_memory_total_bytes{gpu=\"", gpu, "\"} ", memory->total_bytes,
                    "\n");
  }
  return used + total;
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
  core->log_ = options.log;
  core->gpu_absent_reason_ = options.gpu_absent_reason;
  {
    absl::MutexLock lock(&core->mu_);
    core->gpus_ = options.gpus;
    // Callers that know only how many GPUs there are: properties unknown, so unchecked.
    for (int i = static_cast<int>(core->gpus_.size()); i < options.num_gpus; ++i) {
      core->gpus_.push_back(NodeGpu{.index = i});
    }
  }
  core->unloaded_names_kept_ = options.unloaded_names_kept;
  core->weight_cache_ = std::make_unique<WeightCache>(options.weight_cache_bytes);
  for (const FunctionSpec& spec : options.functions) {
    // Where it runs: a GPU that fits it (spread over the node's GPUs), or the CPU.
    absl::StatusOr<GpuPlacement> placement = core->Place(spec, options.gpu_index);
    if (placement.ok() && spec.hardware.accelerator != Accelerator::kCpu) {
      core->Log(absl::StrCat("function '", spec.name, "': ", placement->reason));
    }
    absl::StatusOr<std::unique_ptr<FunctionHost>> host =
        placement.ok() ? core->BuildHost(spec, placement->use_gpu, placement->gpu_index)
                       : absl::StatusOr<std::unique_ptr<FunctionHost>>(placement.status());
    absl::MutexLock lock(&core->mu_);
    if (host.ok()) {
      core->BookGpu(spec.name, **host);
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
  std::string gpu_error;
  auto runtime = MakeRuntime(spec, use_gpu, gpu_index, weight_cache_.get(), &on_gpu, &gpu_error);
  if (!runtime.ok()) return runtime.status();
  if (use_gpu && !on_gpu) {
    Log(absl::StrCat("function '", spec.name, "': accelerator: any runs on the CPU: its GPU ",
                     "path failed on GPU ", gpu_index, ": ", gpu_error));
  }
  FunctionHostOptions host_options;
  host_options.spec = spec;
  host_options.clock = clock_;
  host_options.start_threads = start_threads_;
  host_options.meter = meter_.ForFunction(spec.name);
  host_options.on_gpu = on_gpu;
  host_options.gpu_index = on_gpu ? gpu_index : -1;
  auto host = FunctionHost::Create(host_options, *std::move(runtime),
                                   metrics_.ForFunction(spec.name, kDefaultVersion));
  if (!host.ok()) return host.status();
  host_options.meter->RecordLoad(clock->NowMicros() - load_start_us);
  return host;
}

absl::Status AgentCore::LoadFunction(const FunctionSpec& spec, bool use_gpu, int gpu_index) {
  if (use_gpu) {
    // The control plane chose the GPU; the node still enforces gpuMemoryMiB and
    // minComputeCapability against what it knows is on it.
    absl::StatusOr<GpuPlacement> placement = Place(spec, gpu_index);
    if (!placement.ok()) return placement.status();
    Log(absl::StrCat("function '", spec.name, "': ", placement->reason));
    use_gpu = placement->use_gpu;
  }
  // Load outside the lock: a model load may take seconds while requests keep flowing.
  auto host = BuildHost(spec, use_gpu, gpu_index);
  if (!host.ok()) return host.status();
  std::shared_ptr<FunctionHost> old;
  {
    absl::MutexLock lock(&mu_);
    std::shared_ptr<FunctionHost>& slot = hosts_[spec.name];
    old = std::move(slot);
    BookGpu(spec.name, **host);
    slot = std::shared_ptr<FunctionHost>(*std::move(host));
    failed_.erase(spec.name);
    if (unloaded_.erase(spec.name) > 0) {
      unloaded_order_.erase(std::find(unloaded_order_.begin(), unloaded_order_.end(), spec.name));
    }
  }
  if (old != nullptr) {
    old->Drain();  // its accepted requests finish; new ones go to the new host
    old.reset();
    weight_cache_->Trim();
  }
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
    ReleaseGpu(name);
    if (unloaded_names_kept_ > 0 && unloaded_.insert(name).second) {
      unloaded_order_.push_back(name);
      while (unloaded_order_.size() > static_cast<size_t>(unloaded_names_kept_)) {
        unloaded_.erase(unloaded_order_.front());
        unloaded_order_.pop_front();
      }
    }
  }
  // A request that found the host just before it was removed may still reach it and gets
  // Unavailable; everything it accepted is answered before Drain returns.
  old->Drain();
  // The runtime goes with the last reference (a request still holding the host keeps it a
  // moment longer; the next trim sees it idle). Its weights stay cached within the budget.
  old.reset();
  weight_cache_->Trim();
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
  std::vector<int> gpus;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, host] : hosts_) hosts.push_back(host);
    for (const NodeGpu& g : gpus_) gpus.push_back(g.index);
  }
  for (const auto& host : hosts) host->RefreshGauges();
  return metrics_.Serialize() + meter_.PrometheusText() +
         WeightCacheText(weight_cache_->stats(), *weight_cache_) + cuda::GpuHealthPrometheusText() +
         GpuMemoryText(gpus);
}

FunctionHost* AgentCore::host_for_test(const std::string& name) { return Host(name).get(); }

bool AgentCore::IsLive() const { return cuda::AllGpusHealthy(); }

absl::StatusOr<GpuPlacement> AgentCore::Place(const FunctionSpec& spec, int pinned_gpu) const {
  std::vector<NodeGpu> gpus;
  {
    absl::MutexLock lock(&mu_);
    gpus = gpus_;
    // A function replacing one of its name frees that one's booking when it takes its place.
    if (auto it = gpu_bookings_.find(spec.name); it != gpu_bookings_.end()) {
      for (NodeGpu& g : gpus) {
        if (g.index != it->second.gpu) continue;
        g.functions -= 1;
        g.reserved_bytes -= it->second.bytes;
      }
    }
  }
  for (NodeGpu& g : gpus) g.healthy = cuda::GpuHealth(g.index).ok();
  GpuPlacementRequest request;
  request.where = absl::StrCat(spec.source, ": function '", spec.name, "'");
  request.hardware = spec.hardware;
  request.pinned_gpu = pinned_gpu;
  return PlaceOnNode(request, gpus, gpu_absent_reason_);
}

void AgentCore::BookGpu(const std::string& name, const FunctionHost& host) {
  ReleaseGpu(name);
  if (!host.on_gpu()) return;
  const GpuBooking booking{.gpu = host.gpu_index(),
                           .bytes = host.spec().hardware.gpu_memory_mib * (int64_t{1} << 20)};
  for (NodeGpu& g : gpus_) {
    if (g.index != booking.gpu) continue;
    g.functions += 1;
    g.reserved_bytes += booking.bytes;
  }
  gpu_bookings_[name] = booking;
}

void AgentCore::ReleaseGpu(const std::string& name) {
  auto it = gpu_bookings_.find(name);
  if (it == gpu_bookings_.end()) return;
  for (NodeGpu& g : gpus_) {
    if (g.index != it->second.gpu) continue;
    g.functions -= 1;
    g.reserved_bytes -= it->second.bytes;
  }
  gpu_bookings_.erase(it);
}

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
    } else if (unloaded_.contains(name)) {
      // Unavailable (503), not NotFound (404): the function exists in the cluster, this node
      // just no longer serves it (scaled to zero or moved). A retry through the gateway works.
      return absl::UnavailableError(absl::StrCat(
          "function '", name,
          "' is no longer served on this node (scaled down or moved); send requests through "
          "the gateway, which routes them to a replica or starts one"));
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
  if ((*host)->on_gpu()) {
    // A poisoned CUDA context never recovers in this process: not ready (503) until restarted.
    if (absl::Status gpu = cuda::GpuHealth((*host)->gpu_index()); !gpu.ok()) {
      return absl::UnavailableError(absl::StrCat("function '", name, "': ", gpu.message()));
    }
  }
  return absl::OkStatus();
}

void AgentCore::Infer(std::unique_ptr<InferenceRequest> request, InferDone done) {
  auto host = Find(request->model_name, request->model_version);
  if (!host.ok()) {
    done(host.status());
    return;
  }
  if ((*host)->on_gpu()) {
    if (absl::Status gpu = cuda::GpuHealth((*host)->gpu_index()); !gpu.ok()) {
      done(absl::UnavailableError(
          absl::StrCat("function '", request->model_name, "': ", gpu.message())));
      return;
    }
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
