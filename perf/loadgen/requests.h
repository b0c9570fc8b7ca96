// Requests of ferry-loadgen, encoded once before a run and sent as the same bytes every time
// (as wrk does), so the client spends its time on the transport, not on encoding.
#ifndef FERRY_PERF_LOADGEN_REQUESTS_H_
#define FERRY_PERF_LOADGEN_REQUESTS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "perf/loadgen/options.h"

namespace ferry::loadgen {

// The ten messages of the dirty-word filter job (the same ones perf/wrk/wordfilter.lua sends);
// request i carries messages 0..docs-1, cycling.
const std::vector<std::string>& WordfilterMessages();

// The BYTES elements one request carries for these options (none for the mlp workload).
std::vector<std::string> RequestElements(const Options& o);

// The FP32 values of the mlp workload's input, row-major [rows, features]: a fixed pattern in
// [-1, 1), so every run (and every server compared) gets the same numbers.
std::vector<float> MlpValues(const Options& o);

// The whole HTTP/1.1 request (request line, headers, body) for json, binary or clipper, the
// body encoded by ferry::Client's EncodeHttpInfer / EncodePredict. Keep-alive; `Host:` is
// host:port. Binary asks for every output binary.
absl::StatusOr<std::string> EncodeHttpRequest(const Options& o);

// The serialized inference.ModelInferRequest for gRPC (ferry::EncodeGrpcInfer: BYTES in
// raw_input_contents).
absl::StatusOr<std::string> EncodeGrpcRequest(const Options& o);

// A cheap check of one answer's body (HTTP body, or the serialized gRPC response): the echo
// must return its payload, the word filter must have masked a word, the mlp must answer an FP32
// tensor. Not a full decode.
absl::Status CheckAnswer(const Options& o, absl::string_view body);

}  // namespace ferry::loadgen

#endif  // FERRY_PERF_LOADGEN_REQUESTS_H_
