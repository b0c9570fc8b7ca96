// BERT's uncased WordPiece tokenizer, matching the Hugging Face `tokenizers` library's
// BertNormalizer(clean_text, handle_chinese_chars, strip_accents, lowercase) +
// BertPreTokenizer + WordPiece(unk "[UNK]", "##", 100 characters per word) + "[CLS] … [SEP]"
// post-processing, token for token (checked on a corpus by tests/reference/compare_tokenizer.py).
//
// The steps, on Unicode code points (categories from utf8proc):
//   1. Clean: drop NUL, U+FFFD and control characters (categories Cc, Cf, Co; tab, LF and CR
//      are kept as whitespace); every other whitespace character (tab, LF, CR, Zs, Zl, Zp)
//      becomes a space.
//   2. CJK ideographs get a space on each side (the code-point ranges of the reference).
//   3. Canonical decomposition (NFD), then drop nonspacing marks (Mn): strips accents.
//   4. Lower-case (per code point).
//   5. Split on spaces; every punctuation character (ASCII !-/ :-@ [-` {-~, and Unicode P*) is
//      a word of its own.
//   6. WordPiece: greedy longest match from the left; pieces after the first carry "##"; a word
//      of more than 100 code points, or one with a part that matches nothing, is "[UNK]".
//   7. "[CLS]" + pieces + "[SEP]", word pieces truncated so the whole fits max_seq_length.
// Special tokens written in the text exactly ("[SEP]", "[MASK]", ... as the vocabulary spells
// them) are matched first, on the raw text, and stand for their own ids, as in the reference.
// Known difference: the reference's category tables are older than utf8proc's Unicode 15, so a
// few hundred rarely used code points whose category was assigned or changed since then (for
// example marks and punctuation added to historic scripts) may split differently.
#ifndef FERRY_KERNELS_WORDPIECE_H_
#define FERRY_KERNELS_WORDPIECE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ferry::kernels {

class WordPieceTokenizer {
 public:
  struct Options {
    // Vocabulary, one token per line; the line number (from 0) is the token id.
    std::string vocab_path;
    // Ids per encoded text, [CLS] and [SEP] included; at least 2.
    int max_seq_length = 512;
    // Words longer than this many code points become [UNK].
    int max_input_chars_per_word = 100;
  };

  // Reads the vocabulary. InvalidArgument (naming the file) when it cannot be read, holds a
  // duplicate, or lacks [CLS], [SEP], [UNK] or [PAD].
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> Create(const Options& options);
  // The same from tokens in memory (options.vocab_path only names them in messages).
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> FromTokens(
      std::vector<std::string> tokens, const Options& options);

  // Appends the ids of `text` to `ids` ([CLS] … [SEP], at most max_seq_length of them).
  // InvalidArgument when `text` is not valid UTF-8, naming the byte offset. Thread-safe (const,
  // no shared scratch); allocates per call.
  absl::Status Encode(std::string_view text, std::vector<int32_t>* ids) const;

  int32_t cls_id() const { return cls_id_; }
  int32_t sep_id() const { return sep_id_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t pad_id() const { return pad_id_; }
  int max_seq_length() const { return options_.max_seq_length; }
  size_t vocab_size() const { return tokens_.size(); }
  // The token text of `id` (empty when out of range), for debugging and tests.
  std::string_view Token(int32_t id) const;

 private:
  WordPieceTokenizer() = default;
  // Appends the WordPiece ids of one pre-tokenized word (UTF-8, `chars` code points) to `out`.
  void EncodeWord(std::string_view word, size_t chars, std::vector<int32_t>* out,
                  std::string* scratch) const;
  // Appends the ids of valid UTF-8 `text` (no special tokens in it) while ids->size() < limit.
  void EncodeSegment(std::string_view text, size_t limit, std::vector<int32_t>* ids) const;

  Options options_;
  std::vector<std::string> tokens_;
  absl::flat_hash_map<std::string, int32_t> ids_;
  size_t max_token_bytes_ = 0;
  int32_t cls_id_ = -1;
  int32_t sep_id_ = -1;
  int32_t unk_id_ = -1;
  int32_t pad_id_ = -1;
  // The special tokens the vocabulary has ([PAD], [UNK], [CLS], [SEP], [MASK]) and their ids.
  std::vector<std::pair<std::string, int32_t>> specials_;
};

// Whether `text` is valid UTF-8 (no overlong forms, surrogates or code points past U+10FFFF);
// when not, `*bad_offset` (if given) is the offset of the first invalid byte.
bool IsValidUtf8(std::string_view text, size_t* bad_offset = nullptr);

}  // namespace ferry::kernels

#endif  // FERRY_KERNELS_WORDPIECE_H_
