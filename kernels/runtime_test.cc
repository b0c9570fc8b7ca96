#include "ferry/runtime.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "cuda/device.h"
#include "cuda/gpu_test_util.h"
#include "ferry/runtime_registry.h"
#include "ferry/staged_runtime.h"
#include "ferry/weight_cache.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/echo_runtime.h"
#include "kernels/mlp_runtime.h"
#include "kernels/test_safetensors_writer.h"
#include "kernels/wordfilter_runtime.h"

namespace ferry::kernels {
namespace {

using ::ferry::kernels::testing::FloatBytes;
using ::ferry::kernels::testing::SafetensorsBytes;
using ::ferry::kernels::testing::TestTensor;
using ::ferry::kernels::testing::WriteFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// ---------------------------------------------------------------------------------------------
// Helpers.

// Every runtime is created by name, as the agent does.
absl::StatusOr<std::unique_ptr<Runtime>> CreateRuntime(const FunctionSpec& spec,
                                                       const RuntimeContext& context) {
  return RuntimeRegistry::Global().Create(spec, context);
}

FunctionSpec Spec(const std::string& runtime, nlohmann::json config = nlohmann::json::object()) {
  FunctionSpec spec;
  spec.name = "f";
  spec.runtime = runtime;
  spec.config = std::move(config);
  spec.source = "fn.yaml";
  spec.base_dir = ::testing::TempDir();
  return spec;
}

Tensor BytesTensor(const std::string& name, std::vector<std::string> elements) {
  Tensor t;
  t.name = name;
  t.dtype = DataType::kBytes;
  t.shape = {static_cast<int64_t>(elements.size())};
  t.bytes = std::move(elements);
  return t;
}

Tensor FloatTensor(const std::string& name, std::vector<int64_t> shape,
                   const std::vector<float>& values) {
  Tensor t;
  t.name = name;
  t.dtype = DataType::kFp32;
  t.shape = std::move(shape);
  t.data = FloatBytes(values);
  return t;
}

std::vector<float> Floats(const Tensor& t) {
  std::vector<float> out(t.data.size() / sizeof(float));
  if (!out.empty()) std::memcpy(out.data(), t.data.data(), t.data.size());
  return out;
}

std::vector<int32_t> Ints(const Tensor& t) {
  std::vector<int32_t> out(t.data.size() / sizeof(int32_t));
  if (!out.empty()) std::memcpy(out.data(), t.data.data(), t.data.size());
  return out;
}

const Tensor* Output(const InferenceResponse& response, const std::string& name) {
  for (const Tensor& t : response.outputs) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

// Runs `requests` as one batch; every request must be valid for the runtime.
std::vector<InferenceResponse> RunBatch(Runtime& runtime,
                                        const std::vector<InferenceRequest>& requests) {
  std::vector<InferenceResponse> responses(requests.size());
  std::vector<RuntimeCall> calls(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_TRUE(ValidateRequest(runtime.signature(), requests[i]).ok())
        << ValidateRequest(runtime.signature(), requests[i]);
    calls[i].request = &requests[i];
    calls[i].response = &responses[i];
  }
  absl::Status s = runtime.Execute(absl::MakeSpan(calls));
  EXPECT_TRUE(s.ok()) << s;
  for (const RuntimeCall& c : calls) EXPECT_TRUE(c.status.ok()) << c.status;
  return responses;
}

InferenceRequest Request(std::vector<Tensor> inputs) {
  InferenceRequest r;
  r.model_name = "f";
  r.inputs = std::move(inputs);
  return r;
}

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/rt_" + std::to_string(::getpid()) + "_" + name;
}

std::string ErrorOf(const FunctionSpec& spec) {
  absl::StatusOr<std::unique_ptr<Runtime>> rt = CreateRuntime(spec, RuntimeContext{});
  if (rt.ok()) return "";
  return std::string(rt.status().message());
}

// ---------------------------------------------------------------------------------------------
// ValidateRequest / RequestCost.

ModelSignature TwoInputSignature() {
  ModelSignature sig;
  sig.platform = "test";
  sig.inputs = {{"a", DataType::kFp32, {-1, 3}}, {"b", DataType::kBytes, {-1}}};
  sig.outputs = {{"y", DataType::kFp32, {-1}}};
  return sig;
}

InferenceRequest GoodTwoInputRequest() {
  return Request({FloatTensor("a", {2, 3}, {1, 2, 3, 4, 5, 6}), BytesTensor("b", {"x", "y"})});
}

std::string ValidationError(const InferenceRequest& request) {
  absl::Status s = ValidateRequest(TwoInputSignature(), request);
  if (s.ok()) return "";
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  return std::string(s.message());
}

TEST(ValidateRequestTest, AcceptsGoodRequest) {
  InferenceRequest r = GoodTwoInputRequest();
  r.outputs.push_back(RequestedOutput{"y"});
  EXPECT_EQ(ValidationError(r), "");
  EXPECT_EQ(RequestCost(TwoInputSignature(), r), 2);
}

TEST(ValidateRequestTest, RejectsBadRequests) {
  InferenceRequest r = GoodTwoInputRequest();
  r.inputs.pop_back();
  EXPECT_THAT(ValidationError(r), HasSubstr("missing input 'b'"));

  r = GoodTwoInputRequest();
  r.inputs.push_back(BytesTensor("c", {"z"}));
  EXPECT_THAT(ValidationError(r), HasSubstr("unknown input 'c'"));

  r = GoodTwoInputRequest();
  r.inputs.push_back(BytesTensor("b", {"z", "w"}));
  EXPECT_THAT(ValidationError(r), HasSubstr("more than once"));

  r = GoodTwoInputRequest();
  r.inputs[0].dtype = DataType::kInt32;
  EXPECT_THAT(ValidationError(r), HasSubstr("input 'a': datatype INT32, expected FP32"));

  r = GoodTwoInputRequest();
  r.inputs[0].shape = {6};
  EXPECT_THAT(ValidationError(r), HasSubstr("expected rank 2"));

  r = GoodTwoInputRequest();
  r.inputs[0].shape = {3, 2};
  EXPECT_THAT(ValidationError(r), HasSubstr("dim 1 must be 3"));

  r = GoodTwoInputRequest();
  r.inputs[1] = BytesTensor("b", {"x", "y", "z"});
  EXPECT_THAT(ValidationError(r), HasSubstr("disagree on the batch dim"));

  r = GoodTwoInputRequest();
  r.inputs[0].data.resize(20);
  EXPECT_THAT(ValidationError(r), HasSubstr("needs 24 bytes"));

  r = GoodTwoInputRequest();
  r.inputs[1].bytes.pop_back();
  EXPECT_THAT(ValidationError(r), HasSubstr("'b'"));

  r = GoodTwoInputRequest();
  r.inputs[0].shape = {-2, 3};
  EXPECT_THAT(ValidationError(r), HasSubstr("negative"));

  r = Request({FloatTensor("a", {0, 3}, {}), BytesTensor("b", {})});
  EXPECT_THAT(ValidationError(r), HasSubstr("batch dim is 0"));

  r = GoodTwoInputRequest();
  r.outputs.push_back(RequestedOutput{"nope"});
  EXPECT_THAT(ValidationError(r), HasSubstr("unknown output 'nope'"));
}

TEST(ValidateRequestTest, UnbatchedCostsOne) {
  ModelSignature sig;
  sig.batched = false;
  sig.inputs = {{"x", DataType::kInt64, {2}}};
  Tensor x;
  x.name = "x";
  x.dtype = DataType::kInt64;
  x.shape = {2};
  x.data.assign(16, '\0');
  InferenceRequest r = Request({x});
  EXPECT_TRUE(ValidateRequest(sig, r).ok());
  EXPECT_EQ(RequestCost(sig, r), 1);
}

// ---------------------------------------------------------------------------------------------
// CreateRuntime.

TEST(CreateRuntimeTest, UnknownRuntimesAreUnimplemented) {
  const std::vector<std::string> names = RuntimeRegistry::Global().Names();
  EXPECT_THAT(names, ::testing::IsSupersetOf({"echo", "mlp", "wordfilter"}));
  for (const std::string name : {"tensorflow", "bogus"}) {
    absl::StatusOr<std::unique_ptr<Runtime>> rt = CreateRuntime(Spec(name), RuntimeContext{});
    ASSERT_FALSE(rt.ok());
    EXPECT_EQ(rt.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_THAT(std::string(rt.status().message()), HasSubstr("fn.yaml: spec.runtime"));
    EXPECT_THAT(std::string(rt.status().message()), HasSubstr("'" + name + "'"));
    EXPECT_THAT(std::string(rt.status().message()),
                HasSubstr("available runtimes: " + absl::StrJoin(names, ", ")));
  }
}

TEST(CreateRuntimeTest, ConfigMustBeAnObject) {
  EXPECT_THAT(ErrorOf(Spec("echo", nlohmann::json::array({1}))),
              HasSubstr("fn.yaml: spec.config: expected an object"));
  EXPECT_EQ(ErrorOf(Spec("echo", nullptr)), "");
}

// ---------------------------------------------------------------------------------------------
// echo.

TEST(EchoTest, DefaultRoundTrip) {
  absl::StatusOr<std::unique_ptr<Runtime>> rt = CreateRuntime(Spec("echo"), RuntimeContext{});
  ASSERT_TRUE(rt.ok()) << rt.status();
  const ModelSignature& sig = (*rt)->signature();
  EXPECT_EQ(sig.platform, "ferry_echo");
  EXPECT_TRUE(sig.batched);
  ASSERT_EQ(sig.inputs.size(), 1u);
  EXPECT_EQ(sig.inputs[0].name, "INPUT0");
  EXPECT_EQ(sig.inputs[0].dtype, DataType::kBytes);
  EXPECT_EQ(sig.inputs[0].shape, std::vector<int64_t>{-1});
  ASSERT_EQ(sig.outputs.size(), 1u);
  EXPECT_EQ(sig.outputs[0].name, "OUTPUT0");

  std::vector<InferenceResponse> out =
      RunBatch(**rt, {Request({BytesTensor("INPUT0", {"hello", std::string("\0x", 2)})}),
                      Request({BytesTensor("INPUT0", {"w"})})});
  ASSERT_EQ(out.size(), 2u);
  const Tensor* o0 = Output(out[0], "OUTPUT0");
  ASSERT_NE(o0, nullptr);
  EXPECT_EQ(o0->dtype, DataType::kBytes);
  EXPECT_EQ(o0->shape, std::vector<int64_t>{2});
  EXPECT_THAT(o0->bytes, ElementsAre("hello", std::string("\0x", 2)));
  const Tensor* o1 = Output(out[1], "OUTPUT0");
  ASSERT_NE(o1, nullptr);
  EXPECT_THAT(o1->bytes, ElementsAre("w"));
}

TEST(EchoTest, ConfiguredDtypeAndShape) {
  absl::StatusOr<std::unique_ptr<Runtime>> rt = CreateRuntime(
      Spec("echo",
           {{"datatype", "FP32"}, {"shape", {2, -1}}, {"inputName", "x"}, {"outputName", "y"}}),
      RuntimeContext{});
  ASSERT_TRUE(rt.ok()) << rt.status();
  EXPECT_EQ((*rt)->signature().inputs[0].shape, (std::vector<int64_t>{-1, 2, -1}));
  EXPECT_EQ((*rt)->signature().outputs[0].dtype, DataType::kFp32);

  InferenceRequest bad = Request({FloatTensor("x", {1, 3, 1}, {1, 2, 3})});
  EXPECT_FALSE(ValidateRequest((*rt)->signature(), bad).ok());

  std::vector<InferenceResponse> out =
      RunBatch(**rt, {Request({FloatTensor("x", {1, 2, 2}, {1, 2, 3, 4})})});
  const Tensor* y = Output(out[0], "y");
  ASSERT_NE(y, nullptr);
  EXPECT_EQ(y->shape, (std::vector<int64_t>{1, 2, 2}));
  EXPECT_EQ(Floats(*y), (std::vector<float>{1, 2, 3, 4}));
}

TEST(EchoTest, ConfigErrors) {
  EXPECT_THAT(ErrorOf(Spec("echo", {{"dtype", "FP32"}})),
              HasSubstr("fn.yaml: spec.config.dtype: unknown key"));
  EXPECT_THAT(ErrorOf(Spec("echo", {{"datatype", "FLOAT"}})),
              HasSubstr("spec.config.datatype: unknown datatype 'FLOAT'"));
  EXPECT_THAT(ErrorOf(Spec("echo", {{"shape", {2, 0}}})), HasSubstr("spec.config.shape[1]"));
  EXPECT_THAT(ErrorOf(Spec("echo", {{"shape", "2"}})), HasSubstr("spec.config.shape"));
  EXPECT_THAT(ErrorOf(Spec("echo", {{"delayMicros", -1}})),
              HasSubstr("spec.config.delayMicros: expected an integer in [0, 10000000]"));
  EXPECT_THAT(ErrorOf(Spec("echo", {{"delayMicros", 1.5}})), HasSubstr("expected an integer"));
  EXPECT_THAT(ErrorOf(Spec("echo", {{"inputName", 3}})),
              HasSubstr("spec.config.inputName: expected a string"));
  EXPECT_THAT(ErrorOf(Spec("echo", {{"outputName", ""}})), HasSubstr("non-empty"));
}

// ---------------------------------------------------------------------------------------------
// wordfilter.

std::unique_ptr<Runtime> WordFilter(nlohmann::json config) {
  absl::StatusOr<std::unique_ptr<Runtime>> rt =
      CreateRuntime(Spec("wordfilter", std::move(config)), RuntimeContext{});
  EXPECT_TRUE(rt.ok()) << rt.status();
  return rt.ok() ? *std::move(rt) : nullptr;
}

// Filters `docs` as one request; returns (filtered, count) per document.
std::pair<std::vector<std::string>, std::vector<int32_t>> FilterDocs(
    Runtime& rt, const std::vector<std::string>& docs) {
  std::vector<InferenceResponse> out = RunBatch(rt, {Request({BytesTensor("text", docs)})});
  const Tensor* filtered = Output(out[0], "filtered");
  const Tensor* count = Output(out[0], "count");
  EXPECT_NE(filtered, nullptr);
  EXPECT_NE(count, nullptr);
  if (filtered == nullptr || count == nullptr) return {};
  EXPECT_EQ(filtered->shape, std::vector<int64_t>{static_cast<int64_t>(docs.size())});
  EXPECT_EQ(count->shape, std::vector<int64_t>{static_cast<int64_t>(docs.size())});
  EXPECT_EQ(count->dtype, DataType::kInt32);
  return {filtered->bytes.ToVector(), Ints(*count)};
}

TEST(WordFilterTest, SignatureAndMasking) {
  std::unique_ptr<Runtime> rt = WordFilter({{"blacklist", {"darn", "heck", "Don't"}}});
  ASSERT_NE(rt, nullptr);
  const ModelSignature& sig = rt->signature();
  EXPECT_EQ(sig.platform, "ferry_wordfilter");
  ASSERT_EQ(sig.inputs.size(), 1u);
  EXPECT_EQ(sig.inputs[0].name, "text");
  EXPECT_EQ(sig.inputs[0].shape, std::vector<int64_t>{-1});
  ASSERT_EQ(sig.outputs.size(), 2u);

  auto [filtered, counts] =
      FilterDocs(*rt, {"you are a darn fool", "DARN it, HeCk!", "darned heckle darn2 ", "",
                       "darn-darn.darn,darn;darn", "'darn' \"heck\" (darn)", "don't do that, DON'T",
                       "\xc3\xa4"
                       "darn\xc3\xa4 caf\xc3\xa9 heck",
                       "x_darn\tdarn\nheck", "nothing here"});
  EXPECT_THAT(filtered, ElementsAre("you are a **** fool", "**** it, ****!", "darned heckle darn2 ",
                                    "", "****-****.****,****;****", "'****' \"****\" (****)",
                                    "***** do that, *****",
                                    "\xc3\xa4"
                                    "****\xc3\xa4 caf\xc3\xa9 ****",
                                    "x_****\t****\n****", "nothing here"));
  EXPECT_THAT(counts, ElementsAre(1, 2, 0, 0, 5, 3, 2, 2, 3, 0));
}

TEST(WordFilterTest, CustomMaskAndDirectApi) {
  absl::StatusOr<std::unique_ptr<WordFilterRuntime>> rt =
      WordFilterRuntime::Create({{"crap"}, '#'});
  ASSERT_TRUE(rt.ok());
  std::string out;
  EXPECT_EQ((*rt)->Filter("Crap, what CRAP.", &out), 2);
  EXPECT_EQ(out, "####, what ####.");
  EXPECT_EQ((*rt)->Filter("crapola", &out), 0);
  EXPECT_EQ(out, "crapola");
}

TEST(WordFilterTest, BlacklistFile) {
  const std::string name = "rt_words_" + std::to_string(::getpid()) + ".txt";
  WriteFile(::testing::TempDir() + "/" + name,
            "# mild words\n"
            "darn\n"
            "  Heck   # trailing comment\r\n"
            "\n"
            "   \n"
            "crap\n");
  std::unique_ptr<Runtime> rt =
      WordFilter({{"blacklistFile", name}, {"blacklist", {"dang"}}, {"mask", "-"}});
  ASSERT_NE(rt, nullptr);
  auto [filtered, counts] = FilterDocs(*rt, {"darn heck crap dang mild words"});
  EXPECT_THAT(filtered, ElementsAre("---- ---- ---- ---- mild words"));
  EXPECT_THAT(counts, ElementsAre(4));
  EXPECT_EQ(static_cast<WordFilterRuntime*>(rt.get())->word_count(), 4u);
}

TEST(WordFilterTest, BatchOfRequestsGetsOwnRows) {
  std::unique_ptr<Runtime> rt = WordFilter({{"blacklist", {"heck"}}});
  ASSERT_NE(rt, nullptr);
  std::vector<InferenceResponse> out =
      RunBatch(*rt, {Request({BytesTensor("text", {"heck", "a heck b heck"})}),
                     Request({BytesTensor("text", {"clean"})}),
                     Request({BytesTensor("text", {"x", "y", "heck y"})})});
  ASSERT_EQ(out.size(), 3u);
  EXPECT_THAT(Output(out[0], "filtered")->bytes, ElementsAre("****", "a **** b ****"));
  EXPECT_THAT(Ints(*Output(out[0], "count")), ElementsAre(1, 2));
  EXPECT_THAT(Output(out[1], "filtered")->bytes, ElementsAre("clean"));
  EXPECT_THAT(Ints(*Output(out[1], "count")), ElementsAre(0));
  EXPECT_THAT(Output(out[2], "filtered")->bytes, ElementsAre("x", "y", "**** y"));
  EXPECT_THAT(Ints(*Output(out[2], "count")), ElementsAre(0, 0, 1));
}

TEST(WordFilterTest, ConcurrentExecute) {
  std::unique_ptr<Runtime> rt = WordFilter({{"blacklist", {"heck", "darn"}}});
  ASSERT_NE(rt, nullptr);
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const std::string doc = "heck " + std::to_string(t) + " darn " + std::to_string(i);
        InferenceRequest req = Request({BytesTensor("text", {doc})});
        InferenceResponse resp;
        RuntimeCall call{&req, &resp, absl::OkStatus()};
        if (!rt->Execute(absl::MakeSpan(&call, 1)).ok() ||
            Output(resp, "filtered")->bytes[0] !=
                "**** " + std::to_string(t) + " **** " + std::to_string(i)) {
          ++bad;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST(WordFilterTest, ConfigErrors) {
  EXPECT_THAT(ErrorOf(Spec("wordfilter")), HasSubstr("fn.yaml: spec.config: the wordfilter "
                                                     "runtime needs at least one word"));
  EXPECT_THAT(ErrorOf(Spec("wordfilter", {{"blacklist", nlohmann::json::array()}})),
              HasSubstr("at least one word"));
  EXPECT_THAT(ErrorOf(Spec("wordfilter", {{"blacklist", {"a"}}, {"words", {"b"}}})),
              HasSubstr("fn.yaml: spec.config.words: unknown key for runtime 'wordfilter'; "
                        "expected one of: blacklist, blacklistFile, mask"));
  EXPECT_THAT(ErrorOf(Spec("wordfilter", {{"blacklist", "darn"}})),
              HasSubstr("spec.config.blacklist: expected a list of strings"));
  EXPECT_THAT(ErrorOf(Spec("wordfilter", {{"blacklist", {"ok", 3}}})),
              HasSubstr("spec.config.blacklist[1]: expected a string"));
  EXPECT_THAT(ErrorOf(Spec("wordfilter", {{"blacklist", {"two words"}}})),
              HasSubstr("spec.config.blacklist[0]: 'two words'"));
  EXPECT_THAT(ErrorOf(Spec("wordfilter", {{"blacklist", {"'quoted'"}}})), HasSubstr("apostrophe"));
  EXPECT_THAT(ErrorOf(Spec("wordfilter", {{"blacklist", {""}}})), HasSubstr("empty word"));
  EXPECT_THAT(ErrorOf(Spec("wordfilter", {{"blacklist", {"darn"}}, {"mask", "**"}})),
              HasSubstr("spec.config.mask: expected one printable ASCII character"));
  EXPECT_THAT(ErrorOf(Spec("wordfilter", {{"blacklist", {"darn"}}, {"mask", "\n"}})),
              HasSubstr("spec.config.mask"));
  EXPECT_THAT(ErrorOf(Spec("wordfilter", {{"blacklistFile", "no_such_words.txt"}})),
              HasSubstr("spec.config.blacklistFile: cannot read"));

  const std::string name = "rt_badwords_" + std::to_string(::getpid()) + ".txt";
  WriteFile(::testing::TempDir() + "/" + name, "darn\nheck\nbad word\n");
  EXPECT_THAT(ErrorOf(Spec("wordfilter", {{"blacklistFile", name}})),
              HasSubstr(name + ":3: 'bad word'"));
}

// A large, varied input (what the removed timing test filtered), checked document by document
// against the expected output built alongside it; the batches have uneven sizes, so a request
// that read or wrote another's rows would show. The timing lives in perf/bench_wordfilter.cc.
TEST(WordFilterTest, LargeBatchesMatchExpectedOutput) {
  const std::vector<std::string> blacklist = {"darn", "heck", "crap", "dang", "shoot", "don't"};
  std::unique_ptr<Runtime> rt = WordFilter({{"blacklist", blacklist}});
  ASSERT_NE(rt, nullptr);
  // Blacklisted words, and words that merely contain one (which must survive).
  const std::vector<std::string> vocab = {
      "the",    "quick",  "fox",   "darn",    "heck", "crap", "dang",  "shoot", "don't", "darned",
      "undarn", "heckle", "crap2", "shooter", "dont", "it's", "hello", "dan",   "sh",    "a"};
  // None of these is a letter, digit or apostrophe, so each ends a word.
  const std::vector<std::string> separators = {" ",  ", ", ". ", "-",        "_",
                                               "\t", " (", ") ", "\xc3\xa9", "!"};
  std::mt19937 rng(7);
  auto is_blacklisted = [&](std::string word) {
    for (char& c : word) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return std::find(blacklist.begin(), blacklist.end(), word) != blacklist.end();
  };
  constexpr int kRequests = 300;
  std::vector<InferenceRequest> requests;
  std::vector<std::vector<std::string>> want_filtered(kRequests);
  std::vector<std::vector<int32_t>> want_count(kRequests);
  int64_t total_masked = 0;
  for (int r = 0; r < kRequests; ++r) {
    std::vector<std::string> docs;
    const int n_docs = 1 + static_cast<int>(rng() % 60);
    for (int d = 0; d < n_docs; ++d) {
      std::string doc, filtered;
      int32_t count = 0;
      const int n_words = static_cast<int>(rng() % 16);  // 0 words: an empty document
      for (int w = 0; w < n_words; ++w) {
        if (w > 0 || rng() % 4 == 0) {
          const std::string& sep = separators[rng() % separators.size()];
          doc += sep;
          filtered += sep;
        }
        std::string word = vocab[rng() % vocab.size()];
        for (char& c : word) {
          if (rng() % 3 == 0) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        }
        doc += word;
        if (is_blacklisted(word)) {
          filtered += std::string(word.size(), '*');
          ++count;
        } else {
          filtered += word;
        }
      }
      docs.push_back(std::move(doc));
      want_filtered[r].push_back(std::move(filtered));
      want_count[r].push_back(count);
      total_masked += count;
    }
    requests.push_back(Request({BytesTensor("text", std::move(docs))}));
  }
  ASSERT_GT(total_masked, 1000);  // the input really exercises masking

  std::vector<InferenceResponse> responses(kRequests);
  std::vector<RuntimeCall> calls(kRequests);
  for (int i = 0; i < kRequests; ++i) calls[i] = {&requests[i], &responses[i], absl::OkStatus()};
  for (int i = 0; i < kRequests;) {
    const int n = std::min(kRequests - i, 1 + static_cast<int>(rng() % 17));
    ASSERT_TRUE(rt->Execute(absl::MakeSpan(calls).subspan(i, n)).ok());
    i += n;
  }
  for (int r = 0; r < kRequests; ++r) {
    ASSERT_TRUE(calls[r].status.ok()) << calls[r].status;
    const Tensor* filtered = Output(responses[r], "filtered");
    const Tensor* count = Output(responses[r], "count");
    ASSERT_NE(filtered, nullptr);
    ASSERT_NE(count, nullptr);
    ASSERT_EQ(filtered->bytes.ToVector(), want_filtered[r]) << "request " << r;
    ASSERT_EQ(Ints(*count), want_count[r]) << "request " << r;
  }
}

// ---------------------------------------------------------------------------------------------
// mlp.

struct RefLayer {
  int64_t in, out;
  std::vector<float> w, b;
};

std::vector<RefLayer> RandomLayers(const std::vector<int64_t>& dims, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::vector<RefLayer> layers;
  for (size_t i = 0; i + 1 < dims.size(); ++i) {
    RefLayer l{dims[i], dims[i + 1], {}, {}};
    for (int64_t k = 0; k < l.in * l.out; ++k) l.w.push_back(normal(rng));
    for (int64_t k = 0; k < l.out; ++k) l.b.push_back(normal(rng));
    layers.push_back(std::move(l));
  }
  return layers;
}

std::string WriteModel(const std::string& name, const std::vector<RefLayer>& layers) {
  std::vector<TestTensor> tensors;
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string p = "layers." + std::to_string(i);
    // Bias before weight, as some writers order them; the reader must not care.
    tensors.push_back({p + ".bias", "F32", {layers[i].out}, FloatBytes(layers[i].b)});
    tensors.push_back(
        {p + ".weight", "F32", {layers[i].out, layers[i].in}, FloatBytes(layers[i].w)});
  }
  const std::string path = TempPath(name);
  WriteFile(path, SafetensorsBytes(tensors));
  return path;
}

std::vector<float> Reference(const std::vector<RefLayer>& layers,
                             const std::vector<std::string>& acts, const std::vector<float>& x,
                             int64_t rows) {
  std::vector<double> cur(x.begin(), x.end());
  for (size_t li = 0; li < layers.size(); ++li) {
    const RefLayer& l = layers[li];
    std::vector<double> next(rows * l.out);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t o = 0; o < l.out; ++o) {
        double acc = l.b[o];
        for (int64_t k = 0; k < l.in; ++k) acc += cur[r * l.in + k] * l.w[o * l.in + k];
        next[r * l.out + o] = acc;
      }
      double* row = next.data() + r * l.out;
      const std::string& a = acts[li];
      if (a == "softmax") {
        double mx = row[0], sum = 0;
        for (int64_t o = 0; o < l.out; ++o) mx = std::max(mx, row[o]);
        for (int64_t o = 0; o < l.out; ++o) sum += std::exp(row[o] - mx);
        for (int64_t o = 0; o < l.out; ++o) row[o] = std::exp(row[o] - mx) / sum;
      } else {
        for (int64_t o = 0; o < l.out; ++o) {
          double& v = row[o];
          if (a == "relu") v = v > 0 ? v : 0;
          if (a == "gelu") v = 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
          if (a == "tanh") v = std::tanh(v);
          if (a == "sigmoid") v = 1 / (1 + std::exp(-v));
        }
      }
    }
    cur = std::move(next);
  }
  return std::vector<float>(cur.begin(), cur.end());
}

std::vector<float> RandomInput(int64_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<float> x(n);
  for (float& v : x) v = u(rng);
  return x;
}

FunctionSpec MlpSpec(const std::string& model_path,
                     nlohmann::json config = nlohmann::json::object()) {
  FunctionSpec spec = Spec("mlp", std::move(config));
  spec.model_uri = "file://" + model_path;
  spec.model_path = model_path;
  return spec;
}

// Runs requests of `row_counts` rows as one batch and compares with the reference.
void CheckAgainstReference(Runtime& rt, const std::vector<RefLayer>& layers,
                           const std::vector<std::string>& acts,
                           const std::vector<int64_t>& row_counts, uint32_t seed, float tol) {
  std::mt19937 rng(seed);
  const int64_t in = layers.front().in, out = layers.back().out;
  std::vector<InferenceRequest> requests;
  std::vector<std::vector<float>> inputs;
  for (int64_t rows : row_counts) {
    inputs.push_back(RandomInput(rows * in, rng));
    requests.push_back(Request({FloatTensor("input", {rows, in}, inputs.back())}));
  }
  std::vector<InferenceResponse> responses = RunBatch(rt, requests);
  for (size_t i = 0; i < row_counts.size(); ++i) {
    const Tensor* y = Output(responses[i], "output");
    ASSERT_NE(y, nullptr);
    EXPECT_EQ(y->dtype, DataType::kFp32);
    EXPECT_EQ(y->shape, (std::vector<int64_t>{row_counts[i], out}));
    std::vector<float> got = Floats(*y);
    std::vector<float> want = Reference(layers, acts, inputs[i], row_counts[i]);
    ASSERT_EQ(got.size(), want.size());
    for (size_t k = 0; k < got.size(); ++k) {
      ASSERT_NEAR(got[k], want[k], tol) << "request " << i << " element " << k;
    }
  }
}

TEST(MlpTest, MatchesReferenceWithDefaultActivations) {
  std::vector<RefLayer> layers = RandomLayers({5, 7, 6, 4}, 1);
  const std::string path = WriteModel("default.safetensors", layers);
  absl::StatusOr<std::unique_ptr<Runtime>> rt = CreateRuntime(MlpSpec(path), RuntimeContext{});
  ASSERT_TRUE(rt.ok()) << rt.status();
  const ModelSignature& sig = (*rt)->signature();
  EXPECT_EQ(sig.platform, "ferry_mlp");
  EXPECT_EQ(sig.inputs[0].name, "input");
  EXPECT_EQ(sig.inputs[0].shape, (std::vector<int64_t>{-1, 5}));
  EXPECT_EQ(sig.outputs[0].name, "output");
  EXPECT_EQ(sig.outputs[0].shape, (std::vector<int64_t>{-1, 4}));
  // Several requests of different row counts in one batch, twice with fresh inputs.
  CheckAgainstReference(**rt, layers, {"relu", "relu", "none"}, {1, 4, 2, 9}, 11, 1e-4f);
  CheckAgainstReference(**rt, layers, {"relu", "relu", "none"}, {3}, 12, 1e-4f);
}

TEST(MlpTest, EveryActivation) {
  std::vector<RefLayer> layers = RandomLayers({6, 8, 5}, 2);
  const std::string path = WriteModel("acts.safetensors", layers);
  for (const std::string a : {"none", "relu", "gelu", "tanh", "sigmoid"}) {
    for (const std::string& last : {a, std::string("softmax")}) {
      SCOPED_TRACE(a + "," + last);
      absl::StatusOr<std::unique_ptr<Runtime>> rt =
          CreateRuntime(MlpSpec(path, {{"activations", {a, last}}}), RuntimeContext{});
      ASSERT_TRUE(rt.ok()) << rt.status();
      CheckAgainstReference(**rt, layers, {a, last}, {2, 5}, 21, 1e-4f);
    }
  }
}

TEST(MlpTest, LargeBatchAndCustomNames) {
  std::vector<RefLayer> layers = RandomLayers({64, 256, 256, 16}, 3);
  const std::string path = WriteModel("large.safetensors", layers);
  absl::StatusOr<std::unique_ptr<Runtime>> rt =
      CreateRuntime(MlpSpec(path, {{"inputName", "x"}, {"outputName", "y"}}), RuntimeContext{});
  ASSERT_TRUE(rt.ok()) << rt.status();
  EXPECT_EQ((*rt)->signature().inputs[0].name, "x");
  std::mt19937 rng(5);
  std::vector<float> x = RandomInput(300 * 64, rng);
  std::vector<InferenceResponse> out = RunBatch(**rt, {Request({FloatTensor("x", {300, 64}, x)})});
  const Tensor* y = Output(out[0], "y");
  ASSERT_NE(y, nullptr);
  std::vector<float> want = Reference(layers, {"relu", "relu", "none"}, x, 300);
  std::vector<float> got = Floats(*y);
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < got.size(); ++k) ASSERT_NEAR(got[k], want[k], 1e-3f) << k;
}

TEST(MlpTest, HalfPrecisionWeightsLoad) {
  // Weights exactly representable in F16 and BF16: 1, 2, -0.5, 0.25.
  for (const std::string dtype : {"F16", "BF16"}) {
    std::string w, b;
    auto put = [](std::string* s, uint16_t v) {
      s->push_back(static_cast<char>(v & 0xff));
      s->push_back(static_cast<char>(v >> 8));
    };
    const bool f16 = dtype == "F16";
    put(&w, f16 ? 0x3c00 : 0x3f80);  // 1
    put(&w, f16 ? 0x4000 : 0x4000);  // 2
    put(&b, f16 ? 0xb800 : 0xbf00);  // -0.5
    const std::string path = TempPath("half_" + dtype);
    WriteFile(path, SafetensorsBytes(
                        {{"layers.0.weight", dtype, {1, 2}, w}, {"layers.0.bias", dtype, {1}, b}}));
    absl::StatusOr<std::unique_ptr<Runtime>> rt = CreateRuntime(MlpSpec(path), RuntimeContext{});
    ASSERT_TRUE(rt.ok()) << rt.status();
    std::vector<InferenceResponse> out =
        RunBatch(**rt, {Request({FloatTensor("input", {1, 2}, {3, 4})})});
    EXPECT_EQ(Floats(*Output(out[0], "output")), std::vector<float>{10.5f}) << dtype;
  }
}

TEST(MlpTest, ModelAndConfigErrors) {
  std::vector<RefLayer> good = RandomLayers({4, 3, 2}, 4);
  const std::string good_path = WriteModel("good.safetensors", good);

  FunctionSpec no_model = Spec("mlp");
  EXPECT_THAT(ErrorOf(no_model), HasSubstr("fn.yaml: spec.model.uri: the mlp runtime needs"));
  EXPECT_THAT(ErrorOf(MlpSpec(TempPath("missing.safetensors"))),
              HasSubstr("fn.yaml: spec.model.uri: safetensors file"));
  EXPECT_THAT(ErrorOf(MlpSpec(good_path, {{"activation", {"relu"}}})),
              HasSubstr("spec.config.activation: unknown key"));
  EXPECT_THAT(ErrorOf(MlpSpec(good_path, {{"activations", {"relu", "swish"}}})),
              HasSubstr("spec.config.activations[1]: unknown activation 'swish'"));
  EXPECT_THAT(ErrorOf(MlpSpec(good_path, {{"activations", {"softmax", "none"}}})),
              HasSubstr("spec.config.activations[0]: softmax is allowed only on the last"));
  EXPECT_THAT(ErrorOf(MlpSpec(good_path, {{"activations", {"relu"}}})),
              HasSubstr("the model has 2 layers but 1 activations"));
  EXPECT_THAT(ErrorOf(MlpSpec(good_path, {{"activations", nlohmann::json::array()}})),
              HasSubstr("empty list"));
  EXPECT_THAT(ErrorOf(MlpSpec(good_path, {{"precision", "fp8"}})),
              HasSubstr("spec.config.precision: unknown precision 'fp8'"));
  // A reduced precision on a function pinned to the CPU is refused, not ignored.
  FunctionSpec cpu_bf16 = MlpSpec(good_path, {{"precision", "bf16"}});
  cpu_bf16.hardware.accelerator = Accelerator::kCpu;
  EXPECT_THAT(ErrorOf(cpu_bf16), HasSubstr("spec.config.precision: 'bf16' needs a GPU"));

  // Layer 1 takes 5 inputs but layer 0 produces 3.
  std::vector<RefLayer> mismatch = good;
  mismatch[1] = RandomLayers({5, 2}, 9)[0];
  EXPECT_THAT(ErrorOf(MlpSpec(WriteModel("mismatch.safetensors", mismatch))),
              HasSubstr("layers.1.weight takes 5 inputs but layers.0 produces 3"));

  auto model_error = [&](const std::string& name, const std::vector<TestTensor>& tensors) {
    const std::string path = TempPath(name);
    WriteFile(path, SafetensorsBytes(tensors));
    return ErrorOf(MlpSpec(path));
  };
  const std::string w = FloatBytes({1, 2, 3, 4}), b = FloatBytes({1, 2});
  EXPECT_THAT(model_error("nobias", {{"layers.0.weight", "F32", {2, 2}, w}}),
              HasSubstr("layers.0.bias is missing"));
  EXPECT_THAT(model_error("gap", {{"layers.0.weight", "F32", {2, 2}, w},
                                  {"layers.0.bias", "F32", {2}, b},
                                  {"layers.2.weight", "F32", {2, 2}, w},
                                  {"layers.2.bias", "F32", {2}, b}}),
              HasSubstr("layer 1 is missing"));
  EXPECT_THAT(model_error("extra", {{"layers.0.weight", "F32", {2, 2}, w},
                                    {"layers.0.bias", "F32", {2}, b},
                                    {"embed.weight", "F32", {2}, b}}),
              HasSubstr("unexpected tensor 'embed.weight'"));
  EXPECT_THAT(
      model_error("rank", {{"layers.0.weight", "F32", {4}, w}, {"layers.0.bias", "F32", {2}, b}}),
      HasSubstr("expected [out, in]"));
  EXPECT_THAT(model_error("biasshape", {{"layers.0.weight", "F32", {2, 2}, w},
                                        {"layers.0.bias", "F32", {1, 2}, b}}),
              HasSubstr("layers.0.bias has shape [1,2]; expected [2]"));
  EXPECT_THAT(model_error("intweights", {{"layers.0.weight", "I32", {2, 2}, w},
                                         {"layers.0.bias", "F32", {2}, b}}),
              HasSubstr("not a float type"));
  EXPECT_THAT(model_error("empty", {}), HasSubstr("no tensors"));
}

TEST(MlpTest, GpuPathRunsOrRefusesClearly) {
  std::vector<RefLayer> layers = RandomLayers({16, 32, 8}, 6);
  const std::string path = WriteModel("gpu.safetensors", layers);
  RuntimeContext gpu;
  gpu.use_gpu = true;
  absl::StatusOr<std::unique_ptr<Runtime>> rt = CreateRuntime(MlpSpec(path), gpu);
  if (!cuda::ListGpus().ok()) {
    ASSERT_FALSE(rt.ok());
    EXPECT_EQ(rt.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(rt.status().message()),
                HasSubstr("fn.yaml: spec.hardware.accelerator: mlp: GPU path not available"));
    GTEST_SKIP() << "no GPU: " << cuda::ListGpus().status();
  }
  ASSERT_TRUE(rt.ok()) << rt.status();
  EXPECT_TRUE(static_cast<MlpRuntime*>(rt->get())->on_gpu());
  CheckAgainstReference(**rt, layers, {"relu", "none"}, {1, 7, 3}, 31, 1e-3f);
  // More rows than maxBatchSize (the staging size) run in chunks.
  CheckAgainstReference(**rt, layers, {"relu", "none"}, {100, 200}, 32, 1e-3f);
  for (const std::string a : {"tanh", "sigmoid", "none"}) {
    absl::StatusOr<std::unique_ptr<Runtime>> r2 =
        CreateRuntime(MlpSpec(path, {{"activations", {a, "softmax"}}}), gpu);
    ASSERT_TRUE(r2.ok()) << r2.status();
    CheckAgainstReference(**r2, layers, {a, "softmax"}, {4, 2}, 33, 1e-3f);
  }
}

// A function scaled to zero and back (or a second function on the same file) gets the host
// weights from the agent's cache instead of reading the file again; a replaced file is a miss.
TEST(MlpTest, ReloadFromTheWeightCacheSkipsLoadingAndAChangedFileDoesNot) {
  const std::vector<RefLayer> layers = RandomLayers({5, 7, 4}, 41);
  const std::string path = WriteModel("cached.safetensors", layers);
  WeightCache cache(/*idle_budget_bytes=*/int64_t{1} << 30);
  RuntimeContext context;
  context.weight_cache = &cache;
  const MlpRuntime::Weights* first = nullptr;
  {
    absl::StatusOr<std::unique_ptr<Runtime>> rt = CreateRuntime(MlpSpec(path), context);
    ASSERT_TRUE(rt.ok()) << rt.status();
    first = static_cast<MlpRuntime&>(**rt).weights();
    ASSERT_NE(first, nullptr);
    EXPECT_EQ(cache.stats().misses, 1);
    EXPECT_EQ(cache.stats().hits, 0);
    EXPECT_EQ(cache.stats().idle_bytes, 0);  // in use while the runtime lives
  }  // unloaded: the cache keeps the weights within its budget
  cache.Trim();
  EXPECT_EQ(cache.stats().entries, 1);
  EXPECT_EQ(cache.stats().idle_bytes, int64_t{(5 * 7 + 7 + 7 * 4 + 4) * 4});

  // Loaded again, with other activations (not part of the weights): the same host copy.
  absl::StatusOr<std::unique_ptr<Runtime>> again =
      CreateRuntime(MlpSpec(path, {{"activations", {"tanh", "sigmoid"}}}), context);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(cache.stats().hits, 1);
  EXPECT_EQ(cache.stats().misses, 1);
  EXPECT_EQ(static_cast<MlpRuntime&>(**again).weights(), first);
  CheckAgainstReference(**again, layers, {"tanh", "sigmoid"}, {3, 2}, 42, 1e-4f);

  // The file replaced by another model (its size and modification time change): loaded afresh
  // and served with the new weights, while the old entry stays with the runtime that uses it.
  const std::vector<RefLayer> replaced = RandomLayers({5, 9, 4}, 43);
  ASSERT_EQ(WriteModel("cached.safetensors", replaced), path);
  absl::StatusOr<std::unique_ptr<Runtime>> fresh = CreateRuntime(MlpSpec(path), context);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(cache.stats().hits, 1);
  EXPECT_EQ(cache.stats().misses, 2);
  EXPECT_EQ(cache.stats().entries, 2);
  EXPECT_NE(static_cast<MlpRuntime&>(**fresh).weights(), first);
  CheckAgainstReference(**fresh, replaced, {"relu", "none"}, {4}, 44, 1e-4f);
  // The replica made before the change still serves the weights it loaded.
  CheckAgainstReference(**again, layers, {"tanh", "sigmoid"}, {1}, 45, 1e-4f);

  // A load that fails caches nothing (and is not a hit).
  const std::string broken = TempPath("cached_broken.safetensors");
  WriteFile(broken, "not a safetensors file");
  EXPECT_FALSE(CreateRuntime(MlpSpec(broken), context).ok());
  EXPECT_EQ(cache.stats().entries, 2);
  EXPECT_EQ(cache.stats().hits, 1);
}

// A GPU replica uploads from the cached host weights and leaves them to the cache (idle, within
// its budget): the next load of the same file, on a GPU or a CPU, skips reading it.
TEST(MlpTest, GpuReplicaUploadsFromTheWeightCache) {
  const std::vector<RefLayer> layers = RandomLayers({16, 32, 8}, 46);
  const std::string path = WriteModel("gpu_cached.safetensors", layers);
  WeightCache cache(/*idle_budget_bytes=*/int64_t{1} << 30);
  RuntimeContext gpu;
  gpu.use_gpu = true;
  gpu.weight_cache = &cache;
  absl::StatusOr<std::unique_ptr<Runtime>> rt = CreateRuntime(MlpSpec(path), gpu);
  FERRY_SKIP_WITHOUT_GPU();
  ASSERT_TRUE(rt.ok()) << rt.status();
  ASSERT_TRUE(static_cast<MlpRuntime&>(**rt).on_gpu());
  EXPECT_EQ(static_cast<MlpRuntime&>(**rt).weights(), nullptr);
  EXPECT_EQ(cache.stats().misses, 1);
  EXPECT_EQ(cache.stats().idle_bytes, int64_t{(16 * 32 + 32 + 32 * 8 + 8) * 4});
  CheckAgainstReference(**rt, layers, {"relu", "none"}, {3, 5}, 47, 1e-3f);
  absl::StatusOr<std::unique_ptr<Runtime>> second = CreateRuntime(MlpSpec(path), gpu);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(cache.stats().hits, 1);
  CheckAgainstReference(**second, layers, {"relu", "none"}, {2}, 48, 1e-3f);
  absl::StatusOr<std::unique_ptr<Runtime>> cpu =
      CreateRuntime(MlpSpec(path), RuntimeContext{.weight_cache = &cache});
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ(cache.stats().hits, 2);
  CheckAgainstReference(**cpu, layers, {"relu", "none"}, {2}, 49, 1e-4f);
}

// The staged path (ferry/staged_runtime.h) the agent's pipeline drives: only on a GPU.
TEST(MlpTest, CpuRuntimeHasNoStages) {
  std::vector<RefLayer> layers = RandomLayers({4, 3}, 7);
  const std::string path = WriteModel("cpu_stages.safetensors", layers);
  absl::StatusOr<std::unique_ptr<Runtime>> rt = CreateRuntime(MlpSpec(path), RuntimeContext{});
  ASSERT_TRUE(rt.ok()) << rt.status();
  EXPECT_EQ((*rt)->staged(), nullptr);
}

// Three batches packed into three slots and all in flight on the GPU at once, completed by the
// stream callbacks, then unpacked: each matches the reference; a bad request fails alone; a
// batch above the slot's rows is refused at Pack.
TEST(MlpTest, GpuStagedSlotsOverlapAndMatchTheReference) {
  std::vector<RefLayer> layers = RandomLayers({16, 64, 8}, 8);
  const std::string path = WriteModel("gpu_staged.safetensors", layers);
  FunctionSpec spec = MlpSpec(path);
  spec.batching.max_batch_size = 64;
  spec.batching.pipeline_depth = 3;
  RuntimeContext gpu;
  gpu.use_gpu = true;
  absl::StatusOr<std::unique_ptr<Runtime>> rt = CreateRuntime(spec, gpu);
  FERRY_SKIP_WITHOUT_GPU();
  ASSERT_TRUE(rt.ok()) << rt.status();
  StagedRuntime* staged = (*rt)->staged();
  ASSERT_NE(staged, nullptr);
  ASSERT_EQ(staged->num_slots(), 3);

  std::mt19937 rng(41);
  const std::vector<std::vector<int64_t>> row_counts = {{1, 7}, {64}, {5, 2, 9}};
  std::vector<std::vector<InferenceRequest>> requests(3);
  std::vector<std::vector<std::vector<float>>> inputs(3);
  std::vector<std::vector<InferenceResponse>> responses(3);
  std::vector<std::vector<RuntimeCall>> calls(3);
  for (int b = 0; b < 3; ++b) {
    for (int64_t rows : row_counts[b]) {
      inputs[b].push_back(RandomInput(rows * 16, rng));
      requests[b].push_back(Request({FloatTensor("input", {rows, 16}, inputs[b].back())}));
    }
    // One malformed request in the last batch: it fails alone.
    if (b == 2) requests[b].push_back(Request({FloatTensor("input", {1, 3}, {1, 2, 3})}));
    responses[b].resize(requests[b].size());
    calls[b].resize(requests[b].size());
    for (size_t i = 0; i < requests[b].size(); ++i) {
      calls[b][i].request = &requests[b][i];
      calls[b][i].response = &responses[b][i];
    }
  }
  absl::Notification done[3];
  absl::Status device_status[3];
  for (int b = 0; b < 3; ++b) {
    ASSERT_TRUE(staged->Pack(b, absl::MakeSpan(calls[b])).ok());
    ASSERT_TRUE(staged
                    ->Launch(b,
                             [&done, &device_status, b](absl::Status s) {
                               device_status[b] = std::move(s);
                               done[b].Notify();
                             })
                    .ok());
  }
  for (int b = 0; b < 3; ++b) {
    done[b].WaitForNotification();
    ASSERT_TRUE(device_status[b].ok()) << device_status[b];
    const DeviceStageTimes t = staged->StageTimes(b);
    EXPECT_GE(t.h2d_us, 0);
    EXPECT_GE(t.compute_us, 0);
    EXPECT_GE(t.d2h_us, 0);
    ASSERT_TRUE(staged->Unpack(b, absl::MakeSpan(calls[b])).ok());
    for (size_t i = 0; i < row_counts[b].size(); ++i) {
      ASSERT_TRUE(calls[b][i].status.ok()) << calls[b][i].status;
      const Tensor* y = Output(responses[b][i], "output");
      ASSERT_NE(y, nullptr);
      EXPECT_EQ(y->shape, (std::vector<int64_t>{row_counts[b][i], 8}));
      const std::vector<float> got = Floats(*y);
      const std::vector<float> want =
          Reference(layers, {"relu", "none"}, inputs[b][i], row_counts[b][i]);
      ASSERT_EQ(got.size(), want.size());
      for (size_t k = 0; k < got.size(); ++k) ASSERT_NEAR(got[k], want[k], 1e-3f) << b << "/" << k;
    }
    staged->Release(b);
  }
  EXPECT_EQ(calls[2].back().status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(responses[2].back().outputs.empty());

  // More rows than the slot holds (maxBatchSize): refused at Pack; the slot is still released.
  std::vector<InferenceRequest> big = {
      Request({FloatTensor("input", {65, 16}, RandomInput(65 * 16, rng))})};
  std::vector<InferenceResponse> big_out(1);
  std::vector<RuntimeCall> big_calls(1);
  big_calls[0].request = &big[0];
  big_calls[0].response = &big_out[0];
  EXPECT_EQ(staged->Pack(0, absl::MakeSpan(big_calls)).code(), absl::StatusCode::kInvalidArgument);
  staged->Release(0);
  // The synchronous path still works next to it.
  CheckAgainstReference(**rt, layers, {"relu", "none"}, {3, 4}, 42, 1e-3f);
}

}  // namespace
}  // namespace ferry::kernels
