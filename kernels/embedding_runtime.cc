#include "kernels/embedding_runtime.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ferry/config_reader.h"
#include "ferry/runtime_registry.h"
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
  if (absl::Status s = config::CheckKeys(spec, {"inputName", "outputName", "maxSeqLength"});
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
  return options;
}

absl::StatusOr<std::unique_ptr<EmbeddingRuntime>> EmbeddingRuntime::Create(const Options& options) {
  absl::StatusOr<std::unique_ptr<SentenceEncoder>> encoder =
      SentenceEncoder::Load(options.model_dir, options.max_seq_length);
  if (!encoder.ok()) return encoder.status();
  std::unique_ptr<EmbeddingRuntime> rt(new EmbeddingRuntime());
  rt->options_ = options;
  rt->encoder_ = *std::move(encoder);
  rt->signature_.platform = "ferry_sentence_embedding";
  rt->signature_.batched = true;
  rt->signature_.inputs.push_back(TensorSpec{options.input_name, DataType::kBytes, {-1}});
  rt->signature_.outputs.push_back(
      TensorSpec{options.output_name, DataType::kFp32, {-1, rt->encoder_->dim()}});
  return rt;
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

absl::Status EmbeddingRuntime::Execute(absl::Span<RuntimeCall> batch) {
  // Tokenize everything first; requests with a bad row fail alone and add no sequences.
  std::vector<std::vector<int32_t>> sequences;
  std::vector<size_t> first_row(batch.size(), 0);
  std::vector<size_t> rows(batch.size(), 0);
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
    first_row[c] = begin;
    rows[c] = sequences.size() - begin;
  }
  const size_t dim = static_cast<size_t>(encoder_->dim());
  std::vector<float> embeddings(sequences.size() * dim);
  if (absl::Status s = encoder_->Embed(sequences, embeddings.data()); !s.ok()) return s;
  for (size_t c = 0; c < batch.size(); ++c) {
    RuntimeCall& call = batch[c];
    if (!call.status.ok()) continue;
    // The tokens embedded, for usage accounting (OpenAI's /v1/embeddings usage).
    int64_t tokens = 0;
    for (size_t r = 0; r < rows[c]; ++r) {
      tokens += static_cast<int64_t>(sequences[first_row[c] + r].size());
    }
    call.response->parameters["tokens"] = tokens;
    Tensor out;
    out.name = options_.output_name;
    out.dtype = DataType::kFp32;
    out.shape = {static_cast<int64_t>(rows[c]), static_cast<int64_t>(dim)};
    out.data.resize(rows[c] * dim * sizeof(float));
    if (rows[c] > 0) {
      std::memcpy(out.data.data(), embeddings.data() + first_row[c] * dim, out.data.size());
    }
    call.response->outputs.push_back(std::move(out));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Runtime>> CreateEmbeddingRuntime(const FunctionSpec& spec,
                                                                const RuntimeContext& /*context*/) {
  absl::StatusOr<EmbeddingRuntime::Options> options = EmbeddingRuntime::ParseOptions(spec);
  if (!options.ok()) return options.status();
  absl::StatusOr<std::unique_ptr<EmbeddingRuntime>> runtime = EmbeddingRuntime::Create(*options);
  if (!runtime.ok()) {
    return absl::Status(
        runtime.status().code(),
        absl::StrCat(config::Where(spec), "spec.model.uri: ", runtime.status().message()));
  }
  return std::unique_ptr<Runtime>(*std::move(runtime));
}

FERRY_REGISTER_RUNTIME("sentence-embedding",
                       "BERT sentence embeddings (all-MiniLM-L6-v2 family) from a "
                       "sentence-transformers folder, CPU",
                       &CreateEmbeddingRuntime);

}  // namespace ferry::kernels
