// ferry-function-check: loads a function library exactly as ferry-agent does (same directory
// rules, ABI and declaration checks) and runs a few batches of generated requests through it, in
// a process of its own, so a function can be tried before it shares an agent with others.
//
//   ferry-function-check --plugin-dir DIR --library libfoo.so [--config JSON] [--gpu ORDINAL]
//                        [--batches N]
//
// Inputs are generated from the declaration: zeros for numeric tensors, "ferry" for BYTES, 1 for
// each variable dim. Exit status 0 when the load and every request succeed.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ferry/runtime.h"
#include "ferry/signature.h"
#include "kernels/plugin_runtime.h"

namespace {

constexpr char kUsage[] =
    "usage: ferry-function-check --plugin-dir DIR --library FILE [--config JSON] "
    "[--gpu ORDINAL] [--batches N]\n";

ferry::InferenceRequest Generate(const ferry::ModelSignature& signature, int64_t rows) {
  ferry::InferenceRequest request;
  for (const ferry::TensorSpec& spec : signature.inputs) {
    ferry::Tensor t;
    t.name = spec.name;
    t.dtype = spec.dtype;
    t.shape = spec.shape;
    t.shape[0] = rows;
    for (size_t i = 1; i < t.shape.size(); ++i) {
      if (t.shape[i] < 0) t.shape[i] = 1;
    }
    if (spec.dtype == ferry::DataType::kBytes) {
      for (int64_t i = 0; i < t.element_count(); ++i) t.bytes.push_back("ferry");
    } else {
      t.data.assign(static_cast<size_t>(ferry::TensorByteSize(spec.dtype, t.shape)), '\0');
    }
    request.inputs.push_back(std::move(t));
  }
  return request;
}

}  // namespace

int main(int argc, char** argv) {
  ferry::kernels::PluginRuntimeOptions options;
  options.where = "ferry-function-check: ";
  int batches = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s: needs a value\n%s", arg.c_str(), kUsage);
      return 2;
    }
    const std::string value = argv[++i];
    if (arg == "--plugin-dir") {
      options.plugin_dir = value;
    } else if (arg == "--library") {
      options.library = value;
    } else if (arg == "--config") {
      options.config_json = value;
    } else if (arg == "--gpu") {
      options.use_gpu = true;
      options.gpu_index = std::atoi(value.c_str());
    } else if (arg == "--batches") {
      batches = std::atoi(value.c_str());
    } else {
      std::fprintf(stderr, "unknown flag %s\n%s", arg.c_str(), kUsage);
      return 2;
    }
  }
  if (options.plugin_dir.empty() || options.library.empty() || batches < 1) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  auto runtime = ferry::kernels::LoadPluginRuntime(options);
  if (!runtime.ok()) {
    std::fprintf(stderr, "load failed: %s\n", std::string(runtime.status().message()).c_str());
    return 1;
  }
  const ferry::ModelSignature& signature = (*runtime)->signature();
  std::printf("loaded %s\n", options.library.c_str());
  for (const auto* list : {&signature.inputs, &signature.outputs}) {
    for (const ferry::TensorSpec& spec : *list) {
      std::printf("  %s %s %s %s\n", list == &signature.inputs ? "input " : "output",
                  spec.name.c_str(), std::string(ferry::DataTypeName(spec.dtype)).c_str(),
                  ferry::ShapeToString(spec.shape).c_str());
    }
  }
  int failures = 0;
  for (int b = 0; b < batches; ++b) {
    // Requests of 1, 2, ... rows: every batch stacks several, as the agent's batcher does.
    std::vector<ferry::InferenceRequest> requests;
    for (int64_t rows = 1; rows <= b + 1; ++rows) requests.push_back(Generate(signature, rows));
    std::vector<ferry::InferenceResponse> responses(requests.size());
    std::vector<ferry::RuntimeCall> calls;
    for (size_t r = 0; r < requests.size(); ++r) {
      if (absl::Status s = ferry::ValidateRequest(signature, requests[r]); !s.ok()) {
        std::fprintf(stderr, "generated request invalid: %s\n", std::string(s.message()).c_str());
        return 1;
      }
      calls.push_back(ferry::RuntimeCall{&requests[r], &responses[r], absl::OkStatus()});
    }
    const absl::Status status = (*runtime)->Execute(absl::MakeSpan(calls));
    if (!status.ok()) {
      std::printf("batch %d (%zu requests): failed: %s\n", b, calls.size(),
                  std::string(status.message()).c_str());
      ++failures;
      continue;
    }
    for (size_t r = 0; r < calls.size(); ++r) {
      std::string line = absl::StrCat("batch ", b, " request ", r, ":");
      if (!calls[r].status.ok()) {
        absl::StrAppend(&line, " failed: ", calls[r].status.message());
        ++failures;
      }
      for (const ferry::Tensor& t : responses[r].outputs) {
        absl::StrAppend(&line, " ", t.name, ferry::ShapeToString(t.shape));
      }
      std::printf("%s\n", line.c_str());
    }
  }
  std::printf("%s\n", failures == 0 ? "ok" : absl::StrCat(failures, " failure(s)").c_str());
  return failures == 0 ? 0 : 1;
}
