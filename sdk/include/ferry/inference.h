// Protocol-independent inference request and response. The HTTP (KServe v2 JSON + binary
// extension, Clipper predict) and gRPC front ends decode into these, and the node agent's
// serving core, the batcher glue and every runtime work only with these.
#ifndef FERRY_INFERENCE_H_
#define FERRY_INFERENCE_H_

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "ferry/tensor.h"

namespace ferry {

// A KServe v2 parameter value: bool, int64, string or double (uint64 travels as int64 when it
// fits; front ends reject larger values).
using ParameterValue = std::variant<bool, int64_t, std::string, double>;
using Parameters = std::map<std::string, ParameterValue>;

struct RequestedOutput {
  std::string name;
  // Binary tensor extension: send this output in the binary part of an HTTP response.
  bool binary_data = false;
  Parameters parameters;
};

struct InferenceRequest {
  std::string model_name;
  std::string model_version;  // empty = the default (only) version
  std::string id;             // echoed in the response
  Parameters parameters;
  std::vector<Tensor> inputs;
  // Empty = every output of the model.
  std::vector<RequestedOutput> outputs;

  // Scheduling, taken from the reserved parameters "priority" and "timeout" by the front end.
  int64_t priority = 0;    // 1 = highest, 0 = default
  int64_t timeout_us = 0;  // 0 = the model's configured timeout; can only shorten it
  // HTTP: request-wide default for binary outputs ("binary_data_output").
  bool binary_data_output = false;
  // Monotonic arrival time (RealClock), set by the front end when the request was read.
  int64_t arrival_us = 0;
};

struct InferenceResponse {
  std::string model_name;
  std::string model_version;
  std::string id;
  Parameters parameters;
  std::vector<Tensor> outputs;
  // True when the SLO's default output answered instead of the model (overload).
  bool is_default = false;
};

}  // namespace ferry

#endif  // FERRY_INFERENCE_H_
