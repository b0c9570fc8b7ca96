#include "kernels/wordpiece.h"

#include <utf8proc.h>

#include <algorithm>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace ferry::kernels {
namespace {

constexpr int32_t kSpace = 0x20;

// The reference's CJK ranges (its list, including where the fourth extension range starts).
bool IsCjk(int32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

bool IsAsciiPunct(int32_t c) {
  return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
         (c >= 123 && c <= 126);
}

bool IsPunct(int32_t c) {
  if (c < 128) return IsAsciiPunct(c);
  switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

enum class CleanClass { kKeep, kDrop, kSpace };

CleanClass Classify(int32_t c) {
  if (c == '\t' || c == '\n' || c == '\r' || c == ' ') return CleanClass::kSpace;
  if (c == 0 || c == 0xFFFD) return CleanClass::kDrop;
  if (c >= 0x21 && c < 0x7F) return CleanClass::kKeep;
  switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CO:
      return CleanClass::kDrop;
    case UTF8PROC_CATEGORY_ZS:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
      return CleanClass::kSpace;
    default:
      return CleanClass::kKeep;
  }
}

// Steps 1-4 of the header: code points of the normalized text.
void Normalize(const std::vector<int32_t>& in, std::vector<int32_t>* out) {
  out->clear();
  out->reserve(in.size() + in.size() / 4);
  int32_t decomposed[32];
  for (int32_t c : in) {
    switch (Classify(c)) {
      case CleanClass::kDrop:
        continue;
      case CleanClass::kSpace:
        out->push_back(kSpace);
        continue;
      case CleanClass::kKeep:
        break;
    }
    if (c < 0x80) {
      out->push_back(c);
      continue;
    }
    // The reference spaces CJK ideographs before it decomposes (compatibility ideographs
    // decompose to unified ones).
    const bool cjk = IsCjk(c);
    if (cjk) out->push_back(kSpace);
    int boundclass = 0;
    const utf8proc_ssize_t n =
        utf8proc_decompose_char(c, decomposed, 32, UTF8PROC_DECOMPOSE, &boundclass);
    if (n <= 0 || n > 32) {
      out->push_back(c);
    } else {
      for (utf8proc_ssize_t i = 0; i < n; ++i) out->push_back(decomposed[i]);
    }
    if (cjk) out->push_back(kSpace);
  }
  // Canonical ordering (the last step of NFD): within each run of combining characters
  // (combining class > 0), a stable sort by combining class.
  const size_t size = out->size();
  for (size_t i = 1; i < size; ++i) {
    const int32_t c = (*out)[i];
    if (c < 0x300) continue;
    const int ccc = utf8proc_get_property(c)->combining_class;
    if (ccc == 0) continue;
    size_t j = i;
    while (j > 0) {
      const int32_t prev = (*out)[j - 1];
      const int prev_ccc = prev < 0x300 ? 0 : utf8proc_get_property(prev)->combining_class;
      if (prev_ccc <= ccc) break;
      (*out)[j] = prev;
      --j;
    }
    (*out)[j] = c;
  }
  // Strip nonspacing marks, then lower-case.
  size_t w = 0;
  for (size_t i = 0; i < size; ++i) {
    int32_t c = (*out)[i];
    if (c < 0x80) {
      if (c >= 'A' && c <= 'Z') c += 'a' - 'A';
    } else {
      if (utf8proc_category(c) == UTF8PROC_CATEGORY_MN) continue;
      c = utf8proc_tolower(c);
    }
    (*out)[w++] = c;
  }
  out->resize(w);
}

void AppendUtf8(int32_t c, std::string* out) {
  utf8proc_uint8_t buf[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(c, buf);
  out->append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

}  // namespace

bool IsValidUtf8(std::string_view text, size_t* bad_offset) {
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    utf8proc_int32_t c;
    const utf8proc_ssize_t n =
        utf8proc_iterate(p + i, static_cast<utf8proc_ssize_t>(text.size() - i), &c);
    if (n <= 0) {
      if (bad_offset != nullptr) *bad_offset = i;
      return false;
    }
    i += static_cast<size_t>(n);
  }
  return true;
}

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::Create(
    const Options& options) {
  std::ifstream in(options.vocab_path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read the vocabulary '", options.vocab_path, "'"));
  }
  std::vector<std::string> tokens;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    tokens.push_back(std::move(line));
  }
  if (in.bad()) {
    return absl::InvalidArgumentError(
        absl::StrCat("error reading the vocabulary '", options.vocab_path, "'"));
  }
  return FromTokens(std::move(tokens), options);
}

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::FromTokens(
    std::vector<std::string> tokens, const Options& options) {
  if (options.max_seq_length < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_seq_length must be at least 2, got ", options.max_seq_length));
  }
  if (options.max_input_chars_per_word < 1) {
    return absl::InvalidArgumentError("max_input_chars_per_word must be at least 1");
  }
  std::unique_ptr<WordPieceTokenizer> t(new WordPieceTokenizer());
  t->options_ = options;
  t->ids_.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!IsValidUtf8(tokens[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("vocabulary '", options.vocab_path, "' line ", i + 1, ": not valid UTF-8"));
    }
    if (!t->ids_.emplace(tokens[i], static_cast<int32_t>(i)).second) {
      return absl::InvalidArgumentError(absl::StrCat("vocabulary '", options.vocab_path, "' line ",
                                                     i + 1, ": duplicate token '", tokens[i], "'"));
    }
    t->max_token_bytes_ = std::max(t->max_token_bytes_, tokens[i].size());
  }
  t->tokens_ = std::move(tokens);
  for (auto [name, id] : {std::pair<const char*, int32_t*>{"[CLS]", &t->cls_id_},
                          {"[SEP]", &t->sep_id_},
                          {"[UNK]", &t->unk_id_},
                          {"[PAD]", &t->pad_id_}}) {
    auto it = t->ids_.find(name);
    if (it == t->ids_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("vocabulary '", options.vocab_path, "' has no ", name, " token"));
    }
    *id = it->second;
  }
  for (const char* name : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}) {
    auto it = t->ids_.find(name);
    if (it != t->ids_.end()) t->specials_.emplace_back(name, it->second);
  }
  return t;
}

std::string_view WordPieceTokenizer::Token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= tokens_.size()) return {};
  return tokens_[id];
}

void WordPieceTokenizer::EncodeWord(std::string_view word, size_t chars, std::vector<int32_t>* out,
                                    std::string* scratch) const {
  if (chars > static_cast<size_t>(options_.max_input_chars_per_word)) {
    out->push_back(unk_id_);
    return;
  }
  const size_t first = out->size();
  size_t start = 0;
  while (start < word.size()) {
    // No token is longer than max_token_bytes_, so longer candidates cannot match.
    const size_t limit = start == 0 ? max_token_bytes_ : max_token_bytes_ - 2;
    size_t end = std::min(word.size(), start + limit);
    // Back up to a code-point boundary.
    while (end > start && end < word.size() && (word[end] & 0xC0) == 0x80) --end;
    int32_t match = -1;
    while (end > start) {
      std::string_view piece = word.substr(start, end - start);
      absl::flat_hash_map<std::string, int32_t>::const_iterator it;
      if (start == 0) {
        it = ids_.find(absl::string_view(piece.data(), piece.size()));
      } else {
        scratch->assign("##");
        scratch->append(piece);
        it = ids_.find(*scratch);
      }
      if (it != ids_.end()) {
        match = it->second;
        break;
      }
      --end;
      while (end > start && (word[end] & 0xC0) == 0x80) --end;
    }
    if (match < 0) {
      out->resize(first);
      out->push_back(unk_id_);
      return;
    }
    out->push_back(match);
    start = end;
  }
}

void WordPieceTokenizer::EncodeSegment(std::string_view text, size_t limit,
                                       std::vector<int32_t>* ids) const {
  std::vector<int32_t> code_points;
  code_points.reserve(text.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    if (p[i] < 0x80) {
      code_points.push_back(p[i]);
      ++i;
      continue;
    }
    utf8proc_int32_t c = 0xFFFD;
    const utf8proc_ssize_t n =
        utf8proc_iterate(p + i, static_cast<utf8proc_ssize_t>(text.size() - i), &c);
    code_points.push_back(c);
    i += n > 0 ? static_cast<size_t>(n) : 1;  // Encode validated the text already
  }
  std::vector<int32_t> normalized;
  Normalize(code_points, &normalized);

  std::string word;
  std::string scratch;
  size_t word_chars = 0;
  auto flush = [&]() {
    if (word.empty()) return;
    EncodeWord(word, word_chars, ids, &scratch);
    word.clear();
    word_chars = 0;
  };
  for (int32_t c : normalized) {
    if (ids->size() >= limit) break;
    if (c == kSpace) {
      flush();
    } else if (IsPunct(c)) {
      flush();
      AppendUtf8(c, &word);
      word_chars = 1;
      flush();
    } else {
      AppendUtf8(c, &word);
      ++word_chars;
    }
  }
  flush();
}

absl::Status WordPieceTokenizer::Encode(std::string_view text, std::vector<int32_t>* ids) const {
  size_t bad = 0;
  if (!IsValidUtf8(text, &bad)) {
    return absl::InvalidArgumentError(
        absl::StrCat("text is not valid UTF-8 (byte ", bad, " of ", text.size(), ")"));
  }
  const size_t begin = ids->size();
  // Ids after [CLS] stop at `limit`, leaving room for [SEP].
  const size_t limit = begin + static_cast<size_t>(options_.max_seq_length) - 1;
  ids->push_back(cls_id_);
  // Special tokens written in the text, exactly as in the vocabulary, stand for themselves and
  // split the text around them (leftmost match, longest on ties), as in the reference.
  size_t pos = 0;
  while (pos <= text.size() && ids->size() < limit) {
    size_t found = text.size();
    int32_t special_id = -1;
    size_t special_len = 0;
    for (size_t at = text.find('[', pos); at != std::string_view::npos && found == text.size();
         at = text.find('[', at + 1)) {
      for (const auto& [token, id] : specials_) {
        if (text.compare(at, token.size(), token) == 0 && token.size() > special_len) {
          found = at;
          special_id = id;
          special_len = token.size();
        }
      }
    }
    EncodeSegment(text.substr(pos, found - pos), limit, ids);
    if (special_id < 0) break;
    if (ids->size() < limit) ids->push_back(special_id);
    pos = found + special_len;
  }
  if (ids->size() > limit) ids->resize(limit);
  ids->push_back(sep_id_);
  return absl::OkStatus();
}

}  // namespace ferry::kernels
