#include "node-agent/serving_core_impl.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/runtime.h"

namespace ferry::agent {

absl::StatusOr<std::unique_ptr<AgentCore>> AgentCore::Create(const AgentCoreOptions& options) {
  std::unique_ptr<AgentCore> core(new AgentCore());
  for (const FunctionSpec& spec : options.functions) {
    if (core->hosts_.count(spec.name) > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(spec.source, ": function '", spec.name, "' is defined twice"));
    }
    kernels::RuntimeContext context;
    switch (spec.hardware.accelerator) {
      case Accelerator::kGpu:
        if (options.num_gpus == 0) {
          return absl::FailedPreconditionError(
              absl::StrCat(spec.source, ": function '", spec.name,
                           "': spec.hardware.accelerator is gpu but this node has no GPU (",
                           options.gpu_absent_reason, ")"));
        }
        context.use_gpu = true;
        break;
      case Accelerator::kAny:
        context.use_gpu = options.num_gpus > 0;
        break;
      case Accelerator::kCpu:
        break;
    }
    auto runtime = kernels::CreateRuntime(spec, context);
    if (!runtime.ok() && context.use_gpu && spec.hardware.accelerator == Accelerator::kAny) {
      // "any" means the function also runs on a CPU: fall back when the GPU path is missing.
      context.use_gpu = false;
      runtime = kernels::CreateRuntime(spec, context);
    }
    if (!runtime.ok()) return runtime.status();
    FunctionHostOptions host_options;
    host_options.spec = spec;
    host_options.clock = options.clock;
    host_options.start_threads = options.start_threads;
    auto host = FunctionHost::Create(host_options, *std::move(runtime),
                                     core->metrics_.ForFunction(spec.name, kDefaultVersion));
    if (!host.ok()) return host.status();
    core->hosts_.emplace(spec.name, *std::move(host));
  }
  return core;
}

AgentCore::~AgentCore() { Drain(); }

void AgentCore::Drain() {
  draining_.store(true, std::memory_order_release);
  for (auto& [name, host] : hosts_) host->Drain();
}

std::string AgentCore::MetricsText() const {
  for (const auto& [name, host] : hosts_) host->RefreshGauges();
  return metrics_.Serialize();
}

FunctionHost* AgentCore::host_for_test(const std::string& name) {
  auto it = hosts_.find(name);
  return it == hosts_.end() ? nullptr : it->second.get();
}

ServerMetadata AgentCore::GetServerMetadata() const {
  ServerMetadata md;
  md.name = "ferry";
  md.version = FERRY_VERSION;
  md.extensions = {"binary_tensor_data", "clipper_predict", "metrics"};
  return md;
}

absl::StatusOr<FunctionHost*> AgentCore::Find(const std::string& name,
                                              const std::string& version) const {
  auto it = hosts_.find(name);
  if (it == hosts_.end()) {
    return absl::NotFoundError(absl::StrCat("unknown model '", name, "'"));
  }
  if (!version.empty() && version != kDefaultVersion) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' has no version '", version,
                                            "' (versions: ", kDefaultVersion, ")"));
  }
  return it->second.get();
}

absl::StatusOr<ModelMetadata> AgentCore::GetModelMetadata(const std::string& name,
                                                          const std::string& version) const {
  auto host = Find(name, version);
  if (!host.ok()) return host.status();
  return (*host)->metadata();
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

}  // namespace ferry::agent
