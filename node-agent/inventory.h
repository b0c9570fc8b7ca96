// What a node agent tells the control plane about its machine: usable CPU cores (the process's
// CPU affinity), memory (/proc/meminfo MemTotal) and each CUDA device (name, memory, compute
// capability) when a driver and device are present. Discovery creates no CUDA context on any GPU
// (cuda::ListGpus), so advertising GPUs costs them no memory.
#ifndef FERRY_NODE_AGENT_INVENTORY_H_
#define FERRY_NODE_AGENT_INVENTORY_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace ferry::agent {

struct GpuInventory {
  int index = 0;
  std::string name;
  int64_t memory_bytes = 0;
  int cc_major = 0;
  int cc_minor = 0;
  // Advertised by --testonly-fake-gpu: placement treats it as a GPU, but the agent runs the
  // replicas placed on it on the CPU (there is no device behind it).
  bool fake = false;
};

struct NodeInventory {
  double cpu_cores = 1;
  int64_t memory_bytes = 0;
  std::vector<GpuInventory> gpus;
  std::string hostname;
  // Why there are no real GPUs ("" when there are).
  std::string gpu_absent_reason;
};

// CPUs this process may run on (its affinity mask, so `taskset` and container CPU sets count).
int UsableCpus();
// MemTotal from /proc/meminfo; 0 when unreadable.
int64_t MemTotalBytes();

// Parses a test-only fake GPU list: "NAME:MEMORY:CC[,NAME:MEMORY:CC...]", MEMORY with a unit
// (GiB, MiB), e.g. "H200:141GiB:9.0". Indices follow the order given.
absl::StatusOr<std::vector<GpuInventory>> ParseFakeGpus(std::string_view text);

// Discovers this machine. `fake_gpus` (the --testonly-fake-gpu value; "" = none) replaces GPU
// discovery; it is refused (FailedPrecondition) unless the environment has FERRY_TESTONLY=1.
absl::StatusOr<NodeInventory> DiscoverInventory(std::string_view fake_gpus);

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_INVENTORY_H_
