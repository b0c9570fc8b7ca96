// The client's wire codecs: KServe v2 JSON and binary-extension bodies, the gRPC messages, and
// HTTP status mapping. Pure functions; no I/O.
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "ferry/client.h"

namespace ferry {
namespace {

using nlohmann::json;

// Debian's abseil has its own string_view: StrCat and friends take that one.
absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status Invalid(absl::string_view what, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", message));
}

json ParameterToJson(const ParameterValue& value) {
  return std::visit([](const auto& v) { return json(v); }, value);
}

json ParametersToJson(const Parameters& parameters) {
  json out = json::object();
  for (const auto& [name, value] : parameters) out[name] = ParameterToJson(value);
  return out;
}

absl::StatusOr<ParameterValue> ParameterFromJson(const json& value, absl::string_view what) {
  if (value.is_boolean()) return ParameterValue(value.get<bool>());
  if (value.is_number_integer()) {
    if (value.is_number_unsigned() &&
        value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return ParameterValue(static_cast<double>(value.get<uint64_t>()));
    }
    return ParameterValue(value.get<int64_t>());
  }
  if (value.is_number()) return ParameterValue(value.get<double>());
  if (value.is_string()) return ParameterValue(value.get<std::string>());
  return Invalid(what, "parameter is not a bool, number or string");
}

absl::StatusOr<Parameters> ParametersFromJson(const json& object, absl::string_view what) {
  Parameters out;
  if (!object.is_object()) return Invalid(what, "'parameters' is not an object");
  for (const auto& [name, value] : object.items()) {
    auto v = ParameterFromJson(value, what);
    if (!v.ok()) return v.status();
    out.emplace(name, *std::move(v));
  }
  return out;
}

// IEEE half and bfloat16 from a float (round to nearest even), for JSON answers that widened
// FP16/BF16 outputs to numbers.
uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t exp = (x >> 23) & 0xffu;
  uint32_t mant = x & 0x7fffffu;
  if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u : 0));
  const int e = static_cast<int>(exp) - 127 + 15;
  if (e >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    const int shift = 14 - e;
    uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) ++half;
  return static_cast<uint16_t>(sign | half);
}

uint16_t FloatToBf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);
  x += 0x7fffu + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

template <typename T>
void AppendRaw(std::string* out, T value) {
  out->append(reinterpret_cast<const char*>(&value), sizeof(T));
}

template <typename T>
T Load(const std::string& data, int64_t i) {
  T v;
  std::memcpy(&v, data.data() + i * sizeof(T), sizeof(T));
  return v;
}

// A tensor's elements as a flat JSON array.
absl::StatusOr<json> TensorDataToJson(const Tensor& t) {
  const std::string what = absl::StrCat("input '", t.name, "'");
  json out = json::array();
  const int64_t n = t.element_count();
  switch (t.dtype) {
    case DataType::kBytes:
      for (std::string_view e : t.bytes) out.push_back(std::string(e));
      return out;
    case DataType::kBool:
      for (int64_t i = 0; i < n; ++i) out.push_back(t.data[i] != 0);
      return out;
#define FERRY_CASE(DT, T)                                              \
  case DataType::DT:                                                   \
    for (int64_t i = 0; i < n; ++i) out.push_back(Load<T>(t.data, i)); \
    return out;
      FERRY_CASE(kUint8, uint8_t)
      FERRY_CASE(kUint16, uint16_t)
      FERRY_CASE(kUint32, uint32_t)
      FERRY_CASE(kUint64, uint64_t)
      FERRY_CASE(kInt8, int8_t)
      FERRY_CASE(kInt16, int16_t)
      FERRY_CASE(kInt32, int32_t)
      FERRY_CASE(kInt64, int64_t)
      FERRY_CASE(kFp32, float)
      FERRY_CASE(kFp64, double)
#undef FERRY_CASE
    case DataType::kFp16:
    case DataType::kBf16:
      return Invalid(what, absl::StrCat(A(DataTypeName(t.dtype)),
                                        " travels in binary only (use InferProtocol::kHttpBinary "
                                        "or kGrpc)"));
    case DataType::kInvalid:
      break;
  }
  return Invalid(what, "has no valid datatype");
}

// Flat JSON `data` into a tensor's payload (dtype and shape already set).
absl::Status JsonDataToTensor(const json& data, Tensor& t) {
  const std::string what = absl::StrCat("output '", t.name, "'");
  if (!data.is_array()) return Invalid(what, "'data' is not an array");
  const int64_t n = t.element_count();
  if (n < 0 || static_cast<int64_t>(data.size()) != n) {
    return Invalid(what, absl::StrCat("shape ", ShapeToString(t.shape), " needs ", n,
                                      " elements, got ", data.size()));
  }
  try {
    if (t.dtype == DataType::kBytes) {
      for (const json& e : data) t.bytes.push_back(e.get_ref<const std::string&>());
      return absl::OkStatus();
    }
    t.data.reserve(static_cast<size_t>(n * DataTypeSizeBytes(t.dtype)));
    auto number = [](const json& e) {
      return e.is_null() ? std::numeric_limits<double>::quiet_NaN() : e.get<double>();
    };
    for (const json& e : data) {
      switch (t.dtype) {
        case DataType::kBool:
          AppendRaw<uint8_t>(&t.data, e.get<bool>() ? 1 : 0);
          break;
        case DataType::kUint8:
          AppendRaw(&t.data, e.get<uint8_t>());
          break;
        case DataType::kUint16:
          AppendRaw(&t.data, e.get<uint16_t>());
          break;
        case DataType::kUint32:
          AppendRaw(&t.data, e.get<uint32_t>());
          break;
        case DataType::kUint64:
          AppendRaw(&t.data, e.get<uint64_t>());
          break;
        case DataType::kInt8:
          AppendRaw(&t.data, e.get<int8_t>());
          break;
        case DataType::kInt16:
          AppendRaw(&t.data, e.get<int16_t>());
          break;
        case DataType::kInt32:
          AppendRaw(&t.data, e.get<int32_t>());
          break;
        case DataType::kInt64:
          AppendRaw(&t.data, e.get<int64_t>());
          break;
        case DataType::kFp16:
          AppendRaw(&t.data, FloatToHalf(static_cast<float>(number(e))));
          break;
        case DataType::kBf16:
          AppendRaw(&t.data, FloatToBf16(static_cast<float>(number(e))));
          break;
        case DataType::kFp32:
          AppendRaw(&t.data, static_cast<float>(number(e)));
          break;
        case DataType::kFp64:
          AppendRaw(&t.data, number(e));
          break;
        default:
          return Invalid(what, "has no valid datatype");
      }
    }
  } catch (const json::exception& e) {
    return Invalid(what,
                   absl::StrCat("element does not fit ", A(DataTypeName(t.dtype)), ": ", e.what()));
  }
  return absl::OkStatus();
}

// The bytes of one tensor as the binary extension and gRPC raw contents carry it.
std::string RawContents(const Tensor& t) {
  return t.dtype == DataType::kBytes ? EncodeBytesElements(t.bytes) : t.data;
}

absl::Status CheckInputs(const InferenceRequest& request) {
  for (const Tensor& t : request.inputs) {
    if (t.dtype == DataType::kInvalid) {
      return Invalid(absl::StrCat("input '", t.name, "'"), "has no valid datatype");
    }
    if (absl::Status s = t.CheckConsistent(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

std::string InferTarget(const InferenceRequest& request) {
  std::string target = absl::StrCat("/v2/models/", EscapePathSegment(request.model_name));
  if (!request.model_version.empty()) {
    absl::StrAppend(&target, "/versions/", EscapePathSegment(request.model_version));
  }
  absl::StrAppend(&target, "/infer");
  return target;
}

absl::StatusOr<std::string> Dump(const json& j) {
  try {
    return j.dump(-1, ' ', false, json::error_handler_t::strict);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot write JSON (a BYTES element or string that is not UTF-8 must travel "
                     "in binary): ",
                     e.what()));
  }
}

absl::StatusOr<Tensor> TensorHeader(const json& j, absl::string_view what) {
  if (!j.is_object()) return Invalid(what, "output is not an object");
  Tensor t;
  try {
    t.name = j.at("name").get<std::string>();
    t.dtype = DataTypeFromName(j.at("datatype").get<std::string>());
    t.shape = j.at("shape").get<std::vector<int64_t>>();
  } catch (const json::exception& e) {
    return Invalid(what, absl::StrCat("output needs name, datatype and shape: ", e.what()));
  }
  if (t.dtype == DataType::kInvalid) {
    return Invalid(what, absl::StrCat("output '", t.name, "' has an unknown datatype"));
  }
  if (ElementCount(t.shape) < 0) {
    return Invalid(what, absl::StrCat("output '", t.name, "' has an invalid shape"));
  }
  return t;
}

// Raw output bytes into a tensor (dtype and shape already set).
absl::Status RawToTensor(std::string_view raw, Tensor& t) {
  const std::string what = absl::StrCat("output '", t.name, "'");
  if (t.dtype == DataType::kBytes) {
    auto bytes = DecodeBytesElements(raw, t.element_count(), what);
    if (!bytes.ok()) return bytes.status();
    t.bytes = *std::move(bytes);
    return absl::OkStatus();
  }
  t.data.assign(raw.data(), raw.size());
  return t.CheckConsistent();
}

void ToGrpcParameter(const ParameterValue& value, inference::InferParameter& out) {
  std::visit(
      [&out](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) {
          out.set_bool_param(v);
        } else if constexpr (std::is_same_v<T, int64_t>) {
          out.set_int64_param(v);
        } else if constexpr (std::is_same_v<T, std::string>) {
          out.set_string_param(v);
        } else {
          out.set_double_param(v);
        }
      },
      value);
}

Parameters FromGrpcParameters(
    const google::protobuf::Map<std::string, inference::InferParameter>& parameters) {
  Parameters out;
  for (const auto& [name, p] : parameters) {
    switch (p.parameter_choice_case()) {
      case inference::InferParameter::kBoolParam:
        out.emplace(name, p.bool_param());
        break;
      case inference::InferParameter::kInt64Param:
        out.emplace(name, p.int64_param());
        break;
      case inference::InferParameter::kStringParam:
        out.emplace(name, p.string_param());
        break;
      case inference::InferParameter::kDoubleParam:
        out.emplace(name, p.double_param());
        break;
      case inference::InferParameter::kUint64Param:
        if (p.uint64_param() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          out.emplace(name, static_cast<int64_t>(p.uint64_param()));
        } else {
          out.emplace(name, static_cast<double>(p.uint64_param()));
        }
        break;
      default:
        break;
    }
  }
  return out;
}

// Typed gRPC contents into a tensor, for servers that answer without raw contents.
absl::Status ContentsToTensor(const inference::InferTensorContents& c, Tensor& t) {
  switch (t.dtype) {
    case DataType::kBytes:
      for (const std::string& e : c.bytes_contents()) t.bytes.push_back(e);
      break;
    case DataType::kBool:
      for (bool b : c.bool_contents()) AppendRaw<uint8_t>(&t.data, b ? 1 : 0);
      break;
    case DataType::kInt8:
      for (int32_t v : c.int_contents()) AppendRaw(&t.data, static_cast<int8_t>(v));
      break;
    case DataType::kInt16:
      for (int32_t v : c.int_contents()) AppendRaw(&t.data, static_cast<int16_t>(v));
      break;
    case DataType::kInt32:
      for (int32_t v : c.int_contents()) AppendRaw(&t.data, v);
      break;
    case DataType::kInt64:
      for (int64_t v : c.int64_contents()) AppendRaw(&t.data, v);
      break;
    case DataType::kUint8:
      for (uint32_t v : c.uint_contents()) AppendRaw(&t.data, static_cast<uint8_t>(v));
      break;
    case DataType::kUint16:
      for (uint32_t v : c.uint_contents()) AppendRaw(&t.data, static_cast<uint16_t>(v));
      break;
    case DataType::kUint32:
      for (uint32_t v : c.uint_contents()) AppendRaw(&t.data, v);
      break;
    case DataType::kUint64:
      for (uint64_t v : c.uint64_contents()) AppendRaw(&t.data, v);
      break;
    case DataType::kFp32:
      for (float v : c.fp32_contents()) AppendRaw(&t.data, v);
      break;
    case DataType::kFp64:
      for (double v : c.fp64_contents()) AppendRaw(&t.data, v);
      break;
    default:
      return Invalid(absl::StrCat("output '", t.name, "'"),
                     "has no raw contents and no typed contents for its datatype");
  }
  if (t.dtype == DataType::kBytes && static_cast<int64_t>(t.bytes.size()) != t.element_count()) {
    return Invalid(absl::StrCat("output '", t.name, "'"), "element count does not match shape");
  }
  return t.CheckConsistent();
}

bool IsDefaultAnswer(const Parameters& parameters) {
  if (auto it = parameters.find("ferry_default"); it != parameters.end()) {
    const bool* b = std::get_if<bool>(&it->second);
    return b != nullptr && *b;
  }
  return parameters.count("default_output") > 0;
}

}  // namespace

// Everything outside RFC 3986's unreserved set is escaped, so a model name cannot change the
// path it is sent to.
std::string EscapePathSegment(std::string_view segment) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(segment.size());
  for (const unsigned char c : segment) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

absl::StatusOr<HttpRequest> EncodeHttpInfer(const InferenceRequest& request,
                                            InferProtocol protocol) {
  if (protocol == InferProtocol::kGrpc) {
    return absl::InvalidArgumentError("EncodeHttpInfer: kGrpc is not an HTTP encoding");
  }
  if (absl::Status s = CheckInputs(request); !s.ok()) return s;
  const bool binary = protocol == InferProtocol::kHttpBinary;
  json header = json::object();
  if (!request.id.empty()) header["id"] = request.id;
  json parameters = ParametersToJson(request.parameters);
  if (request.priority != 0) parameters["priority"] = request.priority;
  if (request.timeout_us != 0) parameters["timeout"] = request.timeout_us;
  if (request.binary_data_output || (binary && request.outputs.empty())) {
    parameters["binary_data_output"] = true;
  }
  if (!parameters.empty()) header["parameters"] = std::move(parameters);
  json inputs = json::array();
  std::vector<std::string> raw;
  for (const Tensor& t : request.inputs) {
    json in = {{"name", t.name}, {"shape", t.shape}, {"datatype", DataTypeName(t.dtype)}};
    if (binary) {
      raw.push_back(RawContents(t));
      in["parameters"] = {{"binary_data_size", raw.back().size()}};
    } else {
      auto data = TensorDataToJson(t);
      if (!data.ok()) return data.status();
      in["data"] = *std::move(data);
    }
    inputs.push_back(std::move(in));
  }
  header["inputs"] = std::move(inputs);
  if (!request.outputs.empty()) {
    json outputs = json::array();
    for (const RequestedOutput& o : request.outputs) {
      json out = {{"name", o.name}};
      json p = ParametersToJson(o.parameters);
      if (binary || o.binary_data) p["binary_data"] = true;
      if (!p.empty()) out["parameters"] = std::move(p);
      outputs.push_back(std::move(out));
    }
    header["outputs"] = std::move(outputs);
  }
  auto text = Dump(header);
  if (!text.ok()) return text.status();
  HttpRequest out;
  out.target = InferTarget(request);
  out.body = *std::move(text);
  if (binary) {
    out.content_type = "application/octet-stream";
    out.header_length = static_cast<int64_t>(out.body.size());
    size_t total = out.body.size();
    for (const std::string& r : raw) total += r.size();
    out.body.reserve(total);
    for (const std::string& r : raw) out.body.append(r);
  } else {
    out.content_type = "application/json";
  }
  return out;
}

HttpRequest EncodePredict(std::string_view model, std::string_view json_body) {
  HttpRequest out;
  out.target = absl::StrCat("/", EscapePathSegment(model), "/predict");
  out.content_type = "application/json";
  out.body = std::string(json_body);
  return out;
}

absl::StatusOr<inference::ModelInferRequest> EncodeGrpcInfer(const InferenceRequest& request) {
  if (absl::Status s = CheckInputs(request); !s.ok()) return s;
  inference::ModelInferRequest out;
  out.set_model_name(request.model_name);
  out.set_model_version(request.model_version);
  out.set_id(request.id);
  auto& parameters = *out.mutable_parameters();
  for (const auto& [name, value] : request.parameters) ToGrpcParameter(value, parameters[name]);
  if (request.priority != 0) parameters["priority"].set_int64_param(request.priority);
  if (request.timeout_us != 0) parameters["timeout"].set_int64_param(request.timeout_us);
  for (const Tensor& t : request.inputs) {
    auto* in = out.add_inputs();
    in->set_name(t.name);
    in->set_datatype(std::string(DataTypeName(t.dtype)));
    for (int64_t d : t.shape) in->add_shape(d);
    out.add_raw_input_contents(RawContents(t));
  }
  for (const RequestedOutput& o : request.outputs) {
    auto* r = out.add_outputs();
    r->set_name(o.name);
    for (const auto& [name, value] : o.parameters) {
      ToGrpcParameter(value, (*r->mutable_parameters())[name]);
    }
  }
  return out;
}

absl::StatusOr<InferenceResponse> DecodeHttpInfer(const HttpReply& reply) {
  if (reply.status / 100 != 2) return StatusFromHttp(reply.status, reply.body);
  constexpr absl::string_view kWhat = "infer response";
  std::string_view body = reply.body;
  std::string_view header_text = body;
  std::string_view binary;
  if (reply.header_length >= 0) {
    if (static_cast<size_t>(reply.header_length) > body.size()) {
      return Invalid(kWhat, "Inference-Header-Content-Length is beyond the body");
    }
    header_text = body.substr(0, reply.header_length);
    binary = body.substr(reply.header_length);
  }
  json header;
  try {
    header = json::parse(header_text);
  } catch (const json::exception& e) {
    return Invalid(kWhat, absl::StrCat("malformed JSON: ", e.what()));
  }
  if (!header.is_object()) return Invalid(kWhat, "not a JSON object");
  InferenceResponse out;
  try {
    if (header.contains("model_name")) out.model_name = header["model_name"].get<std::string>();
    if (header.contains("model_version")) {
      out.model_version = header["model_version"].get<std::string>();
    }
    if (header.contains("id")) out.id = header["id"].get<std::string>();
  } catch (const json::exception& e) {
    return Invalid(kWhat, e.what());
  }
  if (header.contains("parameters")) {
    auto p = ParametersFromJson(header["parameters"], kWhat);
    if (!p.ok()) return p.status();
    out.parameters = *std::move(p);
  }
  out.is_default = IsDefaultAnswer(out.parameters);
  if (!header.contains("outputs") || !header["outputs"].is_array()) {
    return Invalid(kWhat, "has no 'outputs' array");
  }
  size_t offset = 0;
  for (const json& o : header["outputs"]) {
    auto t = TensorHeader(o, kWhat);
    if (!t.ok()) return t.status();
    const json* size = nullptr;
    if (auto p = o.find("parameters"); p != o.end() && p->is_object()) {
      if (auto s = p->find("binary_data_size"); s != p->end()) size = &*s;
    }
    if (size != nullptr) {
      if (!size->is_number_unsigned()) {
        return Invalid(kWhat, absl::StrCat("output '", t->name, "': bad binary_data_size"));
      }
      const uint64_t n = size->get<uint64_t>();
      if (n > binary.size() - offset) {
        return Invalid(kWhat, absl::StrCat("output '", t->name, "': binary_data_size ", n,
                                           " is beyond the body"));
      }
      if (absl::Status s = RawToTensor(binary.substr(offset, n), *t); !s.ok()) return s;
      offset += n;
    } else {
      auto data = o.find("data");
      if (data == o.end()) {
        return Invalid(kWhat, absl::StrCat("output '", t->name, "' has no data"));
      }
      if (absl::Status s = JsonDataToTensor(*data, *t); !s.ok()) return s;
    }
    out.outputs.push_back(*std::move(t));
  }
  if (offset != binary.size()) {
    return Invalid(kWhat, absl::StrCat(binary.size() - offset,
                                       " bytes of the binary part belong to no output"));
  }
  return out;
}

absl::StatusOr<InferenceResponse> DecodeGrpcInfer(const inference::ModelInferResponse& reply) {
  constexpr absl::string_view kWhat = "infer response";
  InferenceResponse out;
  out.model_name = reply.model_name();
  out.model_version = reply.model_version();
  out.id = reply.id();
  out.parameters = FromGrpcParameters(reply.parameters());
  out.is_default = IsDefaultAnswer(out.parameters);
  const bool raw = reply.raw_output_contents_size() > 0;
  if (raw && reply.raw_output_contents_size() != reply.outputs_size()) {
    return Invalid(kWhat, absl::StrCat(reply.outputs_size(), " outputs but ",
                                       reply.raw_output_contents_size(), " raw contents"));
  }
  for (int i = 0; i < reply.outputs_size(); ++i) {
    const auto& o = reply.outputs(i);
    Tensor t;
    t.name = o.name();
    t.dtype = DataTypeFromName(o.datatype());
    t.shape.assign(o.shape().begin(), o.shape().end());
    if (t.dtype == DataType::kInvalid) {
      return Invalid(kWhat, absl::StrCat("output '", t.name, "' has an unknown datatype"));
    }
    if (ElementCount(t.shape) < 0) {
      return Invalid(kWhat, absl::StrCat("output '", t.name, "' has an invalid shape"));
    }
    absl::Status s =
        raw ? RawToTensor(reply.raw_output_contents(i), t) : ContentsToTensor(o.contents(), t);
    if (!s.ok()) return s;
    out.outputs.push_back(std::move(t));
  }
  return out;
}

absl::Status StatusFromHttp(int http_status, std::string_view body) {
  if (http_status / 100 == 2) return absl::OkStatus();
  std::string message;
  if (!body.empty()) {
    json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("error") && j["error"].is_string()) {
      message = j["error"].get<std::string>();
    } else {
      constexpr size_t kMaxBodyInMessage = 1024;
      message = std::string(body.substr(0, kMaxBodyInMessage));
    }
  }
  if (message.empty()) message = absl::StrCat("HTTP ", http_status);
  absl::StatusCode code;
  switch (http_status) {
    case 400:
    case 413:
    case 431:
      code = absl::StatusCode::kInvalidArgument;
      break;
    case 401:
      code = absl::StatusCode::kUnauthenticated;
      break;
    case 403:
      code = absl::StatusCode::kPermissionDenied;
      break;
    case 404:
      code = absl::StatusCode::kNotFound;
      break;
    case 405:
    case 501:
      code = absl::StatusCode::kUnimplemented;
      break;
    case 429:
      code = absl::StatusCode::kResourceExhausted;
      break;
    case 500:
      code = absl::StatusCode::kInternal;
      break;
    case 502:
    case 503:
      code = absl::StatusCode::kUnavailable;
      break;
    case 504:
      code = absl::StatusCode::kDeadlineExceeded;
      break;
    default:
      code =
          http_status / 100 == 4 ? absl::StatusCode::kInvalidArgument : absl::StatusCode::kInternal;
  }
  absl::Status status(code, message);
  status.SetPayload(kHttpStatusPayload, absl::Cord(absl::StrCat(http_status)));
  return status;
}

int HttpStatusOf(const absl::Status& status) {
  auto payload = status.GetPayload(kHttpStatusPayload);
  int value = 0;
  if (!payload.has_value() || !absl::SimpleAtoi(std::string(*payload), &value)) return 0;
  return value;
}

bool IsRetryable(const absl::Status& status) {
  return absl::IsResourceExhausted(status) || absl::IsUnavailable(status);
}

}  // namespace ferry
