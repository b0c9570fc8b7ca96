#include "node-agent/http_server.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

// clang-format off
// Boost 1.74's Asio uses std::exchange without including <utility> under C++20: keep it first.
#include <utility>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
// clang-format on

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "ferry/clock.h"
#include "node-agent/kserve_json.h"
#include "node-agent/status_codes.h"

namespace ferry::agent {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using WorkGuard = asio::executor_work_guard<asio::io_context::executor_type>;

constexpr std::string_view kJson = "application/json";
constexpr std::string_view kOctetStream = "application/octet-stream";
constexpr std::string_view kPrometheusText = "text/plain; version=0.0.4";
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
// After an error that leaves request bytes unread, the connection is drained (so that the close
// does not turn into a reset that destroys the error response) up to these limits.
constexpr size_t kMaxDrainBytes = size_t{16} << 20;
constexpr auto kDrainTimeout = std::chrono::seconds(2);

std::string_view ToStd(beast::string_view s) { return {s.data(), s.size()}; }
absl::string_view ToAbsl(beast::string_view s) { return {s.data(), s.size()}; }
beast::string_view ToBeast(std::string_view s) { return {s.data(), s.size()}; }

// Allocated bytes after a string's end, which the JSON reader may read (see kJsonPaddingBytes).
size_t SpareCapacity(const std::string& s) { return s.capacity() - s.size(); }

// Splits "/a/b/c?x" into {"a","b","c"}; empty segments are kept so that "//x" does not route.
std::vector<std::string_view> SplitPath(std::string_view target) {
  if (size_t q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  std::vector<std::string_view> parts;
  if (target.empty() || target[0] != '/') return parts;
  target.remove_prefix(1);
  if (target.empty()) return parts;
  while (true) {
    const size_t slash = target.find('/');
    parts.push_back(target.substr(0, slash));
    if (slash == std::string_view::npos) break;
    target.remove_prefix(slash + 1);
  }
  return parts;
}

}  // namespace

class Session;

class HttpServerImpl {
 public:
  HttpServerImpl(const HttpServerOptions& options, ServingCore* core)
      : options_(options),
        core_(core),
        iocs_(MakeContexts(options.num_threads)),
        acceptor_(asio::make_strand(*iocs_[0])) {}

  absl::Status Start();
  int port() const { return port_; }
  void StopAccepting();
  void Shutdown();

  const HttpServerOptions& options() const { return options_; }
  ServingCore* core() const { return core_; }
  bool stopping() const { return stopping_.load(std::memory_order_acquire); }
  int64_t TakeQueryIds(int64_t n) { return next_query_id_.fetch_add(n); }
  // Keeps the io thread of `executor` (a connection's) running until the guard is dropped.
  WorkGuard MakeWorkGuard(const asio::any_io_executor& executor) {
    auto& ctx = asio::query(executor, asio::execution::context);
    return asio::make_work_guard(static_cast<asio::io_context&>(ctx));
  }

 private:
  // One io_context per thread, each run by exactly one thread; connections are spread over them
  // round robin. With one shared io_context, every event is handed from the thread that ran the
  // reactor to another that runs the handler, and those hand-offs cost more than the request.
  static std::vector<std::unique_ptr<asio::io_context>> MakeContexts(int n) {
    std::vector<std::unique_ptr<asio::io_context>> contexts;
    for (int i = 0; i < std::max(1, n); ++i) {
      contexts.push_back(std::make_unique<asio::io_context>(1));
    }
    return contexts;
  }
  bool InIoThread() const {
    for (const auto& ioc : iocs_) {
      if (ioc->get_executor().running_in_this_thread()) return true;
    }
    return false;
  }
  void DoAccept();
  void OnAccept(beast::error_code ec, tcp::socket socket);

  const HttpServerOptions options_;
  ServingCore* const core_;
  // Declared first: everything below holds handles into it and must be destroyed before it.
  std::vector<std::unique_ptr<asio::io_context>> iocs_;
  tcp::acceptor acceptor_;  // on iocs_[0]
  std::vector<WorkGuard> work_;
  size_t next_ioc_ = 0;  // touched only on the acceptor's strand
  std::vector<std::thread> threads_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> next_query_id_{0};

  absl::Mutex mu_;
  std::vector<std::weak_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

// One connection. Lives as long as a handler (read, write, pending inference) holds it. Every
// member is touched only on the connection's strand.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, HttpServerImpl* server)
      : socket_(std::move(socket)), server_(server), drain_timer_(socket_.get_executor()) {}

  void Start() {
    asio::dispatch(socket_.get_executor(), [self = shared_from_this()] { self->DoRead(); });
  }

  // Called at shutdown: a connection waiting for its next request is closed now; one with a
  // request in flight closes after writing the response (DoRead checks stopping()).
  void CloseIfIdle() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
      if (!self->busy_) self->Close();
    });
  }

 private:
  void DoRead();
  void OnHeader(beast::error_code ec);
  void ReadBody();
  void OnReadError(beast::error_code ec);
  void OnRequest();
  void Route();
  void HandleInfer(std::string_view model, std::string_view version);
  void HandlePredict(std::string_view model);
  void FinishInfer(absl::StatusOr<InferenceResponse> result);
  void FinishPredict(absl::StatusOr<InferenceResponse> result);

  void ReplyError(const absl::Status& status) {
    Reply(HttpStatusFor(status),
          EncodeError(std::string_view(status.message().data(), status.message().size())), kJson);
  }
  void Reply(unsigned status, std::string body, std::string_view content_type,
             int64_t json_length = -1, bool close = false);
  void OnWrite(bool close, bool drain, beast::error_code ec);
  void Drain();
  void Close();

  // Hands the request to the core; `finish` runs on this connection's strand with the result.
  template <typename Finish>
  void Submit(std::unique_ptr<InferenceRequest> request, Finish finish);

  tcp::socket socket_;
  HttpServerImpl* const server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  int64_t arrival_us_ = 0;
  // Between a complete request and its written response.
  bool busy_ = false;
  // What encoding the response needs of the request once its inputs went to the core.
  InferenceRequest pending_request_;
  ClipperQuery pending_query_;
  int64_t pending_query_id_ = 0;
  // For draining after an error.
  asio::steady_timer drain_timer_;
  std::unique_ptr<std::array<char, 16384>> drain_buffer_;
  size_t drained_bytes_ = 0;
};

void Session::DoRead() {
  busy_ = false;
  if (server_->stopping()) {
    Close();
    return;
  }
  parser_.emplace();
  parser_->body_limit(static_cast<uint64_t>(server_->options().max_body_bytes));
  http::async_read_header(
      socket_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
}

void Session::OnHeader(beast::error_code ec) {
  if (ec) {
    OnReadError(ec);
    return;
  }
  if (parser_->is_done()) {
    OnRequest();
    return;
  }
  // curl sends "Expect: 100-continue" for bodies over 1 KiB and waits a second for the go-ahead.
  const auto& header = parser_->get();
  if (header.version() >= 11) {
    const auto expect = header.find(http::field::expect);
    if (expect != header.end() && absl::EqualsIgnoreCase(ToAbsl(expect->value()), "100-continue")) {
      asio::async_write(socket_, asio::buffer(kContinue.data(), kContinue.size()),
                        [self = shared_from_this()](beast::error_code ec, size_t) {
                          if (ec) {
                            self->Close();
                          } else {
                            self->ReadBody();
                          }
                        });
      return;
    }
  }
  ReadBody();
}

void Session::ReadBody() {
  // Room for the JSON reader's padding after the body, so that it parses the body in place. The
  // body reader reserves only the Content-Length and keeps a larger capacity.
  if (const auto length = parser_->content_length();
      length && *length <= static_cast<uint64_t>(server_->options().max_body_bytes)) {
    parser_->get().body().reserve(*length + kJsonPaddingBytes);
  }
  http::async_read(socket_, buffer_, *parser_,
                   [self = shared_from_this()](beast::error_code ec, size_t) {
                     if (ec) {
                       self->OnReadError(ec);
                     } else {
                       self->OnRequest();
                     }
                   });
}

void Session::OnReadError(beast::error_code ec) {
  if (ec == http::error::end_of_stream || ec == asio::error::eof ||
      ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
      ec == http::error::partial_message || !socket_.is_open()) {
    Close();
    return;
  }
  busy_ = true;
  if (ec == http::error::body_limit) {
    Reply(413,
          EncodeError(absl::StrCat("request body is larger than the limit of ",
                                   server_->options().max_body_bytes, " bytes")),
          kJson, -1, /*close=*/true);
    return;
  }
  if (ec == http::error::header_limit) {
    Reply(431, EncodeError("request header fields are too large"), kJson, -1, /*close=*/true);
    return;
  }
  Reply(400, EncodeError(absl::StrCat("malformed HTTP request: ", ec.message())), kJson, -1,
        /*close=*/true);
}

void Session::OnRequest() {
  busy_ = true;
  arrival_us_ = RealClock::Get()->NowMicros();
  request_ = parser_->release();
  Route();
}

void Session::Route() {
  const std::vector<std::string_view> path = SplitPath(ToStd(request_.target()));
  const http::verb method = request_.method();
  ServingCore* core = server_->core();
  auto wrong_method = [&](std::string_view allowed) {
    Reply(405,
          EncodeError(absl::StrCat("method ", std::string(ToStd(request_.method_string())),
                                   " is not allowed on ", std::string(ToStd(request_.target())),
                                   "; use ", std::string(allowed))),
          kJson);
  };
  auto get_only = [&]() {
    if (method == http::verb::get) return true;
    wrong_method("GET");
    return false;
  };

  if (path.size() >= 1 && path[0] == "v2") {
    if (path.size() == 1) {
      if (get_only()) Reply(200, EncodeServerMetadata(core->GetServerMetadata()), kJson);
      return;
    }
    if (path.size() == 3 && path[1] == "health" && (path[2] == "live" || path[2] == "ready")) {
      if (!get_only()) return;
      const bool live = path[2] == "live";
      if (live ? core->IsLive() : core->IsReady()) {
        Reply(200, std::string(), {});
      } else {
        Reply(503, EncodeError(live ? "server is not live" : "server is not ready"), kJson);
      }
      return;
    }
    if (path.size() >= 3 && path[1] == "models" && !path[2].empty()) {
      const std::string_view model = path[2];
      std::string_view version;
      size_t rest = 3;
      if (path.size() >= 5 && path[3] == "versions" && !path[4].empty()) {
        version = path[4];
        rest = 5;
      }
      if (path.size() == rest) {
        if (!get_only()) return;
        auto metadata = core->GetModelMetadata(std::string(model), std::string(version));
        if (!metadata.ok()) {
          ReplyError(metadata.status());
        } else {
          Reply(200, EncodeModelMetadata(*metadata), kJson);
        }
        return;
      }
      if (path.size() == rest + 1 && path[rest] == "ready") {
        if (!get_only()) return;
        const absl::Status ready = core->ModelReady(std::string(model), std::string(version));
        if (ready.ok()) {
          Reply(200, std::string(), {});
        } else {
          ReplyError(ready);
        }
        return;
      }
      if (path.size() == rest + 1 && path[rest] == "infer") {
        if (method != http::verb::post) {
          wrong_method("POST");
          return;
        }
        HandleInfer(model, version);
        return;
      }
    }
  } else if (path.size() == 1 && path[0] == "metrics") {
    if (!get_only()) return;
    if (server_->options().metrics_text) {
      Reply(200, server_->options().metrics_text(), kPrometheusText);
    } else {
      Reply(404, EncodeError("metrics are not enabled"), kJson);
    }
    return;
  } else if (path.size() == 2 && path[1] == "predict" && !path[0].empty()) {
    if (method != http::verb::post) {
      wrong_method("POST");
      return;
    }
    HandlePredict(path[0]);
    return;
  }
  Reply(404,
        EncodeError(absl::StrCat("no route for ", std::string(ToStd(request_.method_string())), " ",
                                 std::string(ToStd(request_.target())))),
        kJson);
}

template <typename Finish>
void Session::Submit(std::unique_ptr<InferenceRequest> request, Finish finish) {
  // The callback may run on a batcher thread, inline in Infer, or (at worst) after Shutdown
  // started: it only posts to the strand, and the work guard keeps the io threads running
  // until it has.
  server_->core()->Infer(std::move(request), [self = shared_from_this(), finish,
                                              guard =
                                                  server_->MakeWorkGuard(socket_.get_executor())](
                                                 absl::StatusOr<InferenceResponse> result) {
    asio::post(self->socket_.get_executor(), [self, finish, result = std::move(result)]() mutable {
      (self.get()->*finish)(std::move(result));
    });
  });
}

void Session::HandleInfer(std::string_view model, std::string_view version) {
  int64_t header_length = -1;
  const auto header = request_.find(ToBeast(kInferenceHeaderContentLength));
  if (header != request_.end()) {
    if (!absl::SimpleAtoi(ToAbsl(header->value()), &header_length) || header_length < 0) {
      ReplyError(absl::InvalidArgumentError(
          absl::StrCat("Inference-Header-Content-Length must be a non-negative integer, got '",
                       std::string(ToStd(header->value())), "'")));
      return;
    }
  }
  const std::string model_name(model);
  const std::string model_version(version);
  // Only a body without JSON header needs the model's signature to be understood.
  ModelMetadata metadata;
  if (header_length == 0) {
    auto m = server_->core()->GetModelMetadata(model_name, model_version);
    if (!m.ok()) {
      ReplyError(m.status());
      return;
    }
    metadata = *std::move(m);
  }
  auto parsed = ParseInferRequest(request_.body(), header_length, model_name, model_version,
                                  metadata, SpareCapacity(request_.body()));
  if (!parsed.ok()) {
    ReplyError(parsed.status());
    return;
  }
  auto request = std::make_unique<InferenceRequest>(*std::move(parsed));
  request->arrival_us = arrival_us_;
  // Keep what the encoder needs; the inputs go to the core.
  pending_request_.model_name = request->model_name;
  pending_request_.model_version = request->model_version;
  pending_request_.id = request->id;
  pending_request_.outputs = request->outputs;
  pending_request_.binary_data_output = request->binary_data_output;
  request_.body() = std::string();  // release a large body now, not at the next request
  Submit(std::move(request), &Session::FinishInfer);
}

void Session::FinishInfer(absl::StatusOr<InferenceResponse> result) {
  if (!result.ok()) {
    ReplyError(result.status());
    return;
  }
  EncodedBody encoded = EncodeInferResponse(*result, pending_request_);
  const bool binary = encoded.json_length >= 0;
  Reply(200, std::move(encoded.body), binary ? kOctetStream : kJson, encoded.json_length);
}

void Session::HandlePredict(std::string_view model) {
  auto metadata = server_->core()->GetModelMetadata(std::string(model), "");
  if (!metadata.ok()) {
    ReplyError(metadata.status());
    return;
  }
  auto parsed = ParseClipperPredict(request_.body(), *metadata, SpareCapacity(request_.body()));
  if (!parsed.ok()) {
    ReplyError(parsed.status());
    return;
  }
  pending_query_ = *std::move(parsed);
  pending_query_id_ = server_->TakeQueryIds(pending_query_.rows);
  auto request = std::make_unique<InferenceRequest>(std::move(pending_query_.request));
  pending_query_.request = InferenceRequest();
  request->arrival_us = arrival_us_;
  request_.body() = std::string();  // release a large body now, not at the next request
  Submit(std::move(request), &Session::FinishPredict);
}

void Session::FinishPredict(absl::StatusOr<InferenceResponse> result) {
  if (!result.ok()) {
    ReplyError(result.status());
    return;
  }
  Reply(200, EncodeClipperResponse(*result, pending_query_, pending_query_id_), kJson);
}

void Session::Reply(unsigned status, std::string body, std::string_view content_type,
                    int64_t json_length, bool close) {
  response_ = {};
  response_.result(status);
  response_.version(request_.version() == 10 ? 10 : 11);
  if (!content_type.empty()) {
    response_.set(http::field::content_type, ToBeast(content_type));
  }
  if (json_length >= 0) {
    response_.set(ToBeast(kInferenceHeaderContentLength), std::to_string(json_length));
  }
  if (status == 405) {
    response_.set(http::field::allow,
                  request_.target().ends_with("/infer") || request_.target().ends_with("/predict")
                      ? "POST"
                      : "GET");
  }
  // A read error leaves request_ from the previous exchange; only a parsed request may keep the
  // connection alive.
  const bool keep_alive = !close && request_.keep_alive();
  response_.keep_alive(keep_alive);
  response_.body() = std::move(body);
  response_.prepare_payload();
  http::async_write(socket_, response_,
                    [self = shared_from_this(), close_after = !keep_alive, drain = close](
                        beast::error_code ec, size_t) { self->OnWrite(close_after, drain, ec); });
}

void Session::OnWrite(bool close, bool drain, beast::error_code ec) {
  response_.body() = std::string();
  if (ec) {
    Close();
    return;
  }
  if (!close) {
    DoRead();
    return;
  }
  beast::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
  if (drain) {
    Drain();
  } else {
    Close();
  }
}

// Reads and discards what the client still sends until it closes, the cap, or the timeout.
void Session::Drain() {
  if (!drain_buffer_) {
    drain_buffer_ = std::make_unique<std::array<char, 16384>>();
    drain_timer_.expires_after(kDrainTimeout);
    drain_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->Close();
    });
  }
  socket_.async_read_some(asio::buffer(*drain_buffer_),
                          [self = shared_from_this()](beast::error_code ec, size_t n) {
                            self->drained_bytes_ += n;
                            if (ec || self->drained_bytes_ > kMaxDrainBytes) {
                              self->Close();
                            } else {
                              self->Drain();
                            }
                          });
}

void Session::Close() {
  drain_timer_.cancel();
  if (!socket_.is_open()) return;
  beast::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

absl::Status HttpServerImpl::Start() {
  const HttpServerOptions& o = options_;
  if (o.port < 0 || o.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("http port ", o.port, " is not in 0..65535"));
  }
  if (o.num_threads < 1 || o.num_threads > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("http num_threads ", o.num_threads, " is not in 1..256"));
  }
  if (o.max_body_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("http max_body_bytes ", o.max_body_bytes, " must be positive"));
  }
  if (core_ == nullptr) return absl::InvalidArgumentError("http server needs a serving core");

  beast::error_code ec;
  tcp::endpoint endpoint;
  const asio::ip::address address = asio::ip::make_address(o.host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, static_cast<uint16_t>(o.port));
  } else {
    tcp::resolver resolver(*iocs_[0]);
    auto results = resolver.resolve(o.host, std::to_string(o.port), ec);
    if (ec || results.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("http host '", o.host, "' does not resolve: ", ec.message()));
    }
    endpoint = results.begin()->endpoint();
  }
  const std::string where = absl::StrCat(o.host, ":", o.port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", where, ": ", ec.message()));
  }
  port_ = acceptor_.local_endpoint(ec).port();

  for (auto& ioc : iocs_) work_.push_back(asio::make_work_guard(*ioc));
  DoAccept();
  threads_.reserve(iocs_.size());
  for (auto& ioc : iocs_) {
    threads_.emplace_back([ctx = ioc.get()] { ctx->run(); });
  }
  return absl::OkStatus();
}

void HttpServerImpl::DoAccept() {
  asio::io_context& target = *iocs_[next_ioc_++ % iocs_.size()];
  acceptor_.async_accept(
      asio::make_strand(target),
      [this](beast::error_code ec, tcp::socket socket) { OnAccept(ec, std::move(socket)); });
}

void HttpServerImpl::OnAccept(beast::error_code ec, tcp::socket socket) {
  if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
  if (!ec && !stopping()) {
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto session = std::make_shared<Session>(std::move(socket), this);
    {
      absl::MutexLock lock(&mu_);
      // Forget closed connections now and then so the list stays as long as the open ones.
      if (sessions_.size() >= 64 && (sessions_.size() & (sessions_.size() - 1)) == 0) {
        std::erase_if(sessions_, [](const std::weak_ptr<Session>& s) { return s.expired(); });
      }
      sessions_.push_back(session);
    }
    session->Start();
  }
  // Errors such as running out of file descriptors affect one accept; keep listening.
  DoAccept();
}

void HttpServerImpl::StopAccepting() {
  // The acceptor is not thread-safe: close it on its strand. Callers outside the io threads wait
  // for that, so that no connection is accepted once this returns.
  auto done = std::make_shared<absl::Notification>();
  asio::post(acceptor_.get_executor(), [this, done] {
    beast::error_code ignored;
    acceptor_.close(ignored);
    done->Notify();
  });
  if (!threads_.empty() && !InIoThread()) {
    done->WaitForNotification();
  }
}

void HttpServerImpl::Shutdown() {
  std::vector<std::shared_ptr<Session>> open;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    stopping_.store(true, std::memory_order_release);
    for (const auto& weak : sessions_) {
      if (auto s = weak.lock()) open.push_back(std::move(s));
    }
    sessions_.clear();
  }
  if (threads_.empty()) return;  // never started
  StopAccepting();
  for (const auto& s : open) s->CloseIfIdle();
  open.clear();
  work_.clear();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(const HttpServerOptions& options,
                                                               ServingCore* core) {
  auto impl = std::make_unique<HttpServerImpl>(options, core);
  if (absl::Status s = impl->Start(); !s.ok()) return s;
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<HttpServerImpl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Shutdown(); }

int HttpServer::port() const { return impl_->port(); }

void HttpServer::StopAccepting() { impl_->StopAccepting(); }

void HttpServer::Shutdown() { impl_->Shutdown(); }

}  // namespace ferry::agent
