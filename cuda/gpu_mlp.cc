#include "cuda/gpu_mlp.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "cuda/graph_cache.h"

namespace ferry::cuda {
namespace {

absl::Status CudaError(cudaError_t err, const char* what) {
  (void)cudaGetLastError();  // clear it so later checks do not see this failure again
  const std::string message = absl::StrCat("GpuMlp: ", what, ": ", cudaGetErrorString(err));
  if (err == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

#define FERRY_CUDA_RETURN_IF_ERROR(expr)                                \
  do {                                                                  \
    const cudaError_t ferry_err_ = (expr);                              \
    if (ferry_err_ != cudaSuccess) return CudaError(ferry_err_, #expr); \
  } while (false)

std::vector<LinearSpec> ToSpecs(std::vector<GpuMlp::Layer> layers) {
  std::vector<LinearSpec> specs;
  specs.reserve(layers.size());
  for (GpuMlp::Layer& l : layers) {
    LinearSpec s;
    s.weight = std::move(l.weight);
    s.bias = std::move(l.bias);
    s.in = l.in;
    s.out = l.out;
    s.act = l.act;
    s.softmax = l.softmax;
    specs.push_back(std::move(s));
  }
  return specs;
}

int64_t ElapsedUs(cudaEvent_t from, cudaEvent_t to) {
  float ms = 0;
  if (cudaEventElapsedTime(&ms, from, to) != cudaSuccess) {
    (void)cudaGetLastError();
    return -1;
  }
  return static_cast<int64_t>(ms * 1000.0f + 0.5f);
}

}  // namespace

// One slot's resources. Only the thread holding the slot touches it, except `done` and
// `needs_sync`, which the stream callback sets before it calls `done` (the holder reads them only
// after hearing from `done`).
struct GpuMlp::Slot {
  int device = 0;
  cudaStream_t stream = nullptr;
  float* pinned_in = nullptr;
  float* pinned_out = nullptr;
  float* d_in = nullptr;   // fixed device input: a CUDA graph reads it
  float* d_out = nullptr;  // fixed device output
  std::unique_ptr<LinearScratch> scratch;
  std::unique_ptr<GraphCache> graphs;  // null: enqueue the layers directly
  // start, after H2D, after the layers, after D2H.
  cudaEvent_t events[4] = {nullptr, nullptr, nullptr, nullptr};
  Done done;
  // The last batch failed on the device: ReleaseSlot waits for the stream first.
  bool needs_sync = false;

  ~Slot() {
    // Errors are ignored: nothing useful can be done with them while tearing down.
    if (cudaSetDevice(device) != cudaSuccess) return;
    if (stream != nullptr) (void)cudaStreamSynchronize(stream);
    graphs.reset();
    scratch.reset();
    (void)cudaFree(d_in);
    (void)cudaFree(d_out);
    (void)cudaFreeHost(pinned_in);
    (void)cudaFreeHost(pinned_out);
    for (cudaEvent_t e : events) {
      if (e != nullptr) (void)cudaEventDestroy(e);
    }
    if (stream != nullptr) (void)cudaStreamDestroy(stream);
    (void)cudaGetLastError();
  }
};

struct GpuMlp::Impl {
  std::unique_ptr<LinearStack> stack;
  // Destroyed before the stack (declared after it): their work uses its weights.
  std::vector<std::unique_ptr<Slot>> slots;

  ~Impl() { slots.clear(); }
};

GpuMlp::GpuMlp(const Options& options, int64_t input_dim, int64_t output_dim, int64_t num_layers,
               std::unique_ptr<Impl> impl)
    : device_(options.device),
      input_dim_(input_dim),
      output_dim_(output_dim),
      max_rows_(options.max_rows),
      num_layers_(num_layers),
      num_slots_(options.slots),
      precision_(options.precision),
      impl_(std::move(impl)) {
  absl::MutexLock lock(&mu_);
  for (int s = num_slots_ - 1; s >= 0; --s) free_slots_.push_back(s);
}

GpuMlp::~GpuMlp() { impl_.reset(); }

absl::StatusOr<std::unique_ptr<GpuMlp>> GpuMlp::Create(int device, std::vector<Layer> layers,
                                                       int64_t max_rows) {
  Options options;
  options.device = device;
  options.max_rows = max_rows;
  return Create(options, std::move(layers));
}

absl::StatusOr<std::unique_ptr<GpuMlp>> GpuMlp::Create(const Options& options,
                                                       std::vector<Layer> layers) {
  if (options.max_rows <= 0 || options.max_rows > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpuMlp: max_rows must be in [1, 2^31), got ", options.max_rows));
  }
  if (options.slots < 1 || options.slots > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpuMlp: slots must be in [1, 64], got ", options.slots));
  }
  std::vector<LinearSpec> specs = ToSpecs(std::move(layers));
  // Before any GPU work, so a bad model is InvalidArgument on every machine.
  if (absl::Status s = ValidateLinearChain(specs); !s.ok()) return s;
  const int64_t num_layers = static_cast<int64_t>(specs.size());

  auto impl = std::make_unique<Impl>();
  absl::StatusOr<std::unique_ptr<LinearStack>> stack = LinearStack::Create(
      LinearStack::Options{.device = options.device, .precision = options.precision},
      std::move(specs));
  if (!stack.ok()) return stack.status();
  impl->stack = *std::move(stack);
  const LinearStack& st = *impl->stack;
  const int64_t in_dim = st.input_dim();
  const int64_t out_dim = st.output_dim();
  const size_t in_bytes = static_cast<size_t>(options.max_rows * in_dim) * sizeof(float);
  const size_t out_bytes = static_cast<size_t>(options.max_rows * out_dim) * sizeof(float);

  FERRY_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device));
  bool graphs = options.graphs;
  // Slot::~Slot releases whatever was allocated if a step below fails.
  for (int i = 0; i < options.slots; ++i) {
    Slot& slot = *impl->slots.emplace_back(std::make_unique<Slot>());
    slot.device = options.device;
    FERRY_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&slot.stream, cudaStreamNonBlocking));
    FERRY_CUDA_RETURN_IF_ERROR(cudaMallocHost(&slot.pinned_in, in_bytes));
    FERRY_CUDA_RETURN_IF_ERROR(cudaMallocHost(&slot.pinned_out, out_bytes));
    FERRY_CUDA_RETURN_IF_ERROR(cudaMalloc(&slot.d_in, in_bytes));
    FERRY_CUDA_RETURN_IF_ERROR(cudaMalloc(&slot.d_out, out_bytes));
    // Rows a graph pads a batch with are read as input: keep them finite.
    FERRY_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(slot.d_in, 0, in_bytes, slot.stream));
    for (cudaEvent_t& e : slot.events) FERRY_CUDA_RETURN_IF_ERROR(cudaEventCreate(&e));
    absl::StatusOr<std::unique_ptr<LinearScratch>> scratch = st.CreateScratch(options.max_rows);
    if (!scratch.ok()) return scratch.status();
    slot.scratch = *std::move(scratch);
    if (graphs) {
      const LinearStack* stack_ptr = impl->stack.get();
      Slot* s = &slot;
      GraphCache::Options go;
      go.device = options.device;
      go.buckets = BatchBuckets(options.max_rows);
      go.enqueue = [stack_ptr, s](int64_t rows, cudaStream_t stream) {
        return stack_ptr->Enqueue(s->d_in, rows, s->d_out, *s->scratch, stream);
      };
      absl::StatusOr<std::unique_ptr<GraphCache>> cache = GraphCache::Create(std::move(go));
      absl::Status prepared = cache.ok() ? (*cache)->Prepare(slot.stream) : cache.status();
      if (prepared.ok()) {
        slot.graphs = *std::move(cache);
      } else {
        // Graphs only save launch overhead: serve without them rather than not at all. A
        // poisoned context fails the synchronisation below anyway.
        (void)cudaGetLastError();
        graphs = false;
        for (std::unique_ptr<Slot>& other : impl->slots) other->graphs.reset();
      }
    }
    FERRY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(slot.stream));
  }

  std::unique_ptr<GpuMlp> mlp(new GpuMlp(options, in_dim, out_dim, num_layers, std::move(impl)));
  mlp->graphs_enabled_ = graphs;
  return mlp;
}

int GpuMlp::AcquireSlot() {
  absl::MutexLock lock(&mu_);
  while (free_slots_.empty()) slot_freed_.Wait(&mu_);
  const int slot = free_slots_.back();
  free_slots_.pop_back();
  return slot;
}

void GpuMlp::ReleaseSlot(int slot) {
  Slot& s = *impl_->slots[slot];
  if (s.needs_sync) {
    // An error path: the stream may still hold work on this slot's buffers (a failed enqueue
    // stops midway; a failed stream is reported by the callback before everything drained).
    if (cudaSetDevice(device_) == cudaSuccess) (void)cudaStreamSynchronize(s.stream);
    (void)cudaGetLastError();
    s.needs_sync = false;
  }
  absl::MutexLock lock(&mu_);
  free_slots_.push_back(slot);
  slot_freed_.Signal();
}

float* GpuMlp::slot_input(int slot) const { return impl_->slots[slot]->pinned_in; }

const float* GpuMlp::slot_output(int slot) const { return impl_->slots[slot]->pinned_out; }

absl::Status GpuMlp::Launch(int slot, int64_t rows, Done done) {
  if (slot < 0 || slot >= num_slots_) {
    return absl::InvalidArgumentError(absl::StrCat("GpuMlp: no slot ", slot));
  }
  if (rows < 1 || rows > max_rows_) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpuMlp: rows = ", rows, ", expected 1..", max_rows_));
  }
  Slot& s = *impl_->slots[slot];
  auto enqueue = [&]() -> absl::Status {
    // The current device is per host thread, and callers come from any thread.
    FERRY_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    FERRY_CUDA_RETURN_IF_ERROR(cudaEventRecord(s.events[0], s.stream));
    // Only the batch's rows cross the bus; a graph's padding rows keep whatever they held.
    FERRY_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(s.d_in, s.pinned_in, static_cast<size_t>(rows * input_dim_) * sizeof(float),
                        cudaMemcpyHostToDevice, s.stream));
    FERRY_CUDA_RETURN_IF_ERROR(cudaEventRecord(s.events[1], s.stream));
    if (s.graphs != nullptr) {
      absl::StatusOr<int64_t> bucket = s.graphs->Launch(rows, s.stream);
      if (!bucket.ok()) return bucket.status();
    } else {
      // The seam for the layers: cuda::LinearStack (cuBLASLt at the configured precision).
      if (absl::Status st = impl_->stack->Enqueue(s.d_in, rows, s.d_out, *s.scratch, s.stream);
          !st.ok()) {
        return st;
      }
    }
    FERRY_CUDA_RETURN_IF_ERROR(cudaEventRecord(s.events[2], s.stream));
    FERRY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        s.pinned_out, s.d_out, static_cast<size_t>(rows * output_dim_) * sizeof(float),
        cudaMemcpyDeviceToHost, s.stream));
    FERRY_CUDA_RETURN_IF_ERROR(cudaEventRecord(s.events[3], s.stream));
    s.done = std::move(done);
    // Runs on a driver thread once everything enqueued before it finished (or the stream
    // failed). No CUDA call is allowed there, so a failure is reported by its code, and the
    // slot remembers to wait for its stream before it is reused.
    cudaStreamCallback_t on_done = [](cudaStream_t, cudaError_t err, void* user) {
      Slot* slot = static_cast<Slot*>(user);
      slot->needs_sync = err != cudaSuccess;
      Done call = std::move(slot->done);
      slot->done = nullptr;
      call(err == cudaSuccess ? absl::OkStatus()
                              : absl::InternalError(
                                    absl::StrCat("GpuMlp: the batch failed on the GPU (CUDA error ",
                                                 static_cast<int>(err), ")")));
    };
    // cudaStreamAddCallback rather than cudaLaunchHostFunc: it also runs (with the error) when
    // the stream fails, so a batch on a broken GPU completes instead of hanging its pipeline.
    const cudaError_t err = cudaStreamAddCallback(s.stream, on_done, &s, 0);
    if (err != cudaSuccess) {
      s.done = nullptr;
      return CudaError(err, "cudaStreamAddCallback");
    }
    return absl::OkStatus();
  };
  absl::Status status = enqueue();
  if (!status.ok()) {
    // Error path: wait for whatever was enqueued before the slot's buffers are touched again.
    (void)cudaStreamSynchronize(s.stream);
    (void)cudaGetLastError();
  }
  // On success `s` may already belong to the callback (and the next user): not touched again.
  return status;
}

absl::StatusOr<GpuMlp::SlotTimes> GpuMlp::LastTimes(int slot) const {
  if (slot < 0 || slot >= num_slots_) {
    return absl::InvalidArgumentError(absl::StrCat("GpuMlp: no slot ", slot));
  }
  const Slot& s = *impl_->slots[slot];
  FERRY_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  SlotTimes t;
  t.h2d_us = ElapsedUs(s.events[0], s.events[1]);
  t.compute_us = ElapsedUs(s.events[1], s.events[2]);
  t.d2h_us = ElapsedUs(s.events[2], s.events[3]);
  return t;
}

absl::Status GpuMlp::Forward(const float* host_in, int64_t rows, float* host_out) {
  if (rows < 0) return absl::InvalidArgumentError(absl::StrCat("GpuMlp: rows = ", rows));
  if (rows == 0) return absl::OkStatus();
  if (host_in == nullptr || host_out == nullptr) {
    return absl::InvalidArgumentError("GpuMlp: null input or output");
  }
  const int slot = AcquireSlot();
  absl::Status status;
  for (int64_t start = 0; start < rows && status.ok(); start += max_rows_) {
    const int64_t n = std::min(max_rows_, rows - start);
    std::memcpy(slot_input(slot), host_in + start * input_dim_,
                static_cast<size_t>(n * input_dim_) * sizeof(float));
    absl::Notification finished;
    absl::Status device_status;
    status = Launch(slot, n, [&finished, &device_status](absl::Status s) {
      device_status = std::move(s);
      finished.Notify();
    });
    if (!status.ok()) break;
    // Sleeps on a futex until the stream callback: no spinning on the device.
    finished.WaitForNotification();
    status = std::move(device_status);
    if (!status.ok()) break;  // ReleaseSlot waits for the failed stream
    std::memcpy(host_out + start * output_dim_, slot_output(slot),
                static_cast<size_t>(n * output_dim_) * sizeof(float));
  }
  ReleaseSlot(slot);
  return status;
}

}  // namespace ferry::cuda
