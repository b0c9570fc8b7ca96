// One loaded replica of one function: its runtime behind an adaptive batcher, with metrics.
// This is where the agent wires kernels/ (the runtime) to batching/ (the batcher); neither
// knows the other.
#ifndef FERRY_NODE_AGENT_FUNCTION_HOST_H_
#define FERRY_NODE_AGENT_FUNCTION_HOST_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "batching/batcher.h"
#include "batching/pipeline.h"
#include "ferry/clock.h"
#include "ferry/manifest.h"
#include "ferry/runtime.h"
#include "ferry/signature.h"
#include "node-agent/meter.h"
#include "node-agent/metrics.h"
#include "node-agent/serving_core.h"

namespace ferry::agent {

// The model version every function reports; requests may name it or leave it empty.
inline constexpr char kDefaultVersion[] = "1";

struct FunctionHostOptions {
  FunctionSpec spec;
  Clock* clock = nullptr;  // not owned; nullptr = RealClock
  // false: the batcher starts no threads and the caller drives it with RunOnce() (tests).
  bool start_threads = true;
  // Pay-per-use metering (node-agent/meter.h): not owned, must outlive the host; nullptr = none.
  FunctionMeter* meter = nullptr;
  // The runtime executes on a GPU: its busy time is metered as GPU-seconds, else CPU-seconds.
  bool on_gpu = false;
  // The CUDA device it runs on when on_gpu: a failed batch checks that GPU's context
  // (cuda::CheckGpuAfterError), and readiness follows its health.
  int gpu_index = -1;
};

// Thread-safe. The destructor drains (every accepted request is answered) and joins.
class FunctionHost {
 public:
  // Takes the runtime. `metrics` is not owned and must outlive the host.
  static absl::StatusOr<std::unique_ptr<FunctionHost>> Create(const FunctionHostOptions& options,
                                                              std::unique_ptr<Runtime> runtime,
                                                              FunctionMetrics* metrics);
  ~FunctionHost();

  const ModelMetadata& metadata() const { return metadata_; }
  const FunctionSpec& spec() const { return spec_; }
  bool on_gpu() const { return on_gpu_; }
  int gpu_index() const { return gpu_index_; }

  // Validates, then queues. `done` runs exactly once: inline for rejections, else on a batcher
  // thread. Overload is ResourceExhausted, or OK with is_default when the SLO says
  // onOverload: default-output.
  void Infer(std::unique_ptr<InferenceRequest> request, InferDone done);
  // Infer for the agent's own requests (profiling): served the same way, but their share of a
  // batch's execution time is metered as overhead, not charged, and they are not counted.
  void InferUnmetered(std::unique_ptr<InferenceRequest> request, InferDone done);

  // Stops accepting (Unavailable) and answers everything queued. Blocks. Idempotent.
  void Drain();

  // Load for the control plane's autoscaler: requests that arrived from clients (not the
  // agent's own, unmetered ones) since the host was created, those accepted and not yet
  // answered, and the requests (of any kind) waiting in the queue. Thread-safe, non-blocking.
  struct Load {
    int64_t arrived = 0;
    int64_t in_flight = 0;
    int64_t queued = 0;
  };
  Load load() const;

  // Copies batcher state that metrics show as gauges (the target batch size) into the metrics;
  // called when metrics are read, so the request path does not pay for it.
  void RefreshGauges();

  // Manual-mode hook for tests (options.start_threads == false).
  batching::Batcher* batcher_for_test() { return batcher_.get(); }
  // The pipeline when the runtime is staged (Runtime::staged()), else nullptr. A staged runtime's
  // batches complete on the pipeline's own thread even in manual mode (a device signals
  // completion from its driver's thread, where no CPU stage may run).
  const batching::Pipeline* pipeline() const { return pipeline_.get(); }

 private:
  class Task;
  class Executor;
  class StagedExecutor;

  FunctionHost(FunctionSpec spec, std::unique_ptr<Runtime> runtime, FunctionMetrics* metrics,
               Clock* clock, FunctionMeter* meter, bool on_gpu);
  void Submit(std::unique_ptr<InferenceRequest> request, InferDone done, bool metered);
  // Answers `request` with the SLO's default output (onOverload: default-output).
  void AnswerDefault(const InferenceRequest& request, const InferDone& done);
  // Metrics, metering and GPU health after one pipelined batch (the pipeline's scatter thread).
  void OnPipelineBatch(const batching::PipelineBatchTimes& times,
                       absl::Span<batching::Task* const> batch);

  const FunctionSpec spec_;
  std::unique_ptr<Runtime> runtime_;
  FunctionMetrics* const metrics_;
  Clock* const clock_;
  FunctionMeter* const meter_;  // may be null
  const bool on_gpu_;
  int gpu_index_ = -1;
  ModelMetadata metadata_;
  std::string default_output_json_;
  std::unique_ptr<Executor> executor_;
  // A staged runtime's batches: stage_ adapts it to the pipeline; both outlive the batcher.
  std::unique_ptr<StagedExecutor> stage_;
  std::unique_ptr<batching::Pipeline> pipeline_;
  // The device-busy fraction gauge is the busy time over wall time between two reads.
  absl::Mutex gauge_mu_;
  int64_t gauge_busy_us_ ABSL_GUARDED_BY(gauge_mu_) = 0;
  int64_t gauge_elapsed_us_ ABSL_GUARDED_BY(gauge_mu_) = 0;
  std::atomic<int64_t> arrived_{0};
  std::atomic<int64_t> in_flight_{0};
  std::unique_ptr<batching::Batcher> batcher_;  // destroyed first (declared last)
};

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_FUNCTION_HOST_H_
