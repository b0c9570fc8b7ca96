#include "kernels/plugin_runtime.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/const_init.h"
#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "cuda/device.h"
#include "cuda/device_stream.h"
#include "ferry/config_reader.h"
#include "ferry/function.h"
#include "ferry/runtime_registry.h"

// The ABI's opaque error: defined by the host, in the global namespace as the C header names it.
struct ferry_error {
  std::string message;
};

namespace ferry::kernels {
namespace {

constexpr uint32_t kMaxTensors = 64;
constexpr uint32_t kMaxRank = 8;
constexpr size_t kMaxNameBytes = 256;
constexpr size_t kMaxErrorBytes = 2048;
// One output may not exceed this; a bigger request is a bug in the function, not a real output.
constexpr uint64_t kMaxOutputBytes = uint64_t{2} << 30;

ABSL_CONST_INIT absl::Mutex g_dir_mu(absl::kConstInit);
std::string* g_plugin_dir ABSL_GUARDED_BY(g_dir_mu) = nullptr;

// --- errors across the ABI ----------------------------------------------------------------------

// Returned when even the error cannot be allocated; never freed.
ferry_error g_out_of_memory_error{"out of memory while reporting an error"};

ferry_error* HostErrorNew(const char* message) {
  try {
    return new ferry_error{message == nullptr ? "" : message};
  } catch (...) {
    return &g_out_of_memory_error;
  }
}

// Takes ownership of `e`; returns its message, bounded and without control characters.
std::string TakeError(ferry_error* e) {
  std::string message = e->message;
  if (e != &g_out_of_memory_error) delete e;
  if (message.size() > kMaxErrorBytes) message = message.substr(0, kMaxErrorBytes) + "...";
  for (char& c : message) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  if (message.empty()) message = "(no message)";
  return message;
}

std::string VersionString(uint32_t major, uint32_t minor) {
  return absl::StrCat(major, ".", minor);
}

// --- declarations -------------------------------------------------------------------------------

absl::StatusOr<std::vector<TensorSpec>> CheckDecls(const ferry_tensor_decl* decls, uint32_t count,
                                                   const std::string& field) {
  if (count == 0 || decls == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": declares no tensors (need >= 1)"));
  }
  if (count > kMaxTensors) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": declares ", count, " tensors; at most ", kMaxTensors));
  }
  std::vector<TensorSpec> specs;
  std::set<std::string, std::less<>> names;
  for (uint32_t i = 0; i < count; ++i) {
    const ferry_tensor_decl& d = decls[i];
    const std::string at = absl::StrCat(field, "[", i, "]");
    if (d.name == nullptr || d.name[0] == '\0') {
      return absl::InvalidArgumentError(absl::StrCat(at, ".name: empty"));
    }
    const std::string name(d.name, strnlen(d.name, kMaxNameBytes + 1));
    if (name.size() > kMaxNameBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(at, ".name: longer than ", kMaxNameBytes, " bytes"));
    }
    const std::string named = absl::StrCat(at, " '", name, "'");
    if (!names.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(named, ".name: duplicate name (", field, " must have unique names)"));
    }
    const std::string dtype_name =
        d.datatype == nullptr ? "" : std::string(d.datatype, strnlen(d.datatype, 32));
    const DataType dtype = DataTypeFromName(dtype_name);
    if (dtype == DataType::kInvalid) {
      return absl::InvalidArgumentError(
          absl::StrCat(named, ".datatype: unknown datatype '", dtype_name,
                       "'; expected a KServe v2 name: BOOL, UINT8..UINT64, INT8..INT64, FP16, "
                       "BF16, FP32, FP64 or BYTES"));
    }
    if (d.rank < 1 || d.rank > kMaxRank || d.shape == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(named, ".rank: ", d.rank, "; expected 1..", kMaxRank, " dims"));
    }
    std::vector<int64_t> shape(d.shape, d.shape + d.rank);
    if (shape[0] != -1) {
      return absl::InvalidArgumentError(absl::StrCat(named, ".shape: ", ShapeToString(shape),
                                                     ": the first dim must be -1, the batch dim"));
    }
    for (uint32_t k = 1; k < d.rank; ++k) {
      if (shape[k] < 1 && shape[k] != -1) {
        return absl::InvalidArgumentError(absl::StrCat(
            named, ".shape[", k, "]: ", shape[k], "; dims after the batch dim are >= 1 or -1"));
      }
    }
    specs.push_back(TensorSpec{name, dtype, std::move(shape)});
  }
  return specs;
}

bool FixedDims(const TensorSpec& spec) {
  for (size_t i = 1; i < spec.shape.size(); ++i) {
    if (spec.shape[i] < 0) return false;
  }
  return true;
}

// --- the loaded library -------------------------------------------------------------------------

class Library {
 public:
  Library(void* handle, const ferry_function_v1* desc) : handle_(handle), desc_(desc) {}
  ~Library() { dlclose(handle_); }
  Library(const Library&) = delete;
  Library& operator=(const Library&) = delete;
  const ferry_function_v1& desc() const { return *desc_; }

 private:
  void* handle_;
  const ferry_function_v1* desc_;
};

struct Instance {
  ferry_instance* handle = nullptr;
  std::unique_ptr<cuda::DeviceStream> stream;  // GPU functions only
  ferry_device device{};
  // Device buffers reused across batches (GPU functions): per input and per output.
  std::vector<std::pair<void*, size_t>> device_inputs;
  std::vector<std::pair<void*, size_t>> device_outputs;
};

struct BatchState;

class PluginRuntime : public Runtime {
 public:
  PluginRuntime(std::string display, std::unique_ptr<Library> library, ModelSignature signature,
                bool gpu)
      : display_(std::move(display)),
        library_(std::move(library)),
        signature_(std::move(signature)),
        gpu_(gpu) {}

  ~PluginRuntime() override {
    for (Instance& in : instances_) {
      if (in.stream != nullptr) (void)in.stream->MakeCurrent();
      if (in.handle != nullptr) {
        try {
          library_->desc().destroy(in.handle);
        } catch (...) {  // the ABI forbids it; a C++ function that throws anyway is not fatal here
        }
      }
      for (auto& [p, n] : in.device_inputs) {
        if (in.stream != nullptr) in.stream->Free(p);
      }
      for (auto& [p, n] : in.device_outputs) {
        if (in.stream != nullptr) in.stream->Free(p);
      }
      in.stream.reset();
    }
  }

  absl::Status AddInstances(int count, int gpu_index, const std::string& config_json);

  const ModelSignature& signature() const override { return signature_; }
  absl::Status Execute(absl::Span<RuntimeCall> batch) override;

  // Called by allocate_output.
  ferry_error* Allocate(BatchState& state, const ferry_batch& batch, uint32_t index,
                        const int64_t* shape, uint32_t rank, uint64_t byte_size) const;

 private:
  absl::Status RunGroup(Instance& instance, absl::Span<RuntimeCall> calls);
  // Grows `slot` (a device buffer) to at least `bytes`.
  absl::StatusOr<void*> DeviceBuffer(Instance& instance, std::pair<void*, size_t>& slot,
                                     size_t bytes) const;

  const std::string display_;  // "plugin 'libx.so' (function 'name')"
  std::unique_ptr<Library> library_;
  const ModelSignature signature_;
  const bool gpu_;
  std::vector<Instance> instances_;  // fixed after creation
  absl::Mutex mu_;
  std::vector<bool> busy_ ABSL_GUARDED_BY(mu_);
};

// What allocate_output needs; reached through ferry_batch::host_reserved.
struct BatchState {
  const PluginRuntime* runtime = nullptr;
  Instance* instance = nullptr;
  std::vector<std::vector<int64_t>> output_shapes;
  std::vector<std::string> host_outputs;  // host memory of each output (CPU, or BYTES)
  std::vector<bool> allocated;
  std::string allocate_error;  // the first bad allocate_output call
};

ferry_error* HostAllocateOutput(const ferry_batch* batch, uint32_t index, const int64_t* shape,
                                uint32_t rank, uint64_t byte_size) {
  try {
    if (batch == nullptr || batch->host_reserved == nullptr) {
      return HostErrorNew("allocate_output: not a batch of this agent");
    }
    auto* state = static_cast<BatchState*>(batch->host_reserved);
    return state->runtime->Allocate(*state, *batch, index, shape, rank, byte_size);
  } catch (...) {
    return HostErrorNew("allocate_output: out of memory");
  }
}

const ferry_host_api kHostApi = {sizeof(ferry_host_api), &HostErrorNew, &HostAllocateOutput};

ferry_error* PluginRuntime::Allocate(BatchState& state, const ferry_batch& batch, uint32_t index,
                                     const int64_t* shape, uint32_t rank,
                                     uint64_t byte_size) const {
  auto fail = [&](const std::string& what) {
    const std::string message = absl::StrCat("allocate_output: ", what);
    if (state.allocate_error.empty()) state.allocate_error = message;
    return HostErrorNew(message.c_str());
  };
  if (index >= signature_.outputs.size()) {
    return fail(absl::StrCat("output index ", index, "; the function declares ",
                             signature_.outputs.size(), " outputs"));
  }
  const TensorSpec& spec = signature_.outputs[index];
  const std::string named = absl::StrCat("output '", spec.name, "'");
  if (state.allocated[index]) return fail(absl::StrCat(named, " is already allocated"));
  if (shape == nullptr || rank != spec.shape.size()) {
    return fail(absl::StrCat(named, ": rank ", rank, "; declared ", ShapeToString(spec.shape)));
  }
  std::vector<int64_t> dims(shape, shape + rank);
  if (dims[0] != batch.rows) {
    return fail(absl::StrCat(named, ": shape ", ShapeToString(dims), " has ", dims[0],
                             " rows; the batch has ", batch.rows));
  }
  for (uint32_t k = 1; k < rank; ++k) {
    if (dims[k] < 0 || (spec.shape[k] >= 0 && dims[k] != spec.shape[k])) {
      return fail(absl::StrCat(named, ": shape ", ShapeToString(dims), " does not fit declared ",
                               ShapeToString(spec.shape)));
    }
  }
  const int64_t count = ElementCount(dims);
  if (count < 0) return fail(absl::StrCat(named, ": shape ", ShapeToString(dims), " overflows"));
  if (byte_size > kMaxOutputBytes) {
    return fail(absl::StrCat(named, ": ", byte_size, " bytes is over the ", kMaxOutputBytes,
                             "-byte limit of one output"));
  }
  if (spec.dtype == DataType::kBytes) {
    if (byte_size < 4 * static_cast<uint64_t>(count)) {
      return fail(absl::StrCat(named, ": ", byte_size, " bytes cannot hold ", count,
                               " BYTES elements (4-byte length each)"));
    }
  } else {
    const int64_t need = TensorByteSize(spec.dtype, dims);
    if (need < 0 || static_cast<uint64_t>(need) != byte_size) {
      return fail(absl::StrCat(named, ": ", byte_size, " bytes for shape ", ShapeToString(dims),
                               " of ", std::string(DataTypeName(spec.dtype)), "; that needs ",
                               need));
    }
  }
  void* data = nullptr;
  if (gpu_ && spec.dtype != DataType::kBytes) {
    absl::StatusOr<void*> d =
        DeviceBuffer(*state.instance, state.instance->device_outputs[index], byte_size);
    if (!d.ok()) return fail(absl::StrCat(named, ": ", d.status().message()));
    data = *d;
  } else {
    std::string& buffer = state.host_outputs[index];
    buffer.assign(byte_size, '\0');
    data = buffer.data();
  }
  state.output_shapes[index] = std::move(dims);
  state.allocated[index] = true;
  ferry_output& out = batch.outputs[index];
  out.data = data;
  out.shape = state.output_shapes[index].data();
  out.rank = rank;
  out.byte_size = byte_size;
  return nullptr;
}

absl::StatusOr<void*> PluginRuntime::DeviceBuffer(Instance& instance,
                                                  std::pair<void*, size_t>& slot,
                                                  size_t bytes) const {
  if (slot.first != nullptr && slot.second >= bytes) return slot.first;
  instance.stream->Free(slot.first);
  slot = {nullptr, 0};
  // Room to grow: batches vary in size, and reallocating on every bigger one is slow.
  const size_t capacity = std::max<size_t>(bytes + bytes / 2, 256);
  absl::StatusOr<void*> p = instance.stream->Allocate(capacity);
  if (!p.ok()) return p.status();
  slot = {*p, capacity};
  return *p;
}

absl::Status PluginRuntime::AddInstances(int count, int gpu_index, const std::string& config_json) {
  const ferry_function_v1& desc = library_->desc();
  instances_.resize(count);
  for (int i = 0; i < count; ++i) {
    Instance& in = instances_[i];
    in.device_inputs.assign(signature_.inputs.size(), {nullptr, 0});
    in.device_outputs.assign(signature_.outputs.size(), {nullptr, 0});
    in.device = ferry_device{FERRY_DEVICE_CPU, -1, nullptr};
    if (gpu_) {
      absl::StatusOr<std::unique_ptr<cuda::DeviceStream>> stream =
          cuda::DeviceStream::Create(gpu_index);
      if (!stream.ok()) {
        return absl::FailedPreconditionError(
            absl::StrCat(display_, ": the function runs on a GPU and GPU ", gpu_index,
                         " cannot be used: ", stream.status().message()));
      }
      in.stream = *std::move(stream);
      in.device = ferry_device{FERRY_DEVICE_GPU, gpu_index, in.stream->stream()};
    }
    ferry_instance* handle = nullptr;
    ferry_error* err = nullptr;
    try {
      err = desc.create(&kHostApi, config_json.c_str(), &in.device, &handle);
    } catch (...) {
      err = HostErrorNew("create threw a C++ exception (exceptions must not cross the ABI)");
    }
    if (err != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(display_, ": create failed: ", TakeError(err)));
    }
    if (handle == nullptr) {
      return absl::InternalError(
          absl::StrCat(display_, ": create returned no error and no instance"));
    }
    in.handle = handle;
  }
  absl::MutexLock lock(&mu_);
  busy_.assign(count, false);
  return absl::OkStatus();
}

absl::Status PluginRuntime::Execute(absl::Span<RuntimeCall> batch) {
  if (batch.empty()) return absl::OkStatus();
  // A free instance: there is one per executor, so this waits only when callers outnumber them.
  size_t slot = 0;
  {
    absl::MutexLock lock(&mu_);
    auto any_free = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      for (bool b : busy_) {
        if (!b) return true;
      }
      return false;
    };
    mu_.Await(absl::Condition(&any_free));
    while (busy_[slot]) ++slot;
    busy_[slot] = true;
  }
  Instance& instance = instances_[slot];
  // Requests whose variable input dims differ cannot share one stacked buffer: run them as
  // consecutive groups of equal dims.
  absl::Status status;
  size_t begin = 0;
  while (begin < batch.size() && status.ok()) {
    size_t end = begin + 1;
    const InferenceRequest& first = *batch[begin].request;
    while (end < batch.size()) {
      bool same = true;
      for (const Tensor& t : batch[end].request->inputs) {
        for (const Tensor& f : first.inputs) {
          if (f.name == t.name &&
              !std::equal(f.shape.begin() + 1, f.shape.end(), t.shape.begin() + 1, t.shape.end())) {
            same = false;
          }
        }
      }
      if (!same) break;
      ++end;
    }
    status = RunGroup(instance, batch.subspan(begin, end - begin));
    begin = end;
  }
  absl::MutexLock lock(&mu_);
  busy_[slot] = false;
  return status;
}

absl::Status PluginRuntime::RunGroup(Instance& instance, absl::Span<RuntimeCall> calls) {
  const size_t ni = signature_.inputs.size();
  const size_t no = signature_.outputs.size();
  std::vector<int64_t> item_rows;
  item_rows.reserve(calls.size());
  int64_t rows = 0;
  std::vector<std::string> stacked(ni);
  std::vector<std::vector<int64_t>> input_shapes(ni);
  for (size_t c = 0; c < calls.size(); ++c) {
    const InferenceRequest& request = *calls[c].request;
    int64_t request_rows = -1;
    for (size_t i = 0; i < ni; ++i) {
      const TensorSpec& spec = signature_.inputs[i];
      const Tensor* t = nullptr;
      for (const Tensor& candidate : request.inputs) {
        if (candidate.name == spec.name) t = &candidate;
      }
      if (t == nullptr || t->shape.empty()) {
        return absl::InternalError(absl::StrCat("input '", spec.name, "' missing"));
      }
      if (c == 0) input_shapes[i] = t->shape;
      request_rows = t->shape[0];
      if (spec.dtype == DataType::kBytes) {
        stacked[i] += EncodeBytesElements(t->bytes);
      } else {
        stacked[i] += t->data;
      }
    }
    item_rows.push_back(request_rows);
    rows += request_rows;
  }
  std::vector<ferry_input> inputs(ni);
  for (size_t i = 0; i < ni; ++i) {
    input_shapes[i][0] = rows;
    const TensorSpec& spec = signature_.inputs[i];
    const void* data = stacked[i].data();
    if (gpu_ && spec.dtype != DataType::kBytes) {
      absl::StatusOr<void*> d =
          DeviceBuffer(instance, instance.device_inputs[i], stacked[i].size());
      if (!d.ok()) return d.status();
      if (absl::Status s = instance.stream->CopyToDevice(*d, stacked[i].data(), stacked[i].size());
          !s.ok()) {
        return s;
      }
      data = *d;
    }
    inputs[i] = ferry_input{spec.name.c_str(), data, input_shapes[i].data(),
                            static_cast<uint32_t>(input_shapes[i].size()), stacked[i].size()};
  }

  BatchState state;
  state.runtime = this;
  state.instance = &instance;
  state.output_shapes.resize(no);
  state.host_outputs.resize(no);
  state.allocated.assign(no, false);
  std::vector<ferry_output> outputs(no);
  for (size_t o = 0; o < no; ++o) {
    const TensorSpec& spec = signature_.outputs[o];
    outputs[o] = ferry_output{spec.name.c_str(), nullptr, nullptr,
                              static_cast<uint32_t>(spec.shape.size()), 0};
  }
  std::vector<ferry_error*> item_errors(calls.size(), nullptr);
  ferry_batch c_batch{sizeof(ferry_batch),
                      static_cast<uint32_t>(calls.size()),
                      item_rows.data(),
                      rows,
                      inputs.data(),
                      static_cast<uint32_t>(ni),
                      outputs.data(),
                      static_cast<uint32_t>(no),
                      item_errors.data(),
                      &kHostApi,
                      &state};
  // Outputs whose size the declaration fixes are allocated here, through the same checks.
  for (size_t o = 0; o < no; ++o) {
    const TensorSpec& spec = signature_.outputs[o];
    if (spec.dtype == DataType::kBytes || !FixedDims(spec)) continue;
    std::vector<int64_t> shape = spec.shape;
    shape[0] = rows;
    const int64_t bytes = TensorByteSize(spec.dtype, shape);
    if (bytes < 0) return absl::InvalidArgumentError("output size overflows");
    if (ferry_error* e =
            Allocate(state, c_batch, static_cast<uint32_t>(o), shape.data(),
                     static_cast<uint32_t>(shape.size()), static_cast<uint64_t>(bytes));
        e != nullptr) {
      return absl::InternalError(absl::StrCat(display_, ": ", TakeError(e)));
    }
  }

  if (instance.stream != nullptr) {
    if (absl::Status s = instance.stream->MakeCurrent(); !s.ok()) return s;
  }
  ferry_error* err = nullptr;
  try {
    err = library_->desc().execute(instance.handle, &c_batch);
  } catch (...) {
    err = HostErrorNew("execute threw a C++ exception (exceptions must not cross the ABI)");
  }
  std::string batch_error = err == nullptr ? "" : TakeError(err);
  std::vector<std::string> item_messages(calls.size());
  for (size_t c = 0; c < calls.size(); ++c) {
    if (item_errors[c] != nullptr) item_messages[c] = TakeError(item_errors[c]);
  }
  if (gpu_) {
    // The function's work is on the stream: it must finish before the buffers are read or reused.
    if (absl::Status s = instance.stream->Synchronize(); !s.ok() && batch_error.empty()) {
      batch_error = absl::StrCat("GPU error after execute: ", s.message());
    }
  }
  if (!batch_error.empty()) {
    return absl::InternalError(absl::StrCat(display_, ": execute failed: ", batch_error));
  }
  if (!state.allocate_error.empty()) {
    return absl::InternalError(absl::StrCat(display_, ": ", state.allocate_error));
  }
  for (size_t o = 0; o < no; ++o) {
    if (!state.allocated[o]) {
      return absl::InternalError(absl::StrCat(
          display_, ": output '", signature_.outputs[o].name,
          "' was not produced: its size is not fixed by the declaration, so execute must call "
          "host->allocate_output for it"));
    }
  }
  if (gpu_) {
    for (size_t o = 0; o < no; ++o) {
      if (signature_.outputs[o].dtype == DataType::kBytes) continue;
      std::string& host = state.host_outputs[o];
      host.resize(outputs[o].byte_size);
      if (absl::Status s = instance.stream->CopyToHost(host.data(), outputs[o].data, host.size());
          !s.ok()) {
        return s;
      }
    }
    if (absl::Status s = instance.stream->Synchronize(); !s.ok()) {
      return absl::InternalError(absl::StrCat(display_, ": ", s.message()));
    }
  }

  // Check every output, then split it by request.
  std::vector<BytesList> strings(no);
  for (size_t o = 0; o < no; ++o) {
    const TensorSpec& spec = signature_.outputs[o];
    if (spec.dtype != DataType::kBytes) continue;
    absl::StatusOr<BytesList> decoded =
        DecodeBytesElements(state.host_outputs[o], ElementCount(state.output_shapes[o]),
                            absl::StrCat("output '", spec.name, "'"));
    if (!decoded.ok()) {
      return absl::InternalError(
          absl::StrCat(display_, ": produced malformed BYTES: ", decoded.status().message()));
    }
    strings[o] = *std::move(decoded);
  }
  int64_t row = 0;
  for (size_t c = 0; c < calls.size(); ++c) {
    RuntimeCall& call = calls[c];
    const int64_t r = item_rows[c];
    if (!item_messages[c].empty()) {
      call.status = absl::InvalidArgumentError(
          absl::StrCat(display_, ": failed this request: ", item_messages[c]));
      row += r;
      continue;
    }
    for (size_t o = 0; o < no; ++o) {
      const TensorSpec& spec = signature_.outputs[o];
      const std::vector<int64_t>& full = state.output_shapes[o];
      Tensor t;
      t.name = spec.name;
      t.dtype = spec.dtype;
      t.shape = full;
      t.shape[0] = r;
      if (spec.dtype == DataType::kBytes) {
        const int64_t per_row = rows == 0 ? 0 : static_cast<int64_t>(strings[o].size()) / rows;
        for (int64_t e = row * per_row; e < (row + r) * per_row; ++e) {
          t.bytes.push_back(strings[o][e]);
        }
      } else {
        const size_t row_bytes = state.host_outputs[o].size() / static_cast<size_t>(rows);
        t.data = state.host_outputs[o].substr(row * row_bytes, r * row_bytes);
      }
      call.response->outputs.push_back(std::move(t));
    }
    row += r;
  }
  return absl::OkStatus();
}

// Loads and checks the library; returns it with its checked signature.
absl::StatusOr<std::unique_ptr<Library>> OpenLibrary(const std::string& path,
                                                     const std::string& display,
                                                     ModelSignature* signature) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    return absl::FailedPreconditionError(
        absl::StrCat(display, ": cannot load: ", why == nullptr ? "unknown error" : why));
  }
  auto close = [&](absl::Status s) {
    dlclose(handle);
    return s;
  };
  dlerror();
  void* symbol = dlsym(handle, FERRY_FUNCTION_ENTRY_SYMBOL);
  if (symbol == nullptr) {
    return close(absl::FailedPreconditionError(
        absl::StrCat(display, ": exports no '", FERRY_FUNCTION_ENTRY_SYMBOL,
                     "' symbol: define it with FERRY_FUNCTION_EXPORT (ferry/function.h) or "
                     "FERRY_DEFINE_FUNCTION (ferry/function.hpp)")));
  }
  auto entry = reinterpret_cast<ferry_function_entry_fn>(symbol);
  const ferry_function_v1* desc = entry(FERRY_FUNCTION_ABI_MAJOR, FERRY_FUNCTION_ABI_MINOR);
  const std::string ours = VersionString(FERRY_FUNCTION_ABI_MAJOR, FERRY_FUNCTION_ABI_MINOR);
  if (desc == nullptr) {
    return close(absl::FailedPreconditionError(
        absl::StrCat(display, ": ", FERRY_FUNCTION_ENTRY_SYMBOL, "(", ours,
                     ") returned NULL: the function cannot serve this agent's ABI ", ours)));
  }
  const std::string theirs = VersionString(desc->abi_major, desc->abi_minor);
  if (desc->abi_major != FERRY_FUNCTION_ABI_MAJOR) {
    return close(absl::FailedPreconditionError(absl::StrCat(
        display, ": abi_major: built for function ABI ", theirs, "; this agent speaks ", ours,
        " and major versions must match: rebuild the function against this ferry's "
        "ferry/function.h")));
  }
  if (desc->abi_minor > FERRY_FUNCTION_ABI_MINOR) {
    return close(absl::FailedPreconditionError(absl::StrCat(
        display, ": abi_minor: built for function ABI ", theirs, ", newer than this agent's ", ours,
        ": upgrade the agent or rebuild the function against its ferry/function.h")));
  }
  auto bad = [&](absl::string_view what) {
    return close(absl::InvalidArgumentError(absl::StrCat(display, ": bad declaration: ", what)));
  };
  if (desc->struct_size < sizeof(ferry_function_v1)) {
    return bad(absl::StrCat("struct_size: ", desc->struct_size, " bytes; ABI ", ours, " needs ",
                            sizeof(ferry_function_v1)));
  }
  if (desc->name == nullptr || desc->name[0] == '\0') return bad("name: empty");
  if (desc->device_kind != FERRY_DEVICE_CPU && desc->device_kind != FERRY_DEVICE_GPU) {
    return bad(absl::StrCat("device_kind: ", static_cast<int>(desc->device_kind),
                            "; expected FERRY_DEVICE_CPU (0) or FERRY_DEVICE_GPU (1)"));
  }
  if (desc->create == nullptr || desc->execute == nullptr || desc->destroy == nullptr) {
    return bad("create, execute and destroy must all be set");
  }
  absl::StatusOr<std::vector<TensorSpec>> inputs =
      CheckDecls(desc->inputs, desc->num_inputs, "inputs");
  if (!inputs.ok()) return bad(inputs.status().message());
  absl::StatusOr<std::vector<TensorSpec>> outputs =
      CheckDecls(desc->outputs, desc->num_outputs, "outputs");
  if (!outputs.ok()) return bad(outputs.status().message());
  signature->platform = "ferry_plugin";
  signature->batched = true;
  signature->inputs = *std::move(inputs);
  signature->outputs = *std::move(outputs);
  return std::make_unique<Library>(handle, desc);
}

}  // namespace

void SetPluginDirectory(std::string dir) {
  absl::MutexLock lock(&g_dir_mu);
  delete g_plugin_dir;
  g_plugin_dir = new std::string(std::move(dir));
}

std::string PluginDirectory() {
  absl::MutexLock lock(&g_dir_mu);
  return g_plugin_dir == nullptr ? "" : *g_plugin_dir;
}

absl::StatusOr<std::string> ResolvePluginPath(const std::string& dir, const std::string& library) {
  const std::string named = absl::StrCat("plugin '", library, "'");
  if (dir.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(named,
                     ": this agent serves no plugins: start ferry-agent with --plugin-dir DIR, the "
                     "folder it may load function libraries from"));
  }
  if (library.empty()) return absl::InvalidArgumentError("plugin library name is empty");
  if (library.front() == '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        named, ": an absolute path; give a file name relative to the plugin directory"));
  }
  for (absl::string_view part : absl::StrSplit(library, '/')) {
    if (part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(named,
                       ": '..' may not appear; plugins load only from the plugin "
                       "directory"));
    }
  }
  char real_dir[PATH_MAX];
  if (realpath(dir.c_str(), real_dir) == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("plugin directory '", dir, "': ", std::strerror(errno)));
  }
  const std::string candidate = absl::StrCat(real_dir, "/", library);
  char real_file[PATH_MAX];
  if (realpath(candidate.c_str(), real_file) == nullptr) {
    return absl::NotFoundError(absl::StrCat(named, ": not found in the plugin directory ", real_dir,
                                            " (", std::strerror(errno), ")"));
  }
  const std::string resolved = real_file;
  const std::string prefix = absl::StrCat(real_dir, "/");
  if (resolved.compare(0, prefix.size(), prefix) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(named, ": resolves to ", resolved,
                                                    ", outside the plugin directory ", real_dir,
                                                    " (a symlink may not lead out of it)"));
  }
  struct stat st {};
  if (stat(resolved.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(named, ": ", resolved, " is not a regular file"));
  }
  return resolved;
}

absl::StatusOr<std::unique_ptr<Runtime>> LoadPluginRuntime(const PluginRuntimeOptions& options) {
  absl::StatusOr<std::string> path = ResolvePluginPath(options.plugin_dir, options.library);
  if (!path.ok()) {
    return absl::Status(
        path.status().code(),
        absl::StrCat(options.where, "spec.config.library: ", path.status().message()));
  }
  const std::string display = absl::StrCat(options.where, "plugin '", options.library, "'");
  ModelSignature signature;
  absl::StatusOr<std::unique_ptr<Library>> library = OpenLibrary(*path, display, &signature);
  if (!library.ok()) return library.status();
  const bool gpu = (*library)->desc().device_kind == FERRY_DEVICE_GPU;
  if (gpu && !cuda::BuiltWithCuda()) {
    return absl::FailedPreconditionError(
        absl::StrCat(display,
                     ": device_kind: the function runs on a GPU, and this build of ferry has no "
                     "CUDA backend (built without nvcc or with FERRY_ENABLE_CUDA=OFF)"));
  }
  if (gpu && !options.use_gpu) {
    return absl::FailedPreconditionError(
        absl::StrCat(display,
                     ": device_kind: the function runs on a GPU, and this replica was placed on "
                     "the CPU: set spec.hardware.accelerator: gpu"));
  }
  if (options.instances < 1) {
    return absl::InvalidArgumentError(absl::StrCat(display, ": instances must be >= 1"));
  }
  auto runtime =
      std::make_unique<PluginRuntime>(display, *std::move(library), std::move(signature), gpu);
  const std::string config = options.config_json.empty() ? "{}" : options.config_json;
  if (absl::Status s = runtime->AddInstances(options.instances, options.gpu_index, config);
      !s.ok()) {
    return s;
  }
  return std::unique_ptr<Runtime>(std::move(runtime));
}

absl::StatusOr<std::unique_ptr<Runtime>> CreatePluginRuntime(const FunctionSpec& spec,
                                                             const RuntimeContext& context) {
  if (absl::Status s = ::ferry::config::CheckKeys(spec, {"library", "config"}); !s.ok()) return s;
  const nlohmann::json* library = ::ferry::config::Find(spec, "library");
  if (library == nullptr) {
    return ::ferry::config::Error(
        spec, ::ferry::config::Field("library"),
        "required: the function library's file name in the agent's plugin "
        "directory (--plugin-dir), e.g. libmy_function.so");
  }
  absl::StatusOr<std::string> name = ::ferry::config::GetString(spec, "library", "");
  if (!name.ok()) return name.status();
  PluginRuntimeOptions options;
  options.library = *name;
  if (const nlohmann::json* c = ::ferry::config::Find(spec, "config"); c != nullptr) {
    if (!c->is_object()) {
      return ::ferry::config::Error(
          spec, ::ferry::config::Field("config"),
          absl::StrCat("expected an object (handed to the function as JSON), got ",
                       ::ferry::config::Describe(*c)));
    }
    options.config_json = c->dump();
  }
  options.plugin_dir = PluginDirectory();
  options.instances = static_cast<int>(std::max<int64_t>(1, spec.batching.instances));
  options.use_gpu = context.use_gpu;
  options.gpu_index = context.gpu_index;
  options.where = ::ferry::config::Where(spec);
  return LoadPluginRuntime(options);
}

FERRY_REGISTER_RUNTIME("plugin",
                       "a user's function from a shared library in the agent's --plugin-dir "
                       "(ferry/function.h)",
                       &CreatePluginRuntime);

}  // namespace ferry::kernels
