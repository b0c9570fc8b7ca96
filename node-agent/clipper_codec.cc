#include "node-agent/clipper_codec.h"

#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "node-agent/json_reader.h"
#include "node-agent/json_writer.h"
#include "simdjson.h"

namespace ferry::agent {
namespace {

using json_reader::AppendScalar;
using json_reader::Find;
using json_reader::Invalid;
using json_reader::JsonDocument;
using json_reader::TypeName;
using json_writer::AppendNested;
using json_writer::AppendNumber;
using json_writer::AppendString;
using json_writer::AvailableElements;
namespace dom = simdjson::dom;

// Shape of a Clipper query value, from the first element at each nesting level.
void InferShape(dom::element j, std::vector<int64_t>* dims) {
  dom::array items;
  while (!j.get(items)) {
    dims->push_back(static_cast<int64_t>(items.size()));
    if (items.begin() == items.end()) break;
    j = *items.begin();
  }
}

// Appends the elements of a query whose shape is `dims`, rejecting ragged arrays.
absl::Status AppendRow(dom::element j, const int64_t* dims, size_t rank, Tensor* t, int64_t* count,
                       std::string_view what) {
  dom::array items;
  const bool is_array = !j.get(items);
  if (rank == 0) {
    if (is_array) return Invalid(what, "is a ragged array (rows of different lengths)");
    if (absl::Status s = AppendScalar(j, t, *count); !s.ok()) return s;
    ++*count;
    return absl::OkStatus();
  }
  if (!is_array || static_cast<int64_t>(items.size()) != dims[0]) {
    return Invalid(what, "is a ragged array (rows of different lengths)");
  }
  for (dom::element e : items) {
    if (absl::Status s = AppendRow(e, dims + 1, rank - 1, t, count, what); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ClipperQuery> ParseClipperPredict(std::string_view body,
                                                 const ModelMetadata& metadata,
                                                 size_t readable_past_end) {
  if (metadata.inputs.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("predict needs a model with exactly one input; '", metadata.name, "' has ",
                     metadata.inputs.size()));
  }
  const TensorSpec& spec = metadata.inputs[0];
  JsonDocument document;
  auto parsed = document.Parse(body, readable_past_end);
  if (!parsed.ok()) return parsed.status();
  dom::object root;
  if (parsed->get(root)) {
    return absl::InvalidArgumentError(absl::StrCat("the request body must be a JSON object, got ",
                                                   std::string(TypeName(*parsed))));
  }
  const std::optional<dom::element> single = Find(root, "input");
  const std::optional<dom::element> batch = Find(root, "input_batch");
  if (single.has_value() == batch.has_value()) {
    return absl::InvalidArgumentError("the body needs exactly one of 'input' or 'input_batch'");
  }

  ClipperQuery query;
  query.batched = metadata.batched;
  query.is_batch = batch.has_value();
  std::vector<dom::element> rows;
  if (query.is_batch) {
    if (!metadata.batched) {
      return absl::InvalidArgumentError(absl::StrCat("'input_batch' needs a batched model; '",
                                                     metadata.name, "' takes one 'input'"));
    }
    dom::array queries;
    if (batch->get(queries) || queries.begin() == queries.end()) {
      return absl::InvalidArgumentError("'input_batch' must be a non-empty array of queries");
    }
    for (dom::element q : queries) rows.push_back(q);
  } else {
    rows.push_back(*single);
  }
  query.rows = static_cast<int64_t>(rows.size());

  // The part of the model's input shape that one query gives.
  std::vector<int64_t> row_spec = spec.shape;
  if (metadata.batched && !row_spec.empty()) row_spec.erase(row_spec.begin());

  Tensor t;
  t.name = spec.name;
  t.dtype = spec.dtype;
  std::vector<int64_t> row_dims;
  int64_t count = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    const std::string what = query.is_batch ? absl::StrCat("input_batch[", r, "]") : "input";
    std::vector<int64_t> dims;
    InferShape(rows[r], &dims);
    bool fits = dims.size() == row_spec.size();
    for (size_t d = 0; fits && d < dims.size(); ++d) {
      fits = row_spec[d] < 0 || row_spec[d] == dims[d];
    }
    if (!fits) {
      return Invalid(what,
                     absl::StrCat("has shape ", ShapeToString(dims), " but input '", spec.name,
                                  "' takes ", ShapeToString(row_spec), " per query"));
    }
    if (r == 0) {
      row_dims = dims;
      // Check the whole input the queries would make (rows against maxBatchSize, size overflow)
      // before reserving for it; the first row's shape is only a claim about the others.
      std::vector<int64_t> full = row_dims;
      if (metadata.batched) full.insert(full.begin(), query.rows);
      auto declared = CheckDeclaredInput(metadata.inputs, metadata.batched, metadata.max_batch_size,
                                         t.name, t.dtype, full);
      if (!declared.ok()) return declared.status();
      const int64_t n = declared->element_count;
      // Each element takes at least a byte of JSON text; a ragged batch fails in AppendRow.
      if (static_cast<uint64_t>(n) > body.size()) {
        return Invalid(
            what, absl::StrCat("the queries would need ", n, " elements but the body has only ",
                               body.size(), " bytes (a ragged batch?)"));
      }
      if (t.dtype == DataType::kBytes) {
        t.bytes.reserve(n, 0);
      } else {
        t.data.reserve(n * DataTypeSizeBytes(t.dtype));
      }
    } else if (dims != row_dims) {
      return Invalid(what,
                     absl::StrCat("has shape ", ShapeToString(dims), " but the first query has ",
                                  ShapeToString(row_dims), "; a batch needs equal shapes"));
    }
    if (absl::Status s = AppendRow(rows[r], dims.data(), dims.size(), &t, &count, what); !s.ok()) {
      return s;
    }
  }
  if (metadata.batched) {
    t.shape.push_back(query.rows);
  }
  t.shape.insert(t.shape.end(), row_dims.begin(), row_dims.end());
  query.request.model_name = metadata.name;
  query.request.inputs.push_back(std::move(t));
  return query;
}

std::string EncodeClipperResponse(const InferenceResponse& response, const ClipperQuery& query,
                                  int64_t first_query_id) {
  std::string out;
  out.reserve(64 + query.rows * 32);

  std::string default_value;
  if (response.is_default) {
    auto it = response.parameters.find("default_output");
    const std::string* text =
        it == response.parameters.end() ? nullptr : std::get_if<std::string>(&it->second);
    if (text == nullptr) {
      default_value = "null";
    } else if (JsonDocument().Parse(*text, 0).ok()) {
      default_value = *text;
    } else {
      AppendString(&default_value, *text);  // not JSON: send it as a string
    }
  }

  auto append_row = [&](int64_t row) {
    if (response.is_default) {
      out.append(default_value);
      return;
    }
    auto append_tensor_row = [&](const Tensor& t) {
      const int64_t available = AvailableElements(t);
      // Split along the leading dim only when it really holds one row per query.
      if (query.batched && !t.shape.empty() && t.shape[0] == query.rows) {
        const int64_t per_row = query.rows > 0 ? ElementCount(t.shape) / query.rows : 0;
        int64_t index = row * per_row;
        AppendNested(&out, t, t.shape.data() + 1, t.shape.size() - 1, &index, available);
      } else {
        int64_t index = 0;
        AppendNested(&out, t, t.shape.data(), t.shape.size(), &index, available);
      }
    };
    if (response.outputs.size() == 1) {
      append_tensor_row(response.outputs[0]);
      return;
    }
    out.push_back('{');
    for (size_t i = 0; i < response.outputs.size(); ++i) {
      if (i > 0) out.push_back(',');
      AppendString(&out, response.outputs[i].name);
      out.push_back(':');
      append_tensor_row(response.outputs[i]);
    }
    out.push_back('}');
  };
  auto append_prediction = [&](int64_t row) {
    out.append("{\"query_id\":");
    AppendNumber(&out, first_query_id + row);
    out.append(",\"output\":");
    append_row(row);
    out.append(response.is_default ? ",\"default\":true}" : ",\"default\":false}");
  };

  if (!query.is_batch) {
    append_prediction(0);
    return out;
  }
  out.append("{\"batch_predictions\":[");
  for (int64_t r = 0; r < query.rows; ++r) {
    if (r > 0) out.push_back(',');
    append_prediction(r);
  }
  out.append("]}");
  return out;
}

}  // namespace ferry::agent
