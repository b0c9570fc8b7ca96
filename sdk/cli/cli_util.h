// Helpers of the `ferry` CLI that have no I/O of their own beyond reading manifest folders:
// aligned tables, JSON to YAML, the files an apply sends, address parsing.
#ifndef FERRY_SDK_CLI_CLI_UTIL_H_
#define FERRY_SDK_CLI_CLI_UTIL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace ferry::cli {

// Columns padded to their widest cell, separated by three spaces, no trailing blanks; the first
// row is the header. Rows shorter than the header are padded with empty cells.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);

// Block-style YAML of a JSON value (what `-o yaml` prints). Strings that YAML would read as
// something else are quoted.
std::string ToYaml(const nlohmann::json& value);

struct ManifestSource {
  std::string path;  // absolute
  std::string content;
};

// What `ferry apply -f PATH` sends. A folder: every *.yaml, *.yml and *.json directly inside
// it, sorted. A file: that file, plus the files next to it that hold only SLO documents (a
// Function's spec.slo.file must travel in the same request). NotFound / InvalidArgument when
// PATH is missing or a folder holds no manifest.
absl::StatusOr<std::vector<ManifestSource>> CollectManifests(const std::string& path);

// "host:port" -> {host, port}; InvalidArgument otherwise. Brackets around IPv6 hosts are
// removed.
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address);

// "http://host:port[/...]" or "host:port" -> {host, port}; the path part is ignored.
absl::StatusOr<std::pair<std::string, int>> ParseHttpUrl(const std::string& url);

}  // namespace ferry::cli

#endif  // FERRY_SDK_CLI_CLI_UTIL_H_
