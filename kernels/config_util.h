// Strict readers for a runtime's `spec.config` object. Every error is InvalidArgument and names
// the manifest file and the field path ("<file>: spec.config.<key>: ..."), so users can find
// the line they got wrong. Header-only; used by the built-in runtimes.
#ifndef FERRY_KERNELS_CONFIG_UTIL_H_
#define FERRY_KERNELS_CONFIG_UTIL_H_

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ferry/manifest.h"
#include "nlohmann/json.hpp"

namespace ferry::kernels::config {

// "<file>: " or, for specs that did not come from a file, "function '<name>': ".
inline std::string Where(const FunctionSpec& spec) {
  if (!spec.source.empty()) return absl::StrCat(spec.source, ": ");
  return absl::StrCat("function '", spec.name, "': ");
}

inline absl::Status Error(const FunctionSpec& spec, std::string_view field,
                          std::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat(Where(spec), std::string(field), ": ", std::string(message)));
}

inline std::string Field(std::string_view key) {
  return absl::StrCat("spec.config.", std::string(key));
}

// The value's JSON type in words, for "got ..." parts of messages.
inline std::string Describe(const nlohmann::json& value) {
  std::string dumped = value.dump();
  if (dumped.size() > 60) dumped = dumped.substr(0, 57) + "...";
  return absl::StrCat(value.type_name(), " ", dumped);
}

// spec.config must be an object (null counts as empty) holding only `allowed` keys.
inline absl::Status CheckKeys(const FunctionSpec& spec,
                              std::initializer_list<std::string_view> allowed) {
  if (spec.config.is_null()) return absl::OkStatus();
  if (!spec.config.is_object()) {
    return Error(spec, "spec.config",
                 absl::StrCat("expected an object, got ", Describe(spec.config)));
  }
  for (const auto& [key, value] : spec.config.items()) {
    bool known = false;
    for (std::string_view a : allowed) known = known || a == key;
    if (!known) {
      std::vector<std::string> names;
      for (std::string_view a : allowed) names.emplace_back(a);
      return Error(spec, Field(key),
                   absl::StrCat("unknown key for runtime '", spec.runtime, "'; expected one of: ",
                                names.empty() ? "(none)" : absl::StrJoin(names, ", ")));
    }
  }
  return absl::OkStatus();
}

// nullptr when the key is absent (or config is null).
inline const nlohmann::json* Find(const FunctionSpec& spec, std::string_view key) {
  if (!spec.config.is_object()) return nullptr;
  auto it = spec.config.find(std::string(key));
  if (it == spec.config.end()) return nullptr;
  return &*it;
}

inline absl::StatusOr<std::string> GetString(const FunctionSpec& spec, std::string_view key,
                                             std::string default_value) {
  const nlohmann::json* v = Find(spec, key);
  if (v == nullptr) return default_value;
  if (!v->is_string()) {
    return Error(spec, Field(key), absl::StrCat("expected a string, got ", Describe(*v)));
  }
  return v->get<std::string>();
}

// An integer in [min_value, max_value].
// A tensor name (inputName, outputName, ...): a string that must not be empty.
inline absl::StatusOr<std::string> GetName(const FunctionSpec& spec, std::string_view key,
                                           std::string_view default_value) {
  absl::StatusOr<std::string> name = GetString(spec, key, std::string(default_value));
  if (!name.ok()) return name.status();
  if (name->empty()) return Error(spec, Field(key), "expected a non-empty name");
  return name;
}

inline absl::StatusOr<int64_t> GetInt(const FunctionSpec& spec, std::string_view key,
                                      int64_t default_value, int64_t min_value, int64_t max_value) {
  const nlohmann::json* v = Find(spec, key);
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

// A list of strings; nullopt when absent.
inline absl::StatusOr<std::optional<std::vector<std::string>>> GetStringList(
    const FunctionSpec& spec, std::string_view key) {
  const nlohmann::json* v = Find(spec, key);
  if (v == nullptr) return std::optional<std::vector<std::string>>();
  if (!v->is_array()) {
    return Error(spec, Field(key), absl::StrCat("expected a list of strings, got ", Describe(*v)));
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < v->size(); ++i) {
    const nlohmann::json& e = (*v)[i];
    if (!e.is_string()) {
      return Error(spec, absl::StrCat(Field(key), "[", i, "]"),
                   absl::StrCat("expected a string, got ", Describe(e)));
    }
    out.push_back(e.get<std::string>());
  }
  return std::optional<std::vector<std::string>>(std::move(out));
}

// Per-row tensor dims: a list of integers, each >= 1 or -1 (variable).
inline absl::StatusOr<std::vector<int64_t>> GetDims(const FunctionSpec& spec, std::string_view key,
                                                    std::vector<int64_t> default_value) {
  const nlohmann::json* v = Find(spec, key);
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
    const nlohmann::json& e = (*v)[i];
    if (!e.is_number_integer() || (e.get<int64_t>() < 1 && e.get<int64_t>() != -1) ||
        (e.is_number_unsigned() && e.get<uint64_t>() > (uint64_t{1} << 40))) {
      return Error(spec, absl::StrCat(Field(key), "[", i, "]"),
                   absl::StrCat("expected an integer >= 1 or -1, got ", Describe(e)));
    }
    out.push_back(e.get<int64_t>());
  }
  return out;
}

}  // namespace ferry::kernels::config

#endif  // FERRY_KERNELS_CONFIG_UTIL_H_
