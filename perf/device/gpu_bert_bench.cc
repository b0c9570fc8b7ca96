// The sentence-embedding GPU encoder (cuda/gpu_bert.h) on a real model folder: throughput versus
// batch size and sequence length at each precision, single-request latency, and embeddings of
// given sentences for the comparison with sentence-transformers (perf/device/bert_st_check.py).
//
//   ferry_gpu_bert_bench bench MODEL_DIR [--csv PATH] [--seconds S] [--precisions fp16,bf16,fp32]
//   ferry_gpu_bert_bench embed MODEL_DIR PRECISION     stdin: one UTF-8 sentence per line;
//                                                      stdout: one embedding per line (%.9g)
//
// bench: for each precision, sequence length (16, 32, 128, 256 tokens, [CLS]/[SEP] included) and
// batch size (1 to 1024 sequences): GpuBert passes over pre-tokenized synthetic text, host ids in
// to host embeddings out (copies included), repeated for S seconds (default 0.3) after a warm-up
// pass. tokens/s = tokens embedded / wall time; TFLOP/s from BertEncoder::FlopsPerToken (≈22.4
// MFLOP per token at 128 tokens for MiniLM); fraction of the card's dense peak at that precision
// (NVIDIA datasheet numbers, by GPU name; blank for a card not in the table). Then "latency": one
// sentence of about 12 tokens per request, tokenized and embedded per call (what one HTTP request
// costs the runtime), p50/p99 over 300 calls. Passes run back to back on two slots: while one
// slot's pass runs on the GPU the next is packed, as the serving path can. Without a GPU it prints
// the reason and exits 0.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cuda/device.h"
#include "cuda/gpu_bert.h"
#include "cuda/linear.h"
#include "gpu_peaks.h"
#include "kernels/bert_encoder.h"
#include "kernels/embedding_runtime.h"

namespace {

using ferry::cuda::GpuBert;
using ferry::cuda::Precision;
using ferry::kernels::SentenceEncoder;
using Clock = std::chrono::steady_clock;

using ferry::perf::PeakTflops;

std::unique_ptr<SentenceEncoder> LoadOrDie(const std::string& dir) {
  auto encoder = SentenceEncoder::Load(dir, 0);
  if (!encoder.ok()) {
    std::cerr << encoder.status() << "\n";
    std::exit(1);
  }
  return *std::move(encoder);
}

std::unique_ptr<GpuBert> GpuOrDie(const SentenceEncoder& e, Precision p, int64_t max_tokens) {
  const ferry::kernels::BertConfig& c = e.encoder().config();
  const ferry::kernels::BertWeights& w = e.encoder().weights();
  ferry::cuda::GpuBertModel m;
  m.vocab_size = c.vocab_size;
  m.hidden_size = c.hidden_size;
  m.num_heads = c.num_heads;
  m.intermediate_size = c.intermediate_size;
  m.max_position_embeddings = c.max_position_embeddings;
  m.layer_norm_eps = c.layer_norm_eps;
  m.word_embeddings = w.word_embeddings;
  m.position_embeddings = w.position_embeddings;
  m.token_type0 = absl::MakeConstSpan(w.token_type_embeddings).subspan(0, c.hidden_size);
  m.embedding_ln_gamma = w.embedding_ln_gamma;
  m.embedding_ln_beta = w.embedding_ln_beta;
  for (const ferry::kernels::BertLayerWeights& l : w.layers) {
    m.layers.push_back({l.qkv_weight, l.qkv_bias, l.attn_out_weight, l.attn_out_bias,
                        l.attn_ln_gamma, l.attn_ln_beta, l.ffn_in_weight, l.ffn_in_bias,
                        l.ffn_out_weight, l.ffn_out_bias, l.out_ln_gamma, l.out_ln_beta});
  }
  GpuBert::Options o;
  o.precision = p;
  o.max_tokens = max_tokens;
  o.max_sequences = 4096;
  o.num_slots = 2;
  auto gpu = GpuBert::Create(o, m);
  if (!gpu.ok()) {
    std::cerr << "GpuBert::Create(" << ferry::cuda::PrecisionName(p) << "): " << gpu.status()
              << "\n";
    std::exit(1);
  }
  return *std::move(gpu);
}

// Synthetic English-like text of exactly `tokens` tokens ([CLS] and [SEP] included) for an
// uncased BERT vocabulary: every word below is one token. perf/device/bert_st_check.py builds the
// same texts.
std::string SyntheticText(int tokens, int seed) {
  static const char* kWords[] = {"the",  "quick", "brown", "fox",  "jumps", "over",
                                 "lazy", "dog",   "model", "runs", "on",    "small",
                                 "and",  "large", "with",  "low",  "time",  "batch"};
  std::string text;
  for (int i = 0; i < tokens - 2; ++i) {
    absl::StrAppend(&text, i ? " " : "", kWords[(i * 7 + seed * 13) % 18]);
  }
  return text;
}

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5));
  return v[i];
}

int Bench(const std::string& dir, const std::string& csv_path, double seconds,
          const std::vector<Precision>& precisions) {
  auto gpus = ferry::cuda::ListGpus();
  if (!gpus.ok()) {
    std::printf("%s\n", std::string(gpus.status().message()).c_str());
    return 0;
  }
  const std::string gpu_name = gpus->front().name;
  std::unique_ptr<SentenceEncoder> enc = LoadOrDie(dir);
  const int lengths[] = {16, 32, 128, 256};
  const int batches[] = {1, 8, 32, 128, 512, 1024};
  std::ofstream csv(csv_path);
  csv << "system,mode,gpu,precision,batch,tokens_per_seq,runs,seconds,sentences_per_s,tokens_per_s,"
         "tflops,peak_tflops,fraction_of_peak,p50_ms,p99_ms\n";
  std::printf("GpuBert on %s (%s), %.2f s per configuration\n", gpu_name.c_str(), dir.c_str(),
              seconds);
  std::printf("%-5s %6s %5s %8s %12s %12s %8s %7s %9s\n", "prec", "batch", "len", "runs", "sent/s",
              "tokens/s", "TFLOP/s", "%peak", "ms/batch");
  for (Precision p : precisions) {
    // Passes of up to 1024 × 256 tokens: the largest configuration is one pass.
    std::unique_ptr<GpuBert> gpu = GpuOrDie(*enc, p, 1024 * 256);
    const double peak = PeakTflops(gpu_name, p);
    for (int len : lengths) {
      for (int batch : batches) {
        std::vector<std::vector<int32_t>> seqs(batch);
        for (int i = 0; i < batch; ++i) {
          if (!enc->Tokenize(SyntheticText(len, i), &seqs[i]).ok()) std::abort();
        }
        int64_t tokens = 0;
        for (const auto& s : seqs) tokens += static_cast<int64_t>(s.size());
        const int actual_len = static_cast<int>(tokens / batch);
        // Two slots back to back: pack slot k+1 while slot k runs.
        auto pass = [&](int slot) {
          if (!gpu->Pack(slot, seqs).ok() || !gpu->Launch(slot, true, nullptr).ok()) std::abort();
        };
        pass(0);
        if (!gpu->Wait(0).ok()) std::abort();
        int runs = 0;
        std::vector<double> batch_ms;
        const auto start = Clock::now();
        double elapsed = 0;
        int slot = 0;
        pass(slot);
        auto last = Clock::now();
        do {
          pass(1 - slot);
          if (absl::Status s = gpu->Wait(slot); !s.ok()) {
            std::cerr << s << "\n";
            return 1;
          }
          const auto now = Clock::now();
          batch_ms.push_back(std::chrono::duration<double, std::milli>(now - last).count());
          last = now;
          ++runs;
          slot = 1 - slot;
          elapsed = std::chrono::duration<double>(now - start).count();
        } while (elapsed < seconds || runs < 3);
        if (!gpu->Wait(slot).ok()) std::abort();
        const double tokens_per_s = tokens * runs / elapsed;
        const double tflops = tokens_per_s * enc->encoder().FlopsPerToken(actual_len) / 1e12;
        const double frac = peak > 0 ? tflops / peak : NAN;
        std::printf("%-5s %6d %5d %8d %12.1f %12.4g %8.2f %6.2f%% %9.3f\n",
                    std::string(ferry::cuda::PrecisionName(p)).c_str(), batch, actual_len, runs,
                    batch * runs / elapsed, tokens_per_s, tflops, 100 * frac,
                    Percentile(batch_ms, 0.5));
        csv << "ferry,throughput," << gpu_name << ',' << ferry::cuda::PrecisionName(p) << ','
            << batch << ',' << actual_len << ',' << runs << ',' << elapsed << ','
            << batch * runs / elapsed << ',' << tokens_per_s << ',' << tflops << ','
            << (peak > 0 ? std::to_string(peak) : "") << ','
            << (peak > 0 ? std::to_string(frac) : "") << ',' << Percentile(batch_ms, 0.5) << ','
            << Percentile(batch_ms, 0.99) << '\n';
      }
    }
    // Single request: tokenize + embed one short sentence per call, synchronously.
    const std::string sentence = "A man is playing a guitar on the stage tonight.";
    std::vector<std::vector<int32_t>> one(1);
    std::vector<float> out(enc->dim());
    std::vector<double> ms;
    for (int i = 0; i < 320; ++i) {
      const auto t0 = Clock::now();
      one[0].clear();
      if (!enc->Tokenize(sentence, &one[0]).ok() || !gpu->Embed(one, true, out.data()).ok()) {
        std::abort();
      }
      if (i >= 20)
        ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    std::printf("%-5s single request (%zu tokens): p50 %.3f ms, p99 %.3f ms\n",
                std::string(ferry::cuda::PrecisionName(p)).c_str(), one[0].size(),
                Percentile(ms, 0.5), Percentile(ms, 0.99));
    csv << "ferry,latency," << gpu_name << ',' << ferry::cuda::PrecisionName(p) << ",1,"
        << one[0].size() << ',' << ms.size() << ",,,,,,," << Percentile(ms, 0.5) << ','
        << Percentile(ms, 0.99) << '\n';
  }
  return 0;
}

int Embed(const std::string& dir, Precision p) {
  std::unique_ptr<SentenceEncoder> enc = LoadOrDie(dir);
  std::vector<std::vector<int32_t>> seqs;
  std::string line;
  while (std::getline(std::cin, line)) {
    seqs.emplace_back();
    if (absl::Status s = enc->Tokenize(line, &seqs.back()); !s.ok()) {
      std::cerr << s << "\n";
      return 1;
    }
  }
  std::unique_ptr<GpuBert> gpu = GpuOrDie(*enc, p, 16384);
  std::vector<float> out(seqs.size() * enc->dim());
  if (absl::Status s = gpu->Embed(seqs, true, out.data()); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    std::string text;
    for (int k = 0; k < enc->dim(); ++k) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%s%.9g", k ? " " : "", out[i * enc->dim() + k]);
      text += buf;
    }
    std::printf("%s\n", text.c_str());
  }
  return 0;
}

int Usage() {
  std::cerr << "usage: ferry_gpu_bert_bench bench MODEL_DIR [--csv PATH] [--seconds S] "
               "[--precisions fp16,bf16,fp32]\n"
               "       ferry_gpu_bert_bench embed MODEL_DIR PRECISION < sentences\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return Usage();
  const std::string mode = argv[1];
  const std::string dir = argv[2];
  if (mode == "embed" && argc == 4) {
    Precision p;
    if (!ferry::cuda::PrecisionFromName(argv[3], &p)) return Usage();
    return Embed(dir, p);
  }
  if (mode != "bench") return Usage();
  std::string csv = "gpu_bert.csv";
  double seconds = 0.3;
  std::vector<Precision> precisions = {Precision::kFp16, Precision::kBf16, Precision::kFp32};
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--csv") {
      csv = argv[i + 1];
    } else if (flag == "--seconds") {
      seconds = std::atof(argv[i + 1]);
    } else if (flag == "--precisions") {
      precisions.clear();
      for (absl::string_view name : absl::StrSplit(argv[i + 1], ',')) {
        Precision p;
        if (!ferry::cuda::PrecisionFromName(std::string(name), &p)) return Usage();
        precisions.push_back(p);
      }
    } else {
      return Usage();
    }
  }
  return Bench(dir, csv, seconds, precisions);
}
