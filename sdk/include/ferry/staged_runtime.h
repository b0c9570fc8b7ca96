// The staged form of a runtime: a batch goes through a device in stages, so that the agent can
// overlap them across batches (batching/pipeline.h). While the device runs batch k, a CPU thread
// packs batch k+1 into its own slot's staging memory and batch k-1's results are scattered into
// its responses:
//
//   Pack(slot)      CPU: decode/validate the requests, stack their rows straight into the slot's
//                   host staging memory (pinned memory for a GPU: no intermediate copy).
//   Launch(slot)    enqueue host->device copy, compute and device->host copy on the slot's own
//                   stream; returns at once; `done` fires when the results are in host memory.
//   Unpack(slot)    CPU: scatter the slot's host results into the responses.
//   Release(slot)   always last: the slot may be packed again.
//
// A runtime offers this form through Runtime::staged() (ferry/runtime.h); a runtime that does not
// keeps the plain synchronous Runtime::Execute path. The stages never see the batcher.
#ifndef FERRY_STAGED_RUNTIME_H_
#define FERRY_STAGED_RUNTIME_H_

#include <cstdint>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "ferry/runtime.h"

namespace ferry {

// Called exactly once per successful Launch, with OK when the slot's results are in host memory,
// or the device error. It may run on any thread, including a driver thread on which no CUDA call
// is allowed, and possibly before Launch returns; it must only record the outcome and wake
// someone (it must not block or call back into the runtime).
using StageDone = absl::AnyInvocable<void(absl::Status)>;

// Device time of one batch, microseconds, as measured on the device (e.g. CUDA events); -1 when
// the runtime does not measure it.
struct DeviceStageTimes {
  int64_t h2d_us = -1;      // host -> device copy
  int64_t compute_us = -1;  // kernels of every layer
  int64_t d2h_us = -1;      // device -> host copy
};

// Slot protocol, per slot s in [0, num_slots()):
//   Pack(s) -> [Launch(s) -> done] -> [Unpack(s)] -> Release(s)
// Unpack runs only when Pack, Launch and `done` all succeeded; Release runs exactly once after
// every Pack, whatever happened. The caller (the pipeline) never uses one slot for two batches at
// once; different slots are used from different threads at the same time, so the methods must be
// thread-safe across slots. Pack, Unpack and Release may block for CPU work only; Launch must not
// wait for the device.
class StagedRuntime {
 public:
  virtual ~StagedRuntime() = default;

  // The number of slots (independent resource sets: stream, staging buffers, ...), >= 1, fixed.
  // The pipeline keeps at most this many batches between Pack and Release.
  virtual int num_slots() const = 0;

  // Validates `batch` (requests already checked against the signature) and writes their inputs
  // into slot `slot`. Sets batch[i].status to fail only request i (Unpack then skips it). A
  // non-OK return fails the whole batch. `batch` stays valid until Release(slot).
  virtual absl::Status Pack(int slot, absl::Span<RuntimeCall> batch) = 0;

  // Starts the device work of the packed slot and returns without waiting for it. On OK, `done`
  // is called exactly once. On error, `done` is never called and the runtime has already
  // waited for whatever it had enqueued (the slot's buffers are idle).
  virtual absl::Status Launch(int slot, StageDone done) = 0;

  // After `done(OK)`: fills batch[i].response->outputs for every request whose status is OK (or
  // sets that status). A non-OK return fails the whole batch.
  virtual absl::Status Unpack(int slot, absl::Span<RuntimeCall> batch) = 0;

  // Ends the slot's batch (after a failure at any stage too): waits for any device work of the
  // slot still pending and makes the slot free for the next Pack.
  virtual void Release(int slot) = 0;

  // The device times of the slot's batch, read after `done` and before Release.
  virtual DeviceStageTimes StageTimes(int /*slot*/) { return {}; }
};

}  // namespace ferry

#endif  // FERRY_STAGED_RUNTIME_H_
