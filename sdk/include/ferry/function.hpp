// A header-only C++ wrapper over the function plugin ABI (ferry/function.h): a function is a
// class with a constructor and one method, and FERRY_DEFINE_FUNCTION writes the C entry point.
//
//   class Shout {
//    public:
//     explicit Shout(std::string_view config_json) {}        // or (config, const Device&)
//     void Execute(ferry::function::Batch& batch) {           // throw to fail the batch
//       std::vector<std::string> out;
//       for (std::string_view s : batch.input(0).strings()) out.emplace_back(...);
//       batch.SetStrings(0, {batch.rows()}, out);
//     }
//   };
//   FERRY_DEFINE_FUNCTION(Shout, "shout", FERRY_DEVICE_CPU,
//                         {{"text", "BYTES", {-1}}},            // inputs
//                         {{"loud", "BYTES", {-1}}});           // outputs
//
// Only C types cross the library boundary: exceptions thrown by the constructor or Execute
// become a ferry_error inside the library, and the class never leaves it. The ABI's rules on
// threading (one thread at a time per instance), memory and lifetime apply unchanged: a Batch
// and every pointer it hands out are valid only during Execute.
#ifndef FERRY_FUNCTION_HPP_
#define FERRY_FUNCTION_HPP_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "ferry/function.h"

namespace ferry::function {

// One declared tensor: name, KServe v2 datatype, shape with -1 first (the batch dim).
struct TensorDecl {
  const char* name;
  const char* datatype;
  std::vector<int64_t> shape;
};

// Where an instance runs (a copy of ferry_device).
struct Device {
  ferry_device_kind kind = FERRY_DEVICE_CPU;
  int gpu_ordinal = -1;
  void* cuda_stream = nullptr;  // cudaStream_t for GPU functions
};

// Encodes strings in the BYTES layout (4-byte little-endian length, then the bytes).
inline std::string EncodeStrings(const std::vector<std::string>& elements) {
  std::string out;
  size_t total = 0;
  for (const std::string& e : elements) total += 4 + e.size();
  out.reserve(total);
  for (const std::string& e : elements) {
    const auto n = static_cast<uint32_t>(e.size());
    const char len[4] = {static_cast<char>(n & 0xff), static_cast<char>((n >> 8) & 0xff),
                         static_cast<char>((n >> 16) & 0xff), static_cast<char>((n >> 24) & 0xff)};
    out.append(len, 4);
    out.append(e);
  }
  return out;
}

// A view of one stacked input.
class Input {
 public:
  explicit Input(const ferry_input& in) : in_(in) {}
  std::string_view name() const { return in_.name; }
  const int64_t* shape() const { return in_.shape; }
  uint32_t rank() const { return in_.rank; }
  int64_t dim(uint32_t i) const { return in_.shape[i]; }
  uint64_t byte_size() const { return in_.byte_size; }
  const void* raw() const { return in_.data; }
  template <typename T>
  const T* data() const {
    return static_cast<const T*>(in_.data);
  }
  // The elements of a BYTES input (host memory), in row-major order. Views into the batch.
  std::vector<std::string_view> strings() const {
    std::vector<std::string_view> out;
    const auto* p = static_cast<const unsigned char*>(in_.data);
    uint64_t at = 0;
    while (at + 4 <= in_.byte_size) {
      const uint32_t n = uint32_t{p[at]} | uint32_t{p[at + 1]} << 8 | uint32_t{p[at + 2]} << 16 |
                         uint32_t{p[at + 3]} << 24;
      at += 4;
      if (n > in_.byte_size - at) throw std::runtime_error("malformed BYTES input");
      out.emplace_back(reinterpret_cast<const char*>(p + at), n);
      at += n;
    }
    return out;
  }

 private:
  const ferry_input& in_;
};

// One batch, as Execute sees it.
class Batch {
 public:
  explicit Batch(const ferry_batch* b) : b_(b) {}
  const ferry_batch* c_batch() const { return b_; }
  // Total rows (the batch dim of every input and output), and the requests stacked in them.
  int64_t rows() const { return b_->rows; }
  uint32_t num_items() const { return b_->num_items; }
  int64_t item_rows(uint32_t item) const { return b_->item_rows[item]; }
  uint32_t num_inputs() const { return b_->num_inputs; }
  Input input(uint32_t index) const { return Input(b_->inputs[index]); }
  uint32_t num_outputs() const { return b_->num_outputs; }
  // An output the agent allocated (fixed dims, not BYTES), or one allocated with Allocate.
  template <typename T>
  T* output(uint32_t index) const {
    return static_cast<T*>(b_->outputs[index].data);
  }
  const ferry_output& output_info(uint32_t index) const { return b_->outputs[index]; }
  // Allocates an output whose size only Execute knows; throws on a shape the declaration or the
  // batch does not allow.
  void* Allocate(uint32_t index, const std::vector<int64_t>& shape, uint64_t byte_size) const {
    ferry_error* e = b_->host->allocate_output(b_, index, shape.data(),
                                               static_cast<uint32_t>(shape.size()), byte_size);
    if (e != nullptr) throw HostError(e);
    return b_->outputs[index].data;
  }
  // Allocates a BYTES output and fills it with `elements`.
  void SetStrings(uint32_t index, const std::vector<int64_t>& shape,
                  const std::vector<std::string>& elements) const {
    const std::string encoded = EncodeStrings(elements);
    void* data = Allocate(index, shape, encoded.size());
    if (!encoded.empty()) std::memcpy(data, encoded.data(), encoded.size());
  }
  // Fails request `item` only; the other requests of the batch still get their outputs.
  void FailItem(uint32_t item, const std::string& message) const {
    if (b_->item_errors[item] == nullptr)
      b_->item_errors[item] = b_->host->error_new(message.c_str());
  }

  // An error the host already made (from allocate_output): passed back as is.
  class HostError : public std::exception {
   public:
    explicit HostError(ferry_error* e) : error(e) {}
    const char* what() const noexcept override { return "ferry host error"; }
    ferry_error* error;
  };

 private:
  const ferry_batch* b_;
};

namespace internal {

template <typename T>
struct Holder {
  T function;
  template <typename... Args>
  explicit Holder(Args&&... args) : function(static_cast<Args&&>(args)...) {}
};

// The C descriptor built from the C++ declaration; static for the library's lifetime.
template <typename T>
class Adapter {
 public:
  Adapter(const char* name, ferry_device_kind kind, std::vector<TensorDecl> inputs,
          std::vector<TensorDecl> outputs, const char* version = nullptr)
      : inputs_(std::move(inputs)), outputs_(std::move(outputs)) {
    for (const TensorDecl& d : inputs_) {
      c_inputs_.push_back(
          {d.name, d.datatype, d.shape.data(), static_cast<uint32_t>(d.shape.size())});
    }
    for (const TensorDecl& d : outputs_) {
      c_outputs_.push_back(
          {d.name, d.datatype, d.shape.data(), static_cast<uint32_t>(d.shape.size())});
    }
    desc_.struct_size = sizeof(ferry_function_v1);
    desc_.abi_major = FERRY_FUNCTION_ABI_MAJOR;
    desc_.abi_minor = FERRY_FUNCTION_ABI_MINOR;
    desc_.name = name;
    desc_.version = version;
    desc_.device_kind = kind;
    desc_.inputs = c_inputs_.data();
    desc_.num_inputs = static_cast<uint32_t>(c_inputs_.size());
    desc_.outputs = c_outputs_.data();
    desc_.num_outputs = static_cast<uint32_t>(c_outputs_.size());
    desc_.create = &Create;
    desc_.execute = &Execute;
    desc_.destroy = &Destroy;
  }
  const ferry_function_v1* descriptor() const { return &desc_; }

 private:
  static ferry_error* Create(const ferry_host_api* host, const char* config_json,
                             const ferry_device* device, ferry_instance** instance) {
    try {
      const std::string_view config(config_json == nullptr ? "{}" : config_json);
      Holder<T>* holder = nullptr;
      if constexpr (std::is_constructible_v<T, std::string_view, const Device&>) {
        const Device d{device->kind, device->gpu_ordinal, device->cuda_stream};
        holder = new Holder<T>(config, d);
      } else {
        static_assert(std::is_constructible_v<T, std::string_view>,
                      "a ferry function class needs a constructor (std::string_view config_json) "
                      "or (std::string_view config_json, const ferry::function::Device&)");
        holder = new Holder<T>(config);
      }
      *instance = reinterpret_cast<ferry_instance*>(holder);
      return nullptr;
    } catch (const std::exception& e) {
      return host->error_new(e.what());
    } catch (...) {
      return host->error_new("the function's constructor threw a non-standard exception");
    }
  }

  static ferry_error* Execute(ferry_instance* instance, const ferry_batch* batch) {
    try {
      Batch b(batch);
      reinterpret_cast<Holder<T>*>(instance)->function.Execute(b);
      return nullptr;
    } catch (const Batch::HostError& e) {
      return e.error;
    } catch (const std::bad_alloc&) {
      return batch->host->error_new("out of memory in the function");
    } catch (const std::exception& e) {
      return batch->host->error_new(e.what());
    } catch (...) {
      return batch->host->error_new("the function threw a non-standard exception");
    }
  }

  static void Destroy(ferry_instance* instance) {
    try {
      delete reinterpret_cast<Holder<T>*>(instance);
    } catch (...) {  // a throwing destructor must not cross the ABI
    }
  }

  std::vector<TensorDecl> inputs_;
  std::vector<TensorDecl> outputs_;
  std::vector<ferry_tensor_decl> c_inputs_;
  std::vector<ferry_tensor_decl> c_outputs_;
  ferry_function_v1 desc_{};
};

}  // namespace internal
}  // namespace ferry::function

// Defines the library's entry point for class `ClassName`. The rest are the descriptor:
//   name (const char*), device (FERRY_DEVICE_CPU or FERRY_DEVICE_GPU),
//   {inputs...}, {outputs...} as {name, datatype, {shape...}}, and optionally a version string.
// Use it once per library, at namespace scope.
#define FERRY_DEFINE_FUNCTION(ClassName, ...)                                                    \
  FERRY_FUNCTION_EXPORT const ferry_function_v1* ferry_function_entry(uint32_t host_abi_major,   \
                                                                      uint32_t host_abi_minor) { \
    (void)host_abi_major;                                                                        \
    (void)host_abi_minor;                                                                        \
    static const ::ferry::function::internal::Adapter<ClassName> adapter(__VA_ARGS__);           \
    return adapter.descriptor();                                                                 \
  }

#endif  // FERRY_FUNCTION_HPP_
