// The CPU/device pipeline across batches: one mechanism for every device runtime. A batch goes
//
//   queue -> Pack (CPU, into a slot's staging memory) -> Launch (H2D, compute, D2H, async)
//         -> done (device) -> Unpack (CPU scatter into responses) -> Release -> tasks finished
//
// and up to `depth` batches are between Pack and Release at once, each in its own slot, so that
// while the device runs batch k, a batcher thread packs batch k+1 and the pipeline's scatter
// thread unpacks batch k-1. Completion is signalled by the device stage's `done` callback (a CUDA
// stream callback for a GPU), never by a thread spinning on the device.
//
// The Pipeline is an AsyncExecutor for the Batcher (batching/batcher.h): the batcher lets a batch
// depart only while a slot is free. The Pipeline knows no model and no CUDA: a DeviceStage
// does the work (the agent adapts a ferry::StagedRuntime to it; tests use a fake).
//
// Guarantees:
//  - Order: batches complete (Unpack, then `done`) in the order they were started, whatever
//    order their devices finish in, so with one packing thread (BatcherOptions::num_executors
//    = 1) tasks are answered in queue order; with several, batches that depart at the same time
//    complete in the order the threads start them.
//  - Back-pressure: never more than `depth` batches between Pack and Release.
//  - Errors: a Pack, Launch, device or Unpack error fails that batch only; its slot is released
//    and the next batches run normally.
//  - Shutdown: stops accepting, waits for every started batch to go through its remaining stages
//    and complete exactly once, joins the scatter thread.
#ifndef FERRY_BATCHING_PIPELINE_H_
#define FERRY_BATCHING_PIPELINE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "batching/batcher.h"
#include "ferry/clock.h"
#include "ferry/staged_runtime.h"

namespace ferry::batching {

// The stages of one batch on a device. Slot protocol, per slot s in [0, num_slots()):
//   Pack(s) -> [Launch(s) -> done] -> [device_times(s), Unpack(s)] -> Release(s)
// Launch runs only after a successful Pack, Unpack only after `done(OK)`; Release runs exactly
// once after every Pack. One slot holds one batch at a time; different slots are used from
// different threads at once. Same contract as ferry::StagedRuntime (ferry/staged_runtime.h),
// in terms of batcher tasks.
class DeviceStage {
 public:
  virtual ~DeviceStage() = default;
  // Slots the stage has, >= 1; fixed.
  virtual int num_slots() const = 0;
  // CPU: writes the batch's inputs into slot `slot`. Set task_status[i] to fail only task i
  // (Unpack skips it); a non-OK return fails the batch.
  virtual absl::Status Pack(int slot, absl::Span<Task* const> batch,
                            absl::Span<absl::Status> task_status) = 0;
  // Starts the device work; must not wait for it. On OK, `done` is called exactly once, from any
  // thread (possibly before Launch returns). On error, `done` is never called.
  virtual absl::Status Launch(int slot, StageDone done) = 0;
  // CPU: scatters the slot's results into the tasks. A non-OK return fails the batch.
  virtual absl::Status Unpack(int slot, absl::Span<Task* const> batch,
                              absl::Span<absl::Status> task_status) = 0;
  // Frees the slot (after waiting for any of its device work still pending).
  virtual void Release(int slot) = 0;
  // Device-measured times of the slot's batch; read after `done`, before Unpack.
  virtual DeviceStageTimes device_times(int /*slot*/) { return {}; }
};

// What one batch spent in each stage, microseconds on the pipeline's clock (the device columns as
// the stage measured them; -1 = not measured or not reached).
struct PipelineBatchTimes {
  int64_t pack_us = -1;    // Pack
  int64_t device_us = -1;  // Launch call -> done (enqueueing, waiting behind other batches, run)
  int64_t h2d_us = -1;     // DeviceStage::device_times
  int64_t compute_us = -1;
  int64_t d2h_us = -1;
  int64_t wait_us = -1;     // done -> scatter start (waiting for earlier batches to complete)
  int64_t scatter_us = -1;  // Unpack + Release
  // This batch's share of the device busy time (busy = at least one batch between Launch and
  // done; a stretch shared by k batches is split evenly among them), so the shares of all
  // batches add up to the device busy time exactly.
  int64_t busy_us = 0;
  int64_t total_us = 0;  // Start -> completion
  int slot = -1;
  absl::Status status;  // the batch's outcome
};

// Cumulative counters (since Create).
struct PipelineStats {
  int64_t started = 0;         // batches accepted by Start
  int64_t completed = 0;       // batches whose `done` ran (any status)
  int64_t failed = 0;          // of which failed
  int64_t in_flight = 0;       // slots in use now (a batch between Pack and Release)
  int64_t max_in_flight = 0;   // high-water mark of in_flight (never above the depth)
  int64_t on_device = 0;       // between Launch and done now
  int64_t device_busy_us = 0;  // time with at least one batch on the device, up to now
  int64_t elapsed_us = 0;      // since Create
  int64_t pack_us = 0;         // sums over completed batches
  int64_t device_us = 0;
  int64_t scatter_us = 0;
};

struct PipelineOptions {
  std::string name;  // for messages
  // Batches in flight at once, in [1, stage->num_slots()]. 1 = no overlap: each batch is
  // packed, run, waited for and unpacked before the next one departs (the synchronous path).
  int depth = 2;
  Clock* clock = nullptr;  // not owned; nullptr = RealClock::Get()
  // true: a scatter thread runs Unpack/Release and the completions. false (tests): no thread;
  // the thread whose call makes the oldest batch ready (Start on a failure, or `done`) runs
  // them inline, so a test drives everything with FakeClock and explicit `done` calls.
  bool start_threads = true;
  // Called once per batch, after Release and before the batch's `done`, on the completing thread
  // (never under a lock): per-stage metrics. `batch` is the batch's tasks.
  std::function<void(const PipelineBatchTimes&, absl::Span<Task* const> batch)> on_batch;
};

// Thread-safe. The batcher using it must be shut down first (the pipeline must keep completing
// the batches it started until then); the destructor then shuts it down.
class Pipeline final : public AsyncExecutor {
 public:
  // `stage` is not owned and must outlive the pipeline. InvalidArgument for a bad depth.
  static absl::StatusOr<std::unique_ptr<Pipeline>> Create(const PipelineOptions& options,
                                                          DeviceStage* stage);
  ~Pipeline() override;
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  int max_in_flight() const override { return depth_; }

  // Takes a free slot, packs `batch` on the calling thread and launches it; returns once the
  // device work is enqueued. Without a free slot it waits for one (threaded mode; the batcher
  // never lets that happen) or, in manual mode, fails the batch with ResourceExhausted. After
  // Shutdown began, the batch fails with Unavailable. `done` is called exactly once.
  void Start(absl::Span<Task* const> batch, absl::Span<absl::Status> task_status,
             BatchDone done) override;

  // Stops accepting and blocks until every started batch has completed, then joins the scatter
  // thread. In manual mode the caller must make the device calls `done` for what is in flight
  // (from another thread) or Shutdown waits. Idempotent.
  void Shutdown();

  PipelineStats stats() const;

 private:
  struct Batch;

  Pipeline(const PipelineOptions& options, DeviceStage* stage, Clock* clock);
  // The device finished (or failed) the batch's work.
  void OnDeviceDone(Batch* b, absl::Status status);
  // Marks `b` ready for completion with `status` (a failure before the device ran).
  void MarkReady(Batch* b, absl::Status status);
  // Manual mode: completes the ready batches at the head, in order, on this thread.
  void CompleteReadyInline();
  // Unpack (when OK), Release, metrics and `done` for one batch; frees its slot. No lock held.
  void Complete(std::unique_ptr<Batch> b);
  void ScatterLoop();
  // Accrues device busy time up to `now`, split evenly among the batches on the device.
  void AccrueBusyLocked(int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string name_;
  const int depth_;
  const bool threaded_;
  DeviceStage* const stage_;
  Clock* const clock_;
  const std::function<void(const PipelineBatchTimes&, absl::Span<Task* const>)> on_batch_;
  const int64_t created_us_;

  mutable absl::Mutex mu_;
  absl::CondVar cv_;  // a batch became ready, a slot was freed, or stopping
  // Started and not completed, in start order (completion follows it).
  std::deque<std::unique_ptr<Batch>> in_flight_ ABSL_GUARDED_BY(mu_);
  std::vector<int> free_slots_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool completing_ ABSL_GUARDED_BY(mu_) = false;  // manual mode: a thread is completing
  int64_t pending_ ABSL_GUARDED_BY(mu_) = 0;      // Start -> its `done` returned
  int64_t on_device_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_busy_event_us_ ABSL_GUARDED_BY(mu_) = 0;
  PipelineStats stats_ ABSL_GUARDED_BY(mu_);

  absl::Mutex join_mu_;  // serialises Shutdown's join
  std::thread scatter_thread_ ABSL_GUARDED_BY(join_mu_);
};

}  // namespace ferry::batching

#endif  // FERRY_BATCHING_PIPELINE_H_
