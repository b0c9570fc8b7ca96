#include "node-agent/http_server.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

// clang-format off
// Boost 1.74's Asio uses std::exchange without including <utility> under C++20: keep it first.
#include <utility>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
// clang-format on

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace ferry::agent {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using nlohmann::json;
using ::testing::HasSubstr;

std::string Le32(uint32_t n) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A serving core whose behaviour each model name selects:
//   echo   answers inline with its input renamed "output"
//   async  parks the request until the test completes it from another thread
//   full   ResourceExhausted, stopping: Unavailable, slo: a default output
class FakeCore : public ServingCore {
 public:
  bool IsLive() const override { return live.load(); }
  bool IsReady() const override { return ready.load(); }
  ServerMetadata GetServerMetadata() const override {
    ServerMetadata m;
    m.version = "9.9";
    return m;
  }
  absl::StatusOr<ModelMetadata> GetModelMetadata(const std::string& name,
                                                 const std::string& version) const override {
    if (name == "nope" || (!version.empty() && version != "1")) {
      return absl::NotFoundError(absl::StrCat("unknown model '", name, "'"));
    }
    if (name == "throwmeta") throw std::runtime_error("metadata exploded");
    ModelMetadata m;
    m.name = name;
    m.versions = {"1"};
    m.platform = "fake";
    m.inputs = {{"input", DataType::kBytes, {-1}}};
    m.outputs = {{"output", DataType::kBytes, {-1}}};
    return m;
  }
  absl::Status ModelReady(const std::string& name, const std::string& version) const override {
    if (name == "loading") return absl::UnavailableError("model 'loading' is loading");
    return GetModelMetadata(name, version).status();
  }
  void Infer(std::unique_ptr<InferenceRequest> request, InferDone done) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_arrival_us_ = request->arrival_us;
      last_priority_ = request->priority;
    }
    const std::string& model = request->model_name;
    if (model == "nope") return done(absl::NotFoundError("unknown model 'nope'"));
    if (model == "full") return done(absl::ResourceExhaustedError("queue is full"));
    if (model == "stopping") return done(absl::UnavailableError("agent is stopping"));
    if (model == "broken") return done(absl::InternalError("runtime failed"));
    if (model == "throw") throw std::bad_alloc();
    InferenceResponse response;
    response.model_name = model;
    response.model_version = "1";
    response.id = request->id;
    if (model == "slo") {
      response.is_default = true;
      response.parameters["default_output"] = std::string(R"("fallback")");
      return done(std::move(response));
    }
    for (Tensor& t : request->inputs) {
      t.name = "output";
      response.outputs.push_back(std::move(t));
    }
    if (model == "async") {
      std::lock_guard<std::mutex> lock(mu_);
      parked_.push_back([done, r = std::move(response)]() mutable { done(std::move(r)); });
      parked_changed_.notify_all();
      return;
    }
    done(std::move(response));
  }

  // Waits until `n` requests are parked, then answers them from a new thread.
  std::thread CompleteParkedLater(size_t n) {
    return std::thread([this, n] {
      WaitParked(n);
      std::vector<std::function<void()>> parked;
      {
        std::lock_guard<std::mutex> lock(mu_);
        parked.swap(parked_);
      }
      for (auto& f : parked) f();
    });
  }

  void WaitParked(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    parked_changed_.wait(lock, [this, n] { return parked_.size() >= n; });
  }

  int64_t last_arrival_us() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_arrival_us_;
  }
  int64_t last_priority() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_priority_;
  }

  std::atomic<bool> live{true};
  std::atomic<bool> ready{true};

 private:
  // std::mutex rather than absl::Mutex: the system's absl is not built for ThreadSanitizer, which
  // would then miss the hand-off of parked requests between threads and report false races.
  std::mutex mu_;
  std::condition_variable parked_changed_;
  std::vector<std::function<void()>> parked_;  // guarded by mu_
  int64_t last_arrival_us_ = 0;                // guarded by mu_
  int64_t last_priority_ = 0;                  // guarded by mu_
};

using Response = http::response<http::string_body>;

// A synchronous HTTP/1.1 client on one connection.
class Client {
 public:
  explicit Client(int port) : socket_(ioc_) {
    socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  }

  void Send(http::verb method, const std::string& target, std::string body = {},
            std::vector<std::pair<std::string, std::string>> headers = {}, int version = 11) {
    http::request<http::string_body> req(method, target, version);
    req.set(http::field::host, "127.0.0.1");
    for (const auto& [k, v] : headers) req.set(k, v);
    if (!body.empty() || method == http::verb::post) {
      req.body() = std::move(body);
      req.prepare_payload();
    }
    http::write(socket_, req);
  }

  Response Read() {
    Response res;
    http::read(socket_, buffer_, res);
    return res;
  }

  Response Do(http::verb method, const std::string& target, std::string body = {},
              std::vector<std::pair<std::string, std::string>> headers = {}) {
    Send(method, target, std::move(body), std::move(headers));
    return Read();
  }

  // True when the server closed the connection (the next read sees end of stream).
  bool ServerClosed() {
    beast::error_code ec;
    char c;
    socket_.read_some(asio::buffer(&c, 1), ec);
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }

  tcp::socket& socket() { return socket_; }

 private:
  asio::io_context ioc_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
};

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HttpServerOptions options;
    options.port = 0;
    options.num_threads = 2;
    options.max_body_bytes = 4096;
    options.metrics_text = [] { return std::string("ferry_up 1\n"); };
    auto server = HttpServer::Create(options, &core_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_GT(server_->port(), 0);
  }

  Client Connect() { return Client(server_->port()); }

  FakeCore core_;
  std::unique_ptr<HttpServer> server_;
};

std::string JsonInfer(const std::string& text) {
  return json({{"id", "q1"},
               {"inputs",
                {{{"name", "input"}, {"shape", {1}}, {"datatype", "BYTES"}, {"data", {text}}}}}})
      .dump();
}

TEST_F(HttpServerTest, HealthEndpoints) {
  Client c = Connect();
  Response r = c.Do(http::verb::get, "/v2/health/live");
  EXPECT_EQ(r.result_int(), 200);
  EXPECT_TRUE(r.body().empty());
  r = c.Do(http::verb::get, "/v2/health/ready");
  EXPECT_EQ(r.result_int(), 200);
  core_.ready = false;
  r = c.Do(http::verb::get, "/v2/health/ready");
  EXPECT_EQ(r.result_int(), 503);
  EXPECT_THAT(json::parse(r.body())["error"].get<std::string>(), HasSubstr("not ready"));
  core_.live = false;
  EXPECT_EQ(c.Do(http::verb::get, "/v2/health/live").result_int(), 503);
}

TEST_F(HttpServerTest, Metadata) {
  Client c = Connect();
  Response r = c.Do(http::verb::get, "/v2");
  ASSERT_EQ(r.result_int(), 200);
  EXPECT_EQ(r[http::field::content_type], "application/json");
  json j = json::parse(r.body());
  EXPECT_EQ(j["name"], "ferry");
  EXPECT_EQ(j["version"], "9.9");
  EXPECT_EQ(j["extensions"], json::array({"binary_tensor_data"}));

  r = c.Do(http::verb::get, "/v2/models/echo");
  ASSERT_EQ(r.result_int(), 200);
  j = json::parse(r.body());
  EXPECT_EQ(j["name"], "echo");
  EXPECT_EQ(j["inputs"][0]["datatype"], "BYTES");
  EXPECT_EQ(c.Do(http::verb::get, "/v2/models/echo/versions/1").result_int(), 200);
  r = c.Do(http::verb::get, "/v2/models/echo/versions/2");
  EXPECT_EQ(r.result_int(), 404);
  EXPECT_TRUE(json::parse(r.body()).contains("error"));

  EXPECT_EQ(c.Do(http::verb::get, "/v2/models/echo/ready").result_int(), 200);
  EXPECT_EQ(c.Do(http::verb::get, "/v2/models/echo/versions/1/ready").result_int(), 200);
  EXPECT_EQ(c.Do(http::verb::get, "/v2/models/loading/ready").result_int(), 503);
  EXPECT_EQ(c.Do(http::verb::get, "/v2/models/nope/ready").result_int(), 404);
}

TEST_F(HttpServerTest, JsonInfer) {
  Client c = Connect();
  Response r = c.Do(http::verb::post, "/v2/models/echo/infer?x=1", JsonInfer("hello \"world\""));
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(r[http::field::content_type], "application/json");
  EXPECT_EQ(r.count("Inference-Header-Content-Length"), 0u);
  json j = json::parse(r.body());
  EXPECT_EQ(j["id"], "q1");
  EXPECT_EQ(j["model_name"], "echo");
  EXPECT_EQ(j["outputs"][0]["name"], "output");
  EXPECT_EQ(j["outputs"][0]["data"], json::array({"hello \"world\""}));
  EXPECT_GT(core_.last_arrival_us(), 0);

  r = c.Do(http::verb::post, "/v2/models/echo/versions/1/infer",
           R"({"parameters":{"priority":2},"inputs":[{"name":"input","shape":[1],)"
           R"("datatype":"BYTES","data":["x"]}]})");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(core_.last_priority(), 2);
}

TEST_F(HttpServerTest, BinaryInfer) {
  Client c = Connect();
  const std::string raw = Le32(3) + "abc" + Le32(2) + "de";
  const std::string header = absl::StrCat(
      R"({"inputs":[{"name":"input","shape":[2],"datatype":"BYTES","parameters":)",
      R"({"binary_data_size":)", raw.size(), R"(}}],"outputs":[{"name":"output","parameters":)",
      R"({"binary_data":true}}]})");
  Response r = c.Do(http::verb::post, "/v2/models/echo/infer", header + raw,
                    {{"Inference-Header-Content-Length", std::to_string(header.size())},
                     {"Content-Type", "application/octet-stream"}});
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(r[http::field::content_type], "application/octet-stream");
  size_t json_length = std::stoul(std::string(r["Inference-Header-Content-Length"]));
  ASSERT_LT(json_length, r.body().size());
  json j = json::parse(r.body().substr(0, json_length));
  EXPECT_EQ(j["outputs"][0]["parameters"]["binary_data_size"], raw.size());
  EXPECT_EQ(r.body().substr(json_length), raw);

  // Header length 0: the body is the model's single input.
  r = c.Do(http::verb::post, "/v2/models/echo/infer", raw,
           {{"Inference-Header-Content-Length", "0"}});
  ASSERT_EQ(r.result_int(), 200) << r.body();
  j = json::parse(r.body());
  EXPECT_EQ(j["outputs"][0]["data"], json::array({"abc", "de"}));

  r = c.Do(http::verb::post, "/v2/models/echo/infer", raw,
           {{"Inference-Header-Content-Length", "ten"}});
  EXPECT_EQ(r.result_int(), 400);
}

TEST_F(HttpServerTest, ClipperPredict) {
  Client c = Connect();
  Response r = c.Do(http::verb::post, "/echo/predict", R"({"input": "hi"})");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  json j = json::parse(r.body());
  EXPECT_EQ(j["output"], "hi");
  EXPECT_EQ(j["default"], false);
  const int64_t first = j["query_id"].get<int64_t>();

  r = c.Do(http::verb::post, "/echo/predict", R"({"input_batch": ["a", "b"]})");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  j = json::parse(r.body());
  ASSERT_EQ(j["batch_predictions"].size(), 2u);
  EXPECT_EQ(j["batch_predictions"][0]["query_id"], first + 1);
  EXPECT_EQ(j["batch_predictions"][1]["query_id"], first + 2);
  EXPECT_EQ(j["batch_predictions"][1]["output"], "b");

  r = c.Do(http::verb::post, "/slo/predict", R"({"input": "hi"})");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  j = json::parse(r.body());
  EXPECT_EQ(j["default"], true);
  EXPECT_EQ(j["output"], "fallback");

  r = c.Do(http::verb::post, "/nope/predict", R"({"input": "hi"})");
  EXPECT_EQ(r.result_int(), 404);
  r = c.Do(http::verb::post, "/echo/predict", R"({"input": 5})");
  EXPECT_EQ(r.result_int(), 400);
  EXPECT_THAT(json::parse(r.body())["error"].get<std::string>(), HasSubstr("must be a string"));
  r = c.Do(http::verb::post, "/full/predict", R"({"input": "x"})");
  EXPECT_EQ(r.result_int(), 429);
}

TEST_F(HttpServerTest, ErrorsMapToStatusCodes) {
  Client c = Connect();
  struct Case {
    http::verb method;
    std::string target;
    std::string body;
    int status;
  };
  const std::vector<Case> cases = {
      {http::verb::post, "/v2/models/echo/infer", "{not json", 400},
      {http::verb::post, "/v2/models/echo/infer",
       R"({"inputs":[{"name":"input","shape":[2],"datatype":"BYTES","data":["a"]}]})", 400},
      {http::verb::post, "/v2/models/nope/infer", JsonInfer("x"), 404},
      {http::verb::post, "/v2/models/full/infer", JsonInfer("x"), 429},
      {http::verb::post, "/v2/models/stopping/infer", JsonInfer("x"), 503},
      {http::verb::post, "/v2/models/broken/infer", JsonInfer("x"), 500},
      {http::verb::get, "/v2/models/echo/infer", "", 405},
      {http::verb::post, "/v2/health/live", "", 405},
      {http::verb::get, "/v3", "", 404},
      {http::verb::get, "/v2/models/echo/explain", "", 404},
      {http::verb::get, "/", "", 404},
  };
  // All on one connection: errors keep the connection alive.
  for (const Case& k : cases) {
    Response r = c.Do(k.method, k.target, k.body);
    EXPECT_EQ(r.result_int(), k.status) << k.target << " " << r.body();
    EXPECT_TRUE(json::parse(r.body()).contains("error")) << k.target;
    EXPECT_TRUE(r.keep_alive());
  }
  Response r = c.Do(http::verb::get, "/v2/models/echo/infer");
  EXPECT_EQ(r[http::field::allow], "POST");
}

TEST_F(HttpServerTest, BodyOverTheLimitIs413AndCloses) {
  Client c = Connect();
  Response r = c.Do(http::verb::post, "/v2/models/echo/infer", JsonInfer(std::string(5000, 'x')));
  EXPECT_EQ(r.result_int(), 413);
  EXPECT_EQ(json::parse(r.body())["error"], "request body is larger than the limit of 4096 bytes");
  EXPECT_FALSE(r.keep_alive());
  EXPECT_TRUE(c.ServerClosed());
}

TEST_F(HttpServerTest, KeepAliveServesManyRequestsOnOneConnection) {
  Client c = Connect();
  for (int i = 0; i < 50; ++i) {
    const std::string text = absl::StrCat("message ", i);
    Response r = c.Do(http::verb::post, "/v2/models/echo/infer", JsonInfer(text));
    ASSERT_EQ(r.result_int(), 200);
    EXPECT_EQ(json::parse(r.body())["outputs"][0]["data"][0], text);
    EXPECT_TRUE(r.keep_alive());
  }
  EXPECT_EQ(c.Do(http::verb::get, "/metrics").body(), "ferry_up 1\n");
}

TEST_F(HttpServerTest, Http10ClosesAfterTheResponse) {
  Client c = Connect();
  c.Send(http::verb::get, "/v2/health/live", {}, {}, /*version=*/10);
  Response r = c.Read();
  EXPECT_EQ(r.result_int(), 200);
  EXPECT_EQ(r.version(), 10);
  EXPECT_TRUE(c.ServerClosed());
}

TEST_F(HttpServerTest, ExpectContinueGetsAnInterimResponse) {
  Client c = Connect();
  const std::string body = JsonInfer("continued");
  const std::string head = absl::StrCat(
      "POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
      "Content-Length: ",
      body.size(), "\r\n\r\n");
  asio::write(c.socket(), asio::buffer(head));
  std::string interim;
  asio::read_until(c.socket(), asio::dynamic_buffer(interim), "\r\n\r\n");
  EXPECT_EQ(interim, "HTTP/1.1 100 Continue\r\n\r\n");
  asio::write(c.socket(), asio::buffer(body));
  Response r = c.Read();
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(json::parse(r.body())["outputs"][0]["data"][0], "continued");
}

TEST_F(HttpServerTest, CompletionFromAnotherThread) {
  Client a = Connect();
  Client b = Connect();
  a.Send(http::verb::post, "/v2/models/async/infer", JsonInfer("from a"));
  b.Send(http::verb::post, "/async/predict", R"({"input": "from b"})");
  std::thread completer = core_.CompleteParkedLater(2);
  Response ra = a.Read();
  Response rb = b.Read();
  completer.join();
  ASSERT_EQ(ra.result_int(), 200) << ra.body();
  EXPECT_EQ(json::parse(ra.body())["outputs"][0]["data"][0], "from a");
  ASSERT_EQ(rb.result_int(), 200) << rb.body();
  EXPECT_EQ(json::parse(rb.body())["output"], "from b");
  // The connections stay usable.
  EXPECT_EQ(a.Do(http::verb::get, "/v2/health/live").result_int(), 200);
}

TEST_F(HttpServerTest, ShutdownFinishesInFlightRequestsAndClosesIdleConnections) {
  Client busy = Connect();
  Client idle = Connect();
  EXPECT_EQ(idle.Do(http::verb::get, "/v2/health/live").result_int(), 200);
  busy.Send(http::verb::post, "/v2/models/async/infer", JsonInfer("last"));
  core_.WaitParked(1);
  std::thread stopper([this] { server_->Shutdown(); });
  EXPECT_TRUE(idle.ServerClosed());
  std::thread completer = core_.CompleteParkedLater(1);
  Response r = busy.Read();
  EXPECT_EQ(r.result_int(), 200);
  EXPECT_EQ(json::parse(r.body())["outputs"][0]["data"][0], "last");
  EXPECT_TRUE(busy.ServerClosed());
  completer.join();
  stopper.join();
  // No longer listening.
  asio::io_context ioc;
  tcp::socket s(ioc);
  beast::error_code ec;
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->port()), ec);
  EXPECT_TRUE(ec);
}

TEST_F(HttpServerTest, StopAcceptingKeepsOpenConnections) {
  Client c = Connect();
  EXPECT_EQ(c.Do(http::verb::get, "/v2/health/live").result_int(), 200);  // accepted
  server_->StopAccepting();
  EXPECT_EQ(c.Do(http::verb::get, "/v2").result_int(), 200);
  asio::io_context ioc;
  tcp::socket s(ioc);
  beast::error_code ec;
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->port()), ec);
  EXPECT_TRUE(ec);
  EXPECT_EQ(c.Do(http::verb::get, "/v2/health/ready").result_int(), 200);
}

TEST(HttpServerCreateTest, RejectsATakenPortAndBadOptions) {
  FakeCore core;
  HttpServerOptions options;
  options.port = 0;
  auto first = HttpServer::Create(options, &core);
  ASSERT_TRUE(first.ok()) << first.status();
  options.port = (*first)->port();
  auto second = HttpServer::Create(options, &core);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("cannot listen on"));

  options.port = 0;
  options.num_threads = 0;
  EXPECT_EQ(HttpServer::Create(options, &core).status().code(), absl::StatusCode::kInvalidArgument);
  options.num_threads = 1;
  EXPECT_EQ(HttpServer::Create(options, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HttpServerCreateTest, ValidatesOptions) {
  EXPECT_TRUE(ValidateHttpServerOptions(HttpServerOptions{}).ok());
  auto invalid = [](void (*change)(HttpServerOptions&)) {
    HttpServerOptions options;
    change(options);
    return ValidateHttpServerOptions(options).code() == absl::StatusCode::kInvalidArgument;
  };
  EXPECT_TRUE(invalid([](HttpServerOptions& o) { o.port = 65536; }));
  EXPECT_TRUE(invalid([](HttpServerOptions& o) { o.num_threads = 0; }));
  EXPECT_TRUE(invalid([](HttpServerOptions& o) { o.max_body_bytes = 0; }));
  EXPECT_TRUE(invalid([](HttpServerOptions& o) { o.max_connections = 0; }));
  EXPECT_TRUE(invalid([](HttpServerOptions& o) { o.header_timeout_ms = 0; }));
  EXPECT_TRUE(invalid([](HttpServerOptions& o) { o.body_timeout_ms = -1; }));
  EXPECT_TRUE(invalid([](HttpServerOptions& o) { o.idle_timeout_ms = int64_t{1} << 60; }));
  EXPECT_TRUE(invalid([](HttpServerOptions& o) { o.write_timeout_ms = 0; }));
  EXPECT_TRUE(invalid([](HttpServerOptions& o) { o.accept_backoff_ms = 0; }));
  HttpServerOptions options;
  options.header_timeout_ms = 0;
  FakeCore core;
  auto server = HttpServer::Create(options, &core);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("header_timeout_ms"));
}

TEST_F(HttpServerTest, AnExceptionInAHandlerAnswers500AndTheServerKeepsServing) {
  Client c = Connect();
  // Thrown by the core's Infer (std::bad_alloc, as a huge allocation would).
  Response r = c.Do(http::verb::post, "/v2/models/throw/infer", JsonInfer("x"));
  EXPECT_EQ(r.result_int(), 500);
  EXPECT_THAT(r.body(), HasSubstr("internal error"));
  // Thrown while routing, before the core is involved.
  Client d = Connect();
  r = d.Do(http::verb::get, "/v2/models/throwmeta");
  EXPECT_EQ(r.result_int(), 500);
  EXPECT_THAT(r.body(), HasSubstr("metadata exploded"));
  Client e = Connect();
  EXPECT_EQ(e.Do(http::verb::post, "/v2/models/echo/infer", JsonInfer("ok")).result_int(), 200);
}

// A server with `change` applied to small test options.
std::unique_ptr<HttpServer> MakeServer(FakeCore* core,
                                       const std::function<void(HttpServerOptions&)>& change) {
  HttpServerOptions options;
  options.port = 0;
  options.num_threads = 1;
  options.max_body_bytes = 4096;
  change(options);
  auto server = HttpServer::Create(options, core);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

TEST(HttpServerLimitsTest, BodyOverTheByteBudgetIs429BeforeItIsRead) {
  FakeCore core;
  ByteBudget budget(1000);
  auto server = MakeServer(&core, [&](HttpServerOptions& o) { o.byte_budget = &budget; });
  ASSERT_NE(server, nullptr);
  {
    Client c(server->port());
    // Only the header: the answer must not wait for the 2000 bytes it announces.
    const std::string head =
        "POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n";
    asio::write(c.socket(), asio::buffer(head));
    Response r = c.Read();
    EXPECT_EQ(r.result_int(), 429);
    EXPECT_THAT(r.body(), HasSubstr("in flight"));
  }
  {
    // A chunked body is charged as it arrives.
    Client c(server->port());
    std::string request =
        "POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 6; ++i) request += "1f4\r\n" + std::string(500, ' ') + "\r\n";
    request += "0\r\n\r\n";
    asio::write(c.socket(), asio::buffer(request));
    Response r = c.Read();
    EXPECT_EQ(r.result_int(), 429);
  }
  // Bodies that fit are served, and what they held is given back.
  Client c(server->port());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(c.Do(http::verb::post, "/v2/models/echo/infer", JsonInfer("small")).result_int(),
              200);
  }
  EXPECT_EQ(budget.in_use_bytes(), 0);
}

TEST(HttpServerLimitsTest, ConnectionsBeyondTheMaximumAreRefused) {
  FakeCore core;
  auto server = MakeServer(&core, [](HttpServerOptions& o) { o.max_connections = 2; });
  ASSERT_NE(server, nullptr);
  Client a(server->port());
  Client b(server->port());
  EXPECT_EQ(a.Do(http::verb::get, "/v2/health/live").result_int(), 200);
  EXPECT_EQ(b.Do(http::verb::get, "/v2/health/live").result_int(), 200);
  Client refused(server->port());
  beast::error_code ec;
  Response r;
  beast::flat_buffer buffer;
  http::read(refused.socket(), buffer, r, ec);
  // Either the 503 arrived or the close overtook it; never an answer from a third session.
  if (!ec) {
    EXPECT_EQ(r.result_int(), 503);
  }
  EXPECT_EQ(server->open_connections(), 2);
  EXPECT_EQ(a.Do(http::verb::get, "/v2/health/live").result_int(), 200);
}

TEST(HttpServerLimitsTest, SilentAndIdleConnectionsAreCutOff) {
  FakeCore core;
  auto server = MakeServer(&core, [](HttpServerOptions& o) {
    o.header_timeout_ms = 100;
    o.idle_timeout_ms = 100;
    o.body_timeout_ms = 100;
  });
  ASSERT_NE(server, nullptr);
  Client silent(server->port());
  EXPECT_TRUE(silent.ServerClosed());
  Client kept_alive(server->port());
  EXPECT_EQ(kept_alive.Do(http::verb::get, "/v2/health/live").result_int(), 200);
  EXPECT_TRUE(kept_alive.ServerClosed());
  Client stalled(server->port());
  const std::string head =
      "POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{";
  asio::write(stalled.socket(), asio::buffer(head));
  EXPECT_TRUE(stalled.ServerClosed());
  Client fresh(server->port());
  EXPECT_EQ(fresh.Do(http::verb::get, "/v2/health/live").result_int(), 200);
}

TEST(HttpServerLimitsTest, ShutdownClosesAClientThatNeverReadsItsResponse) {
  FakeCore core;
  auto server = MakeServer(&core, [](HttpServerOptions& o) {
    // More than the socket buffers hold, so the write blocks on a client that reads nothing.
    o.metrics_text = [] { return std::string(size_t{32} << 20, 'm'); };
  });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  c.socket().set_option(asio::socket_base::receive_buffer_size(4096));
  c.Send(http::verb::get, "/metrics");
  const auto started = std::chrono::steady_clock::now();
  server->Shutdown(absl::Now() + absl::Milliseconds(200));
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
  EXPECT_EQ(server->open_connections(), 0);
}

}  // namespace
}  // namespace ferry::agent
