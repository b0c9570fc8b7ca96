// The `echo` runtime (platform "ferry_echo"): returns its one input as its one output. Used for
// no-op latency measurements and, with `delayMicros`, as a slow model in tests.
#ifndef FERRY_KERNELS_ECHO_RUNTIME_H_
#define FERRY_KERNELS_ECHO_RUNTIME_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ferry/manifest.h"
#include "ferry/runtime.h"

namespace ferry::kernels {

class EchoRuntime : public Runtime {
 public:
  struct Options {
    DataType dtype = DataType::kBytes;    // spec.config.datatype
    std::vector<int64_t> row_shape;       // spec.config.shape: dims after the batch dim
    std::string input_name = "INPUT0";    // spec.config.inputName
    std::string output_name = "OUTPUT0";  // spec.config.outputName
    int64_t delay_us = 0;  // spec.config.delayMicros: simulated compute time per batch
  };

  // Reads Options from spec.config (strictly: unknown keys and bad values are InvalidArgument
  // naming the manifest file and field).
  static absl::StatusOr<Options> ParseOptions(const FunctionSpec& spec);
  static absl::StatusOr<std::unique_ptr<EchoRuntime>> Create(const Options& options);

  const ModelSignature& signature() const override { return signature_; }
  // Copies each request's input to its response. Sleeps delay_us once per batch (the simulated
  // workload). Thread-safe: keeps no mutable state.
  absl::Status Execute(absl::Span<RuntimeCall> batch) override;

 private:
  explicit EchoRuntime(const Options& options);

  Options options_;
  ModelSignature signature_;
};

// The registry's factory for spec.runtime == "echo". Echo has no GPU path; with
// context.use_gpu it still runs on the CPU.
absl::StatusOr<std::unique_ptr<Runtime>> CreateEchoRuntime(const FunctionSpec& spec,
                                                           const RuntimeContext& context);

}  // namespace ferry::kernels

#endif  // FERRY_KERNELS_ECHO_RUNTIME_H_
