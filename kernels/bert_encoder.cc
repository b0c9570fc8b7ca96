#include "kernels/bert_encoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/safetensors.h"
#include "nlohmann/json.hpp"

namespace ferry::kernels {
namespace {

// Working memory of one Embed call, kept per thread so that steady-state calls do not allocate.
struct Scratch {
  std::vector<float> x;     // [T, H] hidden states
  std::vector<float> qkv;   // [T, 3H]
  std::vector<float> ctx;   // [T, H]
  std::vector<float> tmp;   // [T, H]
  std::vector<float> ffn;   // [T, I]
  std::vector<float> attn;  // AttentionHead's scratch for the longest sequence
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

template <typename T>
void Grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

}  // namespace

absl::StatusOr<nlohmann::json> ReadJsonObjectFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read '", path, "'"));
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a JSON object"));
  }
  return j;
}

absl::Status BertConfig::Validate() const {
  const std::pair<const char*, int> sizes[] = {{"vocab_size", vocab_size},
                                               {"hidden_size", hidden_size},
                                               {"num_hidden_layers", num_layers},
                                               {"num_attention_heads", num_heads},
                                               {"intermediate_size", intermediate_size},
                                               {"max_position_embeddings", max_position_embeddings},
                                               {"type_vocab_size", type_vocab_size}};
  for (const auto& [name, value] : sizes) {
    if (value <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("BERT config: ", name, " must be positive, got ", value));
    }
  }
  if (hidden_size % num_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("BERT config: hidden_size ", hidden_size,
                                                   " is not a multiple of num_attention_heads ",
                                                   num_heads));
  }
  if (!(layer_norm_eps > 0.f)) {
    return absl::InvalidArgumentError("BERT config: layer_norm_eps must be positive");
  }
  return absl::OkStatus();
}

absl::StatusOr<BertConfig> ReadBertConfig(const std::string& path) {
  absl::StatusOr<nlohmann::json> j = ReadJsonObjectFile(path);
  if (!j.ok()) return j.status();
  auto error = [&](const std::string& key, const std::string& message) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", key, ": ", message));
  };
  auto string_is = [&](const std::string& key, const std::string& want,
                       bool required) -> absl::Status {
    auto it = j->find(key);
    if (it == j->end()) {
      return required ? error(key, absl::StrCat("missing (expected \"", want, "\")"))
                      : absl::OkStatus();
    }
    if (!it->is_string() || it->get<std::string>() != want) {
      return error(key, absl::StrCat("expected \"", want,
                                     "\" (ferry's sentence-embedding "
                                     "runtime runs BERT encoders), got ",
                                     it->dump()));
    }
    return absl::OkStatus();
  };
  if (absl::Status s = string_is("model_type", "bert", true); !s.ok()) return s;
  if (absl::Status s = string_is("hidden_act", "gelu", true); !s.ok()) return s;
  if (absl::Status s = string_is("position_embedding_type", "absolute", false); !s.ok()) return s;
  BertConfig config;
  const std::pair<const char*, int*> ints[] = {
      {"vocab_size", &config.vocab_size},
      {"hidden_size", &config.hidden_size},
      {"num_hidden_layers", &config.num_layers},
      {"num_attention_heads", &config.num_heads},
      {"intermediate_size", &config.intermediate_size},
      {"max_position_embeddings", &config.max_position_embeddings},
      {"type_vocab_size", &config.type_vocab_size}};
  for (const auto& [key, field] : ints) {
    auto it = j->find(key);
    if (it == j->end()) return error(key, "missing");
    if (!it->is_number_integer() || it->get<int64_t>() <= 0 || it->get<int64_t>() > (1 << 24)) {
      return error(key, absl::StrCat("expected a positive integer, got ", it->dump()));
    }
    *field = it->get<int>();
  }
  if (auto it = j->find("layer_norm_eps"); it != j->end()) {
    if (!it->is_number() || !(it->get<double>() > 0)) {
      return error("layer_norm_eps", absl::StrCat("expected a positive number, got ", it->dump()));
    }
    config.layer_norm_eps = static_cast<float>(it->get<double>());
  }
  if (absl::Status s = config.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
  }
  return config;
}

absl::StatusOr<BertWeights> LoadBertWeights(const std::string& safetensors_path,
                                            const BertConfig& config) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(safetensors_path);
  if (!file.ok()) return file.status();
  const SafetensorsFile& f = **file;
  const std::string prefix = f.Find("embeddings.word_embeddings.weight") == nullptr &&
                                     f.Find("bert.embeddings.word_embeddings.weight") != nullptr
                                 ? "bert."
                                 : "";
  const int64_t h = config.hidden_size;
  const int64_t inter = config.intermediate_size;
  auto read = [&](const std::string& name,
                  std::vector<int64_t> shape) -> absl::StatusOr<std::vector<float>> {
    const SafetensorsTensor* t = f.Find(prefix + name);
    if (t == nullptr) {
      return absl::NotFoundError(absl::StrCat(safetensors_path, ": missing tensor '", prefix, name,
                                              "' (a BERT encoder with ", config.num_layers,
                                              " layers needs it)"));
    }
    if (t->shape != shape) {
      auto show = [](const std::vector<int64_t>& s) {
        std::string out = "[";
        for (size_t i = 0; i < s.size(); ++i) absl::StrAppend(&out, i ? "," : "", s[i]);
        return out + "]";
      };
      return absl::InvalidArgumentError(absl::StrCat(safetensors_path, ": tensor '", prefix, name,
                                                     "' has shape ", show(t->shape),
                                                     "; config.json implies ", show(shape)));
    }
    return f.ReadFloat32(*t);
  };
  BertWeights w;
  struct Slot {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float>* out;
  };
  std::vector<Slot> slots = {
      {"embeddings.word_embeddings.weight", {config.vocab_size, h}, &w.word_embeddings},
      {"embeddings.position_embeddings.weight",
       {config.max_position_embeddings, h},
       &w.position_embeddings},
      {"embeddings.token_type_embeddings.weight",
       {config.type_vocab_size, h},
       &w.token_type_embeddings},
      {"embeddings.LayerNorm.weight", {h}, &w.embedding_ln_gamma},
      {"embeddings.LayerNorm.bias", {h}, &w.embedding_ln_beta},
  };
  w.layers.resize(config.num_layers);
  std::vector<std::vector<float>> qkv_parts(static_cast<size_t>(config.num_layers) * 6);
  for (int i = 0; i < config.num_layers; ++i) {
    const std::string p = absl::StrCat("encoder.layer.", i, ".");
    BertLayerWeights& l = w.layers[i];
    std::vector<float>* q = &qkv_parts[i * 6];
    slots.push_back({p + "attention.self.query.weight", {h, h}, &q[0]});
    slots.push_back({p + "attention.self.key.weight", {h, h}, &q[1]});
    slots.push_back({p + "attention.self.value.weight", {h, h}, &q[2]});
    slots.push_back({p + "attention.self.query.bias", {h}, &q[3]});
    slots.push_back({p + "attention.self.key.bias", {h}, &q[4]});
    slots.push_back({p + "attention.self.value.bias", {h}, &q[5]});
    slots.push_back({p + "attention.output.dense.weight", {h, h}, &l.attn_out_weight});
    slots.push_back({p + "attention.output.dense.bias", {h}, &l.attn_out_bias});
    slots.push_back({p + "attention.output.LayerNorm.weight", {h}, &l.attn_ln_gamma});
    slots.push_back({p + "attention.output.LayerNorm.bias", {h}, &l.attn_ln_beta});
    slots.push_back({p + "intermediate.dense.weight", {inter, h}, &l.ffn_in_weight});
    slots.push_back({p + "intermediate.dense.bias", {inter}, &l.ffn_in_bias});
    slots.push_back({p + "output.dense.weight", {h, inter}, &l.ffn_out_weight});
    slots.push_back({p + "output.dense.bias", {h}, &l.ffn_out_bias});
    slots.push_back({p + "output.LayerNorm.weight", {h}, &l.out_ln_gamma});
    slots.push_back({p + "output.LayerNorm.bias", {h}, &l.out_ln_beta});
  }
  for (Slot& slot : slots) {
    absl::StatusOr<std::vector<float>> v = read(slot.name, slot.shape);
    if (!v.ok()) return v.status();
    *slot.out = *std::move(v);
  }
  for (int i = 0; i < config.num_layers; ++i) {
    BertLayerWeights& l = w.layers[i];
    const std::vector<float>* q = &qkv_parts[i * 6];
    for (int k = 0; k < 3; ++k) l.qkv_weight.insert(l.qkv_weight.end(), q[k].begin(), q[k].end());
    for (int k = 3; k < 6; ++k) l.qkv_bias.insert(l.qkv_bias.end(), q[k].begin(), q[k].end());
  }
  return w;
}

absl::StatusOr<std::unique_ptr<BertEncoder>> BertEncoder::Create(const BertConfig& config,
                                                                 BertWeights weights) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  const size_t h = config.hidden_size;
  const size_t inter = config.intermediate_size;
  auto check = [](const std::string& name, const std::vector<float>& v,
                  size_t want) -> absl::Status {
    if (v.size() != want) {
      return absl::InvalidArgumentError(
          absl::StrCat("BERT weights: ", name, " has ", v.size(), " values, expected ", want));
    }
    return absl::OkStatus();
  };
  std::vector<absl::Status> checks = {
      check("word_embeddings", weights.word_embeddings, config.vocab_size * h),
      check("position_embeddings", weights.position_embeddings, config.max_position_embeddings * h),
      check("token_type_embeddings", weights.token_type_embeddings, config.type_vocab_size * h),
      check("embedding_ln_gamma", weights.embedding_ln_gamma, h),
      check("embedding_ln_beta", weights.embedding_ln_beta, h)};
  if (weights.layers.size() != static_cast<size_t>(config.num_layers)) {
    return absl::InvalidArgumentError(absl::StrCat("BERT weights: ", weights.layers.size(),
                                                   " layers, config has ", config.num_layers));
  }
  for (const BertLayerWeights& l : weights.layers) {
    checks.push_back(check("qkv_weight", l.qkv_weight, 3 * h * h));
    checks.push_back(check("qkv_bias", l.qkv_bias, 3 * h));
    checks.push_back(check("attn_out_weight", l.attn_out_weight, h * h));
    checks.push_back(check("attn_out_bias", l.attn_out_bias, h));
    checks.push_back(check("attn_ln_gamma", l.attn_ln_gamma, h));
    checks.push_back(check("attn_ln_beta", l.attn_ln_beta, h));
    checks.push_back(check("ffn_in_weight", l.ffn_in_weight, inter * h));
    checks.push_back(check("ffn_in_bias", l.ffn_in_bias, inter));
    checks.push_back(check("ffn_out_weight", l.ffn_out_weight, h * inter));
    checks.push_back(check("ffn_out_bias", l.ffn_out_bias, h));
    checks.push_back(check("out_ln_gamma", l.out_ln_gamma, h));
    checks.push_back(check("out_ln_beta", l.out_ln_beta, h));
  }
  for (const absl::Status& s : checks) {
    if (!s.ok()) return s;
  }
  std::unique_ptr<BertEncoder> e(new BertEncoder());
  e->config_ = config;
  e->weights_ = std::move(weights);
  // Pack once here so that no Embed call copies a weight matrix (OpenBLAS repacked them per
  // call: 56% of the time at one 16-token sentence). Every product carries its bias, and the FFN's
  // first one its GELU, in the product's store (no separate pass over the output).
  const int hi = config.hidden_size;
  const int ii = config.intermediate_size;
  e->packed_.reserve(e->weights_.layers.size());
  for (const BertLayerWeights& l : e->weights_.layers) {
    e->packed_.push_back(
        {PackedLinear(l.qkv_weight.data(), l.qkv_bias.data(), 3 * hi, hi),
         PackedLinear(l.attn_out_weight.data(), l.attn_out_bias.data(), hi, hi),
         PackedLinear(l.ffn_in_weight.data(), l.ffn_in_bias.data(), ii, hi, Activation::kGelu),
         PackedLinear(l.ffn_out_weight.data(), l.ffn_out_bias.data(), hi, ii)});
  }
  return e;
}

double BertEncoder::FlopsPerToken(int length) const {
  const double h = config_.hidden_size;
  const double inter = config_.intermediate_size;
  // 2 flops per multiply-add: QKV 3H², output H², FFN 2·H·I, attention 2·L·H (scores + context).
  return 2.0 * config_.num_layers * (4 * h * h + 2 * h * inter + 2.0 * length * h);
}

absl::Status BertEncoder::Embed(absl::Span<const std::vector<int32_t>> sequences, bool normalize,
                                float* out) const {
  // Bounded passes keep the working memory (about 4·(6H + I) bytes per token) near 60 MB for
  // MiniLM however large the batch.
  constexpr size_t kMaxTokensPerPass = 4096;
  size_t begin = 0;
  while (begin < sequences.size()) {
    size_t end = begin;
    size_t tokens = 0;
    while (end < sequences.size() &&
           (end == begin || tokens + sequences[end].size() <= kMaxTokensPerPass)) {
      tokens += sequences[end].size();
      ++end;
    }
    if (absl::Status s = EmbedPacked(sequences.subspan(begin, end - begin), normalize,
                                     out + begin * static_cast<size_t>(config_.hidden_size));
        !s.ok()) {
      return s;
    }
    begin = end;
  }
  return absl::OkStatus();
}

absl::Status BertEncoder::EmbedPacked(absl::Span<const std::vector<int32_t>> sequences,
                                      bool normalize, float* out) const {
  const int h = config_.hidden_size;
  const int inter = config_.intermediate_size;
  const int heads = config_.num_heads;
  const int d = h / heads;
  const float eps = config_.layer_norm_eps;
  int total = 0;
  int longest = 0;
  for (size_t s = 0; s < sequences.size(); ++s) {
    const std::vector<int32_t>& ids = sequences[s];
    if (ids.empty() || ids.size() > static_cast<size_t>(config_.max_position_embeddings)) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, " has ", ids.size(),
                                                     " tokens; expected 1 to ",
                                                     config_.max_position_embeddings));
    }
    for (int32_t id : ids) {
      if (id < 0 || id >= config_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sequence ", s, ": token id ", id, " outside the vocabulary of ", config_.vocab_size));
      }
    }
    total += static_cast<int>(ids.size());
    longest = std::max(longest, static_cast<int>(ids.size()));
  }
  if (total == 0) return absl::OkStatus();

  Scratch& sc = ThreadScratch();
  const size_t th = static_cast<size_t>(total) * h;
  Grow(sc.x, th);
  Grow(sc.qkv, th * 3);
  Grow(sc.ctx, th);
  Grow(sc.tmp, th);
  Grow(sc.ffn, static_cast<size_t>(total) * inter);
  Grow(sc.attn, AttentionScratchFloats(longest, d));
  float* x = sc.x.data();
  float* qkv = sc.qkv.data();
  float* ctx = sc.ctx.data();
  float* tmp = sc.tmp.data();
  float* ffn = sc.ffn.data();
  float* attn = sc.attn.data();

  // Embeddings (token type 0) then LayerNorm; the sum goes to tmp, the residual input is zero.
  {
    const float* type0 = weights_.token_type_embeddings.data();
    size_t row = 0;
    for (const std::vector<int32_t>& ids : sequences) {
      for (size_t p = 0; p < ids.size(); ++p, ++row) {
        const float* we = weights_.word_embeddings.data() + static_cast<size_t>(ids[p]) * h;
        const float* pe = weights_.position_embeddings.data() + p * h;
        float* t = tmp + row * h;
        for (int i = 0; i < h; ++i) t[i] = we[i] + pe[i] + type0[i];
      }
    }
    ResidualLayerNorm(tmp, nullptr, weights_.embedding_ln_gamma.data(),
                      weights_.embedding_ln_beta.data(), total, h, eps, x);
  }

  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  const int ld = 3 * h;
  for (size_t li = 0; li < weights_.layers.size(); ++li) {
    const BertLayerWeights& l = weights_.layers[li];
    const PackedLayer& p = packed_[li];
    p.qkv.Apply(x, total, h, qkv, ld);
    // Attention per sequence over its own rows (no padding, so no mask is needed), one head at a
    // time without BLAS calls (two tiny sgemm calls per head cost more than their work).
    size_t offset = 0;
    for (const std::vector<int32_t>& ids : sequences) {
      const int len = static_cast<int>(ids.size());
      const float* base = qkv + offset * ld;
      for (int head = 0; head < heads; ++head) {
        AttentionHead(base + head * d, base + h + head * d, base + 2 * h + head * d, ld, len, d,
                      scale, ctx + offset * h + head * d, h, attn);
      }
      offset += ids.size();
    }
    // Attention output: x = LN(ctx Wo^T + bo + x).
    p.attn_out.Apply(ctx, total, h, tmp, h);
    ResidualLayerNorm(tmp, x, l.attn_ln_gamma.data(), l.attn_ln_beta.data(), total, h, eps, x);
    // FFN: x = LN(GELU(x W1^T + b1) W2^T + b2 + x), the bias and GELU in the products' store.
    p.ffn_in.Apply(x, total, h, ffn, inter);
    p.ffn_out.Apply(ffn, total, inter, tmp, h);
    ResidualLayerNorm(tmp, x, l.out_ln_gamma.data(), l.out_ln_beta.data(), total, h, eps, x);
  }

  // Mean pooling over each sequence's tokens, then L2 normalisation.
  size_t offset = 0;
  for (size_t s = 0; s < sequences.size(); ++s) {
    const size_t len = sequences[s].size();
    float* o = out + s * h;
    std::fill(o, o + h, 0.f);
    for (size_t r = 0; r < len; ++r) {
      const float* row = x + (offset + r) * h;
      for (int i = 0; i < h; ++i) o[i] += row[i];
    }
    const float inv_len = 1.f / static_cast<float>(len);
    for (int i = 0; i < h; ++i) o[i] *= inv_len;
    if (normalize) {
      double norm = 0;
      for (int i = 0; i < h; ++i) norm += static_cast<double>(o[i]) * o[i];
      const float inv = 1.f / static_cast<float>(std::max(std::sqrt(norm), 1e-12));
      for (int i = 0; i < h; ++i) o[i] *= inv;
    }
    offset += len;
  }
  return absl::OkStatus();
}

}  // namespace ferry::kernels
