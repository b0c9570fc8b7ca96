#include "control-plane/usage.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"

namespace ferry::control {
namespace {

constexpr int64_t kMinuteUs = 60'000'000;

// a += b (counters and histogram; cost too).
void AddInto(UsageRecord& a, const UsageRecord& b) {
  a.requests += b.requests;
  a.cost_units += b.cost_units;
  a.cpu_us += b.cpu_us;
  a.gpu_us += b.gpu_us;
  a.load_us += b.load_us;
  a.overhead_us += b.overhead_us;
  a.cost += b.cost;
  for (const auto& [le, n] : b.latency) a.latency[le] += n;
}

UsageRecord FromProto(const v1::FunctionUsage& u) {
  UsageRecord r;
  r.function = u.function();
  r.requests = u.requests();
  r.cost_units = u.cost_units();
  r.cpu_us = u.cpu_us();
  r.gpu_us = u.gpu_us();
  r.load_us = u.load_us();
  r.overhead_us = u.overhead_us();
  for (const auto& b : u.latency()) r.latency[b.le_us()] += b.count();
  return r;
}

// cur - prev when every counter grew or stayed; nullopt when one went down (a reset).
std::optional<UsageRecord> Difference(const UsageRecord& cur, const UsageRecord& prev) {
  UsageRecord d = cur;
  d.requests -= prev.requests;
  d.cost_units -= prev.cost_units;
  d.cpu_us -= prev.cpu_us;
  d.gpu_us -= prev.gpu_us;
  d.load_us -= prev.load_us;
  d.overhead_us -= prev.overhead_us;
  if (d.requests < 0 || d.cost_units < 0 || d.cpu_us < 0 || d.gpu_us < 0 || d.load_us < 0 ||
      d.overhead_us < 0) {
    return std::nullopt;
  }
  for (const auto& [le, n] : prev.latency) {
    int64_t& slot = d.latency[le];
    slot -= n;
    if (slot < 0) return std::nullopt;
  }
  std::erase_if(d.latency, [](const auto& kv) { return kv.second == 0; });
  return d;
}

bool Empty(const UsageRecord& r) {
  return r.requests == 0 && r.cpu_us == 0 && r.gpu_us == 0 && r.load_us == 0 &&
         r.overhead_us == 0 && r.cost_units == 0 && r.latency.empty();
}

void Fill(v1::UsageSummary* s, const UsageRecord& r) {
  s->set_requests(r.requests);
  s->set_cost_units(r.cost_units);
  s->set_cpu_us(r.cpu_us);
  s->set_gpu_us(r.gpu_us);
  s->set_load_us(r.load_us);
  s->set_overhead_us(r.overhead_us);
  s->set_cost(r.cost);
  s->set_cost_per_million(r.requests > 0 ? r.cost / static_cast<double>(r.requests) * 1e6 : 0);
  s->set_p50_ms(HistogramQuantileMs(r.latency, 0.50));
  s->set_p99_ms(HistogramQuantileMs(r.latency, 0.99));
}

}  // namespace

Clock* SystemClock::Get() {
  static SystemClock* clock = new SystemClock();
  return clock;
}

int64_t SystemClock::NowMicros() const {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double HistogramQuantileMs(const std::map<int64_t, int64_t>& latency, double q) {
  // Bounds ascending, with the unbounded bucket (key 0) last.
  std::vector<std::pair<int64_t, int64_t>> buckets;
  int64_t total = 0, unbounded = 0;
  for (const auto& [le, n] : latency) {
    if (n <= 0) continue;
    total += n;
    if (le <= 0) {
      unbounded += n;
    } else {
      buckets.emplace_back(le, n);
    }
  }
  if (total == 0) return 0;
  const double rank = std::max(1.0, std::ceil(q * static_cast<double>(total)));
  double cumulative = 0, lower = 0;
  for (const auto& [le, n] : buckets) {
    if (cumulative + static_cast<double>(n) >= rank) {
      const double within = (rank - cumulative) / static_cast<double>(n);
      return (lower + (static_cast<double>(le) - lower) * within) / 1000.0;
    }
    cumulative += static_cast<double>(n);
    lower = static_cast<double>(le);
  }
  (void)unbounded;
  return lower / 1000.0;  // in the unbounded bucket: the largest bound is all we know
}

UsageLedger::UsageLedger(const UsageLedgerOptions& options)
    : options_(options),
      wall_clock_(options.wall_clock != nullptr ? options.wall_clock : SystemClock::Get()) {}

absl::StatusOr<std::unique_ptr<UsageLedger>> UsageLedger::Create(
    const UsageLedgerOptions& options) {
  if (options.store == nullptr) return absl::InvalidArgumentError("usage ledger: no store");
  std::unique_ptr<UsageLedger> ledger(new UsageLedger(options));
  absl::StatusOr<std::vector<UsageBaseline>> stored = options.store->ListUsageBaselines();
  absl::MutexLock lock(&ledger->mu_);
  if (absl::IsUnimplemented(stored.status())) {
    ledger->store_has_usage_ = false;
  } else if (!stored.ok()) {
    return absl::Status(stored.status().code(),
                        absl::StrCat("usage ledger: ", stored.status().message()));
  } else {
    for (UsageBaseline& b : *stored) {
      BaseKey key{b.counters.node, b.counters.function};
      ledger->baselines_[key] = std::move(b);
    }
  }
  ledger->last_flush_us_ = ledger->wall_clock_->NowMicros();
  return ledger;
}

void UsageLedger::Ingest(const std::string& node, const NodePricing& pricing, uint64_t epoch,
                         const google::protobuf::RepeatedPtrField<v1::FunctionUsage>& usage) {
  if (epoch == 0) return;  // an agent that does not meter
  const int64_t minute = wall_clock_->NowMicros() / kMinuteUs;
  const double per_second = pricing.price_per_hour / 3600.0;
  const double cpu_rate = per_second / (pricing.cpu_cores > 0 ? pricing.cpu_cores : 1.0);
  const double gpu_rate = per_second / (pricing.gpus > 0 ? pricing.gpus : 1);
  absl::MutexLock lock(&mu_);
  for (const v1::FunctionUsage& u : usage) {
    UsageRecord cur = FromProto(u);
    cur.node = node;
    const BaseKey key{node, u.function()};
    UsageBaseline& base = baselines_[key];
    std::optional<UsageRecord> delta;
    if (base.epoch == epoch) delta = Difference(cur, base.counters);
    // A new key, another agent process, or counters that went down: counting started again
    // from zero, so everything counted is new.
    if (!delta.has_value()) delta = cur;
    if (Empty(*delta) && base.epoch == epoch) continue;  // nothing new: no write either
    base.epoch = epoch;
    base.counters = cur;
    dirty_baselines_[key] = true;
    if (Empty(*delta)) continue;
    delta->minute = minute;
    delta->node = node;
    delta->cost = (static_cast<double>(delta->cpu_us) * cpu_rate +
                   static_cast<double>(delta->gpu_us) * gpu_rate) /
                  1e6;
    UsageRecord& row = pending_[RowKey{minute, u.function(), node}];
    if (row.function.empty()) {
      row.minute = minute;
      row.function = u.function();
      row.node = node;
    }
    AddInto(row, *delta);
  }
}

absl::Status UsageLedger::Flush(bool force) {
  absl::MutexLock flush_lock(&flush_mu_);
  std::vector<UsageRecord> rows;
  std::vector<UsageBaseline> baselines;
  {
    absl::MutexLock lock(&mu_);
    const int64_t now = wall_clock_->NowMicros();
    if (!force && now - last_flush_us_ < options_.flush_interval_ms * 1000) {
      return absl::OkStatus();
    }
    last_flush_us_ = now;
    if (dirty_baselines_.empty() && pending_.empty()) return absl::OkStatus();
    if (!store_has_usage_) {
      for (auto& [key, row] : pending_) {
        UsageRecord& kept = memory_[key];
        if (kept.function.empty()) {
          kept.minute = row.minute;
          kept.function = row.function;
          kept.node = row.node;
        }
        AddInto(kept, row);
      }
      pending_.clear();
      dirty_baselines_.clear();
      return absl::OkStatus();
    }
    // Rows and the baselines they were taken against go to the store together; until the write
    // is done queries still see the rows (flushing_).
    flushing_ = std::move(pending_);
    pending_.clear();
    for (auto& [key, row] : flushing_) rows.push_back(row);
    for (const auto& [key, dirty] : dirty_baselines_) baselines.push_back(baselines_.at(key));
    dirty_baselines_.clear();
  }
  absl::Status status = options_.store->AddUsage(rows, baselines);
  absl::MutexLock lock(&mu_);
  if (!status.ok()) {
    // Keep them for the next flush (the baselines must still go with them).
    for (auto& [key, row] : flushing_) {
      UsageRecord& p = pending_[key];
      if (p.function.empty()) {
        p.minute = row.minute;
        p.function = row.function;
        p.node = row.node;
      }
      AddInto(p, row);
    }
    for (const UsageBaseline& b : baselines) {
      dirty_baselines_[BaseKey{b.counters.node, b.counters.function}] = true;
    }
  }
  flushing_.clear();
  return status;
}

absl::StatusOr<v1::GetUsageResponse> UsageLedger::Query(int64_t since_seconds,
                                                        const std::string& function) {
  const int64_t now = wall_clock_->NowMicros();
  const int64_t since_minute =
      since_seconds > 0 ? (now - since_seconds * 1'000'000) / kMinuteUs : 0;
  // Flushing holds flush_mu_ for the write: taking it here means a row is never both in the
  // store and in flushing_ (or in neither) while we read.
  absl::MutexLock flush_lock(&flush_mu_);
  std::vector<UsageRecord> rows;
  bool has_usage;
  {
    absl::MutexLock lock(&mu_);
    has_usage = store_has_usage_;
  }
  if (has_usage) {
    absl::StatusOr<std::vector<UsageRecord>> stored =
        options_.store->ListUsage(since_minute, function);
    if (!stored.ok()) return stored.status();
    rows = *std::move(stored);
  }
  {
    absl::MutexLock lock(&mu_);
    for (const auto* source : {&pending_, &flushing_, &memory_}) {
      for (const auto& [key, row] : *source) {
        if (row.minute < since_minute || (!function.empty() && row.function != function)) continue;
        rows.push_back(row);
      }
    }
  }
  std::map<std::string, UsageRecord> by_function;
  std::map<std::pair<std::string, std::string>, UsageRecord> by_node;
  UsageRecord total;
  for (const UsageRecord& r : rows) {
    AddInto(by_function[r.function], r);
    AddInto(by_node[{r.function, r.node}], r);
    AddInto(total, r);
  }
  v1::GetUsageResponse out;
  out.set_since_unix_ms(since_minute * kMinuteUs / 1000);
  out.set_until_unix_ms(now / 1000);
  for (const auto& [name, r] : by_function) {
    v1::UsageSummary* s = out.add_functions();
    s->set_function(name);
    Fill(s, r);
  }
  for (const auto& [key, r] : by_node) {
    v1::UsageSummary* s = out.add_nodes();
    s->set_function(key.first);
    s->set_node_id(key.second);
    Fill(s, r);
  }
  Fill(out.mutable_total(), total);
  return out;
}

}  // namespace ferry::control
