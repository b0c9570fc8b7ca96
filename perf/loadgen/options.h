// Command line of ferry-loadgen, parsed without global state so that tests can feed it.
#ifndef FERRY_PERF_LOADGEN_OPTIONS_H_
#define FERRY_PERF_LOADGEN_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "perf/loadgen/schedule.h"

namespace ferry::loadgen {

// KServe v2 JSON, KServe v2 with the binary tensor extension, Clipper's /{name}/predict, and
// KServe v2 over gRPC.
enum class Protocol { kJson, kBinary, kClipper, kGrpc };
// echo: one BYTES element of payload_bytes; wordfilter: `docs` short text messages; mlp: an FP32
// tensor [rows, features] (the examples' `mlp` function takes [-1, 64]).
enum class WorkloadKind { kEcho, kWordfilter, kMlp };
// open: requests at scheduled times (rates); closed: `connections` clients, each sending its
// next request when the previous one is answered.
enum class Mode { kOpen, kClosed };

struct Options {
  std::string host = "127.0.0.1";
  int port = 8000;
  Protocol protocol = Protocol::kJson;
  WorkloadKind workload = WorkloadKind::kEcho;
  std::string model;  // default: the workload's name
  std::string input;  // default: INPUT0 (echo), text (wordfilter) or input (mlp)
  int payload_bytes = 1024;
  int docs = 10;
  int rows = 1;       // mlp: rows per request
  int features = 64;  // mlp: values per row
  // echo, wordfilter: send the BYTES tensor as [1, n] instead of [n] (a batch dimension of 1),
  // as servers that model the batch dimension require (Triton with max_batch_size > 0).
  bool batch_dim = false;
  Mode mode = Mode::kOpen;
  Arrivals arrivals = Arrivals::kPoisson;
  std::vector<double> rates;  // requests/s, one run each (open loop only)
  // Open loop: connections opened before the run, and the most it may grow to when every
  // connection is busy (HTTP/1.1 carries one request at a time). gRPC: channels (one TCP
  // connection each), calls multiplexed over them. Closed loop: the number of clients.
  int connections = 32;
  int max_connections = 1024;
  int threads = 1;
  double warmup_s = 2;
  double duration_s = 10;
  double drain_s = 5;     // after the window, how long answers to measured requests may take
  double late_us = 1000;  // a request sent later than this after its scheduled time is "late"
  uint64_t seed = 1;
  std::string label;     // first CSV column
  std::string csv_path;  // appended, one row per run; header written when the file is new
  std::string raw_path;  // optional: every measured latency, one row each
  bool check = true;     // send one request and check its answer before measuring
};

// Parses argv-style flags (`--name value` or `--name=value`, without the program name).
// Returns InvalidArgument naming the flag on any unknown flag, missing or malformed value,
// or inconsistent combination (open loop without --rates, closed loop with them, ...).
// `--help` returns a FailedPrecondition whose message is the usage text.
absl::StatusOr<Options> ParseOptions(const std::vector<std::string>& args);

std::string Usage();
const char* ProtocolName(Protocol p);
const char* WorkloadName(WorkloadKind w);

}  // namespace ferry::loadgen

#endif  // FERRY_PERF_LOADGEN_OPTIONS_H_
