#include "node-agent/inventory.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "cuda/device.h"

namespace ferry::agent {

int UsableCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

int64_t MemTotalBytes() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("MemTotal:", 0) != 0) continue;
    std::istringstream fields(line.substr(9));
    int64_t kib = 0;
    fields >> kib;
    return kib * 1024;
  }
  return 0;
}

absl::StatusOr<std::vector<GpuInventory>> ParseFakeGpus(std::string_view view) {
  const std::string text(view);
  std::vector<GpuInventory> out;
  const std::string expected =
      "NAME:MEMORY:CC[,...] such as \"H200:141GiB:9.0\" (MEMORY in GiB or MiB)";
  for (absl::string_view piece : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    const std::string one(piece);
    std::vector<std::string> parts = absl::StrSplit(one, ':');
    if (parts.size() != 3 || parts[0].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--testonly-fake-gpu: got \"", one, "\", expected ", expected));
    }
    GpuInventory g;
    g.index = static_cast<int>(out.size());
    g.name = parts[0];
    g.fake = true;
    absl::string_view mem = parts[1];
    int64_t unit = 0;
    if (absl::ConsumeSuffix(&mem, "GiB")) {
      unit = int64_t{1} << 30;
    } else if (absl::ConsumeSuffix(&mem, "MiB")) {
      unit = int64_t{1} << 20;
    }
    double amount = 0;
    if (unit == 0 || !absl::SimpleAtod(mem, &amount) || amount <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--testonly-fake-gpu: memory \"", parts[1], "\", expected ", expected));
    }
    g.memory_bytes = static_cast<int64_t>(amount * static_cast<double>(unit));
    std::vector<std::string> cc = absl::StrSplit(parts[2], '.');
    if (cc.size() != 2 || !absl::SimpleAtoi(cc[0], &g.cc_major) ||
        !absl::SimpleAtoi(cc[1], &g.cc_minor) || g.cc_major <= 0 || g.cc_minor < 0) {
      return absl::InvalidArgumentError(absl::StrCat("--testonly-fake-gpu: compute capability \"",
                                                     parts[2], "\", expected ", expected));
    }
    out.push_back(std::move(g));
  }
  if (out.empty()) return absl::InvalidArgumentError("--testonly-fake-gpu: empty list");
  return out;
}

absl::StatusOr<NodeInventory> DiscoverInventory(std::string_view fake_gpus) {
  NodeInventory inv;
  inv.cpu_cores = UsableCpus();
  inv.memory_bytes = MemTotalBytes();
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) == 0) inv.hostname = host;
  if (!fake_gpus.empty()) {
    const char* env = std::getenv("FERRY_TESTONLY");
    if (env == nullptr || std::string(env) != "1") {
      return absl::FailedPreconditionError(
          "--testonly-fake-gpu is for tests only: it advertises a GPU that does not exist; "
          "set FERRY_TESTONLY=1 in the environment to use it");
    }
    auto gpus = ParseFakeGpus(fake_gpus);
    if (!gpus.ok()) return gpus.status();
    inv.gpus = *std::move(gpus);
    inv.gpu_absent_reason = "only fake GPUs (--testonly-fake-gpu)";
    return inv;
  }
  auto gpus = cuda::ListGpus();
  if (!gpus.ok()) {
    inv.gpu_absent_reason = std::string(gpus.status().message());
    return inv;
  }
  for (const auto& g : *gpus) {
    inv.gpus.push_back({g.index, g.name, g.total_memory_bytes, g.compute_capability_major,
                        g.compute_capability_minor, false});
  }
  return inv;
}

}  // namespace ferry::agent
