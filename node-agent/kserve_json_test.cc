#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "node-agent/clipper_codec.h"
#include "node-agent/kserve_codec.h"

namespace ferry::agent {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

template <typename T>
std::vector<T> Values(const Tensor& t) {
  std::vector<T> out(t.data.size() / sizeof(T));
  std::memcpy(out.data(), t.data.data(), out.size() * sizeof(T));
  return out;
}

template <typename T>
Tensor MakeTensor(std::string name, DataType dtype, std::vector<int64_t> shape,
                  const std::vector<T>& values) {
  Tensor t;
  t.name = std::move(name);
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.data.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
  return t;
}

Tensor MakeBytes(std::string name, std::vector<int64_t> shape, std::vector<std::string> values) {
  Tensor t;
  t.name = std::move(name);
  t.dtype = DataType::kBytes;
  t.shape = std::move(shape);
  t.bytes = std::move(values);
  return t;
}

ModelMetadata TextModel() {
  ModelMetadata m;
  m.name = "filter";
  m.versions = {"1"};
  m.platform = "ferry_wordfilter";
  m.inputs = {{"text", DataType::kBytes, {-1}}};
  m.outputs = {{"clean", DataType::kBool, {-1}}};
  return m;
}

ModelMetadata VectorModel() {
  ModelMetadata m;
  m.name = "mlp";
  m.platform = "ferry_mlp";
  m.inputs = {{"x", DataType::kFp32, {-1, 4}}};
  m.outputs = {{"y", DataType::kFp32, {-1, 2}}};
  return m;
}

// For tests of decoding rather than of signatures: an unbatched model that declares each input
// the body's JSON header names, with the datatype it sends and every dim variable, so header
// checks pass whatever the shape. Malformed headers give a model without inputs.
ModelMetadata AcceptingModel(std::string_view body, int64_t header_length = -1) {
  ModelMetadata m;
  m.name = "m";
  m.batched = false;
  const std::string_view text = header_length > 0 ? body.substr(0, header_length) : body;
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("inputs") || !j["inputs"].is_array()) return m;
  for (const json& input : j["inputs"]) {
    if (!input.is_object() || !input.contains("name") || !input["name"].is_string()) continue;
    TensorSpec spec;
    spec.name = input["name"].get<std::string>();
    if (input.contains("datatype") && input["datatype"].is_string()) {
      spec.dtype = DataTypeFromName(input["datatype"].get<std::string>());
    }
    if (input.contains("shape") && input["shape"].is_array()) {
      spec.shape.assign(input["shape"].size(), -1);
    }
    m.inputs.push_back(spec);
  }
  return m;
}

absl::StatusOr<InferenceRequest> Parse(const std::string& body, int64_t header_length = -1) {
  return ParseInferRequest(body, header_length, "m", "", AcceptingModel(body, header_length));
}
absl::StatusOr<InferenceRequest> Parse(const std::string& body, int64_t header_length,
                                       const ModelMetadata& metadata) {
  return ParseInferRequest(body, header_length, "m", "", metadata);
}

std::string Le32(uint32_t n) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// ---- ParseInferRequest: JSON ----

TEST(ParseInferRequestTest, DecodesTypedJsonInputsAndFields) {
  const std::string body = R"({
    "id": "req-7",
    "parameters": {"priority": 1, "timeout": 2500, "binary_data_output": true, "tag": "x",
                   "ratio": 0.5},
    "inputs": [
      {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [[1.5, 2], [3, -4.25]]},
      {"name": "b", "shape": [3], "datatype": "INT64", "data": [-9007199254740993, 0, 7]},
      {"name": "c", "shape": [2], "datatype": "BYTES", "data": ["hello", ""]},
      {"name": "d", "shape": [1, 3], "datatype": "BOOL", "data": [true, false, true]},
      {"name": "e", "shape": [2], "datatype": "UINT8", "data": [0, 255]}
    ],
    "outputs": [{"name": "y", "parameters": {"binary_data": false}}, {"name": "z"}]
  })";
  auto r = ParseInferRequest(body, -1, "mlp", "3", AcceptingModel(body));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model_name, "mlp");
  EXPECT_EQ(r->model_version, "3");
  EXPECT_EQ(r->id, "req-7");
  EXPECT_EQ(r->priority, 1);
  EXPECT_EQ(r->timeout_us, 2500);
  EXPECT_TRUE(r->binary_data_output);
  EXPECT_EQ(std::get<std::string>(r->parameters.at("tag")), "x");
  EXPECT_DOUBLE_EQ(std::get<double>(r->parameters.at("ratio")), 0.5);
  ASSERT_EQ(r->inputs.size(), 5u);
  EXPECT_EQ(r->inputs[0].dtype, DataType::kFp32);
  EXPECT_THAT(r->inputs[0].shape, ElementsAre(2, 2));
  EXPECT_THAT(Values<float>(r->inputs[0]), ElementsAre(1.5f, 2.0f, 3.0f, -4.25f));
  EXPECT_THAT(Values<int64_t>(r->inputs[1]), ElementsAre(-9007199254740993LL, 0, 7));
  EXPECT_THAT(r->inputs[2].bytes, ElementsAre("hello", ""));
  EXPECT_TRUE(r->inputs[2].data.empty());
  EXPECT_THAT(Values<uint8_t>(r->inputs[3]), ElementsAre(1, 0, 1));
  EXPECT_THAT(Values<uint8_t>(r->inputs[4]), ElementsAre(0, 255));
  for (const Tensor& t : r->inputs) EXPECT_TRUE(t.CheckConsistent().ok()) << t.name;
  ASSERT_EQ(r->outputs.size(), 2u);
  EXPECT_EQ(r->outputs[0].name, "y");
  EXPECT_FALSE(r->outputs[0].binary_data);
  EXPECT_EQ(r->outputs[0].parameters.count("binary_data"), 1u);
  EXPECT_EQ(r->outputs[1].name, "z");
  EXPECT_EQ(r->arrival_us, 0);
}

TEST(ParseInferRequestTest, CountMismatchNamesTheInput) {
  auto r = Parse(R"({"inputs":[{"name":"text","shape":[2],"datatype":"BYTES",
                                "data":["a","b","c"]}]})");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "input 'text': shape [2] needs 2 elements, got 3");

  r = Parse(R"({"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3]}]})");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "input 'x': shape [2,2] needs 4 elements, got 3");
}

TEST(ParseInferRequestTest, RejectsValuesOutOfRangeOrOfTheWrongKind) {
  struct Case {
    std::string input;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {R"({"name":"u","shape":[1],"datatype":"UINT8","data":[300]})", "out of range for UINT8"},
      {R"({"name":"u","shape":[1],"datatype":"UINT32","data":[-1]})", "out of range for UINT32"},
      {R"({"name":"i","shape":[1],"datatype":"INT8","data":[-129]})", "out of range for INT8"},
      {R"({"name":"i","shape":[1],"datatype":"INT64","data":[9223372036854775808]})",
       "out of range for INT64"},
      {R"({"name":"i","shape":[1],"datatype":"INT32","data":[1.5]})", "must be an integer"},
      {R"({"name":"f","shape":[1],"datatype":"FP32","data":[1e39]})", "out of range for FP32"},
      {R"({"name":"f","shape":[1],"datatype":"FP32","data":["1"]})", "must be a number"},
      {R"({"name":"b","shape":[1],"datatype":"BOOL","data":[1]})", "must be a JSON bool"},
      {R"({"name":"s","shape":[1],"datatype":"BYTES","data":[5]})", "must be a string"},
      {R"({"name":"h","shape":[1],"datatype":"FP16","data":[1.0]})", "binary"},
      {R"({"name":"q","shape":[1],"datatype":"FP8","data":[1]})", "unknown datatype 'FP8'"},
      {R"({"name":"q","shape":[-1],"datatype":"FP32","data":[1]})", "non-negative"},
      {R"({"name":"q","datatype":"FP32","data":[1]})", "'shape' is missing"},
      {R"({"name":"q","shape":[1],"datatype":"FP32"})", "neither 'data'"},
      {R"({"shape":[1],"datatype":"FP32","data":[1]})", "no 'name'"},
  };
  for (const Case& c : cases) {
    auto r = Parse(absl::StrCat(R"({"inputs":[)", c.input, "]}"));
    ASSERT_FALSE(r.ok()) << c.input;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.input;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.expected)) << c.input;
  }
  // The input is named.
  auto r = Parse(R"({"inputs":[{"name":"pixels","shape":[1],"datatype":"UINT8","data":[300]}]})");
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("input 'pixels'"));
}

TEST(ParseInferRequestTest, RejectsMalformedDocuments) {
  auto r = Parse(R"({"inputs": [ {"name": )");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("malformed JSON: "));

  r = Parse(R"([1,2])");
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("must be a JSON object"));
  r = Parse(R"({"id": 5, "inputs": []})");
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("'id' must be a string"));
  r = Parse(R"({})");
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("no 'inputs' array"));
  r = Parse(R"({"inputs": [], "parameters": {"priority": -1}})");
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("'priority'"));
  r = Parse(R"({"inputs": [], "parameters": {"binary_data_output": 1}})");
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("'binary_data_output'"));
  r = Parse(R"({"inputs": [], "parameters": {"nested": {"a": 1}}})");
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("bool, number or string"));
}

TEST(ParseInferRequestTest, ReadsEscapesNumbersAndWhitespace) {
  auto r = Parse(
      " \n{ \"inputs\" : [ {\"name\":\"s\",\"shape\":[4],\"datatype\":\"BYTES\",\"data\":"
      "[\"tab\\there\", \"\\u00e9\\u4e2d\", \"\\ud83d\\ude00\", \"q\\\"\\\\\\/\"]},"
      "{\"name\":\"f\",\"shape\":[4],\"datatype\":\"FP64\",\"data\":[-0.5e2, 1E-3, 0, "
      "1.8446744073709552e19]} ] }\t");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->inputs[0].bytes,
              ElementsAre("tab\there", "\xc3\xa9\xe4\xb8\xad", "\xf0\x9f\x98\x80", "q\"\\/"));
  EXPECT_THAT(Values<double>(r->inputs[1]), ElementsAre(-50.0, 0.001, 0.0, 18446744073709551616.0));
}

TEST(ParseInferRequestTest, MalformedJsonNamesTheProblem) {
  struct Case {
    std::string body;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {R"({"inputs": [1,]})", "malformed JSON: The JSON document has an improper structure"},
      {R"({"inputs": []} x)", "improper structure"},
      {R"({inputs: []})", "improper structure"},
      {R"({"inputs": [01]})", "malformed JSON: Problem while parsing a number"},
      {R"({"inputs": [1.]})", "parsing a number"},
      // Beyond what a double or a 64-bit integer holds.
      {R"({"inputs": [1e400]})", "parsing a number"},
      {R"({"inputs": [18446744073709551616]})", "parsing a number"},
      {R"({"inputs": ["\x"]})", "parsing a string"},
      {R"({"inputs": ["\ud800"]})", "parsing a string"},  // unpaired surrogates
      {R"({"inputs": ["\udc00"]})", "parsing a string"},
      {"{\"inputs\": [\"a\nb\"]}", "must be escaped"},
      {"{\"inputs\": [\"\xff\"]}", "not valid UTF-8"},
      {"{\"inputs\": [\"\xe0\x80\x80\"]}", "not valid UTF-8"},  // overlong
      {R"({"inputs": [tru]})", "atom starting with the letter 't'"},
      {R"({"inputs": ["abc)", "never closed"},
      {"", "no JSON found"},
      {" \n", "no JSON found"},
      {std::string(1000, '[') + std::string(1000, ']'), "too deep"},
  };
  for (const Case& c : cases) {
    auto r = Parse(c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.expected)) << c.body;
  }
  // The depth limit leaves room for any real body.
  auto r = Parse(std::string(100, '[') + std::string(100, ']'));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("must be a JSON object, got array"));
}

TEST(ParseInferRequestTest, FirstOfDuplicateKeysWins) {
  auto r = Parse(R"({"id": "a", "inputs": [], "id": "b", "parameters": {"p": 1, "p": 2},
                    "inputs": [{"name": "x"}]})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->id, "a");
  EXPECT_TRUE(r->inputs.empty());
  EXPECT_EQ(std::get<int64_t>(r->parameters.at("p")), 1);
}

TEST(ParseInferRequestTest, LargeBodiesAndThreads) {
  // Bodies of several MiB (the reader gives their buffers back afterwards) and small ones
  // alternate; limits stay in force throughout.
  auto body = [](int n, const std::string& word) {
    std::string s =
        absl::StrCat(R"({"inputs":[{"name":"s","shape":[)", n, R"(],"datatype":"BYTES","data":[)");
    for (int i = 0; i < n; ++i) absl::StrAppend(&s, i > 0 ? "," : "", "\"", word, i, "\"");
    return s + "]}]}";
  };
  const std::string deep = std::string(1000, '[') + std::string(1000, ']');
  for (int round = 0; round < 2; ++round) {
    auto r = Parse(body(200000, "word"));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->inputs[0].bytes.size(), 200000u);
    EXPECT_EQ(r->inputs[0].bytes[199999], "word199999");
    EXPECT_THAT(std::string(Parse(deep).status().message()), HasSubstr("too deep"));
    r = Parse(body(2, "w"));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_THAT(r->inputs[0].bytes, ElementsAre("w0", "w1"));
  }
  // Each thread parses with a parser of its own.
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const std::string word = absl::StrCat("t", t, "_");
        auto r = Parse(body(1 + i % 7, word));
        if (!r.ok() || r->inputs[0].bytes.back() != absl::StrCat(word, i % 7)) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(ParseInferRequestTest, ParsesInPlaceWhateverFollowsTheBody) {
  // With readable_past_end >= kJsonPaddingBytes the reader works on the caller's buffer; the
  // bytes after the body may be read but are never taken as JSON.
  const std::string json =
      R"({"inputs":[{"name":"x","shape":[3],"datatype":"INT32","data":[1,2,3]}]})";
  for (const std::string& tail :
       {std::string(kJsonPaddingBytes, '9'), std::string(kJsonPaddingBytes, '"'),
        "],4,5]}x" + std::string(kJsonPaddingBytes, '\0')}) {
    const std::string buffer = json + tail;
    auto r = ParseInferRequest(std::string_view(buffer.data(), json.size()), -1, "m", "",
                               AcceptingModel(json), tail.size());
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_THAT(Values<int32_t>(r->inputs[0]), ElementsAre(1, 2, 3));
  }
  // The same for a JSON header followed by the binary part.
  const std::string header =
      R"({"inputs":[{"name":"x","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}}]})";
  const std::string body = header + std::string("\x01\0\0\0\x02\0\0\0", 8);
  std::string buffer = body + std::string(kJsonPaddingBytes, '[');
  auto r = ParseInferRequest(std::string_view(buffer.data(), body.size()),
                             static_cast<int64_t>(header.size()), "m", "", AcceptingModel(header),
                             kJsonPaddingBytes);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(Values<int32_t>(r->inputs[0]), ElementsAre(1, 2));
}

// ---- ParseInferRequest: the header part is checked before any data is decoded ----

TEST(ParseInferRequestTest, UntrustedShapesNeverSizeAnAllocation) {
  ModelMetadata m = VectorModel();  // x: FP32 [-1, 4]
  m.max_batch_size = 64;
  ModelMetadata open = m;
  open.inputs[0].shape = {-1, -1};
  open.max_batch_size = 0;
  ModelMetadata text = TextModel();  // text: BYTES [-1]
  struct Case {
    std::string label;
    std::string body;
    int64_t header_length;
    const ModelMetadata* model;
    std::string expected;
  };
  const std::string huge_header =
      R"({"inputs":[{"name":"x","shape":[1099511627776,4],"datatype":"FP32","data":[]}]})";
  const std::string overflow_header =
      R"({"inputs":[{"name":"x","shape":[1,4611686018427387904],"datatype":"FP32",)"
      R"("parameters":{"binary_data_size":0}}]})";
  const std::string bytes_header =
      R"({"inputs":[{"name":"text","shape":[1099511627776],"datatype":"BYTES",)"
      R"("parameters":{"binary_data_size":8}}]})";
  const std::string many_json =
      R"({"inputs":[{"name":"x","shape":[1,1099511627776],"datatype":"FP32","data":[1]}]})";
  const std::vector<Case> cases = {
      {"batch dim over maxBatchSize", huge_header, -1, &m, "exceeds maxBatchSize 64"},
      {"byte size overflows", overflow_header, static_cast<int64_t>(overflow_header.size()), &open,
       "too large"},
      {"BYTES count beyond the payload", bytes_header + std::string(8, '\0'),
       static_cast<int64_t>(bytes_header.size()), &text, "hold at most 2"},
      {"JSON count beyond the text", many_json, -1, &open, "the JSON text has only"},
      {"datatype against the model",
       R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"INT32","data":[1,2,3,4]}]})", -1, &m,
       "datatype INT32, expected FP32"},
      {"rank against the model",
       R"({"inputs":[{"name":"x","shape":[4],"datatype":"FP32","data":[1,2,3,4]}]})", -1, &m,
       "expected rank 2"},
      {"fixed dim against the model",
       R"({"inputs":[{"name":"x","shape":[1,1099511627776],"datatype":"FP32","data":[]}]})", -1, &m,
       "dim 1 must be 4"},
      {"unknown input", R"({"inputs":[{"name":"q","shape":[1],"datatype":"FP32","data":[1]}]})", -1,
       &m, "unknown input 'q'"},
  };
  for (const Case& c : cases) {
    auto r = Parse(c.body, c.header_length, *c.model);
    ASSERT_FALSE(r.ok()) << c.label;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.label;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.expected)) << c.label;
  }
}

TEST(ParseInferRequestTest, EchoedFieldsHaveLengthCaps) {
  const std::string input =
      R"("inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}])";
  auto r =
      Parse(absl::StrCat(R"({"id":")", std::string(kMaxRequestIdBytes, 'i'), R"(",)", input, "}"),
            -1, VectorModel());
  ASSERT_TRUE(r.ok()) << r.status();
  r = Parse(
      absl::StrCat(R"({"id":")", std::string(kMaxRequestIdBytes + 1, 'i'), R"(",)", input, "}"), -1,
      VectorModel());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("'id' is 1025 bytes"));
  r = Parse(absl::StrCat(R"({"parameters":{"tag":")",
                         std::string(kMaxParameterStringBytes + 1, 't'), R"("},)", input, "}"),
            -1, VectorModel());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("parameter 'tag'"));
  std::string many = R"({"parameters":{)";
  for (size_t i = 0; i <= kMaxParameters; ++i) {
    absl::StrAppend(&many, i == 0 ? "" : ",", "\"p", i, "\":1");
  }
  r = Parse(absl::StrCat(many, "},", input, "}"), -1, VectorModel());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("65 parameters"));
}

// ---- ParseInferRequest: binary tensor data extension ----

TEST(ParseInferRequestTest, DecodesBinaryInputsInOrder) {
  const std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::string words = Le32(3) + "cat" + Le32(0) + Le32(5) + "horse";
  const std::string header = absl::StrCat(
      R"({"inputs":[{"name":"x","shape":[2,4],"datatype":"FP32","parameters":{"binary_data_size":)",
      x.size() * 4, R"(}},{"name":"w","shape":[3],"datatype":"BYTES","parameters":)",
      R"({"binary_data_size":)", words.size(),
      R"(}},{"name":"j","shape":[1],"datatype":"INT32","data":[9]}]})");
  const std::string body =
      header + std::string(reinterpret_cast<const char*>(x.data()), x.size() * 4) + words;
  auto r = Parse(body, static_cast<int64_t>(header.size()));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->inputs.size(), 3u);
  EXPECT_THAT(Values<float>(r->inputs[0]), ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));
  EXPECT_THAT(r->inputs[1].bytes, ElementsAre("cat", "", "horse"));
  EXPECT_THAT(Values<int32_t>(r->inputs[2]), ElementsAre(9));
}

TEST(ParseInferRequestTest, AcceptsHalfPrecisionOnlyInBinary) {
  const std::string raw("\x00\x3c\x00\x40", 4);  // FP16 1.0, 2.0
  const std::string header =
      R"({"inputs":[{"name":"h","shape":[2],"datatype":"FP16","parameters":{"binary_data_size":4}}]})";
  auto r = Parse(header + raw, static_cast<int64_t>(header.size()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->inputs[0].data, raw);
}

TEST(ParseInferRequestTest, RejectsInconsistentBinaryParts) {
  const std::string header =
      R"({"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]})";
  const std::string eight(8, '\0');
  // Too little data.
  auto r = Parse(header + "1234", static_cast<int64_t>(header.size()));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("input 'x': binary_data_size 8"));
  // Leftover data.
  r = Parse(header + eight + "zz", static_cast<int64_t>(header.size()));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("add up to 8"));
  // Header longer than the body.
  r = Parse(header, static_cast<int64_t>(header.size()) + 1);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("exceeds the body size"));
  // binary_data_size without the header.
  r = Parse(header);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("needs the Inference-Header"));
  // Size that does not match the shape.
  const std::string header3 =
      R"({"inputs":[{"name":"x","shape":[3],"datatype":"FP32","parameters":{"binary_data_size":8}}]})";
  r = Parse(header3 + eight, static_cast<int64_t>(header3.size()));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("needs 12 bytes"));
  // BYTES element count that does not match the shape.
  const std::string wheader =
      R"({"inputs":[{"name":"w","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":5}}]})";
  r = Parse(wheader + Le32(1) + "a", static_cast<int64_t>(wheader.size()));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("input 'w'"));
}

TEST(ParseInferRequestTest, HeaderLengthZeroMakesTheBodyTheSingleInput) {
  const std::string words = Le32(2) + "hi" + Le32(3) + "you";
  auto r = ParseInferRequest(words, 0, "filter", "1", TextModel());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model_name, "filter");
  EXPECT_EQ(r->model_version, "1");
  ASSERT_EQ(r->inputs.size(), 1u);
  EXPECT_EQ(r->inputs[0].name, "text");
  EXPECT_THAT(r->inputs[0].shape, ElementsAre(2));
  EXPECT_THAT(r->inputs[0].bytes, ElementsAre("hi", "you"));

  const std::vector<float> x(8, 1.0f);
  const std::string raw(reinterpret_cast<const char*>(x.data()), 32);
  r = ParseInferRequest(raw, 0, "mlp", "", VectorModel());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->inputs[0].shape, ElementsAre(2, 4));
  EXPECT_EQ(r->inputs[0].data, raw);

  // 24 bytes are 6 floats: not rows of 4.
  r = ParseInferRequest(raw.substr(0, 24), 0, "mlp", "", VectorModel());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("do not fit shape [-1,4]"));
  // 7 bytes are no whole number of floats.
  r = ParseInferRequest(raw.substr(0, 7), 0, "mlp", "", VectorModel());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("not a whole number"));

  ModelMetadata two = VectorModel();
  two.inputs.push_back({"z", DataType::kFp32, {-1}});
  r = ParseInferRequest(raw, 0, "mlp", "", two);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("exactly one input"));

  ModelMetadata ambiguous = VectorModel();
  ambiguous.inputs[0].shape = {-1, -1};
  r = ParseInferRequest(raw, 0, "mlp", "", ambiguous);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("more than one variable dim"));
}

// ---- EncodeInferResponse ----

InferenceResponse SampleResponse() {
  InferenceResponse resp;
  resp.model_name = "mlp";
  resp.model_version = "1";
  resp.outputs.push_back(MakeTensor<float>("y", DataType::kFp32, {2}, {0.1f, -2.5f}));
  resp.outputs.push_back(MakeBytes("s", {2}, {"a\"b\\c\n\x01", "ok"}));
  resp.outputs.push_back(MakeTensor<uint8_t>("ok", DataType::kBool, {2}, {1, 0}));
  resp.outputs.push_back(
      MakeTensor<int64_t>("n", DataType::kInt64, {1}, {std::numeric_limits<int64_t>::min()}));
  return resp;
}

TEST(EncodeInferResponseTest, WritesJsonOutputs) {
  InferenceRequest req;
  req.id = "abc";
  InferenceResponse resp = SampleResponse();
  resp.parameters["sequence_id"] = int64_t{4};
  EncodedBody enc = EncodeInferResponse(resp, req);
  EXPECT_EQ(enc.json_length, -1);
  json j = json::parse(enc.body);
  EXPECT_EQ(j["model_name"], "mlp");
  EXPECT_EQ(j["model_version"], "1");
  EXPECT_EQ(j["id"], "abc");
  EXPECT_EQ(j["parameters"]["sequence_id"], 4);
  ASSERT_EQ(j["outputs"].size(), 4u);
  EXPECT_EQ(j["outputs"][0]["name"], "y");
  EXPECT_EQ(j["outputs"][0]["datatype"], "FP32");
  EXPECT_EQ(j["outputs"][0]["shape"], json::array({2}));
  EXPECT_FLOAT_EQ(j["outputs"][0]["data"][0].get<float>(), 0.1f);
  EXPECT_FLOAT_EQ(j["outputs"][0]["data"][1].get<float>(), -2.5f);
  EXPECT_EQ(j["outputs"][1]["data"], json::array({"a\"b\\c\n\x01", "ok"}));
  EXPECT_EQ(j["outputs"][2]["data"], json::array({true, false}));
  EXPECT_EQ(j["outputs"][3]["data"][0].get<int64_t>(), std::numeric_limits<int64_t>::min());
  EXPECT_FALSE(j["outputs"][0].contains("parameters"));
}

TEST(EncodeInferResponseTest, FallsBackToRequestFieldsAndOmitsEmptyOnes) {
  InferenceRequest req;
  req.model_name = "m";
  InferenceResponse resp;
  resp.outputs.push_back(MakeTensor<int32_t>("o", DataType::kInt32, {0}, {}));
  json j = json::parse(EncodeInferResponse(resp, req).body);
  EXPECT_EQ(j["model_name"], "m");
  EXPECT_FALSE(j.contains("id"));
  EXPECT_FALSE(j.contains("model_version"));
  EXPECT_FALSE(j.contains("parameters"));
  EXPECT_EQ(j["outputs"][0]["data"], json::array());
}

TEST(EncodeInferResponseTest, PutsRequestedOutputsInTheBinaryPart) {
  InferenceRequest req;
  req.outputs = {{"y", true, {}}, {"s", true, {}}, {"ok", false, {}}};
  const InferenceResponse resp = SampleResponse();
  EncodedBody enc = EncodeInferResponse(resp, req);
  ASSERT_GT(enc.json_length, 0);
  json j = json::parse(enc.body.substr(0, enc.json_length));
  EXPECT_EQ(j["outputs"][0]["parameters"]["binary_data_size"], 8);
  EXPECT_FALSE(j["outputs"][0].contains("data"));
  const std::string bytes_raw = EncodeBytesElements(resp.outputs[1].bytes);
  EXPECT_EQ(j["outputs"][1]["parameters"]["binary_data_size"], bytes_raw.size());
  EXPECT_TRUE(j["outputs"][2].contains("data"));
  EXPECT_TRUE(j["outputs"][3].contains("data"));
  EXPECT_EQ(enc.body.substr(enc.json_length), resp.outputs[0].data + bytes_raw);
}

TEST(EncodeInferResponseTest, BinaryDataOutputIsTheDefaultUnlessAnOutputSaysFalse) {
  InferenceRequest req;
  req.binary_data_output = true;
  RequestedOutput no_binary;
  no_binary.name = "s";
  no_binary.parameters["binary_data"] = false;
  req.outputs = {no_binary};
  InferenceResponse resp = SampleResponse();
  EncodedBody enc = EncodeInferResponse(resp, req);
  ASSERT_GT(enc.json_length, 0);
  json j = json::parse(enc.body.substr(0, enc.json_length));
  EXPECT_TRUE(j["outputs"][0]["parameters"].contains("binary_data_size"));
  EXPECT_TRUE(j["outputs"][1].contains("data"));  // "s" said false
  EXPECT_TRUE(j["outputs"][2]["parameters"].contains("binary_data_size"));
  EXPECT_EQ(enc.body.size(), static_cast<size_t>(enc.json_length) + 8 + 2 + 8);
}

TEST(EncodeInferResponseTest, WidensHalfPrecisionInJson) {
  InferenceResponse resp;
  resp.outputs.push_back(MakeTensor<uint16_t>("h", DataType::kFp16, {3}, {0x3c00, 0xc000, 0x0001}));
  resp.outputs.push_back(MakeTensor<uint16_t>("b", DataType::kBf16, {1}, {0x3fc0}));
  json j = json::parse(EncodeInferResponse(resp, InferenceRequest()).body);
  EXPECT_EQ(j["outputs"][0]["data"][0].get<double>(), 1.0);
  EXPECT_EQ(j["outputs"][0]["data"][1].get<double>(), -2.0);
  EXPECT_FLOAT_EQ(j["outputs"][0]["data"][2].get<float>(), 5.9604645e-8f);
  EXPECT_EQ(j["outputs"][1]["data"][0].get<double>(), 1.5);
}

TEST(EncodeInferResponseTest, RoundTripsThroughTheParser) {
  InferenceResponse resp = SampleResponse();
  resp.outputs.pop_back();
  std::string body = EncodeInferResponse(resp, InferenceRequest()).body;
  // An output is a valid input document once renamed.
  json j = json::parse(body);
  json req = {{"inputs", j["outputs"]}};
  auto r = Parse(req.dump());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->inputs[0].data, resp.outputs[0].data);
  EXPECT_EQ(r->inputs[1].bytes, resp.outputs[1].bytes);
  EXPECT_EQ(r->inputs[2].data, resp.outputs[2].data);
}

// ---- Metadata and errors ----

TEST(MetadataTest, ServerMetadataListsTheBinaryExtensionOnce) {
  ServerMetadata m;
  m.version = "0.1.0";
  m.extensions = {"model_repository"};
  json j = json::parse(EncodeServerMetadata(m));
  EXPECT_EQ(j["name"], "ferry");
  EXPECT_EQ(j["version"], "0.1.0");
  EXPECT_EQ(j["extensions"], json::array({"model_repository", "binary_tensor_data"}));
  m.extensions = {"binary_tensor_data"};
  EXPECT_EQ(json::parse(EncodeServerMetadata(m))["extensions"],
            json::array({"binary_tensor_data"}));
}

TEST(MetadataTest, ModelMetadataHasSignature) {
  json j = json::parse(EncodeModelMetadata(VectorModel()));
  EXPECT_EQ(j, json::parse(R"({"name":"mlp","versions":[],"platform":"ferry_mlp",
      "inputs":[{"name":"x","datatype":"FP32","shape":[-1,4]}],
      "outputs":[{"name":"y","datatype":"FP32","shape":[-1,2]}]})"));
}

TEST(MetadataTest, ErrorIsEscaped) {
  EXPECT_EQ(EncodeError("bad \"x\"\n"), R"({"error":"bad \"x\"\n"})");
  EXPECT_EQ(json::parse(EncodeError("tab\there"))["error"], "tab\there");
}

TEST(MetadataTest, StringsAreValidJsonWhateverTheBytes) {
  // Control characters are escaped; DEL and well-formed UTF-8 pass as they are.
  EXPECT_EQ(EncodeError(std::string("\0\x01\x1f\x7f\b\f\r\\", 8)), R"({"error":"\u0000\u0001\u001f)"
                                                                   "\x7f"
                                                                   R"(\b\f\r\\"})");
  const std::string utf8 = "\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf";  // é中😀U+10FFFF
  EXPECT_EQ(EncodeError(utf8), R"({"error":")" + utf8 + R"("})");
  // Each maximal ill-formed part becomes one U+FFFD.
  const std::string r = "\xef\xbf\xbd";
  struct Case {
    std::string in;
    std::string out;
  };
  const std::vector<Case> cases = {
      {"a\xff"
       "b",
       "a" + r + "b"},
      {"\x80", r},
      {"\xc3", r},                          // truncated at the end
      {"\xc0\xaf", r + r},                  // overlong
      {"\xe0\x80\x80", r + r + r},          // overlong
      {"\xed\xa0\x80", r + r + r},          // UTF-16 surrogate
      {"\xf4\x90\x80\x80", r + r + r + r},  // above U+10FFFF
      {"\xf0\x9f\x98"
       "A",
       r + "A"},  // truncated sequence
      {"\xe4\xb8"
       "\"",
       r + "\\\""},
  };
  for (const Case& c : cases) {
    const std::string encoded = EncodeError(c.in);
    EXPECT_EQ(encoded, R"({"error":")" + c.out + R"("})") << c.in;
    EXPECT_NO_THROW(json::parse(encoded)) << c.in;  // nlohmann rejects ill-formed UTF-8
  }
  // BYTES outputs go through the same writer.
  InferenceRequest request;
  request.model_name = "m";
  InferenceResponse response;
  response.outputs.push_back(MakeBytes("y", {2}, {"ok", "\xff\xfe"}));
  json j = json::parse(EncodeInferResponse(response, request).body);
  EXPECT_EQ(j["outputs"][0]["data"], json::array({"ok", r + r}));
}

// ---- Clipper ----

TEST(ClipperTest, SingleStringQueryIsOneRow) {
  auto q = ParseClipperPredict(R"({"input": "some text"})", TextModel());
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_FALSE(q->is_batch);
  EXPECT_EQ(q->rows, 1);
  EXPECT_EQ(q->request.model_name, "filter");
  ASSERT_EQ(q->request.inputs.size(), 1u);
  EXPECT_EQ(q->request.inputs[0].name, "text");
  EXPECT_THAT(q->request.inputs[0].shape, ElementsAre(1));
  EXPECT_THAT(q->request.inputs[0].bytes, ElementsAre("some text"));
}

TEST(ClipperTest, BatchStacksRows) {
  auto q =
      ParseClipperPredict(R"({"input_batch": [[1,2,3,4],[5,6,7,8],[0,0,0,0.5]]})", VectorModel());
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_TRUE(q->is_batch);
  EXPECT_EQ(q->rows, 3);
  EXPECT_THAT(q->request.inputs[0].shape, ElementsAre(3, 4));
  EXPECT_THAT(Values<float>(q->request.inputs[0]),
              ElementsAre(1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0.5f));
}

TEST(ClipperTest, RejectsBadQueries) {
  struct Case {
    std::string body;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {R"({"input": [1,2,3]})", "input: has shape [3] but input 'x' takes [4] per query"},
      {R"({"input": 1})", "has shape [] but input 'x' takes [4]"},
      {R"({"input_batch": [[1,2,3,4],[1,2,3]]})", "input_batch[1]: has shape [3]"},
      {R"({"input_batch": []})", "non-empty array"},
      {R"({"input": [1,2,3,"4"]})", "must be a number"},
      {R"({})", "exactly one of"},
      {R"({"input": [1,2,3,4], "input_batch": [[1,2,3,4]]})", "exactly one of"},
      {R"({"input": )", "malformed JSON: "},
  };
  for (const Case& c : cases) {
    auto q = ParseClipperPredict(c.body, VectorModel());
    ASSERT_FALSE(q.ok()) << c.body;
    EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(q.status().message()), HasSubstr(c.expected)) << c.body;
  }
  ModelMetadata ragged = VectorModel();
  ragged.inputs[0].shape = {-1, -1, -1};
  auto q = ParseClipperPredict(R"({"input": [[1],[2,3],[]]})", ragged);
  ASSERT_FALSE(q.ok());
  EXPECT_THAT(std::string(q.status().message()), HasSubstr("ragged"));

  ModelMetadata two = VectorModel();
  two.inputs.push_back({"z", DataType::kFp32, {-1}});
  q = ParseClipperPredict(R"({"input": [1,2,3,4]})", two);
  ASSERT_FALSE(q.ok());
  EXPECT_THAT(std::string(q.status().message()), HasSubstr("exactly one input"));
}

// A ragged batch whose first row claims a huge shape must not size an allocation: the stacked
// input is checked (rows, overflow) and bounded by the body before anything is reserved.
TEST(ClipperTest, HugeFirstRowOfARaggedBatchIsRefusedBeforeAllocating) {
  ModelMetadata wide = VectorModel();
  wide.inputs[0].shape = {-1, -1};
  wide.max_batch_size = 1 << 20;
  std::string body = R"({"input_batch": [[)";
  for (int i = 0; i < 5000; ++i) body += i == 0 ? "0" : ",0";
  body += "]";
  for (int i = 0; i < 20000; ++i) body += ",[0]";
  body += "]}";
  auto q = ParseClipperPredict(body, wide);
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(q.status().message()), HasSubstr("ragged"));

  wide.max_batch_size = 4;
  q = ParseClipperPredict(R"({"input_batch": [[1],[2],[3],[4],[5]]})", wide);
  ASSERT_FALSE(q.ok());
  EXPECT_THAT(std::string(q.status().message()), HasSubstr("exceeds maxBatchSize 4"));
}

TEST(ClipperTest, UnbatchedModelTakesTheWholeInput) {
  ModelMetadata m = VectorModel();
  m.batched = false;
  m.inputs[0].shape = {2, -1};
  auto q = ParseClipperPredict(R"({"input": [[1,2,3],[4,5,6]]})", m);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_FALSE(q->batched);
  EXPECT_THAT(q->request.inputs[0].shape, ElementsAre(2, 3));
  q = ParseClipperPredict(R"({"input_batch": [[[1],[2]]]})", m);
  ASSERT_FALSE(q.ok());
  EXPECT_THAT(std::string(q.status().message()), HasSubstr("needs a batched model"));
}

TEST(ClipperTest, EncodesSingleAndBatchPredictions) {
  ClipperQuery single;
  single.rows = 1;
  InferenceResponse resp;
  resp.outputs.push_back(MakeTensor<uint8_t>("clean", DataType::kBool, {1}, {1}));
  EXPECT_EQ(EncodeClipperResponse(resp, single, 41),
            R"({"query_id":41,"output":true,"default":false})");

  ClipperQuery batch;
  batch.is_batch = true;
  batch.rows = 2;
  InferenceResponse vec;
  vec.outputs.push_back(MakeTensor<float>("y", DataType::kFp32, {2, 2}, {1, 2, 3, 4.5f}));
  EXPECT_EQ(EncodeClipperResponse(vec, batch, 7),
            R"({"batch_predictions":[{"query_id":7,"output":[1,2],"default":false},)"
            R"({"query_id":8,"output":[3,4.5],"default":false}]})");

  vec.outputs.push_back(MakeBytes("label", {2}, {"cat", "dog"}));
  json j = json::parse(EncodeClipperResponse(vec, batch, 0));
  EXPECT_EQ(j["batch_predictions"][1]["output"], json::parse(R"({"y":[3,4.5],"label":"dog"})"));
}

TEST(ClipperTest, EncodesDefaultOutput) {
  ClipperQuery batch;
  batch.is_batch = true;
  batch.rows = 2;
  InferenceResponse resp;
  resp.is_default = true;
  resp.parameters["default_output"] = std::string(R"({"clean": true})");
  json j = json::parse(EncodeClipperResponse(resp, batch, 3));
  ASSERT_EQ(j["batch_predictions"].size(), 2u);
  EXPECT_EQ(j["batch_predictions"][1]["query_id"], 4);
  EXPECT_EQ(j["batch_predictions"][1]["default"], true);
  EXPECT_EQ(j["batch_predictions"][1]["output"], json::parse(R"({"clean": true})"));

  ClipperQuery single;
  resp.parameters.clear();
  EXPECT_EQ(EncodeClipperResponse(resp, single, 0),
            R"({"query_id":0,"output":null,"default":true})");
}

}  // namespace
}  // namespace ferry::agent
