// Throughput of the wordfilter runtime's Filter on one thread, over documents like the seed
// benchmark's short messages (~12 words, some blacklisted). Correctness is tested in
// kernels/runtime_test.cc; this only times it.
//   build/perf/bench_wordfilter [--benchmark_min_time=2]
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/wordfilter_runtime.h"

namespace {

std::vector<std::string> Documents(int n) {
  const std::vector<std::string> vocab = {"the",  "quick", "brown", "fox",   "jumps", "over",
                                          "lazy", "dog",   "darn",  "what",  "a",     "day",
                                          "heck", "Hello", "world", "crap,", "it's",  "fine."};
  std::mt19937 rng(7);
  std::vector<std::string> docs;
  docs.reserve(n);
  for (int d = 0; d < n; ++d) {
    std::string doc;
    for (int w = 0; w < 12; ++w) {
      if (w) doc += ' ';
      doc += vocab[rng() % vocab.size()];
    }
    docs.push_back(std::move(doc));
  }
  return docs;
}

void BM_WordFilterDocuments(benchmark::State& state) {
  auto rt = ferry::kernels::WordFilterRuntime::Create(
      {{"darn", "heck", "crap", "dang", "shoot", "frick", "bloody"}, '*'});
  if (!rt.ok()) {
    state.SkipWithError(std::string(rt.status().message()).c_str());
    return;
  }
  const std::vector<std::string> docs = Documents(1000);
  std::string out;
  int64_t masked = 0;
  for (auto _ : state) {
    for (const std::string& doc : docs) masked += (*rt)->Filter(doc, &out);
    benchmark::DoNotOptimize(out);
  }
  benchmark::DoNotOptimize(masked);
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(docs.size()));
}
BENCHMARK(BM_WordFilterDocuments);

}  // namespace

BENCHMARK_MAIN();
