#include "kernels/echo_runtime.h"

#include <chrono>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ferry/config_reader.h"
#include "ferry/runtime_registry.h"

namespace ferry::kernels {

absl::StatusOr<EchoRuntime::Options> EchoRuntime::ParseOptions(const FunctionSpec& spec) {
  if (absl::Status s =
          config::CheckKeys(spec, {"datatype", "shape", "inputName", "outputName", "delayMicros"});
      !s.ok()) {
    return s;
  }
  Options options;
  absl::StatusOr<std::string> dtype = config::GetString(spec, "datatype", "BYTES");
  if (!dtype.ok()) return dtype.status();
  options.dtype = DataTypeFromName(*dtype);
  if (options.dtype == DataType::kInvalid) {
    return config::Error(spec, config::Field("datatype"),
                         absl::StrCat("unknown datatype '", *dtype,
                                      "'; expected a KServe v2 datatype such as BYTES, FP32, "
                                      "INT32, UINT8, BOOL"));
  }
  absl::StatusOr<std::vector<int64_t>> shape = config::GetDims(spec, "shape", {});
  if (!shape.ok()) return shape.status();
  options.row_shape = *std::move(shape);
  absl::StatusOr<std::string> input = config::GetName(spec, "inputName", "INPUT0");
  if (!input.ok()) return input.status();
  absl::StatusOr<std::string> output = config::GetName(spec, "outputName", "OUTPUT0");
  if (!output.ok()) return output.status();
  options.input_name = *std::move(input);
  options.output_name = *std::move(output);
  absl::StatusOr<int64_t> delay = config::GetInt(spec, "delayMicros", 0, 0, 10'000'000);
  if (!delay.ok()) return delay.status();
  options.delay_us = *delay;
  return options;
}

absl::StatusOr<std::unique_ptr<EchoRuntime>> EchoRuntime::Create(const Options& options) {
  if (options.dtype == DataType::kInvalid) {
    return absl::InvalidArgumentError("echo: invalid datatype");
  }
  if (options.input_name.empty() || options.output_name.empty()) {
    return absl::InvalidArgumentError("echo: input and output names must not be empty");
  }
  for (int64_t d : options.row_shape) {
    if (d < 1 && d != -1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "echo: shape ", ShapeToString(options.row_shape), ": dims must be >= 1 or -1"));
    }
  }
  if (options.delay_us < 0) return absl::InvalidArgumentError("echo: delay_us must be >= 0");
  return std::unique_ptr<EchoRuntime>(new EchoRuntime(options));
}

EchoRuntime::EchoRuntime(const Options& options) : options_(options) {
  std::vector<int64_t> shape = {-1};
  shape.insert(shape.end(), options.row_shape.begin(), options.row_shape.end());
  signature_.platform = "ferry_echo";
  signature_.batched = true;
  signature_.inputs.push_back(TensorSpec{options.input_name, options.dtype, shape});
  signature_.outputs.push_back(TensorSpec{options.output_name, options.dtype, shape});
}

absl::Status EchoRuntime::Execute(absl::Span<RuntimeCall> batch) {
  if (options_.delay_us > 0) {
    std::this_thread::sleep_for(std::chrono::microseconds(options_.delay_us));
  }
  for (RuntimeCall& call : batch) {
    const Tensor* input = nullptr;
    for (const Tensor& t : call.request->inputs) {
      if (t.name == options_.input_name) input = &t;
    }
    if (input == nullptr) {
      call.status =
          absl::InvalidArgumentError(absl::StrCat("missing input '", options_.input_name, "'"));
      continue;
    }
    Tensor out;
    out.name = options_.output_name;
    out.dtype = input->dtype;
    out.shape = input->shape;
    out.data = input->data;
    out.bytes = input->bytes;
    call.response->outputs.push_back(std::move(out));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Runtime>> CreateEchoRuntime(const FunctionSpec& spec,
                                                           const RuntimeContext& /*context*/) {
  absl::StatusOr<EchoRuntime::Options> options = EchoRuntime::ParseOptions(spec);
  if (!options.ok()) return options.status();
  absl::StatusOr<std::unique_ptr<EchoRuntime>> runtime = EchoRuntime::Create(*options);
  if (!runtime.ok()) return runtime.status();
  return std::unique_ptr<Runtime>(*std::move(runtime));
}

FERRY_REGISTER_RUNTIME("echo", "returns its input unchanged (optionally after a delay)",
                       &CreateEchoRuntime);

}  // namespace ferry::kernels
