#include "kernels/runtime.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/config_util.h"
#include "kernels/echo_runtime.h"
#include "kernels/mlp_runtime.h"
#include "kernels/wordfilter_runtime.h"

namespace ferry::kernels {
namespace {

std::string Name(DataType dtype) { return std::string(DataTypeName(dtype)); }

std::vector<std::string> SpecNames(const std::vector<TensorSpec>& specs) {
  std::vector<std::string> names;
  names.reserve(specs.size());
  for (const TensorSpec& s : specs) names.push_back(s.name);
  return names;
}

// Runtimes the manifest format knows but this build does not carry yet.
constexpr std::string_view kPlannedRuntimes[] = {"sentence-embedding", "plugin"};

}  // namespace

absl::Status ValidateRequest(const ModelSignature& signature, const InferenceRequest& request) {
  // Inputs are few (usually one or two), so linear scans beat building maps per request.
  std::vector<const Tensor*> matched(signature.inputs.size(), nullptr);
  for (const Tensor& t : request.inputs) {
    size_t index = signature.inputs.size();
    for (size_t i = 0; i < signature.inputs.size(); ++i) {
      if (signature.inputs[i].name == t.name) {
        index = i;
        break;
      }
    }
    if (index == signature.inputs.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown input '", t.name,
          "'; the model's inputs are: ", absl::StrJoin(SpecNames(signature.inputs), ", ")));
    }
    if (matched[index] != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", t.name, "' appears more than once"));
    }
    matched[index] = &t;
  }

  int64_t batch = -1;
  std::string batch_from;
  for (size_t i = 0; i < signature.inputs.size(); ++i) {
    const TensorSpec& spec = signature.inputs[i];
    const Tensor* t = matched[i];
    if (t == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("missing input '", spec.name, "' (",
                                                     Name(spec.dtype), " ",
                                                     ShapeToString(spec.shape), ")"));
    }
    if (t->dtype != spec.dtype) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", spec.name, "': datatype ", Name(t->dtype), ", expected ", Name(spec.dtype)));
    }
    if (t->shape.size() != spec.shape.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", spec.name, "': shape ", ShapeToString(t->shape), " has rank ", t->shape.size(),
          ", expected rank ", spec.shape.size(), " ", ShapeToString(spec.shape)));
    }
    for (size_t d = 0; d < t->shape.size(); ++d) {
      if (t->shape[d] < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", spec.name, "': shape ", ShapeToString(t->shape), " has a negative dim"));
      }
      if (spec.shape[d] >= 0 && t->shape[d] != spec.shape[d]) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", spec.name, "': shape ", ShapeToString(t->shape), ", dim ", d, " must be ",
            spec.shape[d], " (expected ", ShapeToString(spec.shape), ")"));
      }
    }
    if (absl::Status s = t->CheckConsistent(); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("input ", s.message()));
    }
    if (signature.batched) {
      if (t->shape.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("input '", spec.name, "': needs a leading batch dim, got a scalar"));
      }
      // A request of zero rows would cost nothing and produce nothing; refuse it up front so
      // the batcher never sees a zero-cost request.
      if (t->shape[0] == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("input '", spec.name, "': batch dim is 0; send at least one row"));
      }
      if (batch < 0) {
        batch = t->shape[0];
        batch_from = spec.name;
      } else if (t->shape[0] != batch) {
        return absl::InvalidArgumentError(absl::StrCat("inputs disagree on the batch dim: '",
                                                       batch_from, "' has ", batch, " rows, '",
                                                       spec.name, "' has ", t->shape[0]));
      }
    }
  }

  for (const RequestedOutput& out : request.outputs) {
    bool known = false;
    for (const TensorSpec& s : signature.outputs) known = known || s.name == out.name;
    if (!known) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown output '", out.name, "' requested; the model's outputs are: ",
                       absl::StrJoin(SpecNames(signature.outputs), ", ")));
    }
  }
  return absl::OkStatus();
}

int64_t RequestCost(const ModelSignature& signature, const InferenceRequest& request) {
  if (!signature.batched) return 1;
  for (const Tensor& t : request.inputs) {
    if (!t.shape.empty() && t.shape[0] > 0) return t.shape[0];
  }
  return 1;
}

absl::StatusOr<std::unique_ptr<Runtime>> CreateRuntime(const FunctionSpec& spec,
                                                       const RuntimeContext& context) {
  if (spec.runtime == "echo") return CreateEchoRuntime(spec, context);
  if (spec.runtime == "wordfilter") return CreateWordFilterRuntime(spec, context);
  if (spec.runtime == "mlp") return CreateMlpRuntime(spec, context);
  const std::string available = absl::StrJoin(RuntimeNames(), ", ");
  for (std::string_view planned : kPlannedRuntimes) {
    if (spec.runtime == planned) {
      return absl::UnimplementedError(absl::StrCat(
          config::Where(spec), "spec.runtime: runtime '", spec.runtime,
          "' is not available in this build of ferry; available runtimes: ", available));
    }
  }
  return absl::UnimplementedError(absl::StrCat(config::Where(spec),
                                               "spec.runtime: unknown runtime '", spec.runtime,
                                               "'; available runtimes: ", available));
}

std::vector<std::string> RuntimeNames() { return {"echo", "mlp", "wordfilter"}; }

}  // namespace ferry::kernels
