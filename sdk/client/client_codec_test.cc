// The client's encoders and decoders without a server: what goes on the wire for each
// protocol, how answers decode, and how HTTP statuses map to absl codes.
#include <cstring>
#include <string>
#include <vector>

#include "ferry/client.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using nlohmann::json;

template <typename T>
Tensor Fixed(const std::string& name, DataType dtype, std::vector<int64_t> shape,
             const std::vector<T>& values) {
  Tensor t{.name = name, .dtype = dtype, .shape = std::move(shape)};
  t.data.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
  return t;
}

InferenceRequest MixedRequest() {
  InferenceRequest r;
  r.model_name = "m";
  r.id = "req-7";
  r.priority = 1;
  r.timeout_us = 2500;
  r.parameters["tag"] = std::string("x");
  r.inputs.push_back(Fixed<float>("f", DataType::kFp32, {2, 2}, {1.5f, -2, 3, 4}));
  r.inputs.push_back(Fixed<int32_t>("i", DataType::kInt32, {3}, {1, -2, 3}));
  r.inputs.push_back(Fixed<int64_t>("l", DataType::kInt64, {1}, {int64_t{1} << 40}));
  Tensor b{.name = "s", .dtype = DataType::kBytes, .shape = {2}};
  b.bytes = std::vector<std::string>{"hello", ""};
  r.inputs.push_back(std::move(b));
  r.outputs.push_back({.name = "y"});
  return r;
}

TEST(EncodeHttpInferTest, JsonCarriesTensorsParametersAndOutputs) {
  auto req = EncodeHttpInfer(MixedRequest(), InferProtocol::kHttpJson);
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->target, "/v2/models/m/infer");
  EXPECT_EQ(req->content_type, "application/json");
  EXPECT_EQ(req->header_length, -1);
  const json j = json::parse(req->body);
  EXPECT_EQ(j["id"], "req-7");
  EXPECT_EQ(j["parameters"]["priority"], 1);
  EXPECT_EQ(j["parameters"]["timeout"], 2500);
  EXPECT_EQ(j["parameters"]["tag"], "x");
  EXPECT_FALSE(j["parameters"].contains("binary_data_output"));
  ASSERT_EQ(j["inputs"].size(), 4u);
  EXPECT_EQ(j["inputs"][0]["datatype"], "FP32");
  EXPECT_EQ(j["inputs"][0]["shape"], json({2, 2}));
  EXPECT_EQ(j["inputs"][0]["data"], json({1.5, -2.0, 3.0, 4.0}));
  EXPECT_EQ(j["inputs"][1]["data"], json({1, -2, 3}));
  EXPECT_EQ(j["inputs"][2]["data"][0].get<int64_t>(), int64_t{1} << 40);
  EXPECT_EQ(j["inputs"][3]["data"], json({"hello", ""}));
  EXPECT_EQ(j["outputs"], json::parse(R"([{"name":"y"}])"));
}

TEST(EncodeHttpInferTest, BinaryPutsInputsAfterTheHeaderAndAsksBinaryOutputs) {
  auto req = EncodeHttpInfer(MixedRequest(), InferProtocol::kHttpBinary);
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->content_type, "application/octet-stream");
  ASSERT_GT(req->header_length, 0);
  const json j = json::parse(req->body.substr(0, req->header_length));
  EXPECT_EQ(j["inputs"][0]["parameters"]["binary_data_size"], 16);
  EXPECT_EQ(j["inputs"][1]["parameters"]["binary_data_size"], 12);
  EXPECT_EQ(j["inputs"][2]["parameters"]["binary_data_size"], 8);
  EXPECT_EQ(j["inputs"][3]["parameters"]["binary_data_size"], 4 + 5 + 4);
  EXPECT_FALSE(j["inputs"][0].contains("data"));
  EXPECT_EQ(j["outputs"][0]["parameters"]["binary_data"], true);
  const std::string raw = req->body.substr(req->header_length);
  ASSERT_EQ(raw.size(), 16u + 12 + 8 + 13);
  float f0;
  std::memcpy(&f0, raw.data(), 4);
  EXPECT_EQ(f0, 1.5f);
  EXPECT_EQ(raw.substr(36), std::string("\x05\0\0\0hello\0\0\0\0", 13));
}

TEST(EncodeHttpInferTest, BinaryWithoutRequestedOutputsAsksEveryOutputBinary) {
  InferenceRequest r;
  r.model_name = "m";
  r.model_version = "2";
  r.inputs.push_back(Fixed<float>("x", DataType::kFp32, {1}, {1}));
  auto req = EncodeHttpInfer(r, InferProtocol::kHttpBinary);
  ASSERT_TRUE(req.ok());
  EXPECT_EQ(req->target, "/v2/models/m/versions/2/infer");
  const json j = json::parse(req->body.substr(0, req->header_length));
  EXPECT_EQ(j["parameters"]["binary_data_output"], true);
}

TEST(EncodeHttpInferTest, RefusesWhatJsonCannotCarryAndInconsistentTensors) {
  InferenceRequest r;
  r.model_name = "m";
  r.inputs.push_back(Fixed<uint16_t>("h", DataType::kFp16, {1}, {0x3c00}));
  auto json_req = EncodeHttpInfer(r, InferProtocol::kHttpJson);
  EXPECT_TRUE(absl::IsInvalidArgument(json_req.status())) << json_req.status();
  EXPECT_NE(json_req.status().message().find("'h'"), std::string::npos);
  EXPECT_TRUE(EncodeHttpInfer(r, InferProtocol::kHttpBinary).ok());

  r.inputs[0] = Fixed<float>("x", DataType::kFp32, {3}, {1, 2});
  EXPECT_TRUE(absl::IsInvalidArgument(EncodeHttpInfer(r, InferProtocol::kHttpBinary).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(EncodeGrpcInfer(r).status()));

  Tensor bad_utf8{.name = "s", .dtype = DataType::kBytes, .shape = {1}};
  bad_utf8.bytes = std::vector<std::string>{"\xff\xfe"};
  r.inputs[0] = bad_utf8;
  EXPECT_TRUE(absl::IsInvalidArgument(EncodeHttpInfer(r, InferProtocol::kHttpJson).status()));
  EXPECT_TRUE(EncodeHttpInfer(r, InferProtocol::kHttpBinary).ok());
}

TEST(EscapeTest, ModelNamesCannotChangeThePath) {
  EXPECT_EQ(EscapePathSegment("echo-1.v_2~"), "echo-1.v_2~");
  EXPECT_EQ(EscapePathSegment("../a b?"), "..%2Fa%20b%3F");
  EXPECT_EQ(EncodePredict("a/b", "{}").target, "/a%2Fb/predict");
}

TEST(DecodeHttpInferTest, JsonAnswer) {
  HttpReply reply{.status = 200,
                  .content_type = "application/json",
                  .body = R"({"model_name":"m","model_version":"1","id":"r","parameters":{"k":3},
                  "outputs":[{"name":"y","datatype":"FP32","shape":[2],"data":[0.5,null]},
                             {"name":"b","datatype":"BOOL","shape":[2],"data":[true,false]},
                             {"name":"h","datatype":"FP16","shape":[1],"data":[1.0]},
                             {"name":"s","datatype":"BYTES","shape":[1],"data":["z"]}]})"};
  auto res = DecodeHttpInfer(reply);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->model_name, "m");
  EXPECT_EQ(res->model_version, "1");
  EXPECT_EQ(res->id, "r");
  EXPECT_EQ(std::get<int64_t>(res->parameters.at("k")), 3);
  EXPECT_FALSE(res->is_default);
  ASSERT_EQ(res->outputs.size(), 4u);
  EXPECT_EQ(res->outputs[0].as<float>()[0], 0.5f);
  EXPECT_TRUE(std::isnan(res->outputs[0].as<float>()[1]));
  EXPECT_EQ(res->outputs[1].data, std::string("\x01\x00", 2));
  EXPECT_EQ(res->outputs[2].as<uint16_t>()[0], 0x3c00);
  EXPECT_EQ(res->outputs[3].bytes, (std::vector<std::string>{"z"}));
}

TEST(DecodeHttpInferTest, BinaryAnswerAndItsErrors) {
  const std::string header =
      R"({"model_name":"m","outputs":[{"name":"x","datatype":"INT32","shape":[2],)"
      R"("parameters":{"binary_data_size":8}},{"name":"s","datatype":"BYTES","shape":[1],)"
      R"("parameters":{"binary_data_size":6}}]})";
  std::string body = header;
  const int32_t xs[2] = {7, -9};
  body.append(reinterpret_cast<const char*>(xs), 8);
  body.append(std::string("\x02\0\0\0ok", 6));
  HttpReply reply{
      .status = 200, .header_length = static_cast<int64_t>(header.size()), .body = body};
  auto res = DecodeHttpInfer(reply);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->outputs[0].as<int32_t>()[1], -9);
  EXPECT_EQ(res->outputs[1].bytes, (std::vector<std::string>{"ok"}));

  reply.body += "junk";
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeHttpInfer(reply).status()));
  reply.body = body.substr(0, body.size() - 3);
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeHttpInfer(reply).status()));
  reply.header_length = static_cast<int64_t>(body.size()) + 1;
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeHttpInfer(reply).status()));
}

TEST(DecodeHttpInferTest, ErrorStatusesCarryTheServersMessage) {
  HttpReply reply{.status = 404, .body = R"({"error":"unknown model 'nope'"})"};
  const absl::Status s = DecodeHttpInfer(reply).status();
  EXPECT_TRUE(absl::IsNotFound(s));
  EXPECT_EQ(s.message(), "unknown model 'nope'");
  EXPECT_EQ(HttpStatusOf(s), 404);
}

TEST(StatusFromHttpTest, MapsEveryClass) {
  const std::vector<std::pair<int, absl::StatusCode>> cases = {
      {200, absl::StatusCode::kOk},
      {400, absl::StatusCode::kInvalidArgument},
      {401, absl::StatusCode::kUnauthenticated},
      {404, absl::StatusCode::kNotFound},
      {405, absl::StatusCode::kUnimplemented},
      {413, absl::StatusCode::kInvalidArgument},
      {429, absl::StatusCode::kResourceExhausted},
      {500, absl::StatusCode::kInternal},
      {503, absl::StatusCode::kUnavailable},
      {504, absl::StatusCode::kDeadlineExceeded},
      {418, absl::StatusCode::kInvalidArgument},
      {599, absl::StatusCode::kInternal},
  };
  for (const auto& [http, code] : cases) {
    EXPECT_EQ(StatusFromHttp(http, R"({"error":"e"})").code(), code) << http;
  }
  const absl::Status overload = StatusFromHttp(429, R"({"error":"queue of 'm' is full"})");
  EXPECT_EQ(overload.message(), "queue of 'm' is full");
  EXPECT_TRUE(IsRetryable(overload));
  EXPECT_FALSE(IsRetryable(StatusFromHttp(400, "")));
  EXPECT_EQ(StatusFromHttp(502, "upstream gone").message(), "upstream gone");
  EXPECT_EQ(StatusFromHttp(500, "").message(), "HTTP 500");
  EXPECT_EQ(HttpStatusOf(absl::InternalError("x")), 0);
}

TEST(GrpcCodecTest, RawContentsRoundTrip) {
  auto req = EncodeGrpcInfer(MixedRequest());
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->model_name(), "m");
  EXPECT_EQ(req->id(), "req-7");
  EXPECT_EQ(req->parameters().at("priority").int64_param(), 1);
  EXPECT_EQ(req->parameters().at("timeout").int64_param(), 2500);
  EXPECT_EQ(req->parameters().at("tag").string_param(), "x");
  ASSERT_EQ(req->raw_input_contents_size(), 4);
  EXPECT_EQ(req->inputs(3).datatype(), "BYTES");
  EXPECT_EQ(req->raw_input_contents(3), std::string("\x05\0\0\0hello\0\0\0\0", 13));
  ASSERT_EQ(req->outputs_size(), 1);
  EXPECT_EQ(req->outputs(0).name(), "y");

  // An echo of the inputs as the server answers it.
  inference::ModelInferResponse res;
  res.set_model_name("m");
  (*res.mutable_parameters())["ferry_default"].set_bool_param(true);
  for (int i = 0; i < req->inputs_size(); ++i) {
    auto* o = res.add_outputs();
    o->set_name(req->inputs(i).name());
    o->set_datatype(req->inputs(i).datatype());
    *o->mutable_shape() = req->inputs(i).shape();
    res.add_raw_output_contents(req->raw_input_contents(i));
  }
  auto decoded = DecodeGrpcInfer(res);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(decoded->is_default);
  const InferenceRequest original = MixedRequest();
  for (size_t i = 0; i < original.inputs.size(); ++i) {
    EXPECT_EQ(decoded->outputs[i].dtype, original.inputs[i].dtype);
    EXPECT_EQ(decoded->outputs[i].shape, original.inputs[i].shape);
    EXPECT_EQ(decoded->outputs[i].data, original.inputs[i].data);
    EXPECT_EQ(decoded->outputs[i].bytes, original.inputs[i].bytes);
  }
  res.mutable_raw_output_contents()->RemoveLast();
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeGrpcInfer(res).status()));
}

TEST(GrpcCodecTest, TypedContentsDecode) {
  inference::ModelInferResponse res;
  auto* o = res.add_outputs();
  o->set_name("y");
  o->set_datatype("INT64");
  o->add_shape(2);
  o->mutable_contents()->add_int64_contents(5);
  o->mutable_contents()->add_int64_contents(-6);
  auto decoded = DecodeGrpcInfer(res);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->outputs[0].as<int64_t>()[1], -6);
  o->mutable_contents()->add_int64_contents(7);
  EXPECT_FALSE(DecodeGrpcInfer(res).ok());
}

}  // namespace
}  // namespace ferry
