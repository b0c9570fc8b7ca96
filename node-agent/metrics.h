// Prometheus metrics of the node agent (prometheus-cpp). Names follow the meaning of Triton's
// nv_inference_* metrics with a ferry_ prefix, labelled by model (function) and version.
#ifndef FERRY_NODE_AGENT_METRICS_H_
#define FERRY_NODE_AGENT_METRICS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace ferry::agent {

// Why a request failed; the `reason` label of ferry_inference_request_failure.
enum class FailureReason {
  kInvalid,      // bad input (400)
  kOverload,     // queue full or deadline cannot be met (429)
  kTimeout,      // deadline passed while queued (504)
  kUnavailable,  // stopping (503)
  kInternal,     // the runtime failed
};

class AgentMetrics;

// Stages of a batch through a pipelined (staged, GPU) runtime; the `stage` label of
// ferry_pipeline_stage_duration_us. kQueue is per request (Submit -> batch departure); the others
// are per batch: kPack (CPU, into pinned memory), kH2d, kCompute, kD2h (device-measured),
// kScatter (results into the responses).
enum class PipelineStage { kQueue, kPack, kH2d, kCompute, kD2h, kScatter };
inline constexpr int kPipelineStages = 6;

// One function's metrics. Pointers are owned by the registry and live as long as AgentMetrics.
// All methods are thread-safe (prometheus-cpp metrics are atomic).
class FunctionMetrics {
 public:
  void RecordSuccess(int64_t request_us, int64_t queue_us, int64_t compute_us);
  void RecordFailure(FailureReason reason, int64_t request_us);
  // One executed batch of `rows` batch units. (Compute time is charged per request in
  // RecordSuccess, as Triton's compute duration is.)
  void RecordBatch(int64_t rows);
  void SetTargetBatchSize(int64_t size);
  void AddPending(int64_t delta);
  // Requests answered with the SLO's default output under overload.
  void RecordDefaultOutput();

  // Pipelined functions only: adds this function's per-stage, device-busy and busy-fraction
  // series (other functions do not carry them). Idempotent; until called, the three methods below
  // do nothing.
  void EnablePipeline();
  void RecordStage(PipelineStage stage, int64_t us);
  // Time the function's device spent on its batches (at least one batch between launch and
  // completion), us.
  void AddDeviceBusy(int64_t us);
  // Fraction of wall time the device was busy over the last refresh interval, in [0, 1].
  void SetDeviceBusyFraction(double fraction);

 private:
  friend class AgentMetrics;
  FunctionMetrics() = default;

  // Set by AgentMetrics::ForFunction, for EnablePipeline.
  AgentMetrics* agent_ = nullptr;
  std::string model_, version_;
  std::once_flag pipeline_once_;
  std::atomic<bool> pipeline_{false};  // the pointers below are set (release/acquire)
  prometheus::Histogram* stage_us_[kPipelineStages] = {};
  prometheus::Counter* device_busy_us_ = nullptr;
  prometheus::Gauge* device_busy_fraction_ = nullptr;

  prometheus::Counter* success_ = nullptr;
  prometheus::Counter* failure_[5] = {};
  prometheus::Counter* default_output_ = nullptr;
  prometheus::Counter* inference_count_ = nullptr;
  prometheus::Counter* exec_count_ = nullptr;
  prometheus::Counter* request_duration_us_ = nullptr;
  prometheus::Counter* queue_duration_us_ = nullptr;
  prometheus::Counter* compute_infer_duration_us_ = nullptr;
  prometheus::Histogram* batch_size_ = nullptr;
  prometheus::Histogram* request_latency_us_ = nullptr;
  prometheus::Gauge* target_batch_size_ = nullptr;
  prometheus::Gauge* pending_ = nullptr;
};

// Owns the registry. Thread-safe.
class AgentMetrics {
 public:
  friend class FunctionMetrics;  // EnablePipeline adds its series to the families
  AgentMetrics();
  // Returns the metrics of one function, creating them on first use; never null; stable address.
  FunctionMetrics* ForFunction(const std::string& model, const std::string& version);
  // The Prometheus text exposition format (version 0.0.4).
  std::string Serialize() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* success_family_;
  prometheus::Family<prometheus::Counter>* failure_family_;
  prometheus::Family<prometheus::Counter>* default_output_family_;
  prometheus::Family<prometheus::Counter>* count_family_;
  prometheus::Family<prometheus::Counter>* exec_family_;
  prometheus::Family<prometheus::Counter>* request_us_family_;
  prometheus::Family<prometheus::Counter>* queue_us_family_;
  prometheus::Family<prometheus::Counter>* compute_us_family_;
  prometheus::Family<prometheus::Histogram>* batch_size_family_;
  prometheus::Family<prometheus::Histogram>* latency_family_;
  prometheus::Family<prometheus::Gauge>* target_family_;
  prometheus::Family<prometheus::Gauge>* pending_family_;
  prometheus::Family<prometheus::Histogram>* stage_family_;
  prometheus::Family<prometheus::Counter>* device_busy_family_;
  prometheus::Family<prometheus::Gauge>* busy_fraction_family_;

  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<FunctionMetrics>> functions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_METRICS_H_
