#include "kernels/mlp_runtime.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ferry/config_reader.h"
#include "ferry/runtime_registry.h"
#include "kernels/safetensors.h"

namespace ferry::kernels {
namespace {

constexpr std::pair<std::string_view, Activation> kActivations[] = {
    {"none", Activation::kNone},       {"relu", Activation::kRelu},
    {"gelu", Activation::kGelu},       {"tanh", Activation::kTanh},
    {"sigmoid", Activation::kSigmoid}, {"softmax", Activation::kSoftmax},
};

void Apply(Activation activation, float* x, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  switch (activation) {
    case Activation::kNone:
      return;
    case Activation::kRelu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
      return;
    case Activation::kGelu:
      for (int64_t i = 0; i < n; ++i) {
        x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * static_cast<float>(M_SQRT1_2)));
      }
      return;
    case Activation::kTanh:
      for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
      return;
    case Activation::kSigmoid:
      for (int64_t i = 0; i < n; ++i) x[i] = 1.0f / (1.0f + std::exp(-x[i]));
      return;
    case Activation::kSoftmax:
      for (int64_t r = 0; r < rows; ++r) {
        float* row = x + r * cols;
        const float max = *std::max_element(row, row + cols);
        float sum = 0.0f;
        for (int64_t c = 0; c < cols; ++c) {
          row[c] = std::exp(row[c] - max);
          sum += row[c];
        }
        const float inv = 1.0f / sum;
        for (int64_t c = 0; c < cols; ++c) row[c] *= inv;
      }
      return;
  }
}

// "layers.<i>.weight" / "layers.<i>.bias" -> i and which; false for any other name.
bool ParseLayerTensorName(std::string_view name, int64_t* index, bool* is_weight) {
  constexpr std::string_view kPrefix = "layers.";
  if (name.substr(0, kPrefix.size()) != kPrefix) return false;
  name.remove_prefix(kPrefix.size());
  const size_t dot = name.find('.');
  if (dot == std::string_view::npos || dot == 0) return false;
  const std::string_view digits = name.substr(0, dot);
  const std::string_view which = name.substr(dot + 1);
  if (which != "weight" && which != "bias") return false;
  // Canonical decimal only, so "layers.01.weight" cannot alias layer 1.
  if (digits.size() > 1 && digits[0] == '0') return false;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
  }
  if (digits.size() > 6) return false;
  *index = 0;
  for (char c : digits) *index = *index * 10 + (c - '0');
  *is_weight = which == "weight";
  return true;
}

// Per-thread scratch: the stacked input and the ping-pong activations. Executor threads are
// long-lived, so these grow to the largest batch once and are reused.
thread_local std::vector<float> tls_current;
thread_local std::vector<float> tls_next;

}  // namespace

std::string_view ActivationName(Activation a) {
  for (const auto& [name, value] : kActivations) {
    if (value == a) return name;
  }
  return "none";
}

bool ActivationFromName(std::string_view name, Activation* out) {
  for (const auto& [n, value] : kActivations) {
    if (n == name) {
      *out = value;
      return true;
    }
  }
  return false;
}

absl::StatusOr<MlpRuntime::Options> MlpRuntime::ParseOptions(const FunctionSpec& spec) {
  if (absl::Status s =
          config::CheckKeys(spec, {"activations", "inputName", "outputName", "precision"});
      !s.ok()) {
    return s;
  }
  Options options;
  if (spec.model_path.empty()) {
    return config::Error(spec, "spec.model.uri",
                         "the mlp runtime needs a model: a file:// URI of a .safetensors file "
                         "with tensors layers.{i}.weight and layers.{i}.bias");
  }
  options.model_path = spec.model_path;
  absl::StatusOr<std::optional<std::vector<std::string>>> activations =
      config::GetStringList(spec, "activations");
  if (!activations.ok()) return activations.status();
  if (activations->has_value()) {
    const std::vector<std::string>& names = **activations;
    for (size_t i = 0; i < names.size(); ++i) {
      Activation a;
      if (!ActivationFromName(names[i], &a)) {
        return config::Error(spec, absl::StrCat(config::Field("activations"), "[", i, "]"),
                             absl::StrCat("unknown activation '", names[i],
                                          "'; expected relu, gelu, tanh, sigmoid, none or "
                                          "softmax"));
      }
      if (a == Activation::kSoftmax && i + 1 != names.size()) {
        return config::Error(spec, absl::StrCat(config::Field("activations"), "[", i, "]"),
                             "softmax is allowed only on the last layer");
      }
      options.activations.push_back(a);
    }
    if (options.activations.empty()) {
      return config::Error(spec, config::Field("activations"),
                           "expected one activation per layer, got an empty list");
    }
  }
  absl::StatusOr<std::string> input = config::GetName(spec, "inputName", "input");
  if (!input.ok()) return input.status();
  absl::StatusOr<std::string> output = config::GetName(spec, "outputName", "output");
  if (!output.ok()) return output.status();
  options.input_name = *std::move(input);
  options.output_name = *std::move(output);
  absl::StatusOr<std::string> precision = config::GetString(spec, "precision", "fp32");
  if (!precision.ok()) return precision.status();
  if (!cuda::PrecisionFromName(*precision, &options.precision)) {
    return config::Error(spec, config::Field("precision"),
                         absl::StrCat("unknown precision '", *precision, "'; expected ",
                                      std::string(cuda::kPrecisionChoices)));
  }
  // Not parsed and ignored: a function pinned to the CPU cannot run at a reduced precision (with
  // `accelerator: any` the setting applies wherever the replica lands on a GPU).
  if (spec.hardware.accelerator == Accelerator::kCpu &&
      options.precision != cuda::Precision::kFp32) {
    return config::Error(spec, config::Field("precision"),
                         absl::StrCat("'", *precision,
                                      "' needs a GPU, and spec.hardware.accelerator is cpu (the "
                                      "CPU path computes in fp32; use fp32 or drop the key)"));
  }
  return options;
}

int64_t MlpRuntime::Weights::bytes() const {
  int64_t bytes = 0;
  for (const Layer& l : layers) {
    bytes += static_cast<int64_t>((l.weight.size() + l.bias.size()) * sizeof(float));
  }
  return bytes;
}

absl::StatusOr<std::unique_ptr<MlpRuntime::Weights>> MlpRuntime::LoadWeights(
    const std::string& model_path) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(model_path);
  if (!file.ok()) return file.status();
  const std::string where = absl::StrCat("mlp model '", model_path, "': ");

  std::map<int64_t, std::pair<const SafetensorsTensor*, const SafetensorsTensor*>> found;
  for (const SafetensorsTensor& t : (*file)->tensors()) {
    int64_t index = 0;
    bool is_weight = false;
    if (!ParseLayerTensorName(t.name, &index, &is_weight)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "unexpected tensor '", t.name,
                       "'; expected only layers.{i}.weight [out, in] and layers.{i}.bias [out]"));
    }
    (is_weight ? found[index].first : found[index].second) = &t;
  }
  if (found.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "no tensors; expected layers.0.weight and layers.0.bias, ..."));
  }
  const int64_t layer_count = static_cast<int64_t>(found.size());
  if (found.rbegin()->first != layer_count - 1) {
    for (int64_t i = 0; i < layer_count; ++i) {
      if (!found.contains(i)) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, "layer ", i, " is missing (layers must be numbered 0..L-1 without gaps)"));
      }
    }
  }

  auto weights = std::make_unique<Weights>();
  for (int64_t i = 0; i < layer_count; ++i) {
    const auto [weight, bias] = found[i];
    if (weight == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(where, "layers.", i, ".weight is missing"));
    }
    if (bias == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(where, "layers.", i, ".bias is missing"));
    }
    if (weight->shape.size() != 2 || weight->shape[0] < 1 || weight->shape[1] < 1) {
      return absl::InvalidArgumentError(absl::StrCat(where, "layers.", i, ".weight has shape [",
                                                     absl::StrJoin(weight->shape, ","),
                                                     "]; expected [out, in] with out, in >= 1"));
    }
    Layer layer;
    layer.out = weight->shape[0];
    layer.in = weight->shape[1];
    if (bias->shape != std::vector<int64_t>{layer.out}) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "layers.", i, ".bias has shape [", absl::StrJoin(bias->shape, ","),
                       "]; expected [", layer.out, "] to match layers.", i, ".weight [", layer.out,
                       ",", layer.in, "]"));
    }
    if (i > 0 && layer.in != weights->layers.back().out) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "layers.", i, ".weight takes ", layer.in, " inputs but layers.", i - 1,
          " produces ", weights->layers.back().out, " (weight shapes [out, in] must chain)"));
    }
    absl::StatusOr<std::vector<float>> w = (*file)->ReadFloat32(*weight);
    if (!w.ok()) return w.status();
    absl::StatusOr<std::vector<float>> b = (*file)->ReadFloat32(*bias);
    if (!b.ok()) return b.status();
    layer.weight = *std::move(w);
    layer.bias = *std::move(b);
    weights->layers.push_back(std::move(layer));
  }
  return weights;
}

absl::StatusOr<std::unique_ptr<MlpRuntime>> MlpRuntime::Create(const Options& options) {
  // Without a cache the runtime owns the only copy (`owned`), which a GPU replica consumes; with
  // one, `shared` is the cache's immutable copy, which a GPU replica copies from.
  std::unique_ptr<Weights> owned;
  std::shared_ptr<const Weights> shared;
  absl::StatusOr<std::string> key =
      options.weight_cache == nullptr
          ? absl::StatusOr<std::string>(absl::NotFoundError("no weight cache"))
          : WeightCache::FileKey("mlp", {options.model_path});
  if (key.ok()) {
    absl::StatusOr<std::shared_ptr<const Weights>> cached =
        options.weight_cache->GetOrLoad<Weights>(
            *key, [&]() -> absl::StatusOr<std::pair<std::shared_ptr<const Weights>, int64_t>> {
              absl::StatusOr<std::unique_ptr<Weights>> loaded = LoadWeights(options.model_path);
              if (!loaded.ok()) return loaded.status();
              const int64_t bytes = (*loaded)->bytes();
              return std::make_pair(std::shared_ptr<const Weights>(*std::move(loaded)), bytes);
            });
    if (!cached.ok()) return cached.status();
    shared = *std::move(cached);
  } else {
    // No cache, or the file cannot be stat'ed (LoadWeights then reports it as the reader does).
    absl::StatusOr<std::unique_ptr<Weights>> loaded = LoadWeights(options.model_path);
    if (!loaded.ok()) return loaded.status();
    owned = *std::move(loaded);
  }
  const Weights& weights = owned != nullptr ? *owned : *shared;
  const std::string where = absl::StrCat("mlp model '", options.model_path, "': ");
  const int64_t layer_count = static_cast<int64_t>(weights.layers.size());
  if (!options.activations.empty() &&
      static_cast<int64_t>(options.activations.size()) != layer_count) {
    return absl::InvalidArgumentError(absl::StrCat(where, "the model has ", layer_count,
                                                   " layers but ", options.activations.size(),
                                                   " activations are configured"));
  }
  for (size_t i = 0; i < options.activations.size(); ++i) {
    if (options.activations[i] == Activation::kSoftmax &&
        static_cast<int64_t>(i) + 1 != layer_count) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "softmax is allowed only on the last layer"));
    }
  }
  if (options.input_name.empty() || options.output_name.empty()) {
    return absl::InvalidArgumentError("mlp: input and output names must not be empty");
  }

  std::unique_ptr<MlpRuntime> rt(new MlpRuntime());
  rt->options_ = options;
  rt->options_.weight_cache = nullptr;  // only Create uses it
  for (int64_t i = 0; i < layer_count; ++i) {
    if (options.activations.empty()) {
      rt->activations_.push_back(i + 1 == layer_count ? Activation::kNone : Activation::kRelu);
    } else {
      rt->activations_.push_back(options.activations[i]);
    }
  }
  rt->input_dim_ = weights.layers.front().in;
  rt->output_dim_ = weights.layers.back().out;

  if (options.use_gpu) {
    if (options.gpu_max_rows < 1) {
      return absl::InvalidArgumentError("mlp: gpu_max_rows must be >= 1");
    }
    std::vector<cuda::GpuMlp::Layer> gpu_layers;
    // GpuMlp consumes host vectors: a private copy's are moved in (and freed once uploaded), the
    // cache's are copied (the copy is freed once uploaded; the cache's stays immutable).
    for (int64_t i = 0; i < layer_count; ++i) {
      const Layer& layer = weights.layers[i];
      cuda::GpuMlp::Layer g;
      if (owned != nullptr) {
        g.weight = std::move(owned->layers[i].weight);
        g.bias = std::move(owned->layers[i].bias);
      } else {
        g.weight = layer.weight;
        g.bias = layer.bias;
      }
      g.in = layer.in;
      g.out = layer.out;
      switch (rt->activations_[i]) {
        case Activation::kNone:
          g.act = cuda::Activation::kNone;
          break;
        case Activation::kRelu:
          g.act = cuda::Activation::kRelu;
          break;
        case Activation::kGelu:
          g.act = cuda::Activation::kGelu;
          break;
        case Activation::kTanh:
          g.act = cuda::Activation::kTanh;
          break;
        case Activation::kSigmoid:
          g.act = cuda::Activation::kSigmoid;
          break;
        case Activation::kSoftmax:
          g.act = cuda::Activation::kNone;
          g.softmax = true;
          break;
      }
      gpu_layers.push_back(std::move(g));
    }
    // From here on gpu_layers (consumed by GpuMlp::Create) and then the device hold the weights:
    // the host copy is freed (owned) or left to the cache, which keeps it idle within its budget
    // for the next load of this file. `weights` must not be used past this point.
    owned.reset();
    shared.reset();
    if (options.weight_cache != nullptr) options.weight_cache->Trim();
    if (options.gpu_slots < 1) return absl::InvalidArgumentError("mlp: gpu_slots must be >= 1");
    cuda::GpuMlp::Options gpu_options;
    gpu_options.device = options.gpu_index;
    gpu_options.max_rows = options.gpu_max_rows;
    gpu_options.slots = options.gpu_slots;
    gpu_options.precision = options.precision;
    absl::StatusOr<std::unique_ptr<cuda::GpuMlp>> gpu =
        cuda::GpuMlp::Create(gpu_options, std::move(gpu_layers));
    if (!gpu.ok()) {
      return absl::Status(gpu.status().code(),
                          absl::StrCat("mlp: GPU path not available on GPU ", options.gpu_index,
                                       ": ", gpu.status().message()));
    }
    rt->gpu_ = *std::move(gpu);
    rt->slots_.resize(static_cast<size_t>(rt->gpu_->num_slots()));
    // One warm-up batch at load: pays CUDA's lazy kernel loading and cuBLAS's first-call setup
    // before the first request, and a GPU this build has no kernel image for fails the load
    // (FailedPrecondition naming its compute capability) instead of every request.
    std::vector<float> warm_in(static_cast<size_t>(rt->gpu_->input_dim()), 0.0f);
    std::vector<float> warm_out(static_cast<size_t>(rt->gpu_->output_dim()));
    if (absl::Status s = rt->gpu_->Forward(warm_in.data(), 1, warm_out.data()); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("mlp: warm-up batch on GPU ", options.gpu_index,
                                                 " failed: ", s.message()));
    }
  } else {
    rt->weights_ =
        owned != nullptr ? std::shared_ptr<const Weights>(std::move(owned)) : std::move(shared);
  }

  rt->signature_.platform = "ferry_mlp";
  rt->signature_.batched = true;
  rt->signature_.inputs.push_back(
      TensorSpec{options.input_name, DataType::kFp32, {-1, rt->input_dim_}});
  rt->signature_.outputs.push_back(
      TensorSpec{options.output_name, DataType::kFp32, {-1, rt->output_dim_}});
  return rt;
}

absl::Status MlpRuntime::Execute(absl::Span<RuntimeCall> batch) {
  const int64_t in = input_dim_;
  const int64_t out = output_dim_;
  // Per-call row offsets into the stacked matrix; -1 marks a call that failed its own check.
  thread_local std::vector<int64_t> offsets;
  std::vector<float>& current = tls_current;
  std::vector<float>& next = tls_next;
  offsets.assign(batch.size(), -1);

  int64_t total_rows = 0;
  std::vector<const Tensor*> inputs(batch.size(), nullptr);
  for (size_t c = 0; c < batch.size(); ++c) {
    const Tensor* x = nullptr;
    for (const Tensor& t : batch[c].request->inputs) {
      if (t.name == options_.input_name) x = &t;
    }
    if (x == nullptr || x->dtype != DataType::kFp32 || x->shape.size() != 2 || x->shape[1] != in ||
        x->shape[0] < 0 || static_cast<int64_t>(x->data.size()) != x->shape[0] * in * 4) {
      batch[c].status = absl::InvalidArgumentError(
          absl::StrCat("input '", options_.input_name, "' must be FP32 [-1, ", in, "]"));
      continue;
    }
    inputs[c] = x;
    offsets[c] = total_rows;
    total_rows += x->shape[0];
  }
  if (total_rows == 0) {
    for (size_t c = 0; c < batch.size(); ++c) {
      if (inputs[c] == nullptr) continue;
      Tensor y{options_.output_name, DataType::kFp32, {0, out}, {}, {}};
      batch[c].response->outputs.push_back(std::move(y));
    }
    return absl::OkStatus();
  }

  current.resize(static_cast<size_t>(total_rows * in));
  for (size_t c = 0; c < batch.size(); ++c) {
    if (inputs[c] == nullptr) continue;
    std::memcpy(current.data() + offsets[c] * in, inputs[c]->data.data(), inputs[c]->data.size());
  }

  if (gpu_ != nullptr) {
    next.resize(static_cast<size_t>(total_rows * out));
    if (absl::Status s = gpu_->Forward(current.data(), total_rows, next.data()); !s.ok()) {
      return s;
    }
    std::swap(current, next);
  } else {
    RunCpu(total_rows);
  }

  for (size_t c = 0; c < batch.size(); ++c) {
    if (inputs[c] == nullptr) continue;
    const int64_t rows = inputs[c]->shape[0];
    Tensor y;
    y.name = options_.output_name;
    y.dtype = DataType::kFp32;
    y.shape = {rows, out};
    y.data.assign(reinterpret_cast<const char*>(current.data() + offsets[c] * out),
                  static_cast<size_t>(rows * out) * sizeof(float));
    batch[c].response->outputs.push_back(std::move(y));
  }
  return absl::OkStatus();
}

int MlpRuntime::num_slots() const { return gpu_ != nullptr ? gpu_->num_slots() : 0; }

absl::Status MlpRuntime::Pack(int slot, absl::Span<RuntimeCall> batch) {
  if (gpu_ == nullptr || slot < 0 || slot >= static_cast<int>(slots_.size())) {
    return absl::FailedPreconditionError(absl::StrCat("mlp: no GPU slot ", slot));
  }
  const int64_t in = input_dim_;
  SlotState& st = slots_[slot];
  st.offsets.assign(batch.size(), -1);
  st.counts.assign(batch.size(), 0);
  st.rows = 0;
  std::vector<const Tensor*> inputs(batch.size(), nullptr);
  for (size_t c = 0; c < batch.size(); ++c) {
    const Tensor* x = nullptr;
    for (const Tensor& t : batch[c].request->inputs) {
      if (t.name == options_.input_name) x = &t;
    }
    if (x == nullptr || x->dtype != DataType::kFp32 || x->shape.size() != 2 || x->shape[1] != in ||
        x->shape[0] < 0 || static_cast<int64_t>(x->data.size()) != x->shape[0] * in * 4) {
      batch[c].status = absl::InvalidArgumentError(
          absl::StrCat("input '", options_.input_name, "' must be FP32 [-1, ", in, "]"));
      continue;
    }
    inputs[c] = x;
    st.offsets[c] = st.rows;
    st.counts[c] = x->shape[0];
    st.rows += x->shape[0];
  }
  if (st.rows > gpu_->max_rows()) {
    return absl::InvalidArgumentError(absl::StrCat("mlp: a batch of ", st.rows,
                                                   " rows exceeds the GPU slot's ",
                                                   gpu_->max_rows(), " rows (maxBatchSize)"));
  }
  // The GpuMlp slot is held until Release; with the pipeline's depth <= its slots this never
  // waits (only a concurrent synchronous Execute could hold one).
  st.gpu_slot = gpu_->AcquireSlot();
  // The one host-side copy: each request's bytes straight into pinned memory.
  float* pinned = gpu_->slot_input(st.gpu_slot);
  for (size_t c = 0; c < batch.size(); ++c) {
    if (inputs[c] == nullptr) continue;
    std::memcpy(pinned + st.offsets[c] * in, inputs[c]->data.data(), inputs[c]->data.size());
  }
  return absl::OkStatus();
}

absl::Status MlpRuntime::Launch(int slot, StageDone done) {
  SlotState& st = slots_[slot];
  if (st.rows == 0) {  // only empty or failed requests: nothing for the device
    done(absl::OkStatus());
    return absl::OkStatus();
  }
  return gpu_->Launch(st.gpu_slot, st.rows, std::move(done));
}

absl::Status MlpRuntime::Unpack(int slot, absl::Span<RuntimeCall> batch) {
  const SlotState& st = slots_[slot];
  const int64_t out = output_dim_;
  const float* pinned = st.rows > 0 ? gpu_->slot_output(st.gpu_slot) : nullptr;
  for (size_t c = 0; c < batch.size(); ++c) {
    if (st.offsets[c] < 0 || !batch[c].status.ok()) continue;
    const int64_t begin = st.offsets[c];
    const int64_t rows = st.counts[c];
    Tensor y;
    y.name = options_.output_name;
    y.dtype = DataType::kFp32;
    y.shape = {rows, out};
    if (rows > 0) {
      y.data.assign(reinterpret_cast<const char*>(pinned + begin * out),
                    static_cast<size_t>(rows * out) * sizeof(float));
    }
    batch[c].response->outputs.push_back(std::move(y));
  }
  return absl::OkStatus();
}

void MlpRuntime::Release(int slot) {
  SlotState& st = slots_[slot];
  if (st.gpu_slot >= 0) gpu_->ReleaseSlot(st.gpu_slot);
  st.gpu_slot = -1;
  st.rows = 0;
  st.offsets.clear();
  st.counts.clear();
}

DeviceStageTimes MlpRuntime::StageTimes(int slot) {
  const SlotState& st = slots_[slot];
  DeviceStageTimes t;
  if (st.gpu_slot < 0 || st.rows == 0) return t;
  absl::StatusOr<cuda::GpuMlp::SlotTimes> gt = gpu_->LastTimes(st.gpu_slot);
  if (!gt.ok()) return t;
  t.h2d_us = gt->h2d_us;
  t.compute_us = gt->compute_us;
  t.d2h_us = gt->d2h_us;
  return t;
}

void MlpRuntime::RunCpu(int64_t total_rows) const {
  std::vector<float>& current = tls_current;
  std::vector<float>& next = tls_next;
  for (size_t i = 0; i < weights_->layers.size(); ++i) {
    const Layer& layer = weights_->layers[i];
    next.resize(static_cast<size_t>(total_rows * layer.out));
    for (int64_t r = 0; r < total_rows; ++r) {
      std::memcpy(next.data() + r * layer.out, layer.bias.data(), layer.out * sizeof(float));
    }
    // next[rows, out] = current[rows, in] * weight[out, in]^T + next (the bias rows).
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(total_rows),
                static_cast<blasint>(layer.out), static_cast<blasint>(layer.in), 1.0f,
                current.data(), static_cast<blasint>(layer.in), layer.weight.data(),
                static_cast<blasint>(layer.in), 1.0f, next.data(), static_cast<blasint>(layer.out));
    Apply(activations_[i], next.data(), total_rows, layer.out);
    std::swap(current, next);
  }
}

absl::StatusOr<std::unique_ptr<Runtime>> CreateMlpRuntime(const FunctionSpec& spec,
                                                          const RuntimeContext& context) {
  absl::StatusOr<MlpRuntime::Options> options = MlpRuntime::ParseOptions(spec);
  if (!options.ok()) return options.status();
  options->weight_cache = context.weight_cache;
  options->use_gpu = context.use_gpu;
  options->gpu_index = context.gpu_index;
  options->gpu_max_rows = std::max<int64_t>(1, spec.batching.max_batch_size);
  options->gpu_slots = static_cast<int>(std::max<int64_t>(1, spec.batching.pipeline_depth));
  absl::StatusOr<std::unique_ptr<MlpRuntime>> runtime = MlpRuntime::Create(*options);
  if (!runtime.ok()) {
    // Model problems are never FailedPrecondition; that code means the GPU is unusable.
    const bool gpu_problem =
        options->use_gpu && runtime.status().code() == absl::StatusCode::kFailedPrecondition;
    return absl::Status(
        runtime.status().code(),
        absl::StrCat(config::Where(spec),
                     gpu_problem ? "spec.hardware.accelerator: " : "spec.model.uri: ",
                     runtime.status().message()));
  }
  return std::unique_ptr<Runtime>(*std::move(runtime));
}

FERRY_REGISTER_RUNTIME("mlp", "multi-layer perceptron from a .safetensors file (CPU or GPU)",
                       &CreateMlpRuntime);

}  // namespace ferry::kernels
