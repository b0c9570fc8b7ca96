// The CPU BERT encoder against a naive reference (padded batch with an attention mask, double
// precision, as BERT is written), on a small random model; loading from a folder with its
// errors; the sentence-embedding runtime over that folder. Needs no downloaded model: the check
// against the real all-MiniLM-L6-v2 weights is tests/reference/compare_embeddings.py.
#include "kernels/bert_encoder.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "cuda/device.h"
#include "cuda/gpu_test_util.h"
#include "ferry/runtime_registry.h"
#include "ferry/staged_runtime.h"
#include "ferry/weight_cache.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/embedding_runtime.h"
#include "kernels/test_safetensors_writer.h"

namespace ferry::kernels {
namespace {

using ::testing::HasSubstr;

BertConfig SmallConfig() {
  BertConfig c;
  c.vocab_size = 40;
  c.hidden_size = 16;
  c.num_layers = 2;
  c.num_heads = 4;
  c.intermediate_size = 24;
  c.max_position_embeddings = 32;
  c.type_vocab_size = 2;
  c.layer_norm_eps = 1e-12f;
  return c;
}

// Named tensors of a random BERT in HF's layout (separate q/k/v), as a safetensors file holds.
std::vector<testing::TestTensor> RandomTensors(const BertConfig& c, uint32_t seed,
                                               const std::string& skip = "", float stddev = 0.5f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, stddev);
  std::vector<testing::TestTensor> out;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float offset = 0.f) {
    if (name == skip) return;
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(n);
    for (float& x : v) x = offset + normal(rng);
    out.push_back({name, "F32", shape, testing::FloatBytes(v)});
  };
  const int64_t h = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  add("embeddings.word_embeddings.weight", {c.vocab_size, h});
  add("embeddings.position_embeddings.weight", {c.max_position_embeddings, h});
  add("embeddings.token_type_embeddings.weight", {c.type_vocab_size, h});
  add("embeddings.LayerNorm.weight", {h}, 1.f);
  add("embeddings.LayerNorm.bias", {h});
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("encoder.layer.", i, ".");
    for (const char* m : {"query", "key", "value"}) {
      add(p + "attention.self." + m + ".weight", {h, h});
      add(p + "attention.self." + m + ".bias", {h});
    }
    add(p + "attention.output.dense.weight", {h, h});
    add(p + "attention.output.dense.bias", {h});
    add(p + "attention.output.LayerNorm.weight", {h}, 1.f);
    add(p + "attention.output.LayerNorm.bias", {h});
    add(p + "intermediate.dense.weight", {inter, h});
    add(p + "intermediate.dense.bias", {inter});
    add(p + "output.dense.weight", {h, inter});
    add(p + "output.dense.bias", {h});
    add(p + "output.LayerNorm.weight", {h}, 1.f);
    add(p + "output.LayerNorm.bias", {h});
  }
  return out;
}

std::string ConfigJson(const BertConfig& c, const std::string& model_type = "bert") {
  return absl::StrCat(
      R"({"model_type": ")", model_type, R"(", "hidden_act": "gelu", )", R"("vocab_size": )",
      c.vocab_size, R"(, "hidden_size": )", c.hidden_size, R"(, "num_hidden_layers": )",
      c.num_layers, R"(, "num_attention_heads": )", c.num_heads, R"(, "intermediate_size": )",
      c.intermediate_size, R"(, "max_position_embeddings": )", c.max_position_embeddings,
      R"(, "type_vocab_size": )", c.type_vocab_size, R"(, "layer_norm_eps": 1e-12})");
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ferry-bert-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A model folder: config.json, model.safetensors, vocab.txt (40 tokens) and
// sentence_bert_config.json.
void WriteModelFolder(const TempDir& dir, const BertConfig& c, const std::string& skip = "") {
  testing::WriteFile(dir.File("config.json"), ConfigJson(c));
  testing::WriteFile(dir.File("model.safetensors"),
                     testing::SafetensorsBytes(RandomTensors(c, 7, skip)));
  std::string vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n,\n!\n##s\n";
  for (int i = 10; i < c.vocab_size; ++i) absl::StrAppend(&vocab, "w", i, "\n");
  testing::WriteFile(dir.File("vocab.txt"), vocab);
  testing::WriteFile(dir.File("sentence_bert_config.json"),
                     R"({"max_seq_length": 16, "do_lower_case": false})");
}

// The naive reference: every sequence padded to the longest, attention masked with a large
// negative bias on padding keys, masked mean pooling, double precision throughout.
std::vector<double> NaiveEmbed(const BertConfig& c, const std::vector<testing::TestTensor>& ts,
                               const std::vector<std::vector<int32_t>>& seqs) {
  auto get = [&](const std::string& name) {
    for (const auto& t : ts) {
      if (t.name == name) {
        std::vector<float> v(t.bytes.size() / 4);
        std::memcpy(v.data(), t.bytes.data(), t.bytes.size());
        return std::vector<double>(v.begin(), v.end());
      }
    }
    ADD_FAILURE() << "no tensor " << name;
    return std::vector<double>();
  };
  const int h = c.hidden_size;
  const int inter = c.intermediate_size;
  const int d = h / c.num_heads;
  size_t longest = 0;
  for (const auto& s : seqs) longest = std::max(longest, s.size());
  const int n = static_cast<int>(longest);
  auto layer_norm = [&](std::vector<double>& x, const std::vector<double>& g,
                        const std::vector<double>& b) {
    for (int r = 0; r < n; ++r) {
      double mean = 0, var = 0;
      for (int i = 0; i < h; ++i) mean += x[r * h + i];
      mean /= h;
      for (int i = 0; i < h; ++i) var += (x[r * h + i] - mean) * (x[r * h + i] - mean);
      var /= h;
      for (int i = 0; i < h; ++i) {
        x[r * h + i] = (x[r * h + i] - mean) / std::sqrt(var + c.layer_norm_eps) * g[i] + b[i];
      }
    }
  };
  auto linear = [&](const std::vector<double>& x, int in, const std::vector<double>& w,
                    const std::vector<double>& b, int out) {
    std::vector<double> y(static_cast<size_t>(n) * out);
    for (int r = 0; r < n; ++r) {
      for (int o = 0; o < out; ++o) {
        double acc = b[o];
        for (int i = 0; i < in; ++i) acc += x[r * in + i] * w[o * in + i];
        y[r * out + o] = acc;
      }
    }
    return y;
  };
  const auto we = get("embeddings.word_embeddings.weight");
  const auto pe = get("embeddings.position_embeddings.weight");
  const auto te = get("embeddings.token_type_embeddings.weight");
  std::vector<double> result;
  for (const auto& ids : seqs) {
    std::vector<int32_t> padded = ids;
    padded.resize(n, 0);  // [PAD]
    std::vector<double> x(static_cast<size_t>(n) * h);
    for (int r = 0; r < n; ++r) {
      for (int i = 0; i < h; ++i) x[r * h + i] = we[padded[r] * h + i] + pe[r * h + i] + te[i];
    }
    layer_norm(x, get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias"));
    for (int l = 0; l < c.num_layers; ++l) {
      const std::string p = absl::StrCat("encoder.layer.", l, ".");
      auto q = linear(x, h, get(p + "attention.self.query.weight"),
                      get(p + "attention.self.query.bias"), h);
      auto k =
          linear(x, h, get(p + "attention.self.key.weight"), get(p + "attention.self.key.bias"), h);
      auto v = linear(x, h, get(p + "attention.self.value.weight"),
                      get(p + "attention.self.value.bias"), h);
      std::vector<double> ctx(static_cast<size_t>(n) * h, 0.0);
      for (int head = 0; head < c.num_heads; ++head) {
        for (int r = 0; r < n; ++r) {
          std::vector<double> s(n);
          double m = -1e300;
          for (int cc = 0; cc < n; ++cc) {
            double dot = 0;
            for (int i = 0; i < d; ++i) dot += q[r * h + head * d + i] * k[cc * h + head * d + i];
            s[cc] = dot / std::sqrt(static_cast<double>(d)) +
                    (cc < static_cast<int>(ids.size()) ? 0.0 : -1e9);
            m = std::max(m, s[cc]);
          }
          double sum = 0;
          for (double& e : s) sum += (e = std::exp(e - m));
          for (int cc = 0; cc < n; ++cc) {
            for (int i = 0; i < d; ++i) {
              ctx[r * h + head * d + i] += s[cc] / sum * v[cc * h + head * d + i];
            }
          }
        }
      }
      auto a = linear(ctx, h, get(p + "attention.output.dense.weight"),
                      get(p + "attention.output.dense.bias"), h);
      for (size_t i = 0; i < a.size(); ++i) x[i] += a[i];
      layer_norm(x, get(p + "attention.output.LayerNorm.weight"),
                 get(p + "attention.output.LayerNorm.bias"));
      auto f = linear(x, h, get(p + "intermediate.dense.weight"),
                      get(p + "intermediate.dense.bias"), inter);
      for (double& e : f) e = 0.5 * e * (1 + std::erf(e / std::sqrt(2.0)));
      auto o = linear(f, inter, get(p + "output.dense.weight"), get(p + "output.dense.bias"), h);
      for (size_t i = 0; i < o.size(); ++i) x[i] += o[i];
      layer_norm(x, get(p + "output.LayerNorm.weight"), get(p + "output.LayerNorm.bias"));
    }
    std::vector<double> pooled(h, 0.0);
    for (size_t r = 0; r < ids.size(); ++r) {
      for (int i = 0; i < h; ++i) pooled[i] += x[r * h + i] / ids.size();
    }
    double norm = 0;
    for (double e : pooled) norm += e * e;
    for (double e : pooled) result.push_back(e / std::sqrt(norm));
  }
  return result;
}

std::vector<std::vector<int32_t>> RandomSequences(int count, int max_len, int vocab,
                                                  uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int32_t>> seqs(count);
  for (auto& s : seqs) {
    const int len = 1 + static_cast<int>(rng() % max_len);
    for (int i = 0; i < len; ++i) s.push_back(static_cast<int32_t>(rng() % vocab));
  }
  return seqs;
}

std::unique_ptr<BertEncoder> LoadFromFolder(const TempDir& dir) {
  absl::StatusOr<BertConfig> config = ReadBertConfig(dir.File("config.json"));
  EXPECT_TRUE(config.ok()) << config.status();
  absl::StatusOr<BertWeights> weights = LoadBertWeights(dir.File("model.safetensors"), *config);
  EXPECT_TRUE(weights.ok()) << weights.status();
  absl::StatusOr<std::unique_ptr<BertEncoder>> encoder =
      BertEncoder::Create(*config, *std::move(weights));
  EXPECT_TRUE(encoder.ok()) << encoder.status();
  return *std::move(encoder);
}

TEST(BertEncoderTest, MatchesNaivePaddedReference) {
  const BertConfig c = SmallConfig();
  TempDir dir;
  WriteModelFolder(dir, c);
  std::unique_ptr<BertEncoder> encoder = LoadFromFolder(dir);
  const auto seqs = RandomSequences(9, c.max_position_embeddings, c.vocab_size, 3);
  std::vector<float> got(seqs.size() * c.hidden_size);
  ASSERT_TRUE(encoder->Embed(seqs, /*normalize=*/true, got.data()).ok());
  const std::vector<double> want = NaiveEmbed(c, RandomTensors(c, 7), seqs);
  for (size_t s = 0; s < seqs.size(); ++s) {
    double dot = 0, norm = 0;
    for (int i = 0; i < c.hidden_size; ++i) {
      const size_t k = s * c.hidden_size + i;
      EXPECT_NEAR(got[k], want[k], 2e-5) << "sequence " << s << " dim " << i;
      dot += got[k] * want[k];
      norm += static_cast<double>(got[k]) * got[k];
    }
    EXPECT_NEAR(norm, 1.0, 1e-5);
    EXPECT_GT(dot, 0.99999) << "sequence " << s;
  }
}

TEST(BertEncoderTest, BatchesLargerThanOnePassAndConcurrentCallersAgree) {
  const BertConfig c = SmallConfig();
  TempDir dir;
  WriteModelFolder(dir, c);
  std::unique_ptr<BertEncoder> encoder = LoadFromFolder(dir);
  // About 300 * 16 tokens: more than one packed pass.
  const auto seqs = RandomSequences(300, c.max_position_embeddings, c.vocab_size, 11);
  std::vector<float> batched(seqs.size() * c.hidden_size);
  ASSERT_TRUE(encoder->Embed(seqs, true, batched.data()).ok());
  std::vector<std::vector<float>> per_thread(4, std::vector<float>(batched.size()));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      // Each thread embeds the sequences one at a time.
      for (size_t s = 0; s < seqs.size(); ++s) {
        EXPECT_TRUE(encoder->Embed({seqs[s]}, true, per_thread[t].data() + s * c.hidden_size).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) {
    for (size_t k = 0; k < batched.size(); ++k) {
      ASSERT_NEAR(per_thread[t][k], batched[k], 1e-5) << "thread " << t << " value " << k;
    }
  }
}

TEST(BertEncoderTest, RejectsBadIdsAndLengths) {
  const BertConfig c = SmallConfig();
  TempDir dir;
  WriteModelFolder(dir, c);
  std::unique_ptr<BertEncoder> encoder = LoadFromFolder(dir);
  std::vector<float> out(c.hidden_size);
  EXPECT_THAT(encoder->Embed({std::vector<int32_t>{2, 40}}, true, out.data()).message(),
              HasSubstr("token id 40"));
  EXPECT_FALSE(encoder->Embed({std::vector<int32_t>{}}, true, out.data()).ok());
  EXPECT_FALSE(
      encoder->Embed({std::vector<int32_t>(c.max_position_embeddings + 1, 2)}, true, out.data())
          .ok());
}

TEST(BertEncoderTest, LoadErrorsNameWhatIsWrong) {
  const BertConfig c = SmallConfig();
  TempDir dir;
  WriteModelFolder(dir, c, /*skip=*/"encoder.layer.1.output.dense.bias");
  absl::StatusOr<BertWeights> w = LoadBertWeights(dir.File("model.safetensors"), c);
  EXPECT_THAT(w.status().message(),
              HasSubstr("missing tensor 'encoder.layer.1.output.dense.bias'"));

  BertConfig wrong = c;
  wrong.intermediate_size = 25;
  WriteModelFolder(dir, c);
  EXPECT_THAT(LoadBertWeights(dir.File("model.safetensors"), wrong).status().message(),
              HasSubstr("'encoder.layer.0.intermediate.dense.weight' has shape [24,16]"));

  testing::WriteFile(dir.File("config.json"), ConfigJson(c, "roberta"));
  EXPECT_THAT(ReadBertConfig(dir.File("config.json")).status().message(),
              HasSubstr("model_type: expected \"bert\""));
  testing::WriteFile(dir.File("config.json"), R"({"model_type": "bert", "hidden_act": "gelu"})");
  EXPECT_THAT(ReadBertConfig(dir.File("config.json")).status().message(),
              HasSubstr("vocab_size: missing"));
}

InferenceRequest TextRequest(const std::vector<std::string>& texts) {
  InferenceRequest r;
  Tensor t;
  t.name = "text";
  t.dtype = DataType::kBytes;
  t.shape = {static_cast<int64_t>(texts.size())};
  for (const std::string& s : texts) t.bytes.push_back(s);
  r.inputs.push_back(std::move(t));
  return r;
}

TEST(EmbeddingRuntimeTest, ServesAFolderThroughTheRegistry) {
  const BertConfig c = SmallConfig();
  TempDir dir;
  WriteModelFolder(dir, c);
  FunctionSpec spec;
  spec.name = "emb";
  spec.runtime = "sentence-embedding";
  spec.model_path = dir.path();
  absl::StatusOr<std::unique_ptr<Runtime>> rt = RuntimeRegistry::Global().Create(spec, {});
  ASSERT_TRUE(rt.ok()) << rt.status();
  const ModelSignature& sig = (*rt)->signature();
  ASSERT_EQ(sig.outputs.size(), 1u);
  EXPECT_EQ(sig.outputs[0].name, "embedding");
  EXPECT_EQ(sig.outputs[0].shape, (std::vector<int64_t>{-1, c.hidden_size}));

  InferenceRequest good = TextRequest({"hello world", "Hello, WORLDS!"});
  InferenceRequest bad = TextRequest({"fine", "not \xFF utf-8"});
  InferenceRequest single = TextRequest({"hello world"});
  InferenceResponse r0, r1, r2;
  std::vector<RuntimeCall> batch = {{&good, &r0, {}}, {&bad, &r1, {}}, {&single, &r2, {}}};
  ASSERT_TRUE((*rt)->Execute(absl::MakeSpan(batch)).ok());
  ASSERT_TRUE(batch[0].status.ok()) << batch[0].status;
  EXPECT_EQ(batch[1].status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(batch[1].status.message(), HasSubstr("element 1"));
  EXPECT_THAT(batch[1].status.message(), HasSubstr("not valid UTF-8"));
  ASSERT_TRUE(batch[2].status.ok());
  ASSERT_EQ(r0.outputs.size(), 1u);
  EXPECT_EQ(r0.outputs[0].shape, (std::vector<int64_t>{2, c.hidden_size}));
  // The same text gives the same embedding alone and in a batch.
  const float* a = r0.outputs[0].as<float>();
  const float* b = r2.outputs[0].as<float>();
  for (int i = 0; i < c.hidden_size; ++i) EXPECT_NEAR(a[i], b[i], 1e-5);
}

TEST(EmbeddingRuntimeTest, ReloadFromTheWeightCacheSkipsLoadingAndAChangedFileDoesNot) {
  const BertConfig c = SmallConfig();
  TempDir dir;
  WriteModelFolder(dir, c);
  FunctionSpec spec;
  spec.name = "emb";
  spec.runtime = "sentence-embedding";
  spec.model_path = dir.path();
  WeightCache cache(/*idle_budget_bytes=*/int64_t{1} << 30);
  RuntimeContext context;
  context.weight_cache = &cache;
  const void* first_encoder = nullptr;
  {
    absl::StatusOr<std::unique_ptr<Runtime>> rt = RuntimeRegistry::Global().Create(spec, context);
    ASSERT_TRUE(rt.ok()) << rt.status();
    first_encoder = &static_cast<EmbeddingRuntime&>(**rt).encoder();
  }  // unloaded: the cache keeps the encoder within its budget
  cache.Trim();
  EXPECT_EQ(cache.stats().entries, 1);
  EXPECT_GT(cache.stats().idle_bytes, 0);
  absl::StatusOr<std::unique_ptr<Runtime>> again = RuntimeRegistry::Global().Create(spec, context);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(cache.stats().hits, 1);
  EXPECT_EQ(&static_cast<EmbeddingRuntime&>(**again).encoder(), first_encoder);
  // It still serves.
  InferenceRequest req = TextRequest({"hello world"});
  InferenceResponse resp;
  std::vector<RuntimeCall> batch = {{&req, &resp, {}}};
  ASSERT_TRUE((*again)->Execute(absl::MakeSpan(batch)).ok());
  ASSERT_TRUE(batch[0].status.ok()) << batch[0].status;

  // A replaced vocabulary (new size) is a different key: loaded afresh, not served stale.
  {
    std::ofstream vocab(dir.File("vocab.txt"), std::ios::app);
    vocab << "extra\n";
  }
  FunctionSpec bigger = spec;
  absl::StatusOr<std::unique_ptr<Runtime>> fresh =
      RuntimeRegistry::Global().Create(bigger, context);
  // The folder's vocab may now exceed the config's vocab_size; either way it was not a hit.
  (void)fresh;
  EXPECT_EQ(cache.stats().hits, 1);
  EXPECT_EQ(cache.stats().misses, 2);
}

TEST(EmbeddingRuntimeTest, FolderErrorsNameTheFile) {
  const BertConfig c = SmallConfig();
  TempDir dir;
  WriteModelFolder(dir, c);
  std::filesystem::remove(dir.File("vocab.txt"));
  FunctionSpec spec;
  spec.name = "emb";
  spec.source = "emb.yaml";
  spec.runtime = "sentence-embedding";
  spec.model_path = dir.path();
  absl::Status s = RuntimeRegistry::Global().Create(spec, {}).status();
  EXPECT_THAT(s.message(), HasSubstr("emb.yaml: spec.model.uri: "));
  EXPECT_THAT(s.message(), HasSubstr("has no vocab.txt"));

  WriteModelFolder(dir, c);
  std::filesystem::create_directory(dir.File("1_Pooling"));
  testing::WriteFile(dir.File("1_Pooling/config.json"),
                     R"({"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false})");
  EXPECT_THAT(RuntimeRegistry::Global().Create(spec, {}).status().message(),
              HasSubstr("mean pooling only"));

  spec.model_path.clear();
  EXPECT_THAT(RuntimeRegistry::Global().Create(spec, {}).status().message(),
              HasSubstr("spec.model.uri: the sentence-embedding runtime needs a model"));
}

TEST(EmbeddingRuntimeTest, PrecisionIsCheckedOnEveryPlacement) {
  const BertConfig c = SmallConfig();
  TempDir dir;
  WriteModelFolder(dir, c);
  FunctionSpec spec;
  spec.name = "emb";
  spec.source = "emb.yaml";
  spec.runtime = "sentence-embedding";
  spec.model_path = dir.path();
  spec.hardware.accelerator = Accelerator::kGpu;
  absl::StatusOr<EmbeddingRuntime::Options> o = EmbeddingRuntime::ParseOptions(spec);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->precision, cuda::Precision::kFp16);  // the GPU default
  for (const char* name : {"fp32", "tf32", "bf16", "fp16"}) {
    spec.config["precision"] = name;
    o = EmbeddingRuntime::ParseOptions(spec);
    ASSERT_TRUE(o.ok()) << o.status();
    EXPECT_EQ(cuda::PrecisionName(o->precision), name);
  }
  spec.config["precision"] = "fp8";
  absl::Status s = RuntimeRegistry::Global().Create(spec, {}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("emb.yaml: spec.config.precision: unknown precision 'fp8'"));
  spec.config["precision"] = 16;
  EXPECT_THAT(RuntimeRegistry::Global().Create(spec, {}).status().message(),
              HasSubstr("spec.config.precision"));
  // A function pinned to the CPU may not ask for a half precision (it would be ignored)...
  spec.config["precision"] = "bf16";
  spec.hardware.accelerator = Accelerator::kCpu;
  EXPECT_THAT(RuntimeRegistry::Global().Create(spec, {}).status().message(),
              HasSubstr("spec.config.precision: 'bf16' needs a GPU"));
  // ... but one that may land anywhere may; on a CPU replica the path stays FP32.
  spec.hardware.accelerator = Accelerator::kAny;
  absl::StatusOr<std::unique_ptr<Runtime>> rt = RuntimeRegistry::Global().Create(spec, {});
  ASSERT_TRUE(rt.ok()) << rt.status();
  EXPECT_EQ(static_cast<EmbeddingRuntime&>(**rt).gpu(), nullptr);
  spec.hardware.accelerator = Accelerator::kCpu;
  spec.config["precision"] = "fp32";
  EXPECT_TRUE(RuntimeRegistry::Global().Create(spec, {}).ok());
}

TEST(EmbeddingRuntimeTest, GpuPlacementWithoutAGpuNamesTheAccelerator) {
  if (cuda::ListGpus().ok()) GTEST_SKIP() << "a GPU is present: GpuEncoderTest covers it";
  const BertConfig c = SmallConfig();
  TempDir dir;
  WriteModelFolder(dir, c);
  FunctionSpec spec;
  spec.name = "emb";
  spec.source = "emb.yaml";
  spec.runtime = "sentence-embedding";
  spec.model_path = dir.path();
  RuntimeContext context;
  context.use_gpu = true;
  absl::Status s = RuntimeRegistry::Global().Create(spec, context).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr("emb.yaml: spec.hardware.accelerator: sentence-embedding: "
                                     "GPU path not available on GPU 0 (precision fp16)"));
}

// The GPU encoder against the CPU one (itself checked against the naive double reference above)
// on fresh random sequences: the tiny model (head dim 4) and a MiniLM-shaped one (hidden 384, 12
// heads of 32, FFN 1536; 2 layers), at every precision, through the runtime as the agent makes it.
TEST(GpuEncoderTest, MatchesTheCpuEncoderAtEveryPrecision) {
  FERRY_SKIP_WITHOUT_GPU();
  const uint32_t seed = std::random_device{}();
  std::cout << "[   SEED   ] " << seed << std::endl;
  std::mt19937 rng(seed);
  BertConfig minilm;
  minilm.vocab_size = 120;
  minilm.hidden_size = 384;
  minilm.num_layers = 2;
  minilm.num_heads = 12;
  minilm.intermediate_size = 1536;
  minilm.max_position_embeddings = 512;
  minilm.type_vocab_size = 2;
  struct Case {
    BertConfig config;
    float stddev;  // of the random weights: about 1/sqrt(hidden) keeps activations BERT-like
    int max_len;
  };
  for (const Case& k : {Case{SmallConfig(), 0.5f, 32}, Case{minilm, 0.05f, 512}}) {
    const BertConfig& c = k.config;
    TempDir dir;
    testing::WriteFile(dir.File("config.json"), ConfigJson(c));
    testing::WriteFile(dir.File("model.safetensors"),
                       testing::SafetensorsBytes(RandomTensors(c, seed, "", k.stddev)));
    std::string vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n";
    for (int i = 7; i < c.vocab_size; ++i) absl::StrAppend(&vocab, "w", i, "\n");
    testing::WriteFile(dir.File("vocab.txt"), vocab);
    testing::WriteFile(dir.File("sentence_bert_config.json"),
                       absl::StrCat(R"({"max_seq_length": )", k.max_len, "}"));
    FunctionSpec spec;
    spec.name = "emb";
    spec.runtime = "sentence-embedding";
    spec.model_path = dir.path();
    spec.hardware.accelerator = Accelerator::kGpu;
    absl::StatusOr<std::unique_ptr<Runtime>> cpu = RuntimeRegistry::Global().Create(spec, {});
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    std::vector<std::vector<int32_t>> seqs(24);
    for (size_t i = 0; i < seqs.size(); ++i) {
      // Lengths from 1 to the longest the model takes, on and off the attention tile (32).
      const int len = i == 0   ? 1
                      : i == 1 ? k.max_len
                               : std::uniform_int_distribution<int>(1, k.max_len)(rng);
      seqs[i].resize(len);
      for (int32_t& id : seqs[i]) id = std::uniform_int_distribution<int>(0, c.vocab_size - 1)(rng);
    }
    const size_t h = c.hidden_size;
    std::vector<float> want(seqs.size() * h);
    ASSERT_TRUE(static_cast<EmbeddingRuntime&>(**cpu).encoder().Embed(seqs, want.data()).ok());
    for (const char* precision : {"fp32", "tf32", "fp16", "bf16"}) {
      spec.config["precision"] = precision;
      RuntimeContext context;
      context.use_gpu = true;
      absl::StatusOr<std::unique_ptr<Runtime>> gpu =
          RuntimeRegistry::Global().Create(spec, context);
      ASSERT_TRUE(gpu.ok()) << gpu.status();
      cuda::GpuBert* bert = static_cast<EmbeddingRuntime&>(**gpu).gpu();
      ASSERT_NE(bert, nullptr);
      std::vector<float> got(seqs.size() * h);
      ASSERT_TRUE(bert->Embed(seqs, true, got.data()).ok());
      const double floor = std::string(precision) == "fp32" ? 0.99999 : 0.999;
      double worst = 1;
      for (size_t s = 0; s < seqs.size(); ++s) {
        double dot = 0, na = 0, nb = 0;
        for (size_t i = 0; i < h; ++i) {
          dot += double{got[s * h + i]} * want[s * h + i];
          na += double{got[s * h + i]} * got[s * h + i];
          nb += double{want[s * h + i]} * want[s * h + i];
        }
        const double cosine = dot / std::sqrt(na * nb);
        worst = std::min(worst, cosine);
        EXPECT_GE(cosine, floor) << precision << " hidden " << h << " sequence " << s
                                 << " of length " << seqs[s].size();
      }
      std::cout << "hidden " << h << " " << precision << ": worst cosine " << worst << std::endl;
      // And through Execute, with text.
      InferenceRequest req = TextRequest({"hello world", "world"});
      InferenceResponse resp;
      std::vector<RuntimeCall> batch = {{&req, &resp, {}}};
      ASSERT_TRUE((*gpu)->Execute(absl::MakeSpan(batch)).ok());
      ASSERT_TRUE(batch[0].status.ok()) << batch[0].status;
      EXPECT_EQ(resp.outputs[0].shape, (std::vector<int64_t>{2, c.hidden_size}));
    }
  }
}

// The staged (pipeline) path on the GPU gives what Execute gives, for a batch of one pass (packed
// into pinned memory, launched asynchronously) and one larger than a pass (run pass by pass),
// with a request that fails alone in each.
TEST(GpuEncoderTest, StagedPathMatchesExecute) {
  FERRY_SKIP_WITHOUT_GPU();
  const BertConfig c = SmallConfig();
  TempDir dir;
  WriteModelFolder(dir, c);
  EmbeddingRuntime::Options options;
  options.model_dir = dir.path();
  options.use_gpu = true;
  options.precision = cuda::Precision::kFp32;
  options.gpu_max_tokens = 512;
  options.gpu_slots = 2;
  absl::StatusOr<std::unique_ptr<EmbeddingRuntime>> rt = EmbeddingRuntime::Create(options);
  ASSERT_TRUE(rt.ok()) << rt.status();
  StagedRuntime* staged = (*rt)->staged();
  ASSERT_NE(staged, nullptr);
  EXPECT_EQ(staged->num_slots(), 2);
  std::vector<std::string> many;  // 60 texts of 14 tokens: 840 > 512, two passes
  for (int i = 0; i < 60; ++i)
    many.push_back(
        absl::StrCat("hello world w", 10 + i % 30, " , ! hello world hello world w12 w13 w14"));
  for (bool large : {false, true}) {
    InferenceRequest good = large ? TextRequest(many) : TextRequest({"hello world", "w11 w12"});
    InferenceRequest bad = TextRequest({"fine", "not \xFF utf-8"});
    InferenceResponse r0, r1, e0, e1;
    std::vector<RuntimeCall> batch = {{&good, &r0, {}}, {&bad, &r1, {}}};
    std::vector<RuntimeCall> reference = {{&good, &e0, {}}, {&bad, &e1, {}}};
    ASSERT_TRUE((*rt)->Execute(absl::MakeSpan(reference)).ok());
    ASSERT_TRUE(staged->Pack(1, absl::MakeSpan(batch)).ok());
    absl::Notification finished;
    absl::Status device_status = absl::UnknownError("done not called");
    ASSERT_TRUE(staged
                    ->Launch(1,
                             [&](absl::Status s) {
                               device_status = s;
                               finished.Notify();
                             })
                    .ok());
    finished.WaitForNotification();
    ASSERT_TRUE(device_status.ok()) << device_status;
    ASSERT_TRUE(staged->Unpack(1, absl::MakeSpan(batch)).ok());
    const DeviceStageTimes times = staged->StageTimes(1);
    staged->Release(1);
    EXPECT_EQ(times.compute_us >= 0, !large) << "device times exist for the asynchronous pass";
    ASSERT_TRUE(batch[0].status.ok()) << batch[0].status;
    EXPECT_EQ(batch[1].status.code(), absl::StatusCode::kInvalidArgument);
    ASSERT_EQ(r0.outputs.size(), 1u);
    ASSERT_EQ(r0.outputs[0].data.size(), e0.outputs[0].data.size());
    const float* a = r0.outputs[0].as<float>();
    const float* b = e0.outputs[0].as<float>();
    for (size_t i = 0; i < r0.outputs[0].data.size() / sizeof(float); ++i) {
      ASSERT_NEAR(a[i], b[i], 1e-5) << (large ? "two passes" : "one pass") << " element " << i;
    }
    EXPECT_EQ(r0.parameters["tokens"], e0.parameters["tokens"]);
  }
}

}  // namespace
}  // namespace ferry::kernels
