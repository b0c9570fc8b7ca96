// ferry-embed-tool: the sentence-embedding pieces from the command line, for the reference
// comparisons (tests/reference/) and the CPU benchmark (perf/bench_embed.py).
//
//   ferry-embed-tool tokenize VOCAB MAX_SEQ_LENGTH   stdin: one hex-encoded text per line;
//                                                    stdout: its token ids, space-separated
//   ferry-embed-tool embed MODEL_DIR                 stdin: hex-encoded texts; stdout: one
//                                                    embedding per line (%.9g floats)
//   ferry-embed-tool bench MODEL_DIR BATCH TOKENS SECONDS
//                                                    embeds batches of BATCH synthetic texts of
//                                                    about TOKENS tokens for SECONDS; prints JSON
// Texts are hex-encoded so that any bytes (newlines, NUL, invalid UTF-8) pass through.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "kernels/embedding_runtime.h"
#include "kernels/wordpiece.h"

namespace {

using ferry::kernels::SentenceEncoder;
using ferry::kernels::WordPieceTokenizer;

bool ReadHexLine(std::string* text) {
  std::string line;
  if (!std::getline(std::cin, line)) return false;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.size() % 2 != 0 || line.find_first_not_of("0123456789abcdefABCDEF") != line.npos) {
    std::cerr << "not a hex line: " << line.substr(0, 40) << "\n";
    std::exit(2);
  }
  *text = absl::HexStringToBytes(line);
  return true;
}

int Tokenize(const char* vocab, int max_seq_length) {
  WordPieceTokenizer::Options options;
  options.vocab_path = vocab;
  options.max_seq_length = max_seq_length;
  auto tokenizer = WordPieceTokenizer::Create(options);
  if (!tokenizer.ok()) {
    std::cerr << tokenizer.status() << "\n";
    return 1;
  }
  std::string text;
  std::vector<int32_t> ids;
  std::string out;
  while (ReadHexLine(&text)) {
    ids.clear();
    out.clear();
    if (absl::Status s = (*tokenizer)->Encode(text, &ids); !s.ok()) {
      out = absl::StrCat("error ", s.message());
    }
    for (size_t i = 0; i < ids.size(); ++i) absl::StrAppend(&out, i ? " " : "", ids[i]);
    out.push_back('\n');
    std::fwrite(out.data(), 1, out.size(), stdout);
  }
  return 0;
}

std::unique_ptr<SentenceEncoder> LoadOrDie(const char* dir) {
  auto encoder = SentenceEncoder::Load(dir, 0);
  if (!encoder.ok()) {
    std::cerr << encoder.status() << "\n";
    std::exit(1);
  }
  return *std::move(encoder);
}

int Embed(const char* dir) {
  std::unique_ptr<SentenceEncoder> encoder = LoadOrDie(dir);
  std::vector<std::vector<int32_t>> sequences;
  std::string text;
  while (ReadHexLine(&text)) {
    sequences.emplace_back();
    if (absl::Status s = encoder->Tokenize(text, &sequences.back()); !s.ok()) {
      std::cerr << s << "\n";
      return 1;
    }
  }
  std::vector<float> out(sequences.size() * encoder->dim());
  if (absl::Status s = encoder->Embed(sequences, out.data()); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
  for (size_t i = 0; i < sequences.size(); ++i) {
    std::string line;
    for (int k = 0; k < encoder->dim(); ++k) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%s%.9g", k ? " " : "", out[i * encoder->dim() + k]);
      line += buf;
    }
    std::printf("%s\n", line.c_str());
  }
  return 0;
}

// User + system CPU time of the whole process (every thread), in seconds.
double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// Synthetic English-like text of about `tokens` tokens ([CLS] and [SEP] included).
std::string SyntheticText(int tokens, int seed) {
  // Each of these is one token in an uncased BERT vocabulary.
  static const char* kWords[] = {"the",  "quick", "brown", "fox",  "jumps", "over",
                                 "lazy", "dog",   "model", "runs", "on",    "small",
                                 "and",  "large", "with",  "low",  "time",  "batch"};
  std::string text;
  for (int i = 0; i < tokens - 2; ++i) {
    absl::StrAppend(&text, i ? " " : "", kWords[(i * 7 + seed * 13) % 18]);
  }
  return text;
}

int Bench(const char* dir, int batch, int tokens, double seconds) {
  std::unique_ptr<SentenceEncoder> encoder = LoadOrDie(dir);
  std::vector<std::string> texts;
  for (int i = 0; i < batch; ++i) texts.push_back(SyntheticText(tokens, i));
  size_t total_tokens = 0;
  std::vector<std::vector<int32_t>> sequences(batch);
  std::vector<float> out(static_cast<size_t>(batch) * encoder->dim());
  auto run_once = [&]() {
    // Tokenization is part of the measured work, as in sentence-transformers' encode().
    size_t t = 0;
    for (int i = 0; i < batch; ++i) {
      sequences[i].clear();
      if (!encoder->Tokenize(texts[i], &sequences[i]).ok()) std::abort();
      t += sequences[i].size();
    }
    if (!encoder->Embed(sequences, out.data()).ok()) std::abort();
    return t;
  };
  run_once();  // warm-up
  const double cpu_start = CpuSeconds();
  const auto start = std::chrono::steady_clock::now();
  int iterations = 0;
  double elapsed = 0;
  do {
    total_tokens += run_once();
    ++iterations;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } while (elapsed < seconds);
  const double cpu = CpuSeconds() - cpu_start;
  // Wall-clock rates depend on what else the machine runs; tokens per CPU-second do not (much).
  std::printf(
      "{\"batch\": %d, \"tokens_per_text\": %.1f, \"iterations\": %d, \"seconds\": %.3f, "
      "\"cpu_seconds\": %.3f, \"sentences_per_s\": %.2f, \"tokens_per_s\": %.1f, "
      "\"tokens_per_cpu_s\": %.1f, \"batch_latency_ms\": %.3f}\n",
      batch, static_cast<double>(total_tokens) / iterations / batch, iterations, elapsed, cpu,
      iterations * batch / elapsed, total_tokens / elapsed, total_tokens / cpu,
      1000.0 * elapsed / iterations);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "tokenize" && argc == 4) return Tokenize(argv[2], std::atoi(argv[3]));
  if (mode == "embed" && argc == 3) return Embed(argv[2]);
  if (mode == "bench" && argc == 6) {
    return Bench(argv[2], std::atoi(argv[3]), std::atoi(argv[4]), std::atof(argv[5]));
  }
  std::cerr << "usage: ferry-embed-tool tokenize VOCAB MAX_SEQ_LENGTH | embed MODEL_DIR | "
               "bench MODEL_DIR BATCH TOKENS SECONDS\n";
  return 2;
}
