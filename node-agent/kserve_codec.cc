#include "node-agent/kserve_codec.h"

#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "node-agent/json_reader.h"
#include "node-agent/json_writer.h"
#include "simdjson.h"

namespace ferry::agent {

static_assert(kJsonPaddingBytes >= simdjson::SIMDJSON_PADDING);

namespace {

using json_reader::AppendData;
using json_reader::AppendScalar;
using json_reader::Find;
using json_reader::Invalid;
using json_reader::JsonDocument;
using json_reader::TypeName;
using json_writer::AppendFlatData;
using json_writer::AppendNumber;
using json_writer::AppendParameters;
using json_writer::AppendShape;
using json_writer::AppendString;
using json_writer::AppendTensorSpec;
namespace dom = simdjson::dom;

absl::StatusOr<ParameterValue> ParseParameterValue(dom::element j, std::string_view what) {
  switch (j.type()) {
    case dom::element_type::BOOL:
      return ParameterValue(j.get_bool().value_unsafe());
    case dom::element_type::INT64:
      return ParameterValue(j.get_int64().value_unsafe());
    case dom::element_type::UINT64:  // only values above INT64_MAX are UINT64
      return Invalid(
          what, absl::StrCat("value ", j.get_uint64().value_unsafe(), " does not fit an int64"));
    case dom::element_type::DOUBLE:
      return ParameterValue(j.get_double().value_unsafe());
    case dom::element_type::STRING:
      return ParameterValue(std::string(j.get_string().value_unsafe()));
    default:
      return Invalid(
          what, absl::StrCat("must be a bool, number or string, got ", std::string(TypeName(j))));
  }
}

absl::StatusOr<Parameters> ParseParameters(dom::element j, std::string_view what) {
  dom::object object;
  if (j.get(object)) {
    return Invalid(what,
                   absl::StrCat("parameters must be an object, got ", std::string(TypeName(j))));
  }
  Parameters params;
  for (const dom::key_value_pair field : object) {
    auto v = ParseParameterValue(
        field.value, absl::StrCat(std::string(what), ": parameter '", std::string(field.key), "'"));
    if (!v.ok()) return v.status();
    params.emplace(std::string(field.key), *std::move(v));
  }
  if (absl::Status s = CheckParameters(params, what); !s.ok()) return s;
  return params;
}
absl::StatusOr<int64_t> NonNegativeInt(const Parameters& params, const std::string& key,
                                       std::string_view what) {
  auto it = params.find(key);
  if (it == params.end()) return 0;
  const int64_t* v = std::get_if<int64_t>(&it->second);
  if (v == nullptr || *v < 0) {
    return Invalid(what, absl::StrCat("parameter '", key, "' must be a non-negative integer"));
  }
  return *v;
}

absl::StatusOr<std::vector<int64_t>> ParseShape(dom::element j, std::string_view input) {
  dom::array dims;
  if (j.get(dims)) {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", std::string(input), "': 'shape' must be an array of integers"));
  }
  std::vector<int64_t> shape;
  shape.reserve(dims.size());
  for (dom::element d : dims) {
    int64_t dim;
    const bool is_int64 = !d.get(dim);
    if (!is_int64 || dim < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", std::string(input), "': 'shape' must hold non-negative integers, got ",
          is_int64 ? std::to_string(dim) : std::string(TypeName(d))));
    }
    shape.push_back(dim);
  }
  if (ElementCount(shape) < 0) {
    return absl::InvalidArgumentError(absl::StrCat("input '", std::string(input), "': shape ",
                                                   ShapeToString(shape), " is too large"));
  }
  return shape;
}
// Resolves a model input's declared shape (dims of -1 variable) for `count` elements. At most one
// variable dim can be inferred.
absl::StatusOr<std::vector<int64_t>> ResolveShape(const TensorSpec& spec, int64_t count) {
  std::vector<int64_t> shape = spec.shape;
  int64_t fixed = 1;
  int variable = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) {
      if (variable >= 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", spec.name, "': a body without a JSON header cannot give shape ",
            ShapeToString(spec.shape), " (more than one variable dim); send a JSON header"));
      }
      variable = static_cast<int>(i);
    } else {
      fixed *= shape[i];
    }
  }
  if (variable >= 0) {
    if (fixed == 0 || count % fixed != 0) {
      return absl::InvalidArgumentError(absl::StrCat("input '", spec.name, "': ", count,
                                                     " elements do not fit shape ",
                                                     ShapeToString(spec.shape)));
    }
    shape[variable] = count / fixed;
  } else if (fixed != count) {
    return absl::InvalidArgumentError(absl::StrCat("input '", spec.name, "': shape ",
                                                   ShapeToString(spec.shape), " needs ", fixed,
                                                   " elements, got ", count));
  }
  return shape;
}

absl::StatusOr<InferenceRequest> ParseRawBody(std::string_view body, const std::string& model,
                                              const ModelMetadata& metadata) {
  if (metadata.inputs.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Inference-Header-Content-Length 0 (a body that is one raw tensor) needs a model with "
        "exactly one input; '",
        model, "' has ", metadata.inputs.size()));
  }
  const TensorSpec& spec = metadata.inputs[0];
  Tensor t;
  t.name = spec.name;
  t.dtype = spec.dtype;
  int64_t count = 0;
  if (spec.dtype == DataType::kBytes) {
    auto elements = DecodeBytesElements(body, -1, absl::StrCat("input '", spec.name, "'"));
    if (!elements.ok()) return elements.status();
    t.bytes = *std::move(elements);
    count = static_cast<int64_t>(t.bytes.size());
  } else {
    const int64_t size = DataTypeSizeBytes(spec.dtype);
    if (size <= 0 || static_cast<int64_t>(body.size()) % size != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", spec.name, "': ", body.size(), " bytes are not a whole number of ",
          std::string(DataTypeName(spec.dtype)), " elements"));
    }
    count = static_cast<int64_t>(body.size()) / size;
    t.data.assign(body.data(), body.size());
  }
  auto shape = ResolveShape(spec, count);
  if (!shape.ok()) return shape.status();
  t.shape = *std::move(shape);
  InferenceRequest request;
  request.inputs.push_back(std::move(t));
  return request;
}

// `json_bytes`: the size of the JSON text, which bounds how many elements its 'data' can hold.
absl::Status ParseInput(dom::element j, std::string_view binary, size_t* binary_offset,
                        bool has_header, size_t json_bytes, const ModelMetadata& metadata,
                        Tensor* t) {
  dom::object input;
  if (j.get(input)) {
    return absl::InvalidArgumentError(
        absl::StrCat("each entry of 'inputs' must be an object, got ", std::string(TypeName(j))));
  }
  std::string_view name;
  if (auto field = Find(input, "name"); !field || field->get(name)) {
    return absl::InvalidArgumentError("an input has no 'name' string");
  }
  t->name = std::string(name);
  const std::string what = absl::StrCat("input '", t->name, "'");

  std::string_view datatype;
  if (auto field = Find(input, "datatype"); !field || field->get(datatype)) {
    return Invalid(what, "'datatype' is missing or not a string");
  }
  t->dtype = DataTypeFromName(datatype);
  if (t->dtype == DataType::kInvalid) {
    return Invalid(what, absl::StrCat("unknown datatype '", std::string(datatype), "'"));
  }
  const std::optional<dom::element> shape_field = Find(input, "shape");
  if (!shape_field) return Invalid(what, "'shape' is missing");
  auto shape = ParseShape(*shape_field, t->name);
  if (!shape.ok()) return shape.status();
  t->shape = *std::move(shape);
  // Everything the header part says is checked against the model before any data is decoded.
  auto declared = CheckDeclaredInput(metadata.inputs, metadata.batched, metadata.max_batch_size,
                                     t->name, t->dtype, t->shape);
  if (!declared.ok()) return declared.status();
  const int64_t count = declared->element_count;

  int64_t binary_size = -1;
  if (const std::optional<dom::element> params = Find(input, "parameters")) {
    auto parsed = ParseParameters(*params, what);
    if (!parsed.ok()) return parsed.status();
    if (parsed->count("binary_data_size") > 0) {
      auto size = NonNegativeInt(*parsed, "binary_data_size", what);
      if (!size.ok()) return size.status();
      binary_size = *size;
    }
  }

  const std::optional<dom::element> data = Find(input, "data");
  if (binary_size >= 0) {
    if (!has_header) {
      return Invalid(what,
                     "parameters.binary_data_size needs the Inference-Header-Content-Length "
                     "header");
    }
    if (data) return Invalid(what, "has both 'data' and binary_data_size");
    if (binary.size() - *binary_offset < static_cast<uint64_t>(binary_size)) {
      return Invalid(what,
                     absl::StrCat("binary_data_size ", binary_size, " but only ",
                                  binary.size() - *binary_offset, " bytes of binary data remain"));
    }
    const std::string_view raw = binary.substr(*binary_offset, binary_size);
    *binary_offset += binary_size;
    if (t->dtype == DataType::kBytes) {
      auto elements = DecodeBytesElements(raw, count, what);
      if (!elements.ok()) return elements.status();
      t->bytes = *std::move(elements);
    } else {
      const int64_t want = declared->byte_size;
      if (binary_size != want) {
        return Invalid(what, absl::StrCat("shape ", ShapeToString(t->shape), " of ",
                                          std::string(DataTypeName(t->dtype)), " needs ", want,
                                          " bytes, binary_data_size is ", binary_size));
      }
      t->data.assign(raw.data(), raw.size());
    }
    return absl::OkStatus();
  }

  if (!data) return Invalid(what, "has neither 'data' nor parameters.binary_data_size");
  // Each JSON element takes at least one byte of text, so a count beyond the text's size cannot
  // be there; refusing it here keeps the reservations below bounded by the body.
  if (static_cast<uint64_t>(count) > json_bytes) {
    return Invalid(what,
                   absl::StrCat("shape ", ShapeToString(t->shape), " needs ", count,
                                " elements but the JSON text has only ", json_bytes, " bytes"));
  }
  if (t->dtype == DataType::kBytes) {
    t->bytes.reserve(count, 0);
  } else {
    t->data.reserve(count * DataTypeSizeBytes(t->dtype));
  }
  int64_t got = 0;
  if (absl::Status s = AppendData(*data, t, &got, count); !s.ok()) return s;
  if (got != count) {
    return Invalid(what, absl::StrCat("shape ", ShapeToString(t->shape), " needs ", count,
                                      " elements, got ", got));
  }
  return absl::OkStatus();
}

absl::Status ParseRequestedOutput(dom::element j, RequestedOutput* out) {
  dom::object output;
  if (j.get(output)) {
    return absl::InvalidArgumentError(
        absl::StrCat("each entry of 'outputs' must be an object, got ", std::string(TypeName(j))));
  }
  std::string_view name;
  if (auto field = Find(output, "name"); !field || field->get(name)) {
    return absl::InvalidArgumentError("a requested output has no 'name' string");
  }
  out->name = std::string(name);
  if (const std::optional<dom::element> params = Find(output, "parameters")) {
    const std::string what = absl::StrCat("output '", out->name, "'");
    auto parsed = ParseParameters(*params, what);
    if (!parsed.ok()) return parsed.status();
    out->parameters = *std::move(parsed);
    if (auto it = out->parameters.find("binary_data"); it != out->parameters.end()) {
      const bool* b = std::get_if<bool>(&it->second);
      if (b == nullptr) return Invalid(what, "parameter 'binary_data' must be a bool");
      out->binary_data = *b;
    }
  }
  return absl::OkStatus();
}
// Whether `output` goes to the binary part of the response.
bool WantsBinary(const std::string& output, const InferenceRequest& request) {
  for (const RequestedOutput& r : request.outputs) {
    if (r.name != output) continue;
    if (r.parameters.count("binary_data") > 0) return r.binary_data;
    return r.binary_data || request.binary_data_output;
  }
  return request.binary_data_output;
}

}  // namespace

absl::StatusOr<InferenceRequest> ParseInferRequest(std::string_view body, int64_t header_length,
                                                   const std::string& model_name,
                                                   const std::string& model_version,
                                                   const ModelMetadata& metadata,
                                                   size_t readable_past_end) {
  if (header_length == 0) {
    auto request = ParseRawBody(body, model_name, metadata);
    if (request.ok()) {
      request->model_name = model_name;
      request->model_version = model_version;
    }
    return request;
  }
  std::string_view json_text = body;
  std::string_view binary;
  const bool has_header = header_length > 0;
  if (has_header) {
    if (static_cast<uint64_t>(header_length) > body.size()) {
      return absl::InvalidArgumentError(absl::StrCat("Inference-Header-Content-Length ",
                                                     header_length, " exceeds the body size ",
                                                     body.size()));
    }
    json_text = body.substr(0, header_length);
    binary = body.substr(header_length);
  }
  JsonDocument document;
  auto parsed = document.Parse(json_text, binary.size() + readable_past_end);
  if (!parsed.ok()) return parsed.status();
  dom::object root;
  if (parsed->get(root)) {
    return absl::InvalidArgumentError(absl::StrCat("the request body must be a JSON object, got ",
                                                   std::string(TypeName(*parsed))));
  }

  InferenceRequest request;
  request.model_name = model_name;
  request.model_version = model_version;
  if (const std::optional<dom::element> id = Find(root, "id")) {
    std::string_view text;
    if (id->get(text)) return absl::InvalidArgumentError("'id' must be a string");
    if (absl::Status st = CheckRequestId(text); !st.ok()) return st;
    request.id = std::string(text);
  }
  if (const std::optional<dom::element> params = Find(root, "parameters")) {
    auto p = ParseParameters(*params, "request");
    if (!p.ok()) return p.status();
    request.parameters = *std::move(p);
    auto priority = NonNegativeInt(request.parameters, "priority", "request");
    if (!priority.ok()) return priority.status();
    request.priority = *priority;
    auto timeout = NonNegativeInt(request.parameters, "timeout", "request");
    if (!timeout.ok()) return timeout.status();
    request.timeout_us = *timeout;
    if (auto it = request.parameters.find("binary_data_output"); it != request.parameters.end()) {
      const bool* b = std::get_if<bool>(&it->second);
      if (b == nullptr) {
        return absl::InvalidArgumentError("request: parameter 'binary_data_output' must be a bool");
      }
      request.binary_data_output = *b;
    }
  }

  dom::array inputs;
  if (auto field = Find(root, "inputs"); !field || field->get(inputs)) {
    return absl::InvalidArgumentError("the request has no 'inputs' array");
  }
  request.inputs.resize(inputs.size());
  size_t binary_offset = 0;
  size_t i = 0;
  for (dom::element input : inputs) {
    if (absl::Status s = ParseInput(input, binary, &binary_offset, has_header, json_text.size(),
                                    metadata, &request.inputs[i++]);
        !s.ok()) {
      return s;
    }
  }
  if (binary_offset != binary.size()) {
    return absl::InvalidArgumentError(absl::StrCat("the binary part holds ", binary.size(),
                                                   " bytes but the inputs' ",
                                                   "binary_data_size add up to ", binary_offset));
  }

  if (const std::optional<dom::element> field = Find(root, "outputs")) {
    dom::array outputs;
    if (field->get(outputs)) return absl::InvalidArgumentError("'outputs' must be an array");
    request.outputs.resize(outputs.size());
    size_t o = 0;
    for (dom::element output : outputs) {
      if (absl::Status s = ParseRequestedOutput(output, &request.outputs[o++]); !s.ok()) return s;
    }
  }
  return request;
}

EncodedBody EncodeInferResponse(const InferenceResponse& response,
                                const InferenceRequest& request) {
  EncodedBody result;
  std::string& out = result.body;
  size_t estimate = 128;
  for (const Tensor& t : response.outputs) {
    estimate += 96 + t.name.size() + t.data.size() * 3;
    estimate += t.bytes.total_bytes() + 8 * t.bytes.size();
  }
  out.reserve(estimate);

  const std::string& model_name =
      response.model_name.empty() ? request.model_name : response.model_name;
  const std::string& model_version =
      response.model_version.empty() ? request.model_version : response.model_version;
  const std::string& id = response.id.empty() ? request.id : response.id;
  out.append("{\"model_name\":");
  AppendString(&out, model_name);
  if (!model_version.empty()) {
    out.append(",\"model_version\":");
    AppendString(&out, model_version);
  }
  if (!id.empty()) {
    out.append(",\"id\":");
    AppendString(&out, id);
  }
  if (!response.parameters.empty()) {
    out.append(",\"parameters\":");
    AppendParameters(&out, response.parameters);
  }
  out.append(",\"outputs\":[");
  // Binary parts are collected first and appended after the JSON.
  std::vector<std::string_view> binary_views;
  std::vector<std::string> encoded_bytes;  // keeps BYTES outputs' binary form alive
  for (size_t i = 0; i < response.outputs.size(); ++i) {
    const Tensor& t = response.outputs[i];
    if (i > 0) out.push_back(',');
    out.append("{\"name\":");
    AppendString(&out, t.name);
    out.append(",\"datatype\":");
    AppendString(&out, DataTypeName(t.dtype));
    out.append(",\"shape\":");
    AppendShape(&out, t.shape);
    if (WantsBinary(t.name, request)) {
      std::string_view raw;
      if (t.dtype == DataType::kBytes) {
        encoded_bytes.push_back(EncodeBytesElements(t.bytes));
        raw = encoded_bytes.back();
      } else {
        raw = t.data;
      }
      binary_views.push_back(raw);
      out.append(",\"parameters\":{\"binary_data_size\":");
      AppendNumber(&out, raw.size());
      out.append("}}");
    } else {
      out.append(",\"data\":");
      AppendFlatData(&out, t);
      out.push_back('}');
    }
  }
  out.append("]}");
  if (!binary_views.empty()) {
    result.json_length = static_cast<int64_t>(out.size());
    size_t total = out.size();
    for (std::string_view v : binary_views) total += v.size();
    out.reserve(total);
    for (std::string_view v : binary_views) out.append(v);
  }
  return result;
}

std::string EncodeServerMetadata(const ServerMetadata& metadata) {
  std::string out = "{\"name\":";
  AppendString(&out, metadata.name);
  out.append(",\"version\":");
  AppendString(&out, metadata.version);
  out.append(",\"extensions\":[");
  bool has_binary = false;
  for (size_t i = 0; i < metadata.extensions.size(); ++i) {
    if (i > 0) out.push_back(',');
    AppendString(&out, metadata.extensions[i]);
    has_binary = has_binary || metadata.extensions[i] == kBinaryTensorDataExtension;
  }
  if (!has_binary) {
    if (!metadata.extensions.empty()) out.push_back(',');
    AppendString(&out, kBinaryTensorDataExtension);
  }
  out.append("]}");
  return out;
}

std::string EncodeModelMetadata(const ModelMetadata& metadata) {
  std::string out = "{\"name\":";
  AppendString(&out, metadata.name);
  out.append(",\"versions\":[");
  for (size_t i = 0; i < metadata.versions.size(); ++i) {
    if (i > 0) out.push_back(',');
    AppendString(&out, metadata.versions[i]);
  }
  out.append("],\"platform\":");
  AppendString(&out, metadata.platform);
  out.append(",\"inputs\":[");
  for (size_t i = 0; i < metadata.inputs.size(); ++i) {
    if (i > 0) out.push_back(',');
    AppendTensorSpec(&out, metadata.inputs[i]);
  }
  out.append("],\"outputs\":[");
  for (size_t i = 0; i < metadata.outputs.size(); ++i) {
    if (i > 0) out.push_back(',');
    AppendTensorSpec(&out, metadata.outputs[i]);
  }
  out.append("]}");
  return out;
}

std::string EncodeError(std::string_view message) {
  std::string out = "{\"error\":";
  AppendString(&out, message);
  out.push_back('}');
  return out;
}

}  // namespace ferry::agent
