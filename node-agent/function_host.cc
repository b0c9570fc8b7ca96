#include "node-agent/function_host.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda/health.h"
#include "ferry/staged_runtime.h"

namespace ferry::agent {
namespace {

// Batches predicted to take at most this long run on the thread that submitted them (an HTTP
// or gRPC thread) when an executor is free: for CPU functions that take microseconds, the two
// thread hand-offs would cost more than the work. Longer batches always go to batcher threads.
constexpr int64_t kInlineMaxExecUs = 100;
// Longest timeout a request can ask for (1 day); see FunctionHost::Infer.
constexpr int64_t kMaxTimeoutUs = int64_t{86'400} * 1'000'000;

batching::Policy ToPolicy(BatchPolicy p) {
  switch (p) {
    case BatchPolicy::kFixed:
      return batching::Policy::kFixed;
    case BatchPolicy::kOff:
      return batching::Policy::kOff;
    case BatchPolicy::kAimd:
      break;
  }
  return batching::Policy::kAimd;
}

// AIMD steers the batch execution time; the queue delay is spent before execution, so the
// execution budget is the SLO minus that delay (but never less than half the SLO, so a large
// delay setting cannot starve batching).
int64_t BatchLatencyTargetUs(const FunctionSpec& spec) {
  const int64_t slo_us = spec.slo.latency_target_us();
  if (slo_us <= 0) return 0;
  return std::max(slo_us / 2, slo_us - spec.batching.max_queue_delay_us);
}

// What a queued request holds: its tensors' payloads (BYTES: the bytes plus one offset each).
int64_t PayloadBytes(const InferenceRequest& request) {
  int64_t bytes = 0;
  for (const Tensor& t : request.inputs) {
    bytes += static_cast<int64_t>(t.data.size() + t.bytes.total_bytes() +
                                  t.bytes.size() * sizeof(size_t));
  }
  return bytes;
}

}  // namespace

class FunctionHost::Task final : public batching::Task {
 public:
  Task(FunctionHost* host, std::unique_ptr<InferenceRequest> request, InferDone done, int64_t cost,
       int64_t tokens, int64_t deadline_us, int64_t start_us, bool metered)
      : host_(host),
        request_(std::move(request)),
        done_(std::move(done)),
        cost_(cost),
        tokens_(tokens),
        bytes_(PayloadBytes(*request_)),
        deadline_us_(deadline_us),
        start_us_(start_us),
        metered_(metered) {}

  int64_t cost() const override { return cost_; }
  // Runtime::Cost: tokens for text runtimes, counted against batching.maxBatchTokens.
  int64_t tokens() const override { return tokens_; }
  int64_t size_bytes() const override { return bytes_; }
  int64_t deadline_us() const override { return deadline_us_; }
  // The request's KServe "priority" parameter orders it within the function's queue.
  int64_t priority() const override { return request_->priority; }
  const InferenceRequest& request() const { return *request_; }
  bool metered() const { return metered_; }
  InferenceResponse* response() { return &response_; }

  void Finish(absl::Status status, const batching::TaskTiming& timing) override {
    FunctionMetrics* metrics = host_->metrics_;
    metrics->AddPending(-1);
    if (metered_) host_->in_flight_.fetch_sub(1, std::memory_order_relaxed);
    const int64_t request_us = host_->clock_->NowMicros() - start_us_;
    if (metered_ && timing.batch_tasks > 0 && host_->meter_ != nullptr) {
      host_->meter_->RecordLatency(request_us);  // it ran, so it was charged
    }
    if (status.ok()) {
      response_.model_name = host_->spec_.name;
      response_.model_version = kDefaultVersion;
      response_.id = request_->id;
      if (!request_->outputs.empty()) {
        // Keep only the requested outputs, in the order they were asked for (validated
        // earlier, so each exists).
        std::vector<Tensor> kept;
        kept.reserve(request_->outputs.size());
        for (const RequestedOutput& want : request_->outputs) {
          for (Tensor& t : response_.outputs) {
            if (t.name == want.name) {
              kept.push_back(std::move(t));
              break;
            }
          }
        }
        response_.outputs = std::move(kept);
      }
      metrics->RecordSuccess(request_us, timing.queue_us, timing.compute_us);
      // A pipelined function's per-stage series start with the queue (a no-op otherwise).
      metrics->RecordStage(PipelineStage::kQueue, timing.queue_us);
      done_(std::move(response_));
      return;
    }
    const bool admission = timing.rejected_at_submit &&
                           (absl::IsResourceExhausted(status) || absl::IsDeadlineExceeded(status));
    if (admission) {
      if (host_->spec_.slo.on_overload == OverloadAction::kDefaultOutput) {
        host_->AnswerDefault(*request_, done_);
        return;
      }
      metrics->RecordFailure(FailureReason::kOverload, request_us);
      done_(absl::ResourceExhaustedError(
          absl::StrCat("function '", host_->spec_.name, "' is overloaded: ", status.message())));
      return;
    }
    FailureReason reason = FailureReason::kInternal;
    if (absl::IsDeadlineExceeded(status)) {
      reason = FailureReason::kTimeout;
    } else if (absl::IsUnavailable(status)) {
      reason = FailureReason::kUnavailable;
    } else if (absl::IsInvalidArgument(status)) {
      reason = FailureReason::kInvalid;
    }
    metrics->RecordFailure(reason, request_us);
    done_(std::move(status));
  }

 private:
  FunctionHost* const host_;
  std::unique_ptr<InferenceRequest> request_;
  InferDone done_;
  InferenceResponse response_;
  const int64_t cost_;
  const int64_t tokens_;
  const int64_t bytes_;
  const int64_t deadline_us_;
  const int64_t start_us_;
  const bool metered_;
};

// Adapts the runtime to the batcher's executor interface and meters each batch.
class FunctionHost::Executor final : public batching::Executor {
 public:
  explicit Executor(FunctionHost* host) : host_(host) {}

  absl::Status Execute(absl::Span<batching::Task* const> batch,
                       absl::Span<absl::Status> task_status) override {
    std::vector<RuntimeCall> calls(batch.size());
    int64_t rows = 0;
    FunctionMeter* const meter = host_->meter_;
    std::vector<int64_t> costs(meter != nullptr ? batch.size() : 0);
    // vector<bool> has no contiguous storage for a Span; an array of bool does.
    std::unique_ptr<bool[]> metered(meter != nullptr ? new bool[batch.size()] : nullptr);
    for (size_t i = 0; i < batch.size(); ++i) {
      auto* task = static_cast<FunctionHost::Task*>(batch[i]);
      calls[i].request = &task->request();
      calls[i].response = task->response();
      rows += task->cost();
      if (meter != nullptr) {
        costs[i] = task->cost();
        metered[i] = task->metered();
      }
    }
    // Metering times exactly the runtime's work on the host's clock (the batcher's own
    // TaskTiming::compute_us also covers its bookkeeping around the call).
    const int64_t start_us = meter != nullptr ? host_->clock_->NowMicros() : 0;
    absl::Status status = host_->runtime_->Execute(absl::MakeSpan(calls));
    if (!status.ok() && host_->on_gpu_ && !absl::IsInvalidArgument(status)) {
      // A sticky CUDA error poisons the GPU's context for the whole process: find out now, so
      // readiness and liveness say so (cuda/health.h). On this error path it also waits for the
      // device, so nothing still runs on buffers the runtime may release.
      (void)cuda::CheckGpuAfterError(host_->gpu_index_);
    }
    if (meter != nullptr) {
      meter->RecordBatch(host_->clock_->NowMicros() - start_us, costs,
                         absl::MakeConstSpan(metered.get(), batch.size()), host_->on_gpu_);
    }
    for (size_t i = 0; i < batch.size(); ++i) task_status[i] = std::move(calls[i].status);
    host_->metrics_->RecordBatch(rows);
    return status;
  }

 private:
  FunctionHost* const host_;
};

// Adapts a staged runtime (ferry/staged_runtime.h) to the pipeline's device stage: the batcher's
// tasks become RuntimeCalls, kept per slot from Pack to Release (only the slot's holder touches
// its entry), and the calls' statuses are copied back to the tasks.
class FunctionHost::StagedExecutor final : public batching::DeviceStage {
 public:
  explicit StagedExecutor(StagedRuntime* staged)
      : staged_(staged), calls_(static_cast<size_t>(staged->num_slots())) {}

  int num_slots() const override { return staged_->num_slots(); }

  absl::Status Pack(int slot, absl::Span<batching::Task* const> batch,
                    absl::Span<absl::Status> task_status) override {
    std::vector<RuntimeCall>& calls = calls_[slot];
    calls.assign(batch.size(), RuntimeCall{});
    for (size_t i = 0; i < batch.size(); ++i) {
      auto* task = static_cast<FunctionHost::Task*>(batch[i]);
      calls[i].request = &task->request();
      calls[i].response = task->response();
    }
    absl::Status status = staged_->Pack(slot, absl::MakeSpan(calls));
    CopyStatuses(calls, task_status);
    return status;
  }

  absl::Status Launch(int slot, StageDone done) override {
    return staged_->Launch(slot, std::move(done));
  }

  absl::Status Unpack(int slot, absl::Span<batching::Task* const>,
                      absl::Span<absl::Status> task_status) override {
    std::vector<RuntimeCall>& calls = calls_[slot];
    absl::Status status = staged_->Unpack(slot, absl::MakeSpan(calls));
    CopyStatuses(calls, task_status);
    return status;
  }

  void Release(int slot) override {
    staged_->Release(slot);
    calls_[slot].clear();
  }

  DeviceStageTimes device_times(int slot) override { return staged_->StageTimes(slot); }

 private:
  static void CopyStatuses(const std::vector<RuntimeCall>& calls,
                           absl::Span<absl::Status> task_status) {
    for (size_t i = 0; i < calls.size(); ++i) {
      if (!calls[i].status.ok()) task_status[i] = calls[i].status;
    }
  }

  StagedRuntime* const staged_;
  std::vector<std::vector<RuntimeCall>> calls_;  // per slot
};

FunctionHost::FunctionHost(FunctionSpec spec, std::unique_ptr<Runtime> runtime,
                           FunctionMetrics* metrics, Clock* clock, FunctionMeter* meter,
                           bool on_gpu)
    : spec_(std::move(spec)),
      runtime_(std::move(runtime)),
      metrics_(metrics),
      clock_(clock),
      meter_(meter),
      on_gpu_(on_gpu) {}

absl::StatusOr<std::unique_ptr<FunctionHost>> FunctionHost::Create(
    const FunctionHostOptions& options, std::unique_ptr<Runtime> runtime,
    FunctionMetrics* metrics) {
  if (runtime == nullptr || metrics == nullptr) {
    return absl::InvalidArgumentError("FunctionHost needs a runtime and metrics");
  }
  Clock* clock = options.clock != nullptr ? options.clock : RealClock::Get();
  std::unique_ptr<FunctionHost> host(new FunctionHost(options.spec, std::move(runtime), metrics,
                                                      clock, options.meter, options.on_gpu));
  host->gpu_index_ = options.on_gpu ? std::max(0, options.gpu_index) : -1;

  const ModelSignature& sig = host->runtime_->signature();
  ModelMetadata& md = host->metadata_;
  md.name = host->spec_.name;
  md.versions = {kDefaultVersion};
  md.platform = sig.platform;
  md.inputs = sig.inputs;
  md.outputs = sig.outputs;
  md.max_batch_size = host->spec_.batching.max_batch_size;
  md.batched = sig.batched;
  md.has_default_output = host->spec_.slo.on_overload == OverloadAction::kDefaultOutput;
  if (md.has_default_output) host->default_output_json_ = host->spec_.slo.default_output.dump();

  batching::BatcherOptions bo;
  bo.name = host->spec_.name;
  bo.policy = ToPolicy(host->spec_.batching.policy);
  bo.max_batch_size = host->spec_.batching.max_batch_size;
  bo.max_queue_delay_us = host->spec_.batching.max_queue_delay_us;
  bo.max_queue_size = host->spec_.batching.max_queue_size;
  bo.max_queue_bytes = host->spec_.batching.max_queue_bytes;
  bo.max_batch_tokens = host->spec_.batching.max_batch_tokens;
  bo.slo_us = BatchLatencyTargetUs(host->spec_);
  bo.aimd.additive_increase = host->spec_.batching.aimd.additive_increase;
  bo.aimd.hold_band = host->spec_.batching.aimd.hold_band;
  bo.aimd.multiplicative_decrease = host->spec_.batching.aimd.multiplicative_decrease;
  bo.num_executors = static_cast<int>(host->spec_.batching.instances);
  bo.inline_max_exec_us = kInlineMaxExecUs;
  bo.clock = clock;
  bo.start_threads = options.start_threads;

  absl::StatusOr<std::unique_ptr<batching::Batcher>> batcher;
  if (StagedRuntime* staged = host->runtime_->staged(); staged != nullptr) {
    // The pipeline: Pack on the batcher's threads (`instances` of them), the device's work in
    // flight for up to pipelineDepth batches, Unpack on the pipeline's thread; a batch departs
    // when a slot is free.
    host->stage_ = std::make_unique<StagedExecutor>(staged);
    batching::PipelineOptions po;
    po.name = host->spec_.name;
    po.depth = static_cast<int>(
        std::clamp<int64_t>(host->spec_.batching.pipeline_depth, 1, staged->num_slots()));
    po.clock = clock;
    // Always threaded: a device reports completion on its driver's thread, where no CPU stage
    // may run.
    po.start_threads = true;
    FunctionHost* raw = host.get();
    po.on_batch = [raw](const batching::PipelineBatchTimes& t,
                        absl::Span<batching::Task* const> batch) {
      raw->OnPipelineBatch(t, batch);
    };
    auto pipeline = batching::Pipeline::Create(po, host->stage_.get());
    if (!pipeline.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(host->spec_.source, ": function '",
                                                     host->spec_.name,
                                                     "': ", pipeline.status().message()));
    }
    host->pipeline_ = *std::move(pipeline);
    metrics->EnablePipeline();
    batcher = batching::Batcher::CreateAsync(bo, host->pipeline_.get());
  } else {
    host->executor_ = std::make_unique<Executor>(host.get());
    batcher = batching::Batcher::Create(bo, host->executor_.get());
  }
  if (!batcher.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        host->spec_.source, ": function '", host->spec_.name, "': ", batcher.status().message()));
  }
  host->batcher_ = *std::move(batcher);
  host->RefreshGauges();
  return host;
}

void FunctionHost::RefreshGauges() {
  metrics_->SetTargetBatchSize(batcher_->target_batch_size());
  if (pipeline_ == nullptr) return;
  const batching::PipelineStats s = pipeline_->stats();
  absl::MutexLock lock(&gauge_mu_);
  const int64_t wall = s.elapsed_us - gauge_elapsed_us_;
  if (wall <= 0) return;
  const double busy = static_cast<double>(s.device_busy_us - gauge_busy_us_);
  metrics_->SetDeviceBusyFraction(std::clamp(busy / static_cast<double>(wall), 0.0, 1.0));
  gauge_busy_us_ = s.device_busy_us;
  gauge_elapsed_us_ = s.elapsed_us;
}

void FunctionHost::OnPipelineBatch(const batching::PipelineBatchTimes& t,
                                   absl::Span<batching::Task* const> batch) {
  int64_t rows = 0;
  std::vector<int64_t> costs(batch.size());
  // vector<bool> has no contiguous storage for a Span; an array of bool does.
  std::unique_ptr<bool[]> metered(new bool[batch.size()]);
  for (size_t i = 0; i < batch.size(); ++i) {
    auto* task = static_cast<Task*>(batch[i]);
    costs[i] = task->cost();
    metered[i] = task->metered();
    rows += costs[i];
  }
  metrics_->RecordBatch(rows);
  metrics_->RecordStage(PipelineStage::kPack, t.pack_us);
  metrics_->RecordStage(PipelineStage::kH2d, t.h2d_us);
  metrics_->RecordStage(PipelineStage::kCompute, t.compute_us);
  metrics_->RecordStage(PipelineStage::kD2h, t.d2h_us);
  metrics_->RecordStage(PipelineStage::kScatter, t.scatter_us);
  metrics_->AddDeviceBusy(t.busy_us);
  // GPU-seconds: each batch is charged its share of the device's busy time (overlapping batches
  // split the time they share), so a function's charges add up to the time its device was busy.
  if (meter_ != nullptr) {
    meter_->RecordBatch(t.busy_us, costs, absl::MakeConstSpan(metered.get(), batch.size()),
                        on_gpu_);
  }
  if (!t.status.ok() && on_gpu_ && !absl::IsInvalidArgument(t.status)) {
    // As in Executor::Execute: a sticky CUDA error marks the GPU (and its functions) unusable.
    (void)cuda::CheckGpuAfterError(gpu_index_);
  }
}

FunctionHost::~FunctionHost() { Drain(); }

void FunctionHost::Drain() {
  if (batcher_ != nullptr) batcher_->Shutdown();
}

void FunctionHost::AnswerDefault(const InferenceRequest& request, const InferDone& done) {
  metrics_->RecordDefaultOutput();
  InferenceResponse response;
  response.model_name = spec_.name;
  response.model_version = kDefaultVersion;
  response.id = request.id;
  response.is_default = true;
  response.parameters["default_output"] = default_output_json_;
  done(std::move(response));
}

FunctionHost::Load FunctionHost::load() const {
  return {.arrived = arrived_.load(std::memory_order_relaxed),
          .in_flight = in_flight_.load(std::memory_order_relaxed),
          .queued = batcher_->stats().queued_tasks};
}

void FunctionHost::Infer(std::unique_ptr<InferenceRequest> request, InferDone done) {
  Submit(std::move(request), std::move(done), /*metered=*/true);
}

void FunctionHost::InferUnmetered(std::unique_ptr<InferenceRequest> request, InferDone done) {
  Submit(std::move(request), std::move(done), /*metered=*/false);
}

void FunctionHost::Submit(std::unique_ptr<InferenceRequest> request, InferDone done, bool metered) {
  const int64_t now_us = clock_->NowMicros();
  if (metered) arrived_.fetch_add(1, std::memory_order_relaxed);
  const ModelSignature& sig = runtime_->signature();
  if (absl::Status s = ValidateRequest(sig, *request); !s.ok()) {
    metrics_->RecordFailure(FailureReason::kInvalid, 0);
    done(absl::InvalidArgumentError(absl::StrCat("function '", spec_.name, "': ", s.message())));
    return;
  }
  const int64_t cost = RequestCost(sig, *request);
  if (cost > spec_.batching.max_batch_size) {
    metrics_->RecordFailure(FailureReason::kInvalid, 0);
    done(absl::InvalidArgumentError(absl::StrCat("function '", spec_.name, "': request batch size ",
                                                 cost, " exceeds maxBatchSize ",
                                                 spec_.batching.max_batch_size)));
    return;
  }
  // A request may shorten, never lengthen, the configured timeout.
  int64_t timeout_us = spec_.batching.timeout_us;
  if (request->timeout_us > 0 && (timeout_us == 0 || request->timeout_us < timeout_us)) {
    timeout_us = request->timeout_us;
  }
  // A client may send any int64; beyond a day a timeout means "no sooner than the model's", and
  // capping it keeps every deadline computation far from overflow.
  timeout_us = std::min(timeout_us, kMaxTimeoutUs);
  const int64_t deadline_us = timeout_us > 0 ? now_us + timeout_us : 0;
  metrics_->AddPending(1);
  if (metered) in_flight_.fetch_add(1, std::memory_order_relaxed);
  // Only a token budget needs the runtime's count (a tokenizer pass for text runtimes).
  const int64_t tokens =
      spec_.batching.max_batch_tokens > 0 ? std::max<int64_t>(1, runtime_->Cost(*request)) : cost;
  auto task = std::make_unique<Task>(this, std::move(request), std::move(done), cost, tokens,
                                     deadline_us, now_us, metered);
  // Any rejection is answered inside Submit through Task::Finish.
  (void)batcher_->Submit(std::move(task));
}

}  // namespace ferry::agent
