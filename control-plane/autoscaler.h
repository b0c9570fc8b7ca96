// The autoscaler: how many replicas one function wants, from its observed load, in the shape of
// Knative's KPA.
//
// Inputs, recorded once per evaluation (the controller evaluates every autoscale interval):
// the requests that arrived at the function's replicas since the last record (from the agents'
// requests_total counters, as deltas), the requests in flight across them (queued + executing),
// and a demand signal from the gateway when a request waits for a function with no ready replica.
// Per evaluation the caller also states one replica's throughput within the SLO (from the
// profile, placement.h CapacityOf) and the in-flight requests one replica serves without queueing
// (its batch within the SLO times its instances).
//
// Formula. Over a window W, want(W) = ceil(rate_W / (throughput × targetUtilization) +
// backlog_W / (throughput × stable window)), where rate_W is the requests that arrived in W
// divided by W (or by the time since the autoscaler started, when shorter), and backlog_W =
// max(0, concurrency_W − per_replica_concurrency × max(1, ready)) with concurrency_W the mean of
// the in-flight samples in W: the arrival rate is the primary signal; a queue adds only the
// replicas that would drain it within one stable window.
//  - Stable mode: desired = the largest want(stable window) computed during the last stable
//    window: up at once, down only once a whole stable window agrees (no flapping). The window
//    keeps each want unrounded and in requests per second, so that a change of the hardware the
//    replicas run on (and so of one replica's throughput) does not mix units in its maximum.
//  - Panic mode: entered when the unrounded want(panic window) ≥ panicThreshold × max(1, ready
//    replicas), or when the arrival rate over its newest sixth exceeds the ready replicas' full
//    throughput while their queue grows (overload); desired = max(want(panic window), want(newest
//    sixth of the panic window), the desired before) — never down while panicking, and a step is
//    followed within about a sixth of the panic window; left once a stable window has passed
//    without the threshold being crossed.
//  - Rate limits per evaluation: up to ceil(maxScaleUpRate × max(1, ready)), down to
//    floor(current / maxScaleDownRate).
//  - Bounds: within [minReplicas, maxReplicas]. With minReplicas 0 the last replica goes only
//    after idleSeconds without any request (arrival, in-flight request or gateway demand); a
//    function at zero with demand gets at least one replica at once.
// Every decision carries a reason a person can read, e.g. "panic: 4.1x load over 6s window",
// "stable: 120 rps / 55 rps per replica at 0.7 target", "idle 300s: to zero".
//
// Burst headroom. A mean rate says nothing about how requests bunch: under Gamma arrivals with a
// coefficient of variation of 4, a window as long as the SLO holds up to ~6x its mean arrivals at
// the 99.9th percentile, and a request that arrives in such a clump waits behind it whatever the
// autoscaler decides a second later. So want(W) is at least
//   (rate_W × S + burstZ × sqrt(D × rate_W × S)) / (throughput × S),
// the replicas whose throughput within the SLO serves, within one window S, the arrivals of such a
// window at the burstZ-sigma level. S = 2 × per_replica_concurrency / throughput, the batch
// latency doubled: placement sizes the batch so that it takes at most half the latency target,
// the other half being left to queueing (placement.h CapacityOf), so S is at most the target. D is
// the index of dispersion of the arrival counts (variance / mean; 1 for Poisson, ~16 for Gamma
// CV 4), measured over the stable window from the load reports with successive differences (the
// Allan variance), so that a change of rate (a step) does not read as burstiness:
// D = Σ (x_i − x_{i−1})² / Σ rate × (1/d_i + 1/d_{i−1}), x_i the rate of report i over its
// duration d_i, without the two largest differences (a step up and a step down are changes of
// rate, left to the rate signal and panic mode). Measured at the report interval (a second), D
// over-estimates the dispersion over the shorter S for renewal arrivals (it grows with the
// window), which errs towards headroom. Off without a concurrency signal, with burstZ 0, or
// before 8 reports.
//
// Pure: no I/O, no locks; time comes from the injected Clock. Not thread-safe (the controller
// calls it under its mutex).
#ifndef FERRY_CONTROL_PLANE_AUTOSCALER_H_
#define FERRY_CONTROL_PLANE_AUTOSCALER_H_

#include <cstdint>
#include <deque>
#include <string>

#include "ferry/clock.h"
#include "ferry/manifest.h"

namespace ferry::control {

struct AutoscalerSettings {
  int64_t min_replicas = 1;
  int64_t max_replicas = 1;
  int64_t idle_us = 300'000'000;
  double target_utilization = 0.7;  // (0, 1]
  int64_t stable_window_us = 60'000'000;
  int64_t panic_window_us = 6'000'000;  // <= stable window
  double panic_threshold = 2.0;         // ratio of ready replicas, > 1
  double max_scale_up_rate = 1000.0;    // > 1
  double max_scale_down_rate = 2.0;     // > 1
  // How often load reports arrive (the agents' heartbeat): the short window that follows a step
  // in panic mode spans at least two of them.
  int64_t report_interval_us = 0;
  // Burst headroom (see above): the standard deviations of one SLO window's arrivals that the
  // replicas serve within it. 0 = off (rate / targetUtilization only). The manifest's
  // scaling.burstZ; the controller turns it off for a function without a latency target.
  // 4 is what 99.9 % within the SLO took in the simulator under Gamma CV 4 arrivals (docs/perf.md,
  // "Cluster simulator"); 3 gave 99.7 %.
  double burst_z = 4.0;
};

AutoscalerSettings SettingsOf(const ScalingSpec& scaling);

struct ScaleDecision {
  int desired = 0;
  std::string reason;
  bool panic = false;
  double stable_rps = 0;  // arrival rate over the stable window
  double panic_rps = 0;   // over the panic window
  double stable_concurrency = 0;
  double dispersion = 0;  // index of dispersion D of the arrival counts (0 = not measured)
  int burst_want = 0;     // replicas the burst headroom alone wants (0 = off)
  // The throughput within the SLO (requests per second) that `desired` stands for, unrounded:
  // the load's need at the target utilisation, with burst headroom and backlog, or exactly
  // desired × throughput_rps where a rule set the count outright (panic's hold, rate limits,
  // maxReplicas, the last replica before idle). Below desired × throughput_rps when the count
  // was rounded up or raised to minReplicas: the controller covers it with whole replicas of
  // whatever hardware costs least (placement.h PlacementHints::needed_rps).
  double need_rps = 0;
};

class Autoscaler {
 public:
  // `clock` is not owned. `initial` is the replica count before any load was seen (the
  // function's starting desired count). Its idle timer starts now.
  Autoscaler(const AutoscalerSettings& settings, Clock* clock, int initial);

  // New settings (a re-applied manifest); history is kept.
  void set_settings(const AutoscalerSettings& settings) { settings_ = settings; }
  const AutoscalerSettings& settings() const { return settings_; }

  // One observation: `arrived` requests since the previous Record, `in_flight` right now.
  void Record(int64_t arrived, double in_flight);
  // A request is waiting for a ready replica (the gateway holds it): counts as activity and
  // makes a function at zero want one replica at the next Decide.
  void Demand();

  // Raises the count the autoscaler starts from (replicas adopted after a control-plane
  // restart); during its first stable window it does not go below it.
  void KeepAtLeast(int replicas);

  // The replica count wanted now. `current`: replicas assigned and not draining; `ready`: those
  // serving. `throughput_rps`: one replica's throughput within the SLO (> 0);
  // `per_replica_concurrency`: in-flight requests one replica serves without queueing (<= 0 =
  // the concurrency signal is off).
  ScaleDecision Decide(int current, int ready, double throughput_rps,
                       double per_replica_concurrency);

  bool panicking() const { return panic_since_us_ >= 0; }
  int64_t last_activity_us() const { return last_activity_us_; }

 private:
  struct Sample {
    int64_t from_us;  // the previous Record
    int64_t at_us;
    int64_t arrived;
    double in_flight;
  };
  struct Want {
    int64_t at_us;
    double need_rps;  // unrounded, in requests per second (see Decide)
  };
  void Prune(int64_t now_us);

  AutoscalerSettings settings_;
  Clock* const clock_;
  const int64_t start_us_;
  std::deque<Sample> samples_;     // within the stable window, oldest first
  std::deque<Want> stable_wants_;  // (time, want) over the stable window, for the windowed max
  int64_t last_activity_us_;
  int64_t last_record_us_;
  bool demand_ = false;
  int64_t panic_since_us_ = -1;     // -1 = not panicking
  int64_t panic_last_hit_us_ = -1;  // last evaluation at or above the threshold
  int last_desired_;
  double last_need_rps_ = 0;
};

}  // namespace ferry::control

#endif  // FERRY_CONTROL_PLANE_AUTOSCALER_H_
