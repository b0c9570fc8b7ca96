// The pipeline's logic on the CPU: a fake device stage whose `done` the test fires by hand, the
// batcher and the pipeline in manual mode on a FakeClock (no threads, no sleeps), plus one
// threaded run whose fake device completes batches from its own thread.
#include "batching/pipeline.h"

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "batching/batcher.h"
#include "ferry/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::batching {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct Finished {
  int id;
  absl::Status status;
  int64_t output;  // what Unpack wrote (-1 if nothing)
};

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
  // Every id finished exactly once.
  bool EachOnce(int n) const {
    std::map<int, int> count;
    for (const Finished& f : finished()) ++count[f.id];
    if (static_cast<int>(count.size()) != n) return false;
    for (const auto& [id, c] : count) {
      if (c != 1) return false;
    }
    return true;
  }
  Finished Get(int id) const {
    for (const Finished& f : finished()) {
      if (f.id == id) return f;
    }
    ADD_FAILURE() << "task " << id << " never finished";
    return {id, absl::UnknownError("never finished"), -1};
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<Finished> finished_ ABSL_GUARDED_BY(mu_);
};

class TestTask : public Task {
 public:
  TestTask(int id, Recorder* recorder) : id_(id), recorder_(recorder) {}
  int64_t cost() const override { return 1; }
  void Finish(absl::Status status, const TaskTiming&) override {
    recorder_->Add({id_, std::move(status), output_});
  }
  int id() const { return id_; }
  void set_output(int64_t v) { output_ = v; }

 private:
  const int id_;
  Recorder* const recorder_;
  int64_t output_ = -1;
};

// A device with `slots` slots. Launch keeps `done`; the test (or, with auto_complete, Launch
// itself) fires it. Records every stage call and checks the slot protocol.
class FakeStage : public DeviceStage {
 public:
  FakeStage(int slots, FakeClock* clock) : slots_(slots), clock_(clock), pending_(slots) {
    busy_.assign(slots, false);
  }

  int num_slots() const override { return slots_; }

  absl::Status Pack(int slot, absl::Span<Task* const> batch,
                    absl::Span<absl::Status> task_status) override {
    absl::MutexLock lock(&mu_);
    EXPECT_FALSE(busy_[slot]) << "slot " << slot << " packed twice";
    busy_[slot] = true;
    ++packs_;
    const int in_use = static_cast<int>(std::count(busy_.begin(), busy_.end(), true));
    max_in_use_ = std::max(max_in_use_, in_use);
    Log(absl::StrCat("pack", FirstId(batch)));
    if (clock_ != nullptr) clock_->AdvanceMicros(pack_cost_us_);
    for (size_t i = 0; i < batch.size(); ++i) {
      if (bad_ids_.contains(static_cast<TestTask*>(batch[i])->id())) {
        task_status[i] = absl::InvalidArgumentError("bad input");
      }
    }
    if (fail_pack_.contains(FirstId(batch))) return absl::InternalError("pack failed");
    batch_of_[slot] = FirstId(batch);
    return absl::OkStatus();
  }

  absl::Status Launch(int slot, StageDone done) override {
    const int id = Id(slot);
    {
      absl::MutexLock lock(&mu_);
      Log(absl::StrCat("launch", id));
      if (fail_launch_.contains(id)) return absl::InternalError("launch failed");
      if (!auto_complete_) {
        pending_[slot] = std::move(done);
        ++launched_;
        launched_ids_.push_back(id);
        return absl::OkStatus();
      }
    }
    done(absl::OkStatus());  // a synchronous device: done before Launch returns
    return absl::OkStatus();
  }

  absl::Status Unpack(int slot, absl::Span<Task* const> batch,
                      absl::Span<absl::Status> task_status) override {
    absl::MutexLock lock(&mu_);
    Log(absl::StrCat("unpack", FirstId(batch)));
    if (fail_unpack_.contains(FirstId(batch))) return absl::DataLossError("unpack failed");
    for (size_t i = 0; i < batch.size(); ++i) {
      if (!task_status[i].ok()) continue;
      auto* t = static_cast<TestTask*>(batch[i]);
      t->set_output(t->id() * 10);
    }
    (void)slot;
    return absl::OkStatus();
  }

  void Release(int slot) override {
    absl::MutexLock lock(&mu_);
    EXPECT_TRUE(busy_[slot]) << "slot " << slot << " released without a Pack";
    busy_[slot] = false;
    ++releases_;
    Log(absl::StrCat("release", batch_of_[slot]));
    batch_of_[slot] = -1;
  }

  DeviceStageTimes device_times(int) override {
    return {.h2d_us = 3, .compute_us = 40, .d2h_us = 2};
  }

  // Fires the `done` of the batch whose first task is `id`, with `status`.
  void Complete(int id, absl::Status status = absl::OkStatus()) {
    StageDone done;
    {
      absl::MutexLock lock(&mu_);
      int slot = -1;
      for (const auto& [s, first] : batch_of_) {
        if (first == id && pending_[s] != nullptr) slot = s;
      }
      ASSERT_GE(slot, 0) << "batch " << id << " is not on the device";
      done = std::move(pending_[slot]);
      pending_[slot] = nullptr;
    }
    done(std::move(status));
  }
  // Blocks until the index-th launch (0-based) happened, and returns its batch's first id; -1
  // once Stop() was called with no such launch.
  int WaitLaunched(int index) {
    absl::MutexLock lock(&mu_);
    auto ready = [this, index]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return static_cast<int>(launched_ids_.size()) > index || stopped_;
    };
    mu_.Await(absl::Condition(&ready));
    return static_cast<int>(launched_ids_.size()) > index ? launched_ids_[index] : -1;
  }
  // The index-th launch's first id if it happened already, else -1.
  int Launched(int index) {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(launched_ids_.size()) > index ? launched_ids_[index] : -1;
  }
  void Stop() {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
  }

  std::vector<std::string> log() const {
    absl::MutexLock lock(&mu_);
    return log_;
  }
  int max_in_use() const {
    absl::MutexLock lock(&mu_);
    return max_in_use_;
  }
  int packs() const {
    absl::MutexLock lock(&mu_);
    return packs_;
  }
  int releases() const {
    absl::MutexLock lock(&mu_);
    return releases_;
  }

  void set_auto_complete(bool v) {
    absl::MutexLock lock(&mu_);
    auto_complete_ = v;
  }
  void set_pack_cost_us(int64_t us) { pack_cost_us_ = us; }
  void FailPack(int id) { fail_pack_[id] = true; }
  void FailLaunch(int id) { fail_launch_[id] = true; }
  void FailUnpack(int id) { fail_unpack_[id] = true; }
  void BadTask(int id) { bad_ids_[id] = true; }

 private:
  static int FirstId(absl::Span<Task* const> batch) {
    return batch.empty() ? -1 : static_cast<TestTask*>(batch[0])->id();
  }
  int Id(int slot) {
    absl::MutexLock lock(&mu_);
    return batch_of_[slot];
  }
  void Log(std::string s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { log_.push_back(std::move(s)); }

  const int slots_;
  FakeClock* const clock_;
  int64_t pack_cost_us_ = 0;
  mutable absl::Mutex mu_;
  std::vector<StageDone> pending_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> busy_ ABSL_GUARDED_BY(mu_);
  std::map<int, int> batch_of_ ABSL_GUARDED_BY(mu_);  // slot -> first task id
  std::vector<std::string> log_ ABSL_GUARDED_BY(mu_);
  int max_in_use_ ABSL_GUARDED_BY(mu_) = 0;
  int packs_ ABSL_GUARDED_BY(mu_) = 0;
  int releases_ ABSL_GUARDED_BY(mu_) = 0;
  int launched_ ABSL_GUARDED_BY(mu_) = 0;
  bool auto_complete_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<int> launched_ids_ ABSL_GUARDED_BY(mu_);
  // Set before the run starts (read under mu_ by the stage methods).
  std::map<int, bool> fail_pack_, fail_launch_, fail_unpack_, bad_ids_;
};

// Manual-mode batcher (policy off: one task per batch, as soon as a slot is free) on a manual
// pipeline over a FakeStage.
class PipelineTest : public ::testing::Test {
 protected:
  void Build(int depth, int slots = 0, Policy policy = Policy::kOff) {
    stage_ = std::make_unique<FakeStage>(slots > 0 ? slots : depth, &clock_);
    PipelineOptions po;
    po.name = "t";
    po.depth = depth;
    po.clock = &clock_;
    po.start_threads = false;
    po.on_batch = [this](const PipelineBatchTimes& t, absl::Span<Task* const> batch) {
      absl::MutexLock lock(&times_mu_);
      times_[static_cast<TestTask*>(batch[0])->id()] = t;
    };
    auto p = Pipeline::Create(po, stage_.get());
    ASSERT_TRUE(p.ok()) << p.status();
    pipeline_ = *std::move(p);
    BatcherOptions bo;
    bo.name = "t";
    bo.policy = policy;
    bo.max_batch_size = 8;
    bo.max_queue_delay_us = 0;
    bo.clock = &clock_;
    bo.start_threads = false;
    auto b = Batcher::CreateAsync(bo, pipeline_.get());
    ASSERT_TRUE(b.ok()) << b.status();
    batcher_ = *std::move(b);
  }
  void TearDown() override {
    if (batcher_ != nullptr) {
      stage_->set_auto_complete(true);  // anything still queued completes at once
      batcher_.reset();
    }
    pipeline_.reset();
  }
  void Submit(int id) { ASSERT_TRUE(batcher_->Submit(std::make_unique<TestTask>(id, &rec_)).ok()); }
  PipelineBatchTimes Times(int id) {
    absl::MutexLock lock(&times_mu_);
    EXPECT_TRUE(times_.contains(id)) << id;
    return times_[id];
  }

  FakeClock clock_;
  Recorder rec_;
  std::unique_ptr<FakeStage> stage_;
  std::unique_ptr<Pipeline> pipeline_;
  std::unique_ptr<Batcher> batcher_;
  absl::Mutex times_mu_;
  std::map<int, PipelineBatchTimes> times_ ABSL_GUARDED_BY(times_mu_);
};

TEST_F(PipelineTest, CreateChecksDepth) {
  FakeStage stage(2, nullptr);
  PipelineOptions po;
  po.start_threads = false;
  po.depth = 0;
  EXPECT_EQ(Pipeline::Create(po, &stage).status().code(), absl::StatusCode::kInvalidArgument);
  po.depth = 3;
  auto too_deep = Pipeline::Create(po, &stage);
  EXPECT_EQ(too_deep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_deep.status().message(), HasSubstr("2 slots"));
  po.depth = 2;
  EXPECT_TRUE(Pipeline::Create(po, &stage).ok());
  EXPECT_EQ(Pipeline::Create(po, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PipelineTest, DepthOneRunsOneBatchAtATimeLikeTheSynchronousPath) {
  Build(/*depth=*/1);
  for (int id = 1; id <= 3; ++id) Submit(id);
  ASSERT_TRUE(batcher_->RunOnce());   // batch 1 packed and launched
  EXPECT_FALSE(batcher_->RunOnce());  // no free slot: batch 2 waits in the queue, not a thread
  EXPECT_EQ(batcher_->stats().queued_tasks, 2);
  EXPECT_EQ(batcher_->stats().running_batches, 1);
  stage_->Complete(1);
  EXPECT_THAT(rec_.ids(), ElementsAre(1));
  ASSERT_TRUE(batcher_->RunOnce());
  EXPECT_FALSE(batcher_->RunOnce());
  stage_->Complete(2);
  ASSERT_TRUE(batcher_->RunOnce());
  stage_->Complete(3);
  EXPECT_THAT(rec_.ids(), ElementsAre(1, 2, 3));
  EXPECT_THAT(stage_->log(),
              ElementsAre("pack1", "launch1", "unpack1", "release1", "pack2", "launch2", "unpack2",
                          "release2", "pack3", "launch3", "unpack3", "release3"));
  EXPECT_EQ(stage_->max_in_use(), 1);
  EXPECT_EQ(rec_.Get(2).output, 20);
}

TEST_F(PipelineTest, PacksTheNextBatchWhileTheDeviceRunsOneAndNeverExceedsTheDepth) {
  Build(/*depth=*/2, /*slots=*/4);
  for (int id = 1; id <= 5; ++id) Submit(id);
  ASSERT_TRUE(batcher_->RunOnce());
  ASSERT_TRUE(batcher_->RunOnce());   // packed while batch 1 is on the device
  EXPECT_FALSE(batcher_->RunOnce());  // back-pressure: 2 in flight
  EXPECT_EQ(batcher_->stats().running_batches, 2);
  EXPECT_EQ(pipeline_->stats().in_flight, 2);
  EXPECT_EQ(pipeline_->stats().on_device, 2);
  stage_->Complete(1);
  ASSERT_TRUE(batcher_->RunOnce());  // batch 3 takes the freed slot
  EXPECT_FALSE(batcher_->RunOnce());
  stage_->Complete(2);
  stage_->Complete(3);
  ASSERT_TRUE(batcher_->RunOnce());
  ASSERT_TRUE(batcher_->RunOnce());
  EXPECT_FALSE(batcher_->RunOnce());
  stage_->Complete(4);
  stage_->Complete(5);
  EXPECT_THAT(rec_.ids(), ElementsAre(1, 2, 3, 4, 5));
  const std::vector<std::string> log = stage_->log();
  auto at = [&log](const std::string& e) {
    return std::find(log.begin(), log.end(), e) - log.begin();
  };
  EXPECT_LT(at("pack2"), at("unpack1"));  // overlap: k+1 packed before k is unpacked
  EXPECT_LT(at("launch2"), at("unpack1"));
  EXPECT_EQ(stage_->max_in_use(), 2);
  EXPECT_EQ(pipeline_->stats().max_in_flight, 2);
  EXPECT_EQ(stage_->packs(), 5);
  EXPECT_EQ(stage_->releases(), 5);
}

TEST_F(PipelineTest, ResponsesFollowStartOrderWhateverOrderTheDeviceFinishes) {
  Build(/*depth=*/3);
  for (int id = 1; id <= 3; ++id) Submit(id);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(batcher_->RunOnce());
  stage_->Complete(3);
  stage_->Complete(2);
  EXPECT_TRUE(rec_.ids().empty());  // 2 and 3 wait for 1
  EXPECT_EQ(pipeline_->stats().in_flight, 3);
  stage_->Complete(1);
  EXPECT_THAT(rec_.ids(), ElementsAre(1, 2, 3));
  EXPECT_THAT(stage_->log(),
              ElementsAre("pack1", "launch1", "pack2", "launch2", "pack3", "launch3", "unpack1",
                          "release1", "unpack2", "release2", "unpack3", "release3"));
}

TEST_F(PipelineTest, AFailureAtAnyStageFailsOnlyThatBatch) {
  Build(/*depth=*/2);
  stage_->FailPack(2);
  stage_->FailLaunch(3);
  stage_->FailUnpack(5);
  stage_->BadTask(6);
  for (int id = 1; id <= 7; ++id) Submit(id);
  ASSERT_TRUE(batcher_->RunOnce());  // 1
  ASSERT_TRUE(batcher_->RunOnce());  // 2: Pack fails, ready at once, waits for 1
  EXPECT_FALSE(batcher_->RunOnce());
  stage_->Complete(1);               // completes 1 then 2
  ASSERT_TRUE(batcher_->RunOnce());  // 3: Launch fails, completes at once
  ASSERT_TRUE(batcher_->RunOnce());  // 4
  ASSERT_TRUE(batcher_->RunOnce());  // 5
  stage_->Complete(4, absl::InternalError("device fault"));
  stage_->Complete(5);               // Unpack fails
  ASSERT_TRUE(batcher_->RunOnce());  // 6: its only task is bad
  ASSERT_TRUE(batcher_->RunOnce());  // 7
  stage_->Complete(6);
  stage_->Complete(7);
  EXPECT_THAT(rec_.ids(), ElementsAre(1, 2, 3, 4, 5, 6, 7));
  EXPECT_TRUE(rec_.Get(1).status.ok());
  EXPECT_EQ(rec_.Get(1).output, 10);
  EXPECT_THAT(rec_.Get(2).status.message(), HasSubstr("pack failed"));
  EXPECT_THAT(rec_.Get(3).status.message(), HasSubstr("launch failed"));
  EXPECT_THAT(rec_.Get(4).status.message(), HasSubstr("device fault"));
  EXPECT_EQ(rec_.Get(4).output, -1);  // no Unpack after a device error
  EXPECT_EQ(rec_.Get(5).status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(rec_.Get(6).status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rec_.Get(6).output, -1);
  EXPECT_TRUE(rec_.Get(7).status.ok());
  EXPECT_EQ(rec_.Get(7).output, 70);
  // Every Pack had exactly one Release, failures included.
  EXPECT_EQ(stage_->packs(), 7);
  EXPECT_EQ(stage_->releases(), 7);
  const PipelineStats s = pipeline_->stats();
  EXPECT_EQ(s.completed, 7);
  EXPECT_EQ(s.failed, 4);  // 2, 3, 4, 5 (6 failed one task, not the batch)
  EXPECT_EQ(s.in_flight, 0);
  EXPECT_EQ(s.on_device, 0);
}

TEST_F(PipelineTest, PerTaskFailureInPackFailsOnlyThatTask) {
  Build(/*depth=*/2, /*slots=*/2, Policy::kFixed);
  stage_->BadTask(2);
  for (int id = 1; id <= 3; ++id) Submit(id);
  clock_.AdvanceMicros(10);  // past the (zero) delay: one batch of 3
  ASSERT_TRUE(batcher_->RunOnce());
  stage_->Complete(1);
  EXPECT_TRUE(rec_.Get(1).status.ok());
  EXPECT_EQ(rec_.Get(2).status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rec_.Get(2).output, -1);
  EXPECT_TRUE(rec_.Get(3).status.ok());
  EXPECT_EQ(rec_.Get(3).output, 30);
}

TEST_F(PipelineTest, StageTimesAndDeviceBusyTimeOnTheFakeClock) {
  Build(/*depth=*/2);
  stage_->set_pack_cost_us(7);
  Submit(1);
  Submit(2);
  const PipelineStats before = pipeline_->stats();
  ASSERT_TRUE(batcher_->RunOnce());  // t=0: pack 7 us, launch 1 at t=7
  clock_.AdvanceMicros(100);
  ASSERT_TRUE(batcher_->RunOnce());  // pack 2 (7 us), launch 2 at t=114
  clock_.AdvanceMicros(100);
  stage_->Complete(2);  // t=214: 2 leaves the device first, waits for 1
  clock_.AdvanceMicros(50);
  stage_->Complete(1);  // t=264
  clock_.AdvanceMicros(36);
  const PipelineStats s = pipeline_->stats();
  // Busy from 7 to 264: one batch 7..114, two 114..214, one 214..264.
  EXPECT_EQ(s.device_busy_us - before.device_busy_us, 257);
  EXPECT_EQ(s.elapsed_us - before.elapsed_us, 300);
  const PipelineBatchTimes t1 = Times(1), t2 = Times(2);
  EXPECT_EQ(t1.pack_us, 7);
  EXPECT_EQ(t1.device_us, 257);
  EXPECT_EQ(t2.device_us, 100);
  EXPECT_EQ(t1.wait_us, 0);
  EXPECT_EQ(t2.wait_us, 50);  // done at 214, completed after 1 at 264
  EXPECT_EQ(t1.h2d_us, 3);
  EXPECT_EQ(t1.compute_us, 40);
  EXPECT_EQ(t1.d2h_us, 2);
  // Shares: 107 alone + 50 of the shared 100 + 50 alone = 207 for 1; 50 for 2.
  EXPECT_EQ(t1.busy_us, 207);
  EXPECT_EQ(t2.busy_us, 50);
  EXPECT_EQ(t1.busy_us + t2.busy_us, 257);
  EXPECT_TRUE(t1.status.ok());
}

TEST_F(PipelineTest, ShutdownDrainsEveryStageAndFinishesEachTaskOnce) {
  Build(/*depth=*/2);
  for (int id = 1; id <= 6; ++id) Submit(id);
  ASSERT_TRUE(batcher_->RunOnce());
  ASSERT_TRUE(batcher_->RunOnce());
  // Shutdown blocks until everything ran (draining, it sends what waits as one batch); the
  // "device" (this thread) completes whatever is launched, inline, until all six are answered.
  std::thread stopper([this] { batcher_->Shutdown(); });
  for (int i = 0; rec_.finished().size() < 6; ++i) stage_->Complete(stage_->WaitLaunched(i));
  stopper.join();
  pipeline_->Shutdown();
  EXPECT_TRUE(rec_.EachOnce(6));
  EXPECT_THAT(rec_.ids(), ElementsAre(1, 2, 3, 4, 5, 6));
  for (const Finished& f : rec_.finished()) EXPECT_TRUE(f.status.ok()) << f.id;
  EXPECT_EQ(stage_->releases(), 3);  // 1, 2, then 3-6 together
  // Submitting after shutdown is refused at once, and so is starting on the pipeline.
  EXPECT_EQ(batcher_->Submit(std::make_unique<TestTask>(7, &rec_)).code(),
            absl::StatusCode::kUnavailable);
  absl::Status direct;
  std::vector<Task*> none;
  std::vector<absl::Status> statuses;
  pipeline_->Start(none, absl::MakeSpan(statuses), [&direct](absl::Status s) { direct = s; });
  EXPECT_EQ(direct.code(), absl::StatusCode::kUnavailable);
}

TEST_F(PipelineTest, ManualStartBeyondTheDepthIsRefusedNotBlocked) {
  Build(/*depth=*/1);
  TestTask a(1, &rec_), b(2, &rec_);
  std::vector<Task*> ba = {&a}, bb = {&b};
  std::vector<absl::Status> sa(1), sb(1);
  absl::Status done_a = absl::UnknownError("not yet"), done_b = absl::UnknownError("not yet");
  pipeline_->Start(ba, absl::MakeSpan(sa), [&done_a](absl::Status s) { done_a = s; });
  pipeline_->Start(bb, absl::MakeSpan(sb), [&done_b](absl::Status s) { done_b = s; });
  EXPECT_EQ(done_b.code(), absl::StatusCode::kResourceExhausted);
  stage_->Complete(1);
  EXPECT_TRUE(done_a.ok());
}

// Threads everywhere: batcher workers packing, a fake device thread completing launched batches
// out of order (the younger of each pair first), the pipeline's scatter thread. Every task
// finishes exactly once; with one packing thread, in queue order (with several, batches that
// depart together are ordered by who starts them first).
void RunThreaded(int workers) {
  constexpr int kTasks = 400;
  FakeStage stage(3, nullptr);
  PipelineOptions po;
  po.depth = 3;
  auto pipeline = Pipeline::Create(po, &stage);
  ASSERT_TRUE(pipeline.ok());
  BatcherOptions bo;
  bo.policy = Policy::kFixed;
  bo.max_batch_size = 4;
  bo.max_queue_delay_us = 0;
  bo.max_queue_size = kTasks;
  bo.num_executors = workers;
  auto batcher = Batcher::CreateAsync(bo, pipeline->get());
  ASSERT_TRUE(batcher.ok());
  Recorder rec;
  std::thread device([&stage] {
    int next = 0;
    while (true) {
      const int a = stage.WaitLaunched(next);
      if (a < 0) return;
      const int b = stage.Launched(next + 1);
      if (b >= 0) {
        stage.Complete(b);
        ++next;
      }
      stage.Complete(a);
      ++next;
    }
  });
  for (int id = 0; id < kTasks; ++id) {
    ASSERT_TRUE((*batcher)->Submit(std::make_unique<TestTask>(id, &rec)).ok());
  }
  (*batcher)->Shutdown();  // returns once every task finished
  stage.Stop();
  device.join();
  (*pipeline)->Shutdown();
  EXPECT_TRUE(rec.EachOnce(kTasks));
  if (workers == 1) {
    const std::vector<int> ids = rec.ids();
    EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  }
  for (const Finished& f : rec.finished()) {
    EXPECT_TRUE(f.status.ok());
    EXPECT_EQ(f.output, f.id * 10);
  }
  EXPECT_LE(stage.max_in_use(), 3);
  EXPECT_EQ(stage.packs(), stage.releases());
  EXPECT_EQ((*pipeline)->stats().completed, stage.packs());
}

TEST(PipelineThreadedTest, OnePackerFinishesEveryTaskOnceInQueueOrder) { RunThreaded(1); }

TEST(PipelineThreadedTest, TwoPackersFinishEveryTaskOnce) { RunThreaded(2); }

}  // namespace
}  // namespace ferry::batching
