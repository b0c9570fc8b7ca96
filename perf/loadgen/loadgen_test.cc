// What of ferry-loadgen can be checked without timing: the schedules, the percentiles, the
// command line, the encoded requests and the CSV row.
#include "perf/loadgen/loadgen.h"

#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kserve_inference.pb.h"
#include "nlohmann/json.hpp"
#include "perf/loadgen/options.h"
#include "perf/loadgen/requests.h"
#include "perf/loadgen/schedule.h"
#include "perf/loadgen/stats.h"

namespace ferry::loadgen {
namespace {

using ::testing::HasSubstr;

TEST(ScheduleTest, PoissonMeanRateWithinTolerance) {
  constexpr double kRate = 20000;
  constexpr int kN = 200000;
  ArrivalSchedule s(Arrivals::kPoisson, kRate, /*seed=*/42);
  int64_t prev = 0;
  int64_t last = 0;
  double sum_sq = 0;
  for (int i = 0; i < kN; ++i) {
    last = s.Next();
    ASSERT_GE(last, prev);
    double gap = static_cast<double>(last - prev);
    sum_sq += gap * gap;
    prev = last;
  }
  double rate = kN / (last / 1e9);
  EXPECT_NEAR(rate, kRate, kRate * 0.01);
  // Exponential gaps: the standard deviation equals the mean (a constant stream would be 0).
  double mean = static_cast<double>(last) / kN;
  double sd = std::sqrt(sum_sq / kN - mean * mean);
  EXPECT_NEAR(sd / mean, 1.0, 0.02);
}

TEST(ScheduleTest, SameSeedSameScheduleOtherSeedDiffers) {
  ArrivalSchedule a(Arrivals::kPoisson, 1000, 7), b(Arrivals::kPoisson, 1000, 7),
      c(Arrivals::kPoisson, 1000, 8);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    int64_t x = a.Next();
    EXPECT_EQ(x, b.Next());
    differs |= x != c.Next();
  }
  EXPECT_TRUE(differs);
}

TEST(ScheduleTest, ConstantIsEvenlySpacedWithPhase) {
  ArrivalSchedule s(Arrivals::kConstant, 1000, 1, /*phase=*/0.5);
  EXPECT_EQ(s.Next(), 500'000);
  EXPECT_EQ(s.Next(), 1'500'000);
  EXPECT_EQ(s.Next(), 2'500'000);
}

TEST(StatsTest, NearestRankPercentiles) {
  std::vector<int64_t> v(100);
  std::iota(v.begin(), v.end(), 1);  // 1..100
  EXPECT_EQ(Percentile(v, 0.50), 50);
  EXPECT_EQ(Percentile(v, 0.90), 90);
  EXPECT_EQ(Percentile(v, 0.99), 99);
  EXPECT_EQ(Percentile(v, 0.999), 100);
  EXPECT_EQ(Percentile(v, 1.0), 100);
  EXPECT_EQ(Percentile(v, 0.0), 1);
  EXPECT_EQ(Percentile({}, 0.5), 0);
  EXPECT_EQ(Percentile({7}, 0.999), 7);
}

TEST(StatsTest, SummarizeSortsAndConvertsToMicroseconds) {
  std::vector<int64_t> v;
  for (int i = 1000; i >= 1; --i) v.push_back(i * 1000);  // 1..1000 µs, descending
  LatencySummary s = Summarize(v);
  EXPECT_EQ(s.count, 1000);
  EXPECT_DOUBLE_EQ(s.p50_us, 500);
  EXPECT_DOUBLE_EQ(s.p90_us, 900);
  EXPECT_DOUBLE_EQ(s.p99_us, 990);
  EXPECT_DOUBLE_EQ(s.p999_us, 999);
  EXPECT_DOUBLE_EQ(s.max_us, 1000);
  EXPECT_DOUBLE_EQ(s.mean_us, 500.5);
  EXPECT_TRUE(std::is_sorted(v.begin(), v.end()));
}

TEST(StatsTest, FormatErrors) {
  EXPECT_EQ(FormatErrors({}), "");
  EXPECT_EQ(FormatErrors({{"timeout", 1}, {"http_503", 3}}), "http_503:3;timeout:1");
}

TEST(OptionsTest, ParsesASweep) {
  auto o = ParseOptions({"--port", "9000", "--protocol=binary", "--rates", "1000,2500.5",
                         "--arrivals", "constant", "--workload", "wordfilter", "--no-check"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->port, 9000);
  EXPECT_EQ(o->protocol, Protocol::kBinary);
  EXPECT_THAT(o->rates, ::testing::ElementsAre(1000, 2500.5));
  EXPECT_EQ(o->arrivals, Arrivals::kConstant);
  EXPECT_EQ(o->model, "wordfilter");
  EXPECT_EQ(o->input, "text");
  EXPECT_FALSE(o->check);
}

TEST(OptionsTest, ClosedLoopDefaults) {
  auto o = ParseOptions({"--mode", "closed", "--connections", "8"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->mode, Mode::kClosed);
  EXPECT_EQ(o->connections, 8);
  EXPECT_EQ(o->model, "echo");
  EXPECT_EQ(o->input, "INPUT0");
}

TEST(OptionsTest, RejectsBadArguments) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--rates", "1000", "--bogus", "1"}, "unknown flag --bogus"},
      {{"--rates"}, "--rates: needs a value"},
      {{"--rates", "1000,abc"}, "--rates: not a number"},
      {{"--rates", "0"}, "--rates: must be > 0"},
      {{"--rates", "-5"}, "--rates: must be > 0"},
      {{}, "open loop needs at least one rate"},
      {{"--mode", "closed", "--rates", "100"}, "closed loop takes no rates"},
      {{"--rates", "1", "--protocol", "soap"}, "--protocol: unknown 'soap'"},
      {{"--rates", "1", "--connections", "0"}, "--connections: must be >= 1"},
      {{"--rates", "1", "--port", "70000"}, "--port: must be <= 65535"},
      {{"--rates", "1", "--duration", "0"}, "--duration: must be > 0"},
      {{"--rates", "1", "--threads", "4", "--connections", "2"}, "more threads"},
      {{"--rates", "1", "stray"}, "unexpected argument 'stray'"},
      {{"--mode", "sideways"}, "--mode: unknown 'sideways'"},
  };
  for (const Case& c : cases) {
    auto o = ParseOptions(c.args);
    ASSERT_FALSE(o.ok()) << ::testing::PrintToString(c.args);
    EXPECT_TRUE(absl::IsInvalidArgument(o.status())) << o.status();
    EXPECT_THAT(std::string(o.status().message()), HasSubstr(c.message));
  }
}

TEST(OptionsTest, HelpIsNotAnError) {
  auto o = ParseOptions({"--help"});
  ASSERT_TRUE(absl::IsFailedPrecondition(o.status()));
  EXPECT_THAT(std::string(o.status().message()), HasSubstr("--rates"));
}

Options EchoOptions(Protocol p) {
  auto o = ParseOptions({"--rates", "1", "--port", "8123", "--payload-bytes", "16"});
  EXPECT_TRUE(o.ok());
  o->protocol = p;
  return *o;
}

TEST(RequestsTest, JsonRequestIsACompleteHttpMessage) {
  absl::StatusOr<std::string> encoded = EncodeHttpRequest(EchoOptions(Protocol::kJson));
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  const std::string& r = *encoded;
  EXPECT_THAT(r, HasSubstr("POST /v2/models/echo/infer HTTP/1.1\r\n"));
  EXPECT_THAT(r, HasSubstr("Host: 127.0.0.1:8123\r\n"));
  EXPECT_THAT(r, HasSubstr("Content-Type: application/json\r\n"));
  size_t body_at = r.find("\r\n\r\n") + 4;
  std::string body = r.substr(body_at);
  EXPECT_THAT(r, HasSubstr(absl::StrCat("Content-Length: ", body.size(), "\r\n")));
  nlohmann::json doc = nlohmann::json::parse(body);
  const nlohmann::json& input = doc["inputs"][0];
  EXPECT_EQ(input["name"], "INPUT0");
  EXPECT_EQ(input["datatype"], "BYTES");
  EXPECT_EQ(input["shape"], nlohmann::json::array({1}));
  EXPECT_EQ(input["data"], nlohmann::json::array({std::string(16, 'x')}));
}

TEST(RequestsTest, BatchDimPrependsOneToTheBytesShape) {
  Options o = EchoOptions(Protocol::kJson);
  auto with = ParseOptions({"--rates", "1", "--batch-dim"});
  ASSERT_TRUE(with.ok()) << with.status();
  EXPECT_FALSE(o.batch_dim);
  EXPECT_TRUE(with->batch_dim);
  o.batch_dim = true;
  std::string r = *EncodeHttpRequest(o);
  nlohmann::json doc = nlohmann::json::parse(r.substr(r.find("\r\n\r\n") + 4));
  EXPECT_EQ(doc["inputs"][0]["shape"], nlohmann::json::array({1, 1}));
  EXPECT_EQ(doc["inputs"][0]["data"], nlohmann::json::array({std::string(16, 'x')}));
}

TEST(RequestsTest, BinaryRequestCarriesLengthPrefixedBytes) {
  absl::StatusOr<std::string> encoded = EncodeHttpRequest(EchoOptions(Protocol::kBinary));
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  const std::string& r = *encoded;
  size_t body_at = r.find("\r\n\r\n") + 4;
  std::string body = r.substr(body_at);
  // 16 bytes of payload behind a 4-byte little-endian length.
  std::string tensor = body.substr(body.size() - 20);
  EXPECT_EQ(tensor.substr(0, 4), std::string("\x10\0\0\0", 4));
  EXPECT_EQ(tensor.substr(4), std::string(16, 'x'));
  size_t json_bytes = body.size() - 20;
  EXPECT_THAT(r, HasSubstr(absl::StrCat("Inference-Header-Content-Length: ", json_bytes)));
  EXPECT_THAT(body.substr(0, json_bytes), HasSubstr(R"("binary_data_size":20)"));
}

TEST(RequestsTest, ClipperAndGrpc) {
  Options o = EchoOptions(Protocol::kClipper);
  o.workload = WorkloadKind::kWordfilter;
  o.model = "wordfilter";
  o.docs = 3;
  std::string r = *EncodeHttpRequest(o);
  EXPECT_THAT(r, HasSubstr("POST /wordfilter/predict HTTP/1.1"));
  EXPECT_THAT(r, HasSubstr(R"({"input_batch":["hey, are we)"));

  o.protocol = Protocol::kGrpc;
  o.input = "text";
  inference::ModelInferRequest req;
  absl::StatusOr<std::string> grpc_bytes = EncodeGrpcRequest(o);
  ASSERT_TRUE(grpc_bytes.ok()) << grpc_bytes.status();
  ASSERT_TRUE(req.ParseFromString(*grpc_bytes));
  EXPECT_EQ(req.model_name(), "wordfilter");
  ASSERT_EQ(req.inputs_size(), 1);
  EXPECT_EQ(req.inputs(0).shape(0), 3);
  ASSERT_EQ(req.raw_input_contents_size(), 1);
  size_t want = 0;
  for (int i = 0; i < 3; ++i) want += 4 + WordfilterMessages()[i].size();
  EXPECT_EQ(req.raw_input_contents(0).size(), want);
}

TEST(RequestsTest, CheckAnswer) {
  Options o = EchoOptions(Protocol::kJson);
  EXPECT_TRUE(CheckAnswer(o, R"({"outputs":[{"data":["xxxxxxxxxxxxxxxx"]}]})").ok());
  EXPECT_FALSE(CheckAnswer(o, R"({"outputs":[{"data":["xxxx"]}]})").ok());
  o.workload = WorkloadKind::kWordfilter;
  EXPECT_TRUE(CheckAnswer(o, "that **** printer").ok());
  EXPECT_FALSE(CheckAnswer(o, "that darn printer").ok());
}

TEST(RequestsTest, MlpWorkloadSendsAnFp32MatrixInJsonBinaryAndGrpc) {
  auto parsed = ParseOptions(
      {"--rates", "1", "--workload", "mlp", "--rows", "2", "--features", "3", "--port", "8123"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  Options o = *parsed;
  EXPECT_EQ(o.model, "mlp");
  EXPECT_EQ(o.input, "input");
  const std::vector<float> values = MlpValues(o);
  ASSERT_EQ(values.size(), 6u);
  for (float v : values) {
    EXPECT_GE(v, -1.0f);
    EXPECT_LT(v, 1.0f);
  }
  EXPECT_NE(values[0], values[1]);

  // JSON: the numbers themselves, row-major, under an FP32 [2, 3] tensor.
  std::string json_request = *EncodeHttpRequest(o);
  EXPECT_THAT(json_request, HasSubstr("POST /v2/models/mlp/infer HTTP/1.1\r\n"));
  nlohmann::json doc =
      nlohmann::json::parse(json_request.substr(json_request.find("\r\n\r\n") + 4));
  const nlohmann::json& input = doc["inputs"][0];
  EXPECT_EQ(input["name"], "input");
  EXPECT_EQ(input["datatype"], "FP32");
  EXPECT_EQ(input["shape"], nlohmann::json::array({2, 3}));
  ASSERT_EQ(input["data"].size(), 6u);
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(input["data"][i].get<float>(), values[i]);

  // Binary: the 24 raw little-endian bytes after the JSON header.
  o.protocol = Protocol::kBinary;
  std::string binary_request = *EncodeHttpRequest(o);
  std::string body = binary_request.substr(binary_request.find("\r\n\r\n") + 4);
  ASSERT_GE(body.size(), 24u);
  EXPECT_EQ(body.substr(body.size() - 24),
            std::string(reinterpret_cast<const char*>(values.data()), 24));
  EXPECT_THAT(body, HasSubstr(R"("binary_data_size":24)"));

  // gRPC: raw_input_contents holds the same bytes.
  o.protocol = Protocol::kGrpc;
  inference::ModelInferRequest req;
  ASSERT_TRUE(req.ParseFromString(*EncodeGrpcRequest(o)));
  ASSERT_EQ(req.inputs_size(), 1);
  EXPECT_EQ(req.inputs(0).datatype(), "FP32");
  ASSERT_EQ(req.raw_input_contents_size(), 1);
  EXPECT_EQ(req.raw_input_contents(0),
            std::string(reinterpret_cast<const char*>(values.data()), 24));

  // Clipper has no tensor form: refused at parse time and by the encoder.
  EXPECT_THAT(
      std::string(ParseOptions({"--rates", "1", "--workload", "mlp", "--protocol", "clipper"})
                      .status()
                      .message()),
      HasSubstr("not clipper"));
  o.protocol = Protocol::kClipper;
  EXPECT_FALSE(EncodeHttpRequest(o).ok());

  o.protocol = Protocol::kJson;
  EXPECT_TRUE(CheckAnswer(o, R"({"outputs":[{"name":"output","datatype":"FP32"}]})").ok());
  EXPECT_FALSE(CheckAnswer(o, R"({"error":"bad input"})").ok());
}

TEST(LoadgenTest, MergeAndCsvRow) {
  DriverResult a, b;
  a.latencies_ns = {3000, 1000};
  a.sent = 2;
  a.ok_in_window = 2;
  a.late = 1;
  a.max_late_ns = 5000;
  a.errors["http_503"] = 1;
  b.latencies_ns = {2000};
  b.sent = 2;
  b.ok_in_window = 1;
  b.errors["http_503"] = 2;
  b.errors["timeout"] = 1;
  RunSummary s = Merge({a, b}, 100, 0.5);
  EXPECT_EQ(s.latency.count, 3);
  EXPECT_DOUBLE_EQ(s.latency.p50_us, 2);
  EXPECT_DOUBLE_EQ(s.throughput_rps, 6);
  EXPECT_EQ(s.merged.sent, 4);
  EXPECT_EQ(s.merged.max_late_ns, 5000);
  Options o = EchoOptions(Protocol::kJson);
  o.label = "a,b";
  std::string row = CsvRow(o, s);
  const std::string header = CsvHeader();
  EXPECT_EQ(std::count(row.begin(), row.end(), ','), std::count(header.begin(), header.end(), ','));
  EXPECT_THAT(row, HasSubstr("a b,json,echo,echo,open,poisson,100.0,"));
  EXPECT_THAT(row, HasSubstr(",4,http_503:3;timeout:1,"));
}

}  // namespace
}  // namespace ferry::loadgen
