// The adaptive batcher: a bounded queue in front of an abstract executor. It knows no model, no
// network and no CUDA; the node agent wraps each request in a Task and each runtime in an
// Executor.
//
// A batch departs when an executor slot is free and either the queue holds the current target
// size (in cost units) or the oldest request has used its delay budget: min(maxQueueDelay,
// deadline - predicted execution time). A batch never exceeds max_batch_size cost units (a
// single task larger than that is rejected at Submit). With max_batch_tokens set, a batch also
// departs once the queue holds that many tokens (Task::tokens), and never takes a task that
// would carry it past the budget; a task over the budget on its own runs alone. The target size
// adapts by AIMD against the latency SLO (policy kAimd), stays at max_batch_size (kFixed), or is 1
// with no delay (kOff). An online linear model of execution time (a * cost + b) predicts when a
// batch will finish. The queue is ordered by Task::priority (strict levels, FIFO within one); the
// delay budget is always the oldest task's, whatever its level. Under kAimd the delay is adaptive
// too: a batch below the target waits only while more tasks are expected within its budget and a
// bigger batch would pay for the wait (docs/batching.md, "Adaptive delay"); otherwise it departs as
// soon as an executor slot is free.
#ifndef FERRY_BATCHING_BATCHER_H_
#define FERRY_BATCHING_BATCHER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ferry/clock.h"

namespace ferry::batching {

// Timing of one task, reported to Task::Finish.
struct TaskTiming {
  int64_t queue_us = 0;     // Submit -> batch departure
  int64_t compute_us = 0;   // executor time of the batch the task ran in (0 if it never ran)
  int64_t batch_cost = 0;   // total cost of that batch (0 if it never ran)
  int64_t batch_tasks = 0;  // number of tasks in that batch
  // true when Submit turned the task away (queue full, deadline, cost, stopping): the caller's
  // "answer at once" case, as opposed to a failure after queueing.
  bool rejected_at_submit = false;
};

// One unit of work. Owned by the batcher from Submit until Finish returns, then destroyed.
class Task {
 public:
  virtual ~Task() = default;
  // Batch units this task uses (rows) against max_batch_size; >= 1. Must not change after Submit.
  virtual int64_t cost() const = 0;
  // Work the task adds to a batch in the unit of BatcherOptions::max_batch_tokens (tokens for
  // text runtimes: ferry::Runtime::Cost); >= 1. Defaults to cost(). Must not change after Submit.
  virtual int64_t tokens() const { return cost(); }
  // Memory the task holds while it waits (its request's payload), counted against
  // BatcherOptions::max_queue_bytes. Must not change after Submit.
  virtual int64_t size_bytes() const { return 0; }
  // Absolute deadline on the batcher's clock, microseconds; 0 = none.
  virtual int64_t deadline_us() const { return 0; }
  // Scheduling priority (the KServe request parameter): 1 is the highest level, then 2, 3, ...;
  // 0 (the default) ranks after every explicit level. Tasks leave the queue by level, FIFO
  // within a level. Negative values count as 0. Must not change after Submit.
  virtual int64_t priority() const { return 0; }
  // Called exactly once per submitted task, on a batcher thread or inline in Submit (when the
  // task is rejected, or when its batch ran on the submitting thread; see
  // BatcherOptions::inline_max_exec_us), with OK or the reason it failed: ResourceExhausted (queue
  // full, retry), DeadlineExceeded (could not meet its deadline), Unavailable (batcher stopping) or
  // the executor's error. Must not block for long and must not call back into the batcher.
  virtual void Finish(absl::Status status, const TaskTiming& timing) = 0;
};

// Runs batches. Thread-safety: Execute is called from up to BatcherOptions::num_executors
// threads at once.
class Executor {
 public:
  virtual ~Executor() = default;
  // Runs `batch` (in queue order: by priority level, FIFO within a level; submission order when
  // no task names a priority). `task_status` has one entry per task, preset to OK; the
  // executor sets an entry to fail only that task. A non-OK return fails the whole batch (and
  // nothing else).
  virtual absl::Status Execute(absl::Span<Task* const> batch,
                               absl::Span<absl::Status> task_status) = 0;
};

// Called exactly once when an asynchronously started batch is over, with the batch status (a
// non-OK status fails every task of the batch); the task statuses are final by then. May run on
// any thread, possibly inside AsyncExecutor::Start.
using BatchDone = absl::AnyInvocable<void(absl::Status)>;

// Runs batches in stages that overlap across batches (batching/pipeline.h): Start does the CPU
// work that must precede the device (packing), hands the batch on and returns, and the batch
// completes later through `done`. The batcher lets a batch depart only while fewer than
// max_in_flight() batches are started and not done: a free pipeline slot, not a free thread, is
// what lets the next batch leave. Thread-safety: Start is called from up to
// BatcherOptions::num_executors threads at once.
class AsyncExecutor {
 public:
  virtual ~AsyncExecutor() = default;
  // The most batches in flight at once (the pipeline depth), >= 1; fixed.
  virtual int max_in_flight() const = 0;
  // Starts `batch` (in queue order); `task_status` has one entry per task, preset to OK, and the
  // executor sets an entry to fail only that task. Both spans stay valid until `done` has been
  // called. Blocks only for CPU work on this batch, never on an earlier batch's device work.
  virtual void Start(absl::Span<Task* const> batch, absl::Span<absl::Status> task_status,
                     BatchDone done) = 0;
};

enum class Policy { kAimd, kFixed, kOff };

struct AimdOptions {
  int64_t additive_increase = 2;         // added while batch latency < (1 - hold_band) * SLO
  double hold_band = 0.10;               // hold the size within this fraction below the SLO
  double multiplicative_decrease = 0.9;  // multiply on an SLO miss; never below 1
};

struct BatcherOptions {
  std::string name;  // for messages
  Policy policy = Policy::kAimd;
  int64_t max_batch_size = 32;        // cost units, >= 1
  int64_t max_queue_delay_us = 1000;  // >= 0
  int64_t max_queue_size = 1024;      // tasks waiting (not counting running), >= 1
  // Bytes the waiting tasks may hold together (Task::size_bytes); 0 = no limit. A task that
  // would pass it is ResourceExhausted (retry later); one larger than it alone is
  // InvalidArgument (it can never be queued).
  int64_t max_queue_bytes = 0;
  // Token budget of one batch (Task::tokens), on top of max_batch_size; 0 = no limit. A batch
  // departs as soon as the queue holds the budget (the next task could not join), and takes
  // tasks only while their sum stays within it. A task whose tokens alone exceed the budget is
  // not refused: it runs in a batch of its own (its rows are bounded by max_batch_size already;
  // refusing it would make a request's fate depend on a cost estimate).
  int64_t max_batch_tokens = 0;
  int64_t slo_us = 0;              // batch latency target for AIMD; 0 = none (grow to max)
  int64_t initial_batch_size = 0;  // AIMD start; 0 = 1
  AimdOptions aimd;
  // Batches in flight at once (worker threads), >= 1. With an AsyncExecutor: the worker threads
  // that start (pack) batches; the batches in flight are bounded by max_in_flight() instead.
  int num_executors = 1;
  // A batch that is due as soon as it is submitted, with an executor slot free, runs on the
  // submitting thread when the execution model (after a few batches) predicts it takes at most
  // this long. It saves two thread hand-offs, which dominate for models that take microseconds.
  // 0 = always hand off to a batcher thread. Threaded mode only.
  int64_t inline_max_exec_us = 0;
  Clock* clock = nullptr;  // not owned; nullptr = RealClock::Get()
  // false: no threads are started; the caller drives the batcher with RunOnce() (tests, with a
  // FakeClock).
  bool start_threads = true;
};

struct BatcherStats {
  int64_t queued_tasks = 0;
  int64_t queued_cost = 0;
  int64_t queued_bytes = 0;
  int64_t queued_tokens = 0;
  int64_t running_batches = 0;
  int64_t target_batch_size = 0;
  // Linear execution-time model: predicted_us(cost) = slope_us * cost + intercept_us.
  double model_slope_us = 0;
  double model_intercept_us = 0;
  // Moving average of the gap between task arrivals (kAimd's adaptive delay); 0 before two
  // arrivals.
  double arrival_gap_us = 0;
};

class Batcher {
 public:
  // Validates options (InvalidArgument naming the bad field). `executor` is not owned and must
  // outlive the batcher.
  static absl::StatusOr<std::unique_ptr<Batcher>> Create(const BatcherOptions& options,
                                                         Executor* executor);
  // The same with a pipelined executor (not owned; must outlive the batcher and keep completing
  // started batches until Shutdown returns). A batch's execution time (TaskTiming::compute_us,
  // the AIMD latency and the execution-time model) is Start -> done.
  static absl::StatusOr<std::unique_ptr<Batcher>> CreateAsync(const BatcherOptions& options,
                                                              AsyncExecutor* executor);
  // Stops accepting, lets every accepted task finish (runs what is queued), joins threads.
  ~Batcher();

  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Thread-safe, never blocks on execution. Takes the task. Returns OK if queued. Otherwise the
  // task is finished inline with the returned status before Submit returns:
  // ResourceExhausted when the queue is full (tasks or bytes), InvalidArgument when its cost
  // exceeds max_batch_size or its size max_queue_bytes, DeadlineExceeded when it cannot meet its
  // deadline even if run alone now, Unavailable once Shutdown began.
  absl::Status Submit(std::unique_ptr<Task> task);

  // Stops accepting and drains: every queued task still runs. Blocks until the queue is empty
  // and no batch is running. Idempotent.
  void Shutdown();

  // Manual mode (start_threads == false) only: if a batch is due at clock->NowMicros(), forms it
  // and executes it on the calling thread (with an AsyncExecutor: starts it; it completes when
  // the executor calls `done`), then returns true; else false.
  bool RunOnce();
  // Manual mode: the clock time at which the queued tasks become due if nothing else happens
  // (the oldest task's delay budget, or earlier under kAimd's adaptive delay; a time <= now
  // means due now), or -1 when the queue is empty. A batch also departs by size at once.
  int64_t NextDepartureUs() const;

  BatcherStats stats() const;
  int64_t target_batch_size() const;

 private:
  class Impl;
  explicit Batcher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::batching

#endif  // FERRY_BATCHING_BATCHER_H_
