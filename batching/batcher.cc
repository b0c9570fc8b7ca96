#include "batching/batcher.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace ferry::batching {
namespace {

// Exponential forgetting of the execution-time model: each new sample multiplies the weight of
// all older ones by this factor, so the fit follows slow drift (thermal throttling, a co-tenant)
// while ~20 recent batches dominate.
constexpr double kModelForgetting = 0.95;
// Admission control trusts the model only after this many batches.
constexpr int64_t kMinSamplesForAdmission = 3;
// Upper bound on one timed wait of a worker, so that a clock that is not the real one (or a
// steady clock that jumps) cannot park a worker for long with work queued.
constexpr int64_t kMaxWaitUs = 50'000;
// Weight of the newest sample in the moving averages of the arrival process (log of the
// inter-arrival gap, task cost): about the last 8 arrivals matter, so the estimate follows a
// change of load within a few requests.
constexpr double kArrivalWeight = 0.125;
// Rule (c) of the adaptive delay ("keep up", AdaptiveDepartureLocked): it applies when the
// fixed cost per batch would take more than this share of the time between arrivals if every
// task ran alone (lambda * b), ...
constexpr double kFixedCostShare = 0.1;
// ... and tasks keep arriving while the executors are busy or others wait: the moving average
// of "every slot was busy or another task was queued when this task arrived" is above this.
constexpr double kBusyAtArrivalShare = 0.25;

// Weighted least squares of y = slope * x + intercept with exponential forgetting.
class LinearModel {
 public:
  void Observe(double x, double y) {
    sw_ = sw_ * kModelForgetting + 1;
    swx_ = swx_ * kModelForgetting + x;
    swy_ = swy_ * kModelForgetting + y;
    swxx_ = swxx_ * kModelForgetting + x * x;
    swxy_ = swxy_ * kModelForgetting + x * y;
    ++samples_;
    Fit();
  }
  int64_t samples() const { return samples_; }
  double slope() const { return slope_; }
  double intercept() const { return intercept_; }
  // 0 before the first sample; never negative.
  int64_t Predict(int64_t x) const {
    if (samples_ == 0) return 0;
    return std::max<int64_t>(0, std::llround(slope_ * static_cast<double>(x) + intercept_));
  }

 private:
  void Fit() {
    const double det = sw_ * swxx_ - swx_ * swx_;
    // All (weighted) samples at one cost: the slope is unknown, so predict the mean. A negative
    // slope is noise (a bigger batch is never cheaper), so flatten it the same way.
    double slope = 0;
    if (det > 1e-9 * std::max(1.0, sw_ * swxx_)) slope = (sw_ * swxy_ - swx_ * swy_) / det;
    if (slope < 0) slope = 0;
    slope_ = slope;
    intercept_ = (swy_ - slope * swx_) / sw_;
  }

  double sw_ = 0, swx_ = 0, swy_ = 0, swxx_ = 0, swxy_ = 0;
  double slope_ = 0, intercept_ = 0;
  int64_t samples_ = 0;
};

std::string Prefix(const std::string& name) {
  return name.empty() ? std::string("batcher: ") : absl::StrCat("batcher '", name, "': ");
}

}  // namespace

class Batcher::Impl {
 public:
  // Exactly one of `executor` and `async` is non-null.
  Impl(const BatcherOptions& options, Executor* executor, AsyncExecutor* async)
      : options_(options),
        executor_(executor),
        async_(async),
        capacity_(async != nullptr ? async->max_in_flight() : options.num_executors),
        clock_(options.clock != nullptr ? options.clock : RealClock::Get()),
        prefix_(Prefix(options.name)) {
    switch (options_.policy) {
      case Policy::kAimd:
        target_ = options_.initial_batch_size > 0 ? options_.initial_batch_size : 1;
        delay_us_ = options_.max_queue_delay_us;
        break;
      case Policy::kFixed:
        target_ = options_.max_batch_size;
        delay_us_ = options_.max_queue_delay_us;
        break;
      case Policy::kOff:
        target_ = 1;
        delay_us_ = 0;
        break;
    }
  }

  void Start() {
    if (!options_.start_threads) return;
    absl::MutexLock lock(&join_mu_);
    threads_.reserve(options_.num_executors);
    for (int i = 0; i < options_.num_executors; ++i) {
      threads_.emplace_back([this] { WorkerLoop(); });
    }
  }

  absl::Status Submit(std::unique_ptr<Task> task) {
    if (task == nullptr) return absl::InvalidArgumentError(prefix_ + "null task");
    absl::Status status;
    const int64_t cost = task->cost();
    const int64_t bytes = task->size_bytes();
    const int64_t tokens = task->tokens();
    if (cost < 1 || cost > options_.max_batch_size) {
      status = absl::InvalidArgumentError(
          absl::StrCat(prefix_, "task cost ", cost,
                       " outside [1, max_batch_size=", options_.max_batch_size, "]"));
    } else if (tokens < 1) {
      status = absl::InvalidArgumentError(absl::StrCat(prefix_, "task tokens ", tokens, " < 1"));
    } else if (options_.max_queue_bytes > 0 && bytes > options_.max_queue_bytes) {
      // It could never be queued, so "retry later" would be a lie.
      status = absl::InvalidArgumentError(absl::StrCat(
          prefix_, "task of ", bytes, " bytes exceeds max_queue_bytes=", options_.max_queue_bytes));
    } else {
      mu_.Lock();
      const int64_t now = clock_->NowMicros();
      const int64_t deadline = task->deadline_us();
      if (stopping_) {
        status = absl::UnavailableError(prefix_ + "shutting down");
      } else if (static_cast<int64_t>(queue_.size()) >= options_.max_queue_size) {
        status = absl::ResourceExhaustedError(
            absl::StrCat(prefix_, "queue full (", queue_.size(), " tasks): retry later"));
      } else if (options_.max_queue_bytes > 0 && queued_bytes_ + bytes > options_.max_queue_bytes) {
        status = absl::ResourceExhaustedError(absl::StrCat(prefix_, "queue full (", queued_bytes_,
                                                           " of ", options_.max_queue_bytes,
                                                           " bytes queued): retry later"));
      } else if (deadline != 0 &&
                 (deadline <= now || (model_.samples() >= kMinSamplesForAdmission &&
                                      now + model_.Predict(cost) > deadline))) {
        status = absl::DeadlineExceededError(
            absl::StrCat(prefix_, "cannot meet deadline: ", deadline - now,
                         " us left, predicted execution ", model_.Predict(cost), " us"));
      } else {
        queued_cost_ += cost;
        queued_bytes_ += bytes;
        queued_tokens_ += tokens;
        EnqueueLocked(Entry{std::move(task), now, bytes, tokens, 0});
        ObserveArrivalLocked(now, cost);
        Batch batch;
        const bool run_inline = InlineAllowedLocked() && TakeBatchLocked(now, &batch);
        // Workers still handle whatever the inline batch did not take.
        if (!run_inline || !queue_.empty()) cv_.SignalAll();
        mu_.Unlock();
        if (run_inline) RunBatch(batch);
        return absl::OkStatus();
      }
      mu_.Unlock();
    }
    // Rejected: answer inline, outside the lock (Finish may take its own locks).
    TaskTiming timing;
    timing.rejected_at_submit = true;
    task->Finish(status, timing);
    return status;
  }

  void Shutdown() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      cv_.SignalAll();
    }
    if (options_.start_threads) {
      // Workers drain the queue (everything is due once stopping) and exit when it is empty.
      absl::MutexLock lock(&join_mu_);
      for (std::thread& t : threads_) t.join();
      threads_.clear();
      // A batch may still run on a submitting thread (inline_max_exec_us).
      absl::MutexLock wait(&mu_);
      while (running_ > 0) cv_.Wait(&mu_);
      return;
    }
    // Manual mode: the caller's thread drains. Another thread may hold executor slots in
    // RunOnce; wait for it to hand one back.
    while (true) {
      if (RunOnce()) continue;
      absl::MutexLock lock(&mu_);
      if (queue_.empty() && running_ == 0) return;
      if (!queue_.empty() && running_ < capacity_) continue;
      cv_.Wait(&mu_);
    }
  }

  bool RunOnceManual() { return options_.start_threads ? false : RunOnce(); }

  bool RunOnce() {
    Batch batch;
    {
      absl::MutexLock lock(&mu_);
      if (!TakeBatchLocked(clock_->NowMicros(), &batch)) return false;
    }
    RunBatch(batch);
    return true;
  }

  int64_t NextDepartureUs() const {
    absl::MutexLock lock(&mu_);
    if (queue_.empty()) return -1;
    return DepartureLocked();
  }

  BatcherStats stats() const {
    absl::MutexLock lock(&mu_);
    BatcherStats s;
    s.queued_tasks = static_cast<int64_t>(queue_.size());
    s.queued_cost = queued_cost_;
    s.queued_bytes = queued_bytes_;
    s.queued_tokens = queued_tokens_;
    s.running_batches = running_;
    s.target_batch_size = target_;
    s.model_slope_us = model_.slope();
    s.model_intercept_us = model_.intercept();
    s.arrival_gap_us = std::max(0.0, arrival_gap_us_);
    return s;
  }

  int64_t target_batch_size() const {
    absl::MutexLock lock(&mu_);
    return target_;
  }

 private:
  struct Entry {
    std::unique_ptr<Task> task;
    int64_t enqueue_us = 0;
    int64_t bytes = 0;   // Task::size_bytes() at Submit
    int64_t tokens = 0;  // Task::tokens() at Submit
    int64_t rank = 0;    // queue order: Rank(task->priority()), lower first
  };

  // Task::priority as a sort key: explicit levels 1, 2, ... first, the default (0) last.
  static int64_t Rank(int64_t priority) { return priority > 0 ? priority : kDefaultRank; }

  // Keeps queue_ sorted by rank, FIFO within a rank. The default rank is the last, so a
  // queue without priorities is a plain FIFO with O(1) appends.
  void EnqueueLocked(Entry entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    entry.rank = Rank(entry.task->priority());
    if (entry.rank == kDefaultRank) {
      queue_.push_back(std::move(entry));
      return;
    }
    ++prioritized_;
    auto at = std::upper_bound(queue_.begin(), queue_.end(), entry.rank,
                               [](int64_t rank, const Entry& e) { return rank < e.rank; });
    queue_.insert(at, std::move(entry));
  }

  // Removes the front entry (bookkeeping for prioritized_).
  Entry PopFrontLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Entry e = std::move(queue_.front());
    queue_.pop_front();
    if (e.rank != kDefaultRank) --prioritized_;
    return e;
  }

  // The task that has waited longest. Without priorities that is the front; with them, a scan
  // (priorities are rare, and the queue is bounded by max_queue_size).
  const Entry& OldestLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (prioritized_ == 0) return queue_.front();
    const Entry* oldest = &queue_.front();
    for (const Entry& e : queue_) {
      if (e.enqueue_us < oldest->enqueue_us) oldest = &e;
    }
    return *oldest;
  }

  struct Batch {
    std::vector<Entry> run;      // executed, in queue order
    std::vector<Entry> expired;  // deadline passed before departure; never executed
    int64_t cost = 0;
    int64_t tokens = 0;
    int64_t depart_us = 0;
    // The target when the batch departed: "full" means it reached this.
    int64_t target = 0;
  };

  // Whether a batch that is due now may run on the submitting thread: only when the model has
  // learned that the batch would be short, so a slow model never blocks a caller's thread.
  // Under aimd, not when the fixed cost per batch is heavy against the arrival rate: a batch
  // run inline keeps the next requests unread in their sockets, where the batcher cannot see
  // them queue, so each batch would again find one task and rule (c) could never batch them.
  bool InlineAllowedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (options_.policy == Policy::kAimd && options_.slo_us > 0 && FixedCostHeavyLocked()) {
      return false;
    }
    return options_.inline_max_exec_us > 0 && options_.start_threads &&
           model_.samples() >= kMinSamplesForAdmission &&
           model_.Predict(std::min(queued_cost_, options_.max_batch_size)) <=
               options_.inline_max_exec_us;
  }

  // The clock time at which the queued tasks become due (a time <= now means due now). The
  // budget is the oldest task's: min(enqueue + delay, deadline - predicted execution). Only the
  // oldest task is considered (FIFO): a younger task with a tighter deadline waits behind it,
  // which keeps the check O(1); deadline admission keeps such tasks rare. Under kAimd the
  // adaptive rule may make the batch due earlier (AdaptiveDepartureLocked).
  int64_t DepartureLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const Entry& oldest = OldestLocked();
    int64_t departure = oldest.enqueue_us + delay_us_;
    const int64_t deadline = oldest.task->deadline_us();
    if (deadline != 0) {
      // Predict with the batch that would leave by delay: what waits, up to max_batch_size.
      departure = std::min(
          departure, deadline - model_.Predict(std::min(queued_cost_, options_.max_batch_size)));
    }
    if (options_.policy == Policy::kAimd && departure > oldest.enqueue_us) {
      departure = std::min(departure, AdaptiveDepartureLocked(oldest.enqueue_us, departure));
    }
    return departure;
  }

  // The "wait only while it pays" rule (docs/batching.md, "Adaptive delay"). With g the expected
  // gap to the next arrival, n queued tasks, the model a * cost + b and m the mean task cost:
  //  (a) no arrival expected within the budget: depart once budget_end - now < g;
  //  (b) waiting for one more task saves it a batch of its own (b) but delays all n + 1 by g and
  //      the n queued by a * m: wait only while g < (b - n * a * m) / (n + 1).
  // g is the (geometric) moving average of inter-arrival gaps, or the time since anything last
  // happened (an arrival, or a batch finishing: clients answered may send again) when that is
  // longer, so a stream that stops or a single closed-loop client is not waited for. Returns the
  // time at which one of the rules says "go" (the oldest task's enqueue time when it says so
  // already).
  int64_t AdaptiveDepartureLocked(int64_t oldest, int64_t budget_end) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // Without a measured arrival rate and execution model there is no evidence that waiting
    // pays, so nothing waits (the model learns from what departs).
    if (arrival_gap_us_ < 0 || model_.samples() < kMinSamplesForAdmission) return oldest;
    // Rule (c), keep up, for functions with an SLO: the fixed cost per batch is heavy against
    // the arrival rate and tasks arrive while the executors are busy, i.e. a stream that batches
    // of one may not keep up with once the executor's fixed costs and the front end share the
    // cores (rule (b) weighs latency only and would send batches of one; the batcher cannot see
    // the front end's cost per request). With an SLO, latency under the target is free and
    // throughput within it is the objective, so then no early departure: the batch waits for
    // the AIMD target or its budget (bounded by the deadlines), as a fixed policy would. A
    // closed-loop client alone finds the executor idle and nobody queued (its previous request
    // has just been answered), so it is not waited for. Without an SLO rules (a) and (b) decide.
    if (options_.slo_us > 0 && FixedCostHeavyLocked() && busy_at_arrival_ > kBusyAtArrivalShare) {
      return budget_end;
    }
    const double gap = arrival_gap_us_;
    const double n = static_cast<double>(queue_.size());
    const double a = model_.slope();
    const double b = std::max(0.0, model_.intercept());
    const double pays_below_gap = (b - n * a * arrival_cost_) / (n + 1);  // rule (b)
    if (gap >= pays_below_gap) return oldest;
    const double quiet_since =
        static_cast<double>(std::max(last_arrival_us_, std::max(last_finish_us_, oldest)));
    const double end = static_cast<double>(budget_end);
    // Rule (a), with g the average gap or the quiet time, whichever is larger.
    const double by_rate = std::min(end - gap, (end + quiet_since) / 2);
    // Rule (b) once the quiet time alone exceeds what waiting may cost.
    const double by_gain = quiet_since + pays_below_gap;
    const double departure = std::max(static_cast<double>(oldest), std::min(by_rate, by_gain));
    return static_cast<int64_t>(std::floor(departure));
  }

  // Feeds the arrival-rate estimate: a moving average of the logarithm of the gaps, i.e. their
  // geometric mean. Closed-loop clients arrive in bursts (the clients of a batch come back just
  // after it finishes) separated by pauses while they wait for their answers; the arithmetic
  // mean of the gaps is dominated by the pauses and would make the batcher leave just before
  // the burst it could have had. The pauses are covered by the "quiet time" of the rule instead.
  // A gap is counted as at most twice the delay budget: any longer gap means "nothing arrives
  // within the budget", and an hour of idleness must not hide the next burst for long.
  void ObserveArrivalLocked(int64_t now, int64_t cost) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // Rule (c)'s inputs: the arithmetic mean gap (the rate that has to be kept up with) and
    // whether the task found the executors busy or others waiting.
    if (last_arrival_us_ >= 0) {
      const double gap = std::clamp(static_cast<double>(now - last_arrival_us_), 1.0, 1e6);
      arrival_mean_gap_us_ =
          arrival_mean_gap_us_ < 0
              ? gap
              : arrival_mean_gap_us_ + kArrivalWeight * (gap - arrival_mean_gap_us_);
    }
    // (Called after the task was queued: another task queued means this one is not alone.)
    const bool busy = running_ >= capacity_ || queue_.size() > 1;
    busy_at_arrival_ += kArrivalWeight * ((busy ? 1.0 : 0.0) - busy_at_arrival_);
    if (last_arrival_us_ >= 0) {
      const double cap = 2.0 * static_cast<double>(std::max<int64_t>(delay_us_, 1));
      const double sample =
          std::log(std::clamp(static_cast<double>(now - last_arrival_us_), 1.0, cap));
      arrival_log_gap_ = arrival_gap_us_ < 0
                             ? sample
                             : arrival_log_gap_ + kArrivalWeight * (sample - arrival_log_gap_);
      arrival_gap_us_ = std::exp(arrival_log_gap_);
    }
    arrival_cost_ = arrival_cost_ < 0 ? static_cast<double>(cost)
                                      : arrival_cost_ + kArrivalWeight * (cost - arrival_cost_);
    last_arrival_us_ = now;
  }

  // Rule (c)'s first condition: with the arrival rate lambda (arithmetic mean) and the model's
  // fixed cost b, lambda * b > kFixedCostShare, i.e. batches of one would spend that share of
  // the time in fixed costs.
  bool FixedCostHeavyLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (arrival_mean_gap_us_ <= 0 || model_.samples() < kMinSamplesForAdmission) return false;
    return std::max(0.0, model_.intercept()) / arrival_mean_gap_us_ >
           kFixedCostShare * static_cast<double>(capacity_);
  }

  // If a batch is due at `now` and an executor slot is free, moves it out of the queue, claims
  // the slot and returns true. The batch may hold only expired tasks (nothing to execute, no
  // slot claimed); that still counts as progress for RunOnce.
  bool TakeBatchLocked(int64_t now, Batch* batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (queue_.empty() || running_ >= capacity_) return false;
    const int64_t token_budget = options_.max_batch_tokens;
    // A full token budget is a full batch: the next task could not join it, so waiting only
    // adds latency.
    const bool by_size =
        queued_cost_ >= target_ || (token_budget > 0 && queued_tokens_ >= token_budget);
    if (!by_size && !stopping_ && now < DepartureLocked()) return false;
    // By size the batch is the target; by delay (or when draining) it is whatever waits, up to
    // the hard cap, as in continuous batching.
    const int64_t limit = (by_size && !stopping_) ? target_ : options_.max_batch_size;
    batch->depart_us = now;
    batch->target = target_;
    while (!queue_.empty()) {
      Entry& front = queue_.front();
      const int64_t cost = front.task->cost();
      const int64_t deadline = front.task->deadline_us();
      if (deadline != 0 && deadline < now) {
        queued_cost_ -= cost;
        queued_bytes_ -= front.bytes;
        queued_tokens_ -= front.tokens;
        batch->expired.push_back(PopFrontLocked());
        continue;
      }
      // Never split a task; the first one always fits (cost <= max_batch_size at Submit, and a
      // task over the token budget runs alone).
      if (!batch->run.empty() &&
          (batch->cost + cost > limit ||
           (token_budget > 0 && batch->tokens + front.tokens > token_budget))) {
        break;
      }
      queued_cost_ -= cost;
      queued_bytes_ -= front.bytes;
      queued_tokens_ -= front.tokens;
      batch->cost += cost;
      batch->tokens += front.tokens;
      batch->run.push_back(PopFrontLocked());
    }
    if (!batch->run.empty()) ++running_;
    return true;
  }

  // Executes `batch` (if it has anything to run) and finishes every task in it. Called without
  // the lock; Finish is never called under it.
  void RunBatch(Batch& batch) {
    for (Entry& e : batch.expired) {
      TaskTiming timing;
      timing.queue_us = batch.depart_us - e.enqueue_us;
      e.task->Finish(absl::DeadlineExceededError(absl::StrCat(prefix_, "deadline passed after ",
                                                              timing.queue_us, " us in queue")),
                     timing);
      e.task.reset();
    }
    if (batch.run.empty()) return;

    if (async_ != nullptr) {
      // The executor keeps `flight` (inside `done`) until the batch is over; the spans point
      // into it. `done` may run inline, before Start returns.
      auto flight = std::make_unique<InFlight>(std::move(batch));
      InFlight* const f = flight.get();
      f->start_us = clock_->NowMicros();
      async_->Start(absl::MakeConstSpan(f->tasks), absl::MakeSpan(f->status),
                    [this, flight = std::move(flight)](absl::Status batch_status) mutable {
                      FinishBatch(*flight, std::move(batch_status),
                                  clock_->NowMicros() - flight->start_us);
                    });
      return;
    }
    InFlight flight(std::move(batch));
    flight.start_us = clock_->NowMicros();
    absl::Status batch_status =
        executor_->Execute(absl::MakeConstSpan(flight.tasks), absl::MakeSpan(flight.status));
    FinishBatch(flight, std::move(batch_status), clock_->NowMicros() - flight.start_us);
  }

  // A batch handed to an executor: its tasks (pointers into `batch`) and their statuses.
  struct InFlight {
    explicit InFlight(Batch b) : batch(std::move(b)), status(batch.run.size()) {
      tasks.reserve(batch.run.size());
      for (Entry& e : batch.run) tasks.push_back(e.task.get());
    }
    Batch batch;
    std::vector<Task*> tasks;
    std::vector<absl::Status> status;
    int64_t start_us = 0;
  };

  // Finishes every task of an executed batch, frees its executor slot and lets the model and the
  // AIMD target learn from it. Called without the lock, on the thread that ran the batch (or
  // the one the AsyncExecutor completed it on).
  void FinishBatch(InFlight& flight, absl::Status batch_status, int64_t exec_us) {
    Batch& batch = flight.batch;
    TaskTiming timing;
    timing.compute_us = exec_us;
    timing.batch_cost = batch.cost;
    timing.batch_tasks = static_cast<int64_t>(flight.tasks.size());
    for (size_t i = 0; i < flight.tasks.size(); ++i) {
      timing.queue_us = batch.depart_us - batch.run[i].enqueue_us;
      flight.tasks[i]->Finish(batch_status.ok() ? std::move(flight.status[i]) : batch_status,
                              timing);
      batch.run[i].task.reset();
    }

    absl::MutexLock lock(&mu_);
    --running_;
    last_finish_us_ = flight.start_us + exec_us;
    // A failed batch says nothing about how long a good one takes (it may have failed fast), so
    // neither the model nor the target learns from it.
    if (batch_status.ok()) {
      model_.Observe(static_cast<double>(batch.cost), static_cast<double>(exec_us));
      UpdateTargetLocked(batch, exec_us);
    }
    // A freed slot matters only to a worker with queued work or to Shutdown; waking idle workers
    // for nothing would cost a context switch per batch.
    if (!queue_.empty() || stopping_) cv_.SignalAll();
  }

  // AIMD after one batch. Growth needs evidence: only a batch that reached the target shows the
  // target is sustainable, so a lightly loaded replica (batches leave by delay, below target)
  // keeps its size instead of drifting to the maximum. A miss shrinks the target regardless.
  void UpdateTargetLocked(const Batch& batch, int64_t latency_us)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (options_.policy != Policy::kAimd) return;
    const AimdOptions& aimd = options_.aimd;
    const int64_t slo = options_.slo_us;
    const bool full = batch.cost >= batch.target;
    if (slo > 0 && latency_us > slo) {
      // The epsilon keeps e.g. 30 * 0.9 from rounding down to 26.
      const auto shrunk = static_cast<int64_t>(
          std::floor(static_cast<double>(target_) * aimd.multiplicative_decrease + 1e-9));
      target_ = std::max<int64_t>(1, shrunk);
      return;
    }
    if (!full) return;
    if (slo == 0 ||
        static_cast<double>(latency_us) < (1.0 - aimd.hold_band) * static_cast<double>(slo)) {
      target_ = std::min(options_.max_batch_size, target_ + aimd.additive_increase);
    }
  }

  void WorkerLoop() {
    absl::MutexLock lock(&mu_);
    while (!(stopping_ && queue_.empty())) {
      Batch batch;
      if (TakeBatchLocked(clock_->NowMicros(), &batch)) {
        mu_.Unlock();
        RunBatch(batch);
        mu_.Lock();
        continue;
      }
      if (queue_.empty() || running_ >= capacity_) {
        // Idle: no timer, a Submit (or a finished batch) wakes us.
        cv_.Wait(&mu_);
      } else {
        const int64_t wait_us =
            std::clamp<int64_t>(DepartureLocked() - clock_->NowMicros(), 1, kMaxWaitUs);
        cv_.WaitWithTimeout(&mu_, absl::Microseconds(wait_us));
      }
    }
  }

  const BatcherOptions options_;
  Executor* const executor_;    // null with an AsyncExecutor
  AsyncExecutor* const async_;  // null with an Executor
  const int64_t capacity_;      // batches in flight at once: slots of either kind
  Clock* const clock_;
  const std::string prefix_;
  int64_t delay_us_ = 0;  // the policy's queue delay

  mutable absl::Mutex mu_;
  // Signalled on Submit, batch completion and Shutdown; workers and a draining Shutdown wait.
  absl::CondVar cv_;
  static constexpr int64_t kDefaultRank = std::numeric_limits<int64_t>::max();
  // Sorted by Entry::rank, FIFO within a rank (EnqueueLocked).
  std::deque<Entry> queue_ ABSL_GUARDED_BY(mu_);
  int64_t prioritized_ ABSL_GUARDED_BY(mu_) = 0;  // queued entries with a non-default rank
  int64_t queued_cost_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t queued_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int64_t target_ ABSL_GUARDED_BY(mu_) = 1;
  LinearModel model_ ABSL_GUARDED_BY(mu_);
  // Arrival process (kAimd's adaptive delay). Negative = no sample yet.
  double arrival_log_gap_ ABSL_GUARDED_BY(mu_) = 0;  // moving average of ln(gap in us)
  double arrival_gap_us_ ABSL_GUARDED_BY(mu_) = -1;  // exp(arrival_log_gap_)
  double arrival_cost_ ABSL_GUARDED_BY(mu_) = -1;    // moving average of task cost
  int64_t last_arrival_us_ ABSL_GUARDED_BY(mu_) = -1;
  // Rule (c) (keep up): arithmetic moving average of the gaps (negative = no sample yet) and
  // moving average of "every slot busy, or another task queued, at arrival".
  double arrival_mean_gap_us_ ABSL_GUARDED_BY(mu_) = -1;
  double busy_at_arrival_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_finish_us_ ABSL_GUARDED_BY(mu_) = -1;  // end of the last batch

  absl::Mutex join_mu_;  // serializes concurrent Shutdown calls around join
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(join_mu_);
};

namespace {

absl::Status ValidateOptions(const BatcherOptions& options) {
  const std::string p = Prefix(options.name);
  auto bad = [&p](const std::string& what) { return absl::InvalidArgumentError(p + what); };
  if (options.max_batch_size < 1) return bad("max_batch_size must be >= 1");
  if (options.max_queue_delay_us < 0) return bad("max_queue_delay_us must be >= 0");
  if (options.max_queue_size < 1) return bad("max_queue_size must be >= 1");
  if (options.max_queue_bytes < 0) return bad("max_queue_bytes must be >= 0");
  if (options.max_batch_tokens < 0) return bad("max_batch_tokens must be >= 0");
  if (options.inline_max_exec_us < 0) return bad("inline_max_exec_us must be >= 0");
  if (options.slo_us < 0) return bad("slo_us must be >= 0");
  if (options.initial_batch_size < 0 || options.initial_batch_size > options.max_batch_size) {
    return bad("initial_batch_size must be in [0, max_batch_size]");
  }
  if (options.aimd.additive_increase < 1) return bad("aimd.additive_increase must be >= 1");
  if (!(options.aimd.hold_band >= 0 && options.aimd.hold_band < 1)) {
    return bad("aimd.hold_band must be in [0, 1)");
  }
  if (!(options.aimd.multiplicative_decrease > 0 && options.aimd.multiplicative_decrease < 1)) {
    return bad("aimd.multiplicative_decrease must be in (0, 1)");
  }
  if (options.num_executors < 1 || options.num_executors > 1024) {
    return bad("num_executors must be in [1, 1024]");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Batcher>> Batcher::Create(const BatcherOptions& options,
                                                         Executor* executor) {
  if (executor == nullptr) {
    return absl::InvalidArgumentError(Prefix(options.name) + "executor must not be null");
  }
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  auto impl = std::make_unique<Impl>(options, executor, nullptr);
  impl->Start();
  return std::unique_ptr<Batcher>(new Batcher(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<Batcher>> Batcher::CreateAsync(const BatcherOptions& options,
                                                              AsyncExecutor* executor) {
  const std::string p = Prefix(options.name);
  if (executor == nullptr) return absl::InvalidArgumentError(p + "executor must not be null");
  const int depth = executor->max_in_flight();
  if (depth < 1 || depth > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat(p, "executor's max_in_flight must be in [1, 1024], got ", depth));
  }
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  auto impl = std::make_unique<Impl>(options, nullptr, executor);
  impl->Start();
  return std::unique_ptr<Batcher>(new Batcher(std::move(impl)));
}

Batcher::Batcher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Batcher::~Batcher() { impl_->Shutdown(); }

absl::Status Batcher::Submit(std::unique_ptr<Task> task) { return impl_->Submit(std::move(task)); }

void Batcher::Shutdown() { impl_->Shutdown(); }

bool Batcher::RunOnce() { return impl_->RunOnceManual(); }

int64_t Batcher::NextDepartureUs() const { return impl_->NextDepartureUs(); }

BatcherStats Batcher::stats() const { return impl_->stats(); }

int64_t Batcher::target_batch_size() const { return impl_->target_batch_size(); }

}  // namespace ferry::batching
