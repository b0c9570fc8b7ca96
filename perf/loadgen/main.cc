// ferry-loadgen: open- and closed-loop load over KServe v2 (HTTP JSON, HTTP binary, gRPC) and
// Clipper predict. See Usage() in options.cc and docs/perf.md.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include "absl/strings/str_format.h"
#include "perf/loadgen/driver.h"
#include "perf/loadgen/loadgen.h"
#include "perf/loadgen/options.h"
#include "perf/loadgen/requests.h"

namespace ferry::loadgen {
namespace {

RunSummary RunOnce(const Options& o, double rate, std::shared_ptr<const std::string> http_request,
                   const std::string& grpc_request) {
  // Every thread shares one start instant, a little ahead so that all are running by then.
  int64_t start_ns = ToNs(Clock::now()) + 20'000'000;
  std::vector<DriverResult> parts(o.threads);
  std::vector<std::thread> threads;
  for (int t = 0; t < o.threads; ++t) {
    DriverConfig c;
    c.mode = o.mode;
    c.arrivals = o.arrivals;
    c.rate_per_s = rate / o.threads;
    c.phase = static_cast<double>(t) / o.threads;
    // Spread connections (and the growth bound) as evenly as integers allow.
    c.connections = o.connections / o.threads + (t < o.connections % o.threads ? 1 : 0);
    c.max_connections = std::max(c.connections, o.max_connections / o.threads);
    c.start_ns = start_ns;
    c.warmup_ns = static_cast<int64_t>(o.warmup_s * 1e9);
    c.duration_ns = static_cast<int64_t>(o.duration_s * 1e9);
    c.drain_ns = static_cast<int64_t>(o.drain_s * 1e9);
    c.late_ns = static_cast<int64_t>(o.late_us * 1e3);
    c.seed = o.seed + static_cast<uint64_t>(t) * 7919;
    threads.emplace_back([&, c, t] {
      parts[t] =
          o.protocol == Protocol::kGrpc ? RunGrpc(o, c, grpc_request) : RunHttp(o, c, http_request);
    });
  }
  for (auto& th : threads) th.join();
  return Merge(std::move(parts), rate, o.duration_s);
}

int Main(int argc, char** argv) {
  absl::StatusOr<Options> parsed = ParseOptions(std::vector<std::string>(argv + 1, argv + argc));
  if (!parsed.ok()) {
    if (absl::IsFailedPrecondition(parsed.status())) {
      std::cout << parsed.status().message();
      return 0;
    }
    std::cerr << "ferry-loadgen: " << parsed.status().message() << "\n(--help for usage)\n";
    return 2;
  }
  const Options& o = *parsed;
  absl::StatusOr<std::string> encoded =
      o.protocol == Protocol::kGrpc ? EncodeGrpcRequest(o) : EncodeHttpRequest(o);
  if (!encoded.ok()) {
    std::cerr << "ferry-loadgen: cannot encode the request: " << encoded.status().message() << "\n";
    return 2;
  }
  auto http_request =
      std::make_shared<const std::string>(o.protocol == Protocol::kGrpc ? std::string() : *encoded);
  const std::string grpc_request = o.protocol == Protocol::kGrpc ? *encoded : "";

  if (o.check) {
    absl::StatusOr<std::string> answer =
        o.protocol == Protocol::kGrpc ? GrpcOnce(o, grpc_request) : HttpOnce(o, *http_request);
    absl::Status status = answer.ok() ? CheckAnswer(o, *answer) : answer.status();
    if (!status.ok()) {
      std::cerr << "ferry-loadgen: the check request failed: " << status.message() << "\n";
      return 1;
    }
  }

  std::unique_ptr<std::ofstream> csv;
  if (!o.csv_path.empty()) {
    bool fresh = !std::ifstream(o.csv_path).good();
    csv = std::make_unique<std::ofstream>(o.csv_path, std::ios::app);
    if (!*csv) {
      std::cerr << "ferry-loadgen: cannot write " << o.csv_path << "\n";
      return 1;
    }
    if (fresh) *csv << CsvHeader() << "\n";
  }
  std::unique_ptr<std::ofstream> raw;
  if (!o.raw_path.empty()) {
    raw = std::make_unique<std::ofstream>(o.raw_path);
    *raw << "label,offered_rps,latency_us\n";
  }

  std::vector<double> rates = o.mode == Mode::kOpen ? o.rates : std::vector<double>{0.0};
  std::printf("%-10s %-8s %10s %10s %9s %9s %9s %9s %7s %7s  %s\n", "protocol", "mode", "offered",
              "req/s", "p50", "p90", "p99", "p99.9", "late", "errors", "error kinds");
  for (double rate : rates) {
    RunSummary s = RunOnce(o, rate, http_request, grpc_request);
    int64_t errors = 0;
    for (const auto& [kind, n] : s.merged.errors) errors += n;
    std::printf("%-10s %-8s %10.0f %10.0f %7.0fus %7.0fus %7.0fus %7.0fus %7lld %7lld  %s\n",
                ProtocolName(o.protocol), o.mode == Mode::kOpen ? "open" : "closed", rate,
                s.throughput_rps, s.latency.p50_us, s.latency.p90_us, s.latency.p99_us,
                s.latency.p999_us, static_cast<long long>(s.merged.late),
                static_cast<long long>(errors), FormatErrors(s.merged.errors).c_str());
    std::fflush(stdout);
    if (csv) *csv << CsvRow(o, s) << "\n" << std::flush;
    if (raw) {
      for (int64_t ns : s.merged.latencies_ns) {
        *raw << o.label << "," << rate << "," << ns / 1e3 << "\n";
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace ferry::loadgen

int main(int argc, char** argv) { return ferry::loadgen::Main(argc, argv); }
