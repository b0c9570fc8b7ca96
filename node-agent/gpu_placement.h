// Where on this node a function runs: which GPU, or the CPU. A pure function of the manifest's
// hardware section, the node's GPUs and what is already placed on them, so it is tested on any
// machine with a made-up inventory.
//
// Rules (docs/gpu.md, "Placement on the node"):
// - accelerator: cpu runs on the CPU.
// - A GPU fits a function when it is healthy, its compute capability is at least
//   hardware.minComputeCapability, and the memory left on it (free memory when known, else total,
//   minus what functions placed here reserved with gpuMemoryMiB) holds hardware.gpuMemoryMiB.
//   Unknown properties (0) are not checked.
// - With a pinned GPU (--gpu-index, or the control plane's device index) only that GPU is
//   considered; otherwise functions are spread: the fitting GPU with the fewest functions, then
//   the most memory left, then the lowest index.
// - accelerator: gpu with no fitting GPU fails with every GPU's reason; accelerator: any runs on
//   the CPU and the reason says why.
#ifndef FERRY_NODE_AGENT_GPU_PLACEMENT_H_
#define FERRY_NODE_AGENT_GPU_PLACEMENT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ferry/manifest.h"

namespace ferry::agent {

// One GPU of this node as discovery saw it (no CUDA context needed), plus what this agent has
// placed on it.
struct NodeGpu {
  int index = 0;  // CUDA device ordinal
  std::string name;
  int cc_major = 0;  // compute capability; 0.0 = unknown, not checked
  int cc_minor = 0;
  int64_t memory_bytes = 0;  // total; 0 = unknown, not checked
  int64_t free_bytes = -1;   // at discovery (NVML); -1 = unknown
  bool healthy = true;       // false once its CUDA context is poisoned (cuda/health.h)
  // Placed on it by this agent so far.
  int functions = 0;
  int64_t reserved_bytes = 0;  // sum of their gpuMemoryMiB
};

struct GpuPlacementRequest {
  std::string where;  // "<manifest>: function 'name'", prefixed to errors
  HardwareSpec hardware;
  int pinned_gpu = -1;  // >= 0: only this GPU (--gpu-index, control plane); -1: choose
};

struct GpuPlacement {
  bool use_gpu = false;
  int gpu_index = -1;  // when use_gpu
  // One line for the agent's log: where it runs and why (for `any`, why it fell back to CPU).
  std::string reason;
};

// "8.0" → {8, 0}. InvalidArgument for anything else.
absl::StatusOr<std::pair<int, int>> ParseComputeCapability(std::string_view text);

// Decides where the function runs. `gpus` is every GPU of the node, in any order;
// `gpu_absent_reason` says why there are none (for the message) when it is empty.
// FailedPrecondition (prefixed with request.where) when an accelerator: gpu function cannot run
// on this node; InvalidArgument for a malformed minComputeCapability.
absl::StatusOr<GpuPlacement> PlaceOnNode(const GpuPlacementRequest& request,
                                         absl::Span<const NodeGpu> gpus,
                                         std::string_view gpu_absent_reason);

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_GPU_PLACEMENT_H_
