#include "kernels/embedding_runtime.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ferry/config_reader.h"
#include "ferry/runtime_registry.h"
#include "ferry/weight_cache.h"
#include "nlohmann/json.hpp"

namespace ferry::kernels {
namespace {

std::string Join(const std::string& dir, const std::string& name) {
  if (!dir.empty() && dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

bool Exists(const std::string& path) { return std::ifstream(path).good(); }

}  // namespace

absl::StatusOr<std::unique_ptr<SentenceEncoder>> SentenceEncoder::Load(const std::string& model_dir,
                                                                       int max_seq_length) {
  for (const std::string name :
       {"config.json", "model.safetensors", "vocab.txt", "sentence_bert_config.json"}) {
    if (!Exists(Join(model_dir, name))) {
      return absl::NotFoundError(absl::StrCat(
          "model folder '", model_dir, "' has no ", name,
          " (a sentence-transformers BERT folder needs config.json, model.safetensors, "
          "vocab.txt and sentence_bert_config.json)"));
    }
  }
  absl::StatusOr<BertConfig> config = ReadBertConfig(Join(model_dir, "config.json"));
  if (!config.ok()) return config.status();

  const std::string st_path = Join(model_dir, "sentence_bert_config.json");
  absl::StatusOr<nlohmann::json> st = ReadJsonObjectFile(st_path);
  if (!st.ok()) return st.status();
  auto msl = st->find("max_seq_length");
  if (msl == st->end() || !msl->is_number_integer() || msl->get<int64_t>() < 2 ||
      msl->get<int64_t>() > config->max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat(st_path, ": max_seq_length: expected an integer in [2, ",
                     config->max_position_embeddings, "] (max_position_embeddings)"));
  }
  int seq = static_cast<int>(msl->get<int64_t>());
  if (max_seq_length > 0) seq = std::min(seq, max_seq_length);

  const std::string pooling_path = Join(model_dir, "1_Pooling/config.json");
  if (Exists(pooling_path)) {
    absl::StatusOr<nlohmann::json> pooling = ReadJsonObjectFile(pooling_path);
    if (!pooling.ok()) return pooling.status();
    for (const auto& [key, value] : pooling->items()) {
      if (key.rfind("pooling_mode_", 0) != 0 || !value.is_boolean()) continue;
      if (value.get<bool>() != (key == "pooling_mode_mean_tokens")) {
        return absl::UnimplementedError(
            absl::StrCat(pooling_path, ": ", key, " is ", value.dump(),
                         "; ferry's sentence-embedding runtime implements mean pooling only"));
      }
    }
  }
  const std::string tokenizer_config_path = Join(model_dir, "tokenizer_config.json");
  if (Exists(tokenizer_config_path)) {
    absl::StatusOr<nlohmann::json> tc = ReadJsonObjectFile(tokenizer_config_path);
    if (!tc.ok()) return tc.status();
    auto lower = tc->find("do_lower_case");
    if (lower != tc->end() && lower->is_boolean() && !lower->get<bool>()) {
      return absl::UnimplementedError(
          absl::StrCat(tokenizer_config_path,
                       ": do_lower_case is false; ferry's WordPiece tokenizer is uncased only"));
    }
  }

  WordPieceTokenizer::Options topts;
  topts.vocab_path = Join(model_dir, "vocab.txt");
  topts.max_seq_length = seq;
  absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> tokenizer = WordPieceTokenizer::Create(topts);
  if (!tokenizer.ok()) return tokenizer.status();
  if ((*tokenizer)->vocab_size() > static_cast<size_t>(config->vocab_size)) {
    return absl::InvalidArgumentError(absl::StrCat(topts.vocab_path, " has ",
                                                   (*tokenizer)->vocab_size(),
                                                   " tokens but config.json's "
                                                   "vocab_size is ",
                                                   config->vocab_size));
  }
  absl::StatusOr<BertWeights> weights =
      LoadBertWeights(Join(model_dir, "model.safetensors"), *config);
  if (!weights.ok()) return weights.status();
  absl::StatusOr<std::unique_ptr<BertEncoder>> encoder =
      BertEncoder::Create(*config, *std::move(weights));
  if (!encoder.ok()) return encoder.status();

  std::unique_ptr<SentenceEncoder> e(new SentenceEncoder());
  e->tokenizer_ = *std::move(tokenizer);
  e->encoder_ = *std::move(encoder);
  return e;
}

absl::StatusOr<EmbeddingRuntime::Options> EmbeddingRuntime::ParseOptions(const FunctionSpec& spec) {
  if (absl::Status s =
          config::CheckKeys(spec, {"inputName", "outputName", "maxSeqLength", "precision"});
      !s.ok()) {
    return s;
  }
  if (spec.model_path.empty()) {
    return config::Error(spec, "spec.model.uri",
                         "the sentence-embedding runtime needs a model: a file:// URI of a "
                         "folder with config.json, model.safetensors, vocab.txt and "
                         "sentence_bert_config.json (make models fetches all-MiniLM-L6-v2)");
  }
  Options options;
  options.model_dir = spec.model_path;
  absl::StatusOr<std::string> input = config::GetName(spec, "inputName", "text");
  if (!input.ok()) return input.status();
  absl::StatusOr<std::string> output = config::GetName(spec, "outputName", "embedding");
  if (!output.ok()) return output.status();
  absl::StatusOr<int64_t> seq = config::GetInt(spec, "maxSeqLength", 0, 2, 8192);
  if (!seq.ok()) return seq.status();
  options.input_name = *std::move(input);
  options.output_name = *std::move(output);
  options.max_seq_length = static_cast<int>(*seq);
  // Checked on every placement, so a manifest that is wrong only for GPUs fails on a CPU node too.
  absl::StatusOr<std::string> precision = config::GetString(spec, "precision", "fp16");
  if (!precision.ok()) return precision.status();
  if (!cuda::PrecisionFromName(*precision, &options.precision)) {
    return config::Error(spec, config::Field("precision"),
                         absl::StrCat("unknown precision '", *precision, "'; expected ",
                                      std::string(cuda::kPrecisionChoices),
                                      " (the GPU encoder's; the CPU path is always fp32)"));
  }
  // Nothing parsed and ignored: a function pinned to the CPU cannot run at a half precision.
  if (config::Find(spec, "precision") != nullptr &&
      spec.hardware.accelerator == Accelerator::kCpu &&
      options.precision != cuda::Precision::kFp32) {
    return config::Error(spec, config::Field("precision"),
                         absl::StrCat("'", *precision,
                                      "' needs a GPU, and spec.hardware.accelerator is cpu (the "
                                      "CPU path computes in fp32; use fp32 or drop the key)"));
  }
  return options;
}

namespace {

// The folder's encoder, from the node's weight cache when one is given. The key names every file
// Load reads (optional ones when present) with its size and mtime, and the sequence length, which
// shapes the tokenizer; the size charged is that of the weights and vocabulary as loaded (float32
// weights: the safetensors file's size, which they match for an F32 checkpoint).
absl::StatusOr<std::shared_ptr<const SentenceEncoder>> LoadEncoder(
    const EmbeddingRuntime::Options& options) {
  if (options.weight_cache == nullptr) {
    absl::StatusOr<std::unique_ptr<SentenceEncoder>> e =
        SentenceEncoder::Load(options.model_dir, options.max_seq_length);
    if (!e.ok()) return e.status();
    return std::shared_ptr<const SentenceEncoder>(*std::move(e));
  }
  std::vector<std::string> files;
  for (const char* name :
       {"config.json", "model.safetensors", "vocab.txt", "sentence_bert_config.json",
        "1_Pooling/config.json", "tokenizer_config.json"}) {
    if (Exists(Join(options.model_dir, name))) files.push_back(Join(options.model_dir, name));
  }
  absl::StatusOr<std::string> key = WeightCache::FileKey(
      absl::StrCat("sentence-embedding:max_seq_length=", options.max_seq_length), files);
  if (!key.ok()) return key.status();
  return options.weight_cache->GetOrLoad<SentenceEncoder>(
      *key, [&]() -> absl::StatusOr<std::pair<std::shared_ptr<const SentenceEncoder>, int64_t>> {
        absl::StatusOr<std::unique_ptr<SentenceEncoder>> e =
            SentenceEncoder::Load(options.model_dir, options.max_seq_length);
        if (!e.ok()) return e.status();
        int64_t bytes = 0;
        for (const char* name : {"model.safetensors", "vocab.txt"}) {
          std::ifstream f(Join(options.model_dir, name), std::ios::binary | std::ios::ate);
          if (f) bytes += static_cast<int64_t>(f.tellg());
        }
        return std::make_pair(std::shared_ptr<const SentenceEncoder>(*std::move(e)), bytes);
      });
}

}  // namespace

absl::StatusOr<std::unique_ptr<EmbeddingRuntime>> EmbeddingRuntime::Create(const Options& options) {
  absl::StatusOr<std::shared_ptr<const SentenceEncoder>> encoder = LoadEncoder(options);
  if (!encoder.ok()) return encoder.status();
  std::unique_ptr<EmbeddingRuntime> rt(new EmbeddingRuntime());
  rt->options_ = options;
  rt->encoder_ = *std::move(encoder);
  rt->signature_.platform = "ferry_sentence_embedding";
  rt->signature_.batched = true;
  rt->signature_.inputs.push_back(TensorSpec{options.input_name, DataType::kBytes, {-1}});
  rt->signature_.outputs.push_back(
      TensorSpec{options.output_name, DataType::kFp32, {-1, rt->encoder_->dim()}});
  if (options.use_gpu) {
    // The GPU reads the FP32 host weights once, converting them to the precision's format there;
    // the host copy stays shared with the weight cache (and the tokenizer needs the folder anyway).
    const BertEncoder& cpu = rt->encoder_->encoder();
    const BertConfig& c = cpu.config();
    const BertWeights& w = cpu.weights();
    cuda::GpuBertModel model;
    model.vocab_size = c.vocab_size;
    model.hidden_size = c.hidden_size;
    model.num_heads = c.num_heads;
    model.intermediate_size = c.intermediate_size;
    model.max_position_embeddings = c.max_position_embeddings;
    model.layer_norm_eps = c.layer_norm_eps;
    model.word_embeddings = w.word_embeddings;
    model.position_embeddings = w.position_embeddings;
    model.token_type0 = absl::MakeConstSpan(w.token_type_embeddings).subspan(0, c.hidden_size);
    model.embedding_ln_gamma = w.embedding_ln_gamma;
    model.embedding_ln_beta = w.embedding_ln_beta;
    for (const BertLayerWeights& l : w.layers) {
      model.layers.push_back(cuda::GpuBertLayer{l.qkv_weight, l.qkv_bias, l.attn_out_weight,
                                                l.attn_out_bias, l.attn_ln_gamma, l.attn_ln_beta,
                                                l.ffn_in_weight, l.ffn_in_bias, l.ffn_out_weight,
                                                l.ffn_out_bias, l.out_ln_gamma, l.out_ln_beta});
    }
    if (rt->encoder_->max_seq_length() > cuda::kBertMaxAttentionLength) {
      return absl::InvalidArgumentError(
          absl::StrCat("sentence-embedding: max_seq_length ", rt->encoder_->max_seq_length(),
                       " is over the GPU encoder's ", cuda::kBertMaxAttentionLength,
                       " tokens (set spec.config.maxSeqLength to at most that)"));
    }
    cuda::GpuBert::Options gopts;
    gopts.device = options.gpu_index;
    gopts.precision = options.precision;
    gopts.max_tokens = options.gpu_max_tokens;
    gopts.max_sequences = std::min<int64_t>(options.gpu_max_tokens, 4096);
    gopts.num_slots = options.gpu_slots;
    absl::StatusOr<std::unique_ptr<cuda::GpuBert>> gpu = cuda::GpuBert::Create(gopts, model);
    if (!gpu.ok()) {
      return absl::Status(
          gpu.status().code(),
          absl::StrCat("sentence-embedding: GPU path not available on GPU ", options.gpu_index,
                       " (precision ", std::string(cuda::PrecisionName(options.precision)),
                       "): ", gpu.status().message()));
    }
    rt->gpu_ = *std::move(gpu);
    rt->slots_.resize(static_cast<size_t>(rt->gpu_->num_slots()));
  }
  return rt;
}

absl::Status EmbeddingRuntime::EmbedSequences(absl::Span<const std::vector<int32_t>> sequences,
                                              float* out) const {
  if (gpu_ != nullptr) return gpu_->Embed(sequences, /*normalize=*/true, out);
  return encoder_->Embed(sequences, out);
}

int64_t EmbeddingRuntime::Cost(const InferenceRequest& request) const {
  int64_t tokens = 0;
  std::vector<int32_t> ids;
  for (const Tensor& t : request.inputs) {
    if (t.name != options_.input_name || t.dtype != DataType::kBytes) continue;
    for (size_t r = 0; r < t.bytes.size(); ++r) {
      const std::string_view text = t.bytes[r];
      ids.clear();
      if (encoder_->Tokenize(text, &ids).ok()) {
        tokens += static_cast<int64_t>(ids.size());
      } else {
        tokens +=
            std::min<int64_t>(static_cast<int64_t>(text.size()) + 2, encoder_->max_seq_length());
      }
    }
  }
  return std::max<int64_t>(1, tokens);
}

void EmbeddingRuntime::TokenizeBatch(absl::Span<RuntimeCall> batch, Tokenized* out) const {
  // Requests with a bad row fail alone and add no sequences.
  out->sequences.clear();
  out->first_row.assign(batch.size(), 0);
  out->rows.assign(batch.size(), 0);
  std::vector<std::vector<int32_t>>& sequences = out->sequences;
  for (size_t c = 0; c < batch.size(); ++c) {
    RuntimeCall& call = batch[c];
    const Tensor* text = nullptr;
    for (const Tensor& t : call.request->inputs) {
      if (t.name == options_.input_name) text = &t;
    }
    if (text == nullptr || text->dtype != DataType::kBytes) {
      call.status = absl::InvalidArgumentError(
          absl::StrCat("missing BYTES input '", options_.input_name, "'"));
      continue;
    }
    const size_t begin = sequences.size();
    for (size_t r = 0; r < text->bytes.size(); ++r) {
      sequences.emplace_back();
      if (absl::Status s = encoder_->Tokenize(text->bytes[r], &sequences.back()); !s.ok()) {
        call.status = absl::InvalidArgumentError(
            absl::StrCat("input '", options_.input_name, "' element ", r, ": ", s.message()));
        break;
      }
    }
    if (!call.status.ok()) {
      sequences.resize(begin);
      continue;
    }
    out->first_row[c] = begin;
    out->rows[c] = sequences.size() - begin;
  }
}

void EmbeddingRuntime::Scatter(absl::Span<RuntimeCall> batch, const Tokenized& t,
                               const float* embeddings) const {
  const size_t dim = static_cast<size_t>(encoder_->dim());
  for (size_t c = 0; c < batch.size(); ++c) {
    RuntimeCall& call = batch[c];
    if (!call.status.ok()) continue;
    // The tokens embedded, for usage accounting (OpenAI's /v1/embeddings usage).
    int64_t tokens = 0;
    for (size_t r = 0; r < t.rows[c]; ++r) {
      tokens += static_cast<int64_t>(t.sequences[t.first_row[c] + r].size());
    }
    call.response->parameters["tokens"] = tokens;
    Tensor out;
    out.name = options_.output_name;
    out.dtype = DataType::kFp32;
    out.shape = {static_cast<int64_t>(t.rows[c]), static_cast<int64_t>(dim)};
    out.data.resize(t.rows[c] * dim * sizeof(float));
    if (t.rows[c] > 0) {
      std::memcpy(out.data.data(), embeddings + t.first_row[c] * dim, out.data.size());
    }
    call.response->outputs.push_back(std::move(out));
  }
}

absl::Status EmbeddingRuntime::Execute(absl::Span<RuntimeCall> batch) {
  Tokenized t;
  TokenizeBatch(batch, &t);
  std::vector<float> embeddings(t.sequences.size() * static_cast<size_t>(encoder_->dim()));
  if (absl::Status s = EmbedSequences(t.sequences, embeddings.data()); !s.ok()) return s;
  Scatter(batch, t, embeddings.data());
  return absl::OkStatus();
}

int EmbeddingRuntime::num_slots() const { return gpu_ != nullptr ? gpu_->num_slots() : 0; }

absl::Status EmbeddingRuntime::Pack(int slot, absl::Span<RuntimeCall> batch) {
  if (gpu_ == nullptr || slot < 0 || slot >= static_cast<int>(slots_.size())) {
    return absl::FailedPreconditionError(absl::StrCat("sentence-embedding: no GPU slot ", slot));
  }
  SlotState& st = slots_[slot];
  TokenizeBatch(batch, &st.tokens);
  // The GpuBert slot is held until Release; with the pipeline's depth <= its slots this never
  // waits (Execute callers, if any, share the same slots).
  st.gpu_slot = gpu_->AcquireSlot();
  st.launched_async = false;
  st.host_out.clear();
  st.one_pass =
      cuda::SplitBertPasses(st.tokens.sequences, gpu_->max_tokens(), gpu_->max_sequences())
          .size() <= 1;
  if (!st.one_pass) return absl::OkStatus();  // run pass by pass in Launch
  // One pass (or none): straight into the slot's pinned memory.
  return gpu_->Pack(st.gpu_slot, st.tokens.sequences);
}

absl::Status EmbeddingRuntime::Launch(int slot, StageDone done) {
  SlotState& st = slots_[slot];
  const auto& seqs = st.tokens.sequences;
  if (st.one_pass) {
    // GpuBert's callback runs once, on a CUDA driver thread, where the pipeline's `done` only
    // records the outcome. A device fault surfaces in Unpack's Wait (or Release's).
    absl::Status s = gpu_->Launch(st.gpu_slot, /*normalize=*/true,
                                  [d = std::move(done)]() mutable { d(absl::OkStatus()); });
    if (!s.ok()) return s;
    st.launched_async = true;
    return absl::OkStatus();
  }
  st.host_out.resize(seqs.size() * static_cast<size_t>(encoder_->dim()));
  absl::Status s = gpu_->EmbedOnSlot(st.gpu_slot, seqs, /*normalize=*/true, st.host_out.data());
  if (!s.ok()) return s;
  done(absl::OkStatus());
  return absl::OkStatus();
}

absl::Status EmbeddingRuntime::Unpack(int slot, absl::Span<RuntimeCall> batch) {
  SlotState& st = slots_[slot];
  if (st.launched_async) {
    // The host callback ran after the copy out; Wait reports a device fault, if any, and makes
    // the slot's stream idle before its pinned output is read.
    if (absl::Status s = gpu_->Wait(st.gpu_slot); !s.ok()) return s;
    Scatter(batch, st.tokens, gpu_->Output(st.gpu_slot));
  } else {
    Scatter(batch, st.tokens, st.host_out.data());
  }
  return absl::OkStatus();
}

void EmbeddingRuntime::Release(int slot) {
  SlotState& st = slots_[slot];
  if (st.gpu_slot >= 0) {
    (void)gpu_->Wait(st.gpu_slot);  // idle after a failure at any stage
    gpu_->ReleaseSlot(st.gpu_slot);
  }
  st.gpu_slot = -1;
  st.launched_async = false;
  st.tokens.sequences.clear();
  st.host_out.clear();
}

DeviceStageTimes EmbeddingRuntime::StageTimes(int slot) {
  const SlotState& st = slots_[slot];
  DeviceStageTimes t;
  if (st.gpu_slot < 0 || !st.launched_async) return t;
  const cuda::GpuBertTimes g = gpu_->Times(st.gpu_slot);
  t.h2d_us = g.h2d_us;
  t.compute_us = g.compute_us;
  t.d2h_us = g.d2h_us;
  return t;
}

absl::StatusOr<std::unique_ptr<Runtime>> CreateEmbeddingRuntime(const FunctionSpec& spec,
                                                                const RuntimeContext& context) {
  absl::StatusOr<EmbeddingRuntime::Options> options = EmbeddingRuntime::ParseOptions(spec);
  if (!options.ok()) return options.status();
  options->weight_cache = context.weight_cache;
  options->use_gpu = context.use_gpu;
  options->gpu_index = context.gpu_index;
  if (spec.batching.max_batch_tokens > 0) {
    options->gpu_max_tokens = std::clamp<int64_t>(spec.batching.max_batch_tokens, 512, 65536);
  }
  options->gpu_slots = static_cast<int>(
      std::clamp<int64_t>(std::max(spec.batching.pipeline_depth, spec.batching.instances), 1, 8));
  absl::StatusOr<std::unique_ptr<EmbeddingRuntime>> runtime = EmbeddingRuntime::Create(*options);
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

FERRY_REGISTER_RUNTIME("sentence-embedding",
                       "BERT sentence embeddings (all-MiniLM-L6-v2 family) from a "
                       "sentence-transformers folder (CPU or GPU)",
                       &CreateEmbeddingRuntime);

}  // namespace ferry::kernels
