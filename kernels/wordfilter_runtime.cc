#include "kernels/wordfilter_runtime.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ferry/config_reader.h"
#include "ferry/runtime_registry.h"

namespace ferry::kernels {
namespace {

constexpr size_t kMaxWordBytes = 256;

constexpr std::array<bool, 256> MakeWordTable() {
  std::array<bool, 256> table{};
  for (int c = 0; c < 256; ++c) {
    table[c] =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '\'';
  }
  return table;
}
constexpr std::array<bool, 256> kWordChar = MakeWordTable();

constexpr std::array<char, 256> MakeLowerTable() {
  std::array<char, 256> table{};
  for (int c = 0; c < 256; ++c) {
    table[c] = static_cast<char>((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
  }
  return table;
}
constexpr std::array<char, 256> kLower = MakeLowerTable();

inline bool IsWordChar(char c) { return kWordChar[static_cast<unsigned char>(c)]; }

// FNV-1a; the words are short, so a simple byte loop fused with lowercasing is fastest.
constexpr uint64_t kFnvOffset = 14695981039346656037ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;

inline uint64_t HashLower(const char* lower, size_t length) {
  uint64_t h = kFnvOffset;
  for (size_t i = 0; i < length; ++i) {
    h = (h ^ static_cast<unsigned char>(lower[i])) * kFnvPrime;
  }
  return h;
}

inline uint64_t Mix(uint64_t h) { return h ^ (h >> 29) ^ (h >> 41); }

inline uint64_t LengthBit(size_t length) { return uint64_t{1} << (length < 63 ? length : 63); }

// Empty when `word` is a word as the filter sees it; otherwise what is wrong with it.
std::string WordProblem(std::string_view word) {
  if (word.empty()) return "empty word";
  if (word.size() > kMaxWordBytes) {
    return absl::StrCat("longer than ", kMaxWordBytes, " bytes");
  }
  for (char c : word) {
    if (!IsWordChar(c)) {
      return "words may hold only ASCII letters, digits and inner apostrophes";
    }
  }
  if (word.front() == '\'' || word.back() == '\'') {
    return "a word may not start or end with an apostrophe";
  }
  return "";
}

std::string_view Trim(std::string_view s) {
  const char* kSpace = " \t\r\n\f\v";
  const size_t b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(kSpace);
  return s.substr(b, e - b + 1);
}

std::string ResolvePath(const FunctionSpec& spec, const std::string& path) {
  if (path.empty() || path.front() == '/' || spec.base_dir.empty()) return path;
  if (spec.base_dir.back() == '/') return spec.base_dir + path;
  return absl::StrCat(spec.base_dir, "/", path);
}

}  // namespace

absl::StatusOr<WordFilterRuntime::Options> WordFilterRuntime::ParseOptions(
    const FunctionSpec& spec) {
  if (absl::Status s = config::CheckKeys(spec, {"blacklist", "blacklistFile", "mask"}); !s.ok()) {
    return s;
  }
  Options options;
  absl::StatusOr<std::optional<std::vector<std::string>>> list =
      config::GetStringList(spec, "blacklist");
  if (!list.ok()) return list.status();
  if (list->has_value()) {
    for (size_t i = 0; i < (*list)->size(); ++i) {
      std::string word((**list)[i]);
      if (std::string problem = WordProblem(word); !problem.empty()) {
        return config::Error(spec, absl::StrCat(config::Field("blacklist"), "[", i, "]"),
                             absl::StrCat("'", word, "': ", problem));
      }
      options.blacklist.push_back(std::move(word));
    }
  }

  absl::StatusOr<std::string> file = config::GetString(spec, "blacklistFile", "");
  if (!file.ok()) return file.status();
  if (config::Find(spec, "blacklistFile") != nullptr) {
    if (file->empty()) {
      return config::Error(spec, config::Field("blacklistFile"), "expected a file path");
    }
    const std::string path = ResolvePath(spec, *file);
    std::ifstream in(path);
    if (!in) {
      return config::Error(spec, config::Field("blacklistFile"),
                           absl::StrCat("cannot read '", path, "': ", std::strerror(errno)));
    }
    std::string line;
    int line_number = 0;
    while (std::getline(in, line)) {
      ++line_number;
      std::string_view text = line;
      if (size_t hash = text.find('#'); hash != std::string_view::npos) {
        text = text.substr(0, hash);
      }
      text = Trim(text);
      if (text.empty()) continue;
      if (std::string problem = WordProblem(text); !problem.empty()) {
        return config::Error(spec, config::Field("blacklistFile"),
                             absl::StrCat(path, ":", line_number, ": '", std::string(text),
                                          "': ", problem, " (one word per line)"));
      }
      options.blacklist.emplace_back(text);
    }
    if (in.bad()) {
      return config::Error(spec, config::Field("blacklistFile"),
                           absl::StrCat("error reading '", path, "'"));
    }
  }

  absl::StatusOr<std::string> mask = config::GetString(spec, "mask", "*");
  if (!mask.ok()) return mask.status();
  if (mask->size() != 1 || (*mask)[0] < 0x20 || (*mask)[0] > 0x7e) {
    return config::Error(spec, config::Field("mask"),
                         absl::StrCat("expected one printable ASCII character, got '", *mask, "'"));
  }
  options.mask = (*mask)[0];

  if (options.blacklist.empty()) {
    return config::Error(spec, "spec.config",
                         "the wordfilter runtime needs at least one word in "
                         "spec.config.blacklist or spec.config.blacklistFile");
  }
  return options;
}

absl::StatusOr<std::unique_ptr<WordFilterRuntime>> WordFilterRuntime::Create(
    const Options& options) {
  if (options.blacklist.empty()) {
    return absl::InvalidArgumentError("wordfilter: the blacklist is empty");
  }
  if (options.mask < 0x20 || options.mask > 0x7e) {
    return absl::InvalidArgumentError("wordfilter: mask must be a printable ASCII character");
  }
  std::unique_ptr<WordFilterRuntime> rt(new WordFilterRuntime());
  rt->mask_ = options.mask;
  size_t capacity = 16;
  while (capacity < options.blacklist.size() * 2) capacity *= 2;
  rt->slots_.resize(capacity);
  rt->hashes_.resize(capacity);
  rt->slot_mask_ = capacity - 1;
  for (const std::string& raw : options.blacklist) {
    if (std::string problem = WordProblem(raw); !problem.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("wordfilter: blacklist word '", raw, "': ", problem));
    }
    std::string word(raw.size(), '\0');
    for (size_t i = 0; i < raw.size(); ++i) word[i] = kLower[static_cast<unsigned char>(raw[i])];
    const uint64_t hash = HashLower(word.data(), word.size());
    if (rt->Contains(word.data(), word.size(), hash)) continue;
    uint64_t idx = Mix(hash) & rt->slot_mask_;
    while (!rt->slots_[idx].empty()) idx = (idx + 1) & rt->slot_mask_;
    rt->max_length_ = std::max(rt->max_length_, word.size());
    rt->length_bits_ |= LengthBit(word.size());
    rt->slots_[idx] = std::move(word);
    rt->hashes_[idx] = hash;
    ++rt->size_;
  }

  rt->signature_.platform = "ferry_wordfilter";
  rt->signature_.batched = true;
  rt->signature_.inputs.push_back(TensorSpec{"text", DataType::kBytes, {-1}});
  rt->signature_.outputs.push_back(TensorSpec{"filtered", DataType::kBytes, {-1}});
  rt->signature_.outputs.push_back(TensorSpec{"count", DataType::kInt32, {-1}});
  return rt;
}

bool WordFilterRuntime::Contains(const char* lower, size_t length, uint64_t hash) const {
  uint64_t idx = Mix(hash) & slot_mask_;
  while (true) {
    const std::string& slot = slots_[idx];
    if (slot.empty()) return false;
    if (hashes_[idx] == hash && slot.size() == length &&
        std::memcmp(slot.data(), lower, length) == 0) {
      return true;
    }
    idx = (idx + 1) & slot_mask_;
  }
}

int32_t WordFilterRuntime::Filter(std::string_view document, std::string* filtered) const {
  filtered->assign(document.data(), document.size());
  char lower[kMaxWordBytes];
  int32_t count = 0;
  const char* doc = document.data();
  const size_t n = document.size();
  size_t i = 0;
  while (i < n) {
    if (!IsWordChar(doc[i])) {
      ++i;
      continue;
    }
    size_t start = i;
    while (i < n && IsWordChar(doc[i])) ++i;
    size_t end = i;
    while (start < end && doc[start] == '\'') ++start;
    while (end > start && doc[end - 1] == '\'') --end;
    const size_t length = end - start;
    if (length == 0 || length > max_length_ || (length_bits_ & LengthBit(length)) == 0) continue;
    for (size_t k = 0; k < length; ++k)
      lower[k] = kLower[static_cast<unsigned char>(doc[start + k])];
    if (Contains(lower, length, HashLower(lower, length))) {
      std::memset(filtered->data() + start, mask_, length);
      ++count;
    }
  }
  return count;
}

absl::Status WordFilterRuntime::Execute(absl::Span<RuntimeCall> batch) {
  for (RuntimeCall& call : batch) {
    const Tensor* text = nullptr;
    for (const Tensor& t : call.request->inputs) {
      if (t.name == "text") text = &t;
    }
    if (text == nullptr || text->dtype != DataType::kBytes) {
      call.status = absl::InvalidArgumentError("missing BYTES input 'text'");
      continue;
    }
    const int64_t rows = static_cast<int64_t>(text->bytes.size());
    Tensor filtered;
    filtered.name = "filtered";
    filtered.dtype = DataType::kBytes;
    filtered.shape = {rows};
    // Masking keeps lengths, so the output needs exactly the input's bytes.
    filtered.bytes.reserve(rows, text->bytes.total_bytes());
    Tensor count;
    count.name = "count";
    count.dtype = DataType::kInt32;
    count.shape = {rows};
    count.data.resize(rows * sizeof(int32_t));
    std::string scratch;
    for (int64_t r = 0; r < rows; ++r) {
      const int32_t c = Filter(text->bytes[r], &scratch);
      filtered.bytes.push_back(scratch);
      std::memcpy(count.data.data() + r * sizeof(int32_t), &c, sizeof(c));
    }
    call.response->outputs.push_back(std::move(filtered));
    call.response->outputs.push_back(std::move(count));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Runtime>> CreateWordFilterRuntime(
    const FunctionSpec& spec, const RuntimeContext& /*context*/) {
  absl::StatusOr<WordFilterRuntime::Options> options = WordFilterRuntime::ParseOptions(spec);
  if (!options.ok()) return options.status();
  absl::StatusOr<std::unique_ptr<WordFilterRuntime>> runtime = WordFilterRuntime::Create(*options);
  if (!runtime.ok()) return runtime.status();
  return std::unique_ptr<Runtime>(*std::move(runtime));
}

FERRY_REGISTER_RUNTIME("wordfilter", "masks blacklisted words in text documents",
                       &CreateWordFilterRuntime);

}  // namespace ferry::kernels
