// The CPU half of GpuBert: precision names and packing a batch into the int32 layout the kernels
// read. Compiled in every build, so it is unit-tested without a GPU.
#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "cuda/gpu_bert.h"

namespace ferry::cuda {
namespace {

// Attention tiles a pass of `tokens` tokens in `seqs` sequences can need: one per started group
// of kBertAttentionTileQueries queries of each sequence, so at most seqs + tokens / tile.
int64_t MaxTiles(int64_t tokens, int64_t seqs) {
  return std::min(tokens, seqs + tokens / kBertAttentionTileQueries);
}

}  // namespace

std::string_view BertDTypeName(BertDType t) {
  switch (t) {
    case BertDType::kFp32:
      return "fp32";
    case BertDType::kFp16:
      return "fp16";
    case BertDType::kBf16:
      return "bf16";
  }
  return "?";
}

bool BertDTypeFromName(std::string_view name, BertDType* out) {
  for (BertDType t : {BertDType::kFp32, BertDType::kFp16, BertDType::kBf16}) {
    if (name == BertDTypeName(t)) {
      *out = t;
      return true;
    }
  }
  return false;
}

BertDType BertStorage(Precision p) {
  switch (p) {
    case Precision::kFp16:
      return BertDType::kFp16;
    case Precision::kBf16:
      return BertDType::kBf16;
    case Precision::kFp32:
    case Precision::kTf32:
      break;
  }
  return BertDType::kFp32;
}

size_t BertPackCapacity(const BertPackLimits& limits) {
  const int64_t t = std::max<int64_t>(limits.max_tokens, 0);
  const int64_t s = std::max<int64_t>(std::min(limits.max_sequences, t), 0);
  return static_cast<size_t>(2 * t + (s + 1) + 2 * MaxTiles(t, s));
}

absl::Status PackBertBatch(absl::Span<const std::vector<int32_t>> seqs,
                           const BertPackLimits& limits, int32_t* dst, size_t capacity,
                           BertPackedBatch* out) {
  if (static_cast<int64_t>(seqs.size()) > limits.max_sequences) {
    return absl::InvalidArgumentError(
        absl::StrCat("a pass of ", seqs.size(), " sequences; at most ", limits.max_sequences));
  }
  BertPackedBatch b;
  b.num_seqs = static_cast<int>(seqs.size());
  for (size_t s = 0; s < seqs.size(); ++s) {
    const std::vector<int32_t>& ids = seqs[s];
    if (ids.empty() || ids.size() > static_cast<size_t>(limits.max_len)) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, " has ", ids.size(),
                                                     " tokens; expected 1 to ", limits.max_len));
    }
    for (int32_t id : ids) {
      if (id < 0 || id >= limits.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sequence ", s, ": token id ", id, " outside the vocabulary of ", limits.vocab_size));
      }
    }
    b.tokens += static_cast<int64_t>(ids.size());
    b.max_len = std::max(b.max_len, static_cast<int>(ids.size()));
    b.num_tiles +=
        static_cast<int>((ids.size() + kBertAttentionTileQueries - 1) / kBertAttentionTileQueries);
  }
  if (b.tokens > limits.max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("a pass of ", b.tokens, " tokens; at most ", limits.max_tokens));
  }
  b.ids = 0;
  b.positions = b.ids + static_cast<size_t>(b.tokens);
  b.offsets = b.positions + static_cast<size_t>(b.tokens);
  b.tiles = b.offsets + static_cast<size_t>(b.num_seqs) + 1;
  b.total = b.tiles + 2 * static_cast<size_t>(b.num_tiles);
  if (b.total > capacity || dst == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("packing buffer of ", capacity, " int32 values; the pass needs ", b.total));
  }
  int32_t* ids_out = dst + b.ids;
  int32_t* pos_out = dst + b.positions;
  int32_t* off_out = dst + b.offsets;
  int32_t* tile_out = dst + b.tiles;
  int32_t row = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const std::vector<int32_t>& ids = seqs[s];
    const int32_t len = static_cast<int32_t>(ids.size());
    off_out[s] = row;
    std::copy(ids.begin(), ids.end(), ids_out + row);
    for (int32_t p = 0; p < len; ++p) pos_out[row + p] = p;
    for (int32_t q = 0; q < len; q += kBertAttentionTileQueries) {
      *tile_out++ = static_cast<int32_t>(s);
      *tile_out++ = q;
    }
    row += len;
  }
  off_out[seqs.size()] = row;
  *out = b;
  return absl::OkStatus();
}

std::vector<std::pair<size_t, size_t>> SplitBertPasses(absl::Span<const std::vector<int32_t>> seqs,
                                                       int64_t max_tokens, int64_t max_sequences) {
  std::vector<std::pair<size_t, size_t>> passes;
  size_t begin = 0;
  while (begin < seqs.size()) {
    size_t end = begin;
    int64_t tokens = 0;
    while (end < seqs.size() && static_cast<int64_t>(end - begin) < max_sequences &&
           (end == begin || tokens + static_cast<int64_t>(seqs[end].size()) <= max_tokens)) {
      tokens += static_cast<int64_t>(seqs[end].size());
      ++end;
    }
    if (end == begin) ++end;  // max_sequences <= 0: still make progress, one per pass
    passes.emplace_back(begin, end);
    begin = end;
  }
  return passes;
}

}  // namespace ferry::cuda
