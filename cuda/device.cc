#include "cuda/device.h"

#include <cuda_runtime.h>
#include <dlfcn.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cuda/health.h"

namespace ferry::cuda {

namespace {

absl::Status NoGpu(cudaError_t err) {
  // Clear the sticky "last error" so a later, unrelated cudaGetLastError() does not report it.
  (void)cudaGetLastError();
  return absl::FailedPreconditionError(absl::StrCat("no GPU: ", cudaGetErrorString(err)));
}

// NVML, loaded with dlopen from the driver (libnvidia-ml.so.1 ships with every NVIDIA driver),
// for one thing the CUDA runtime cannot tell without a context: a GPU's free memory. Declared
// here because the toolkit on a build machine need not carry nvml.h; these four entry points
// have kept their ABI since NVML's v2 symbols.
struct Nvml {
  using Device = struct NvmlDevice*;
  struct Memory {
    unsigned long long total;  // NOLINT(runtime/int): NVML's ABI
    unsigned long long free;   // NOLINT(runtime/int)
    unsigned long long used;   // NOLINT(runtime/int)
  };
  int (*init)() = nullptr;
  int (*by_pci_bus_id)(const char*, Device*) = nullptr;
  int (*memory_info)(Device, Memory*) = nullptr;
};

// nullptr when NVML is missing or does not initialise; then free memory is reported unknown.
const Nvml* LoadNvml() {
  static const Nvml* const nvml = []() -> const Nvml* {
    void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return nullptr;
    auto* n = new Nvml();
    n->init = reinterpret_cast<int (*)()>(dlsym(lib, "nvmlInit_v2"));
    n->by_pci_bus_id = reinterpret_cast<int (*)(const char*, Nvml::Device*)>(
        dlsym(lib, "nvmlDeviceGetHandleByPciBusId_v2"));
    n->memory_info = reinterpret_cast<int (*)(Nvml::Device, Nvml::Memory*)>(
        dlsym(lib, "nvmlDeviceGetMemoryInfo"));
    if (n->init == nullptr || n->by_pci_bus_id == nullptr || n->memory_info == nullptr ||
        n->init() != 0) {
      delete n;
      return nullptr;  // `lib` stays loaded; harmless
    }
    return n;
  }();
  return nvml;
}

// Memory of CUDA device `device` through NVML, matched by PCI bus id (CUDA's ordinals follow
// CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER, NVML's do not); false when unknown.
bool NvmlMemoryInfo(int device, Nvml::Memory* memory) {
  const Nvml* nvml = LoadNvml();
  if (nvml == nullptr) return false;
  char bus_id[64] = {};
  if (cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), device) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  Nvml::Device handle = nullptr;
  return nvml->by_pci_bus_id(bus_id, &handle) == 0 && nvml->memory_info(handle, memory) == 0;
}

// Free memory of CUDA device `device` through NVML; -1 when unknown.
int64_t FreeMemoryWithoutContext(int device) {
  Nvml::Memory memory{};
  if (!NvmlMemoryInfo(device, &memory)) return -1;
  return static_cast<int64_t>(memory.free);
}

}  // namespace

bool BuiltWithCuda() { return true; }

// Only device-level queries here: cudaGetDeviceCount, cudaGetDeviceProperties and
// cudaDeviceGetPCIBusId initialise the driver but create no context. cudaSetDevice (CUDA 12+)
// and context-level calls such as cudaMemGetInfo create the device's primary context, which holds
// about 500 MiB of that GPU's memory for the life of the process: an agent that only serves CPU
// functions, or GPUs it never places a function on, must not pay that.
absl::StatusOr<std::vector<GpuInfo>> ListGpus() {
  int count = 0;
  // Without a driver (development machines, CI) this fails rather than returning 0; both mean
  // "serve on CPU", and the error string says why.
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) return NoGpu(err);
  if (count <= 0) return absl::FailedPreconditionError("no GPU: no CUDA device is visible");

  std::vector<GpuInfo> gpus;
  gpus.reserve(count);
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    err = cudaGetDeviceProperties(&prop, i);
    if (err != cudaSuccess) return NoGpu(err);
    GpuInfo info;
    info.index = i;
    info.name = prop.name;
    info.compute_capability_major = prop.major;
    info.compute_capability_minor = prop.minor;
    info.total_memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);
    info.free_memory_bytes = FreeMemoryWithoutContext(i);
    gpus.push_back(std::move(info));
  }
  return gpus;
}

absl::StatusOr<GpuMemoryInfo> GetGpuMemory(int device) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) return NoGpu(err);
  if (device < 0 || device >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("no GPU: device ", device, " is not one of the ", count, " visible"));
  }
  Nvml::Memory memory{};
  if (!NvmlMemoryInfo(device, &memory)) {
    return absl::UnavailableError(
        absl::StrCat("GPU ", device, ": NVML (libnvidia-ml.so.1) does not report its memory"));
  }
  return GpuMemoryInfo{.total_bytes = static_cast<int64_t>(memory.total),
                       .used_bytes = static_cast<int64_t>(memory.used)};
}

absl::Status CheckGpuAfterError(int device) {
  if (absl::Status s = GpuHealth(device); !s.ok()) return s;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver ||
      (err == cudaSuccess && (device < 0 || device >= count))) {
    (void)cudaGetLastError();
    return absl::OkStatus();  // no such GPU: there is no context to poison
  }
  (void)cudaGetLastError();  // a non-sticky error is consumed here
  err = cudaSetDevice(device);
  if (err == cudaSuccess) err = cudaDeviceSynchronize();
  if (err != cudaSuccess) {
    // An asynchronous error from an earlier launch is reported once; a sticky one every time.
    (void)cudaGetLastError();
    err = cudaDeviceSynchronize();
  }
  if (err == cudaSuccess) return absl::OkStatus();
  ReportGpuFault(device, absl::StrCat(cudaGetErrorName(err), ": ", cudaGetErrorString(err)));
  return GpuHealth(device);
}

}  // namespace ferry::cuda
