#include "sdk/cli/cli_util.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "yaml-cpp/yaml.h"

namespace ferry::cli {

namespace fs = std::filesystem;

std::string FormatTable(const std::vector<std::vector<std::string>>& rows) {
  if (rows.empty()) return "";
  size_t columns = 0;
  for (const auto& r : rows) columns = std::max(columns, r.size());
  std::vector<size_t> width(columns, 0);
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < columns; ++i) {
      const std::string cell = i < r.size() ? r[i] : "";
      line += cell;
      if (i + 1 < columns) line += std::string(width[i] - cell.size() + 3, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  }
  return out;
}

namespace {

bool NeedsQuotes(const std::string& s) {
  if (s.empty()) return true;
  static const char* kWords[] = {"true", "false", "yes", "no", "on", "off", "null", "~"};
  const std::string lower = absl::AsciiStrToLower(s);
  for (const char* w : kWords) {
    if (lower == w) return true;
  }
  double d;
  if (absl::SimpleAtod(s, &d)) return true;
  if (s.front() == ' ' || s.back() == ' ') return true;
  static const std::string kLead = "-?:,[]{}#&*!|>'\"%@`";
  if (kLead.find(s.front()) != std::string::npos) return true;
  return absl::StrContains(s, ": ") || absl::StrContains(s, " #") || absl::StrContains(s, "\n");
}

std::string Scalar(const nlohmann::json& v) {
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    return NeedsQuotes(s) ? nlohmann::json(s).dump() : s;
  }
  if (v.is_null()) return "null";
  return v.dump();
}

void Emit(const nlohmann::json& v, int indent, std::string& out) {
  const std::string pad(indent, ' ');
  if (v.is_object()) {
    if (v.empty()) {
      out += pad + "{}\n";
      return;
    }
    for (const auto& [k, child] : v.items()) {
      const std::string key = NeedsQuotes(k) ? nlohmann::json(k).dump() : k;
      if ((child.is_object() || child.is_array()) && !child.empty()) {
        out += pad + key + ":\n";
        Emit(child, child.is_array() ? indent : indent + 2, out);
      } else if (child.is_object()) {
        out += pad + key + ": {}\n";
      } else if (child.is_array()) {
        out += pad + key + ": []\n";
      } else {
        out += pad + key + ": " + Scalar(child) + "\n";
      }
    }
  } else if (v.is_array()) {
    if (v.empty()) {
      out += pad + "[]\n";
      return;
    }
    for (const auto& child : v) {
      if ((child.is_object() || child.is_array()) && !child.empty()) {
        std::string nested;
        Emit(child, indent + 2, nested);
        // "- " replaces the first line's indentation.
        out += pad + "- " + nested.substr(indent + 2);
      } else {
        out += pad + "- " +
               (child.is_object()  ? "{}"
                : child.is_array() ? "[]"
                                   : Scalar(child)) +
               "\n";
      }
    }
  } else {
    out += pad + Scalar(v) + "\n";
  }
}

bool IsManifestName(const fs::path& p) {
  const std::string ext = p.extension().string();
  return ext == ".yaml" || ext == ".yml" || ext == ".json";
}

absl::StatusOr<std::string> ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", p.string()));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// True when every document of the text is an SLO (unparseable text: false, the server will say
// what is wrong if it matters).
bool OnlySloDocuments(const std::string& text) {
  try {
    const auto docs = YAML::LoadAll(text);
    if (docs.empty()) return false;
    for (const auto& d : docs) {
      if (!d.IsMap() || !d["kind"] || d["kind"].as<std::string>("") != "SLO") return false;
    }
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace

std::string ToYaml(const nlohmann::json& value) {
  std::string out;
  Emit(value, 0, out);
  return out;
}

absl::StatusOr<std::vector<ManifestSource>> CollectManifests(const std::string& path) {
  std::error_code ec;
  const fs::path p = fs::absolute(path, ec).lexically_normal();
  if (ec || !fs::exists(p, ec))
    return absl::NotFoundError(absl::StrCat(path, ": no such file or folder"));
  std::vector<ManifestSource> out;
  if (fs::is_directory(p, ec)) {
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(p, ec)) {
      if (entry.is_regular_file() && IsManifestName(entry.path())) files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": no *.yaml, *.yml or *.json manifest in this folder"));
    }
    for (const auto& f : files) {
      auto text = ReadFile(f);
      if (!text.ok()) return text.status();
      out.push_back({f.string(), std::move(*text)});
    }
    return out;
  }
  auto text = ReadFile(p);
  if (!text.ok()) return text.status();
  out.push_back({p.string(), std::move(*text)});
  // SLO files next to it, so that spec.slo.file resolves.
  std::vector<fs::path> siblings;
  for (const auto& entry : fs::directory_iterator(p.parent_path(), ec)) {
    if (entry.is_regular_file() && IsManifestName(entry.path()) && entry.path() != p) {
      siblings.push_back(entry.path());
    }
  }
  std::sort(siblings.begin(), siblings.end());
  for (const auto& f : siblings) {
    auto sibling = ReadFile(f);
    if (sibling.ok() && OnlySloDocuments(*sibling))
      out.push_back({f.string(), std::move(*sibling)});
  }
  return out;
}

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("expected HOST:PORT, got '", address, "'"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return std::make_pair(host, port);
}

absl::StatusOr<std::pair<std::string, int>> ParseHttpUrl(const std::string& url) {
  std::string rest = url;
  if (absl::StartsWith(rest, "http://")) rest = rest.substr(7);
  if (absl::StartsWith(rest, "https://")) {
    return absl::InvalidArgumentError("https gateways are not supported yet; use http://");
  }
  if (const size_t slash = rest.find('/'); slash != std::string::npos) rest = rest.substr(0, slash);
  if (rest.find(':') == std::string::npos) rest += ":80";
  return SplitHostPort(rest);
}

}  // namespace ferry::cli
