// The one strict reader of manifest fields, shared by the manifest schema (ferry/manifest.h) and
// by runtimes reading their `spec.config`. Every error is InvalidArgument and has the form
//   "<file>[ document N]: <field path>: <message>"
// (or "function '<name>': ..." for a spec that did not come from a file), so users can find the
// line they got wrong. Pure functions and immutable values; thread-safe.
#ifndef FERRY_CONFIG_READER_H_
#define FERRY_CONFIG_READER_H_

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ferry/manifest.h"
#include "nlohmann/json.hpp"

namespace ferry {

// Where errors come from ("<file>", "<file> document N" or "function '<name>'") and how they
// are worded.
class FieldErrors {
 public:
  explicit FieldErrors(std::string where) : where_(std::move(where)) {}

  const std::string& where() const { return where_; }
  // "<where>: <path>: <message>"; "<where>: <message>" when path is empty.
  absl::Status Error(std::string_view path, std::string_view message) const;
  // "<where>: <path>: got <value>, expected <expected>".
  absl::Status Got(std::string_view path, const nlohmann::json& value,
                   std::string_view expected) const;
  // "<where>: <path>: missing, expected <expected>".
  absl::Status Missing(std::string_view path, std::string_view expected) const;

 private:
  std::string where_;
};

// A value as the user wrote it (YAML spelling for .inf/.nan), cut to 80 characters.
std::string ShowValue(const nlohmann::json& value);
// A value's JSON type and text ("string \"x\""), for "got ..." parts of config messages.
std::string DescribeValue(const nlohmann::json& value);
// "a, b, c".
std::string JoinNames(const std::vector<std::string_view>& names);

// A JSON object at a field path whose keys have been checked against an allow-list. Null members
// count as absent, as in Kubernetes. Refers to `value`, which must outlive the reader.
class FieldReader {
 public:
  // Fails unless `value` is an object holding only `allowed` keys (with a "did you mean"
  // hint for near misses).
  static absl::StatusOr<FieldReader> Open(const FieldErrors& errors, std::string path,
                                          const nlohmann::json& value,
                                          std::vector<std::string_view> allowed);

  const FieldErrors& errors() const { return errors_; }
  const std::string& path() const { return path_; }
  // The path of a member: "<path>.<key>".
  std::string Path(std::string_view key) const;
  // nullptr when absent or null.
  const nlohmann::json* Get(std::string_view key) const;
  bool Has(std::string_view key) const { return Get(key) != nullptr; }

  // "missing, expected ..." (or "got null, ..." when present but null).
  absl::Status Missing(std::string_view key, std::string_view expected) const;
  // "got <value>, expected ..."; the key must be present.
  absl::Status Bad(std::string_view key, std::string_view expected) const;

  // Each reader leaves *out unchanged when the key is absent.
  absl::Status Int(std::string_view key, int64_t min, int64_t max, int64_t* out) const;
  // Range [min, max] with either end optionally open; max = +inf for no upper bound.
  absl::Status Number(std::string_view key, double min, bool min_open, double max, bool max_open,
                      double* out) const;
  absl::Status String(std::string_view key, std::string* out) const;
  template <typename T>
  absl::Status Enum(std::string_view key, const std::vector<std::pair<std::string_view, T>>& table,
                    T* out) const {
    const nlohmann::json* v = Get(key);
    if (v == nullptr) return absl::OkStatus();
    std::vector<std::string_view> names;
    for (const auto& [name, value] : table) {
      if (v->is_string() && v->template get<std::string>() == name) {
        *out = value;
        return absl::OkStatus();
      }
      names.push_back(name);
    }
    return Bad(key, "one of " + JoinNames(names));
  }
  // The member `key` (which must be present) opened with its own allow-list.
  absl::StatusOr<FieldReader> Child(std::string_view key,
                                    std::vector<std::string_view> allowed) const;

 private:
  FieldReader(FieldErrors errors, std::string path, const nlohmann::json& value)
      : errors_(std::move(errors)), path_(std::move(path)), value_(&value) {}

  FieldErrors errors_;
  std::string path_;
  const nlohmann::json* value_;
};

// "<file>", "<file> document N" or "function '<name>'": where `spec` was defined.
std::string SpecLocation(const FunctionSpec& spec);

// Readers of a runtime's `spec.config` (an object, or null for "all defaults"), worded
// "<location>: spec.config.<key>: expected ..., got ...".
namespace config {

// "<SpecLocation(spec)>: ".
std::string Where(const FunctionSpec& spec);
// InvalidArgument "<location>: <field>: <message>".
absl::Status Error(const FunctionSpec& spec, std::string_view field, std::string_view message);
// "spec.config.<key>".
std::string Field(std::string_view key);
// Same as DescribeValue.
std::string Describe(const nlohmann::json& value);

// spec.config must be an object (null counts as empty) holding only `allowed` keys.
absl::Status CheckKeys(const FunctionSpec& spec, std::initializer_list<std::string_view> allowed);
// nullptr when the key is absent (or config is null).
const nlohmann::json* Find(const FunctionSpec& spec, std::string_view key);
absl::StatusOr<std::string> GetString(const FunctionSpec& spec, std::string_view key,
                                      std::string default_value);
// A tensor name (inputName, outputName, ...): a string that must not be empty.
absl::StatusOr<std::string> GetName(const FunctionSpec& spec, std::string_view key,
                                    std::string_view default_value);
// An integer in [min_value, max_value].
absl::StatusOr<int64_t> GetInt(const FunctionSpec& spec, std::string_view key,
                               int64_t default_value, int64_t min_value, int64_t max_value);
// A list of strings; nullopt when absent.
absl::StatusOr<std::optional<std::vector<std::string>>> GetStringList(const FunctionSpec& spec,
                                                                      std::string_view key);
// Per-row tensor dims: a list of at most 16 integers, each >= 1 or -1 (variable).
absl::StatusOr<std::vector<int64_t>> GetDims(const FunctionSpec& spec, std::string_view key,
                                             std::vector<int64_t> default_value);

}  // namespace config
}  // namespace ferry

#endif  // FERRY_CONFIG_READER_H_
