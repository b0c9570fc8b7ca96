// One loaded replica of one function: its runtime behind an adaptive batcher, with metrics.
// This is where the agent wires kernels/ (the runtime) to batching/ (the batcher); neither
// knows the other.
#ifndef FERRY_NODE_AGENT_FUNCTION_HOST_H_
#define FERRY_NODE_AGENT_FUNCTION_HOST_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "batching/batcher.h"
#include "ferry/clock.h"
#include "ferry/manifest.h"
#include "kernels/runtime.h"
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
};

// Thread-safe. The destructor drains (every accepted request is answered) and joins.
class FunctionHost {
 public:
  // Takes the runtime. `metrics` is not owned and must outlive the host.
  static absl::StatusOr<std::unique_ptr<FunctionHost>> Create(
      const FunctionHostOptions& options, std::unique_ptr<kernels::Runtime> runtime,
      FunctionMetrics* metrics);
  ~FunctionHost();

  const ModelMetadata& metadata() const { return metadata_; }
  const FunctionSpec& spec() const { return spec_; }

  // Validates, then queues. `done` runs exactly once: inline for rejections, else on a batcher
  // thread. Overload is ResourceExhausted, or OK with is_default when the SLO says
  // onOverload: default-output.
  void Infer(std::unique_ptr<InferenceRequest> request, InferDone done);

  // Stops accepting (Unavailable) and answers everything queued. Blocks. Idempotent.
  void Drain();

  // Copies batcher state that metrics show as gauges (the target batch size) into the metrics;
  // called when metrics are read, so the request path does not pay for it.
  void RefreshGauges();

  // Manual-mode hook for tests (options.start_threads == false).
  batching::Batcher* batcher_for_test() { return batcher_.get(); }

 private:
  class Task;
  class Executor;

  FunctionHost(FunctionSpec spec, std::unique_ptr<kernels::Runtime> runtime,
               FunctionMetrics* metrics, Clock* clock);
  // Answers `request` with the SLO's default output (onOverload: default-output).
  void AnswerDefault(const InferenceRequest& request, const InferDone& done);

  const FunctionSpec spec_;
  std::unique_ptr<kernels::Runtime> runtime_;
  FunctionMetrics* const metrics_;
  Clock* const clock_;
  ModelMetadata metadata_;
  std::string default_output_json_;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<batching::Batcher> batcher_;  // destroyed first (declared last)
};

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_FUNCTION_HOST_H_
