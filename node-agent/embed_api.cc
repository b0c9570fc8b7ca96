#include "node-agent/embed_api.h"

#include <cstring>
#include <optional>
#include <utility>
#include <variant>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "node-agent/json_reader.h"
#include "node-agent/json_writer.h"

namespace ferry::agent {
namespace {

namespace dom = simdjson::dom;
using json_reader::Find;
using json_reader::TypeName;

// This absl's StrCat takes absl::string_view, which std::string_view does not convert to.
std::string S(std::string_view v) { return std::string(v); }

absl::Status Bad(std::string_view message) {
  return absl::InvalidArgumentError(std::string(message));
}

// A string or a non-empty array of strings, into `texts`. `field` names it in errors.
absl::Status ReadTexts(dom::element j, std::string_view field, std::vector<std::string>* texts) {
  if (j.is_string()) {
    texts->emplace_back(std::string_view(j.get_string().value()));
    return absl::OkStatus();
  }
  if (!j.is_array()) {
    return Bad(absl::StrCat("'", S(field), "' must be a string or an array of strings, got ",
                            S(TypeName(j))));
  }
  size_t i = 0;
  // A named array: a range-for over the temporary result would iterate a dead object.
  const dom::array array = j.get_array().value();
  for (dom::element e : array) {
    if (!e.is_string()) {
      return Bad(absl::StrCat("'", S(field), "'[", i, "] must be a string, got ", S(TypeName(e))));
    }
    texts->emplace_back(std::string_view(e.get_string().value()));
    ++i;
  }
  if (texts->empty()) return Bad(absl::StrCat("'", S(field), "' must not be an empty array"));
  return absl::OkStatus();
}

absl::StatusOr<dom::object> ParseObject(json_reader::JsonDocument& doc, std::string_view body,
                                        size_t readable_past_end) {
  absl::StatusOr<dom::element> root = doc.Parse(body, readable_past_end);
  if (!root.ok()) return root.status();
  if (!root->is_object()) {
    return Bad(absl::StrCat("the body must be a JSON object, got ", S(TypeName(*root))));
  }
  return root->get_object().value();
}

std::optional<bool> OptionalBool(dom::object o, std::string_view key, absl::Status* status) {
  std::optional<dom::element> j = Find(o, key);
  if (!j || j->is_null()) return std::nullopt;
  if (!j->is_bool()) {
    *status = Bad(absl::StrCat("'", S(key), "' must be a boolean, got ", S(TypeName(*j))));
    return std::nullopt;
  }
  return j->get_bool().value();
}

}  // namespace

absl::StatusOr<EmbedQuery> ParseTeiEmbed(std::string_view body, size_t readable_past_end) {
  json_reader::JsonDocument doc;
  absl::StatusOr<dom::object> root = ParseObject(doc, body, readable_past_end);
  if (!root.ok()) return root.status();
  EmbedQuery query;
  query.api = EmbedApi::kTei;
  std::optional<dom::element> inputs = Find(*root, "inputs");
  if (!inputs) return Bad("missing 'inputs' (a string or an array of strings)");
  if (absl::Status s = ReadTexts(*inputs, "inputs", &query.texts); !s.ok()) return s;
  absl::Status status;
  const std::optional<bool> normalize = OptionalBool(*root, "normalize", &status);
  if (!status.ok()) return status;
  if (normalize.has_value() && !*normalize) {
    return Bad(
        "'normalize': false is not supported: this function returns L2-normalised "
        "embeddings");
  }
  // Texts are always truncated at the model's max_seq_length (as sentence-transformers does);
  // the flag is accepted for compatibility and checked for its type only.
  (void)OptionalBool(*root, "truncate", &status);
  if (!status.ok()) return status;
  return query;
}

absl::StatusOr<EmbedQuery> ParseOpenAiEmbeddings(std::string_view body, size_t readable_past_end) {
  json_reader::JsonDocument doc;
  absl::StatusOr<dom::object> root = ParseObject(doc, body, readable_past_end);
  if (!root.ok()) return root.status();
  EmbedQuery query;
  query.api = EmbedApi::kOpenAi;
  std::optional<dom::element> model = Find(*root, "model");
  if (!model) return Bad("missing 'model' (the name of a loaded function)");
  if (!model->is_string() || model->get_string().value().empty()) {
    return Bad(absl::StrCat("'model' must be a non-empty string, got ", S(TypeName(*model))));
  }
  query.model = std::string(model->get_string().value());
  std::optional<dom::element> input = Find(*root, "input");
  if (!input) return Bad("missing 'input' (a string or an array of strings)");
  if (absl::Status s = ReadTexts(*input, "input", &query.texts); !s.ok()) return s;
  if (std::optional<dom::element> format = Find(*root, "encoding_format");
      format && !format->is_null()) {
    const std::string_view f = format->is_string() ? format->get_string().value() : "";
    if (f == "base64") {
      query.base64 = true;
    } else if (f != "float") {
      return Bad("'encoding_format' must be \"float\" or \"base64\"");
    }
  }
  return query;
}

absl::StatusOr<InferenceRequest> MakeEmbedRequest(const EmbedQuery& query,
                                                  const ModelMetadata& metadata) {
  const bool embedding_signature =
      metadata.inputs.size() == 1 && metadata.inputs[0].dtype == DataType::kBytes &&
      !metadata.outputs.empty() && metadata.outputs[0].dtype == DataType::kFp32 &&
      metadata.outputs[0].shape.size() == 2;
  if (!embedding_signature) {
    return Bad(absl::StrCat("function '", metadata.name,
                            "' is not an embedding function (it needs one BYTES input and an FP32 "
                            "[-1, dim] output)"));
  }
  InferenceRequest request;
  request.model_name = metadata.name;
  Tensor text;
  text.name = metadata.inputs[0].name;
  text.dtype = DataType::kBytes;
  text.shape = {static_cast<int64_t>(query.texts.size())};
  for (const std::string& t : query.texts) text.bytes.push_back(t);
  request.inputs.push_back(std::move(text));
  request.outputs.push_back(RequestedOutput{.name = metadata.outputs[0].name});
  return request;
}

absl::StatusOr<std::string> EncodeEmbedResponse(const EmbedQuery& query,
                                                const InferenceResponse& response) {
  const Tensor* out = nullptr;
  for (const Tensor& t : response.outputs) {
    if (t.dtype == DataType::kFp32 && t.shape.size() == 2) out = &t;
  }
  const int64_t rows = static_cast<int64_t>(query.texts.size());
  if (out == nullptr || out->shape[0] != rows || out->shape[1] < 0 ||
      out->data.size() != static_cast<size_t>(rows * out->shape[1]) * sizeof(float)) {
    return absl::InternalError("the function did not return one FP32 embedding per text");
  }
  const size_t dim = static_cast<size_t>(out->shape[1]);
  auto row_values = [&](int64_t r, size_t i) {
    float v;
    std::memcpy(&v, out->data.data() + (static_cast<size_t>(r) * dim + i) * sizeof(float),
                sizeof(float));
    return v;
  };
  std::string body;
  body.reserve(out->data.size() * 3 + 256);
  if (query.api == EmbedApi::kTei) {
    body.push_back('[');
    for (int64_t r = 0; r < rows; ++r) {
      if (r > 0) body.push_back(',');
      body.push_back('[');
      for (size_t i = 0; i < dim; ++i) {
        if (i > 0) body.push_back(',');
        json_writer::AppendNumber(&body, row_values(r, i));
      }
      body.push_back(']');
    }
    body.push_back(']');
    return body;
  }
  body.append("{\"object\":\"list\",\"data\":[");
  for (int64_t r = 0; r < rows; ++r) {
    if (r > 0) body.push_back(',');
    absl::StrAppend(&body, "{\"object\":\"embedding\",\"index\":", r, ",\"embedding\":");
    if (query.base64) {
      // Little-endian float32, as OpenAI's base64 format is: the tensor's own bytes on every
      // platform ferry builds for.
      const std::string_view raw(out->data.data() + static_cast<size_t>(r) * dim * sizeof(float),
                                 dim * sizeof(float));
      json_writer::AppendString(&body,
                                absl::Base64Escape(absl::string_view(raw.data(), raw.size())));
    } else {
      body.push_back('[');
      for (size_t i = 0; i < dim; ++i) {
        if (i > 0) body.push_back(',');
        json_writer::AppendNumber(&body, row_values(r, i));
      }
      body.push_back(']');
    }
    body.push_back('}');
  }
  int64_t tokens = 0;
  if (auto it = response.parameters.find(std::string(kTokensParameter));
      it != response.parameters.end() && std::holds_alternative<int64_t>(it->second)) {
    tokens = std::get<int64_t>(it->second);
  }
  body.append("],\"model\":");
  json_writer::AppendString(&body, query.model);
  absl::StrAppend(&body, ",\"usage\":{\"prompt_tokens\":", tokens, ",\"total_tokens\":", tokens,
                  "}}");
  return body;
}

std::string EncodeEmbedError(EmbedApi api, int http_status, std::string_view message) {
  std::string body;
  if (api == EmbedApi::kTei) {
    // TEI's error types.
    const std::string_view type = http_status == 429  ? "Overloaded"
                                  : http_status < 500 ? "Validation"
                                                      : "Backend";
    body.append("{\"error\":");
    json_writer::AppendString(&body, message);
    body.append(",\"error_type\":");
    json_writer::AppendString(&body, type);
    body.push_back('}');
    return body;
  }
  const std::string_view type = http_status == 404   ? "invalid_request_error"
                                : http_status == 429 ? "rate_limit_exceeded"
                                : http_status < 500  ? "invalid_request_error"
                                                     : "server_error";
  const std::string_view code = http_status == 404 ? "\"model_not_found\"" : "null";
  body.append("{\"error\":{\"message\":");
  json_writer::AppendString(&body, message);
  body.append(",\"type\":");
  json_writer::AppendString(&body, type);
  absl::StrAppend(&body, ",\"param\":null,\"code\":", S(code), "}}");
  return body;
}

}  // namespace ferry::agent
