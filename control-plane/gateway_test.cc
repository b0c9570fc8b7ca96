#include "control-plane/gateway.h"

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
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
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace ferry::control {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// A stand-in agent: echoes the body and the headers that matter, names itself in X-Upstream.
// Thread per connection (test only).
class FakeAgent {
 public:
  explicit FakeAgent(std::string name, bool close_silently = false)
      : name_(std::move(name)), close_silently_(close_silently), acceptor_(ioc_) {
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(ep.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { AcceptLoop(); });
  }
  ~FakeAgent() {
    stop_ = true;
    boost::system::error_code ec;
    {
      // A blocking accept() does not return when the acceptor is closed: wake it.
      asio::io_context ioc;
      tcp::socket wake(ioc);
      wake.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ec);
    }
    {
      absl::MutexLock lock(&mu_);
      for (auto* s : sockets_) s->shutdown(tcp::socket::shutdown_both, ec);
    }
    thread_.join();
    for (auto& t : conns_) t.join();
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  int requests() const { return requests_.load(); }

 private:
  void AcceptLoop() {
    while (!stop_) {
      boost::system::error_code ec;
      tcp::socket socket(ioc_);
      acceptor_.accept(socket, ec);
      if (ec || stop_) return;
      conns_.emplace_back([this, s = std::move(socket)]() mutable { Serve(std::move(s)); });
    }
  }
  void Serve(tcp::socket socket) {
    {
      absl::MutexLock lock(&mu_);
      sockets_.push_back(&socket);
    }
    beast::flat_buffer buffer;
    for (;;) {
      http::request<http::string_body> req;
      boost::system::error_code ec;
      http::read(socket, buffer, req, ec);
      if (ec) break;
      requests_.fetch_add(1);
      http::response<http::string_body> res;
      res.version(11);
      res.result(req.target().ends_with("/overload/infer") ? 429 : 200);
      res.set("X-Upstream", name_);
      if (auto it = req.find(http::field::content_type); it != req.end()) {
        res.set(http::field::content_type, it->value());
      }
      if (auto it = req.find("Inference-Header-Content-Length"); it != req.end()) {
        res.set("Inference-Header-Content-Length", it->value());
      }
      res.body() = req.body();
      res.keep_alive(true);
      res.prepare_payload();
      http::write(socket, res, ec);
      if (ec || close_silently_) break;
    }
    absl::MutexLock lock(&mu_);
    std::erase(sockets_, &socket);
    boost::system::error_code ec;
    socket.close(ec);
  }

  const std::string name_;
  const bool close_silently_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::thread thread_;
  std::vector<std::thread> conns_;
  absl::Mutex mu_;
  std::vector<tcp::socket*> sockets_ ABSL_GUARDED_BY(mu_);
};

// An address where nothing listens (connection refused).
std::string DeadAddress() {
  asio::io_context ioc;
  tcp::acceptor a(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const int port = a.local_endpoint().port();
  a.close();
  return absl::StrCat("127.0.0.1:", port);
}

struct Answer {
  int status = 0;
  std::map<std::string, std::string> headers;
  std::string body;
};

// One request on a fresh connection (or on `socket` when given, kept alive).
Answer Send(int port, http::verb method, const std::string& target, const std::string& body = "",
            const std::map<std::string, std::string>& headers = {}) {
  asio::io_context ioc;
  tcp::socket socket(ioc);
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  http::request<http::string_body> req{method, target, 11};
  req.set(http::field::host, "gw");
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = body;
  req.prepare_payload();
  http::write(socket, req);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  boost::system::error_code ec;
  http::read(socket, buffer, res, ec);
  Answer a;
  if (ec) return a;
  a.status = res.result_int();
  for (const auto& f : res) a.headers[std::string(f.name_string())] = std::string(f.value());
  a.body = res.body();
  return a;
}

v1::RouteUpdate Snapshot(const std::map<std::string, std::vector<std::string>>& routes) {
  v1::RouteUpdate u;
  u.set_snapshot(true);
  for (const auto& [fn, addrs] : routes) {
    auto* fr = u.add_functions();
    fr->set_function(fn);
    int i = 0;
    for (const auto& a : addrs) {
      auto* r = fr->add_routes();
      r->set_function(fn);
      r->set_replica_id(absl::StrCat(fn, "-", i++));
      r->set_http_address(a);
      r->set_ready(true);
    }
  }
  return u;
}

std::unique_ptr<Gateway> MakeGateway(GatewayOptions options = {}) {
  options.port = 0;
  auto gw = Gateway::Create(options);
  EXPECT_TRUE(gw.ok()) << gw.status();
  return std::move(*gw);
}

TEST(GatewayTest, ForwardsBinaryBodyAndHeadersUnchanged) {
  FakeAgent agent("a");
  auto gw = MakeGateway();
  gw->ApplyRouteUpdate(Snapshot({{"echo", {agent.address()}}}));
  std::string body = R"({"inputs":[]})";
  body.append("\x00\x01\xff\x7f", 4);
  const Answer a = Send(
      gw->port(), http::verb::post, "/v2/models/echo/versions/1/infer", body,
      {{"Content-Type", "application/octet-stream"}, {"Inference-Header-Content-Length", "13"}});
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.body, body);
  EXPECT_EQ(a.headers.at("Inference-Header-Content-Length"), "13");
  EXPECT_EQ(a.headers.at("Content-Type"), "application/octet-stream");
  EXPECT_EQ(a.headers.at("X-Upstream"), "a");

  const Answer p = Send(gw->port(), http::verb::post, "/echo/predict", R"({"input":[1]})");
  EXPECT_EQ(p.status, 200);
  EXPECT_EQ(p.body, R"({"input":[1]})");
  EXPECT_EQ(agent.requests(), 2);
}

TEST(GatewayTest, AgentErrorStatusPassesThrough) {
  FakeAgent agent("a");
  auto gw = MakeGateway();
  gw->ApplyRouteUpdate(Snapshot({{"overload", {agent.address()}}}));
  const Answer a = Send(gw->port(), http::verb::post, "/v2/models/overload/infer", "x");
  EXPECT_EQ(a.status, 429);
  EXPECT_EQ(a.body, "x");
}

TEST(GatewayTest, UnknownIs404KnownWithoutReplicaIs503WithReason) {
  GatewayOptions options;
  options.why_unroutable = [](const std::string& fn) -> std::optional<std::string> {
    if (fn == "known") return "0/2 nodes fit: 2 have no GPU";
    return std::nullopt;
  };
  auto gw = MakeGateway(options);
  gw->ApplyRouteUpdate(Snapshot({}));
  Answer a = Send(gw->port(), http::verb::post, "/v2/models/nope/infer", "{}");
  EXPECT_EQ(a.status, 404);
  EXPECT_NE(a.body.find("unknown function 'nope'"), std::string::npos) << a.body;
  a = Send(gw->port(), http::verb::post, "/known/predict", "{}");
  EXPECT_EQ(a.status, 503);
  EXPECT_NE(a.body.find("2 have no GPU"), std::string::npos) << a.body;
  a = Send(gw->port(), http::verb::get, "/v2/models/known/bogus/extra");
  EXPECT_EQ(a.status, 404);
  EXPECT_NE(a.body.find("no route"), std::string::npos) << a.body;
}

TEST(GatewayTest, HealthAndMetadata) {
  auto gw = MakeGateway();
  EXPECT_EQ(Send(gw->port(), http::verb::get, "/v2/health/live").status, 200);
  EXPECT_EQ(Send(gw->port(), http::verb::get, "/v2/health/ready").status, 503);
  gw->ApplyRouteUpdate(Snapshot({}));
  EXPECT_EQ(Send(gw->port(), http::verb::get, "/v2/health/ready").status, 200);
  const Answer m = Send(gw->port(), http::verb::get, "/v2");
  EXPECT_EQ(m.status, 200);
  EXPECT_NE(m.body.find("ferry-gateway"), std::string::npos);
}

TEST(GatewayTest, RetriesOnceOnAnotherReplicaWhenConnectionRefused) {
  FakeAgent live("live");
  GatewayOptions options;
  options.eject_ms = 0;  // keep choosing the dead one so that the retry path runs often
  auto gw = MakeGateway(options);
  gw->ApplyRouteUpdate(Snapshot({{"f", {DeadAddress(), live.address()}}}));
  for (int i = 0; i < 50; ++i) {
    const Answer a = Send(gw->port(), http::verb::post, "/v2/models/f/infer", "q");
    ASSERT_EQ(a.status, 200) << a.body;
    EXPECT_EQ(a.headers.at("X-Upstream"), "live");
  }
  EXPECT_EQ(live.requests(), 50);
  EXPECT_GE(gw->stats().retries, 1);
}

TEST(GatewayTest, OnlyOneRetryThen503) {
  auto gw = MakeGateway();
  gw->ApplyRouteUpdate(Snapshot({{"f", {DeadAddress(), DeadAddress(), DeadAddress()}}}));
  const Answer a = Send(gw->port(), http::verb::post, "/v2/models/f/infer", "q");
  EXPECT_EQ(a.status, 503);
  EXPECT_NE(a.body.find("could be reached"), std::string::npos) << a.body;
  EXPECT_EQ(gw->stats().retries, 1);
}

TEST(GatewayTest, EjectsAFailedReplica) {
  FakeAgent live("live");
  GatewayOptions options;
  options.eject_ms = 60'000;
  auto gw = MakeGateway(options);
  gw->ApplyRouteUpdate(Snapshot({{"f", {DeadAddress(), live.address()}}}));
  for (int i = 0; i < 30; ++i) {
    ASSERT_EQ(Send(gw->port(), http::verb::post, "/v2/models/f/infer", "q").status, 200);
  }
  EXPECT_LE(gw->stats().retries, 1);
}

TEST(GatewayTest, PowerOfTwoChoicesUsesEveryReplica) {
  FakeAgent a("a"), b("b"), c("c");
  auto gw = MakeGateway();
  gw->ApplyRouteUpdate(Snapshot({{"f", {a.address(), b.address(), c.address()}}}));
  for (int i = 0; i < 90; ++i) {
    ASSERT_EQ(Send(gw->port(), http::verb::post, "/f/predict", "q").status, 200);
  }
  EXPECT_GE(a.requests(), 5);
  EXPECT_GE(b.requests(), 5);
  EXPECT_GE(c.requests(), 5);
}

TEST(GatewayTest, ReusesConnectionsAndRecoversFromStalePooledOnes) {
  FakeAgent keep("keep");
  FakeAgent closer("closer", /*close_silently=*/true);
  auto gw = MakeGateway(GatewayOptions{.num_threads = 1});
  gw->ApplyRouteUpdate(Snapshot({{"k", {keep.address()}}, {"c", {closer.address()}}}));
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(Send(gw->port(), http::verb::post, "/k/predict", "q").status, 200);
  }
  EXPECT_EQ(gw->stats().connections_opened, 1);  // one pooled connection served all ten
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(Send(gw->port(), http::verb::post, "/c/predict", "q").status, 200);
  }
  EXPECT_EQ(closer.requests(), 10);
  EXPECT_GE(gw->stats().fresh_reconnects, 1);
  EXPECT_EQ(gw->stats().retries, 0);
}

TEST(GatewayTest, DeltaWithdrawsRoutes) {
  FakeAgent agent("a");
  auto gw = MakeGateway();
  gw->ApplyRouteUpdate(Snapshot({{"f", {agent.address()}}, {"g", {agent.address()}}}));
  v1::RouteUpdate delta;
  delta.add_functions()->set_function("f");  // empty set: withdrawn
  gw->ApplyRouteUpdate(delta);
  EXPECT_EQ(Send(gw->port(), http::verb::post, "/f/predict", "q").status, 404);
  EXPECT_EQ(Send(gw->port(), http::verb::post, "/g/predict", "q").status, 200);
}

TEST(GatewayTest, NotReadyRoutesGetNoTraffic) {
  FakeAgent agent("a");
  auto gw = MakeGateway();
  v1::RouteUpdate u = Snapshot({{"f", {agent.address()}}});
  u.mutable_functions(0)->mutable_routes(0)->set_ready(false);
  gw->ApplyRouteUpdate(u);
  EXPECT_EQ(Send(gw->port(), http::verb::post, "/f/predict", "q").status, 404);
  EXPECT_EQ(agent.requests(), 0);
}

TEST(GatewayTest, BadRequestsAndLimits) {
  FakeAgent agent("a");
  auto gw = MakeGateway(GatewayOptions{.max_body_bytes = 100});
  gw->ApplyRouteUpdate(Snapshot({{"f", {agent.address()}}}));
  EXPECT_EQ(Send(gw->port(), http::verb::post, "/f/predict", std::string(101, 'x')).status, 413);
  EXPECT_EQ(Send(gw->port(), http::verb::post, "/f/predict", std::string(100, 'x')).status, 200);

  // Garbage instead of HTTP: 400, and the gateway keeps serving.
  {
    asio::io_context ioc;
    tcp::socket socket(ioc);
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), gw->port()));
    asio::write(socket, asio::buffer(std::string("NOT HTTP AT ALL\r\n\r\n")));
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    boost::system::error_code ec;
    http::read(socket, buffer, res, ec);
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(res.result_int(), 400);
  }
  EXPECT_EQ(Send(gw->port(), http::verb::get, "/v2/health/live").status, 200);
}

TEST(GatewayTest, TooManyConnectionsAnswered503) {
  auto gw = MakeGateway(GatewayOptions{.max_connections = 1});
  asio::io_context ioc;
  tcp::socket first(ioc);
  first.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), gw->port()));
  // The first connection is held open; the second is over the limit.
  const Answer a = Send(gw->port(), http::verb::get, "/v2/health/live");
  EXPECT_EQ(a.status, 503);
}

TEST(GatewayTest, RejectsBadOptions) {
  EXPECT_FALSE(Gateway::Create(GatewayOptions{.num_threads = 0}).ok());
  EXPECT_FALSE(Gateway::Create(GatewayOptions{.port = 0, .max_body_bytes = 0}).ok());
}

}  // namespace
}  // namespace ferry::control

namespace ferry::control {
namespace {

// Polls (real time) until `done` or 10 s pass; the gateway's io threads do the work meanwhile.
template <typename F>
bool Eventually(F done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::yield();
  }
  return true;
}

TEST(GatewayHoldTest, HeldRequestsAreForwardedWhenTheFirstRouteIsReady) {
  FakeAgent agent("a");
  std::atomic<int> demands{0};
  GatewayOptions options;
  options.why_unroutable = [](const std::string& fn) -> std::optional<std::string> {
    if (fn == "cold") return "0/1 replicas ready";
    return std::nullopt;
  };
  options.demand_replica = [&](const std::string& fn) {
    demands.fetch_add(1);
    return fn == "cold";
  };
  auto gw = MakeGateway(options);
  gw->ApplyRouteUpdate(Snapshot({}));
  // Unknown functions are not held.
  EXPECT_EQ(Send(gw->port(), http::verb::post, "/v2/models/nope/infer", "{}").status, 404);

  constexpr int kClients = 6;
  std::vector<Answer> answers(kClients);
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      answers[i] = Send(gw->port(), http::verb::post, "/v2/models/cold/infer", absl::StrCat(i));
    });
  }
  ASSERT_TRUE(Eventually([&] { return gw->stats().held_now == kClients; }));
  EXPECT_EQ(agent.requests(), 0);
  gw->ApplyRouteUpdate(Snapshot({{"cold", {agent.address()}}}));
  for (auto& t : clients) t.join();
  for (int i = 0; i < kClients; ++i) {
    EXPECT_EQ(answers[i].status, 200) << answers[i].body;
    EXPECT_EQ(answers[i].body, absl::StrCat(i));
  }
  EXPECT_EQ(agent.requests(), kClients);
  EXPECT_EQ(gw->stats().held, kClients);
  EXPECT_EQ(gw->stats().held_now, 0);
  EXPECT_GE(demands.load(), kClients + 1);
}

TEST(GatewayHoldTest, HoldIsBoundedInCountAndTime) {
  GatewayOptions options;
  options.why_unroutable = [](const std::string&) -> std::optional<std::string> {
    return "0/2 nodes fit: 2 have no GPU";
  };
  options.demand_replica = [](const std::string&) { return true; };
  options.hold_max_requests = 1;
  options.hold_timeout_ms = 200;
  options.metrics_text = [] { return std::string("ferry_test_metric 1\n"); };
  auto gw = MakeGateway(options);
  gw->ApplyRouteUpdate(Snapshot({}));
  Answer first;
  std::thread client([&] { first = Send(gw->port(), http::verb::post, "/f/predict", "{}"); });
  ASSERT_TRUE(Eventually([&] { return gw->stats().held_now == 1; }));
  const Answer second = Send(gw->port(), http::verb::post, "/f/predict", "{}");
  EXPECT_EQ(second.status, 503);
  EXPECT_NE(second.body.find("hold queue is full"), std::string::npos) << second.body;
  client.join();
  EXPECT_EQ(first.status, 503);
  EXPECT_NE(first.body.find("had no ready replica within 200 ms: 0/2 nodes fit"), std::string::npos)
      << first.body;
  EXPECT_EQ(gw->stats().hold_timeouts, 1);
  EXPECT_EQ(gw->stats().held_now, 0);

  const Answer m = Send(gw->port(), http::verb::get, "/metrics");
  EXPECT_EQ(m.status, 200);
  EXPECT_EQ(m.body, "ferry_test_metric 1\n");
  EXPECT_EQ(m.headers.at("Content-Type"), "text/plain; version=0.0.4");
}

}  // namespace
}  // namespace ferry::control
