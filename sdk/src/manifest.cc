#include "ferry/manifest.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace ferry {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

#define FERRY_MANIFEST_RETURN_IF_ERROR(expr) \
  do {                                       \
    absl::Status _st = (expr);               \
    if (!_st.ok()) return _st;               \
  } while (0)

#define FERRY_MANIFEST_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                         \
  if (!tmp.ok()) return tmp.status();                        \
  lhs = std::move(*tmp)
#define FERRY_MANIFEST_CONCAT_INNER(a, b) a##b
#define FERRY_MANIFEST_CONCAT(a, b) FERRY_MANIFEST_CONCAT_INNER(a, b)
#define FERRY_MANIFEST_ASSIGN_OR_RETURN(lhs, expr) \
  FERRY_MANIFEST_ASSIGN_OR_RETURN_IMPL(FERRY_MANIFEST_CONCAT(_status_or_, __LINE__), lhs, expr)

constexpr int kMaxDepth = 64;
// Aliases let a small YAML text expand into a huge tree ("billion laughs"); manifests are small.
constexpr int64_t kMaxNodes = 1'000'000;
// The node cap alone still lets an 800-byte text alias one long scalar a million times (a
// gigabyte); the text of scalars and keys, aliases expanded, is capped too.
constexpr int64_t kMaxExpandedBytes = 16 << 20;
constexpr int64_t kMaxDocuments = 1000;
constexpr size_t kMaxShownValueChars = 80;

const std::vector<std::string_view> kRuntimes = {"echo", "wordfilter", "mlp", "sentence-embedding",
                                                 "plugin"};

// ---------------------------------------------------------------------------------------------
// YAML -> JSON

bool IsDigits(std::string_view s, bool hex = false) {
  if (s.empty()) return false;
  for (char c : s) {
    const bool ok =
        hex ? std::isxdigit(static_cast<unsigned char>(c)) != 0 : (c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// YAML 1.2 core schema float: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
bool LooksLikeFloat(std::string_view s) {
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  size_t int_digits = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++int_digits;
  size_t frac_digits = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++frac_digits;
  }
  if (int_digits == 0 && frac_digits == 0) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    size_t exp_digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++exp_digits;
    if (exp_digits == 0) return false;
  }
  return i == s.size();
}

// Resolves a plain (unquoted) scalar per the YAML 1.2 core schema.
json ResolvePlainScalar(const std::string& s) {
  if (s == "~" || s == "null" || s == "Null" || s == "NULL" || s.empty()) return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;

  std::string_view v = s;
  bool negative = false;
  std::string_view unsigned_part = v;
  if (!v.empty() && (v[0] == '+' || v[0] == '-')) {
    negative = v[0] == '-';
    unsigned_part = v.substr(1);
  }
  int base = 10;
  std::string_view digits = unsigned_part;
  if (unsigned_part.size() > 2 && unsigned_part[0] == '0' &&
      (unsigned_part[1] == 'x' || unsigned_part[1] == 'o')) {
    base = unsigned_part[1] == 'x' ? 16 : 8;
    digits = unsigned_part.substr(2);
  }
  if (IsDigits(digits, base == 16) &&
      (base != 8 || digits.find_first_of("89") == std::string_view::npos)) {
    uint64_t magnitude = 0;
    auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), magnitude, base);
    if (ec == std::errc() && ptr == digits.data() + digits.size()) {
      constexpr uint64_t kMaxPositive = std::numeric_limits<int64_t>::max();
      if (!negative && magnitude <= kMaxPositive) return static_cast<int64_t>(magnitude);
      if (negative && magnitude <= kMaxPositive + 1) {
        return magnitude == kMaxPositive + 1 ? std::numeric_limits<int64_t>::min()
                                             : -static_cast<int64_t>(magnitude);
      }
    }
    // Too large for int64: keep it numeric so range checks report it as a number.
    if (base == 10) return std::strtod(s.c_str(), nullptr);
    return s;
  }
  if (LooksLikeFloat(v)) return std::strtod(s.c_str(), nullptr);
  if (unsigned_part == ".inf" || unsigned_part == ".Inf" || unsigned_part == ".INF") {
    return negative ? -std::numeric_limits<double>::infinity()
                    : std::numeric_limits<double>::infinity();
  }
  if (v == ".nan" || v == ".NaN" || v == ".NAN") return std::numeric_limits<double>::quiet_NaN();
  return s;
}

std::string MarkText(const YAML::Mark& mark) {
  if (mark.is_null()) return "";
  return absl::StrCat("line ", mark.line + 1, ", column ", mark.column + 1);
}

// Sees a YAML text's events and keeps none of them; used to count documents.
class IgnoreEvents final : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

class YamlConverter {
 public:
  explicit YamlConverter(std::string prefix) : prefix_(std::move(prefix)) {}

  absl::StatusOr<json> Convert(const YAML::Node& node, const std::string& path, int depth) {
    if (++nodes_ > kMaxNodes) {
      return Error(node, path, absl::StrCat("document has more than ", kMaxNodes, " nodes"));
    }
    if (depth > kMaxDepth) {
      return Error(node, path, absl::StrCat("nesting deeper than ", kMaxDepth, " levels"));
    }
    switch (node.Type()) {
      case YAML::NodeType::Undefined:
      case YAML::NodeType::Null:
        return json(nullptr);
      case YAML::NodeType::Scalar:
        if (absl::Status s = CountBytes(node, path, node.Scalar().size()); !s.ok()) return s;
        return ConvertScalar(node, path);
      case YAML::NodeType::Sequence: {
        json out = json::array();
        size_t i = 0;
        for (const auto& item : node) {
          FERRY_MANIFEST_ASSIGN_OR_RETURN(
              json value, Convert(item, absl::StrCat(path, "[", i, "]"), depth + 1));
          out.push_back(std::move(value));
          ++i;
        }
        return out;
      }
      case YAML::NodeType::Map: {
        json out = json::object();
        for (const auto& kv : node) {
          if (!kv.first.IsScalar()) {
            return Error(kv.first, path, "mapping keys must be plain strings");
          }
          const std::string key = kv.first.Scalar();
          if (absl::Status s = CountBytes(kv.first, path, key.size()); !s.ok()) return s;
          const std::string child = path.empty() ? key : absl::StrCat(path, ".", key);
          if (out.contains(key)) return Error(kv.first, child, "duplicate key");
          FERRY_MANIFEST_ASSIGN_OR_RETURN(json value, Convert(kv.second, child, depth + 1));
          out[key] = std::move(value);
        }
        return out;
      }
    }
    return json(nullptr);
  }

 private:
  absl::StatusOr<json> ConvertScalar(const YAML::Node& node, const std::string& path) {
    const std::string& tag = node.Tag();
    const std::string& text = node.Scalar();
    // "!" marks a quoted or block scalar, which YAML never resolves to anything but a string.
    if (tag == "!" || tag == "tag:yaml.org,2002:str") return json(text);
    json value = ResolvePlainScalar(text);
    if (tag == "?" || tag.empty()) return value;
    const bool want_int = tag == "tag:yaml.org,2002:int";
    const bool want_float = tag == "tag:yaml.org,2002:float";
    const bool want_bool = tag == "tag:yaml.org,2002:bool";
    const bool want_null = tag == "tag:yaml.org,2002:null";
    if (want_int && value.is_number_integer()) return value;
    if (want_float && value.is_number()) return json(value.get<double>());
    if (want_bool && value.is_boolean()) return value;
    if (want_null && value.is_null()) return value;
    if (want_int || want_float || want_bool || want_null) {
      return Error(node, path, absl::StrCat("scalar \"", text, "\" does not match its tag ", tag));
    }
    return Error(node, path, absl::StrCat("unsupported tag ", tag));
  }

  absl::Status CountBytes(const YAML::Node& node, const std::string& path, size_t n) {
    bytes_ += static_cast<int64_t>(n);
    if (bytes_ <= kMaxExpandedBytes) return absl::OkStatus();
    return Error(node, path,
                 absl::StrCat("document holds more than ", kMaxExpandedBytes,
                              " bytes of keys and scalars (with aliases expanded)"));
  }

  absl::Status Error(const YAML::Node& node, const std::string& path, std::string_view what) {
    std::string where = MarkText(node.Mark());
    return absl::InvalidArgumentError(
        absl::StrCat(prefix_, ": ", path.empty() ? "" : absl::StrCat(path, ": "), std::string(what),
                     where.empty() ? "" : absl::StrCat(" (", where, ")")));
  }

  std::string prefix_;
  int64_t nodes_ = 0;
  int64_t bytes_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Validation

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

// Range bounds are whole numbers in practice; "3600000" reads better than StrCat's "3.6e+06".
std::string FormatBound(double d) {
  if (std::fabs(d) < 1e15 && d == std::trunc(d)) return absl::StrCat(static_cast<int64_t>(d));
  return absl::StrCat(d);
}

std::string Join(const std::vector<std::string_view>& items) {
  std::vector<std::string> copy(items.begin(), items.end());
  return absl::StrJoin(copy, ", ");
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

// Where errors come from: "file" or "file document N", plus an optional suffix such as
// "(referenced from ...)".
struct ErrorContext {
  std::string prefix;

  absl::Status Got(const std::string& path, const json& value, std::string_view expected) const {
    return absl::InvalidArgumentError(absl::StrCat(prefix, ": ", path.empty() ? "" : path + ": ",
                                                   "got ", ShowValue(value), ", expected ",
                                                   std::string(expected)));
  }
  absl::Status Missing(const std::string& path, std::string_view expected) const {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, ": ", path, ": missing, expected ", std::string(expected)));
  }
};

// A JSON object at a field path whose keys have been checked against an allow-list. Null
// members count as absent, as in Kubernetes.
class Fields {
 public:
  static absl::StatusOr<Fields> Open(const ErrorContext& ctx, std::string path, const json& value,
                                     std::vector<std::string_view> allowed) {
    if (!value.is_object()) {
      return ctx.Got(path, value, absl::StrCat("a mapping with fields ", Join(allowed)));
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
      return absl::InvalidArgumentError(absl::StrCat(ctx.prefix, ": ", child, ": unknown field",
                                                     hint, ", expected one of ", Join(allowed)));
    }
    return Fields(ctx, std::move(path), value);
  }

  const ErrorContext& ctx() const { return ctx_; }
  const std::string& path() const { return path_; }
  std::string Path(std::string_view key) const {
    return path_.empty() ? std::string(key) : absl::StrCat(path_, ".", std::string(key));
  }
  // nullptr when absent or null.
  const json* Get(std::string_view key) const {
    auto it = value_.find(std::string(key));
    if (it == value_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool Has(std::string_view key) const { return Get(key) != nullptr; }

  absl::Status Missing(std::string_view key, std::string_view expected) const {
    const std::string path = Path(key);
    auto it = value_.find(std::string(key));
    if (it != value_.end()) return ctx_.Got(path, *it, expected);
    return ctx_.Missing(path, expected);
  }
  absl::Status Bad(std::string_view key, std::string_view expected) const {
    return ctx_.Got(Path(key), *Get(key), expected);
  }

  absl::Status Int(std::string_view key, int64_t min, int64_t max, int64_t* out) const {
    const json* v = Get(key);
    if (v == nullptr) return absl::OkStatus();
    std::optional<int64_t> got;
    if (v->is_number_integer()) {
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

  // Range [min, max] with either end optionally open; max = +inf for no upper bound.
  absl::Status Number(std::string_view key, double min, bool min_open, double max, bool max_open,
                      double* out) const {
    const json* v = Get(key);
    if (v == nullptr) return absl::OkStatus();
    const bool unbounded = std::isinf(max);
    std::string expected = absl::StrCat("a number ");
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

  absl::Status String(std::string_view key, std::string* out) const {
    const json* v = Get(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) return Bad(key, "a string");
    *out = v->get<std::string>();
    return absl::OkStatus();
  }

  template <typename T>
  absl::Status Enum(std::string_view key, const std::vector<std::pair<std::string_view, T>>& table,
                    T* out) const {
    const json* v = Get(key);
    if (v == nullptr) return absl::OkStatus();
    std::vector<std::string_view> names;
    for (const auto& [name, value] : table) {
      if (v->is_string() && v->get<std::string>() == name) {
        *out = value;
        return absl::OkStatus();
      }
      names.push_back(name);
    }
    return Bad(key, absl::StrCat("one of ", Join(names)));
  }

  absl::StatusOr<Fields> Child(std::string_view key, std::vector<std::string_view> allowed) const {
    return Open(ctx_, Path(key), *Get(key), std::move(allowed));
  }

 private:
  Fields(const ErrorContext& ctx, std::string path, const json& value)
      : ctx_(ctx), path_(std::move(path)), value_(value) {}

  const ErrorContext& ctx_;
  std::string path_;
  const json& value_;
};

const std::vector<std::pair<std::string_view, Accelerator>> kAccelerators = {
    {"cpu", Accelerator::kCpu}, {"gpu", Accelerator::kGpu}, {"any", Accelerator::kAny}};
const std::vector<std::pair<std::string_view, BatchPolicy>> kPolicies = {
    {"aimd", BatchPolicy::kAimd}, {"fixed", BatchPolicy::kFixed}, {"off", BatchPolicy::kOff}};
const std::vector<std::pair<std::string_view, OverloadAction>> kOverloadActions = {
    {"reject", OverloadAction::kReject}, {"default-output", OverloadAction::kDefaultOutput}};

constexpr std::string_view kNameExpected =
    "a name of 1 to 63 characters from [a-z0-9._-], starting and ending with [a-z0-9]";

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 63) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  for (char c : name) {
    if (!alnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return alnum(name.front()) && alnum(name.back());
}

struct Metadata {
  std::string name;
  std::map<std::string, std::string> labels;
};

absl::StatusOr<Metadata> ParseMetadata(const Fields& doc) {
  if (!doc.Has("metadata")) return doc.Missing("metadata", "a mapping with fields name, labels");
  FERRY_MANIFEST_ASSIGN_OR_RETURN(Fields meta, doc.Child("metadata", {"name", "labels"}));
  Metadata out;
  if (!meta.Has("name")) return meta.Missing("name", kNameExpected);
  const json& name = *meta.Get("name");
  if (!name.is_string() || !ValidName(name.get<std::string>())) {
    return meta.Bad("name", kNameExpected);
  }
  out.name = name.get<std::string>();
  if (const json* labels = meta.Get("labels")) {
    if (!labels->is_object()) return meta.Bad("labels", "a mapping of string keys to strings");
    for (const auto& [key, value] : labels->items()) {
      const std::string path = absl::StrCat(meta.Path("labels"), ".", key);
      if (key.empty() || key.size() > 253) {
        return meta.ctx().Got(meta.Path("labels"), *labels, "label keys of 1 to 253 characters");
      }
      if (!value.is_string()) {
        return meta.ctx().Got(path, value, "a string (quote numbers and booleans)");
      }
      out.labels[key] = value.get<std::string>();
    }
  }
  return out;
}

absl::Status CheckHeader(const Fields& doc, std::string_view want_kind, std::string* kind) {
  const std::string api_expected = std::string(kApiVersion);
  if (!doc.Has("apiVersion")) return doc.Missing("apiVersion", api_expected);
  const json& api = *doc.Get("apiVersion");
  if (!api.is_string() || api.get<std::string>() != kApiVersion) {
    return doc.Bad("apiVersion", api_expected);
  }
  const std::string kind_expected =
      want_kind.empty() ? std::string("one of Function, SLO") : std::string(want_kind);
  if (!doc.Has("kind")) return doc.Missing("kind", kind_expected);
  const json& k = *doc.Get("kind");
  const bool ok = k.is_string() && (want_kind.empty() ? (k == "Function" || k == "SLO")
                                                      : k.get<std::string>() == want_kind);
  if (!ok) return doc.Bad("kind", kind_expected);
  *kind = k.get<std::string>();
  return absl::OkStatus();
}

const std::vector<std::string_view> kSloFields = {"latency", "throughput", "maxCostPerMillion",
                                                  "onOverload", "defaultOutput"};

// The SLO fields, shared by kind: SLO documents (at "spec") and inline Function SLOs (at
// "spec.slo"). `fields` has already been checked against the allowed keys.
absl::Status ParseSloFields(const Fields& f, SloSpec* slo) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  if (f.Has("latency")) {
    FERRY_MANIFEST_ASSIGN_OR_RETURN(Fields lat, f.Child("latency", {"percentile", "targetMillis"}));
    FERRY_MANIFEST_RETURN_IF_ERROR(
        lat.Number("percentile", 0, true, 100, false, &slo->latency_percentile));
    // A latency block without a target is almost certainly a mistake, not "no latency SLO".
    if (!lat.Has("targetMillis")) {
      return lat.Missing("targetMillis", "a number in (0, 3600000]");
    }
    FERRY_MANIFEST_RETURN_IF_ERROR(
        lat.Number("targetMillis", 0, true, 3'600'000, false, &slo->latency_target_ms));
  }
  if (f.Has("throughput")) {
    FERRY_MANIFEST_ASSIGN_OR_RETURN(Fields tp, f.Child("throughput", {"minRps"}));
    FERRY_MANIFEST_RETURN_IF_ERROR(tp.Number("minRps", 0, false, kInf, false, &slo->min_rps));
  }
  if (f.Has("maxCostPerMillion")) {
    double cost = 0;
    FERRY_MANIFEST_RETURN_IF_ERROR(f.Number("maxCostPerMillion", 0, false, kInf, false, &cost));
    slo->max_cost_per_million = cost;
  }
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Enum("onOverload", kOverloadActions, &slo->on_overload));
  if (slo->on_overload == OverloadAction::kDefaultOutput) {
    if (!f.Has("defaultOutput")) {
      return f.Missing("defaultOutput",
                       "a value to answer with (required when onOverload is "
                       "default-output)");
    }
    slo->default_output = *f.Get("defaultOutput");
  } else if (f.Has("defaultOutput")) {
    return f.Bad("defaultOutput", "no defaultOutput unless onOverload is default-output");
  }
  return absl::OkStatus();
}

std::vector<std::string_view> SloFieldList(std::initializer_list<std::string_view> extra = {}) {
  std::vector<std::string_view> out(extra);
  out.insert(out.end(), kSloFields.begin(), kSloFields.end());
  return out;
}

std::string ResolvePath(std::string_view base_dir, const std::string& path) {
  if (base_dir.empty()) return path;
  return (fs::path(std::string(base_dir)) / path).string();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  if (fs::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a folder, expected a file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot be read"));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return text.str();
}

struct Document {
  json value;
  std::string prefix;  // "file" or "file document N"
};

absl::StatusOr<std::vector<Document>> LoadDocuments(std::string_view text,
                                                    const std::string& source) {
  std::vector<YAML::Node> nodes;
  try {
    // yaml-cpp 0.7 reads a "," outside any flow collection as an endless series of empty
    // documents without consuming it, so YAML::LoadAll never returns and its vector of documents
    // grows until memory runs out. Count the documents first, with a cap.
    std::istringstream stream{std::string(text)};
    YAML::Parser parser(stream);
    IgnoreEvents ignore;
    for (int64_t documents = 0; parser.HandleNextDocument(ignore);) {
      if (++documents > kMaxDocuments) {
        return absl::InvalidArgumentError(absl::StrCat(
            source, ": invalid YAML: more than ", kMaxDocuments,
            " documents (a stray ',' outside [...] or {...} reads as endless empty documents)"));
      }
    }
    nodes = YAML::LoadAll(std::string(text));
  } catch (const YAML::Exception& e) {
    const std::string where = MarkText(e.mark);
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", where.empty() ? "" : where + ": ", "invalid YAML: ", e.msg));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": invalid YAML: ", e.what()));
  }
  std::vector<Document> docs;
  for (size_t i = 0; i < nodes.size(); ++i) {
    std::string prefix =
        nodes.size() > 1 ? absl::StrCat(source, " document ", i + 1) : std::string(source);
    YamlConverter converter(prefix);
    absl::StatusOr<json> value;
    try {
      value = converter.Convert(nodes[i], "", 0);
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(prefix, ": invalid YAML: ", e.what()));
    }
    if (!value.ok()) return value.status();
    if (value->is_null()) continue;  // empty document, e.g. after a trailing "---"
    docs.push_back({std::move(*value), std::move(prefix)});
  }
  return docs;
}

absl::StatusOr<SloSpec> ParseSloDocument(const Document& doc, const std::string& source) {
  ErrorContext ctx{doc.prefix};
  FERRY_MANIFEST_ASSIGN_OR_RETURN(
      Fields top, Fields::Open(ctx, "", doc.value, {"apiVersion", "kind", "metadata", "spec"}));
  std::string kind;
  FERRY_MANIFEST_RETURN_IF_ERROR(CheckHeader(top, "SLO", &kind));
  FERRY_MANIFEST_ASSIGN_OR_RETURN(Metadata meta, ParseMetadata(top));
  SloSpec slo;
  slo.name = meta.name;
  slo.source = source;
  if (!top.Has("spec")) return top.Missing("spec", "a mapping with fields " + Join(SloFieldList()));
  FERRY_MANIFEST_ASSIGN_OR_RETURN(Fields spec, top.Child("spec", SloFieldList()));
  FERRY_MANIFEST_RETURN_IF_ERROR(ParseSloFields(spec, &slo));
  return slo;
}

absl::Status ParseHardware(const Fields& spec, HardwareSpec* hw) {
  if (!spec.Has("hardware")) return absl::OkStatus();
  FERRY_MANIFEST_ASSIGN_OR_RETURN(
      Fields f, spec.Child("hardware", {"accelerator", "gpuMemoryMiB", "minComputeCapability",
                                        "cpuCores", "memoryMiB"}));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Enum("accelerator", kAccelerators, &hw->accelerator));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("gpuMemoryMiB", 0, 1 << 24, &hw->gpu_memory_mib));
  if (hw->accelerator == Accelerator::kCpu && hw->gpu_memory_mib > 0) {
    return f.Bad("gpuMemoryMiB", "0 when accelerator is cpu (set accelerator: gpu or any)");
  }
  if (const json* cc = f.Get("minComputeCapability")) {
    constexpr std::string_view kCcExpected = "a compute capability \"X.Y\" such as \"8.0\"";
    // An unquoted 8.6 arrives as a number; its shortest form is the text the user wrote.
    std::string text = cc->is_string()         ? cc->get<std::string>()
                       : cc->is_number_float() ? cc->dump()
                                               : std::string();
    const size_t dot = text.find('.');
    if (dot == std::string::npos || !IsDigits(std::string_view(text).substr(0, dot)) ||
        !IsDigits(std::string_view(text).substr(dot + 1))) {
      return f.Bad("minComputeCapability", kCcExpected);
    }
    if (hw->accelerator == Accelerator::kCpu) {
      return f.Bad("minComputeCapability", "no minComputeCapability when accelerator is cpu");
    }
    hw->min_compute_capability = text;
  }
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Number("cpuCores", 0, true, 1024, false, &hw->cpu_cores));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("memoryMiB", 1, 1 << 24, &hw->memory_mib));
  return absl::OkStatus();
}

absl::Status ParseBatching(const Fields& spec, BatchingSpec* b) {
  if (!spec.Has("batching")) return absl::OkStatus();
  FERRY_MANIFEST_ASSIGN_OR_RETURN(
      Fields f, spec.Child("batching", {"maxBatchSize", "maxQueueDelayMicros", "policy",
                                        "maxQueueSize", "maxQueueBytes", "timeoutMicros", "instances",
                                        "aimd"}));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("maxBatchSize", 1, 65536, &b->max_batch_size));
  FERRY_MANIFEST_RETURN_IF_ERROR(
      f.Int("maxQueueDelayMicros", 0, 10'000'000, &b->max_queue_delay_us));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Enum("policy", kPolicies, &b->policy));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("maxQueueSize", 1, 1'000'000, &b->max_queue_size));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("maxQueueBytes", 1, int64_t{1} << 40, &b->max_queue_bytes));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("timeoutMicros", 0, 3'600'000'000LL, &b->timeout_us));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("instances", 1, 64, &b->instances));
  if (f.Has("aimd")) {
    FERRY_MANIFEST_ASSIGN_OR_RETURN(
        Fields a, f.Child("aimd", {"additiveIncrease", "holdBand", "multiplicativeDecrease"}));
    FERRY_MANIFEST_RETURN_IF_ERROR(a.Int("additiveIncrease", 1, 65536, &b->aimd.additive_increase));
    FERRY_MANIFEST_RETURN_IF_ERROR(a.Number("holdBand", 0, false, 1, true, &b->aimd.hold_band));
    FERRY_MANIFEST_RETURN_IF_ERROR(
        a.Number("multiplicativeDecrease", 0, true, 1, true, &b->aimd.multiplicative_decrease));
  }
  return absl::OkStatus();
}

absl::Status ParseScaling(const Fields& spec, ScalingSpec* s) {
  if (!spec.Has("scaling")) return absl::OkStatus();
  FERRY_MANIFEST_ASSIGN_OR_RETURN(
      Fields f, spec.Child("scaling", {"minReplicas", "maxReplicas", "idleSeconds"}));
  constexpr int64_t kMaxReplicas = 10'000;
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("minReplicas", 0, kMaxReplicas, &s->min_replicas));
  // Unless given, maxReplicas follows minReplicas up so that "minReplicas: 3" alone is valid.
  s->max_replicas = std::max<int64_t>(s->max_replicas, s->min_replicas);
  FERRY_MANIFEST_RETURN_IF_ERROR(
      f.Int("maxReplicas", std::max<int64_t>(1, s->min_replicas), kMaxReplicas, &s->max_replicas));
  FERRY_MANIFEST_RETURN_IF_ERROR(f.Int("idleSeconds", 0, 31'536'000, &s->idle_seconds));
  return absl::OkStatus();
}

absl::Status ParseModel(const Fields& spec, std::string_view base_dir, FunctionSpec* fn) {
  if (!spec.Has("model")) return absl::OkStatus();
  FERRY_MANIFEST_ASSIGN_OR_RETURN(Fields f, spec.Child("model", {"uri"}));
  constexpr std::string_view kUriExpected =
      "a file:// URI such as \"file://models/name\" (relative to the manifest's folder) or "
      "\"file:///abs/path\"";
  if (!f.Has("uri")) return f.Missing("uri", kUriExpected);
  const json& uri = *f.Get("uri");
  if (!uri.is_string()) return f.Bad("uri", kUriExpected);
  const std::string text = uri.get<std::string>();
  constexpr std::string_view kScheme = "file://";
  if (text.rfind(kScheme, 0) != 0) {
    const size_t colon = text.find("://");
    if (colon != std::string::npos) {
      return f.Bad("uri", absl::StrCat(std::string(kUriExpected), "; scheme \"",
                                       text.substr(0, colon), "\" is not supported"));
    }
    return f.Bad("uri", kUriExpected);
  }
  const std::string rel = text.substr(kScheme.size());
  if (rel.empty()) return f.Bad("uri", kUriExpected);
  std::error_code ec;
  fs::path resolved = fs::absolute(fs::path(ResolvePath(base_dir, rel)), ec);
  if (ec) return f.Bad("uri", absl::StrCat(std::string(kUriExpected), " (", ec.message(), ")"));
  fn->model_uri = text;
  fn->model_path = resolved.lexically_normal().string();
  return absl::OkStatus();
}

absl::Status ParseSlo(const Fields& spec, std::string_view base_dir, SloSpec* slo) {
  if (!spec.Has("slo")) return absl::OkStatus();
  FERRY_MANIFEST_ASSIGN_OR_RETURN(Fields f, spec.Child("slo", SloFieldList({"file"})));
  if (!f.Has("file")) return ParseSloFields(f, slo);
  for (std::string_view other : kSloFields) {
    if (f.Has(other)) {
      return f.Bad(other, "either spec.slo.file or inline SLO fields, not both");
    }
  }
  const json& file = *f.Get("file");
  if (!file.is_string() || file.get<std::string>().empty()) {
    return f.Bad("file", "a path to a kind: SLO file");
  }
  const std::string path = ResolvePath(base_dir, file.get<std::string>());
  absl::StatusOr<SloSpec> loaded = LoadSloFile(path);
  if (absl::IsNotFound(loaded.status())) {
    return f.Bad("file", absl::StrCat("an existing kind: SLO file (", path, " does not exist)"));
  }
  if (!loaded.ok()) {
    return absl::Status(loaded.status().code(),
                        absl::StrCat(std::string(loaded.status().message()), " (referenced from ",
                                     f.ctx().prefix, ": ", f.Path("file"), ")"));
  }
  *slo = std::move(*loaded);
  return absl::OkStatus();
}

absl::StatusOr<FunctionSpec> ParseFunctionDocument(const Fields& top, std::string_view source,
                                                   std::string_view base_dir) {
  FunctionSpec fn;
  fn.source = std::string(source);
  fn.base_dir = std::string(base_dir);
  FERRY_MANIFEST_ASSIGN_OR_RETURN(Metadata meta, ParseMetadata(top));
  fn.name = std::move(meta.name);
  fn.labels = std::move(meta.labels);

  const std::vector<std::string_view> spec_fields = {"runtime", "model", "hardware", "batching",
                                                     "scaling", "slo",   "config"};
  if (!top.Has("spec")) return top.Missing("spec", "a mapping with fields " + Join(spec_fields));
  FERRY_MANIFEST_ASSIGN_OR_RETURN(Fields spec, top.Child("spec", spec_fields));

  const std::string runtime_expected = absl::StrCat("one of ", Join(kRuntimes));
  if (!spec.Has("runtime")) return spec.Missing("runtime", runtime_expected);
  const json& runtime = *spec.Get("runtime");
  if (!runtime.is_string() || std::find(kRuntimes.begin(), kRuntimes.end(),
                                        runtime.get<std::string>()) == kRuntimes.end()) {
    return spec.Bad("runtime", runtime_expected);
  }
  fn.runtime = runtime.get<std::string>();

  FERRY_MANIFEST_RETURN_IF_ERROR(ParseModel(spec, base_dir, &fn));
  FERRY_MANIFEST_RETURN_IF_ERROR(ParseHardware(spec, &fn.hardware));
  FERRY_MANIFEST_RETURN_IF_ERROR(ParseBatching(spec, &fn.batching));
  FERRY_MANIFEST_RETURN_IF_ERROR(ParseScaling(spec, &fn.scaling));
  FERRY_MANIFEST_RETURN_IF_ERROR(ParseSlo(spec, base_dir, &fn.slo));
  if (const json* config = spec.Get("config")) {
    if (!config->is_object()) return spec.Bad("config", "a mapping of runtime settings");
    fn.config = *config;
  }
  return fn;
}

// A parsed Function and where it was defined, for duplicate-name messages.
struct LocatedFunction {
  FunctionSpec spec;
  std::string where;
};

absl::Status AddUnique(std::vector<LocatedFunction>& all, std::vector<LocatedFunction> more) {
  for (auto& fn : more) {
    for (const auto& seen : all) {
      if (seen.spec.name == fn.spec.name) {
        return absl::InvalidArgumentError(absl::StrCat(
            fn.where, ": metadata.name: got ", ShowValue(json(fn.spec.name)),
            ", expected a Function name not already used (", seen.where, " defines it too)"));
      }
    }
    all.push_back(std::move(fn));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<LocatedFunction>> ParseLocated(std::string_view text,
                                                          std::string_view source_name,
                                                          std::string_view base_dir) {
  const std::string source(source_name);
  FERRY_MANIFEST_ASSIGN_OR_RETURN(std::vector<Document> docs, LoadDocuments(text, source));
  std::vector<LocatedFunction> out;
  for (const Document& doc : docs) {
    ErrorContext ctx{doc.prefix};
    FERRY_MANIFEST_ASSIGN_OR_RETURN(
        Fields top, Fields::Open(ctx, "", doc.value, {"apiVersion", "kind", "metadata", "spec"}));
    std::string kind;
    FERRY_MANIFEST_RETURN_IF_ERROR(CheckHeader(top, "", &kind));
    if (kind == "SLO") {
      // Validated now so that a broken SLO file fails the load, used only when referenced.
      FERRY_MANIFEST_RETURN_IF_ERROR(ParseSloDocument(doc, source).status());
      continue;
    }
    FERRY_MANIFEST_ASSIGN_OR_RETURN(FunctionSpec fn,
                                    ParseFunctionDocument(top, source_name, base_dir));
    std::vector<LocatedFunction> one;
    one.push_back({std::move(fn), doc.prefix});
    FERRY_MANIFEST_RETURN_IF_ERROR(AddUnique(out, std::move(one)));
  }
  return out;
}

std::string ParentDir(const std::string& path) {
  std::string parent = fs::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

bool IsManifestFile(const fs::path& path) {
  const std::string ext = path.extension().string();
  const std::string name = path.filename().string();
  return !name.empty() && name[0] != '.' && (ext == ".yaml" || ext == ".yml" || ext == ".json");
}

}  // namespace

std::string_view AcceleratorName(Accelerator a) {
  switch (a) {
    case Accelerator::kCpu:
      return "cpu";
    case Accelerator::kGpu:
      return "gpu";
    case Accelerator::kAny:
      return "any";
  }
  return "cpu";
}

std::string_view BatchPolicyName(BatchPolicy p) {
  switch (p) {
    case BatchPolicy::kAimd:
      return "aimd";
    case BatchPolicy::kFixed:
      return "fixed";
    case BatchPolicy::kOff:
      return "off";
  }
  return "aimd";
}

std::string_view OverloadActionName(OverloadAction a) {
  switch (a) {
    case OverloadAction::kReject:
      return "reject";
    case OverloadAction::kDefaultOutput:
      return "default-output";
  }
  return "reject";
}

absl::StatusOr<std::vector<FunctionSpec>> ParseManifests(std::string_view text,
                                                         std::string_view source_name,
                                                         std::string_view base_dir) {
  FERRY_MANIFEST_ASSIGN_OR_RETURN(std::vector<LocatedFunction> located,
                                  ParseLocated(text, source_name, base_dir));
  std::vector<FunctionSpec> out;
  out.reserve(located.size());
  for (auto& fn : located) out.push_back(std::move(fn.spec));
  return out;
}

absl::StatusOr<std::vector<FunctionSpec>> LoadManifests(const std::string& file_or_dir) {
  std::error_code ec;
  const fs::file_status status = fs::status(file_or_dir, ec);
  if (ec || !fs::exists(status)) {
    return absl::NotFoundError(absl::StrCat(file_or_dir, ": no such file or folder"));
  }
  std::vector<std::string> files;
  if (fs::is_directory(status)) {
    for (const auto& entry : fs::directory_iterator(file_or_dir, ec)) {
      if (entry.is_regular_file(ec) && IsManifestFile(entry.path())) {
        files.push_back((fs::path(file_or_dir) / entry.path().filename()).string());
      }
    }
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrCat(file_or_dir, ": cannot list folder: ", ec.message()));
    }
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(file_or_dir);
  }

  std::vector<LocatedFunction> all;
  for (const std::string& file : files) {
    FERRY_MANIFEST_ASSIGN_OR_RETURN(std::string text, ReadFile(file));
    FERRY_MANIFEST_ASSIGN_OR_RETURN(std::vector<LocatedFunction> fns,
                                    ParseLocated(text, file, ParentDir(file)));
    FERRY_MANIFEST_RETURN_IF_ERROR(AddUnique(all, std::move(fns)));
  }
  if (all.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no kind: Function documents in ", file_or_dir,
                     fs::is_directory(status) ? " (looked at *.yaml, *.yml and *.json)" : ""));
  }
  std::vector<FunctionSpec> out;
  out.reserve(all.size());
  for (auto& fn : all) out.push_back(std::move(fn.spec));
  return out;
}

absl::StatusOr<SloSpec> LoadSloFile(const std::string& path) {
  FERRY_MANIFEST_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  FERRY_MANIFEST_ASSIGN_OR_RETURN(std::vector<Document> docs, LoadDocuments(text, path));
  if (docs.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": got ", docs.size(), " documents, expected exactly one kind: SLO document"));
  }
  return ParseSloDocument(docs[0], path);
}

}  // namespace ferry
