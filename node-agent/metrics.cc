#include "node-agent/metrics.h"

#include <sstream>

#include "prometheus/text_serializer.h"

namespace ferry::agent {
namespace {

constexpr const char* kReasonNames[] = {"invalid", "overload", "timeout", "unavailable",
                                        "internal"};
// Indexed by PipelineStage.
constexpr const char* kStageNames[kPipelineStages] = {"queue",   "pack", "h2d",
                                                      "compute", "d2h",  "scatter"};

prometheus::Histogram::BucketBoundaries BatchBuckets() {
  return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};
}

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000};
}

}  // namespace

void FunctionMetrics::RecordSuccess(int64_t request_us, int64_t queue_us, int64_t compute_us) {
  success_->Increment();
  request_duration_us_->Increment(static_cast<double>(request_us));
  queue_duration_us_->Increment(static_cast<double>(queue_us));
  // Per request, like Triton's compute duration: each request is charged its batch's time.
  compute_infer_duration_us_->Increment(static_cast<double>(compute_us));
  request_latency_us_->Observe(static_cast<double>(request_us));
}

void FunctionMetrics::RecordFailure(FailureReason reason, int64_t request_us) {
  failure_[static_cast<int>(reason)]->Increment();
  request_duration_us_->Increment(static_cast<double>(request_us));
}

void FunctionMetrics::RecordBatch(int64_t rows) {
  exec_count_->Increment();
  inference_count_->Increment(static_cast<double>(rows));
  batch_size_->Observe(static_cast<double>(rows));
}

void FunctionMetrics::SetTargetBatchSize(int64_t size) {
  target_batch_size_->Set(static_cast<double>(size));
}

void FunctionMetrics::AddPending(int64_t delta) { pending_->Increment(static_cast<double>(delta)); }

void FunctionMetrics::RecordDefaultOutput() { default_output_->Increment(); }

void FunctionMetrics::EnablePipeline() {
  std::call_once(pipeline_once_, [this] {
    const prometheus::Labels labels = {{"model", model_}, {"version", version_}};
    for (int i = 0; i < kPipelineStages; ++i) {
      prometheus::Labels l = labels;
      l["stage"] = kStageNames[i];
      stage_us_[i] = &agent_->stage_family_->Add(l, LatencyBuckets());
    }
    device_busy_us_ = &agent_->device_busy_family_->Add(labels);
    device_busy_fraction_ = &agent_->busy_fraction_family_->Add(labels);
    pipeline_.store(true, std::memory_order_release);
  });
}

void FunctionMetrics::RecordStage(PipelineStage stage, int64_t us) {
  if (!pipeline_.load(std::memory_order_acquire) || us < 0) return;
  stage_us_[static_cast<int>(stage)]->Observe(static_cast<double>(us));
}

void FunctionMetrics::AddDeviceBusy(int64_t us) {
  if (!pipeline_.load(std::memory_order_acquire) || us <= 0) return;
  device_busy_us_->Increment(static_cast<double>(us));
}

void FunctionMetrics::SetDeviceBusyFraction(double fraction) {
  if (!pipeline_.load(std::memory_order_acquire)) return;
  device_busy_fraction_->Set(fraction);
}

AgentMetrics::AgentMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  auto& r = *registry_;
  success_family_ = &prometheus::BuildCounter()
                         .Name("ferry_inference_request_success")
                         .Help("Requests answered by the function (successful inferences)")
                         .Register(r);
  failure_family_ = &prometheus::BuildCounter()
                         .Name("ferry_inference_request_failure")
                         .Help("Requests that failed, by reason")
                         .Register(r);
  default_output_family_ = &prometheus::BuildCounter()
                                .Name("ferry_inference_default_output")
                                .Help("Requests answered with the SLO's default output")
                                .Register(r);
  count_family_ = &prometheus::BuildCounter()
                       .Name("ferry_inference_count")
                       .Help("Inferences performed, in batch units (rows)")
                       .Register(r);
  exec_family_ = &prometheus::BuildCounter()
                      .Name("ferry_inference_exec_count")
                      .Help("Batches executed")
                      .Register(r);
  request_us_family_ = &prometheus::BuildCounter()
                            .Name("ferry_inference_request_duration_us")
                            .Help("Cumulative end-to-end request time inside the agent, us")
                            .Register(r);
  queue_us_family_ = &prometheus::BuildCounter()
                          .Name("ferry_inference_queue_duration_us")
                          .Help("Cumulative time requests waited in the batch queue, us")
                          .Register(r);
  compute_us_family_ = &prometheus::BuildCounter()
                            .Name("ferry_inference_compute_infer_duration_us")
                            .Help("Cumulative model execution time charged to requests, us")
                            .Register(r);
  batch_size_family_ = &prometheus::BuildHistogram()
                            .Name("ferry_inference_batch_size")
                            .Help("Batch size (rows) of executed batches")
                            .Register(r);
  latency_family_ = &prometheus::BuildHistogram()
                         .Name("ferry_inference_request_latency_us")
                         .Help("End-to-end latency of successful requests inside the agent, us")
                         .Register(r);
  target_family_ = &prometheus::BuildGauge()
                        .Name("ferry_inference_target_batch_size")
                        .Help("Current adaptive target batch size")
                        .Register(r);
  pending_family_ = &prometheus::BuildGauge()
                         .Name("ferry_inference_pending_request_count")
                         .Help("Requests accepted and not yet answered")
                         .Register(r);
  stage_family_ = &prometheus::BuildHistogram()
                       .Name("ferry_pipeline_stage_duration_us")
                       .Help(
                           "Pipelined functions: time in each stage, us (queue per request; "
                           "pack, h2d, compute, d2h, scatter per batch)")
                       .Register(r);
  device_busy_family_ = &prometheus::BuildCounter()
                             .Name("ferry_device_busy_duration_us")
                             .Help(
                                 "Pipelined functions: cumulative time the device had at least "
                                 "one of the function's batches, us")
                             .Register(r);
  busy_fraction_family_ = &prometheus::BuildGauge()
                               .Name("ferry_device_busy_fraction")
                               .Help(
                                   "Pipelined functions: fraction of wall time the device was "
                                   "busy since the previous metrics read")
                               .Register(r);
}

FunctionMetrics* AgentMetrics::ForFunction(const std::string& model, const std::string& version) {
  absl::MutexLock lock(&mu_);
  const std::string key = model + "\n" + version;
  auto it = functions_.find(key);
  if (it != functions_.end()) return it->second.get();
  auto m = std::unique_ptr<FunctionMetrics>(new FunctionMetrics());
  const prometheus::Labels labels = {{"model", model}, {"version", version}};
  m->success_ = &success_family_->Add(labels);
  for (int i = 0; i < 5; ++i) {
    prometheus::Labels l = labels;
    l["reason"] = kReasonNames[i];
    m->failure_[i] = &failure_family_->Add(l);
  }
  m->default_output_ = &default_output_family_->Add(labels);
  m->inference_count_ = &count_family_->Add(labels);
  m->exec_count_ = &exec_family_->Add(labels);
  m->request_duration_us_ = &request_us_family_->Add(labels);
  m->queue_duration_us_ = &queue_us_family_->Add(labels);
  m->compute_infer_duration_us_ = &compute_us_family_->Add(labels);
  m->batch_size_ = &batch_size_family_->Add(labels, BatchBuckets());
  m->request_latency_us_ = &latency_family_->Add(labels, LatencyBuckets());
  m->target_batch_size_ = &target_family_->Add(labels);
  m->pending_ = &pending_family_->Add(labels);
  m->agent_ = this;
  m->model_ = model;
  m->version_ = version;
  FunctionMetrics* raw = m.get();
  functions_.emplace(key, std::move(m));
  return raw;
}

std::string AgentMetrics::Serialize() const {
  prometheus::TextSerializer serializer;
  std::ostringstream out;
  serializer.Serialize(out, registry_->Collect());
  return out.str();
}

}  // namespace ferry::agent
