#include "ferry/config_reader.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ferry {
namespace {

using json = nlohmann::json;

constexpr size_t kMaxShownValueChars = 80;

// Range bounds are whole numbers in practice; "3600000" reads better than StrCat's "3.6e+06".
std::string FormatBound(double d) {
  if (std::fabs(d) < 1e15 && d == std::trunc(d)) return absl::StrCat(static_cast<int64_t>(d));
  return absl::StrCat(d);
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const bool same = std::tolower(static_cast<unsigned char>(a[i - 1])) ==
                        std::tolower(static_cast<unsigned char>(b[j - 1]));
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (same ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

absl::Status FieldErrors::Error(std::string_view path, std::string_view message) const {
  return absl::InvalidArgumentError(
      absl::StrCat(where_, ": ", path.empty() ? "" : absl::StrCat(std::string(path), ": "),
                   std::string(message)));
}

absl::Status FieldErrors::Got(std::string_view path, const json& value,
                              std::string_view expected) const {
  return Error(path, absl::StrCat("got ", ShowValue(value), ", expected ", std::string(expected)));
}

absl::Status FieldErrors::Missing(std::string_view path, std::string_view expected) const {
  return Error(path, absl::StrCat("missing, expected ", std::string(expected)));
}

std::string ShowValue(const json& value) {
  if (value.is_number_float()) {
    const double d = value.get<double>();
    if (std::isnan(d)) return ".nan";
    if (std::isinf(d)) return d > 0 ? ".inf" : "-.inf";
  }
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > kMaxShownValueChars) {
    text.resize(kMaxShownValueChars);
    text += "...";
  }
  return text;
}

std::string DescribeValue(const json& value) {
  std::string dumped = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (dumped.size() > 60) dumped = dumped.substr(0, 57) + "...";
  return absl::StrCat(value.type_name(), " ", dumped);
}

std::string JoinNames(const std::vector<std::string_view>& names) {
  std::vector<std::string> copy(names.begin(), names.end());
  return absl::StrJoin(copy, ", ");
}

absl::StatusOr<FieldReader> FieldReader::Open(const FieldErrors& errors, std::string path,
                                              const json& value,
                                              std::vector<std::string_view> allowed) {
  if (!value.is_object()) {
    return errors.Got(path, value, absl::StrCat("a mapping with fields ", JoinNames(allowed)));
  }
  for (const auto& [key, member] : value.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::string hint;
    for (std::string_view candidate : allowed) {
      if (EditDistance(key, candidate) <= 2) {
        hint = absl::StrCat(" (did you mean ", std::string(candidate), "?)");
        break;
      }
    }
    const std::string child = path.empty() ? key : absl::StrCat(path, ".", key);
    return errors.Error(
        child, absl::StrCat("unknown field", hint, ", expected one of ", JoinNames(allowed)));
  }
  return FieldReader(errors, std::move(path), value);
}

std::string FieldReader::Path(std::string_view key) const {
  return path_.empty() ? std::string(key) : absl::StrCat(path_, ".", std::string(key));
}

const json* FieldReader::Get(std::string_view key) const {
  auto it = value_->find(std::string(key));
  if (it == value_->end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status FieldReader::Missing(std::string_view key, std::string_view expected) const {
  const std::string path = Path(key);
  auto it = value_->find(std::string(key));
  if (it != value_->end()) return errors_.Got(path, *it, expected);
  return errors_.Missing(path, expected);
}

absl::Status FieldReader::Bad(std::string_view key, std::string_view expected) const {
  return errors_.Got(Path(key), *Get(key), expected);
}

absl::Status FieldReader::Int(std::string_view key, int64_t min, int64_t max, int64_t* out) const {
  const json* v = Get(key);
  if (v == nullptr) return absl::OkStatus();
  std::optional<int64_t> got;
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    // Out of range for any bound below.
  } else if (v->is_number_integer()) {
    got = v->get<int64_t>();
  } else if (v->is_number_float()) {
    // Accept 32.0 (or 1e3) where an integer is meant; JSON writers produce such values.
    const double d = v->get<double>();
    if (std::isfinite(d) && d == std::trunc(d) && std::fabs(d) < 9.0e18) {
      got = static_cast<int64_t>(d);
    }
  }
  if (!got.has_value() || *got < min || *got > max) {
    return Bad(key, absl::StrCat("an integer in [", min, ", ", max, "]"));
  }
  *out = *got;
  return absl::OkStatus();
}

absl::Status FieldReader::Number(std::string_view key, double min, bool min_open, double max,
                                 bool max_open, double* out) const {
  const json* v = Get(key);
  if (v == nullptr) return absl::OkStatus();
  const bool unbounded = std::isinf(max);
  std::string expected = "a number ";
  if (unbounded) {
    absl::StrAppend(&expected, min_open ? "> " : ">= ", FormatBound(min));
  } else {
    absl::StrAppend(&expected, "in ", min_open ? "(" : "[", FormatBound(min), ", ",
                    FormatBound(max), max_open ? ")" : "]");
  }
  if (!v->is_number()) return Bad(key, expected);
  const double d = v->get<double>();
  const bool ok = std::isfinite(d) && (min_open ? d > min : d >= min) &&
                  (unbounded || (max_open ? d < max : d <= max));
  if (!ok) return Bad(key, expected);
  *out = d;
  return absl::OkStatus();
}

absl::Status FieldReader::String(std::string_view key, std::string* out) const {
  const json* v = Get(key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_string()) return Bad(key, "a string");
  *out = v->get<std::string>();
  return absl::OkStatus();
}

absl::StatusOr<FieldReader> FieldReader::Child(std::string_view key,
                                               std::vector<std::string_view> allowed) const {
  return Open(errors_, Path(key), *Get(key), std::move(allowed));
}

std::string SpecLocation(const FunctionSpec& spec) {
  if (spec.source.empty()) return absl::StrCat("function '", spec.name, "'");
  if (spec.document > 0) return absl::StrCat(spec.source, " document ", spec.document);
  return spec.source;
}

namespace config {

std::string Where(const FunctionSpec& spec) { return absl::StrCat(SpecLocation(spec), ": "); }

absl::Status Error(const FunctionSpec& spec, std::string_view field, std::string_view message) {
  return FieldErrors(SpecLocation(spec)).Error(field, message);
}

std::string Field(std::string_view key) { return absl::StrCat("spec.config.", std::string(key)); }

std::string Describe(const json& value) { return DescribeValue(value); }

absl::Status CheckKeys(const FunctionSpec& spec, std::initializer_list<std::string_view> allowed) {
  if (spec.config.is_null()) return absl::OkStatus();
  if (!spec.config.is_object()) {
    return Error(spec, "spec.config",
                 absl::StrCat("expected an object, got ", Describe(spec.config)));
  }
  for (const auto& [key, value] : spec.config.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    const std::vector<std::string_view> names(allowed);
    return Error(spec, Field(key),
                 absl::StrCat("unknown key for runtime '", spec.runtime,
                              "'; expected one of: ", names.empty() ? "(none)" : JoinNames(names)));
  }
  return absl::OkStatus();
}

const json* Find(const FunctionSpec& spec, std::string_view key) {
  if (!spec.config.is_object()) return nullptr;
  auto it = spec.config.find(std::string(key));
  if (it == spec.config.end()) return nullptr;
  return &*it;
}

absl::StatusOr<std::string> GetString(const FunctionSpec& spec, std::string_view key,
                                      std::string default_value) {
  const json* v = Find(spec, key);
  if (v == nullptr) return default_value;
  if (!v->is_string()) {
    return Error(spec, Field(key), absl::StrCat("expected a string, got ", Describe(*v)));
  }
  return v->get<std::string>();
}

absl::StatusOr<std::string> GetName(const FunctionSpec& spec, std::string_view key,
                                    std::string_view default_value) {
  absl::StatusOr<std::string> name = GetString(spec, key, std::string(default_value));
  if (!name.ok()) return name.status();
  if (name->empty()) return Error(spec, Field(key), "expected a non-empty name");
  return name;
}

absl::StatusOr<int64_t> GetInt(const FunctionSpec& spec, std::string_view key,
                               int64_t default_value, int64_t min_value, int64_t max_value) {
  const json* v = Find(spec, key);
  if (v == nullptr) return default_value;
  if (!v->is_number_integer()) {
    return Error(spec, Field(key), absl::StrCat("expected an integer, got ", Describe(*v)));
  }
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(max_value)) {
    return Error(
        spec, Field(key),
        absl::StrCat("expected an integer in [", min_value, ", ", max_value, "], got ", v->dump()));
  }
  const int64_t n = v->get<int64_t>();
  if (n < min_value || n > max_value) {
    return Error(
        spec, Field(key),
        absl::StrCat("expected an integer in [", min_value, ", ", max_value, "], got ", n));
  }
  return n;
}

absl::StatusOr<std::optional<std::vector<std::string>>> GetStringList(const FunctionSpec& spec,
                                                                      std::string_view key) {
  const json* v = Find(spec, key);
  if (v == nullptr) return std::optional<std::vector<std::string>>();
  if (!v->is_array()) {
    return Error(spec, Field(key), absl::StrCat("expected a list of strings, got ", Describe(*v)));
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < v->size(); ++i) {
    const json& e = (*v)[i];
    if (!e.is_string()) {
      return Error(spec, absl::StrCat(Field(key), "[", i, "]"),
                   absl::StrCat("expected a string, got ", Describe(e)));
    }
    out.push_back(e.get<std::string>());
  }
  return std::optional<std::vector<std::string>>(std::move(out));
}

absl::StatusOr<std::vector<int64_t>> GetDims(const FunctionSpec& spec, std::string_view key,
                                             std::vector<int64_t> default_value) {
  const json* v = Find(spec, key);
  if (v == nullptr) return default_value;
  if (!v->is_array()) {
    return Error(spec, Field(key),
                 absl::StrCat("expected a list of dims (integers >= 1 or -1), got ", Describe(*v)));
  }
  if (v->size() > 16) {
    return Error(spec, Field(key), absl::StrCat("at most 16 dims, got ", v->size()));
  }
  std::vector<int64_t> out;
  for (size_t i = 0; i < v->size(); ++i) {
    const json& e = (*v)[i];
    if (!e.is_number_integer() || (e.get<int64_t>() < 1 && e.get<int64_t>() != -1) ||
        (e.is_number_unsigned() && e.get<uint64_t>() > (uint64_t{1} << 40))) {
      return Error(spec, absl::StrCat(Field(key), "[", i, "]"),
                   absl::StrCat("expected an integer >= 1 or -1, got ", Describe(e)));
    }
    out.push_back(e.get<int64_t>());
  }
  return out;
}

}  // namespace config
}  // namespace ferry
