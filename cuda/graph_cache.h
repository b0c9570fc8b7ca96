// CUDA graphs per batch-size bucket, as plain C++ (no CUDA headers).
//
// Launching a small batch costs more in CPU-side launch overhead (one cuBLASLt call and one or two
// kernels per layer, each a few microseconds) than the GPU needs to run it. A CUDA graph replays
// the whole recorded sequence with one launch. Graphs are recorded for fixed shapes and fixed
// pointers, so batches are padded up to a bucket (1, 2, 4, ..., max_rows) and every bucket's work
// reads and writes the same buffers (e.g. a LinearScratch with its fixed GEMM workspace, and fixed
// device input and output buffers). Rows are independent in an MLP, so the padded rows only cost
// compute; their outputs are ignored.
//
// BatchBuckets and BucketFor are pure and run in every build; GraphCache needs CUDA (in a build
// without it, Create fails with FailedPrecondition).
#ifndef FERRY_CUDA_GRAPH_CACHE_H_
#define FERRY_CUDA_GRAPH_CACHE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cuda/kernels.h"

namespace ferry::cuda {

// The buckets for batches of 1..max_rows rows: powers of two below max_rows, then max_rows
// itself (e.g. 100 → 1 2 4 8 16 32 64 100). Padding wastes less than half of any batch.
// max_rows < 1 gives {}.
std::vector<int64_t> BatchBuckets(int64_t max_rows);

// The smallest bucket >= rows. `buckets` ascending (as BatchBuckets makes them). InvalidArgument
// when rows < 1 or rows is above the largest bucket.
absl::StatusOr<int64_t> BucketFor(absl::Span<const int64_t> buckets, int64_t rows);

// One stream's graphs, one per bucket, captured on first use (or all by Prepare) and replayed
// after. Not thread-safe: owned by the one thread (pipeline slot) that uses its stream and its
// buffers. The destructor frees the graphs (they hold no device buffers of their own).
class GraphCache {
 public:
  // Enqueues the work for a batch of exactly `rows` rows on `stream` without synchronising or
  // allocating (stream capture forbids both), always on the same buffers.
  using EnqueueFn = std::function<absl::Status(int64_t rows, cudaStream_t stream)>;

  struct Options {
    int device = 0;                // the CUDA device the work runs on
    std::vector<int64_t> buckets;  // ascending, >= 1; e.g. BatchBuckets(max_rows)
    EnqueueFn enqueue;
  };

  // InvalidArgument for empty or unsorted buckets or a missing enqueue; FailedPrecondition
  // without CUDA.
  static absl::StatusOr<std::unique_ptr<GraphCache>> Create(Options options);
  ~GraphCache();
  GraphCache(const GraphCache&) = delete;
  GraphCache& operator=(const GraphCache&) = delete;

  // Runs the work for `rows` rows as the graph of BucketFor(rows) on `stream` (a non-default
  // stream on the device), capturing it first when needed. Does not wait. Returns the bucket's
  // row count: the caller's input buffer must hold that many rows (the rows past `rows` may be
  // stale), and only the first `rows` rows of the output mean anything.
  absl::StatusOr<int64_t> Launch(int64_t rows, cudaStream_t stream);

  // Captures every bucket now (at load), so no request pays for a capture. Blocks until done.
  absl::Status Prepare(cudaStream_t stream);

  const std::vector<int64_t>& buckets() const { return options_.buckets; }
  // Graphs captured so far.
  int captured() const;

 private:
  struct Impl;
  explicit GraphCache(Options options);
  absl::Status Capture(size_t bucket, cudaStream_t stream);

  Options options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::cuda

#endif  // FERRY_CUDA_GRAPH_CACHE_H_
