#include "control-plane/gateway.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <map>
#include <random>
#include <string_view>
#include <vector>

// clang-format off
// Boost 1.74's Asio uses std::exchange without including <utility> under C++20: keep it first.
#include <utility>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
// clang-format on

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "control-plane/controller.h"
#include "control-plane/router.h"
#include "nlohmann/json.hpp"

namespace ferry::control {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr char kJson[] = "application/json";
constexpr int64_t kHeaderLimitBytes = 64 << 10;

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string ErrorJson(absl::string_view message) {
  return nlohmann::json{{"error", std::string(message)}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::string_view ToSv(beast::string_view s) { return {s.data(), s.size()}; }

// Hop-by-hop headers are the gateway's own business on each leg; everything else of the agent's
// answer goes back unchanged.
bool IsHopByHop(http::field f) {
  switch (f) {
    case http::field::connection:
    case http::field::keep_alive:
    case http::field::transfer_encoding:
    case http::field::content_length:
    case http::field::te:
    case http::field::trailer:
    case http::field::upgrade:
    case http::field::proxy_authenticate:
    case http::field::proxy_authorization:
      return true;
    default:
      return false;
  }
}

}  // namespace

// One replica address (host:port of a node's data plane).
struct Upstream {
  Upstream(std::string addr, int threads) : address(std::move(addr)), idle(threads) {
    const size_t colon = address.rfind(':');
    host = colon == std::string::npos ? address : address.substr(0, colon);
    port = colon == std::string::npos ? "80" : address.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    boost::system::error_code ec;
    const auto ip = asio::ip::make_address(host, ec);
    int p = 0;
    if (!ec && absl::SimpleAtoi(port, &p) && p > 0 && p < 65536) {
      endpoint = tcp::endpoint(ip, static_cast<uint16_t>(p));
    }
  }

  const std::string address;
  std::string host;
  std::string port;
  std::optional<tcp::endpoint> endpoint;  // when host is an IP literal
  std::atomic<int64_t> outstanding{0};
  std::atomic<int64_t> ejected_until_us{0};
  // Idle kept-alive connections; slot i is only touched by io thread i.
  std::vector<std::vector<std::unique_ptr<beast::tcp_stream>>> idle;
};

// One node that serves a function, with the throughput within the SLO of the function's ready
// replicas there (0 = unknown): the router weighs nodes whose hardware differs by it.
struct Candidate {
  std::shared_ptr<Upstream> upstream;
  double throughput_rps = 0;
};

struct RouteTable {
  bool have_snapshot = false;
  std::map<std::string, std::vector<Candidate>> by_function;
};

class ClientSession;

class GatewayImpl {
 public:
  explicit GatewayImpl(const GatewayOptions& options) : options_(options) {
    for (int i = 0; i < options.num_threads; ++i) {
      ioc_.push_back(std::make_unique<asio::io_context>(1));
      // An io_context without work returns from run() at once; connections come later.
      work_.push_back(asio::make_work_guard(*ioc_.back()));
    }
  }
  ~GatewayImpl() { Shutdown(); }

  absl::Status Listen() {
    boost::system::error_code ec;
    auto address = asio::ip::make_address(options_.host, ec);
    tcp::endpoint endpoint;
    if (ec) {
      tcp::resolver resolver(*ioc_[0]);
      auto results = resolver.resolve(options_.host, std::to_string(options_.port), ec);
      if (ec || results.empty()) {
        return absl::UnavailableError(absl::StrCat("cannot resolve ", options_.host));
      }
      endpoint = results.begin()->endpoint();
    } else {
      endpoint = tcp::endpoint(address, static_cast<uint16_t>(options_.port));
    }
    acceptor_.emplace(*ioc_[0]);
    acceptor_->open(endpoint.protocol(), ec);
    if (!ec) acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_->bind(endpoint, ec);
    if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", options_.host, ":", options_.port, ": ", ec.message()));
    }
    port_ = acceptor_->local_endpoint().port();
    return absl::OkStatus();
  }

  void Start() {
    Accept();
    for (auto& ioc : ioc_) {
      threads_.emplace_back([io = ioc.get()] {
        // An exception escaping a handler would end the thread: log it and keep running.
        for (;;) {
          try {
            io->run();
            return;
          } catch (const std::exception& e) {
            std::fprintf(stderr, "ferry-control: gateway: unexpected exception: %s\n", e.what());
          } catch (...) {
            std::fprintf(stderr, "ferry-control: gateway: unexpected exception\n");
          }
        }
      });
    }
  }

  void Shutdown() {
    if (shut_down_.exchange(true)) return;
    asio::post(*ioc_[0], [this] {
      boost::system::error_code ec;
      if (acceptor_) acceptor_->close(ec);
    });
    for (auto& w : work_) w.reset();
    for (auto& ioc : ioc_) ioc->stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
    // Pooled sockets go before their io_contexts (a session still queued in one io_context may
    // hold an upstream whose pool has sockets of another).
    absl::MutexLock lock(&mu_);
    for (const auto& weak : all_upstreams_) {
      if (auto up = weak.lock()) {
        for (auto& slot : up->idle) slot.clear();
      }
    }
    all_upstreams_.clear();
    table_ = std::make_shared<RouteTable>();
    upstreams_.clear();
  }

  void ApplyRouteUpdate(const v1::RouteUpdate& update) {
    absl::MutexLock lock(&mu_);
    auto next = std::make_shared<RouteTable>();
    if (!update.snapshot()) *next = *table_;
    next->have_snapshot = true;
    for (const auto& fr : update.functions()) {
      std::vector<Candidate> ups;
      for (const auto& r : fr.routes()) {
        if (!r.ready() || r.http_address().empty()) continue;
        auto& up = upstreams_[r.http_address()];
        if (up == nullptr) {
          up = std::make_shared<Upstream>(r.http_address(), options_.num_threads);
          all_upstreams_.push_back(up);
        }
        auto same = std::find_if(ups.begin(), ups.end(),
                                 [&](const Candidate& c) { return c.upstream == up; });
        if (same == ups.end()) {
          ups.push_back({up, r.throughput_rps()});
        } else {
          same->throughput_rps += r.throughput_rps();  // replicas on one node share its queue
        }
      }
      if (ups.empty()) {
        next->by_function.erase(fr.function());
      } else {
        next->by_function[fr.function()] = std::move(ups);
      }
    }
    // Wake the requests held for functions that now have a ready route.
    for (auto it = held_.begin(); it != held_.end();) {
      if (next->by_function.count(it->first) == 0) {
        ++it;
        continue;
      }
      for (auto& weak : it->second) WakeHeld(weak);
      it = held_.erase(it);
    }
    std::erase_if(all_upstreams_, [](const auto& w) { return w.expired(); });
    // Drop addresses no function routes to any more (their pooled connections close when the
    // last in-flight request lets go).
    for (auto it = upstreams_.begin(); it != upstreams_.end();) {
      bool used = false;
      for (const auto& [fn, ups] : next->by_function) {
        for (const Candidate& c : ups) used |= c.upstream == it->second;
        if (used) break;
      }
      it = used ? std::next(it) : upstreams_.erase(it);
    }
    table_ = std::move(next);
  }

  std::shared_ptr<const RouteTable> Table() {
    absl::MutexLock lock(&mu_);
    return table_;
  }

  // Registers a held request; false when the function got a ready route meanwhile (forward now).
  bool AddHeld(const std::string& function, std::weak_ptr<ClientSession> session) {
    absl::MutexLock lock(&mu_);
    if (table_->by_function.count(function) > 0) return false;
    held_[function].push_back(std::move(session));
    return true;
  }
  void RemoveHeld(const std::string& function, const ClientSession* session) {
    absl::MutexLock lock(&mu_);
    auto it = held_.find(function);
    if (it == held_.end()) return;
    std::erase_if(it->second, [&](const std::weak_ptr<ClientSession>& w) {
      auto p = w.lock();
      return p == nullptr || p.get() == session;
    });
    if (it->second.empty()) held_.erase(it);
  }
  // Posts the session's resumption to its own io thread (defined after ClientSession).
  static void WakeHeld(const std::weak_ptr<ClientSession>& weak);

  const GatewayOptions& options() const { return options_; }
  int port() const { return port_; }

  std::atomic<int> connections{0};
  std::atomic<int64_t> requests{0};
  std::atomic<int64_t> retries{0};
  std::atomic<int64_t> fresh_reconnects{0};
  std::atomic<int64_t> connections_opened{0};
  std::atomic<int64_t> held_total{0};
  std::atomic<int64_t> held_now{0};
  std::atomic<int64_t> hold_timeouts{0};
  std::atomic<int64_t> hold_rejected{0};

 private:
  void Accept();

  const GatewayOptions options_;
  std::vector<std::unique_ptr<asio::io_context>> ioc_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::optional<tcp::acceptor> acceptor_;
  std::vector<std::thread> threads_;
  std::atomic<bool> shut_down_{false};
  int port_ = 0;
  size_t next_ioc_ = 0;  // accept handler only (io thread 0)
  absl::Mutex mu_;
  std::shared_ptr<RouteTable> table_ ABSL_GUARDED_BY(mu_) = std::make_shared<RouteTable>();
  std::map<std::string, std::shared_ptr<Upstream>> upstreams_ ABSL_GUARDED_BY(mu_);
  std::vector<std::weak_ptr<Upstream>> all_upstreams_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<std::weak_ptr<ClientSession>>> held_ ABSL_GUARDED_BY(mu_);
};

// One client connection: reads a request, answers it locally or forwards it, one at a time.
class ClientSession : public std::enable_shared_from_this<ClientSession> {
 public:
  ClientSession(GatewayImpl* gw, tcp::socket socket, int thread_index)
      : gw_(gw), stream_(std::move(socket)), thread_index_(thread_index) {}
  ~ClientSession() {
    ReleaseUpstream();
    EndHold();
    gw_->connections.fetch_sub(1);
  }

  // A ready route for the held function arrived (on this session's io thread).
  void Resume() {
    if (!waiting_) return;
    waiting_ = false;
    if (hold_timer_) hold_timer_->cancel();
    Guarded([&] { Forward(function_); });
  }
  asio::any_io_executor executor() { return stream_.get_executor(); }

  void Start(bool over_limit) {
    if (over_limit) {
      close_after_reply_ = true;
      Reply(503, ErrorJson("too many connections"));
      return;
    }
    ReadHeader(/*first=*/true);
  }

 private:
  const GatewayOptions& opt() const { return gw_->options(); }

  // Every handler runs through here: an exception answers 500 (or closes) instead of escaping.
  template <typename F>
  void Guarded(F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      Fail500(e.what());
    } catch (...) {
      Fail500("unknown error");
    }
  }
  void Fail500(const char* what) {
    ReleaseUpstream();
    conn_.reset();
    if (replying_) {
      boost::system::error_code ec;
      stream_.socket().close(ec);
      return;
    }
    close_after_reply_ = true;
    try {
      Reply(500, ErrorJson(absl::StrCat("internal error: ", what)));
    } catch (...) {
      boost::system::error_code ec;
      stream_.socket().close(ec);
    }
  }

  void ReadHeader(bool first) {
    parser_.emplace();
    parser_->header_limit(kHeaderLimitBytes);
    parser_->body_limit(opt().max_body_bytes);
    stream_.expires_after(
        std::chrono::milliseconds(first ? opt().header_timeout_ms : opt().idle_timeout_ms));
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              self->Guarded([&] { self->OnHeader(ec); });
                            });
  }

  void OnHeader(beast::error_code ec) {
    if (ec) {
      if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
          ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
          ec == asio::error::eof) {
        return;  // closed or idle: drop the connection
      }
      close_after_reply_ = true;
      if (ec == http::error::body_limit) {
        Reply(413, ErrorJson(absl::StrCat("request body exceeds the limit of ",
                                          opt().max_body_bytes, " bytes")));
      } else if (ec == http::error::header_limit) {
        Reply(431, ErrorJson("request header too large"));
      } else {
        Reply(400, ErrorJson(absl::StrCat("bad request: ", ec.message())));
      }
      return;
    }
    if (const auto len = parser_->content_length(); len && *len > uint64_t(opt().max_body_bytes)) {
      close_after_reply_ = true;
      Reply(413, ErrorJson(absl::StrCat("request body of ", *len, " bytes exceeds the limit of ",
                                        opt().max_body_bytes)));
      return;
    }
    stream_.expires_after(std::chrono::milliseconds(opt().body_timeout_ms));
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->Guarded([&] { self->OnRequest(ec); });
                     });
  }

  void OnRequest(beast::error_code ec) {
    if (ec) {
      if (ec == http::error::body_limit) {
        close_after_reply_ = true;
        Reply(413, ErrorJson(absl::StrCat("request body exceeds the limit of ",
                                          opt().max_body_bytes, " bytes")));
        return;
      }
      if (ec == beast::error::timeout || ec == http::error::end_of_stream ||
          ec == asio::error::eof || ec == asio::error::connection_reset) {
        return;
      }
      close_after_reply_ = true;
      Reply(400, ErrorJson(absl::StrCat("bad request: ", ec.message())));
      return;
    }
    stream_.expires_never();
    request_ = parser_->release();
    keep_alive_ = request_.keep_alive();
    Route();
  }

  void Route() {
    absl::string_view target = ToSv(request_.target());
    if (const size_t q = target.find('?'); q != absl::string_view::npos)
      target = target.substr(0, q);
    std::vector<absl::string_view> path = absl::StrSplit(target, '/', absl::SkipEmpty());
    const auto method = request_.method();
    const bool get = method == http::verb::get || method == http::verb::head;
    if (path.size() >= 1 && path[0] == "v2") {
      if (path.size() == 1) {
        if (!get) return Reply(405, ErrorJson("method not allowed; use GET"));
        return Reply(200, nlohmann::json{{"name", "ferry-gateway"},
                                         {"version", FERRY_VERSION},
                                         {"extensions", {"binary_tensor_data"}}}
                              .dump());
      }
      if (path.size() == 3 && path[1] == "health" && (path[2] == "live" || path[2] == "ready")) {
        if (!get) return Reply(405, ErrorJson("method not allowed; use GET"));
        if (path[2] == "live") return Reply(200, "");
        if (gw_->Table()->have_snapshot) return Reply(200, "");
        return Reply(503, ErrorJson("the gateway has no route table yet"));
      }
      if (path.size() >= 3 && path[1] == "models") {
        const size_t rest = path.size() - 3;
        size_t i = 3;
        bool ok = true;
        if (rest >= 2 && path[3] == "versions") i = 5;
        const size_t tail = path.size() - i;
        if (tail > 1) ok = false;
        if (ok && tail == 1 && path[i] != "ready" && path[i] != "infer") ok = false;
        if (ok) return Forward(std::string(path[2]));
      }
    } else if (path.size() == 2 && path[1] == "predict") {
      return Forward(std::string(path[0]));
    } else if (path.size() == 1 && path[0] == "metrics" && get && opt().metrics_text) {
      reply_ = {};
      reply_.result(200);
      reply_.version(11);
      reply_.set(http::field::content_type, "text/plain; version=0.0.4");
      reply_.body() = opt().metrics_text();
      return SendReply();
    }
    Reply(404, ErrorJson(absl::StrCat("no route for ", ToSv(request_.method_string()), " ",
                                      ToSv(request_.target()))));
  }

  // --- forwarding ----------------------------------------------------------------------------

  void Forward(std::string function) {
    function_ = std::move(function);
    auto table = gw_->Table();
    auto it = table->by_function.find(function_);
    if (it == table->by_function.end() && opt().demand_replica &&
        (hold_deadline_us_ != 0 || opt().demand_replica(function_))) {
      return Hold();
    }
    EndHold();
    if (it == table->by_function.end()) {
      std::optional<std::string> why;
      if (opt().why_unroutable) why = opt().why_unroutable(function_);
      if (!why) return Reply(404, ErrorJson(absl::StrCat("unknown function '", function_, "'")));
      return Reply(
          503, ErrorJson(absl::StrCat("function '", function_, "' has no ready replica: ", *why)));
    }
    candidates_ = it->second;
    failed_.clear();
    retried_ = false;
    up_req_ = {};
    up_req_.method(request_.method());
    up_req_.target(request_.target());
    up_req_.version(11);
    for (const auto& field : request_) {
      if (IsHopByHop(field.name()) || field.name() == http::field::host) continue;
      up_req_.insert(field.name_string(), field.value());
    }
    up_req_.body() = std::move(request_.body());
    up_req_.keep_alive(true);
    up_req_.prepare_payload();
    TryUpstream();
  }

  // --- holding (scale from zero) -------------------------------------------------------------

  void Hold() {
    const int64_t now = NowUs();
    if (hold_deadline_us_ == 0) {
      if (gw_->held_now.fetch_add(1) >= opt().hold_max_requests) {
        gw_->held_now.fetch_sub(1);
        gw_->hold_rejected.fetch_add(1);
        return Reply(503, ErrorJson(absl::StrCat(
                              "function '", function_, "' has no ready replica and ",
                              opt().hold_max_requests,
                              " requests already wait for one (the gateway's hold queue is "
                              "full)")));
      }
      gw_->held_total.fetch_add(1);
      hold_deadline_us_ = now + opt().hold_timeout_ms * 1000;
    }
    if (now >= hold_deadline_us_) return HoldTimedOut();
    if (!gw_->AddHeld(function_, weak_from_this())) {
      // A ready route arrived between the table lookup and now.
      asio::post(stream_.get_executor(), [self = shared_from_this()] {
        self->Guarded([&] { self->Forward(self->function_); });
      });
      return;
    }
    waiting_ = true;
    if (!hold_timer_) hold_timer_.emplace(stream_.get_executor());
    hold_timer_->expires_after(std::chrono::microseconds(hold_deadline_us_ - now));
    hold_timer_->async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec == asio::error::operation_aborted || !self->waiting_) return;
      self->waiting_ = false;
      self->Guarded([&] {
        self->gw_->RemoveHeld(self->function_, self.get());
        self->HoldTimedOut();
      });
    });
  }

  void HoldTimedOut() {
    EndHold();
    gw_->hold_timeouts.fetch_add(1);
    std::optional<std::string> why;
    if (opt().why_unroutable) why = opt().why_unroutable(function_);
    Reply(503, ErrorJson(absl::StrCat("function '", function_, "' had no ready replica within ",
                                      opt().hold_timeout_ms, " ms",
                                      why ? absl::StrCat(": ", *why) : std::string())));
  }

  void EndHold() {
    if (hold_deadline_us_ != 0) {
      hold_deadline_us_ = 0;
      gw_->held_now.fetch_sub(1);
    }
  }

  std::shared_ptr<Upstream> Pick() {
    static thread_local std::mt19937_64 rng(std::random_device{}());
    const int64_t now = NowUs();
    std::vector<const Candidate*> fresh, all;
    for (const Candidate& c : candidates_) {
      if (std::find(failed_.begin(), failed_.end(), c.upstream.get()) != failed_.end()) continue;
      all.push_back(&c);
      if (c.upstream->ejected_until_us.load(std::memory_order_relaxed) <= now) {
        fresh.push_back(&c);
      }
    }
    std::vector<const Candidate*>& pool = fresh.empty() ? all : fresh;
    if (pool.empty()) return nullptr;
    std::vector<int64_t> loads;
    std::vector<double> throughput;
    loads.reserve(pool.size());
    throughput.reserve(pool.size());
    for (const Candidate* c : pool) {
      loads.push_back(c->upstream->outstanding.load(std::memory_order_relaxed));
      throughput.push_back(c->throughput_rps);
    }
    return pool[PickReplica(loads, throughput, rng)]->upstream;
  }

  void TryUpstream() {
    upstream_ = Pick();
    if (upstream_ == nullptr) {
      return Reply(503, ErrorJson(absl::StrCat("no replica of '", function_,
                                               "' could be reached: ", last_error_)));
    }
    upstream_->outstanding.fetch_add(1);
    holding_ = true;
    auto& idle = upstream_->idle[thread_index_];
    if (!idle.empty()) {
      conn_ = std::move(idle.back());
      idle.pop_back();
      conn_reused_ = true;
      Send();
      return;
    }
    Connect();
  }

  void Connect() {
    conn_reused_ = false;
    conn_ = std::make_unique<beast::tcp_stream>(stream_.get_executor());
    gw_->connections_opened.fetch_add(1);
    conn_->expires_after(std::chrono::milliseconds(opt().connect_timeout_ms));
    auto on_connect = [self = shared_from_this()](beast::error_code ec, auto&&...) {
      self->Guarded([&] {
        if (ec) return self->ConnectionFailed(ec);
        boost::system::error_code ignored;
        self->conn_->socket().set_option(tcp::no_delay(true), ignored);
        self->Send();
      });
    };
    if (upstream_->endpoint) {
      conn_->async_connect(*upstream_->endpoint,
                           [on_connect](beast::error_code ec) mutable { on_connect(ec); });
      return;
    }
    auto resolver = std::make_shared<tcp::resolver>(stream_.get_executor());
    resolver->async_resolve(upstream_->host, upstream_->port,
                            [self = shared_from_this(), resolver, on_connect](
                                beast::error_code ec, tcp::resolver::results_type results) mutable {
                              self->Guarded([&] {
                                if (ec) return self->ConnectionFailed(ec);
                                self->conn_->async_connect(results, on_connect);
                              });
                            });
  }

  void Send() {
    conn_->expires_after(std::chrono::milliseconds(opt().upstream_timeout_ms));
    http::async_write(*conn_, up_req_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->Guarded([&] {
        if (ec) {
          if (ec == beast::error::timeout) return self->UpstreamTimeout();
          return self->ConnectionFailed(ec);
        }
        self->up_buffer_.clear();
        self->up_parser_.emplace();
        self->up_parser_->header_limit(kHeaderLimitBytes);
        self->up_parser_->body_limit(self->opt().max_response_bytes);
        if (self->up_req_.method() == http::verb::head) self->up_parser_->skip(true);
        http::async_read(*self->conn_, self->up_buffer_, *self->up_parser_,
                         [self](beast::error_code ec, size_t) {
                           self->Guarded([&] { self->OnUpstreamResponse(ec); });
                         });
      });
    });
  }

  void OnUpstreamResponse(beast::error_code ec) {
    if (ec) {
      if (ec == beast::error::timeout) return UpstreamTimeout();
      if (up_parser_->got_some()) {
        // Part of an answer came: the replica may have run the request; do not resend it.
        ReleaseUpstream();
        conn_.reset();
        return Reply(502, ErrorJson(absl::StrCat("replica ", upstream_->address,
                                                 " broke off its answer: ", ec.message())));
      }
      return ConnectionFailed(ec);
    }
    auto response = up_parser_->release();
    if (response.keep_alive() &&
        upstream_->idle[thread_index_].size() < size_t(opt().max_idle_per_upstream)) {
      conn_->expires_never();
      upstream_->idle[thread_index_].push_back(std::move(conn_));
    }
    conn_.reset();
    ReleaseUpstream();
    gw_->requests.fetch_add(1);
    reply_ = {};
    reply_.result(response.result_int());
    reply_.version(11);
    for (const auto& field : response) {
      if (IsHopByHop(field.name())) continue;
      reply_.insert(field.name_string(), field.value());
    }
    reply_.body() = std::move(response.body());
    SendReply();
  }

  void UpstreamTimeout() {
    ReleaseUpstream();
    conn_.reset();
    Reply(504, ErrorJson(absl::StrCat("replica ", upstream_->address, " did not answer within ",
                                      opt().upstream_timeout_ms, " ms")));
  }

  // The connection could not be made or broke before any byte of the answer: nothing was
  // served, so the request may go elsewhere.
  void ConnectionFailed(beast::error_code ec) {
    ReleaseUpstream();
    conn_.reset();
    last_error_ = absl::StrCat(upstream_->address, ": ", ec.message());
    if (conn_reused_) {
      // A pooled connection the agent may have closed while idle: one fresh connection to the
      // same replica before calling it a failure.
      gw_->fresh_reconnects.fetch_add(1);
      upstream_->outstanding.fetch_add(1);
      holding_ = true;
      Connect();
      return;
    }
    upstream_->ejected_until_us.store(NowUs() + opt().eject_ms * 1000);
    // Idle connections to a replica that refuses new ones are dead too.
    upstream_->idle[thread_index_].clear();
    failed_.push_back(upstream_.get());
    if (retried_) {
      return Reply(503, ErrorJson(absl::StrCat("no replica of '", function_,
                                               "' could be reached: ", last_error_)));
    }
    retried_ = true;
    gw_->retries.fetch_add(1);
    TryUpstream();
  }

  void ReleaseUpstream() {
    if (holding_) {
      holding_ = false;
      upstream_->outstanding.fetch_sub(1);
    }
  }

  // --- answering -----------------------------------------------------------------------------

  void Reply(int status, std::string body) {
    reply_ = {};
    reply_.result(status);
    reply_.version(11);
    if (!body.empty()) reply_.set(http::field::content_type, kJson);
    reply_.body() = std::move(body);
    SendReply();
  }

  void SendReply() {
    replying_ = true;
    reply_.keep_alive(keep_alive_ && !close_after_reply_);
    reply_.prepare_payload();
    stream_.expires_after(std::chrono::milliseconds(opt().write_timeout_ms));
    http::async_write(stream_, reply_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->Guarded([&] {
        self->replying_ = false;
        if (ec || !self->reply_.keep_alive()) {
          boost::system::error_code ignored;
          self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
          return;
        }
        self->reply_ = {};
        self->request_ = {};
        self->ReadHeader(/*first=*/false);
      });
    });
  }

  GatewayImpl* const gw_;
  beast::tcp_stream stream_;
  const int thread_index_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  http::response<http::string_body> reply_;
  bool keep_alive_ = true;
  bool close_after_reply_ = false;
  bool replying_ = false;
  // Holding: the time the hold ends (0 = not held); waiting_ while registered and timed.
  int64_t hold_deadline_us_ = 0;
  bool waiting_ = false;
  std::optional<asio::steady_timer> hold_timer_;

  std::string function_;
  std::vector<Candidate> candidates_;
  std::vector<Upstream*> failed_;
  bool retried_ = false;
  std::string last_error_;
  std::shared_ptr<Upstream> upstream_;
  bool holding_ = false;  // counted in upstream_->outstanding
  std::unique_ptr<beast::tcp_stream> conn_;
  bool conn_reused_ = false;
  http::request<http::string_body> up_req_;
  beast::flat_buffer up_buffer_;
  std::optional<http::response_parser<http::string_body>> up_parser_;
};

void GatewayImpl::WakeHeld(const std::weak_ptr<ClientSession>& weak) {
  auto session = weak.lock();
  if (session == nullptr) return;
  asio::post(session->executor(), [session] { session->Resume(); });
}

void GatewayImpl::Accept() {
  const size_t index = next_ioc_++ % ioc_.size();
  acceptor_->async_accept(*ioc_[index], [this, index](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_->is_open()) return;
    if (!ec) {
      try {
        boost::system::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        const bool over = connections.fetch_add(1) >= options_.max_connections;
        auto session = std::make_shared<ClientSession>(this, std::move(socket), int(index));
        // Start on the connection's own io thread.
        asio::post(*ioc_[index], [session, over] {
          try {
            session->Start(over);
          } catch (...) {
          }
        });
      } catch (...) {
        // Out of memory for one connection: it is dropped, accepting goes on.
      }
    }
    Accept();
  });
}

// --- Gateway -------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Gateway>> Gateway::Create(const GatewayOptions& options) {
  if (options.num_threads < 1 || options.num_threads > 256) {
    return absl::InvalidArgumentError("gateway: num_threads must be in [1, 256]");
  }
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError("gateway: port must be in [0, 65535]");
  }
  if (options.max_body_bytes < 1 || options.max_response_bytes < 1 || options.max_connections < 1 ||
      options.header_timeout_ms < 1 || options.body_timeout_ms < 1 || options.idle_timeout_ms < 1 ||
      options.write_timeout_ms < 1 || options.connect_timeout_ms < 1 ||
      options.upstream_timeout_ms < 1 || options.max_idle_per_upstream < 0 ||
      options.eject_ms < 0 || options.hold_max_requests < 0 || options.hold_timeout_ms < 1) {
    return absl::InvalidArgumentError("gateway: limits and timeouts must be positive");
  }
  auto impl = std::make_unique<GatewayImpl>(options);
  if (absl::Status s = impl->Listen(); !s.ok()) return s;
  impl->Start();
  return std::unique_ptr<Gateway>(new Gateway(std::move(impl)));
}

Gateway::Gateway(std::unique_ptr<GatewayImpl> impl) : impl_(std::move(impl)) {}
Gateway::~Gateway() { Shutdown(); }
int Gateway::port() const { return impl_->port(); }
void Gateway::ApplyRouteUpdate(const v1::RouteUpdate& update) { impl_->ApplyRouteUpdate(update); }
void Gateway::Shutdown() { impl_->Shutdown(); }

Gateway::Stats Gateway::stats() const {
  return {.requests = impl_->requests.load(),
          .retries = impl_->retries.load(),
          .fresh_reconnects = impl_->fresh_reconnects.load(),
          .connections_opened = impl_->connections_opened.load(),
          .held = impl_->held_total.load(),
          .held_now = impl_->held_now.load(),
          .hold_timeouts = impl_->hold_timeouts.load(),
          .hold_rejected = impl_->hold_rejected.load()};
}

// --- RouteFollower -------------------------------------------------------------------------------

RouteFollower::RouteFollower(Controller* controller, Gateway* gateway)
    : controller_(controller), gateway_(gateway) {
  thread_ = std::thread([this] { Run(); });
}

RouteFollower::~RouteFollower() { Stop(); }

void RouteFollower::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void RouteFollower::Run() {
  int64_t revision = -1;
  while (!stop_.load()) {
    v1::RouteUpdate update = controller_->RouteChangesSince(revision, "");
    if (revision < 0 || update.functions_size() > 0) gateway_->ApplyRouteUpdate(update);
    revision = update.revision();
    controller_->WaitForRouteChange(revision, 200);
  }
}

}  // namespace ferry::control
