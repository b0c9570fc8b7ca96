#include "control-plane/autoscaler.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ferry::control {
namespace {

int CeilCount(double x) {
  if (!(x > 0)) return 0;
  // Tolerate float noise at exact multiples (2.0000000001 replicas is 2).
  const double c = std::ceil(x - 1e-9);
  return c > 1e6 ? 1'000'000 : static_cast<int>(c);
}

std::string Seconds(int64_t us) { return absl::StrFormat("%gs", static_cast<double>(us) / 1e6); }

}  // namespace

AutoscalerSettings SettingsOf(const ScalingSpec& s) {
  AutoscalerSettings out;
  out.min_replicas = s.min_replicas;
  out.max_replicas = s.max_replicas;
  out.idle_us = s.idle_seconds * 1'000'000;
  out.target_utilization = s.target_utilization;
  out.stable_window_us = static_cast<int64_t>(s.stable_window_seconds * 1e6);
  out.panic_window_us = static_cast<int64_t>(s.panic_window_seconds * 1e6);
  out.panic_threshold = s.panic_threshold;
  out.max_scale_up_rate = s.max_scale_up_rate;
  out.max_scale_down_rate = s.max_scale_down_rate;
  out.burst_z = s.burst_z;
  return out;
}

Autoscaler::Autoscaler(const AutoscalerSettings& settings, Clock* clock, int initial)
    : settings_(settings),
      clock_(clock),
      start_us_(clock->NowMicros()),
      last_activity_us_(start_us_),
      last_record_us_(start_us_),
      last_desired_(initial) {}

void Autoscaler::Record(int64_t arrived, double in_flight) {
  const int64_t now = clock_->NowMicros();
  samples_.push_back(
      {last_record_us_, now, std::max<int64_t>(0, arrived), std::max(0.0, in_flight)});
  last_record_us_ = now;
  if (arrived > 0 || in_flight > 0) last_activity_us_ = now;
  Prune(now);
}

void Autoscaler::KeepAtLeast(int replicas) { last_desired_ = std::max(last_desired_, replicas); }

void Autoscaler::Demand() {
  demand_ = true;
  last_activity_us_ = clock_->NowMicros();
}

void Autoscaler::Prune(int64_t now_us) {
  const int64_t horizon = now_us - std::max<int64_t>(1, settings_.stable_window_us);
  while (!samples_.empty() && samples_.front().at_us <= horizon) samples_.pop_front();
  while (!stable_wants_.empty() && stable_wants_.front().at_us <= horizon) {
    stable_wants_.pop_front();
  }
}

ScaleDecision Autoscaler::Decide(int current, int ready, double throughput_rps,
                                 double per_replica_concurrency) {
  const AutoscalerSettings& s = settings_;
  const int64_t now = clock_->NowMicros();
  Prune(now);
  const int64_t stable_w = std::max<int64_t>(1, s.stable_window_us);
  const int64_t panic_w = std::clamp<int64_t>(s.panic_window_us, 1, stable_w);

  // The newest sixth of the panic window (at least two load reports): while panicking, a step is
  // followed at this pace instead of waiting for the whole panic window to fill (panic never
  // scales down, so its noise can only add replicas briefly).
  const int64_t recent_w =
      std::min(panic_w, std::max<int64_t>({1, panic_w / 6, 2 * s.report_interval_us}));
  // Each sample covers (from_us, at_us]; a window's rate divides its arrivals by the time its
  // samples cover, so reports that arrive in lumps are not over- or under-counted.
  struct Window {
    int64_t w;
    int64_t arrived = 0;
    double conc = 0;
    int n = 0;
    int64_t from_us = 0;
    double rps() const { return n > 0 ? static_cast<double>(arrived) / (span_us() / 1e6) : 0; }
    double span_us() const { return static_cast<double>(std::max<int64_t>(1, to_us - from_us)); }
    double mean_conc() const { return n > 0 ? conc / n : 0; }
    int64_t to_us = 0;
  };
  Window win[3] = {{stable_w}, {panic_w}, {recent_w}};
  for (const Sample& x : samples_) {
    for (Window& wd : win) {
      if (x.at_us <= now - wd.w) continue;
      if (wd.n == 0) wd.from_us = x.from_us;
      wd.arrived += x.arrived;
      wd.conc += x.in_flight;
      ++wd.n;
      wd.to_us = now;
    }
  }
  const double stable_rps = win[0].rps(), panic_rps = win[1].rps(), recent_rps = win[2].rps();
  const double stable_conc = win[0].mean_conc(), panic_conc = win[1].mean_conc();
  const double recent_conc = win[2].mean_conc();

  const double util = s.target_utilization > 0 ? s.target_utilization : 0.7;
  const double per_replica_rps = throughput_rps > 0 ? throughput_rps : 1.0;
  const double ready_base = std::max(1, ready);
  // Replicas wanted, unrounded. The arrival rate is the primary signal. The in-flight count is
  // not divided by a per-replica concurrency: a backlog that builds between two load reports (a
  // heartbeat is many batch latencies) made in-flight / batch read ~10x on a 4x step. Only the
  // backlog beyond what the ready replicas hold without queueing counts, as the replicas that
  // would drain it within one stable window: a bounded term that still scales a function whose
  // rate signal under-reads (a throughput profile that is too optimistic keeps its queue growing
  // until this term covers the shortfall).
  const double drain_s = static_cast<double>(stable_w) / 1e6;
  auto raw_want = [&](double rps, double conc) {
    double w = rps / (per_replica_rps * util);
    if (per_replica_concurrency > 0) {
      const double backlog = std::max(0.0, conc - per_replica_concurrency * ready_base);
      w += backlog / (per_replica_rps * drain_s);
    }
    return w;
  };
  // Burst headroom: the index of dispersion from successive differences of the reports' rates.
  // A step adds one large difference instead of a variance over the whole window, and the two
  // largest differences are dropped (a step up and down of on/off load), so that a change of
  // rate is left to the rate signal and panic mode. Fewer than 8 reports say too little.
  double dispersion = 0;
  if (per_replica_concurrency > 0 && s.burst_z > 0 && samples_.size() >= 8 && stable_rps > 0) {
    std::vector<std::pair<double, double>> terms;  // (squared difference, its expectation / D)
    terms.reserve(samples_.size());
    for (size_t i = 1; i < samples_.size(); ++i) {
      const Sample& x = samples_[i];
      const Sample& y = samples_[i - 1];
      const double dx = static_cast<double>(std::max<int64_t>(1, x.at_us - x.from_us)) / 1e6;
      const double dy = static_cast<double>(std::max<int64_t>(1, y.at_us - y.from_us)) / 1e6;
      const double diff = static_cast<double>(x.arrived) / dx - static_cast<double>(y.arrived) / dy;
      terms.emplace_back(diff * diff, stable_rps * (1 / dx + 1 / dy));
    }
    std::sort(terms.begin(), terms.end());
    const size_t keep = terms.size() - 2;
    double num = 0, den = 0;
    for (size_t i = 0; i < keep; ++i) {
      num += terms[i].first;
      den += terms[i].second;
    }
    dispersion = den > 0 ? num / den : 0;
  }
  const double window_s = 2 * per_replica_concurrency / per_replica_rps;
  auto burst_raw = [&](double rps) {
    if (dispersion <= 0 || window_s <= 0) return 0.0;
    const double mean = rps * window_s;
    return (mean + s.burst_z * std::sqrt(dispersion * mean)) / (per_replica_rps * window_s);
  };
  // Wants are kept unrounded and in requests per second (replicas × one replica's throughput):
  // the throughput a replica stands for changes when the function's replicas move to other
  // hardware, and the window's maximum must not mix the two units; the controller places
  // whole replicas on whatever hardware covers the unrounded need most cheaply.
  auto want_raw = [&](double rps, double conc) {
    return std::max(raw_want(rps, conc), burst_raw(rps));
  };
  const double stable_raw = want_raw(stable_rps, stable_conc);
  const int stable_want = CeilCount(stable_raw);
  const double panic_raw = raw_want(panic_rps, panic_conc);

  ScaleDecision d;
  d.stable_rps = stable_rps;
  d.panic_rps = panic_rps;
  d.stable_concurrency = stable_conc;
  d.dispersion = dispersion;
  d.burst_want = CeilCount(burst_raw(stable_rps));

  // The unrounded want against the threshold: with one ready replica, 1.1 replicas' worth of
  // load rounds up to 2 and would cross a 2x threshold, cycling 1 -> 2 -> 3 -> 2 -> 1 under
  // steady load.
  const double panic_ratio = panic_raw / ready_base;
  // Overload also panics: arrivals over the newest sixth of the panic window (at least two load
  // reports) exceed the ready replicas' full capacity (not the target) while a queue builds
  // beyond what they hold. Without the old in-flight / batch reading, a step that stays under the
  // threshold (two over-provisioned replicas at 1.8x, or one at 1.05x of its capacity) would
  // otherwise wait for the stable window's average while its queue and latency grow.
  const bool overloaded =
      recent_rps > per_replica_rps * ready_base &&
      (per_replica_concurrency <= 0 || recent_conc > per_replica_concurrency * ready_base);
  if (panic_ratio >= s.panic_threshold || overloaded) {
    if (panic_since_us_ < 0) panic_since_us_ = now;
    panic_last_hit_us_ = now;
  } else if (panic_since_us_ >= 0 && now - panic_last_hit_us_ >= stable_w) {
    panic_since_us_ = -1;
  }
  stable_wants_.push_back({now, stable_raw * per_replica_rps});
  double window_max_rps = 0;
  for (const Want& w : stable_wants_) window_max_rps = std::max(window_max_rps, w.need_rps);

  std::string load = absl::StrFormat("%.4g rps / %.4g rps per replica at %g target", stable_rps,
                                     per_replica_rps, util);
  if (d.burst_want > CeilCount(raw_want(stable_rps, stable_conc))) {
    absl::StrAppend(
        &load, absl::StrFormat("; bursts (dispersion %.3g) want %d", dispersion, d.burst_want));
  }
  // The need (requests per second of throughput within the SLO) behind `desired`; a rule that
  // sets a count outright sets the need to that many replicas.
  double need_units;  // in replicas of `per_replica_rps`, unrounded
  if (panic_since_us_ >= 0) {
    d.panic = true;
    need_units =
        std::max({panic_raw, want_raw(recent_rps, recent_conc), last_need_rps_ / per_replica_rps,
                  static_cast<double>(last_desired_ - 1) + 1e-6});
    d.reason = absl::StrFormat("panic: %.1fx load over %s window", panic_ratio, Seconds(panic_w));
    if (overloaded && panic_ratio < s.panic_threshold) {
      absl::StrAppend(&d.reason, "; above ", static_cast<int>(ready_base),
                      " ready replicas' capacity");
    }
  } else {
    // A window not yet observed in full cannot agree on a scale-down (a restarted control plane
    // does not drop the replicas it adopted before it has seen their load).
    need_units = window_max_rps / per_replica_rps;
    if (now - start_us_ < stable_w) {
      need_units = std::max(need_units, static_cast<double>(last_desired_ - 1) + 1e-6);
    }
    const int window_max = CeilCount(need_units);
    if (window_max > stable_want) {
      d.reason = absl::StrCat("stable: ", load, "; holding ", window_max, " until the ",
                              Seconds(stable_w), " window agrees on ", stable_want);
    } else {
      d.reason = absl::StrCat("stable: ", load);
    }
  }
  int desired = CeilCount(need_units);
  // A count set outright by a rule below: its need is that many replicas.
  auto set_count = [&](int count) {
    desired = count;
    need_units = count;
  };

  // Rate limits per evaluation.
  const int up_cap = CeilCount(s.max_scale_up_rate * ready_base);
  if (desired > up_cap && desired > current) {
    set_count(std::max(current, up_cap));
    absl::StrAppend(&d.reason, " (limited by maxScaleUpRate ", s.max_scale_up_rate, ")");
  }
  const int down_floor =
      s.max_scale_down_rate > 0 ? static_cast<int>(std::floor(current / s.max_scale_down_rate)) : 0;
  if (desired < down_floor) {
    set_count(down_floor);
    absl::StrAppend(&d.reason, " (limited by maxScaleDownRate ", s.max_scale_down_rate, ")");
  }

  // Zero: the last replica goes only after idleSeconds without any request.
  if (desired == 0 && s.min_replicas == 0) {
    const int64_t idle_for = now - last_activity_us_;
    if (idle_for < s.idle_us && (current > 0 || demand_ || last_desired_ > 0)) {
      set_count(1);
      if (demand_ && current == 0) {
        d.reason = "scale from zero: a request is waiting";
      } else {
        d.reason = absl::StrCat("stable: no load; last replica kept until idle ",
                                Seconds(s.idle_us), " (idle ", Seconds(idle_for), ")");
      }
    } else if (current > 0 || last_desired_ > 0) {
      d.reason = absl::StrCat("idle ", Seconds(s.idle_us), ": to zero");
    } else {
      d.reason = "idle: at zero";
    }
  } else if (demand_ && current == 0 && desired >= 1) {
    d.reason = absl::StrCat("scale from zero: a request is waiting; ", d.reason);
  }

  // Bounds.
  if (desired < s.min_replicas) {
    // The count rises, the need does not: the controller places minReplicas replicas but
    // chooses their hardware for the load there is.
    desired = static_cast<int>(s.min_replicas);
    absl::StrAppend(&d.reason, " (raised to minReplicas ", s.min_replicas, ")");
  }
  if (desired > s.max_replicas) {
    set_count(static_cast<int>(s.max_replicas));
    absl::StrAppend(&d.reason, " (capped at maxReplicas ", s.max_replicas, ")");
  }
  demand_ = false;
  last_desired_ = desired;
  last_need_rps_ = need_units * per_replica_rps;
  d.desired = desired;
  d.need_rps = last_need_rps_;
  return d;
}

}  // namespace ferry::control
