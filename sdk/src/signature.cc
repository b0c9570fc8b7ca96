#include "ferry/signature.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ferry {
namespace {

std::string Name(DataType dtype) { return std::string(DataTypeName(dtype)); }

std::vector<std::string> SpecNames(const std::vector<TensorSpec>& specs) {
  std::vector<std::string> names;
  names.reserve(specs.size());
  for (const TensorSpec& s : specs) names.push_back(s.name);
  return names;
}

}  // namespace

absl::StatusOr<DeclaredInput> CheckDeclaredInput(const std::vector<TensorSpec>& inputs,
                                                 bool batched, int64_t max_batch_size,
                                                 std::string_view name, DataType dtype,
                                                 const std::vector<int64_t>& shape) {
  // Inputs are few (usually one or two), so linear scans beat building maps per request.
  const TensorSpec* spec = nullptr;
  for (const TensorSpec& s : inputs) {
    if (s.name == name) {
      spec = &s;
      break;
    }
  }
  if (spec == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown input '", std::string(name),
                     "'; the model's inputs are: ", absl::StrJoin(SpecNames(inputs), ", ")));
  }
  if (dtype != spec->dtype) {
    return absl::InvalidArgumentError(absl::StrCat("input '", spec->name, "': datatype ",
                                                   Name(dtype), ", expected ", Name(spec->dtype)));
  }
  if (shape.size() != spec->shape.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", spec->name, "': shape ", ShapeToString(shape), " has rank ", shape.size(),
        ", expected rank ", spec->shape.size(), " ", ShapeToString(spec->shape)));
  }
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("input '", spec->name, "': shape ",
                                                     ShapeToString(shape), " has a negative dim"));
    }
    if (spec->shape[d] >= 0 && shape[d] != spec->shape[d]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", spec->name, "': shape ", ShapeToString(shape), ", dim ", d, " must be ",
          spec->shape[d], " (expected ", ShapeToString(spec->shape), ")"));
    }
  }
  if (batched) {
    if (shape.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", spec->name, "': needs a leading batch dim, got a scalar"));
    }
    // A request of zero rows would cost nothing and produce nothing; refuse it up front so
    // the batcher never sees a zero-cost request.
    if (shape[0] == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", spec->name, "': batch dim is 0; send at least one row"));
    }
    if (max_batch_size > 0 && shape[0] > max_batch_size) {
      return absl::InvalidArgumentError(absl::StrCat("input '", spec->name, "': batch dim ",
                                                     shape[0], " exceeds maxBatchSize ",
                                                     max_batch_size));
    }
  }
  DeclaredInput declared;
  declared.spec = spec;
  declared.element_count = ElementCount(shape);
  declared.byte_size = dtype == DataType::kBytes ? -1 : TensorByteSize(dtype, shape);
  if (declared.element_count < 0 || (dtype != DataType::kBytes && declared.byte_size < 0)) {
    return absl::InvalidArgumentError(absl::StrCat("input '", spec->name, "': shape ",
                                                   ShapeToString(shape), " of ", Name(dtype),
                                                   " is too large (its byte size overflows)"));
  }
  return declared;
}

absl::Status ValidateRequest(const ModelSignature& signature, const InferenceRequest& request) {
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
    // The batch dim against maxBatchSize is the agent's check (it knows the manifest).
    auto declared = CheckDeclaredInput(signature.inputs, signature.batched, /*max_batch_size=*/0,
                                       t->name, t->dtype, t->shape);
    if (!declared.ok()) return declared.status();
    if (absl::Status s = t->CheckConsistent(); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("input ", s.message()));
    }
    if (signature.batched) {
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

absl::Status CheckRequestId(std::string_view id) {
  if (id.size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("'id' is ", id.size(), " bytes long; at most ",
                                                   kMaxRequestIdBytes, " are allowed"));
  }
  return absl::OkStatus();
}

absl::Status CheckParameters(const Parameters& parameters, std::string_view what) {
  if (parameters.size() > kMaxParameters) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(what), ": ", parameters.size(),
                                                   " parameters; at most ", kMaxParameters,
                                                   " are allowed"));
  }
  for (const auto& [name, value] : parameters) {
    if (name.size() > kMaxParameterNameBytes) {
      return absl::InvalidArgumentError(absl::StrCat(std::string(what), ": a parameter name is ",
                                                     name.size(), " bytes long; at most ",
                                                     kMaxParameterNameBytes, " are allowed"));
    }
    if (const std::string* text = std::get_if<std::string>(&value);
        text != nullptr && text->size() > kMaxParameterStringBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(what), ": parameter '", name, "' is a string of ", text->size(),
                       " bytes; at most ", kMaxParameterStringBytes, " are allowed"));
    }
  }
  return absl::OkStatus();
}

}  // namespace ferry
