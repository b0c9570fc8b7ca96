// text-normalize: a CPU function. Each element of the BYTES input `text` becomes one element of
// the BYTES output `normalized`: surrounding whitespace removed, inner runs of whitespace
// collapsed to one space, and (unless config says "lowercase": false) ASCII letters lowercased.
// An element longer than config "maxBytes" (default 65536) fails its request only.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/function.hpp"
#include "nlohmann/json.hpp"

namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

class TextNormalize {
 public:
  explicit TextNormalize(std::string_view config_json) {
    const nlohmann::json config = nlohmann::json::parse(config_json);
    if (!config.is_object()) throw std::invalid_argument("config: expected an object");
    for (const auto& [key, value] : config.items()) {
      if (key == "lowercase" && value.is_boolean()) {
        lowercase_ = value.get<bool>();
      } else if (key == "maxBytes" && value.is_number_unsigned() && value.get<uint64_t>() > 0) {
        max_bytes_ = value.get<uint64_t>();
      } else {
        throw std::invalid_argument("config." + key +
                                    ": unknown key or bad value; expected lowercase (a boolean) "
                                    "or maxBytes (an integer >= 1)");
      }
    }
  }

  void Execute(ferry::function::Batch& batch) {
    const std::vector<std::string_view> texts = batch.input(0).strings();
    std::vector<std::string> out;
    out.reserve(texts.size());
    // Rows are elements here (shape [-1]): item i owns item_rows(i) consecutive elements.
    size_t at = 0;
    for (uint32_t item = 0; item < batch.num_items(); ++item) {
      for (int64_t r = 0; r < batch.item_rows(item); ++r, ++at) {
        if (texts[at].size() > max_bytes_) {
          batch.FailItem(item, "text of " + std::to_string(texts[at].size()) +
                                   " bytes is longer than maxBytes (" + std::to_string(max_bytes_) +
                                   ")");
          out.emplace_back();
        } else {
          out.push_back(Normalize(texts[at]));
        }
      }
    }
    batch.SetStrings(0, {batch.rows()}, out);
  }

 private:
  std::string Normalize(std::string_view text) const {
    std::string s;
    s.reserve(text.size());
    bool pending_space = false;
    for (char c : text) {
      if (IsSpace(c)) {
        pending_space = !s.empty();
        continue;
      }
      if (pending_space) s.push_back(' ');
      pending_space = false;
      s.push_back(lowercase_ && c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
    }
    return s;
  }

  bool lowercase_ = true;
  uint64_t max_bytes_ = 65536;
};

}  // namespace

FERRY_DEFINE_FUNCTION(TextNormalize, "text-normalize", FERRY_DEVICE_CPU, {{"text", "BYTES", {-1}}},
                      {{"normalized", "BYTES", {-1}}}, "1.0.0");
