// The bucket arithmetic of graph_cache.h; compiled in every build.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "cuda/graph_cache.h"

namespace ferry::cuda {

std::vector<int64_t> BatchBuckets(int64_t max_rows) {
  std::vector<int64_t> buckets;
  for (int64_t b = 1; b < max_rows; b *= 2) buckets.push_back(b);
  if (max_rows >= 1) buckets.push_back(max_rows);
  return buckets;
}

absl::StatusOr<int64_t> BucketFor(absl::Span<const int64_t> buckets, int64_t rows) {
  if (rows < 1) return absl::InvalidArgumentError(absl::StrCat("graph bucket: rows = ", rows));
  auto it = std::lower_bound(buckets.begin(), buckets.end(), rows);
  if (it == buckets.end()) {
    return absl::InvalidArgumentError(absl::StrCat("graph bucket: ", rows,
                                                   " rows is above the largest bucket (",
                                                   buckets.empty() ? 0 : buckets.back(), ")"));
  }
  return *it;
}

}  // namespace ferry::cuda
