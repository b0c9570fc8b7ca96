#include "node-agent/embed_api.h"

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace ferry::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

ModelMetadata EmbeddingMetadata() {
  ModelMetadata m;
  m.name = "minilm";
  m.platform = std::string(kSentenceEmbeddingPlatform);
  m.inputs = {TensorSpec{"text", DataType::kBytes, {-1}}};
  m.outputs = {TensorSpec{"embedding", DataType::kFp32, {-1, 2}}};
  return m;
}

InferenceResponse Response(const std::vector<float>& values, int64_t rows, int64_t tokens) {
  InferenceResponse r;
  Tensor t;
  t.name = "embedding";
  t.dtype = DataType::kFp32;
  t.shape = {rows, static_cast<int64_t>(values.size()) / rows};
  t.data.resize(values.size() * sizeof(float));
  std::memcpy(t.data.data(), values.data(), t.data.size());
  r.outputs.push_back(std::move(t));
  r.parameters[std::string(kTokensParameter)] = tokens;
  return r;
}

TEST(EmbedApiTest, TeiAcceptsAStringOrAnArray) {
  auto one = ParseTeiEmbed(R"({"inputs": "hi", "normalize": true, "truncate": false})", 0);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_THAT(one->texts, ElementsAre("hi"));
  auto many = ParseTeiEmbed(R"({"inputs": ["a", ""]})", 0);
  ASSERT_TRUE(many.ok()) << many.status();
  EXPECT_THAT(many->texts, ElementsAre("a", ""));
  EXPECT_EQ(many->api, EmbedApi::kTei);
}

TEST(EmbedApiTest, TeiRejectsWhatItCannotServe) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{", "malformed JSON"},
      {"[]", "JSON object"},
      {"{}", "missing 'inputs'"},
      {R"({"inputs": {}})", "'inputs' must be a string or an array of strings, got object"},
      {R"({"inputs": []})", "must not be an empty array"},
      {R"({"inputs": ["a", null]})", "'inputs'[1] must be a string, got null"},
      {R"({"inputs": "a", "truncate": 1})", "'truncate' must be a boolean"},
      {R"({"inputs": "a", "normalize": false})", "L2-normalised"},
  };
  for (const auto& [body, message] : cases) {
    auto q = ParseTeiEmbed(body, 0);
    ASSERT_FALSE(q.ok()) << body;
    EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument) << body;
    EXPECT_THAT(std::string(q.status().message()), HasSubstr(message)) << body;
  }
}

TEST(EmbedApiTest, OpenAiParsesModelInputAndFormat) {
  auto q = ParseOpenAiEmbeddings(
      R"({"model": "minilm", "input": ["a", "b"], "encoding_format": "base64", "user": "u"})", 0);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->model, "minilm");
  EXPECT_THAT(q->texts, ElementsAre("a", "b"));
  EXPECT_TRUE(q->base64);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"input": "a"})", "missing 'model'"},
      {R"({"model": 3, "input": "a"})", "'model' must be a non-empty string"},
      {R"({"model": "m"})", "missing 'input'"},
      {R"({"model": "m", "input": [1]})", "'input'[0] must be a string, got integer"},
      {R"({"model": "m", "input": "a", "encoding_format": "int8"})", "encoding_format"},
  };
  for (const auto& [body, message] : bad) {
    auto r = ParseOpenAiEmbeddings(body, 0);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(message)) << body;
  }
}

TEST(EmbedApiTest, RequestHasOneBytesRowPerText) {
  EmbedQuery q;
  q.texts = {"a", "bc"};
  auto r = MakeEmbedRequest(q, EmbeddingMetadata());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model_name, "minilm");
  ASSERT_EQ(r->inputs.size(), 1u);
  EXPECT_EQ(r->inputs[0].name, "text");
  EXPECT_EQ(r->inputs[0].shape, std::vector<int64_t>{2});
  EXPECT_EQ(r->inputs[0].bytes[1], "bc");
  ModelMetadata not_embedding = EmbeddingMetadata();
  not_embedding.outputs[0].dtype = DataType::kInt32;
  auto bad = MakeEmbedRequest(q, not_embedding);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("not an embedding function"));
}

TEST(EmbedApiTest, EncodesTeiAndOpenAiShapes) {
  EmbedQuery q;
  q.texts = {"a", "b"};
  const std::vector<float> values = {0.5f, -1.0f, 0.25f, 3.0f};
  auto tei = EncodeEmbedResponse(q, Response(values, 2, 7));
  ASSERT_TRUE(tei.ok()) << tei.status();
  EXPECT_EQ(nlohmann::json::parse(*tei), nlohmann::json::parse("[[0.5,-1],[0.25,3]]"));

  q.api = EmbedApi::kOpenAi;
  q.model = "minilm";
  auto oa = EncodeEmbedResponse(q, Response(values, 2, 7));
  ASSERT_TRUE(oa.ok()) << oa.status();
  EXPECT_EQ(nlohmann::json::parse(*oa), nlohmann::json::parse(R"({"object":"list","data":[
      {"object":"embedding","index":0,"embedding":[0.5,-1]},
      {"object":"embedding","index":1,"embedding":[0.25,3]}],
      "model":"minilm","usage":{"prompt_tokens":7,"total_tokens":7}})"));

  q.base64 = true;
  auto b64 = EncodeEmbedResponse(q, Response(values, 2, 7));
  ASSERT_TRUE(b64.ok()) << b64.status();
  const nlohmann::json j = nlohmann::json::parse(*b64);
  std::string raw;
  ASSERT_TRUE(absl::Base64Unescape(j["data"][1]["embedding"].get<std::string>(), &raw));
  ASSERT_EQ(raw.size(), 2 * sizeof(float));
  float got[2];
  std::memcpy(got, raw.data(), raw.size());  // little-endian float32
  EXPECT_EQ(got[0], 0.25f);
  EXPECT_EQ(got[1], 3.0f);

  // One row missing: never an out-of-bounds read.
  auto short_response = EncodeEmbedResponse(q, Response({0.5f, -1.0f}, 1, 1));
  EXPECT_EQ(short_response.status().code(), absl::StatusCode::kInternal);
}

TEST(EmbedApiTest, ErrorsInEachApisShape) {
  EXPECT_EQ(nlohmann::json::parse(EncodeEmbedError(EmbedApi::kTei, 400, "bad \"x\"")),
            nlohmann::json::parse(R"({"error":"bad \"x\"","error_type":"Validation"})"));
  EXPECT_EQ(nlohmann::json::parse(EncodeEmbedError(EmbedApi::kTei, 429, "busy"))["error_type"],
            "Overloaded");
  EXPECT_EQ(nlohmann::json::parse(EncodeEmbedError(EmbedApi::kOpenAi, 404, "unknown model 'x'")),
            nlohmann::json::parse(R"({"error":{"message":"unknown model 'x'",
                "type":"invalid_request_error","param":null,"code":"model_not_found"}})"));
  EXPECT_EQ(
      nlohmann::json::parse(EncodeEmbedError(EmbedApi::kOpenAi, 500, "boom"))["error"]["type"],
      "server_error");
}

}  // namespace
}  // namespace ferry::agent
