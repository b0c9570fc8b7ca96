// The node agent's ServingCore: the set of loaded functions (one FunctionHost each), health,
// metadata and routing of inference requests to them.
#ifndef FERRY_NODE_AGENT_SERVING_CORE_IMPL_H_
#define FERRY_NODE_AGENT_SERVING_CORE_IMPL_H_

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "ferry/clock.h"
#include "ferry/manifest.h"
#include "ferry/weight_cache.h"
#include "node-agent/function_host.h"
#include "node-agent/gpu_placement.h"
#include "node-agent/meter.h"
#include "node-agent/metrics.h"
#include "node-agent/serving_core.h"

namespace ferry::agent {

struct AgentCoreOptions {
  std::vector<FunctionSpec> functions;
  Clock* clock = nullptr;  // not owned; nullptr = RealClock
  bool start_threads = true;
  // GPUs this node may use (from cuda::ListGpus); empty = CPU only. `gpu_absent_reason` says
  // why there are none, for messages.
  int num_gpus = 0;
  std::string gpu_absent_reason;
  // The GPUs' properties (node-agent/gpu_placement.h; main fills it from cuda::ListGpus, which
  // creates no CUDA context). When empty but num_gpus > 0, GPUs 0..num_gpus-1 with unknown
  // properties (gpuMemoryMiB and minComputeCapability are then not checked).
  std::vector<NodeGpu> gpus;
  // >= 0: every GPU function runs on this CUDA device ordinal (--gpu-index); -1 (default):
  // functions are spread over the GPUs that fit them (PlaceOnNode).
  int gpu_index = -1;
  // Where placement decisions and CPU fallbacks are logged (one line each); null = nowhere.
  std::function<void(const std::string&)> log;
  // false (default): a function whose runtime fails to load (a broken plugin, `accelerator:
  // gpu` on a node without one, a runtime this build lacks) is kept as failed: its ready,
  // metadata and infer calls answer Unavailable with the load error and the others serve.
  // true: Create fails on the first such error (ferry-agent --exit-on-load-error).
  bool exit_on_load_error = false;
  // Host memory kept for the prepared weights of functions no longer loaded, so that a function
  // scaled to zero (or moved away) and loaded again skips reading and preparing them
  // (ferry/weight_cache.h); 0 keeps none. Weights in use never count against it.
  int64_t weight_cache_bytes = 0;
  // How many unloaded function names are remembered, so that a client calling this node directly
  // for a function scaled away gets 503 "not on this node any more" rather than 404 "unknown".
  int unloaded_names_kept = 4096;
};

// Thread-safe. Standalone mode fixes the functions at Create; under a control plane they are
// loaded and unloaded while serving (LoadFunction / UnloadFunction). Each function's host is held
// by shared_ptr, so a request that found it keeps it alive until it is answered, even when the
// function is unloaded or replaced meanwhile.
class AgentCore final : public ServingCore {
 public:
  // Loads every function: creates its runtime and batcher. Two functions of one name fail it
  // (InvalidArgument). A function that fails to load is kept as failed (FailedFunctions) unless
  // options.exit_on_load_error, which returns the first such error (naming the manifest and
  // function) and leaves nothing serving.
  static absl::StatusOr<std::unique_ptr<AgentCore>> Create(const AgentCoreOptions& options);
  ~AgentCore() override;

  // false once a GPU's CUDA context is poisoned (cuda/health.h): only a new process recovers.
  bool IsLive() const override;
  bool IsReady() const override { return !draining_.load(std::memory_order_acquire); }
  ServerMetadata GetServerMetadata() const override;
  absl::StatusOr<std::shared_ptr<const ModelMetadata>> FindModelMetadata(
      const std::string& name, const std::string& version) const override;
  absl::StatusOr<ModelMetadata> GetModelMetadata(const std::string& name,
                                                 const std::string& version) const override;
  absl::Status ModelReady(const std::string& name, const std::string& version) const override;
  void Infer(std::unique_ptr<InferenceRequest> request, InferDone done) override;
  std::vector<std::string> ListModels() const override { return LoadedFunctions(); }
  void RecordRejected(const std::string& name, const std::string& version,
                      const absl::Status& status) override;

  // Stops accepting (ready turns false, new requests get Unavailable) and answers everything
  // accepted. Blocks until done. Idempotent.
  void Drain();

  // Loads `spec` (creates its runtime and batcher; blocks while the model loads) and then
  // serves it under spec.name, replacing a loaded function of that name: requests already
  // accepted by the old one finish there, and a failed load of that name is forgotten.
  // `use_gpu`: run on GPU `gpu_index` (a CUDA device ordinal; when the runtime has a GPU path);
  // false runs on CPU. On error nothing changes.
  absl::Status LoadFunction(const FunctionSpec& spec, bool use_gpu, int gpu_index = 0);
  // Stops routing to `name` (new requests get Unavailable, "no longer served on this node": a
  // client that called this node directly retries through the gateway), then blocks until every
  // request it accepted is answered; a failed function is just forgotten. NotFound when it is
  // neither.
  absl::Status UnloadFunction(const std::string& name);
  // The loaded functions' names, sorted.
  std::vector<std::string> LoadedFunctions() const;
  // The functions that failed to load at Create, by name, with their errors (Unavailable,
  // "function 'x' failed to load: <reason>").
  std::map<std::string, absl::Status> FailedFunctions() const;
  // The host serving `name`, or nullptr.
  std::shared_ptr<FunctionHost> Host(const std::string& name) const;

  // The Prometheus text of every function's metrics, gauges refreshed first.
  std::string MetricsText() const;
  // Pay-per-use metering of every function loaded since the agent started (node-agent/meter.h).
  const Meter& meter() const { return meter_; }
  // The node's cache of prepared weights (never null).
  const WeightCache& weight_cache() const { return *weight_cache_; }
  // For tests in manual batching mode.
  FunctionHost* host_for_test(const std::string& name);

 private:
  AgentCore() = default;
  // Creates `spec`'s runtime and host (blocks while the model loads) and records the load.
  absl::StatusOr<std::unique_ptr<FunctionHost>> BuildHost(const FunctionSpec& spec, bool use_gpu,
                                                          int gpu_index);
  absl::StatusOr<std::shared_ptr<FunctionHost>> Find(const std::string& name,
                                                     const std::string& version) const;
  // Where `spec` runs on this node: PlaceOnNode over gpus_ (only `pinned_gpu` when >= 0).
  absl::StatusOr<GpuPlacement> Place(const FunctionSpec& spec, int pinned_gpu) const;
  // Books what `host` (loaded as `name`) holds on its GPU, releasing what the previous function
  // of that name held; Release forgets it (unload).
  void BookGpu(const std::string& name, const FunctionHost& host)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseGpu(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Log(const std::string& line) const {
    if (log_) log_(line);
  }

  AgentMetrics metrics_;
  Meter meter_;
  Clock* clock_ = nullptr;
  bool start_threads_ = true;
  int unloaded_names_kept_ = 0;
  std::unique_ptr<WeightCache> weight_cache_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<FunctionHost>> hosts_ ABSL_GUARDED_BY(mu_);
  // Functions that failed to load and are not (re)loaded since; never also in hosts_.
  std::map<std::string, absl::Status> failed_ ABSL_GUARDED_BY(mu_);
  // Functions unloaded and not loaded since (bounded, oldest forgotten first); never in hosts_.
  std::set<std::string> unloaded_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> unloaded_order_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> draining_{false};
  // GPU placement (gpu_placement.h): the node's GPUs with what is booked on them, and each loaded
  // GPU function's booking.
  std::function<void(const std::string&)> log_;
  std::string gpu_absent_reason_;
  std::vector<NodeGpu> gpus_ ABSL_GUARDED_BY(mu_);
  struct GpuBooking {
    int gpu = 0;
    int64_t bytes = 0;
  };
  std::map<std::string, GpuBooking> gpu_bookings_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_SERVING_CORE_IMPL_H_
