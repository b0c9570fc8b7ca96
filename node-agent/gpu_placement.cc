#include "node-agent/gpu_placement.h"

#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace ferry::agent {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

// Memory this agent may still give out on `g`; -1 when unknown.
int64_t MemoryLeft(const NodeGpu& g) {
  const int64_t base = g.free_bytes >= 0 ? g.free_bytes : g.memory_bytes;
  if (base <= 0) return -1;
  return std::max<int64_t>(0, base - g.reserved_bytes);
}

std::string Describe(const NodeGpu& g) {
  return g.name.empty() ? absl::StrCat("GPU ", g.index)
                        : absl::StrCat("GPU ", g.index, " (", g.name, ")");
}

// "" when `g` fits, else why not.
std::string WhyNot(const NodeGpu& g, int need_major, int need_minor, int64_t need_bytes) {
  if (!g.healthy) return absl::StrCat(Describe(g), " is unusable (sticky CUDA error)");
  const bool cc_known = g.cc_major > 0;
  if (cc_known && std::make_pair(g.cc_major, g.cc_minor) < std::make_pair(need_major, need_minor)) {
    return absl::StrCat(Describe(g), " has compute capability ", g.cc_major, ".", g.cc_minor,
                        ", below minComputeCapability ", need_major, ".", need_minor);
  }
  const int64_t left = MemoryLeft(g);
  if (need_bytes > 0 && left >= 0 && left < need_bytes) {
    return absl::StrCat(Describe(g), " has ", left / kMiB, " MiB left",
                        g.reserved_bytes > 0
                            ? absl::StrCat(" (", g.reserved_bytes / kMiB,
                                           " MiB reserved by functions placed on it)")
                            : std::string(),
                        ", gpuMemoryMiB asks for ", need_bytes / kMiB);
  }
  return "";
}

}  // namespace

absl::StatusOr<std::pair<int, int>> ParseComputeCapability(std::string_view text) {
  const std::string copy(text);
  std::vector<std::string> parts = absl::StrSplit(copy, '.');
  int major = 0;
  int minor = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &major) ||
      !absl::SimpleAtoi(parts[1], &minor) || major < 0 || minor < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("compute capability \"", copy, "\": expected X.Y such as 8.0"));
  }
  return std::make_pair(major, minor);
}

absl::StatusOr<GpuPlacement> PlaceOnNode(const GpuPlacementRequest& request,
                                         absl::Span<const NodeGpu> gpus,
                                         std::string_view gpu_absent_reason) {
  const HardwareSpec& hw = request.hardware;
  if (hw.accelerator == Accelerator::kCpu) {
    return GpuPlacement{.use_gpu = false, .gpu_index = -1, .reason = "accelerator: cpu"};
  }
  const bool must = hw.accelerator == Accelerator::kGpu;
  int need_major = 0;
  int need_minor = 0;
  if (!hw.min_compute_capability.empty()) {
    auto cc = ParseComputeCapability(hw.min_compute_capability);
    if (!cc.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          request.where, ": spec.hardware.minComputeCapability: ", cc.status().message()));
    }
    std::tie(need_major, need_minor) = *cc;
  }
  const int64_t need_bytes = hw.gpu_memory_mib * kMiB;

  auto cpu = [&](std::string why) -> absl::StatusOr<GpuPlacement> {
    if (must) {
      return absl::FailedPreconditionError(absl::StrCat(request.where, ": ", why));
    }
    return GpuPlacement{.use_gpu = false,
                        .gpu_index = -1,
                        .reason = absl::StrCat("accelerator: any runs on the CPU: ", why)};
  };

  if (gpus.empty()) {
    return cpu(absl::StrCat("spec.hardware.accelerator is ", must ? "gpu" : "any",
                            " but this node has no GPU (", std::string(gpu_absent_reason), ")"));
  }
  if (request.pinned_gpu >= 0) {
    auto it = std::find_if(gpus.begin(), gpus.end(),
                           [&](const NodeGpu& g) { return g.index == request.pinned_gpu; });
    if (it == gpus.end()) {
      return cpu(
          absl::StrCat("needs GPU ", request.pinned_gpu, " but this node has ", gpus.size()));
    }
    const std::string why = WhyNot(*it, need_major, need_minor, need_bytes);
    if (!why.empty()) return cpu(why);
    return GpuPlacement{.use_gpu = true,
                        .gpu_index = it->index,
                        .reason = absl::StrCat("on ", Describe(*it), ", the GPU it was given")};
  }

  const NodeGpu* best = nullptr;
  std::vector<std::string> refusals;
  for (const NodeGpu& g : gpus) {
    const std::string why = WhyNot(g, need_major, need_minor, need_bytes);
    if (!why.empty()) {
      refusals.push_back(why);
      continue;
    }
    if (best == nullptr) {
      best = &g;
      continue;
    }
    // Spread: fewest functions, then most memory left (unknown counts as least), then index.
    const auto key = [](const NodeGpu& x) {
      return std::make_tuple(x.functions, -MemoryLeft(x), x.index);
    };
    if (key(g) < key(*best)) best = &g;
  }
  if (best == nullptr) {
    return cpu(absl::StrCat("no GPU of this node fits: ", absl::StrJoin(refusals, "; ")));
  }
  return GpuPlacement{
      .use_gpu = true,
      .gpu_index = best->index,
      .reason =
          absl::StrCat("on ", Describe(*best), ": ", best->functions,
                       " function(s) already there, fewest of ", gpus.size(), " GPU(s)",
                       refusals.empty() ? std::string()
                                        : absl::StrCat("; not ", absl::StrJoin(refusals, "; ")))};
}

}  // namespace ferry::agent
