#include "batching/batcher.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "ferry/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::batching {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kStart = 1'000'000;

struct Finished {
  int id;
  absl::Status status;
  TaskTiming timing;
};

// Records every Finish, in call order.
class Recorder {
 public:
  void Add(Finished f) {
    absl::MutexLock lock(&mu_);
    finished_.push_back(std::move(f));
  }
  std::vector<Finished> finished() const {
    absl::MutexLock lock(&mu_);
    return finished_;
  }
  std::vector<int> ids() const {
    std::vector<int> out;
    for (const Finished& f : finished()) out.push_back(f.id);
    return out;
  }
  // The single record for `id`; fails the test if there is not exactly one.
  Finished Get(int id) const {
    std::vector<Finished> hits;
    for (const Finished& f : finished()) {
      if (f.id == id) hits.push_back(f);
    }
    EXPECT_EQ(hits.size(), 1u) << "task " << id;
    return hits.empty() ? Finished{id, absl::UnknownError("never finished"), {}} : hits[0];
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<Finished> finished_ ABSL_GUARDED_BY(mu_);
};

class TestTask : public Task {
 public:
  TestTask(int id, int64_t cost, Recorder* recorder, int64_t deadline_us = 0, int64_t bytes = 0)
      : id_(id), cost_(cost), deadline_us_(deadline_us), bytes_(bytes), recorder_(recorder) {}
  int64_t cost() const override { return cost_; }
  int64_t size_bytes() const override { return bytes_; }
  int64_t deadline_us() const override { return deadline_us_; }
  void Finish(absl::Status status, const TaskTiming& timing) override {
    recorder_->Add({id_, std::move(status), timing});
  }
  int id() const { return id_; }

 private:
  int id_;
  int64_t cost_;
  int64_t deadline_us_;
  int64_t bytes_;
  Recorder* recorder_;
};

// Runs batches in zero real time, advancing a FakeClock by exec_us(cost) to simulate latency.
class FakeExecutor : public Executor {
 public:
  explicit FakeExecutor(FakeClock* clock) : clock_(clock) {}

  absl::Status Execute(absl::Span<Task* const> batch,
                       absl::Span<absl::Status> task_status) override {
    int64_t cost = 0;
    std::vector<int> ids;
    for (Task* t : batch) {
      cost += t->cost();
      ids.push_back(static_cast<TestTask*>(t)->id());
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      if (fail_ids.count(ids[i]) > 0) task_status[i] = absl::InternalError("bad row");
    }
    batches.push_back(ids);
    batch_costs.push_back(cost);
    if (advance) {
      advance(exec_us(cost));
    } else {
      clock_->AdvanceMicros(exec_us(cost));
    }
    if (!batch_errors.empty()) {
      absl::Status s = batch_errors.front();
      batch_errors.erase(batch_errors.begin());
      return s;
    }
    return absl::OkStatus();
  }

  std::function<int64_t(int64_t)> exec_us = [](int64_t) { return 100; };
  // When set, called instead of advancing the clock by the execution time (so that a simulation
  // can submit the tasks that arrive while the batch runs, at their own times).
  std::function<void(int64_t)> advance;
  std::vector<absl::Status> batch_errors;  // returned by successive batches, then OK
  std::map<int, int> fail_ids;             // ids whose task_status is set to an error
  std::vector<std::vector<int>> batches;
  std::vector<int64_t> batch_costs;

 private:
  FakeClock* clock_;
};

class BatcherTest : public ::testing::Test {
 protected:
  BatcherTest() : clock_(kStart), executor_(&clock_) {
    options_.name = "test";
    options_.clock = &clock_;
    options_.start_threads = false;
  }

  std::unique_ptr<Batcher> Make() {
    auto b = Batcher::Create(options_, &executor_);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? std::move(*b) : nullptr;
  }

  absl::Status Submit(Batcher& b, int id, int64_t cost = 1, int64_t deadline_us = 0) {
    return b.Submit(std::make_unique<TestTask>(id, cost, &recorder_, deadline_us));
  }

  // Submits `n` cost-1 tasks with ids starting at `first_id` and runs the batch that is due.
  void RunFullBatch(Batcher& b, int first_id, int64_t n) {
    for (int64_t i = 0; i < n; ++i) ASSERT_TRUE(Submit(b, first_id + static_cast<int>(i)).ok());
    ASSERT_TRUE(b.RunOnce());
  }

  struct SimResult {
    std::vector<int64_t> batch_sizes;  // tasks per executed batch, in order
    int64_t waits = 0;                 // times an executor slot was free and the batch waited
  };

  // Drives `b` on the fake clock with `clients` closed-loop clients (each sends its next request
  // rtt_us + per_reply_us * k after its answer, k = its place in the batch, as replies leave one
  // by one) until `total` requests were answered. Tasks arriving while a batch runs are submitted
  // at their own times. Every time the batcher waits with a slot free, checks that the wait ends
  // within the oldest task's max_queue_delay_us.
  SimResult RunClosedLoop(Batcher& b, int clients, int total, int64_t rtt_us, int64_t per_reply_us,
                          int64_t deadline_after_us = 0) {
    SimResult r;
    std::multimap<int64_t, int> due;  // send time -> client
    std::map<int, int> client_of;     // task id -> client
    std::map<int, int64_t> queued;    // task id -> submit time, while queued
    int next_id = 0;
    for (int c = 0; c < clients; ++c) due.emplace(clock_.NowMicros() + per_reply_us * c, c);
    auto submit_due = [&](int64_t until) {
      while (!due.empty() && due.begin()->first <= until && next_id < total) {
        clock_.AdvanceMicros(std::max<int64_t>(0, due.begin()->first - clock_.NowMicros()));
        const int id = next_id++;
        client_of[id] = due.begin()->second;
        queued[id] = clock_.NowMicros();
        due.erase(due.begin());
        const int64_t deadline = deadline_after_us > 0 ? clock_.NowMicros() + deadline_after_us : 0;
        EXPECT_TRUE(Submit(b, id, 1, deadline).ok()) << id;
      }
    };
    executor_.advance = [&](int64_t us) {
      const int64_t end = clock_.NowMicros() + us;
      submit_due(end);
      clock_.AdvanceMicros(end - clock_.NowMicros());
    };
    while (static_cast<int>(recorder_.finished().size()) < total) {
      submit_due(clock_.NowMicros());
      const size_t seen = executor_.batches.size();
      if (b.RunOnce()) {
        for (size_t i = seen; i < executor_.batches.size(); ++i) {
          const std::vector<int>& ids = executor_.batches[i];
          r.batch_sizes.push_back(static_cast<int64_t>(ids.size()));
          for (size_t k = 0; k < ids.size(); ++k) {
            queued.erase(ids[k]);
            due.emplace(clock_.NowMicros() + rtt_us + per_reply_us * static_cast<int64_t>(k),
                        client_of[ids[k]]);
          }
        }
        continue;
      }
      const int64_t departure = b.NextDepartureUs();
      if (departure >= 0) {
        ++r.waits;
        int64_t oldest = std::numeric_limits<int64_t>::max();
        for (const auto& [id, at] : queued) oldest = std::min(oldest, at);
        EXPECT_LE(departure, oldest + options_.max_queue_delay_us);
      }
      int64_t until = departure >= 0 ? departure : std::numeric_limits<int64_t>::max();
      if (!due.empty() && next_id < total) until = std::min(until, due.begin()->first);
      if (until == std::numeric_limits<int64_t>::max()) {
        ADD_FAILURE() << "nothing queued and nothing due";
        break;
      }
      clock_.AdvanceMicros(std::max<int64_t>(1, until - clock_.NowMicros()));
    }
    executor_.advance = nullptr;
    return r;
  }

  // Teaches the execution model with three batches of 4 tasks sent 20 us apart (an untrained
  // batcher does not wait), then sends a steady stream, one task every 20 us, into the idle
  // batcher until a batch departs. Returns the tasks of that batch.
  std::vector<int> TrainThenStream(Batcher& b, int64_t deadline_after_us) {
    int id = 1000;
    for (int batch = 0; batch < 3; ++batch) {
      for (int i = 0; i < 4; ++i) {
        EXPECT_TRUE(Submit(b, id++).ok());
        clock_.AdvanceMicros(20);
      }
      EXPECT_TRUE(b.RunOnce());
    }
    clock_.AdvanceMicros(20);
    const size_t seen = executor_.batches.size();
    for (int i = 0; i < 200 && executor_.batches.size() == seen; ++i) {
      const int64_t deadline = deadline_after_us > 0 ? clock_.NowMicros() + deadline_after_us : 0;
      EXPECT_TRUE(Submit(b, id++, 1, deadline).ok());
      // Departures between arrivals happen at their own time.
      const int64_t next = clock_.NowMicros() + 20;
      while (b.NextDepartureUs() >= 0 && b.NextDepartureUs() < next &&
             executor_.batches.size() == seen) {
        clock_.AdvanceMicros(std::max<int64_t>(0, b.NextDepartureUs() - clock_.NowMicros()));
        EXPECT_TRUE(b.RunOnce());
      }
      if (executor_.batches.size() == seen) clock_.AdvanceMicros(next - clock_.NowMicros());
    }
    EXPECT_GT(executor_.batches.size(), seen) << "nothing departed";
    return executor_.batches.size() > seen ? executor_.batches[seen] : std::vector<int>{};
  }

  FakeClock clock_;
  FakeExecutor executor_;
  Recorder recorder_;
  BatcherOptions options_;
};

double Mean(const std::vector<int64_t>& v, size_t from) {
  double sum = 0;
  for (size_t i = from; i < v.size(); ++i) sum += static_cast<double>(v[i]);
  return v.size() > from ? sum / static_cast<double>(v.size() - from) : 0;
}

TEST_F(BatcherTest, CreateValidatesOptions) {
  struct Case {
    std::function<void(BatcherOptions&)> mutate;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](BatcherOptions& o) { o.max_batch_size = 0; }, "max_batch_size"},
      {[](BatcherOptions& o) { o.max_queue_delay_us = -1; }, "max_queue_delay_us"},
      {[](BatcherOptions& o) { o.max_queue_size = 0; }, "max_queue_size"},
      {[](BatcherOptions& o) { o.max_queue_bytes = -1; }, "max_queue_bytes"},
      {[](BatcherOptions& o) { o.max_batch_tokens = -1; }, "max_batch_tokens"},
      {[](BatcherOptions& o) { o.slo_us = -5; }, "slo_us"},
      {[](BatcherOptions& o) { o.initial_batch_size = 64; }, "initial_batch_size"},
      {[](BatcherOptions& o) { o.aimd.additive_increase = 0; }, "additive_increase"},
      {[](BatcherOptions& o) { o.aimd.hold_band = 1.0; }, "hold_band"},
      {[](BatcherOptions& o) { o.aimd.multiplicative_decrease = 1.0; }, "multiplicative_decrease"},
      {[](BatcherOptions& o) { o.num_executors = 0; }, "num_executors"},
  };
  for (const Case& c : cases) {
    BatcherOptions o = options_;
    c.mutate(o);
    auto b = Batcher::Create(o, &executor_);
    ASSERT_FALSE(b.ok()) << c.field;
    EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(b.status().message()), HasSubstr(c.field));
  }
  EXPECT_FALSE(Batcher::Create(options_, nullptr).ok());
}

TEST_F(BatcherTest, DepartsWhenTargetSizeReached) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 4;
  options_.max_queue_delay_us = 1000;
  auto b = Make();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Submit(*b, i).ok());
  EXPECT_FALSE(b->RunOnce());
  EXPECT_EQ(b->stats().queued_cost, 3);
  ASSERT_TRUE(Submit(*b, 3).ok());
  EXPECT_TRUE(b->RunOnce());  // no clock advance needed
  ASSERT_EQ(executor_.batches.size(), 1u);
  EXPECT_THAT(executor_.batches[0], ElementsAre(0, 1, 2, 3));
  EXPECT_FALSE(b->RunOnce());
  EXPECT_EQ(b->NextDepartureUs(), -1);
}

TEST_F(BatcherTest, DepartsWhenDelayBudgetUsed) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 8;
  options_.max_queue_delay_us = 1000;
  auto b = Make();
  ASSERT_TRUE(Submit(*b, 1).ok());
  clock_.AdvanceMicros(300);
  ASSERT_TRUE(Submit(*b, 2, 2).ok());
  EXPECT_EQ(b->NextDepartureUs(), kStart + 1000);  // the oldest task decides
  clock_.AdvanceMicros(699);
  EXPECT_FALSE(b->RunOnce());
  clock_.AdvanceMicros(1);
  EXPECT_TRUE(b->RunOnce());
  ASSERT_EQ(executor_.batches.size(), 1u);
  EXPECT_THAT(executor_.batches[0], ElementsAre(1, 2));
  EXPECT_EQ(recorder_.Get(1).timing.queue_us, 1000);
  EXPECT_EQ(recorder_.Get(2).timing.queue_us, 700);
}

TEST_F(BatcherTest, AimdGrowsAdditivelyOnFullBatchesUnderSlo) {
  options_.policy = Policy::kAimd;
  options_.max_batch_size = 8;
  options_.slo_us = 1000;
  executor_.exec_us = [](int64_t) { return 100; };  // well under the SLO
  auto b = Make();
  EXPECT_EQ(b->target_batch_size(), 1);
  RunFullBatch(*b, 0, 1);
  EXPECT_EQ(b->target_batch_size(), 3);
  RunFullBatch(*b, 10, 3);
  EXPECT_EQ(b->target_batch_size(), 5);
  RunFullBatch(*b, 20, 5);
  EXPECT_EQ(b->target_batch_size(), 7);
  RunFullBatch(*b, 30, 7);
  EXPECT_EQ(b->target_batch_size(), 8);  // capped at max_batch_size
  EXPECT_EQ(executor_.batch_costs, (std::vector<int64_t>{1, 3, 5, 7}));

  // A batch that leaves by delay below the target is no evidence: the target holds.
  ASSERT_TRUE(Submit(*b, 40).ok());
  EXPECT_FALSE(b->RunOnce());
  clock_.AdvanceMicros(options_.max_queue_delay_us);
  EXPECT_TRUE(b->RunOnce());
  EXPECT_EQ(b->target_batch_size(), 8);
}

TEST_F(BatcherTest, AimdLightLoadDoesNotGrow) {
  options_.policy = Policy::kAimd;
  options_.max_batch_size = 8;
  options_.initial_batch_size = 4;
  options_.slo_us = 1000;
  auto b = Make();
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(Submit(*b, i).ok());
    clock_.AdvanceMicros(options_.max_queue_delay_us);
    ASSERT_TRUE(b->RunOnce());
  }
  EXPECT_EQ(b->target_batch_size(), 4);
}

TEST_F(BatcherTest, AimdHoldsWithinBandBelowSlo) {
  options_.policy = Policy::kAimd;
  options_.max_batch_size = 16;
  options_.initial_batch_size = 4;
  options_.slo_us = 1000;
  executor_.exec_us = [](int64_t) { return 950; };  // in [900, 1000]: hold
  auto b = Make();
  RunFullBatch(*b, 0, 4);
  EXPECT_EQ(b->target_batch_size(), 4);
  executor_.exec_us = [](int64_t) { return 1000; };  // exactly the SLO is not a miss
  RunFullBatch(*b, 10, 4);
  EXPECT_EQ(b->target_batch_size(), 4);
  executor_.exec_us = [](int64_t) { return 899; };
  RunFullBatch(*b, 20, 4);
  EXPECT_EQ(b->target_batch_size(), 6);
}

TEST_F(BatcherTest, AimdDecreasesMultiplicativelyOnMissAndFloorsAtOne) {
  options_.policy = Policy::kAimd;
  options_.max_batch_size = 32;
  options_.initial_batch_size = 30;
  options_.slo_us = 1000;
  executor_.exec_us = [](int64_t) { return 1500; };
  auto b = Make();
  RunFullBatch(*b, 0, 30);
  EXPECT_EQ(b->target_batch_size(), 27);  // floor(30 * 0.9)
  RunFullBatch(*b, 100, 27);
  EXPECT_EQ(b->target_batch_size(), 24);  // floor(24.3)
  // A miss shrinks the target even when the batch was not full.
  ASSERT_TRUE(Submit(*b, 200).ok());
  clock_.AdvanceMicros(options_.max_queue_delay_us);
  ASSERT_TRUE(b->RunOnce());
  EXPECT_EQ(b->target_batch_size(), 21);  // floor(21.6)
  int id = 300;
  for (int i = 0; i < 40; ++i) {
    const int64_t target = b->target_batch_size();
    RunFullBatch(*b, id, target);
    id += static_cast<int>(target);
  }
  EXPECT_EQ(b->target_batch_size(), 1);
}

TEST_F(BatcherTest, AimdWithoutSloGrowsToMax) {
  options_.policy = Policy::kAimd;
  options_.max_batch_size = 5;
  options_.slo_us = 0;
  executor_.exec_us = [](int64_t) { return 1'000'000; };  // no SLO: latency is irrelevant
  auto b = Make();
  RunFullBatch(*b, 0, 1);
  RunFullBatch(*b, 10, 3);
  EXPECT_EQ(b->target_batch_size(), 5);
  RunFullBatch(*b, 20, 5);
  EXPECT_EQ(b->target_batch_size(), 5);
}

TEST_F(BatcherTest, FixedPolicyKeepsMaxBatchSize) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 4;
  options_.slo_us = 100;
  executor_.exec_us = [](int64_t) { return 5000; };  // misses the SLO every time
  auto b = Make();
  EXPECT_EQ(b->target_batch_size(), 4);
  RunFullBatch(*b, 0, 4);
  RunFullBatch(*b, 10, 4);
  EXPECT_EQ(b->target_batch_size(), 4);
  EXPECT_EQ(b->stats().target_batch_size, 4);
}

TEST_F(BatcherTest, OffPolicyRunsEachTaskAloneWithoutDelay) {
  options_.policy = Policy::kOff;
  options_.max_batch_size = 8;
  options_.max_queue_delay_us = 5000;
  auto b = Make();
  EXPECT_EQ(b->target_batch_size(), 1);
  ASSERT_TRUE(Submit(*b, 1, 3).ok());
  ASSERT_TRUE(Submit(*b, 2).ok());
  ASSERT_TRUE(Submit(*b, 3).ok());
  EXPECT_EQ(b->NextDepartureUs(), kStart);
  EXPECT_TRUE(b->RunOnce());
  EXPECT_TRUE(b->RunOnce());
  EXPECT_TRUE(b->RunOnce());
  EXPECT_FALSE(b->RunOnce());
  EXPECT_EQ(executor_.batches, (std::vector<std::vector<int>>{{1}, {2}, {3}}));
  EXPECT_EQ(b->target_batch_size(), 1);
}

// Policy aimd with the manifest defaults (delay 1000 us, max 32): one closed-loop client sends
// its next request only after its answer, so nothing else can join its batch; each request must
// leave at once, whatever the model costs, before and after the execution model has learned.
TEST_F(BatcherTest, AdaptiveDelaySingleClosedLoopClientDepartsAtOnce) {
  for (const int64_t fixed_us : {5, 100, 800}) {
    SCOPED_TRACE(fixed_us);
    const size_t first = recorder_.finished().size();
    options_ = BatcherOptions();
    options_.clock = &clock_;
    options_.start_threads = false;
    ASSERT_EQ(options_.policy, Policy::kAimd);
    executor_.exec_us = [fixed_us](int64_t cost) { return 2 * cost + fixed_us; };
    auto b = Make();
    for (int i = 0; i < 50; ++i) {
      ASSERT_TRUE(Submit(*b, i).ok());
      EXPECT_LE(b->NextDepartureUs(), clock_.NowMicros()) << i;
      ASSERT_TRUE(b->RunOnce()) << "request " << i << " waited";
      clock_.AdvanceMicros(30);  // the answer travels back, the next request comes
    }
    const std::vector<Finished> finished = recorder_.finished();
    ASSERT_EQ(finished.size(), first + 50);
    for (size_t i = first; i < finished.size(); ++i) {
      EXPECT_EQ(finished[i].timing.queue_us, 0) << finished[i].id;
    }
    EXPECT_GT(b->stats().arrival_gap_us, 30.0);
  }
}

// The same closed loop under policy fixed waits out the delay: the adaptive rule is aimd's only.
TEST_F(BatcherTest, FixedPolicyStillWaitsForFullBatchOrDelay) {
  options_.policy = Policy::kFixed;
  executor_.exec_us = [](int64_t cost) { return 2 * cost + 5; };
  auto b = Make();
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(Submit(*b, i).ok());
    EXPECT_FALSE(b->RunOnce());
    clock_.AdvanceMicros(options_.max_queue_delay_us);
    ASSERT_TRUE(b->RunOnce());
  }
  for (const Finished& f : recorder_.finished()) EXPECT_EQ(f.timing.queue_us, 1000);
}

// 16 closed-loop clients on a model with a high fixed cost per batch (b = 400 us): when the
// executor frees up, only the clients answered first are back; departing at once would split
// the clients into a small and a large batch, each paying b. Waiting pays, so batches fill up.
TEST_F(BatcherTest, AdaptiveDelayWaitsWhenFixedCostIsHighAndArrivalsFrequent) {
  options_.max_batch_size = 16;
  executor_.exec_us = [](int64_t cost) { return 2 * cost + 400; };
  auto b = Make();
  SimResult r = RunClosedLoop(*b, 16, 640, /*rtt_us=*/10, /*per_reply_us=*/5);
  EXPECT_GT(r.waits, 0);
  // After warm-up (AIMD target growth, model learning) batches are (nearly) full.
  EXPECT_GE(Mean(r.batch_sizes, r.batch_sizes.size() / 2), 14.0);
  EXPECT_EQ(b->target_batch_size(), 16);
}

// The same clients on a cheap model (b = 5 us): a bigger batch saves almost nothing, so nothing
// waits with a slot free; the batch is whatever queued while the executor was busy.
TEST_F(BatcherTest, AdaptiveDelayDoesNotWaitWhenFixedCostIsLow) {
  options_.max_batch_size = 16;
  executor_.exec_us = [](int64_t cost) { return cost + 5; };
  auto b = Make();
  SimResult r = RunClosedLoop(*b, 16, 640, /*rtt_us=*/10, /*per_reply_us=*/5);
  EXPECT_EQ(r.waits, 0);
  for (const Finished& f : recorder_.finished()) {
    EXPECT_LE(f.timing.queue_us, 50) << f.id;  // at most a short batch's execution
  }
  EXPECT_LT(Mean(r.batch_sizes, r.batch_sizes.size() / 2), 8.0);
}

// An idle batcher, a model with a high fixed cost (b = 3000 us) and a steady stream of tasks
// 20 us apart: waiting pays long past the delay budget, so the batch fills for about the whole
// budget, and leaves when no further arrival fits in what is left of it: one gap before
// max_queue_delay_us, never after.
TEST_F(BatcherTest, AdaptiveDelayWaitsForSteadyStreamButNeverPastMaxQueueDelay) {
  options_.max_batch_size = 64;
  options_.initial_batch_size = 64;
  executor_.exec_us = [](int64_t cost) { return cost + 3000; };
  auto b = Make();
  const std::vector<int> batch = TrainThenStream(*b, 0);
  ASSERT_GE(batch.size(), 40u);
  const Finished first = recorder_.Get(batch[0]);
  EXPECT_LE(first.timing.queue_us, options_.max_queue_delay_us);
  // About one gap before the bound (the estimate still remembers the training's longer gaps).
  EXPECT_GE(first.timing.queue_us, options_.max_queue_delay_us - 2 * 20);
}

// Drives `b` with an open-loop stream, one task every `gap_us`, `total` tasks, submitting the
// tasks that arrive while a batch runs at their own times; returns the executed batch sizes.
std::vector<int64_t> RunOpenLoop(Batcher& b, FakeClock& clock, FakeExecutor& executor,
                                 Recorder& recorder, int64_t gap_us, int total) {
  int next_id = 0;
  int64_t next_at = clock.NowMicros();
  auto submit_due = [&](int64_t until) {
    while (next_id < total && next_at <= until) {
      clock.AdvanceMicros(std::max<int64_t>(0, next_at - clock.NowMicros()));
      EXPECT_TRUE(b.Submit(std::make_unique<TestTask>(next_id, 1, &recorder)).ok()) << next_id;
      ++next_id;
      next_at += gap_us;
    }
  };
  executor.advance = [&](int64_t us) {
    const int64_t end = clock.NowMicros() + us;
    submit_due(end);
    clock.AdvanceMicros(end - clock.NowMicros());
  };
  std::vector<int64_t> sizes;
  while (static_cast<int>(recorder.finished().size()) < total) {
    submit_due(clock.NowMicros());
    const size_t seen = executor.batches.size();
    if (b.RunOnce()) {
      for (size_t i = seen; i < executor.batches.size(); ++i) {
        sizes.push_back(static_cast<int64_t>(executor.batches[i].size()));
      }
      continue;
    }
    int64_t until = b.NextDepartureUs();
    if (next_id < total) until = until >= 0 ? std::min(until, next_at) : next_at;
    if (until < 0) {
      ADD_FAILURE() << "nothing queued and nothing due";
      break;
    }
    clock.AdvanceMicros(std::max<int64_t>(1, until - clock.NowMicros()));
  }
  executor.advance = nullptr;
  return sizes;
}

// Rule (c), keep up: an open stream (a task every 20 us) on a model whose fixed cost per batch
// (30 us) exceeds the gap. Without an SLO the latency-first rules send whatever waits when the
// executor frees up (about two tasks: the executor is always busy, one batch of one and the next
// of what came meanwhile). With an SLO, latency under it is free: the batcher stops departing
// early and the batches grow, as a fixed policy's would, without any task waiting past the
// delay budget.
TEST_F(BatcherTest, AdaptiveDelayKeepsUpWithAnOpenStreamOnlyUnderAnSlo) {
  for (const int64_t slo_us : {int64_t{0}, int64_t{10000}}) {
    SCOPED_TRACE(slo_us);
    options_ = BatcherOptions();
    options_.name = "test";
    options_.clock = &clock_;
    options_.start_threads = false;
    options_.max_batch_size = 64;
    options_.slo_us = slo_us;
    executor_.exec_us = [](int64_t cost) { return cost + 30; };
    auto b = Make();
    Recorder recorder;
    const std::vector<int64_t> sizes = RunOpenLoop(*b, clock_, executor_, recorder, 20, 2000);
    const double mean = Mean(sizes, sizes.size() / 2);
    int64_t max_queue_us = 0;
    for (const Finished& f : recorder.finished()) {
      max_queue_us = std::max(max_queue_us, f.timing.queue_us);
    }
    EXPECT_LE(max_queue_us, options_.max_queue_delay_us);
    if (slo_us == 0) {
      EXPECT_LT(mean, 3.0);
    } else {
      EXPECT_GE(mean, 8.0);
    }
  }
}

// Under an SLO, a single closed-loop client on a model with a high fixed cost is still never
// waited for: it arrives while the executor is idle, and nothing else can come.
TEST_F(BatcherTest, AdaptiveDelayUnderAnSloDoesNotWaitForASingleClosedLoopClient) {
  options_.slo_us = 10000;
  executor_.exec_us = [](int64_t cost) { return 2 * cost + 800; };
  auto b = Make();
  SimResult r = RunClosedLoop(*b, 1, 50, /*rtt_us=*/30, /*per_reply_us=*/0);
  EXPECT_EQ(r.waits, 0);
  for (const Finished& f : recorder_.finished()) EXPECT_EQ(f.timing.queue_us, 0) << f.id;
}

// The same stream on a cheap model (b = 5 us): a bigger batch saves nothing worth a wait.
TEST_F(BatcherTest, AdaptiveDelayDoesNotWaitForSteadyStreamWhenFixedCostIsLow) {
  options_.max_batch_size = 64;
  options_.initial_batch_size = 64;
  executor_.exec_us = [](int64_t cost) { return cost + 5; };
  auto b = Make();
  const std::vector<int> batch = TrainThenStream(*b, 0);
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(recorder_.Get(batch[0]).timing.queue_us, 0);
}

// With a deadline 600 us after arrival (b = 400 us, delay budget 1000 us), waiting would pay
// but must stop so that the predicted execution still ends in time.
TEST_F(BatcherTest, AdaptiveDelayRespectsDeadlines) {
  options_.max_batch_size = 64;
  options_.initial_batch_size = 64;
  executor_.exec_us = [](int64_t cost) { return cost + 400; };
  auto b = Make();
  const std::vector<int> batch = TrainThenStream(*b, 600);
  ASSERT_GE(batch.size(), 3u);
  for (int id : batch) {
    const Finished f = recorder_.Get(id);
    EXPECT_TRUE(f.status.ok()) << id << ": " << f.status;
    EXPECT_LE(f.timing.queue_us + f.timing.compute_us, 600) << id;
  }
  // It did wait for most of what the deadline allowed.
  const Finished first = recorder_.Get(batch[0]);
  EXPECT_GE(first.timing.queue_us + first.timing.compute_us, 500);
}

TEST_F(BatcherTest, NeverExceedsMaxBatchSizeAndRejectsOversizedTasks) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 4;
  auto b = Make();
  absl::Status s = Submit(*b, 99, 5);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(recorder_.Get(99).status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Submit(*b, 98, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(recorder_.Get(98).status.code(), absl::StatusCode::kInvalidArgument);

  const std::vector<int64_t> costs = {3, 2, 3, 1, 4, 2, 2, 1, 1, 3};
  for (size_t i = 0; i < costs.size(); ++i) {
    ASSERT_TRUE(Submit(*b, static_cast<int>(i), costs[i]).ok());
  }
  clock_.AdvanceMicros(options_.max_queue_delay_us);
  while (b->RunOnce()) {
  }
  // FIFO, tasks never split, each batch as large as fits.
  EXPECT_EQ(executor_.batches,
            (std::vector<std::vector<int>>{{0}, {1}, {2, 3}, {4}, {5, 6}, {7, 8}, {9}}));
  for (int64_t c : executor_.batch_costs) EXPECT_LE(c, 4);
  EXPECT_EQ(recorder_.finished().size(), costs.size() + 2);
}

TEST_F(BatcherTest, QueueFullIsRejectedInlineExactlyOnce) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 8;
  options_.max_queue_size = 2;
  auto b = Make();
  ASSERT_TRUE(Submit(*b, 1).ok());
  ASSERT_TRUE(Submit(*b, 2).ok());
  absl::Status s = Submit(*b, 3);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("queue full (2 tasks): retry later"));
  // Finished before Submit returned, with the same status, and only once.
  EXPECT_THAT(recorder_.ids(), ElementsAre(3));
  EXPECT_EQ(recorder_.Get(3).status, s);
  EXPECT_TRUE(recorder_.Get(3).timing.rejected_at_submit);
  clock_.AdvanceMicros(options_.max_queue_delay_us);
  EXPECT_TRUE(b->RunOnce());
  EXPECT_TRUE(Submit(*b, 4).ok());  // room again
  b.reset();
  EXPECT_THAT(recorder_.ids(), ElementsAre(3, 1, 2, 4));
  EXPECT_FALSE(recorder_.Get(1).timing.rejected_at_submit);
  EXPECT_FALSE(recorder_.Get(4).timing.rejected_at_submit);
}

TEST_F(BatcherTest, QueueBytesBoundTheWaitingPayloads) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 8;
  options_.max_queue_bytes = 1000;
  auto b = Make();
  auto submit = [&](int id, int64_t bytes) {
    return b->Submit(std::make_unique<TestTask>(id, 1, &recorder_, 0, bytes));
  };
  ASSERT_TRUE(submit(1, 600).ok());
  ASSERT_TRUE(submit(2, 400).ok());
  EXPECT_EQ(b->stats().queued_bytes, 1000);
  // Full by bytes, though far from max_queue_size tasks: retry later.
  absl::Status s = submit(3, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("1000 of 1000 bytes queued"));
  // Larger than the whole budget: it could never be queued, so it is not "retry later".
  s = submit(4, 1001);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("exceeds max_queue_bytes=1000"));
  // Departure returns the bytes.
  clock_.AdvanceMicros(options_.max_queue_delay_us);
  ASSERT_TRUE(b->RunOnce());
  EXPECT_EQ(b->stats().queued_bytes, 0);
  EXPECT_TRUE(submit(5, 1000).ok());
  b.reset();
  EXPECT_THAT(recorder_.ids(), ElementsAre(3, 4, 1, 2, 5));
  EXPECT_TRUE(recorder_.Get(5).status.ok());
}

TEST_F(BatcherTest, ResponsesReachTheirOwnCallersInOrderWithTiming) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 4;
  options_.max_queue_delay_us = 1000;
  executor_.exec_us = [](int64_t cost) { return 10 * cost + 50; };
  auto b = Make();
  ASSERT_TRUE(Submit(*b, 1).ok());
  clock_.AdvanceMicros(100);
  ASSERT_TRUE(Submit(*b, 2, 2).ok());
  clock_.AdvanceMicros(100);
  ASSERT_TRUE(Submit(*b, 3).ok());  // cost 4 reached: departs now
  ASSERT_TRUE(Submit(*b, 4).ok());
  ASSERT_TRUE(b->RunOnce());
  EXPECT_THAT(recorder_.ids(), ElementsAre(1, 2, 3));
  Finished f1 = recorder_.Get(1), f2 = recorder_.Get(2), f3 = recorder_.Get(3);
  EXPECT_EQ(f1.timing.queue_us, 200);
  EXPECT_EQ(f2.timing.queue_us, 100);
  EXPECT_EQ(f3.timing.queue_us, 0);
  for (const Finished& f : {f1, f2, f3}) {
    EXPECT_TRUE(f.status.ok());
    EXPECT_EQ(f.timing.compute_us, 90);
    EXPECT_EQ(f.timing.batch_cost, 4);
    EXPECT_EQ(f.timing.batch_tasks, 3);
  }
  // Task 4 was enqueued at kStart + 200; the clock is now kStart + 290.
  clock_.AdvanceMicros(910);
  ASSERT_TRUE(b->RunOnce());
  Finished f4 = recorder_.Get(4);
  EXPECT_EQ(f4.timing.queue_us, 1000);
  EXPECT_EQ(f4.timing.compute_us, 60);
  EXPECT_EQ(f4.timing.batch_tasks, 1);
}

TEST_F(BatcherTest, ExecutorErrorFailsOnlyItsBatch) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 2;
  executor_.batch_errors = {absl::UnavailableError("device lost")};
  auto b = Make();
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(Submit(*b, i).ok());
  ASSERT_TRUE(b->RunOnce());
  ASSERT_TRUE(b->RunOnce());
  EXPECT_EQ(recorder_.Get(0).status, absl::UnavailableError("device lost"));
  EXPECT_EQ(recorder_.Get(1).status, absl::UnavailableError("device lost"));
  EXPECT_TRUE(recorder_.Get(2).status.ok());
  EXPECT_TRUE(recorder_.Get(3).status.ok());
  EXPECT_EQ(recorder_.Get(0).timing.batch_tasks, 2);
}

TEST_F(BatcherTest, PerTaskFailureFailsOnlyThatTask) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 3;
  executor_.fail_ids = {{1, 1}};
  auto b = Make();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Submit(*b, i).ok());
  ASSERT_TRUE(b->RunOnce());
  EXPECT_TRUE(recorder_.Get(0).status.ok());
  EXPECT_EQ(recorder_.Get(1).status, absl::InternalError("bad row"));
  EXPECT_TRUE(recorder_.Get(2).status.ok());
}

TEST_F(BatcherTest, ExpiredTasksGetDeadlineExceededAndDoNotRun) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 8;
  options_.max_queue_delay_us = 1000;
  auto b = Make();
  ASSERT_TRUE(Submit(*b, 1, 1, kStart + 500).ok());
  ASSERT_TRUE(Submit(*b, 2).ok());
  // The oldest task's deadline shortens its delay budget.
  EXPECT_EQ(b->NextDepartureUs(), kStart + 500);
  // A deadline that has already passed cannot be met even if run alone now.
  EXPECT_EQ(Submit(*b, 3, 1, kStart).code(), absl::StatusCode::kDeadlineExceeded);
  clock_.AdvanceMicros(600);  // e.g. the executor was busy elsewhere
  ASSERT_TRUE(b->RunOnce());
  ASSERT_EQ(executor_.batches.size(), 1u);
  EXPECT_THAT(executor_.batches[0], ElementsAre(2));
  Finished f1 = recorder_.Get(1);
  EXPECT_EQ(f1.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(f1.timing.queue_us, 600);
  EXPECT_EQ(f1.timing.compute_us, 0);
  EXPECT_TRUE(recorder_.Get(2).status.ok());
  EXPECT_EQ(recorder_.Get(3).status.code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(BatcherTest, AdmissionUsesLearnedLinearModel) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 8;
  options_.max_queue_delay_us = 0;  // whatever waits departs at once
  executor_.exec_us = [](int64_t cost) { return 10 * cost + 100; };
  auto b = Make();
  // Untrained: a tight deadline is admitted.
  ASSERT_TRUE(Submit(*b, 0, 4, clock_.NowMicros() + 1).ok());
  ASSERT_TRUE(b->RunOnce());
  int id = 1;
  for (int64_t n : {1, 2, 8, 3, 5}) {
    for (int64_t i = 0; i < n; ++i) ASSERT_TRUE(Submit(*b, id++).ok());
    ASSERT_TRUE(b->RunOnce());
  }
  BatcherStats st = b->stats();
  EXPECT_NEAR(st.model_slope_us, 10.0, 0.5);
  EXPECT_NEAR(st.model_intercept_us, 100.0, 2.0);
  // Predicted 10 * 4 + 100 = 140 us.
  const int64_t now = clock_.NowMicros();
  absl::Status s = Submit(*b, 100, 4, now + 130);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(recorder_.Get(100).status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(Submit(*b, 101, 4, now + 150).ok());
  // The deadline also shortens the delay budget by the predicted time of the waiting batch.
  EXPECT_EQ(b->NextDepartureUs(), now);  // delay 0 dominates here
}

TEST_F(BatcherTest, DeadlineBudgetSubtractsPredictedExecution) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 8;
  options_.max_queue_delay_us = 10'000;
  executor_.exec_us = [](int64_t cost) { return 100 * cost + 200; };
  auto b = Make();
  for (int64_t n : {1, 2, 4, 8}) {
    for (int64_t i = 0; i < n; ++i) ASSERT_TRUE(Submit(*b, static_cast<int>(n * 10 + i)).ok());
    clock_.AdvanceMicros(options_.max_queue_delay_us);
    ASSERT_TRUE(b->RunOnce());
  }
  const int64_t now = clock_.NowMicros();
  ASSERT_TRUE(Submit(*b, 1, 2, now + 5000).ok());
  // Predicted for the waiting cost 2: 400 us, so it must leave by deadline - 400.
  EXPECT_EQ(b->NextDepartureUs(), now + 5000 - 400);
  clock_.AdvanceMicros(4599);
  EXPECT_FALSE(b->RunOnce());
  clock_.AdvanceMicros(1);
  EXPECT_TRUE(b->RunOnce());
  EXPECT_TRUE(recorder_.Get(1).status.ok());
}

TEST_F(BatcherTest, ShutdownDrainsQueueThenRejects) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 2;
  options_.max_queue_delay_us = 1'000'000;
  auto b = Make();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Submit(*b, i).ok());
  b->Shutdown();  // no clock advance: draining ignores the delay
  EXPECT_EQ(executor_.batches, (std::vector<std::vector<int>>{{0, 1}, {2}}));
  EXPECT_THAT(recorder_.ids(), ElementsAre(0, 1, 2));
  for (const Finished& f : recorder_.finished()) EXPECT_TRUE(f.status.ok());
  absl::Status s = Submit(*b, 9);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(recorder_.Get(9).status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(b->stats().queued_tasks, 0);
  b->Shutdown();  // idempotent
}

// Real threads and the real clock: every task is answered exactly once, batches stay bounded.
class CountingTask : public Task {
 public:
  CountingTask(int64_t cost, std::atomic<int>* finish_count, std::atomic<int>* errors,
               absl::Mutex* mu, int* done)
      : cost_(cost), finish_count_(finish_count), errors_(errors), mu_(mu), done_(done) {}
  int64_t cost() const override { return cost_; }
  void Finish(absl::Status status, const TaskTiming& timing) override {
    if (!status.ok() || timing.batch_tasks < 1) errors_->fetch_add(1);
    finish_count_->fetch_add(1);
    absl::MutexLock lock(mu_);
    ++*done_;
  }

 private:
  int64_t cost_;
  std::atomic<int>* finish_count_;
  std::atomic<int>* errors_;
  absl::Mutex* mu_;
  int* done_;
};

class BoundCheckingExecutor : public Executor {
 public:
  explicit BoundCheckingExecutor(int64_t max) : max_(max) {}
  absl::Status Execute(absl::Span<Task* const> batch, absl::Span<absl::Status>) override {
    const int now = in_flight_.fetch_add(1) + 1;
    int prev = max_in_flight_.load();
    while (now > prev && !max_in_flight_.compare_exchange_weak(prev, now)) {
    }
    int64_t cost = 0;
    for (Task* t : batch) cost += t->cost();
    if (cost > max_) over_max_.fetch_add(1);
    batches_.fetch_add(1);
    in_flight_.fetch_sub(1);
    return absl::OkStatus();
  }
  int64_t max_;
  std::atomic<int> in_flight_{0}, max_in_flight_{0}, over_max_{0}, batches_{0};
};

TEST(BatcherThreadedTest, ManySubmittersEveryTaskFinishedExactlyOnce) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 2000;
  constexpr int kTotal = kThreads * kPerThread;
  BatcherOptions options;
  options.name = "threaded";
  options.policy = Policy::kAimd;
  options.max_batch_size = 8;
  options.max_queue_delay_us = 200;
  options.max_queue_size = kTotal;
  options.slo_us = 10'000;
  options.num_executors = 2;
  BoundCheckingExecutor executor(options.max_batch_size);
  auto b = Batcher::Create(options, &executor);
  ASSERT_TRUE(b.ok()) << b.status();

  std::vector<std::atomic<int>> counts(kTotal);
  std::atomic<int> errors{0};
  absl::Mutex mu;
  int done = 0;
  std::vector<std::thread> submitters;
  for (int t = 0; t < kThreads; ++t) {
    submitters.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const int idx = t * kPerThread + i;
        absl::Status s = (*b)->Submit(
            std::make_unique<CountingTask>(1 + idx % 3, &counts[idx], &errors, &mu, &done));
        if (!s.ok()) errors.fetch_add(1);
      }
    });
  }
  for (std::thread& t : submitters) t.join();
  {
    absl::MutexLock lock(&mu);
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(
                                        +[](int* d) { return *d == kTotal; }, &done),
                                    absl::Seconds(30)));
  }
  for (int i = 0; i < kTotal; ++i) ASSERT_EQ(counts[i].load(), 1) << "task " << i;
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(executor.over_max_.load(), 0);
  EXPECT_LE(executor.max_in_flight_.load(), options.num_executors);
  EXPECT_LT(executor.batches_.load(), kTotal);  // some batching happened
  BatcherStats st = (*b)->stats();
  EXPECT_EQ(st.queued_tasks, 0);
  EXPECT_EQ(st.queued_cost, 0);
  b->reset();
  for (int i = 0; i < kTotal; ++i) ASSERT_EQ(counts[i].load(), 1) << "task " << i;
}

TEST(BatcherThreadedTest, DestructorDrainsWithoutWaitingForDelay) {
  BatcherOptions options;
  options.policy = Policy::kFixed;
  options.max_batch_size = 1000;
  options.max_queue_delay_us = 3'600'000'000;  // an hour: only draining can send these
  options.num_executors = 3;
  BoundCheckingExecutor executor(options.max_batch_size);
  std::atomic<int> errors{0};
  std::vector<std::atomic<int>> counts(10);
  absl::Mutex mu;
  int done = 0;
  {
    auto b = Batcher::Create(options, &executor);
    ASSERT_TRUE(b.ok()) << b.status();
    for (int i = 0; i < 10; ++i) {
      ASSERT_TRUE(
          (*b)->Submit(std::make_unique<CountingTask>(1, &counts[i], &errors, &mu, &done)).ok());
    }
  }  // ~Batcher drains and joins
  for (int i = 0; i < 10; ++i) EXPECT_EQ(counts[i].load(), 1);
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GE(executor.batches_.load(), 1);
}

// Records which thread ran each batch and how long it pretends to take.
class ThreadRecordingExecutor : public Executor {
 public:
  absl::Status Execute(absl::Span<Task* const>, absl::Span<absl::Status>) override {
    absl::MutexLock lock(&mu_);
    threads_.push_back(std::this_thread::get_id());
    return absl::OkStatus();
  }
  std::vector<std::thread::id> threads() const {
    absl::MutexLock lock(&mu_);
    return threads_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::thread::id> threads_ ABSL_GUARDED_BY(mu_);
};

// Submits one task and waits until it is finished (which thread ran it is the executor's record:
// a worker may well finish a task before Submit returns, so timing proves nothing).
void SubmitAndWait(Batcher& b, int id, Recorder* recorder) {
  const size_t before = recorder->finished().size();
  EXPECT_TRUE(b.Submit(std::make_unique<TestTask>(id, 1, recorder)).ok());
  for (int spins = 0; recorder->finished().size() == before && spins < 10'000'000; ++spins) {
    std::this_thread::yield();
  }
  // The batch's timing reaches the execution model after its tasks are finished, together with
  // the release of the executor slot.
  for (int spins = 0; b.stats().running_batches > 0 && spins < 10'000'000; ++spins) {
    std::this_thread::yield();
  }
}

TEST(BatcherThreadedTest, ShortBatchesRunOnTheSubmittingThreadOnceLearned) {
  BatcherOptions options;
  options.policy = Policy::kOff;  // every task is due at once
  options.max_batch_size = 4;
  options.inline_max_exec_us = 1'000'000;  // anything this executor does is "short"
  ThreadRecordingExecutor executor;
  Recorder recorder;
  auto b = Batcher::Create(options, &executor);
  ASSERT_TRUE(b.ok()) << b.status();
  // Until the execution model has samples, batches go to the batcher thread.
  for (int i = 0; i < 3; ++i) SubmitAndWait(**b, i, &recorder);
  // Then a due batch with a free executor runs right here, inside Submit.
  SubmitAndWait(**b, 3, &recorder);
  const std::vector<std::thread::id> threads = executor.threads();
  ASSERT_EQ(threads.size(), 4u);
  for (int i = 0; i < 3; ++i) EXPECT_NE(threads[i], std::this_thread::get_id()) << i;
  EXPECT_EQ(threads[3], std::this_thread::get_id());
  EXPECT_TRUE(recorder.Get(3).status.ok());
  EXPECT_FALSE(recorder.Get(3).timing.rejected_at_submit);
}

TEST(BatcherThreadedTest, NoInlineExecutionWhenDisabled) {
  BatcherOptions options;
  options.policy = Policy::kOff;
  options.max_batch_size = 4;
  options.inline_max_exec_us = 0;
  ThreadRecordingExecutor executor;
  Recorder recorder;
  auto b = Batcher::Create(options, &executor);
  ASSERT_TRUE(b.ok()) << b.status();
  for (int i = 0; i < 8; ++i) SubmitAndWait(**b, i, &recorder);
  ASSERT_EQ(executor.threads().size(), 8u);
  for (std::thread::id t : executor.threads()) EXPECT_NE(t, std::this_thread::get_id());
}

// ---------------------------------------------------------------------------------------------
// Priority (Task::priority): 1 first, then 2, 3, ...; the default (0) last; FIFO within a level.

class PriorityTask : public TestTask {
 public:
  PriorityTask(int id, int64_t priority, Recorder* recorder, int64_t cost = 1)
      : TestTask(id, cost, recorder), priority_(priority) {}
  int64_t priority() const override { return priority_; }

 private:
  int64_t priority_;
};

TEST_F(BatcherTest, PriorityOrdersTheQueueFifoWithinALevel) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 1;
  options_.max_queue_delay_us = 0;
  auto b = Make();
  // id: priority
  const std::vector<std::pair<int, int64_t>> tasks = {{1, 0}, {2, 2}, {3, 1},  {4, 0},
                                                      {5, 1}, {6, 2}, {7, -3}, {8, 1}};
  for (auto [id, priority] : tasks) {
    ASSERT_TRUE(b->Submit(std::make_unique<PriorityTask>(id, priority, &recorder_)).ok());
  }
  while (b->RunOnce()) {
  }
  std::vector<int> order;
  for (const std::vector<int>& batch : executor_.batches) {
    ASSERT_EQ(batch.size(), 1u);
    order.push_back(batch[0]);
  }
  // A negative priority counts as the default.
  EXPECT_THAT(order, ElementsAre(3, 5, 8, 2, 6, 1, 4, 7));
  for (auto [id, priority] : tasks) EXPECT_TRUE(recorder_.Get(id).status.ok()) << id;
}

TEST_F(BatcherTest, PriorityFillsABatchFromTheHighestLevelFirst) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 4;
  options_.max_queue_delay_us = 1000;
  auto b = Make();
  for (int id = 0; id < 3; ++id) {
    ASSERT_TRUE(b->Submit(std::make_unique<PriorityTask>(id, 0, &recorder_)).ok());
  }
  EXPECT_FALSE(b->RunOnce());
  clock_.AdvanceMicros(10);
  ASSERT_TRUE(b->Submit(std::make_unique<PriorityTask>(10, 1, &recorder_, 2)).ok());
  // Cost 5 queued, target 4: the batch leaves by size with the priority task first, and the
  // default-level tasks that fit after it, oldest first.
  ASSERT_TRUE(b->RunOnce());
  ASSERT_EQ(executor_.batches.size(), 1u);
  EXPECT_THAT(executor_.batches[0], ElementsAre(10, 0, 1));
  EXPECT_EQ(b->stats().queued_tasks, 1);
}

TEST_F(BatcherTest, PriorityDelayBudgetIsTheOldestTasksWhateverItsLevel) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 8;
  options_.max_queue_delay_us = 1000;
  auto b = Make();
  ASSERT_TRUE(b->Submit(std::make_unique<PriorityTask>(1, 0, &recorder_)).ok());
  clock_.AdvanceMicros(600);
  ASSERT_TRUE(b->Submit(std::make_unique<PriorityTask>(2, 1, &recorder_)).ok());
  // The younger, higher-priority task heads the queue, but the oldest task's budget decides:
  // a priority never makes a waiting task wait longer.
  EXPECT_EQ(b->NextDepartureUs(), kStart + 1000);
  clock_.AdvanceMicros(399);
  EXPECT_FALSE(b->RunOnce());
  clock_.AdvanceMicros(1);
  ASSERT_TRUE(b->RunOnce());
  ASSERT_EQ(executor_.batches.size(), 1u);
  EXPECT_THAT(executor_.batches[0], ElementsAre(2, 1));
  EXPECT_EQ(recorder_.Get(1).timing.queue_us, 1000);
  EXPECT_EQ(recorder_.Get(2).timing.queue_us, 400);
  // Without priorities left in the queue, the front is the oldest again.
  ASSERT_TRUE(b->Submit(std::make_unique<PriorityTask>(3, 0, &recorder_)).ok());
  EXPECT_EQ(b->NextDepartureUs(), kStart + 2100);  // submitted after the 100 us batch
}

// A text request: one row per sentence (cost) and its tokens against max_batch_tokens.
class TokenTask : public TestTask {
 public:
  TokenTask(int id, int64_t rows, int64_t tokens, Recorder* recorder)
      : TestTask(id, rows, recorder), tokens_(tokens) {}
  int64_t tokens() const override { return tokens_; }

 private:
  int64_t tokens_;
};

TEST_F(BatcherTest, TokenBudgetIsNeverExceededAndAnOversizedTaskRunsAlone) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 64;  // rows never bind here
  options_.max_batch_tokens = 100;
  auto b = Make();
  // id -> tokens; task 4 alone is over the budget.
  const std::vector<int64_t> tokens = {30, 50, 40, 20, 150, 60, 10, 30, 70, 1};
  std::map<int, int64_t> tokens_of;
  for (size_t i = 0; i < tokens.size(); ++i) {
    tokens_of[static_cast<int>(i)] = tokens[i];
    ASSERT_TRUE(
        b->Submit(std::make_unique<TokenTask>(static_cast<int>(i), 1, tokens[i], &recorder_)).ok());
  }
  EXPECT_EQ(b->stats().queued_tokens, 461);
  // Far below 64 rows, but the queue holds a full token budget: batches leave without waiting.
  while (b->RunOnce()) {
  }
  EXPECT_EQ(executor_.batches, (std::vector<std::vector<int>>{{0, 1}, {2, 3}, {4}, {5, 6, 7}}));
  // The rest (70 + 1 tokens) is under the budget: it waits for more or for its delay.
  EXPECT_EQ(b->stats().queued_tokens, 71);
  clock_.AdvanceMicros(options_.max_queue_delay_us);
  ASSERT_TRUE(b->RunOnce());
  EXPECT_THAT(executor_.batches.back(), ElementsAre(8, 9));
  for (const std::vector<int>& batch : executor_.batches) {
    int64_t sum = 0;
    for (int id : batch) sum += tokens_of[id];
    EXPECT_TRUE(sum <= 100 || batch.size() == 1) << "batch starting with " << batch[0];
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    EXPECT_TRUE(recorder_.Get(static_cast<int>(i)).status.ok()) << i;
  }
  EXPECT_EQ(b->stats().queued_tokens, 0);
}

TEST_F(BatcherTest, TokenBudgetDepartsExactlyWhenTheNextTaskCouldNotJoin) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 64;
  options_.max_batch_tokens = 100;
  auto b = Make();
  ASSERT_TRUE(b->Submit(std::make_unique<TokenTask>(1, 2, 60, &recorder_)).ok());
  ASSERT_TRUE(b->Submit(std::make_unique<TokenTask>(2, 2, 39, &recorder_)).ok());
  EXPECT_FALSE(b->RunOnce());  // 99 of 100: one more token would still fit
  ASSERT_TRUE(b->Submit(std::make_unique<TokenTask>(3, 1, 1, &recorder_)).ok());
  ASSERT_TRUE(b->RunOnce());  // exactly full
  EXPECT_THAT(executor_.batches.back(), ElementsAre(1, 2, 3));
  EXPECT_EQ(executor_.batch_costs.back(), 5);  // rows are still counted as cost
}

TEST_F(BatcherTest, WithoutATokenBudgetTokensAreIgnored) {
  options_.policy = Policy::kFixed;
  options_.max_batch_size = 4;
  auto b = Make();
  for (int id = 0; id < 4; ++id) {
    ASSERT_TRUE(b->Submit(std::make_unique<TokenTask>(id, 1, 1'000'000, &recorder_)).ok());
  }
  ASSERT_TRUE(b->RunOnce());
  EXPECT_THAT(executor_.batches.back(), ElementsAre(0, 1, 2, 3));
}

}  // namespace
}  // namespace ferry::batching
