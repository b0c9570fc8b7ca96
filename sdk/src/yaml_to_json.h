// YAML (or JSON) text to JSON values, one per document, under the YAML 1.2 core schema and with
// limits on depth, node count, expanded size and document count so that hostile manifests cannot
// exhaust the process. Internal to the SDK's manifest parser.
#ifndef FERRY_SDK_SRC_YAML_TO_JSON_H_
#define FERRY_SDK_SRC_YAML_TO_JSON_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace ferry::internal {

struct YamlDocument {
  nlohmann::json value;
  std::string prefix;  // "<source>", or "<source> document N" when the text holds several
  int index = 0;       // N (1-based) when the text holds several documents, else 0
};

// Every non-empty document of `text`. Errors are InvalidArgument "<prefix>: [<path>: ]<what>
// [(line L, column C)]". Empty documents (e.g. after a trailing "---") are skipped but still
// count for N.
absl::StatusOr<std::vector<YamlDocument>> ParseYamlDocuments(std::string_view text,
                                                             const std::string& source);

}  // namespace ferry::internal

#endif  // FERRY_SDK_SRC_YAML_TO_JSON_H_
