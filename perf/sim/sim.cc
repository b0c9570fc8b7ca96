#include "perf/sim/sim.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <queue>
#include <random>
#include <span>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "control-plane/replica_target.h"
#include "control-plane/router.h"
#include "ferry/clock.h"

namespace ferry::sim {
namespace {

using control::Cluster;
using control::FunctionProfiles;
using control::LatencyModel;
using ::ferry::Accelerator;

constexpr int64_t kUs = 1'000'000;
int64_t Us(double s) { return static_cast<int64_t>(std::llround(s * 1e6)); }

// --- Arrival processes ---------------------------------------------------------------------------

class Arrivals {
 public:
  Arrivals(const TraceSpec& spec, int64_t end_us, uint64_t seed) : spec_(spec), end_us_(end_us) {
    rng_.seed(seed);
  }
  // The next arrival time, or -1 after the end.
  int64_t Next() {
    const TraceSpec& s = spec_;
    double t = t_s_;
    const double end_s = static_cast<double>(end_us_) / 1e6;
    switch (s.kind) {
      case TraceKind::kCsv:
        if (csv_i_ >= s.times_s.size()) return -1;
        t = s.times_s[csv_i_++];
        break;
      case TraceKind::kGamma: {
        const double k = 1.0 / (s.cv * s.cv);
        std::gamma_distribution<double> g(k, 1.0 / (s.rate_rps * k));
        t += g(rng_);
        break;
      }
      default: {
        // Non-homogeneous Poisson by thinning against the largest rate.
        const double max_rate = MaxRate();
        if (max_rate <= 0) return -1;
        std::exponential_distribution<double> e(max_rate);
        std::uniform_real_distribution<double> u(0, 1);
        do {
          t += e(rng_);
        } while (t < end_s && u(rng_) * max_rate > RateAt(t));
      }
    }
    t_s_ = t;
    if (t >= end_s) return -1;
    return Us(t);
  }

 private:
  double MaxRate() const {
    switch (spec_.kind) {
      case TraceKind::kStep:
        return spec_.rate_rps * std::max(1.0, spec_.step_factor);
      case TraceKind::kRamp:
        return std::max(spec_.rate_rps, spec_.ramp_to_rps);
      default:
        return spec_.rate_rps;
    }
  }
  double RateAt(double t) const {
    switch (spec_.kind) {
      case TraceKind::kStep:
        return t >= spec_.step_at_s ? spec_.rate_rps * spec_.step_factor : spec_.rate_rps;
      case TraceKind::kRamp: {
        const double f = std::clamp(t / (static_cast<double>(end_us_) / 1e6), 0.0, 1.0);
        return spec_.rate_rps + (spec_.ramp_to_rps - spec_.rate_rps) * f;
      }
      case TraceKind::kOnOff: {
        const double period = spec_.on_s + spec_.off_s;
        return std::fmod(t, period) < spec_.on_s ? spec_.rate_rps : 0.0;
      }
      default:
        return spec_.rate_rps;
    }
  }

  TraceSpec spec_;
  int64_t end_us_;
  std::mt19937_64 rng_;
  double t_s_ = 0;
  size_t csv_i_ = 0;
};

// --- The simulation ------------------------------------------------------------------------------

enum EventType : uint8_t { kArrival, kBatchDone, kHeartbeat, kReady, kFail, kDetect, kDepart };

struct Event {
  int64_t t_us;
  uint64_t seq;
  EventType type;
  int32_t a;  // function, replica or node
  int32_t b;  // replica epoch
  bool operator>(const Event& o) const { return t_us != o.t_us ? t_us > o.t_us : seq > o.seq; }
};

enum class RState { kStarting, kReady, kDraining, kGone };

// A request in flight, with what happened to it on the way (for MissCause).
enum ReqFlag : uint8_t {
  kFlagHeld = 1,        // waited at the gateway for a ready replica
  kFlagRetried = 2,     // re-routed after a node failure
  kFlagPassedIdle = 4,  // routed to a busy replica while another ready one was idle
  kFlagStarting = 8,    // the function had replicas starting when it was routed
};
struct Req {
  int64_t arrival_us;
  uint8_t flags;
  int64_t enqueue_us = 0;  // reached its replica's queue
};

struct Replica {
  int fn;
  int node;
  int device;
  int kind;
  LatencyModel model;
  RState state = RState::kStarting;
  bool dead = false;  // its node failed (the gateway knows at once)
  int epoch = 0;
  std::deque<Req> queue;
  std::vector<Req> executing;
  int64_t batch_start_us = 0;
  // The agent batcher's adaptive delay (batching/batcher.cc, policy aimd): the geometric moving
  // average of inter-arrival gaps, the last arrival and batch end, batches seen, and the pending
  // departure timer (its token; a newer decision invalidates it).
  double log_gap = 0;
  double gap_us = -1;
  int64_t last_arrival_us = -1;
  int64_t last_finish_us = -1;
  int64_t batches = 0;
  int32_t depart_token = 0;
  bool waiting_gpu = false;  // a batch is due but its GPU runs another replica's batch
  int64_t placed_us = 0;
  int64_t ready_since_us = -1;  // -1 while starting or gone
  double share_per_hour = 0;
  double throughput_rps = 0;  // within the SLO on its hardware (CapacityOf)
  int64_t outstanding() const { return static_cast<int64_t>(queue.size() + executing.size()); }
};

struct Fn {
  const FunctionConfig* cfg;
  FunctionProfiles profiles;
  std::unique_ptr<control::Autoscaler> scaler;
  std::unique_ptr<Arrivals> arrivals;
  std::vector<int> replicas;  // live (not gone) replica ids, incl. starting and draining
  std::vector<int> ready;     // routable
  std::deque<Req> held;
  int64_t arrived_since = 0;
  uint64_t rr = 0;
  int desired = 0;
  double need_rps = -1;  // the autoscaler's need behind `desired`; -1 before its first decision
  int last_direction = 0;
  int live_count_reported = -1;
  bool step_seen = false;
  FunctionResult result;
  std::vector<int64_t> load_scratch;
  std::vector<double> rate_scratch;
};

class Simulator {
 public:
  Simulator(const SimConfig& config, const Policy& policy) : cfg_(config), policy_(policy) {}

  absl::StatusOr<RunResult> Run();

 private:
  void Push(int64_t t, EventType type, int32_t a, int32_t b = 0) {
    events_.push(Event{t, seq_++, type, a, b});
  }
  void BuildCluster();
  void Route(int f, Req req);
  void Dispatch(int r);
  // GPU time slicing (SimConfig::gpu_time_slicing): who runs a batch on a GPU, who waits.
  struct GpuTurns {
    int owner = -1;
    std::deque<int> waiting;
  };
  int64_t GpuKey(const Replica& r) const;

  void ReleaseGpu(int r);
  std::unordered_map<int64_t, GpuTurns> gpu_turns_;
  void TryDispatch(int r);
  void Heartbeat();
  void Reconcile(int f);
  // needed_rps: PlacementHints::needed_rps (0 = none).
  bool PlaceReplica(int f, bool ready_now, double needed_rps = 0);
  void Drain(int r);
  void Remove(int r);
  void FailNode(int node);
  void DetectNode(int node);
  void Answer(Fn& fn, const Req& req, const Replica& r, int64_t exec_us, int64_t batch);
  void EndReady(Replica& r);
  void Reject(Fn& fn, const std::string& reason);
  void CheckAssignment(int node, int device, const control::Requirements& req, int f);
  void NoteReplicaCount(int f);
  control::Capacity PlanningCapacity(const Fn& fn) const;
  control::Decision ChooseBaseline(const Fn& fn, const control::PlacementHints& hints) const;

  const SimConfig& cfg_;
  Policy policy_;
  FakeClock clock_{0};
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
  uint64_t seq_ = 0;
  Cluster cluster_;
  std::vector<bool> node_failed_;
  std::vector<Fn> fns_;
  std::vector<Replica> replicas_;
  std::mt19937_64 rng_;
  std::normal_distribution<double> noise_{0.0, 1.0};
  RunResult out_;
  int64_t end_us_ = 0;
  int64_t arrivals_last_hb_ = 0;
  int64_t arrivals_total_ = 0;
  bool arrivals_done_ = false;
  int open_arrival_streams_ = 0;
  int64_t placements_at_detect_ = -1;
};

void Simulator::BuildCluster() {
  cluster_ = sim::BuildCluster(cfg_);
  node_failed_.assign(cluster_.nodes().size(), false);
}

control::Capacity Simulator::PlanningCapacity(const Fn& fn) const {
  // As the controller does: the kind most of its replicas run on, else the default model.
  std::map<int, int> by_kind;
  for (int r : fn.replicas) ++by_kind[replicas_[r].kind];
  if (by_kind.empty()) {
    return control::CapacityOf(
        control::DefaultLatencyModel(fn.cfg->req.accelerator == Accelerator::kGpu), fn.cfg->req);
  }
  auto best = std::max_element(by_kind.begin(), by_kind.end(),
                               [](const auto& a, const auto& b) { return a.second < b.second; });
  return control::CapacityOf(fn.profiles.Get(best->first), fn.cfg->req);
}

absl::StatusOr<RunResult> Simulator::Run() {
  const auto wall_start = std::chrono::steady_clock::now();
  out_.policy = policy_.name;
  rng_.seed(cfg_.seed * 7919 + 17);
  BuildCluster();
  end_us_ = Us(cfg_.duration_s);
  fns_.resize(cfg_.functions.size());
  for (size_t f = 0; f < fns_.size(); ++f) {
    Fn& fn = fns_[f];
    fn.cfg = &cfg_.functions[f];
    fn.result.name = fn.cfg->name;
    for (const auto& [kind_name, model] : fn.cfg->profiles) {
      const int kind = cluster_.kinds().Intern(kind_name);
      LatencyModel m = model;
      m.measured = true;
      fn.profiles.Set(kind, m);
    }
    fn.scaler =
        std::make_unique<control::Autoscaler>(fn.cfg->scaling, &clock_, fn.cfg->initial_replicas);
    fn.arrivals = std::make_unique<Arrivals>(fn.cfg->trace, end_us_, cfg_.seed * 1'000'003 + f);
    fn.desired = fn.cfg->initial_replicas;
    // Initial replicas are placed and warm before the trace starts.
    for (int i = 0; i < fn.cfg->initial_replicas; ++i) PlaceReplica(static_cast<int>(f), true);
    NoteReplicaCount(static_cast<int>(f));
    const int64_t t = fn.arrivals->Next();
    if (t >= 0) {
      Push(t, kArrival, static_cast<int32_t>(f));
      ++open_arrival_streams_;
    }
  }
  Push(Us(cfg_.heartbeat_s), kHeartbeat, 0);
  if (cfg_.fail_fraction > 0) {
    std::vector<int> order(cluster_.nodes().size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
    std::shuffle(order.begin(), order.end(), rng_);
    const int n = static_cast<int>(std::lround(cfg_.fail_fraction * order.size()));
    for (int i = 0; i < n; ++i) Push(Us(cfg_.fail_at_s), kFail, order[i]);
    out_.failed_nodes = n;
  }
  // After the arrivals stop, run until nothing is queued or held (bounded).
  const int64_t hard_end = end_us_ + Us(cfg_.hold_timeout_s) + 600 * kUs;
  while (!events_.empty()) {
    const Event e = events_.top();
    events_.pop();
    if (e.t_us > hard_end) break;
    clock_.SetMicros(e.t_us);
    ++out_.events;
    switch (e.type) {
      case kArrival: {
        Fn& fn = fns_[e.a];
        ++fn.result.arrivals;
        ++fn.arrived_since;
        ++arrivals_total_;
        Route(e.a, Req{e.t_us, 0});
        const int64_t t = fn.arrivals->Next();
        if (t >= 0) {
          Push(t, kArrival, e.a);
        } else {
          --open_arrival_streams_;
        }
        break;
      }
      case kBatchDone: {
        Replica& r = replicas_[e.a];
        const bool had_gpu = r.device >= 0 && cfg_.gpu_time_slicing;
        if (r.epoch != e.b || r.dead) {
          if (had_gpu) ReleaseGpu(e.a);
          break;
        }
        Fn& fn = fns_[r.fn];
        const int64_t exec_us = e.t_us - r.batch_start_us;
        fn.result.busy_replica_s += static_cast<double>(exec_us) / 1e6;
        for (const Req& q : r.executing) {
          Answer(fn, q, r, exec_us, static_cast<int64_t>(r.executing.size()));
        }
        r.executing.clear();
        r.last_finish_us = e.t_us;
        ++r.batches;
        if (had_gpu) ReleaseGpu(e.a);
        if (!r.queue.empty()) {
          TryDispatch(e.a);
        } else if (r.state == RState::kDraining) {
          Remove(e.a);
        }
        break;
      }
      case kReady: {
        Replica& r = replicas_[e.a];
        if (r.state != RState::kStarting || r.dead) break;
        r.state = RState::kReady;
        r.ready_since_us = e.t_us;
        Fn& fn = fns_[r.fn];
        fn.ready.push_back(e.a);
        if (fn.cfg->trace.kind == TraceKind::kStep && fn.step_seen && fn.result.step_ready_s < 0 &&
            r.placed_us >= Us(fn.cfg->trace.step_at_s)) {
          fn.result.step_ready_s = static_cast<double>(e.t_us - Us(fn.cfg->trace.step_at_s)) / 1e6;
        }
        // Held requests go out as soon as a replica is ready.
        while (!fn.held.empty()) {
          const Req q = fn.held.front();
          fn.held.pop_front();
          Route(r.fn, q);
        }
        break;
      }
      case kHeartbeat: {
        Heartbeat();
        bool busy = open_arrival_streams_ > 0;
        for (const Fn& fn : fns_) {
          if (!fn.held.empty()) busy = true;
        }
        if (!busy) {
          for (const Replica& r : replicas_) {
            if (r.state != RState::kGone && !r.dead && r.outstanding() > 0) busy = true;
          }
        }
        if (busy || e.t_us < end_us_) Push(e.t_us + Us(cfg_.heartbeat_s), kHeartbeat, 0);
        break;
      }
      case kFail:
        FailNode(e.a);
        break;
      case kDepart: {
        Replica& r = replicas_[e.a];
        if (r.dead || r.state == RState::kGone || r.depart_token != e.b) break;
        if (r.executing.empty() && !r.queue.empty()) Dispatch(e.a);
        break;
      }
      case kDetect:
        DetectNode(e.a);
        break;
    }
  }
  out_.end_s = static_cast<double>(clock_.NowMicros()) / 1e6;
  if (!out_.timeline.empty()) {
    for (const TimelinePoint& x : out_.timeline) {
      out_.cluster_gpu_memory_share += x.gpu_memory_share;
      out_.cluster_cpu_share += x.cpu_share;
      out_.cluster_gpus_used_share += x.gpus_used_share;
    }
    const double n = static_cast<double>(out_.timeline.size());
    out_.cluster_gpu_memory_share /= n;
    out_.cluster_cpu_share /= n;
    out_.cluster_gpus_used_share /= n;
  }
  // Cost of what is still allocated at the end.
  for (Replica& r : replicas_) {
    EndReady(r);
    if (r.state != RState::kGone && !r.dead) {
      out_.cost += r.share_per_hour * static_cast<double>(clock_.NowMicros() - r.placed_us) / 3.6e9;
    }
  }
  for (Fn& fn : fns_) {
    FunctionResult& fr = fn.result;
    out_.arrivals += fr.arrivals;
    out_.answered += fr.answered;
    out_.within_slo += fr.within_slo;
    out_.rejected += fr.rejected;
    out_.retried += fr.retried;
    for (int c = 0; c < kMissCauses; ++c) out_.misses[c] += fr.misses[c];
    out_.steady_arrivals += fr.steady_arrivals;
    out_.steady_within_slo += fr.steady_within_slo;
    out_.ready_replica_s += fr.ready_replica_s;
    out_.busy_replica_s += fr.busy_replica_s;
    out_.capacity_requests += fr.capacity_requests;
    out_.functions.push_back(fr);
  }
  out_.lost = out_.arrivals - out_.answered - out_.rejected;
  out_.wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  return std::move(out_);
}

void Simulator::Answer(Fn& fn, const Req& req, const Replica& r, int64_t exec_us, int64_t batch) {
  ++fn.result.answered;
  const double target = fn.cfg->req.latency_target_us;
  const bool steady = cfg_.warmup_s > 0 && req.arrival_us >= Us(cfg_.warmup_s);
  if (steady) ++fn.result.steady_arrivals;
  if (target <= 0 || static_cast<double>(clock_.NowMicros() - req.arrival_us) <= target) {
    ++fn.result.within_slo;
    if (steady) ++fn.result.steady_within_slo;
    return;
  }
  MissCause cause;
  if (req.flags & kFlagHeld) {
    cause = MissCause::kHeld;
  } else if (req.flags & kFlagRetried) {
    cause = MissCause::kRetried;
  } else if (static_cast<double>(exec_us) > target) {
    if (r.model.a_us + r.model.b_us > target) {
      cause = MissCause::kSlowHardware;
    } else if (r.model.a_us * static_cast<double>(batch) + r.model.b_us > target) {
      cause = MissCause::kBatchTooLarge;
    } else {
      cause = MissCause::kExecNoise;
    }
  } else if (req.flags & kFlagPassedIdle) {
    cause = MissCause::kRouter;
  } else if (req.flags & kFlagStarting) {
    cause = MissCause::kScalingUp;
  } else {
    cause = MissCause::kBurst;
  }
  ++fn.result.misses[static_cast<int>(cause)];
}

// The replica stops being ready (gone, failed, or the run ended): its ready time and the
// requests it could have served within the SLO in it.
void Simulator::EndReady(Replica& r) {
  if (r.ready_since_us < 0) return;
  const double s = static_cast<double>(clock_.NowMicros() - r.ready_since_us) / 1e6;
  FunctionResult& fr = fns_[r.fn].result;
  fr.ready_replica_s += s;
  fr.capacity_requests += s * r.throughput_rps;
  r.ready_since_us = -1;
}

void Simulator::Reject(Fn& fn, const std::string& reason) {
  ++fn.result.rejected;
  ++out_.rejected_by_reason[reason];
}

void Simulator::Route(int f, Req req) {
  Fn& fn = fns_[f];
  if (req.flags & kFlagRetried) ++fn.result.retried;
  if (fn.ready.empty()) {
    if (static_cast<int64_t>(fn.held.size()) >= cfg_.hold_queue) {
      return Reject(fn, "hold queue full (no ready replica)");
    }
    req.flags |= kFlagHeld;
    fn.held.push_back(req);
    fn.scaler->Demand();
    return;
  }
  int pick = 0;
  fn.load_scratch.clear();
  for (int r : fn.ready) fn.load_scratch.push_back(replicas_[r].outstanding());
  if (policy_.routing == Routing::kRoundRobin) {
    pick = static_cast<int>(fn.rr++ % fn.ready.size());
  } else if (policy_.routing == Routing::kLeastOutstanding) {
    pick = control::PickLeastOutstanding(fn.load_scratch, rng_);
  } else {
    // As the gateway: power of two weighed by each replica's throughput on its hardware.
    fn.rate_scratch.clear();
    for (int r : fn.ready) fn.rate_scratch.push_back(replicas_[r].throughput_rps);
    pick = control::PickReplica(fn.load_scratch, fn.rate_scratch, rng_);
  }
  const int r = fn.ready[pick];
  if (fn.load_scratch[pick] > 0 &&
      *std::min_element(fn.load_scratch.begin(), fn.load_scratch.end()) == 0) {
    req.flags |= kFlagPassedIdle;
  }
  if (fn.replicas.size() > fn.ready.size()) {
    for (int x : fn.replicas) {
      if (replicas_[x].state == RState::kStarting && !replicas_[x].dead) {
        req.flags |= kFlagStarting;
        break;
      }
    }
  }
  if (cfg_.replica_queue_limit > 0 &&
      static_cast<int64_t>(replicas_[r].queue.size()) >= cfg_.replica_queue_limit) {
    return Reject(fn, "replica queue full (429)");
  }
  Replica& rep = replicas_[r];
  const int64_t now = clock_.NowMicros();
  if (rep.last_arrival_us >= 0) {
    // As ObserveArrivalLocked: weight 1/8, a gap counted as at most twice the delay budget.
    const double cap = 2.0 * static_cast<double>(std::max<int64_t>(cfg_.batch_delay_us, 1));
    const double sample =
        std::log(std::clamp(static_cast<double>(now - rep.last_arrival_us), 1.0, cap));
    rep.log_gap = rep.gap_us < 0 ? sample : rep.log_gap + (sample - rep.log_gap) / 8;
    rep.gap_us = std::exp(rep.log_gap);
  }
  rep.last_arrival_us = now;
  req.enqueue_us = now;
  rep.queue.push_back(req);
  if (rep.executing.empty()) TryDispatch(r);
}

// The agent batcher's departure rule with a free executor: by size (the queue holds a full
// batch; AIMD's target is taken as maxBatchSize, where it settles for these profiles), else by
// the oldest task's delay budget, shortened by the adaptive rule of policy aimd ("wait only while
// it pays", docs/batching.md): depart once budget_end - now < g, or once waiting for one more
// arrival no longer pays, g >= (b - n·a)/(n + 1). Nothing waits before a gap is measured and 3
// batches were seen, or with a zero delay budget.
void Simulator::TryDispatch(int ri) {
  Replica& r = replicas_[ri];
  if (!r.executing.empty() || r.waiting_gpu || r.queue.empty()) return;
  ++r.depart_token;
  const int64_t now = clock_.NowMicros();
  const int64_t n = static_cast<int64_t>(r.queue.size());
  const int64_t oldest = r.queue.front().enqueue_us;
  if (n >= fns_[r.fn].cfg->req.max_batch_size || cfg_.batch_delay_us <= 0 || r.gap_us < 0 ||
      r.batches < 3) {
    return Dispatch(ri);
  }
  const double budget_end = static_cast<double>(oldest + cfg_.batch_delay_us);
  const double nd = static_cast<double>(n);
  const double pays_below_gap = (r.model.b_us - nd * r.model.a_us) / (nd + 1);
  double departure = static_cast<double>(oldest);
  if (r.gap_us < pays_below_gap) {
    const double quiet_since =
        static_cast<double>(std::max({r.last_arrival_us, r.last_finish_us, oldest}));
    const double by_rate = std::min(budget_end - r.gap_us, (budget_end + quiet_since) / 2);
    const double by_gain = quiet_since + pays_below_gap;
    departure = std::max(departure, std::min({by_rate, by_gain, budget_end}));
  }
  const int64_t t = static_cast<int64_t>(std::floor(departure));
  if (t <= now) return Dispatch(ri);
  Push(t, kDepart, ri, r.depart_token);
}

void Simulator::Dispatch(int ri) {
  Replica& r = replicas_[ri];
  const int64_t n =
      std::min<int64_t>(static_cast<int64_t>(r.queue.size()), fns_[r.fn].cfg->req.max_batch_size);
  if (n <= 0) return;
  ++r.depart_token;
  if (r.device >= 0 && cfg_.gpu_time_slicing) {
    GpuTurns& g = gpu_turns_[GpuKey(r)];
    if (g.owner >= 0) {
      // Its batch forms when its turn comes (requests keep joining the queue meanwhile).
      r.waiting_gpu = true;
      g.waiting.push_back(ri);
      return;
    }
    g.owner = ri;
  }
  for (int64_t i = 0; i < n; ++i) {
    r.executing.push_back(r.queue.front());
    r.queue.pop_front();
  }
  r.batch_start_us = clock_.NowMicros();
  const double base = r.model.a_us * static_cast<double>(n) + r.model.b_us;
  const double lat = base * std::exp(cfg_.noise_sigma * noise_(rng_));
  Push(clock_.NowMicros() + std::max<int64_t>(1, static_cast<int64_t>(lat)), kBatchDone, ri,
       r.epoch);
}

int64_t Simulator::GpuKey(const Replica& r) const {
  return static_cast<int64_t>(r.node) * 1024 + r.device;
}

void Simulator::ReleaseGpu(int ri) {
  auto it = gpu_turns_.find(GpuKey(replicas_[ri]));
  if (it == gpu_turns_.end() || it->second.owner != ri) return;
  GpuTurns& g = it->second;
  g.owner = -1;
  // The replicas that waited go first, in turn; the one that just finished queues behind them.
  while (g.owner < 0 && !g.waiting.empty()) {
    const int next = g.waiting.front();
    g.waiting.pop_front();
    Replica& x = replicas_[next];
    x.waiting_gpu = false;
    if (x.state == RState::kGone || x.dead || !x.executing.empty()) continue;
    Dispatch(next);
  }
}

void Simulator::CheckAssignment(int node, int device, const control::Requirements& req, int f) {
  const control::NodeSpec& n = cluster_.nodes()[node];
  const control::NodeUsage& u = cluster_.usage()[node];
  std::string why;
  if (!n.ready) why = "node not ready";
  if (u.cpu_cores > n.cpu_cores + 1e-9) why = "cpu over capacity";
  if (u.memory_bytes > n.memory_bytes) why = "memory over capacity";
  if (req.accelerator == Accelerator::kGpu && device < 0) why = "GPU function on CPU";
  if (req.accelerator == Accelerator::kCpu && device >= 0) why = "CPU function on GPU";
  if (device >= 0) {
    for (size_t g = 0; g < n.gpus.size(); ++g) {
      if (n.gpus[g].index == device && u.gpu_bytes[g] > n.gpus[g].memory_bytes) {
        why = "GPU memory over capacity";
      }
    }
  }
  if (!why.empty()) {
    ++out_.placement_violations;
    if (out_.violation_examples.size() < 10) {
      out_.violation_examples.push_back(
          absl::StrCat(fns_[f].cfg->name, " on ", n.id, " device ", device, ": ", why));
    }
  }
}

control::Decision Simulator::ChooseBaseline(const Fn& fn,
                                            const control::PlacementHints& hints) const {
  (void)hints;
  const control::Requirements& req = fn.cfg->req;
  // Two passes, as placement.h does: idle GPUs (and CPUs) first, a turn on a GPU that runs a
  // replica already only when nothing idle fits. The baselines differ from ferry in how they
  // rank candidates, not in which they may use.
  for (const bool allow_shared : {false, true}) {
    control::Decision best;
    double best_score = 0;
    for (int i = 0; i < static_cast<int>(cluster_.nodes().size()); ++i) {
      const control::NodeSpec& n = cluster_.nodes()[i];
      std::vector<std::tuple<int, int, int>> cands;  // (device, kind, replicas on it)
      if (req.accelerator != Accelerator::kGpu) cands.push_back({-1, control::kCpuKind, 0});
      if (req.accelerator != Accelerator::kCpu) {
        for (size_t g = 0; g < n.gpus.size(); ++g) {
          cands.push_back({n.gpus[g].index, n.gpus[g].kind, cluster_.usage()[i].gpu_replicas[g]});
        }
      }
      for (auto [device, kind, on_gpu] : cands) {
        if (on_gpu > 0 && !allow_shared) continue;
        if (!control::CandidateFits(cluster_, req, fn.profiles, i, device)) continue;
        double score = 0;
        if (policy_.placement == PlacementPolicy::kFastest) {
          const LatencyModel m = fn.profiles.Get(kind);
          score = (m.a_us + m.b_us) * (1 + on_gpu);
        } else {
          score = control::PriceShare(n, device, req);
        }
        if (!best.placed || score < best_score) {
          best.placed = true;
          best.node = i;
          best.device_index = device;
          best.kind = kind;
          best_score = score;
        }
      }
    }
    if (best.placed) return best;
  }
  control::Decision none;
  none.reason = "no candidate fits";
  return none;
}

bool Simulator::PlaceReplica(int f, bool ready_now, double needed_rps) {
  Fn& fn = fns_[f];
  control::PlacementHints hints;
  hints.needed_rps = needed_rps;
  std::map<int, int> on_node;
  for (int r : fn.replicas) ++on_node[replicas_[r].node];
  hints.replicas_on_node.assign(on_node.begin(), on_node.end());
  control::Decision d = policy_.placement == PlacementPolicy::kFerry
                            ? control::PlaceOne(cluster_, fn.cfg->req, fn.profiles, hints)
                            : ChooseBaseline(fn, hints);
  if (!d.placed) {
    ++fn.result.unplaced;
    return false;
  }
  cluster_.Assign(d.node, d.device_index, fn.cfg->req);
  CheckAssignment(d.node, d.device_index, fn.cfg->req, f);
  ++out_.placements;
  Replica r;
  r.fn = f;
  r.node = d.node;
  r.device = d.device_index;
  r.kind = d.kind;
  r.model = fn.profiles.Get(d.kind);
  r.placed_us = clock_.NowMicros();
  r.share_per_hour = control::PriceShare(cluster_.nodes()[d.node], d.device_index, fn.cfg->req);
  r.throughput_rps = control::CapacityOf(r.model, fn.cfg->req).throughput_rps;
  // Until its lease expires the controller may still place on a node that has failed: such a
  // replica never comes up and the gateway cannot reach it.
  r.dead = node_failed_[d.node];
  if (r.dead) r.share_per_hour = 0;
  const int id = static_cast<int>(replicas_.size());
  replicas_.push_back(std::move(r));
  fn.replicas.push_back(id);
  if (ready_now && !replicas_[id].dead) {
    replicas_[id].state = RState::kReady;
    replicas_[id].ready_since_us = clock_.NowMicros();
    fn.ready.push_back(id);
  } else {
    const double cold = d.device_index >= 0 ? cfg_.cold_start_gpu_s : cfg_.cold_start_cpu_s;
    Push(clock_.NowMicros() + Us(cold), kReady, id);
    if (fn.cfg->trace.kind == TraceKind::kStep && fn.step_seen && fn.result.step_placed_s < 0) {
      fn.result.step_placed_s =
          static_cast<double>(clock_.NowMicros() - Us(fn.cfg->trace.step_at_s)) / 1e6;
    }
  }
  return true;
}

void Simulator::NoteReplicaCount(int f) {
  Fn& fn = fns_[f];
  const int live = static_cast<int>(fn.replicas.size());
  fn.result.max_replicas_seen = std::max(fn.result.max_replicas_seen, live);
  if (live != fn.live_count_reported) {
    fn.live_count_reported = live;
    out_.replica_changes.emplace_back(static_cast<double>(clock_.NowMicros()) / 1e6, f, live);
  }
}

void Simulator::Remove(int ri) {
  Replica& r = replicas_[ri];
  Fn& fn = fns_[r.fn];
  EndReady(r);
  if (!r.dead) {
    cluster_.Release(r.node, r.device, fn.cfg->req);
    out_.cost += r.share_per_hour * static_cast<double>(clock_.NowMicros() - r.placed_us) / 3.6e9;
  }
  r.state = RState::kGone;
  ++r.epoch;
  std::erase(fn.replicas, ri);
  std::erase(fn.ready, ri);
  NoteReplicaCount(r.fn);
}

void Simulator::Drain(int ri) {
  Replica& r = replicas_[ri];
  Fn& fn = fns_[r.fn];
  std::erase(fn.ready, ri);  // no new routes first
  r.state = RState::kDraining;
  if (r.outstanding() == 0) Remove(ri);
}

void Simulator::FailNode(int node) {
  node_failed_[node] = true;
  Push(clock_.NowMicros() + Us(cfg_.lease_timeout_s), kDetect, node);
  for (size_t ri = 0; ri < replicas_.size(); ++ri) {
    Replica& r = replicas_[ri];
    if (r.node != node || r.state == RState::kGone || r.dead) continue;
    EndReady(r);
    if (!r.executing.empty()) {
      fns_[r.fn].result.busy_replica_s +=
          static_cast<double>(clock_.NowMicros() - r.batch_start_us) / 1e6;
    }
    r.dead = true;
    ++r.epoch;
    ++out_.failure_killed_replicas;
    Fn& fn = fns_[r.fn];
    std::erase(fn.ready, static_cast<int>(ri));
    // Its node's price stops at the failure.
    out_.cost += r.share_per_hour * static_cast<double>(clock_.NowMicros() - r.placed_us) / 3.6e9;
    // The gateway sees the connection fail and retries on another replica (or holds).
    std::vector<Req> pending(r.executing.begin(), r.executing.end());
    pending.insert(pending.end(), r.queue.begin(), r.queue.end());
    r.executing.clear();
    r.queue.clear();
    for (Req q : pending) {
      q.flags |= kFlagRetried;
      Route(r.fn, q);
    }
  }
}

void Simulator::DetectNode(int node) {
  // The lease expired: the controller marks the node down and forgets its replicas; the next
  // reconcile re-places them.
  cluster_.mutable_node(node).ready = false;
  if (out_.failure_detected_s < 0) {
    out_.failure_detected_s = static_cast<double>(clock_.NowMicros()) / 1e6 - cfg_.fail_at_s;
    placements_at_detect_ = out_.placements;
  }
  for (size_t ri = 0; ri < replicas_.size(); ++ri) {
    Replica& r = replicas_[ri];
    if (r.node != node || r.state == RState::kGone) continue;
    cluster_.Release(r.node, r.device, fns_[r.fn].cfg->req);
    r.state = RState::kGone;
    Fn& fn = fns_[r.fn];
    std::erase(fn.replicas, static_cast<int>(ri));
    std::erase(fn.ready, static_cast<int>(ri));
    NoteReplicaCount(r.fn);
  }
}

void Simulator::Reconcile(int f) {
  Fn& fn = fns_[f];
  std::vector<int> live;
  double have = 0;
  for (int r : fn.replicas) {
    if (replicas_[r].state != RState::kDraining) {
      live.push_back(r);
      have += replicas_[r].throughput_rps;
    }
  }
  // As the controller reconciles (replica_target.h): the autoscaler's need covered by whole
  // replicas, each placed for the need still uncovered. Without autoscaling the count is fixed.
  control::ReplicaTarget target;
  if (policy_.autoscale) {
    target.min_replicas =
        static_cast<int>(std::min(fn.cfg->scaling.min_replicas, fn.cfg->scaling.max_replicas));
    target.max_replicas = static_cast<int>(fn.cfg->scaling.max_replicas);
    target.need_rps =
        fn.need_rps >= 0 ? fn.need_rps : fn.desired * PlanningCapacity(fn).throughput_rps;
    if (fn.desired == 0) target.need_rps = 0;
  } else {
    target.min_replicas = target.max_replicas = fn.desired;
  }
  // Scale down: starting replicas first (nothing to finish), then the least loaded.
  std::sort(live.begin(), live.end(), [&](int a, int b) {
    const bool sa = replicas_[a].state == RState::kStarting;
    const bool sb = replicas_[b].state == RState::kStarting;
    if (sa != sb) return sa;
    return replicas_[a].outstanding() < replicas_[b].outstanding();
  });
  int count = static_cast<int>(live.size());
  // A ready replica is not drained in favour of one still starting: the need counts the starting
  // one, but until it is ready the function would have nothing to route to.
  const bool starting = std::any_of(live.begin(), live.end(), [&](int r) {
    return replicas_[r].state == RState::kStarting && !replicas_[r].dead;
  });
  for (int r : live) {
    if (starting && replicas_[r].state == RState::kReady) continue;
    if (!control::MayRemove(target, count, have, replicas_[r].throughput_rps)) continue;
    have -= replicas_[r].throughput_rps;
    --count;
    Drain(r);
  }
  while (control::WantsAnother(target, count, have)) {
    if (!PlaceReplica(f, false, control::Uncovered(target, have))) break;
    have += replicas_[fn.replicas.back()].throughput_rps;
    ++count;
  }
  NoteReplicaCount(f);
}

void Simulator::Heartbeat() {
  const int64_t now = clock_.NowMicros();
  const double t_s = static_cast<double>(now) / 1e6;
  int total = 0, ready_total = 0;
  double cost_rate = 0;
  for (int f = 0; f < static_cast<int>(fns_.size()); ++f) {
    Fn& fn = fns_[f];
    // Held requests past the gateway's timeout are answered 503 (checked at heartbeat
    // resolution).
    while (!fn.held.empty() && now - fn.held.front().arrival_us > Us(cfg_.hold_timeout_s)) {
      fn.held.pop_front();
      Reject(fn, "hold timeout (no ready replica)");
    }
    if (fn.cfg->trace.kind == TraceKind::kStep && !fn.step_seen &&
        now >= Us(fn.cfg->trace.step_at_s)) {
      fn.step_seen = true;
    }
    double in_flight = 0;
    int current = 0, ready = 0;
    for (int r : fn.replicas) {
      const Replica& rep = replicas_[r];
      if (!rep.dead) in_flight += static_cast<double>(rep.outstanding());
      if (rep.state == RState::kDraining) continue;
      ++current;
      if (rep.state == RState::kReady) ++ready;  // the controller's view until the lease expires
    }
    if (policy_.autoscale) {
      fn.scaler->Record(fn.arrived_since, in_flight);
      const control::Capacity cap = PlanningCapacity(fn);
      const control::ScaleDecision d =
          fn.scaler->Decide(current, ready, cap.throughput_rps,
                            static_cast<double>(cap.batch * fn.cfg->req.instances));
      if (d.desired != fn.desired) {
        const int dir = d.desired > fn.desired ? 1 : -1;
        if (fn.last_direction != 0 && dir != fn.last_direction) ++fn.result.direction_changes;
        fn.last_direction = dir;
        out_.decisions.push_back({t_s, f, fn.desired, d.desired, d.panic, d.reason});
        if (dir > 0 && fn.step_seen && fn.result.step_decision_s < 0) {
          fn.result.step_decision_s = t_s - fn.cfg->trace.step_at_s;
        }
        fn.desired = d.desired;
      }
      fn.need_rps = d.need_rps;
    }
    fn.arrived_since = 0;
    Reconcile(f);
    for (int r : fn.replicas) {
      const Replica& rep = replicas_[r];
      if (rep.dead) continue;
      ++total;
      if (rep.state == RState::kReady) ++ready_total;
      cost_rate += rep.share_per_hour;
    }
  }
  if (placements_at_detect_ >= 0 && out_.failure_replaced_s < 0) {
    out_.failure_replaced = out_.placements - placements_at_detect_;
    out_.failure_replaced_s = t_s - cfg_.fail_at_s;
  }
  TimelinePoint point{t_s, total, ready_total, cost_rate,
                      static_cast<double>(arrivals_total_ - arrivals_last_hb_) / cfg_.heartbeat_s};
  double gpu_mem = 0, gpu_mem_used = 0, cores = 0, cores_used = 0, gpus = 0, gpus_used = 0;
  for (size_t n = 0; n < cluster_.nodes().size(); ++n) {
    if (node_failed_[n]) continue;
    const control::NodeSpec& spec = cluster_.nodes()[n];
    const control::NodeUsage& use = cluster_.usage()[n];
    cores += spec.cpu_cores;
    cores_used += use.cpu_cores;
    for (size_t g = 0; g < spec.gpus.size(); ++g) {
      gpu_mem += static_cast<double>(spec.gpus[g].memory_bytes);
      gpu_mem_used += static_cast<double>(use.gpu_bytes[g]);
      gpus += 1;
      gpus_used += use.gpu_bytes[g] > 0 ? 1 : 0;
    }
  }
  point.gpu_memory_share = gpu_mem > 0 ? gpu_mem_used / gpu_mem : 0;
  point.cpu_share = cores > 0 ? cores_used / cores : 0;
  point.gpus_used_share = gpus > 0 ? gpus_used / gpus : 0;
  out_.timeline.push_back(point);
  arrivals_last_hb_ = arrivals_total_;
}

// --- Config --------------------------------------------------------------------------------------

const char* TraceName(TraceKind k) {
  switch (k) {
    case TraceKind::kPoisson:
      return "poisson";
    case TraceKind::kGamma:
      return "gamma";
    case TraceKind::kStep:
      return "step";
    case TraceKind::kRamp:
      return "ramp";
    case TraceKind::kOnOff:
      return "onoff";
    case TraceKind::kCsv:
      return "csv";
  }
  return "poisson";
}

}  // namespace

const char* MissCauseName(MissCause cause) {
  switch (cause) {
    case MissCause::kHeld:
      return "held at the gateway (no ready replica: cold start)";
    case MissCause::kRetried:
      return "retried after a node failure";
    case MissCause::kSlowHardware:
      return "hardware too slow (1-item batch over the SLO)";
    case MissCause::kBatchTooLarge:
      return "batch too large for the SLO";
    case MissCause::kExecNoise:
      return "batch over the SLO by noise";
    case MissCause::kRouter:
      return "router: queued while another replica was idle";
    case MissCause::kScalingUp:
      return "queued while replicas were starting (scale-up lag)";
    case MissCause::kBurst:
      return "queued at the ready replicas, none starting (burst over provisioned capacity)";
    case MissCause::kCount:
      break;
  }
  return "?";
}

absl::StatusOr<TraceKind> ParseTraceKind(const std::string& s);
absl::StatusOr<TraceKind> ParseTraceKind(const std::string& s) {
  for (TraceKind k : {TraceKind::kPoisson, TraceKind::kGamma, TraceKind::kStep, TraceKind::kRamp,
                      TraceKind::kOnOff, TraceKind::kCsv}) {
    if (s == TraceName(k)) return k;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown trace \"", s, "\" (poisson, gamma, step, ramp, onoff, csv)"));
}

std::vector<std::string> PolicyNames() {
  return {"ferry", "round-robin", "fastest-gpu", "cheapest", "fixed-replicas"};
}

absl::StatusOr<Policy> PolicyByName(const std::string& name) {
  Policy p;
  p.name = name;
  if (name == "ferry") return p;
  if (name == "round-robin") {
    p.routing = Routing::kRoundRobin;
  } else if (name == "least-outstanding") {
    p.routing = Routing::kLeastOutstanding;
  } else if (name == "fastest-gpu") {
    p.placement = PlacementPolicy::kFastest;
  } else if (name == "cheapest") {
    p.placement = PlacementPolicy::kCheapest;
  } else if (name == "fixed-replicas") {
    p.autoscale = false;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown policy \"", name, "\""));
  }
  return p;
}

SimConfig Generate(const GenerateOptions& o) {
  SimConfig c;
  c.seed = o.seed;
  std::mt19937_64 rng(o.seed);
  struct Gpu {
    const char* name;
    int count;
    int64_t mem_gib;
    int cc;
    double node_price;
    double speed;
    double share;
  };
  // On-demand list prices of comparable cloud instances, rounded.
  const Gpu gpus[] = {{"NVIDIA T4", 4, 16, 75, 3.9, 1.0, 0.20},
                      {"NVIDIA A10G", 4, 24, 86, 5.7, 1.7, 0.20},
                      {"NVIDIA A100", 8, 80, 80, 32.8, 3.5, 0.12},
                      {"NVIDIA H100", 8, 80, 90, 98.3, 6.0, 0.08}};
  int assigned = 0;
  for (const Gpu& g : gpus) {
    NodeType t;
    t.name = absl::StrCat(absl::StrReplaceAll(g.name, {{"NVIDIA ", ""}}), "x", g.count);
    t.count = std::max(1, static_cast<int>(std::lround(g.share * o.nodes)));
    t.cpu_cores = 48;
    t.memory_bytes = 192LL << 30;
    t.gpu_kind = g.name;
    t.gpu_count = g.count;
    t.gpu_memory_bytes = g.mem_gib << 30;
    t.compute_capability_x10 = g.cc;
    t.price_per_hour = g.node_price;
    assigned += t.count;
    c.node_types.push_back(t);
  }
  NodeType cpu;
  cpu.name = "cpu32";
  cpu.count = std::max(1, o.nodes - assigned);
  cpu.cpu_cores = 32;
  cpu.memory_bytes = 128LL << 30;
  cpu.price_per_hour = 1.36;
  c.node_types.insert(c.node_types.begin(), cpu);

  std::uniform_real_distribution<double> u(0, 1);
  // Replicas a function needs at its base rate: log-normal, median 1.5, capped at 40.
  std::lognormal_distribution<double> need(std::log(1.5), 0.8);
  for (int f = 0; f < o.functions; ++f) {
    FunctionConfig fc;
    fc.name = absl::StrCat("fn-", f);
    const bool gpu = u(rng) < 0.6;
    fc.req.accelerator = gpu ? Accelerator::kGpu : Accelerator::kCpu;
    fc.req.cpu_cores = 1;
    fc.req.memory_bytes = 2LL << 30;
    fc.req.max_batch_size = gpu ? 8 : 4;
    double a_ref, b_ref;
    if (gpu) {
      fc.req.gpu_memory_bytes = static_cast<int64_t>(1 + u(rng) * 7) << 30;
      b_ref = 20000 + u(rng) * 60000;  // on a T4
      a_ref = 3000 + u(rng) * 12000;
      for (const Gpu& g : gpus) {
        fc.profiles.push_back({g.name, {a_ref / g.speed, b_ref / g.speed, true}});
      }
    } else {
      b_ref = 5000 + u(rng) * 15000;
      a_ref = 5000 + u(rng) * 15000;
      fc.profiles.push_back({"cpu", {a_ref, b_ref, true}});
    }
    // SLO: a full batch on the reference hardware fits within half the target, with slack.
    fc.req.latency_target_us =
        std::round(2.5 * (a_ref * static_cast<double>(fc.req.max_batch_size) / 2 + b_ref));
    fc.scaling.min_replicas = 1;
    fc.scaling.max_replicas = 200;
    fc.scaling.report_interval_us = 1'000'000;
    fc.trace = o.trace;
    // The base rate loads the replicas it needs on the reference hardware (T4 or CPU) to
    // `utilization` of their throughput within the SLO; initial replicas are sized for it at the
    // autoscaler's target.
    const control::Capacity cap = control::CapacityOf(LatencyModel{a_ref, b_ref, true}, fc.req);
    const double replicas = std::clamp(need(rng), 0.3, 40.0);
    fc.trace.rate_rps = replicas * cap.throughput_rps * o.utilization;
    if (fc.trace.kind == TraceKind::kRamp) fc.trace.ramp_to_rps = 4 * fc.trace.rate_rps;
    fc.initial_replicas = std::max<int>(
        1, static_cast<int>(std::ceil(fc.trace.rate_rps /
                                      (cap.throughput_rps * fc.scaling.target_utilization))));
    c.functions.push_back(std::move(fc));
  }
  return c;
}

nlohmann::json ToJson(const SimConfig& c) {
  nlohmann::json j;
  j["duration_s"] = c.duration_s;
  j["seed"] = c.seed;
  j["noise_sigma"] = c.noise_sigma;
  j["heartbeat_s"] = c.heartbeat_s;
  j["lease_timeout_s"] = c.lease_timeout_s;
  j["cold_start_cpu_s"] = c.cold_start_cpu_s;
  j["cold_start_gpu_s"] = c.cold_start_gpu_s;
  j["hold_queue"] = c.hold_queue;
  j["replica_queue_limit"] = c.replica_queue_limit;
  j["batch_delay_us"] = c.batch_delay_us;
  j["gpu_time_slicing"] = c.gpu_time_slicing;
  j["hold_timeout_s"] = c.hold_timeout_s;
  j["fail_fraction"] = c.fail_fraction;
  j["fail_at_s"] = c.fail_at_s;
  j["warmup_s"] = c.warmup_s;
  for (const NodeType& t : c.node_types) {
    j["nodes"].push_back({{"name", t.name},
                          {"count", t.count},
                          {"cpu_cores", t.cpu_cores},
                          {"memory_gib", static_cast<double>(t.memory_bytes) / (1 << 30)},
                          {"gpu_kind", t.gpu_kind},
                          {"gpu_count", t.gpu_count},
                          {"gpu_memory_gib", static_cast<double>(t.gpu_memory_bytes) / (1 << 30)},
                          {"compute_capability", t.compute_capability_x10 / 10.0},
                          {"price_per_hour", t.price_per_hour}});
  }
  for (const FunctionConfig& f : c.functions) {
    nlohmann::json fj = {
        {"name", f.name},
        {"accelerator", f.req.accelerator == Accelerator::kGpu   ? "gpu"
                        : f.req.accelerator == Accelerator::kCpu ? "cpu"
                                                                 : "any"},
        {"cpu_cores", f.req.cpu_cores},
        {"memory_gib", static_cast<double>(f.req.memory_bytes) / (1 << 30)},
        {"gpu_memory_gib", static_cast<double>(f.req.gpu_memory_bytes) / (1 << 30)},
        {"latency_target_ms", f.req.latency_target_us / 1000.0},
        {"max_batch", f.req.max_batch_size},
        {"min_replicas", f.scaling.min_replicas},
        {"max_replicas", f.scaling.max_replicas},
        {"initial_replicas", f.initial_replicas},
        {"trace",
         {{"kind", TraceName(f.trace.kind)},
          {"rate_rps", f.trace.rate_rps},
          {"cv", f.trace.cv},
          {"step_at_s", f.trace.step_at_s},
          {"step_factor", f.trace.step_factor},
          {"ramp_to_rps", f.trace.ramp_to_rps},
          {"on_s", f.trace.on_s},
          {"off_s", f.trace.off_s}}}};
    for (const auto& [kind, m] : f.profiles) fj["profiles"][kind] = {m.a_us, m.b_us};
    j["functions"].push_back(fj);
  }
  return j;
}

absl::StatusOr<SimConfig> ParseConfig(const nlohmann::json& j) {
  SimConfig c;
  try {
    c.duration_s = j.value("duration_s", c.duration_s);
    c.seed = j.value("seed", c.seed);
    c.noise_sigma = j.value("noise_sigma", c.noise_sigma);
    c.heartbeat_s = j.value("heartbeat_s", c.heartbeat_s);
    c.lease_timeout_s = j.value("lease_timeout_s", c.lease_timeout_s);
    c.cold_start_cpu_s = j.value("cold_start_cpu_s", c.cold_start_cpu_s);
    c.cold_start_gpu_s = j.value("cold_start_gpu_s", c.cold_start_gpu_s);
    c.hold_queue = j.value("hold_queue", c.hold_queue);
    c.replica_queue_limit = j.value("replica_queue_limit", c.replica_queue_limit);
    c.batch_delay_us = j.value("batch_delay_us", c.batch_delay_us);
    c.gpu_time_slicing = j.value("gpu_time_slicing", c.gpu_time_slicing);
    c.hold_timeout_s = j.value("hold_timeout_s", c.hold_timeout_s);
    c.fail_fraction = j.value("fail_fraction", c.fail_fraction);
    c.fail_at_s = j.value("fail_at_s", c.fail_at_s);
    c.warmup_s = j.value("warmup_s", c.warmup_s);
    constexpr double kGiB = 1 << 30;
    for (const auto& n : j.at("nodes")) {
      NodeType t;
      t.name = n.at("name").get<std::string>();
      t.count = n.value("count", 1);
      t.cpu_cores = n.value("cpu_cores", t.cpu_cores);
      t.memory_bytes = static_cast<int64_t>(n.value("memory_gib", 128.0) * kGiB);
      t.gpu_kind = n.value("gpu_kind", "");
      t.gpu_count = n.value("gpu_count", 0);
      t.gpu_memory_bytes = static_cast<int64_t>(n.value("gpu_memory_gib", 0.0) * kGiB);
      t.compute_capability_x10 =
          static_cast<int>(std::lround(n.value("compute_capability", 0.0) * 10));
      t.price_per_hour = n.value("price_per_hour", t.price_per_hour);
      if (t.gpu_count > 0 && t.gpu_kind.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("nodes ", t.name, ": gpu_kind missing"));
      }
      c.node_types.push_back(t);
    }
    for (const auto& fj : j.at("functions")) {
      FunctionConfig f;
      f.name = fj.at("name").get<std::string>();
      const std::string acc = fj.value("accelerator", "cpu");
      f.req.accelerator = acc == "gpu"   ? Accelerator::kGpu
                          : acc == "any" ? Accelerator::kAny
                                         : Accelerator::kCpu;
      f.req.cpu_cores = fj.value("cpu_cores", 1.0);
      f.req.memory_bytes = static_cast<int64_t>(fj.value("memory_gib", 1.0) * kGiB);
      f.req.gpu_memory_bytes = static_cast<int64_t>(fj.value("gpu_memory_gib", 0.0) * kGiB);
      f.req.latency_target_us = fj.value("latency_target_ms", 100.0) * 1000;
      f.req.max_batch_size = fj.value("max_batch", 1);
      f.scaling.min_replicas = fj.value("min_replicas", 1);
      f.scaling.max_replicas = fj.value("max_replicas", 100);
      f.scaling.report_interval_us = Us(c.heartbeat_s);
      f.initial_replicas = fj.value("initial_replicas", 1);
      if (fj.contains("profiles")) {
        for (const auto& [kind, ab] : fj.at("profiles").items()) {
          f.profiles.push_back({kind, {ab.at(0).get<double>(), ab.at(1).get<double>(), true}});
        }
      }
      const auto& tj = fj.at("trace");
      auto kind = ParseTraceKind(tj.value("kind", "poisson"));
      if (!kind.ok()) return kind.status();
      f.trace.kind = *kind;
      f.trace.rate_rps = tj.value("rate_rps", f.trace.rate_rps);
      f.trace.cv = tj.value("cv", f.trace.cv);
      f.trace.step_at_s = tj.value("step_at_s", f.trace.step_at_s);
      f.trace.step_factor = tj.value("step_factor", f.trace.step_factor);
      f.trace.ramp_to_rps = tj.value("ramp_to_rps", f.trace.ramp_to_rps);
      f.trace.on_s = tj.value("on_s", f.trace.on_s);
      f.trace.off_s = tj.value("off_s", f.trace.off_s);
      c.functions.push_back(std::move(f));
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("simulator config: ", e.what()));
  }
  return c;
}

absl::Status LoadArrivalsCsv(const std::string& text, SimConfig& config) {
  std::map<std::string, std::vector<double>> times;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    std::vector<std::string> cols = absl::StrSplit(line, ',');
    double t;
    if (cols.size() < 2 || !absl::SimpleAtod(cols[0], &t)) continue;  // header, junk
    times[std::string(absl::StripAsciiWhitespace(cols[1]))].push_back(t);
  }
  for (auto& [name, ts] : times) {
    auto it = std::find_if(config.functions.begin(), config.functions.end(),
                           [&](const FunctionConfig& f) { return f.name == name; });
    if (it == config.functions.end()) {
      return absl::InvalidArgumentError(absl::StrCat("arrivals csv: no function \"", name, "\""));
    }
    std::sort(ts.begin(), ts.end());
    it->trace.kind = TraceKind::kCsv;
    it->trace.times_s = std::move(ts);
  }
  return absl::OkStatus();
}

control::Cluster BuildCluster(const SimConfig& config, std::vector<int>* type_of) {
  control::Cluster cluster;
  for (size_t ti = 0; ti < config.node_types.size(); ++ti) {
    const NodeType& t = config.node_types[ti];
    const int kind = t.gpu_kind.empty() ? control::kCpuKind : cluster.kinds().Intern(t.gpu_kind);
    for (int i = 0; i < t.count; ++i) {
      control::NodeSpec n;
      n.id = absl::StrCat(t.name, "-", i);
      n.cpu_cores = t.cpu_cores;
      n.memory_bytes = t.memory_bytes;
      n.price_per_hour = t.price_per_hour;
      for (int g = 0; g < t.gpu_count; ++g) {
        n.gpus.push_back({.index = g,
                          .kind = kind,
                          .memory_bytes = t.gpu_memory_bytes,
                          .compute_capability_x10 = t.compute_capability_x10});
      }
      cluster.AddNode(std::move(n));
      if (type_of != nullptr) type_of->push_back(static_cast<int>(ti));
    }
  }
  return cluster;
}

absl::StatusOr<RunResult> Run(const SimConfig& config, const Policy& policy) {
  for (const FunctionConfig& f : config.functions) {
    if (f.scaling.min_replicas > f.scaling.max_replicas || f.initial_replicas < 0) {
      return absl::InvalidArgumentError(absl::StrCat(f.name, ": bad replica bounds"));
    }
  }
  Simulator sim(config, policy);
  return sim.Run();
}

absl::Status WriteCsv(const RunResult& r, const SimConfig& config, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", dir, ": ", ec.message()));
  const std::string p = absl::StrCat(dir, "/", r.policy, "_");
  std::ofstream f(p + "functions.csv");
  f << "function,arrivals,answered,within_slo,rejected,retried,unplaced,attainment,"
       "direction_changes,max_replicas,step_decision_s,step_placed_s,step_ready_s\n";
  for (const FunctionResult& x : r.functions) {
    f << x.name << ',' << x.arrivals << ',' << x.answered << ',' << x.within_slo << ','
      << x.rejected << ',' << x.retried << ',' << x.unplaced << ','
      << (x.arrivals ? static_cast<double>(x.within_slo) / static_cast<double>(x.arrivals) : 1.0)
      << ',' << x.direction_changes << ',' << x.max_replicas_seen << ',' << x.step_decision_s << ','
      << x.step_placed_s << ',' << x.step_ready_s << '\n';
  }
  std::ofstream d(p + "decisions.csv");
  d << "t_s,function,from,to,panic,reason\n";
  for (const Decision& x : r.decisions) {
    std::string reason = x.reason;
    std::replace(reason.begin(), reason.end(), ',', ';');
    d << x.t_s << ',' << config.functions[x.function].name << ',' << x.from << ',' << x.to << ','
      << x.panic << ',' << reason << '\n';
  }
  std::ofstream t(p + "timeline.csv");
  t << "t_s,replicas,ready,cost_per_hour,arrivals_rps,gpu_memory_share,cpu_share,"
       "gpus_used_share\n";
  for (const TimelinePoint& x : r.timeline) {
    t << x.t_s << ',' << x.replicas << ',' << x.ready << ',' << x.cost_per_hour << ','
      << x.arrivals_rps << ',' << x.gpu_memory_share << ',' << x.cpu_share << ','
      << x.gpus_used_share << '\n';
  }
  std::ofstream rc(p + "replicas.csv");
  rc << "t_s,function,replicas\n";
  for (const auto& [ts, fn, n] : r.replica_changes) {
    rc << ts << ',' << config.functions[fn].name << ',' << n << '\n';
  }
  if (!f || !d || !t || !rc) return absl::InternalError(absl::StrCat("writing CSV under ", dir));
  return absl::OkStatus();
}

}  // namespace ferry::sim
