#include "node-agent/grpc_server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <climits>
#include <cstring>
#include <limits>
#include <mutex>
#include <type_traits>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/strings/str_cat.h"
#include "ferry/clock.h"
#include "kserve_inference.grpc.pb.h"

namespace ferry::agent {

// Tensor::data is little-endian by contract; the typed-contents decoder writes host order.
static_assert(std::endian::native == std::endian::little, "ferry assumes a little-endian host");

namespace {

using inference::InferParameter;
using inference::InferTensorContents;
using ProtoParameters = google::protobuf::Map<std::string, InferParameter>;

constexpr char kDefaultParameter[] = "ferry_default";
constexpr char kPriorityParameter[] = "priority";
constexpr char kTimeoutParameter[] = "timeout";
// tritonclient sends this for shared-memory tensors, which ferry does not support: failing
// loudly beats silently reading an empty tensor.
constexpr char kSharedMemoryParameter[] = "shared_memory_region";

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl::StatusCode and grpc::StatusCode share their numbering (both are the canonical codes).
  const int code = static_cast<int>(status.code());
  const grpc::StatusCode grpc_code = code > 0 && code <= grpc::StatusCode::UNAUTHENTICATED
                                         ? static_cast<grpc::StatusCode>(code)
                                         : grpc::StatusCode::UNKNOWN;
  return grpc::Status(grpc_code, std::string(status.message()));
}

absl::StatusOr<ParameterValue> FromProtoParameter(const InferParameter& parameter,
                                                  const std::string& what) {
  switch (parameter.parameter_choice_case()) {
    case InferParameter::kBoolParam:
      return ParameterValue(parameter.bool_param());
    case InferParameter::kInt64Param:
      return ParameterValue(static_cast<int64_t>(parameter.int64_param()));
    case InferParameter::kStringParam:
      return ParameterValue(parameter.string_param());
    case InferParameter::kDoubleParam:
      return ParameterValue(parameter.double_param());
    case InferParameter::kUint64Param:
      if (parameter.uint64_param() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, ": uint64 value ", parameter.uint64_param(), " exceeds the int64 range"));
      }
      return ParameterValue(static_cast<int64_t>(parameter.uint64_param()));
    case InferParameter::PARAMETER_CHOICE_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat(what, ": no value set"));
}

absl::StatusOr<Parameters> FromProtoParameters(const ProtoParameters& proto,
                                               const std::string& where) {
  Parameters out;
  for (const auto& [key, value] : proto) {
    auto decoded = FromProtoParameter(value, absl::StrCat(where, "parameter '", key, "'"));
    if (!decoded.ok()) return decoded.status();
    out.emplace(key, *std::move(decoded));
  }
  std::string_view what = where.empty() ? std::string_view("request") : where;
  if (!what.empty() && what.back() == ' ') what.remove_suffix(1);
  if (absl::Status s = CheckParameters(out, what); !s.ok()) return s;
  return out;
}

void ToProtoParameter(const ParameterValue& value, InferParameter* out) {
  if (const auto* b = std::get_if<bool>(&value)) {
    out->set_bool_param(*b);
  } else if (const auto* i = std::get_if<int64_t>(&value)) {
    out->set_int64_param(*i);
  } else if (const auto* s = std::get_if<std::string>(&value)) {
    out->set_string_param(*s);
  } else if (const auto* d = std::get_if<double>(&value)) {
    out->set_double_param(*d);
  }
}

// Takes a reserved scheduling parameter (non-negative int64) out of `parameters`.
absl::Status TakeScheduling(Parameters& parameters, const char* name, int64_t* out) {
  auto it = parameters.find(name);
  if (it == parameters.end()) return absl::OkStatus();
  const auto* value = std::get_if<int64_t>(&it->second);
  if (value == nullptr || *value < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter '", name, "' must be a non-negative integer"));
  }
  *out = *value;
  parameters.erase(it);
  return absl::OkStatus();
}

// Copies a repeated proto field into little-endian elements of type Dst, rejecting values that
// do not fit (int_contents carries INT8/INT16 as int32, uint_contents UINT8/UINT16 as uint32).
template <typename Dst, typename Field>
absl::Status CopyElements(const Field& field, const Tensor& tensor, const char* field_name,
                          std::string* data) {
  data->resize(static_cast<size_t>(field.size()) * sizeof(Dst));
  char* out = data->data();
  for (int i = 0; i < field.size(); ++i) {
    const auto value = field.Get(i);
    using Src = std::remove_cv_t<decltype(value)>;
    if constexpr (std::is_integral_v<Src> && !std::is_same_v<Src, bool> &&
                  !std::is_same_v<Src, Dst>) {
      if (!std::in_range<Dst>(value)) {
        return absl::InvalidArgumentError(
            absl::StrCat("input '", tensor.name, "': ", field_name, "[", i, "] = ", value,
                         " is out of range for ", std::string(DataTypeName(tensor.dtype))));
      }
    }
    const Dst converted = static_cast<Dst>(value);
    std::memcpy(out + static_cast<size_t>(i) * sizeof(Dst), &converted, sizeof(Dst));
  }
  return absl::OkStatus();
}

// The typed-contents field that carries `dtype`; nullptr for FP16/BF16 (raw only).
const char* TypedFieldFor(DataType dtype) {
  switch (dtype) {
    case DataType::kBool:
      return "bool_contents";
    case DataType::kInt8:
    case DataType::kInt16:
    case DataType::kInt32:
      return "int_contents";
    case DataType::kInt64:
      return "int64_contents";
    case DataType::kUint8:
    case DataType::kUint16:
    case DataType::kUint32:
      return "uint_contents";
    case DataType::kUint64:
      return "uint64_contents";
    case DataType::kFp32:
      return "fp32_contents";
    case DataType::kFp64:
      return "fp64_contents";
    case DataType::kBytes:
      return "bytes_contents";
    default:
      return nullptr;
  }
}

struct FieldCount {
  const char* name;
  int count;
};

std::array<FieldCount, 8> FieldCounts(const InferTensorContents& c) {
  return {{{"bool_contents", c.bool_contents_size()},
           {"int_contents", c.int_contents_size()},
           {"int64_contents", c.int64_contents_size()},
           {"uint_contents", c.uint_contents_size()},
           {"uint64_contents", c.uint64_contents_size()},
           {"fp32_contents", c.fp32_contents_size()},
           {"fp64_contents", c.fp64_contents_size()},
           {"bytes_contents", c.bytes_contents_size()}}};
}

int TotalCount(const InferTensorContents& c) {
  int total = 0;
  for (const auto& f : FieldCounts(c)) total += f.count;
  return total;
}

absl::Status DecodeTyped(const InferTensorContents& contents, int64_t count, Tensor& tensor) {
  const char* want = TypedFieldFor(tensor.dtype);
  if (want == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("input '", tensor.name,
                                                   "': ", std::string(DataTypeName(tensor.dtype)),
                                                   " data can only be sent in raw_input_contents"));
  }
  int got = 0;
  for (const auto& field : FieldCounts(contents)) {
    if (std::strcmp(field.name, want) == 0) {
      got = field.count;
    } else if (field.count > 0) {
      return absl::InvalidArgumentError(absl::StrCat("input '", tensor.name, "': datatype ",
                                                     std::string(DataTypeName(tensor.dtype)),
                                                     " takes ", want, ", got ", field.name));
    }
  }
  if (got != count) {
    return absl::InvalidArgumentError(absl::StrCat("input '", tensor.name, "': shape ",
                                                   ShapeToString(tensor.shape), " needs ", count,
                                                   " elements, got ", got, " in ", want));
  }
  std::string* data = &tensor.data;
  switch (tensor.dtype) {
    case DataType::kBool:
      return CopyElements<uint8_t>(contents.bool_contents(), tensor, want, data);
    case DataType::kInt8:
      return CopyElements<int8_t>(contents.int_contents(), tensor, want, data);
    case DataType::kInt16:
      return CopyElements<int16_t>(contents.int_contents(), tensor, want, data);
    case DataType::kInt32:
      return CopyElements<int32_t>(contents.int_contents(), tensor, want, data);
    case DataType::kInt64:
      return CopyElements<int64_t>(contents.int64_contents(), tensor, want, data);
    case DataType::kUint8:
      return CopyElements<uint8_t>(contents.uint_contents(), tensor, want, data);
    case DataType::kUint16:
      return CopyElements<uint16_t>(contents.uint_contents(), tensor, want, data);
    case DataType::kUint32:
      return CopyElements<uint32_t>(contents.uint_contents(), tensor, want, data);
    case DataType::kUint64:
      return CopyElements<uint64_t>(contents.uint64_contents(), tensor, want, data);
    case DataType::kFp32:
      return CopyElements<float>(contents.fp32_contents(), tensor, want, data);
    case DataType::kFp64:
      return CopyElements<double>(contents.fp64_contents(), tensor, want, data);
    case DataType::kBytes:
      for (const std::string& element : contents.bytes_contents()) tensor.bytes.push_back(element);
      return absl::OkStatus();
    default:
      return absl::InternalError("unreachable datatype");
  }
}

absl::Status DecodeRaw(std::string* raw, int64_t count, Tensor& tensor) {
  if (tensor.dtype == DataType::kBytes) {
    auto elements = DecodeBytesElements(*raw, count, absl::StrCat("input '", tensor.name, "'"));
    if (!elements.ok()) return elements.status();
    tensor.bytes = *std::move(elements);
    return absl::OkStatus();
  }
  const int64_t want = count * DataTypeSizeBytes(tensor.dtype);
  if (static_cast<int64_t>(raw->size()) != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", tensor.name, "': shape ", ShapeToString(tensor.shape), " of ",
                     std::string(DataTypeName(tensor.dtype)), " needs ", want,
                     " bytes in raw_input_contents, got ", raw->size()));
  }
  tensor.data = std::move(*raw);
  return absl::OkStatus();
}

absl::Status RejectSharedMemory(const ProtoParameters& parameters, const std::string& what) {
  if (parameters.contains(kSharedMemoryParameter)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": shared-memory tensors are not supported; send the data inline"));
  }
  return absl::OkStatus();
}

std::string ListenAddress(const std::string& host, int port) {
  // IPv6 literals need brackets before the port.
  if (host.find(':') != std::string::npos && host.front() != '[') {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

// Per-call state shared by the reactor and the core's completion callback. Exactly one of
// them calls Finish: the completion normally, or OnCancel when the client went away or the
// server's shutdown deadline passed. The winner is decided by `finished`; the loser touches
// nothing but this struct, which the shared_ptr keeps alive after the reactor is gone.
struct InferCall {
  std::atomic<bool> finished{false};
  grpc::ServerUnaryReactor* reactor = nullptr;        // valid until Finish
  inference::ModelInferResponse* response = nullptr;  // owned by gRPC; valid until Finish
  std::string model_name;
  std::string model_version;
  std::string id;
};

// Made only once the request is decoded and handed to the core: a handler that returns early
// (or throws) has no reactor to leak. Holds the request's bytes on the agent's budget until the
// call is done.
class InferReactor final : public grpc::ServerUnaryReactor {
 public:
  InferReactor(std::shared_ptr<InferCall> call, ByteBudget::Lease lease)
      : call_(std::move(call)), lease_(std::move(lease)) {}

  void OnCancel() override {
    if (!call_->finished.exchange(true)) Finish(grpc::Status::CANCELLED);
  }
  void OnDone() override { delete this; }

 private:
  std::shared_ptr<InferCall> call_;
  ByteBudget::Lease lease_;
};

grpc::Status InternalError(const char* what) {
  return grpc::Status(grpc::StatusCode::INTERNAL, absl::StrCat("internal error: ", what));
}

}  // namespace

absl::StatusOr<InferenceRequest> FromProto(inference::ModelInferRequest* proto,
                                           const ModelMetadata* metadata) {
  InferenceRequest request;
  request.model_name = proto->model_name();
  request.model_version = proto->model_version();
  if (absl::Status s = CheckRequestId(proto->id()); !s.ok()) return s;
  request.id = proto->id();
  auto parameters = FromProtoParameters(proto->parameters(), "");
  if (!parameters.ok()) return parameters.status();
  request.parameters = *std::move(parameters);
  if (auto s = TakeScheduling(request.parameters, kPriorityParameter, &request.priority); !s.ok()) {
    return s;
  }
  if (auto s = TakeScheduling(request.parameters, kTimeoutParameter, &request.timeout_us);
      !s.ok()) {
    return s;
  }

  const int raw_count = proto->raw_input_contents_size();
  if (raw_count > 0 && raw_count != proto->inputs_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw_input_contents has ", raw_count, " entries but the request has ",
                     proto->inputs_size(), " inputs (one entry per input, in order)"));
  }
  request.inputs.reserve(proto->inputs_size());
  for (int i = 0; i < proto->inputs_size(); ++i) {
    const auto& input = proto->inputs(i);
    Tensor tensor;
    tensor.name = input.name();
    const std::string what = absl::StrCat("input '", tensor.name, "'");
    tensor.dtype = DataTypeFromName(input.datatype());
    if (tensor.dtype == DataType::kInvalid) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": unknown datatype '", input.datatype(), "'"));
    }
    tensor.shape.assign(input.shape().begin(), input.shape().end());
    const int64_t count = ElementCount(tensor.shape);
    if (count < 0 ||
        (tensor.dtype != DataType::kBytes && TensorByteSize(tensor.dtype, tensor.shape) < 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": invalid shape ", ShapeToString(tensor.shape), " (negative or too large)"));
    }
    if (metadata != nullptr) {
      auto declared =
          CheckDeclaredInput(metadata->inputs, metadata->batched, metadata->max_batch_size,
                             tensor.name, tensor.dtype, tensor.shape);
      if (!declared.ok()) return declared.status();
    }
    if (auto s = RejectSharedMemory(input.parameters(), what); !s.ok()) return s;
    const bool has_typed = TotalCount(input.contents()) > 0;
    if (raw_count > 0) {
      if (has_typed) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, ": typed contents cannot be mixed with raw_input_contents in one request"));
      }
      if (auto s = DecodeRaw(proto->mutable_raw_input_contents(i), count, tensor); !s.ok()) {
        return s;
      }
    } else if (auto s = DecodeTyped(input.contents(), count, tensor); !s.ok()) {
      return s;
    }
    request.inputs.push_back(std::move(tensor));
  }

  request.outputs.reserve(proto->outputs_size());
  for (const auto& output : proto->outputs()) {
    RequestedOutput requested;
    requested.name = output.name();
    const std::string what = absl::StrCat("output '", requested.name, "'");
    if (auto s = RejectSharedMemory(output.parameters(), what); !s.ok()) return s;
    auto output_parameters = FromProtoParameters(output.parameters(), absl::StrCat(what, " "));
    if (!output_parameters.ok()) return output_parameters.status();
    requested.parameters = *std::move(output_parameters);
    request.outputs.push_back(std::move(requested));
  }
  return request;
}

void ToProto(InferenceResponse response, inference::ModelInferResponse* proto) {
  proto->set_model_name(std::move(response.model_name));
  proto->set_model_version(std::move(response.model_version));
  proto->set_id(std::move(response.id));
  auto& parameters = *proto->mutable_parameters();
  for (const auto& [key, value] : response.parameters) ToProtoParameter(value, &parameters[key]);
  if (response.is_default) parameters[kDefaultParameter].set_bool_param(true);
  for (Tensor& tensor : response.outputs) {
    auto* out = proto->add_outputs();
    out->set_name(std::move(tensor.name));
    out->set_datatype(std::string(DataTypeName(tensor.dtype)));
    out->mutable_shape()->Add(tensor.shape.begin(), tensor.shape.end());
    if (tensor.dtype == DataType::kBytes) {
      proto->add_raw_output_contents(EncodeBytesElements(tensor.bytes));
    } else {
      proto->add_raw_output_contents(std::move(tensor.data));
    }
  }
}

class GrpcInferenceServiceImpl final : public inference::GRPCInferenceService::CallbackService {
 public:
  GrpcInferenceServiceImpl(ServingCore* core, ByteBudget* budget) : core_(core), budget_(budget) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest*,
                                       inference::ServerLiveResponse* response) override {
    return Guarded(context, [&]() -> grpc::ServerUnaryReactor* {
      response->set_live(core_->IsLive());
      return FinishNow(context, grpc::Status::OK);
    });
  }

  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest*,
                                        inference::ServerReadyResponse* response) override {
    return Guarded(context, [&]() -> grpc::ServerUnaryReactor* {
      response->set_ready(core_->IsReady());
      return FinishNow(context, grpc::Status::OK);
    });
  }

  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override {
    return Guarded(context, [&]() -> grpc::ServerUnaryReactor* {
      const absl::Status status = core_->ModelReady(request->name(), request->version());
      // Loading or stopping is a state, not a failure: the client asked "is it ready?". Unknown
      // models stay errors so a typo is not mistaken for "still loading".
      if (status.ok() || absl::IsUnavailable(status)) {
        response->set_ready(status.ok());
        return FinishNow(context, grpc::Status::OK);
      }
      return FinishNow(context, ToGrpcStatus(status));
    });
  }

  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest*,
                                           inference::ServerMetadataResponse* response) override {
    return Guarded(context, [&]() -> grpc::ServerUnaryReactor* {
      const agent::ServerMetadata metadata = core_->GetServerMetadata();
      response->set_name(metadata.name);
      response->set_version(metadata.version);
      for (const auto& extension : metadata.extensions) response->add_extensions(extension);
      return FinishNow(context, grpc::Status::OK);
    });
  }

  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override {
    return Guarded(context, [&]() -> grpc::ServerUnaryReactor* {
      auto metadata = core_->GetModelMetadata(request->name(), request->version());
      if (!metadata.ok()) return FinishNow(context, ToGrpcStatus(metadata.status()));
      response->set_name(metadata->name);
      for (const auto& version : metadata->versions) response->add_versions(version);
      response->set_platform(metadata->platform);
      auto fill = [](const TensorSpec& spec,
                     inference::ModelMetadataResponse::TensorMetadata* out) {
        out->set_name(spec.name);
        out->set_datatype(std::string(DataTypeName(spec.dtype)));
        out->mutable_shape()->Add(spec.shape.begin(), spec.shape.end());
      };
      for (const auto& spec : metadata->inputs) fill(spec, response->add_inputs());
      for (const auto& spec : metadata->outputs) fill(spec, response->add_outputs());
      return FinishNow(context, grpc::Status::OK);
    });
  }

  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override {
    return Guarded(context, [&] { return Infer(context, request, response); });
  }

 private:
  grpc::ServerUnaryReactor* Infer(grpc::CallbackServerContext* context,
                                  const inference::ModelInferRequest* request,
                                  inference::ModelInferResponse* response) {
    const int64_t arrival_us = RealClock::Get()->NowMicros();
    // gRPC has already read the message (up to max_message_bytes): what the budget decides is
    // whether the agent holds it, and what it decodes into, any longer.
    ByteBudget::Lease lease;
    if (budget_ != nullptr) {
      bool ok = false;
      lease = budget_->TryLease(static_cast<int64_t>(request->ByteSizeLong()), &ok);
      if (!ok) {
        return FinishNow(context,
                         grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                      absl::StrCat("the agent holds too many request bytes (",
                                                   budget_->capacity_bytes(),
                                                   " in flight at most); retry later")));
      }
    }
    // The request message belongs to this call and gRPC does not read it after handing it to
    // the handler, so the tensor payloads can be moved out instead of copied.
    // The model is looked up first: an unknown model is NOT_FOUND before anything is decoded,
    // and each input's declared shape is checked against the model before it is decoded.
    auto metadata = core_->FindModelMetadata(request->model_name(), request->model_version());
    auto decoded = metadata.ok() ? FromProto(const_cast<inference::ModelInferRequest*>(request),
                                             metadata->get())
                                 : absl::StatusOr<InferenceRequest>(metadata.status());
    if (!decoded.ok()) {
      // Refused before the core saw it: the function's metrics still count it as invalid.
      if (metadata.ok()) {
        core_->RecordRejected(request->model_name(), request->model_version(), decoded.status());
      }
      return FinishNow(context, ToGrpcStatus(decoded.status()));
    }
    auto call = std::make_shared<InferCall>();
    call->response = response;
    call->model_name = decoded->model_name;
    call->model_version = decoded->model_version;
    call->id = decoded->id;
    auto owned = std::make_unique<InferenceRequest>(*std::move(decoded));
    owned->arrival_us = arrival_us;
    // A client's gRPC deadline is a timeout the scheduler can use: a request that cannot finish
    // in time is shed at once instead of running for nobody.
    const auto deadline = context->deadline();
    if (deadline != std::chrono::system_clock::time_point::max()) {
      const int64_t left_us =
          std::max<int64_t>(1, std::chrono::duration_cast<std::chrono::microseconds>(
                                   deadline - std::chrono::system_clock::now())
                                   .count());
      if (owned->timeout_us == 0 || left_us < owned->timeout_us) owned->timeout_us = left_us;
    }
    auto* reactor = new InferReactor(call, std::move(lease));
    call->reactor = reactor;
    // From here the reactor is returned whatever happens, and finished exactly once.
    try {
      core_->Infer(std::move(owned), [call](absl::StatusOr<InferenceResponse> result) {
        if (call->finished.exchange(true)) return;  // cancelled; the reactor may be gone
        // This runs on a batcher thread: nothing may escape it.
        grpc::Status status = grpc::Status::OK;
        try {
          if (!result.ok()) {
            status = ToGrpcStatus(result.status());
          } else {
            // The core normally echoes these; fill them in when it did not.
            if (result->model_name.empty()) result->model_name = call->model_name;
            if (result->model_version.empty()) result->model_version = call->model_version;
            if (result->id.empty()) result->id = call->id;
            ToProto(*std::move(result), call->response);
          }
        } catch (const std::exception& e) {
          call->response->Clear();
          status = InternalError(e.what());
        } catch (...) {
          call->response->Clear();
          status = InternalError("unknown exception");
        }
        call->reactor->Finish(std::move(status));
      });
    } catch (const std::exception& e) {
      if (!call->finished.exchange(true)) reactor->Finish(InternalError(e.what()));
    } catch (...) {
      if (!call->finished.exchange(true)) reactor->Finish(InternalError("unknown exception"));
    }
    return reactor;
  }

  static grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                             grpc::Status status) {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(std::move(status));
    return reactor;
  }

  // The error boundary of every handler. gRPC would catch an exception itself, but answers
  // UNIMPLEMENTED and leaks whatever the handler had made; here it answers INTERNAL with the
  // message. `handler` finishes the call only as its last step, so the call is finished once.
  template <typename Handler>
  static grpc::ServerUnaryReactor* Guarded(grpc::CallbackServerContext* context,
                                           Handler&& handler) {
    try {
      return handler();
    } catch (const std::exception& e) {
      return FinishNow(context, InternalError(e.what()));
    } catch (...) {
      return FinishNow(context, InternalError("unknown exception"));
    }
  }

  ServingCore* const core_;
  ByteBudget* const budget_;  // may be null
};

GrpcServer::GrpcServer() = default;

absl::Status ValidateGrpcServerOptions(const GrpcServerOptions& options) {
  if (options.host.empty()) return absl::InvalidArgumentError("GrpcServer: empty host");
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("GrpcServer: invalid port ", options.port));
  }
  if (options.max_message_bytes <= 0 || options.max_message_bytes > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("GrpcServer: max_message_bytes must be in [1, ",
                                                   INT_MAX, "], got ", options.max_message_bytes));
  }
  if (options.max_concurrent_streams < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("GrpcServer: max_concurrent_streams must be positive, got ",
                     options.max_concurrent_streams));
  }
  for (const auto& [name, value] :
       {std::pair<const char*, int64_t>{"keepalive_time_ms", options.keepalive_time_ms},
        {"keepalive_timeout_ms", options.keepalive_timeout_ms},
        {"min_client_ping_interval_ms", options.min_client_ping_interval_ms}}) {
    if (value < 1 || value > INT_MAX) {
      return absl::InvalidArgumentError(
          absl::StrCat("GrpcServer: ", name, " must be in [1, ", INT_MAX, "], got ", value));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Create(const GrpcServerOptions& options,
                                                               ServingCore* core) {
  if (core == nullptr) return absl::InvalidArgumentError("GrpcServer needs a ServingCore");
  if (options.host.empty()) return absl::InvalidArgumentError("GrpcServer: empty host");
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("GrpcServer: invalid port ", options.port));
  }
  if (absl::Status s = ValidateGrpcServerOptions(options); !s.ok()) return s;
  // Process-wide and not thread-safe in gRPC, so set it once.
  static std::once_flag health_once;
  std::call_once(health_once, [] { grpc::EnableDefaultHealthCheckService(true); });

  auto server = absl::WrapUnique(new GrpcServer());
  server->service_ = std::make_unique<GrpcInferenceServiceImpl>(core, options.byte_budget);
  const std::string address = ListenAddress(options.host, options.port);
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &bound_port);
  // gRPC enables SO_REUSEPORT by default, which would let two agents share a port silently.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  // Keepalive both ways: the server pings a connection quiet for keepalive_time_ms and drops it
  // when no answer comes within keepalive_timeout_ms (a vanished client frees its resources);
  // a client may ping, even without calls, but not more often than min_client_ping_interval_ms:
  // past two strikes the connection is closed with GOAWAY ("too_many_pings").
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             static_cast<int>(options.keepalive_time_ms));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             static_cast<int>(options.keepalive_timeout_ms));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             static_cast<int>(options.min_client_ping_interval_ms));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  builder.RegisterService(server->service_.get());
  std::unique_ptr<grpc::Server> grpc_server = builder.BuildAndStart();
  if (grpc_server == nullptr || bound_port == 0) {
    return absl::UnavailableError(absl::StrCat("gRPC server cannot listen on ", address));
  }
  server->port_ = bound_port;
  {
    absl::MutexLock lock(&server->mu_);
    server->server_ = std::move(grpc_server);
  }
  return server;
}

GrpcServer::~GrpcServer() { Shutdown(); }

void GrpcServer::Shutdown(int64_t deadline_ms) {
  absl::MutexLock lock(&mu_);
  if (server_ == nullptr) return;
  if (auto* health = server_->GetHealthCheckService(); health != nullptr) health->Shutdown();
  server_->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(std::max<int64_t>(deadline_ms, 0)));
  server_->Wait();
  server_.reset();
}

}  // namespace ferry::agent
