#include "perf/loadgen/loadgen.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace ferry::loadgen {

RunSummary Merge(std::vector<DriverResult> parts, double offered_rate, double duration_s) {
  RunSummary s;
  s.offered_rate = offered_rate;
  DriverResult& m = s.merged;
  for (DriverResult& p : parts) {
    m.latencies_ns.insert(m.latencies_ns.end(), p.latencies_ns.begin(), p.latencies_ns.end());
    m.sent += p.sent;
    m.ok_in_window += p.ok_in_window;
    m.late += p.late;
    m.max_late_ns = std::max(m.max_late_ns, p.max_late_ns);
    m.connections_opened += p.connections_opened;
    for (const auto& [kind, n] : p.errors) m.errors[kind] += n;
  }
  s.latency = Summarize(m.latencies_ns);
  s.throughput_rps = duration_s > 0 ? m.ok_in_window / duration_s : 0;
  return s;
}

std::string CsvHeader() {
  return "label,protocol,workload,model,mode,arrivals,offered_rps,connections,threads,warmup_s,"
         "duration_s,sent,ok,throughput_rps,mean_us,p50_us,p90_us,p99_us,p999_us,max_us,late,"
         "max_late_us,errors,error_kinds,connections_opened";
}

std::string CsvRow(const Options& o, const RunSummary& s) {
  int64_t errors = 0;
  for (const auto& [kind, n] : s.merged.errors) errors += n;
  // Labels are the caller's; keep the row parseable whatever they hold.
  std::string label = o.label;
  for (char& c : label) {
    if (c == ',' || c == '\n') c = ' ';
  }
  return absl::StrFormat(
      "%s,%s,%s,%s,%s,%s,%.1f,%d,%d,%.3f,%.3f,%d,%d,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%d,%.1f,%d,%"
      "s,%d",
      label, ProtocolName(o.protocol), WorkloadName(o.workload), o.model,
      o.mode == Mode::kOpen ? "open" : "closed",
      o.mode == Mode::kClosed ? "-" : (o.arrivals == Arrivals::kPoisson ? "poisson" : "constant"),
      s.offered_rate, o.connections, o.threads, o.warmup_s, o.duration_s, s.merged.sent,
      s.latency.count, s.throughput_rps, s.latency.mean_us, s.latency.p50_us, s.latency.p90_us,
      s.latency.p99_us, s.latency.p999_us, s.latency.max_us, s.merged.late,
      s.merged.max_late_ns / 1e3, errors, FormatErrors(s.merged.errors),
      s.merged.connections_opened);
}

}  // namespace ferry::loadgen
