#include "yaml_to_json.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "status_macros.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace ferry::internal {
namespace {

using json = nlohmann::json;

constexpr int kMaxDepth = 64;
// Aliases let a small YAML text expand into a huge tree ("billion laughs"); manifests are small.
constexpr int64_t kMaxNodes = 1'000'000;
// The node cap alone still lets an 800-byte text alias one long scalar a million times (a
// gigabyte); the text of scalars and keys, aliases expanded, is capped too.
constexpr int64_t kMaxExpandedBytes = 16 << 20;
constexpr int64_t kMaxDocuments = 1000;

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

}  // namespace

absl::StatusOr<std::vector<YamlDocument>> ParseYamlDocuments(std::string_view text,
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
  std::vector<YamlDocument> docs;
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
    const int index = nodes.size() > 1 ? static_cast<int>(i) + 1 : 0;
    docs.push_back({std::move(*value), std::move(prefix), index});
  }
  return docs;
}

}  // namespace ferry::internal
