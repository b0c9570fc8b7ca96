#include "batching/pipeline.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace ferry::batching {
namespace {

std::string Prefix(const std::string& name) {
  return name.empty() ? std::string("pipeline: ") : absl::StrCat("pipeline '", name, "': ");
}

}  // namespace

// One started batch. Owned by in_flight_ until it is taken for completion, then by the
// completing thread; the device's `done` holds a raw pointer, valid because a batch is completed
// only after `done` ran (or when Launch was never called or failed).
struct Pipeline::Batch {
  absl::Span<Task* const> tasks;
  absl::Span<absl::Status> task_status;
  BatchDone done;
  int slot = -1;
  int64_t start_us = 0;
  int64_t launch_us = 0;  // when Launch was called
  int64_t ready_us = 0;   // when it became ready for completion
  bool on_device = false;
  bool ready = false;
  absl::Status status;
  PipelineBatchTimes times;
};

Pipeline::Pipeline(const PipelineOptions& options, DeviceStage* stage, Clock* clock)
    : name_(options.name),
      depth_(options.depth),
      threaded_(options.start_threads),
      stage_(stage),
      clock_(clock),
      on_batch_(options.on_batch),
      created_us_(clock->NowMicros()) {
  absl::MutexLock lock(&mu_);
  // Slot 0 is handed out first (free_slots_ is used as a stack).
  for (int s = depth_ - 1; s >= 0; --s) free_slots_.push_back(s);
  last_busy_event_us_ = created_us_;
}

absl::StatusOr<std::unique_ptr<Pipeline>> Pipeline::Create(const PipelineOptions& options,
                                                           DeviceStage* stage) {
  const std::string p = Prefix(options.name);
  if (stage == nullptr) return absl::InvalidArgumentError(p + "stage must not be null");
  const int slots = stage->num_slots();
  if (options.depth < 1 || options.depth > slots) {
    return absl::InvalidArgumentError(
        absl::StrCat(p, "depth ", options.depth, " outside [1, the stage's ", slots, " slots]"));
  }
  Clock* clock = options.clock != nullptr ? options.clock : RealClock::Get();
  std::unique_ptr<Pipeline> pipeline(new Pipeline(options, stage, clock));
  if (pipeline->threaded_) {
    absl::MutexLock lock(&pipeline->join_mu_);
    Pipeline* raw = pipeline.get();
    pipeline->scatter_thread_ = std::thread([raw] { raw->ScatterLoop(); });
  }
  return pipeline;
}

Pipeline::~Pipeline() { Shutdown(); }

void Pipeline::Start(absl::Span<Task* const> batch, absl::Span<absl::Status> task_status,
                     BatchDone done) {
  auto owned = std::make_unique<Batch>();
  Batch* const b = owned.get();
  b->tasks = batch;
  b->task_status = task_status;
  b->done = std::move(done);
  absl::Status refused;
  {
    absl::MutexLock lock(&mu_);
    // The batcher never starts more than depth_ batches; a direct caller that does waits here
    // (or, without threads to free a slot, is refused).
    while (threaded_ && !stopping_ && free_slots_.empty()) cv_.Wait(&mu_);
    if (stopping_) {
      refused = absl::UnavailableError(Prefix(name_) + "shutting down");
    } else if (free_slots_.empty()) {
      refused = absl::ResourceExhaustedError(
          absl::StrCat(Prefix(name_), "all ", depth_, " slots are in use"));
    } else {
      b->slot = free_slots_.back();
      free_slots_.pop_back();
      b->start_us = clock_->NowMicros();
      in_flight_.push_back(std::move(owned));
      ++pending_;
      ++stats_.started;
      stats_.in_flight = depth_ - static_cast<int64_t>(free_slots_.size());
      stats_.max_in_flight = std::max(stats_.max_in_flight, stats_.in_flight);
    }
  }
  if (!refused.ok()) {
    std::move(b->done)(std::move(refused));
    return;
  }

  // Pack on the calling thread (a batcher worker): this is the CPU stage that overlaps with the
  // device running the previous batch.
  const int64_t pack_start = clock_->NowMicros();
  absl::Status status = stage_->Pack(b->slot, batch, task_status);
  b->times.pack_us = clock_->NowMicros() - pack_start;
  if (!status.ok()) {
    MarkReady(b, std::move(status));
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    b->launch_us = clock_->NowMicros();
    AccrueBusyLocked(b->launch_us);
    b->on_device = true;
    ++on_device_;
  }
  // `b` must not be touched once Launch succeeded: `done` may already have completed and
  // destroyed it, on this thread (manual mode) or the scatter thread.
  status = stage_->Launch(b->slot, [this, b](absl::Status device_status) {
    OnDeviceDone(b, std::move(device_status));
  });
  if (!status.ok()) {
    // `done` is never called after a failed Launch, so `b` is still ours.
    OnDeviceDone(b, std::move(status));
  }
}

void Pipeline::OnDeviceDone(Batch* b, absl::Status status) {
  {
    absl::MutexLock lock(&mu_);
    const int64_t now = clock_->NowMicros();
    AccrueBusyLocked(now);
    b->on_device = false;
    --on_device_;
    b->times.device_us = now - b->launch_us;
    b->status = std::move(status);
    b->ready = true;
    b->ready_us = now;
    cv_.SignalAll();
  }
  // This may be a driver thread (a CUDA stream callback): it only records and wakes the scatter
  // thread, which does the CPU work and may call the device API.
  if (!threaded_) CompleteReadyInline();
}

void Pipeline::MarkReady(Batch* b, absl::Status status) {
  {
    absl::MutexLock lock(&mu_);
    b->status = std::move(status);
    b->ready = true;
    b->ready_us = clock_->NowMicros();
    cv_.SignalAll();
  }
  if (!threaded_) CompleteReadyInline();
}

void Pipeline::CompleteReadyInline() {
  mu_.Lock();
  // One completing thread at a time keeps the order; a batch that becomes ready while another
  // thread completes is picked up by that thread's loop (ready is set under mu_ before this
  // check, and completing_ is cleared under the same lock hold as the last look at the head).
  if (completing_) {
    mu_.Unlock();
    return;
  }
  completing_ = true;
  while (!in_flight_.empty() && in_flight_.front()->ready) {
    std::unique_ptr<Batch> b = std::move(in_flight_.front());
    in_flight_.pop_front();
    mu_.Unlock();
    Complete(std::move(b));
    mu_.Lock();
  }
  completing_ = false;
  mu_.Unlock();
}

void Pipeline::ScatterLoop() {
  absl::MutexLock lock(&mu_);
  while (true) {
    while (!(in_flight_.empty() ? stopping_ : in_flight_.front()->ready)) cv_.Wait(&mu_);
    if (in_flight_.empty()) return;  // stopping, and everything started has completed
    std::unique_ptr<Batch> b = std::move(in_flight_.front());
    in_flight_.pop_front();
    mu_.Unlock();
    Complete(std::move(b));
    mu_.Lock();
  }
}

void Pipeline::Complete(std::unique_ptr<Batch> b) {
  PipelineBatchTimes& t = b->times;
  t.slot = b->slot;
  const int64_t scatter_start = clock_->NowMicros();
  t.wait_us = scatter_start - b->ready_us;
  absl::Status status = std::move(b->status);
  if (status.ok()) {
    const DeviceStageTimes d = stage_->device_times(b->slot);
    t.h2d_us = d.h2d_us;
    t.compute_us = d.compute_us;
    t.d2h_us = d.d2h_us;
    status = stage_->Unpack(b->slot, b->tasks, b->task_status);
  }
  stage_->Release(b->slot);
  const int64_t end = clock_->NowMicros();
  t.scatter_us = end - scatter_start;
  t.total_us = end - b->start_us;
  t.status = status;
  {
    absl::MutexLock lock(&mu_);
    // The slot is free before the batcher hears of the completion, so the batch it lets depart
    // next always finds one.
    free_slots_.push_back(b->slot);
    stats_.in_flight = depth_ - static_cast<int64_t>(free_slots_.size());
    ++stats_.completed;
    if (!status.ok()) ++stats_.failed;
    stats_.pack_us += std::max<int64_t>(0, t.pack_us);
    stats_.device_us += std::max<int64_t>(0, t.device_us);
    stats_.scatter_us += t.scatter_us;
    cv_.SignalAll();
  }
  if (on_batch_) on_batch_(t, b->tasks);
  std::move(b->done)(std::move(status));
  b.reset();
  absl::MutexLock lock(&mu_);
  --pending_;
  cv_.SignalAll();
}

void Pipeline::AccrueBusyLocked(int64_t now) {
  const int64_t elapsed = now - last_busy_event_us_;
  if (elapsed <= 0) return;  // a clock that did not move (or a fake one set back)
  last_busy_event_us_ = now;
  if (on_device_ == 0) return;
  stats_.device_busy_us += elapsed;
  // Split evenly; the remainder's microseconds go to the oldest batches, so shares add up.
  const int64_t share = elapsed / on_device_;
  int64_t rest = elapsed % on_device_;
  for (std::unique_ptr<Batch>& b : in_flight_) {
    if (!b->on_device) continue;
    b->times.busy_us += share + (rest > 0 ? 1 : 0);
    if (rest > 0) --rest;
  }
}

void Pipeline::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    cv_.SignalAll();
    while (pending_ > 0) cv_.Wait(&mu_);
  }
  absl::MutexLock lock(&join_mu_);
  if (scatter_thread_.joinable()) scatter_thread_.join();
}

PipelineStats Pipeline::stats() const {
  absl::MutexLock lock(&mu_);
  PipelineStats s = stats_;
  const int64_t now = clock_->NowMicros();
  s.on_device = on_device_;
  s.elapsed_us = now - created_us_;
  // The stretch since the last event counts too while something is on the device.
  if (on_device_ > 0 && now > last_busy_event_us_) s.device_busy_us += now - last_busy_event_us_;
  return s;
}

}  // namespace ferry::batching
