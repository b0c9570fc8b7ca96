// The `wordfilter` runtime (platform "ferry_wordfilter"): the "dirty word" filter of the
// serverless critique's text-classification benchmark. Each element of the BYTES input "text"
// is one document; "filtered" is the document with every blacklisted word masked and "count"
// the number of blacklisted words found in it.
//
// A word is a maximal run of ASCII letters, digits and apostrophes, with leading and trailing
// apostrophes trimmed (so 'darn' in quotes and "don't" both work). Every other byte, including
// every byte of a UTF-8 multibyte sequence, separates words. Matching is ASCII case-insensitive;
// a matched word is replaced by a run of the mask character of the same length in bytes.
#ifndef FERRY_KERNELS_WORDFILTER_RUNTIME_H_
#define FERRY_KERNELS_WORDFILTER_RUNTIME_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "ferry/manifest.h"
#include "ferry/runtime.h"

namespace ferry::kernels {

class WordFilterRuntime : public Runtime {
 public:
  struct Options {
    // Blacklisted words; each must be a non-empty word as defined above (compared lowercase).
    std::vector<std::string> blacklist;
    char mask = '*';
  };

  // Reads spec.config: `blacklist` (list of words), `blacklistFile` (one word per line, '#'
  // starts a comment, relative to spec.base_dir), `mask` (one printable ASCII character). At
  // least one word is required. Errors name the manifest file and field (and the blacklist
  // file's line).
  static absl::StatusOr<Options> ParseOptions(const FunctionSpec& spec);
  static absl::StatusOr<std::unique_ptr<WordFilterRuntime>> Create(const Options& options);

  const ModelSignature& signature() const override { return signature_; }
  // Filters every document of every request. Thread-safe: the word table is immutable after
  // Create.
  absl::Status Execute(absl::Span<RuntimeCall> batch) override;

  // Filters one document into `filtered` (overwritten) and returns the number of masked words.
  int32_t Filter(std::string_view document, std::string* filtered) const;

  size_t word_count() const { return size_; }

 private:
  WordFilterRuntime() = default;
  bool Contains(const char* lower, size_t length, uint64_t hash) const;

  ModelSignature signature_;
  char mask_ = '*';
  // Open-addressing table (power-of-two size, load <= 1/2) of lowercase words; empty string =
  // free slot. The words are few and short, so this stays in cache.
  std::vector<std::string> slots_;
  std::vector<uint64_t> hashes_;
  uint64_t slot_mask_ = 0;
  size_t size_ = 0;
  size_t max_length_ = 0;
  // Bit n set when some word has length n (n < 64; bit 63 also covers longer words), so most
  // words in a document skip the hash lookup entirely.
  uint64_t length_bits_ = 0;
};

// The registry's factory for spec.runtime == "wordfilter". There is no GPU path; with
// context.use_gpu it still runs on the CPU.
absl::StatusOr<std::unique_ptr<Runtime>> CreateWordFilterRuntime(const FunctionSpec& spec,
                                                                 const RuntimeContext& context);

}  // namespace ferry::kernels

#endif  // FERRY_KERNELS_WORDFILTER_RUNTIME_H_
