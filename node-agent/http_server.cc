#include "node-agent/http_server.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <exception>
#include <optional>
#include <string_view>
#include <thread>
#include <type_traits>
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
#include "node-agent/clipper_codec.h"
#include "node-agent/embed_api.h"
#include "node-agent/kserve_codec.h"
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
// Bodies at least this large are parsed, and responses encoded, on the worker threads: tens of
// MiB take long enough to hold up every other connection of an io thread (health checks too).
constexpr size_t kOffloadBytes = size_t{1} << 20;

size_t OutputBytes(const InferenceResponse& response) {
  size_t bytes = 0;
  for (const Tensor& t : response.outputs) bytes += t.data.size() + t.bytes.total_bytes();
  return bytes;
}
// What a connection beyond --max-connections gets before it is closed (best effort: it is sent
// without waiting, and a client that already sent its request may see a reset instead).
constexpr std::string_view kTooManyConnections =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    "Content-Length: 54\r\nConnection: close\r\n\r\n"
    "{\"error\":\"the agent has too many open connections\"}\n";

// Accept errors that mean "out of descriptors or kernel memory": the listening socket stays
// readable, so retrying at once would spin.
bool IsResourceShortage(const beast::error_code& ec) {
  return ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
         ec == asio::error::no_memory || ec == boost::system::errc::too_many_files_open_in_system;
}

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
        acceptor_(asio::make_strand(*iocs_[0])),
        accept_timer_(acceptor_.get_executor()),
        workers_(static_cast<size_t>(std::max(1, options.num_threads / 2))) {}

  absl::Status Start();
  int port() const { return port_; }
  void StopAccepting();
  void Shutdown(absl::Time deadline);
  int open_connections() {
    absl::MutexLock lock(&mu_);
    return open_connections_;
  }
  // Called by every Session's destructor.
  void SessionClosed() {
    absl::MutexLock lock(&mu_);
    --open_connections_;
  }
  // A lease on the agent's byte budget (an unlimited one when there is none).
  ByteBudget::Lease NewLease() const {
    return options_.byte_budget != nullptr ? options_.byte_budget->EmptyLease()
                                           : ByteBudget::Lease();
  }

  const HttpServerOptions& options() const { return options_; }
  ServingCore* core() const { return core_; }
  bool stopping() const { return stopping_.load(std::memory_order_acquire); }
  int64_t TakeQueryIds(int64_t n) { return next_query_id_.fetch_add(n); }
  // For work too long for an io thread (see Session::Offload).
  asio::thread_pool& workers() { return workers_; }
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
  // Writes kTooManyConnections without blocking and closes.
  static void RefuseConnection(tcp::socket socket);
  std::vector<std::shared_ptr<Session>> OpenSessions();

  const HttpServerOptions options_;
  ServingCore* const core_;
  // Declared first: everything below holds handles into it and must be destroyed before it.
  std::vector<std::unique_ptr<asio::io_context>> iocs_;
  tcp::acceptor acceptor_;           // on iocs_[0]
  asio::steady_timer accept_timer_;  // the EMFILE back-off; on the acceptor's strand
  std::vector<WorkGuard> work_;
  size_t next_ioc_ = 0;  // touched only on the acceptor's strand
  std::vector<std::thread> threads_;
  // After iocs_: destroyed first, with any job (and the session it holds) still queued.
  asio::thread_pool workers_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> next_query_id_{0};

  absl::Mutex mu_;
  std::vector<std::weak_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  int open_connections_ ABSL_GUARDED_BY(mu_) = 0;  // Sessions alive
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

// One connection. Lives as long as a handler (read, write, timer, pending inference) holds it.
// Every member is touched only on the connection's io thread (its "strand": one thread runs
// each io_context, so the socket's executor serialises the handlers).
//
// Phases and their limits (options): reading a request header (header_timeout_ms, counted from
// the accept or from the first byte of a kept-alive connection's next request), its body
// (body_timeout_ms without a byte arriving), waiting for the next request (idle_timeout_ms),
// writing a response (write_timeout_ms). While the core works on a request no limit applies:
// the core has its own timeouts. A phase over its limit closes the connection.
class Session : public std::enable_shared_from_this<Session> {
 public:
  // The caller has counted the connection in the server's open_connections_.
  Session(tcp::socket socket, HttpServerImpl* server)
      : socket_(std::move(socket)),
        server_(server),
        lease_(server->NewLease()),
        timer_(socket_.get_executor()) {}
  ~Session() { server_->SessionClosed(); }

  void Start() {
    asio::dispatch(socket_.get_executor(), [self = shared_from_this()] { self->DoRead(); });
  }

  // Called at shutdown once the grace period is over: closes the connection whatever it is doing
  // (a response the client does not read, a request still with the core).
  void ForceClose() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->Close(); });
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
  void ReadHeader();
  void OnHeader(beast::error_code ec);
  void ReadBody();
  void ReadBodySome();
  void OnBody(beast::error_code ec);
  void RejectOverBudget();
  void OnReadError(beast::error_code ec);
  void OnRequest();
  void Route();
  void HandleInfer(std::string_view model, std::string_view version);
  void HandlePredict(std::string_view model);
  void FinishInfer(absl::StatusOr<InferenceResponse> result);
  void FinishPredict(absl::StatusOr<InferenceResponse> result);
  // POST /embed (TEI) and POST /v1/embeddings (OpenAI): embed_api.h.
  void HandleEmbed(EmbedApi api);
  void SubmitEmbed(EmbedQuery query);
  void FinishEmbed(absl::StatusOr<InferenceResponse> result);
  // TEI's /embed: the function named by ?model= or X-Ferry-Model, else the only loaded
  // sentence-embedding function.
  absl::StatusOr<std::string> TeiFunction() const;
  void ReplyEmbedError(EmbedApi api, const absl::Status& status) {
    const int code = HttpStatusFor(status);
    Reply(code,
          EncodeEmbedError(api, code,
                           std::string_view(status.message().data(), status.message().size())),
          kJson);
  }

  void ReplyError(const absl::Status& status) {
    Reply(HttpStatusFor(status),
          EncodeError(std::string_view(status.message().data(), status.message().size())), kJson);
  }
  // ReplyError for a request this front end refused before the core saw it: the function's
  // metrics still count it (reason "invalid"), as they would had the function refused it.
  void ReplyRejected(const std::string& model, const std::string& version,
                     const absl::Status& status) {
    server_->core()->RecordRejected(model, version, status);
    ReplyError(status);
  }
  void Reply(unsigned status, std::string body, std::string_view content_type,
             int64_t json_length = -1, bool close = false);
  void OnWrite(bool close, bool drain, beast::error_code ec);
  void Drain();
  void Close();

  // Closes the connection `ms` from now unless re-armed or disarmed first.
  void Arm(int64_t ms);
  void Disarm();

  // Runs `handler` as an error boundary: an exception answers 500 (unless a response is already
  // being written or the core has the request, which answer by themselves) and never reaches
  // the io loop.
  template <typename Handler>
  void Guarded(Handler&& handler);

  // Hands the request to the core; `finish` runs on this connection's strand with the result.
  template <typename Finish>
  void Submit(std::unique_ptr<InferenceRequest> request, Finish finish);

  // then(work()) on the strand; when `bytes` (what `work` processes) is large, `work` runs on
  // the server's worker threads in between. `work` may read the current request's state
  // (request_, pending_request_, pending_query_, pending_embed_: nothing else touches it
  // meanwhile) but no other member; an exception from it reaches the Guarded boundary around
  // `then`.
  template <typename Work, typename Then>
  void Offload(size_t bytes, Work work, Then then);

  tcp::socket socket_;
  HttpServerImpl* const server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  int64_t arrival_us_ = 0;
  // Between a complete request and its written response.
  bool busy_ = false;
  // The first request is timed from the accept; later ones from their first byte.
  bool first_request_ = true;
  bool writing_ = false;  // between async_write and its completion
  // Between Infer (or an offloaded parse) and its result arriving on the strand.
  bool awaiting_core_ = false;
  // The current request's body bytes on the agent's budget; returned once it is answered (or
  // the connection closes).
  ByteBudget::Lease lease_;
  // What encoding the response needs of the request once its inputs went to the core.
  InferenceRequest pending_request_;
  ClipperQuery pending_query_;
  int64_t pending_query_id_ = 0;
  EmbedQuery pending_embed_;
  // The current phase's limit (see Arm); a generation tells a stale expiry from a live one.
  asio::steady_timer timer_;
  uint64_t timer_generation_ = 0;
  // For draining after an error.
  std::unique_ptr<std::array<char, 16384>> drain_buffer_;
  size_t drained_bytes_ = 0;
};

void Session::Arm(int64_t ms) {
  const uint64_t generation = ++timer_generation_;
  timer_.expires_after(std::chrono::milliseconds(ms));
  timer_.async_wait([self = shared_from_this(), generation](beast::error_code ec) {
    // Closing the socket makes the phase's pending operation complete with an error, which
    // ends the session.
    if (!ec && generation == self->timer_generation_) self->Close();
  });
}

void Session::Disarm() {
  ++timer_generation_;
  timer_.cancel();
}

template <typename Handler>
void Session::Guarded(Handler&& handler) {
  std::string what;
  try {
    handler();
    return;
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
    what = "unknown exception";
  }
  try {
    if (writing_ || awaiting_core_) return;
    busy_ = true;
    Reply(500, EncodeError(absl::StrCat("internal error: ", what)), kJson, -1, /*close=*/true);
  } catch (...) {
    Close();  // not even an error response could be made (out of memory)
  }
}

void Session::DoRead() {
  busy_ = false;
  lease_.Reset();
  if (server_->stopping()) {
    Close();
    return;
  }
  parser_.emplace();
  parser_->body_limit(static_cast<uint64_t>(server_->options().max_body_bytes));
  if (first_request_ || buffer_.size() > 0) {
    first_request_ = false;
    ReadHeader();
    return;
  }
  // A kept-alive connection: it may stay quiet for the idle limit; the header limit starts with
  // its next byte.
  Arm(server_->options().idle_timeout_ms);
  socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
    if (ec) {
      self->Close();
    } else {
      self->ReadHeader();
    }
  });
}

void Session::ReadHeader() {
  Arm(server_->options().header_timeout_ms);
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
    Disarm();
    OnRequest();
    return;
  }
  // The body is charged to the agent's budget before a byte of it is read (the parser has
  // already refused a Content-Length over the body limit). A chunked one is charged as it
  // arrives (OnBody).
  if (const auto length = parser_->content_length();
      length && !lease_.TryGrow(static_cast<int64_t>(*length))) {
    RejectOverBudget();
    return;
  }
  // curl sends "Expect: 100-continue" for bodies over 1 KiB and waits a second for the go-ahead.
  const auto& header = parser_->get();
  if (header.version() >= 11) {
    const auto expect = header.find(http::field::expect);
    if (expect != header.end() && absl::EqualsIgnoreCase(ToAbsl(expect->value()), "100-continue")) {
      Arm(server_->options().write_timeout_ms);
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
  ReadBodySome();
}

// The body is read piece by piece so that its limit is on progress (a slow but steady upload
// passes, a stalled one does not) and a chunked body is charged as it grows.
void Session::ReadBodySome() {
  Arm(server_->options().body_timeout_ms);
  http::async_read_some(
      socket_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, size_t) { self->OnBody(ec); });
}

void Session::OnBody(beast::error_code ec) {
  if (ec) {
    OnReadError(ec);
    return;
  }
  if (!parser_->content_length()) {
    // What the growing string holds, not its size: that is the memory it takes.
    const auto held = static_cast<int64_t>(parser_->get().body().capacity());
    if (held > lease_.bytes() && !lease_.TryGrow(held - lease_.bytes())) {
      RejectOverBudget();
      return;
    }
  }
  if (parser_->is_done()) {
    Disarm();
    OnRequest();
    return;
  }
  ReadBodySome();
}

void Session::RejectOverBudget() {
  Disarm();
  busy_ = true;
  lease_.Reset();
  parser_.reset();  // no operation is pending on it; frees a partly read chunked body
  const ByteBudget* budget = server_->options().byte_budget;
  Reply(429,
        EncodeError(absl::StrCat("the agent holds too many request bytes (",
                                 budget != nullptr ? budget->capacity_bytes() : 0,
                                 " in flight at most); retry later")),
        kJson, -1, /*close=*/true);
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
  Guarded([this] {
    request_ = parser_->release();
    Route();
  });
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
  } else if ((path.size() == 1 && path[0] == "embed") ||
             (path.size() == 2 && path[0] == "v1" && path[1] == "embeddings")) {
    if (method != http::verb::post) {
      wrong_method("POST");
      return;
    }
    HandleEmbed(path.size() == 1 ? EmbedApi::kTei : EmbedApi::kOpenAi);
    return;
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
  // until it has. The session must die before the guard does (members are destroyed in reverse
  // order): otherwise run() may return, and the io_context go, while a batcher thread still
  // holds the last reference to a session whose socket belongs to it.
  struct Completion {
    WorkGuard guard;
    std::shared_ptr<Session> session;
    // Infer answers exactly once, unless it throws: then whoever sets this first answers.
    std::atomic<bool> answered{false};
  };
  auto completion = std::make_shared<Completion>(server_->MakeWorkGuard(socket_.get_executor()),
                                                 shared_from_this());
  awaiting_core_ = true;
  try {
    server_->core()->Infer(
        std::move(request), [completion, finish](absl::StatusOr<InferenceResponse> result) {
          if (completion->answered.exchange(true)) return;
          const std::shared_ptr<Session>& self = completion->session;
          try {
            asio::post(self->socket_.get_executor(),
                       [self, finish, result = std::move(result)]() mutable {
                         self->awaiting_core_ = false;
                         self->Guarded([&] { (self.get()->*finish)(std::move(result)); });
                       });
          } catch (...) {
            // Out of memory for the handler: nothing can reach the connection from this thread.
            // It stays open until the client or the shutdown closes it.
          }
        });
  } catch (...) {
    // Infer threw. If it had already answered, that answer is on its way; otherwise the
    // boundary around the handler answers 500.
    if (completion->answered.exchange(true)) return;
    awaiting_core_ = false;
    throw;
  }
}

template <typename Work, typename Then>
void Session::Offload(size_t bytes, Work work, Then then) {
  if (bytes < kOffloadBytes) {
    then(work());
    return;
  }
  using Result = std::invoke_result_t<Work&>;
  // As in Submit: the session dies before the guard that keeps its io thread running.
  struct Job {
    WorkGuard guard;
    std::shared_ptr<Session> session;
  };
  auto job =
      std::make_shared<Job>(server_->MakeWorkGuard(socket_.get_executor()), shared_from_this());
  awaiting_core_ = true;
  asio::post(server_->workers(), [job, work = std::move(work), then = std::move(then)]() mutable {
    std::optional<Result> result;
    std::exception_ptr error;
    try {
      result.emplace(work());
    } catch (...) {
      error = std::current_exception();
    }
    try {
      asio::post(job->session->socket_.get_executor(),
                 [job, then = std::move(then), result = std::move(result), error]() mutable {
                   Session* self = job->session.get();
                   self->awaiting_core_ = false;
                   self->Guarded([&] {
                     if (error) std::rethrow_exception(error);
                     then(*std::move(result));
                   });
                 });
    } catch (...) {
      // Out of memory for the handler: the connection stays open until the client or the
      // shutdown closes it.
    }
  });
}

void Session::HandleInfer(std::string_view model, std::string_view version) {
  int64_t header_length = -1;
  const auto header = request_.find(ToBeast(kInferenceHeaderContentLength));
  if (header != request_.end()) {
    if (!absl::SimpleAtoi(ToAbsl(header->value()), &header_length) || header_length < 0) {
      ReplyRejected(std::string(model), std::string(version),
                    absl::InvalidArgumentError(absl::StrCat(
                        "Inference-Header-Content-Length must be a non-negative integer, got '",
                        std::string(ToStd(header->value())), "'")));
      return;
    }
  }
  const std::string model_name(model);
  const std::string model_version(version);
  // The model comes first: an unknown model is 404 before the body is looked at, and every
  // input's declared shape is checked against its signature before any data is decoded.
  auto metadata = server_->core()->FindModelMetadata(model_name, model_version);
  if (!metadata.ok()) {
    ReplyError(metadata.status());
    return;
  }
  Offload(
      request_.body().size(),
      [this, header_length, model_name, model_version, metadata = *std::move(metadata)] {
        return ParseInferRequest(request_.body(), header_length, model_name, model_version,
                                 *metadata, SpareCapacity(request_.body()));
      },
      [this, model_name, model_version](absl::StatusOr<InferenceRequest> parsed) {
        if (!parsed.ok()) {
          ReplyRejected(model_name, model_version, parsed.status());
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
      });
}

void Session::FinishInfer(absl::StatusOr<InferenceResponse> result) {
  if (!result.ok()) {
    ReplyError(result.status());
    return;
  }
  const size_t bytes = OutputBytes(*result);
  Offload(
      bytes,
      [this, response = *std::move(result)] {
        return EncodeInferResponse(response, pending_request_);
      },
      [this](EncodedBody encoded) {
        const bool binary = encoded.json_length >= 0;
        Reply(200, std::move(encoded.body), binary ? kOctetStream : kJson, encoded.json_length);
      });
}

void Session::HandlePredict(std::string_view model) {
  auto metadata = server_->core()->FindModelMetadata(std::string(model), "");
  if (!metadata.ok()) {
    ReplyError(metadata.status());
    return;
  }
  Offload(
      request_.body().size(),
      [this, metadata = *std::move(metadata)] {
        return ParseClipperPredict(request_.body(), *metadata, SpareCapacity(request_.body()));
      },
      [this, model_name = std::string(model)](absl::StatusOr<ClipperQuery> parsed) {
        if (!parsed.ok()) {
          ReplyRejected(model_name, "", parsed.status());
          return;
        }
        pending_query_ = *std::move(parsed);
        pending_query_id_ = server_->TakeQueryIds(pending_query_.rows);
        auto request = std::make_unique<InferenceRequest>(std::move(pending_query_.request));
        pending_query_.request = InferenceRequest();
        request->arrival_us = arrival_us_;
        request_.body() = std::string();  // release a large body now, not at the next request
        Submit(std::move(request), &Session::FinishPredict);
      });
}

void Session::FinishPredict(absl::StatusOr<InferenceResponse> result) {
  if (!result.ok()) {
    ReplyError(result.status());
    return;
  }
  const size_t bytes = OutputBytes(*result);
  Offload(
      bytes,
      [this, response = *std::move(result)] {
        return EncodeClipperResponse(response, pending_query_, pending_query_id_);
      },
      [this](std::string body) { Reply(200, std::move(body), kJson); });
}

absl::StatusOr<std::string> Session::TeiFunction() const {
  const std::string_view target = ToStd(request_.target());
  if (const size_t q = target.find('?'); q != std::string_view::npos) {
    for (std::string_view rest = target.substr(q + 1); !rest.empty();) {
      const size_t amp = rest.find('&');
      const std::string_view pair = rest.substr(0, amp);
      if (pair.starts_with("model=") && pair.size() > 6) return std::string(pair.substr(6));
      if (amp == std::string_view::npos) break;
      rest.remove_prefix(amp + 1);
    }
  }
  if (const auto h = request_.find("X-Ferry-Model"); h != request_.end() && !h->value().empty()) {
    return std::string(ToStd(h->value()));
  }
  std::vector<std::string> found;
  for (const std::string& name : server_->core()->ListModels()) {
    auto metadata = server_->core()->FindModelMetadata(name, "");
    if (metadata.ok() && (*metadata)->platform == kSentenceEmbeddingPlatform) {
      found.push_back(name);
    }
  }
  if (found.empty()) {
    return absl::NotFoundError(
        "no sentence-embedding function is loaded; name a function with "
        "?model=NAME or the X-Ferry-Model header");
  }
  if (found.size() > 1) {
    std::string names;
    for (const std::string& n : found) absl::StrAppend(&names, names.empty() ? "" : ", ", n);
    return absl::InvalidArgumentError(
        absl::StrCat("several sentence-embedding functions are loaded (", names,
                     "): name one with ?model=NAME or the X-Ferry-Model header"));
  }
  return found[0];
}

void Session::HandleEmbed(EmbedApi api) {
  Offload(
      request_.body().size(),
      [this, api] {
        return api == EmbedApi::kTei
                   ? ParseTeiEmbed(request_.body(), SpareCapacity(request_.body()))
                   : ParseOpenAiEmbeddings(request_.body(), SpareCapacity(request_.body()));
      },
      [this, api](absl::StatusOr<EmbedQuery> parsed) {
        if (!parsed.ok()) {
          // A TEI body does not name the function (the URL, a header or the only one loaded
          // does), so a bad body is still counted on it; an OpenAI body that fails to parse
          // names none.
          if (api == EmbedApi::kTei) {
            if (absl::StatusOr<std::string> name = TeiFunction(); name.ok()) {
              server_->core()->RecordRejected(*name, "", parsed.status());
            }
          }
          ReplyEmbedError(api, parsed.status());
          return;
        }
        SubmitEmbed(*std::move(parsed));
      });
}

void Session::SubmitEmbed(EmbedQuery query) {
  if (query.api == EmbedApi::kTei) {
    absl::StatusOr<std::string> name = TeiFunction();
    if (!name.ok()) {
      ReplyEmbedError(query.api, name.status());
      return;
    }
    query.model = *std::move(name);
  }
  auto metadata = server_->core()->FindModelMetadata(query.model, "");
  if (!metadata.ok()) {
    ReplyEmbedError(query.api, metadata.status());
    return;
  }
  absl::StatusOr<InferenceRequest> request = MakeEmbedRequest(query, **metadata);
  if (!request.ok()) {
    server_->core()->RecordRejected(query.model, "", request.status());
    ReplyEmbedError(query.api, request.status());
    return;
  }
  request->arrival_us = arrival_us_;
  pending_embed_ = std::move(query);
  request_.body() = std::string();  // release a large body now, not at the next request
  Submit(std::make_unique<InferenceRequest>(*std::move(request)), &Session::FinishEmbed);
}

void Session::FinishEmbed(absl::StatusOr<InferenceResponse> result) {
  if (!result.ok()) {
    ReplyEmbedError(pending_embed_.api, result.status());
    return;
  }
  const size_t bytes = OutputBytes(*result);
  Offload(
      bytes,
      [this, response = *std::move(result)] {
        return EncodeEmbedResponse(pending_embed_, response);
      },
      [this](absl::StatusOr<std::string> body) {
        if (!body.ok()) {
          ReplyEmbedError(pending_embed_.api, body.status());
          return;
        }
        pending_embed_.texts.clear();
        Reply(200, *std::move(body), kJson);
      });
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
    response_.set(http::field::allow, request_.target().ends_with("/infer") ||
                                              request_.target().ends_with("/predict") ||
                                              request_.target().starts_with("/embed") ||
                                              request_.target().starts_with("/v1/embeddings")
                                          ? "POST"
                                          : "GET");
  }
  // A read error leaves request_ from the previous exchange; only a parsed request may keep the
  // connection alive.
  const bool keep_alive = !close && request_.keep_alive();
  response_.keep_alive(keep_alive);
  response_.body() = std::move(body);
  response_.prepare_payload();
  // The request is answered: its body (if still held) and its bytes on the budget go now.
  request_.body() = std::string();
  lease_.Reset();
  Arm(server_->options().write_timeout_ms);
  http::async_write(socket_, response_,
                    [self = shared_from_this(), close_after = !keep_alive, drain = close](
                        beast::error_code ec, size_t) { self->OnWrite(close_after, drain, ec); });
  writing_ = true;
}

void Session::OnWrite(bool close, bool drain, beast::error_code ec) {
  writing_ = false;
  Disarm();
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
    Arm(std::chrono::duration_cast<std::chrono::milliseconds>(kDrainTimeout).count());
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
  ++timer_generation_;
  timer_.cancel();
  lease_.Reset();
  if (!socket_.is_open()) return;
  beast::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

absl::Status ValidateHttpServerOptions(const HttpServerOptions& o) {
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
  if (o.max_connections < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("http max_connections ", o.max_connections, " must be positive"));
  }
  // Up to a day: a limit is meant to cut off clients, and larger values overflow the clock.
  constexpr int64_t kMaxTimeoutMs = int64_t{24} * 3600 * 1000;
  for (const auto& [name, value] :
       {std::pair<const char*, int64_t>{"header_timeout_ms", o.header_timeout_ms},
        {"body_timeout_ms", o.body_timeout_ms},
        {"idle_timeout_ms", o.idle_timeout_ms},
        {"write_timeout_ms", o.write_timeout_ms},
        {"accept_backoff_ms", o.accept_backoff_ms}}) {
    if (value < 1 || value > kMaxTimeoutMs) {
      return absl::InvalidArgumentError(
          absl::StrCat("http ", name, " ", value, " is not in 1..", kMaxTimeoutMs));
    }
  }
  return absl::OkStatus();
}

absl::Status HttpServerImpl::Start() {
  const HttpServerOptions& o = options_;
  if (absl::Status s = ValidateHttpServerOptions(o); !s.ok()) return s;
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
    threads_.emplace_back([ctx = ioc.get()] {
      // The last line of defence: handlers catch their own errors, but an exception that still
      // gets here must not end the thread (and with it the process).
      while (true) {
        try {
          ctx->run();
          return;
        } catch (const std::exception& e) {
          std::fprintf(stderr, "ferry-agent: http: error in an io handler: %s\n", e.what());
        } catch (...) {
          std::fprintf(stderr, "ferry-agent: http: unknown error in an io handler\n");
        }
      }
    });
  }
  return absl::OkStatus();
}

void HttpServerImpl::DoAccept() {
  asio::io_context& target = *iocs_[next_ioc_++ % iocs_.size()];
  // Each io_context is run by exactly one thread, so its executor already serialises a
  // connection's handlers: a strand would only add a type-erased hop per handler (profiled at
  // about 3-5 us of CPU per request, docs/perf.md "Seed figures re-run").
  acceptor_.async_accept(target.get_executor(), [this](beast::error_code ec, tcp::socket socket) {
    OnAccept(ec, std::move(socket));
  });
}

void HttpServerImpl::OnAccept(beast::error_code ec, tcp::socket socket) {
  if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
  if (IsResourceShortage(ec)) {
    // Out of descriptors: the pending connection stays in the backlog and the listening socket
    // readable, so accepting again at once would spin. Descriptors come back as connections
    // close; try again shortly.
    accept_timer_.expires_after(std::chrono::milliseconds(options_.accept_backoff_ms));
    accept_timer_.async_wait([this](beast::error_code timer_ec) {
      if (!timer_ec && acceptor_.is_open()) DoAccept();
    });
    return;
  }
  if (!ec && !stopping()) {
    try {
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      bool admit = false;
      {
        absl::MutexLock lock(&mu_);
        admit = open_connections_ < options_.max_connections;
        if (admit) ++open_connections_;  // the Session's destructor takes it back
      }
      if (!admit) {
        RefuseConnection(std::move(socket));
      } else {
        // Made and (on error) destroyed outside mu_, which its destructor takes.
        std::shared_ptr<Session> session;
        try {
          session = std::make_shared<Session>(std::move(socket), this);
        } catch (...) {
          SessionClosed();
          throw;
        }
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
    } catch (const std::exception& e) {
      // Out of memory for one more connection: it is closed (by the socket's destructor).
      std::fprintf(stderr, "ferry-agent: http: cannot take a connection: %s\n", e.what());
    }
  }
  // Other errors (a connection reset before it was accepted) affect one accept; keep listening.
  DoAccept();
}

void HttpServerImpl::RefuseConnection(tcp::socket socket) {
  beast::error_code ignored;
  socket.non_blocking(true, ignored);
  socket.send(asio::buffer(kTooManyConnections.data(), kTooManyConnections.size()), 0, ignored);
  socket.shutdown(tcp::socket::shutdown_both, ignored);
  socket.close(ignored);
}

std::vector<std::shared_ptr<Session>> HttpServerImpl::OpenSessions() {
  std::vector<std::shared_ptr<Session>> open;
  absl::MutexLock lock(&mu_);
  for (const auto& weak : sessions_) {
    if (auto s = weak.lock()) open.push_back(std::move(s));
  }
  return open;
}

void HttpServerImpl::StopAccepting() {
  // The acceptor is not thread-safe: close it on its strand. Callers outside the io threads wait
  // for that, so that no connection is accepted once this returns.
  auto done = std::make_shared<absl::Notification>();
  asio::post(acceptor_.get_executor(), [this, done] {
    beast::error_code ignored;
    acceptor_.close(ignored);
    accept_timer_.cancel();
    done->Notify();
  });
  if (!threads_.empty() && !InIoThread()) {
    done->WaitForNotification();
  }
}

void HttpServerImpl::Shutdown(absl::Time deadline) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    stopping_.store(true, std::memory_order_release);
  }
  if (threads_.empty()) return;  // never started
  StopAccepting();
  // Sessions are destroyed outside mu_ (their destructor takes it): `open` is cleared unlocked.
  std::vector<std::shared_ptr<Session>> open = OpenSessions();
  for (const auto& s : open) s->CloseIfIdle();
  open.clear();
  {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithDeadline(absl::Condition(
                              +[](int* n) { return *n == 0; }, &open_connections_),
                          deadline);
  }
  // The grace period is over: whatever is still open (a client that does not read its
  // response, a request still with the core) is closed now.
  open = OpenSessions();
  for (const auto& s : open) s->ForceClose();
  open.clear();
  work_.clear();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  // Every job was holding a work guard of an io thread: none is left.
  workers_.join();
  absl::MutexLock lock(&mu_);
  sessions_.clear();
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

void HttpServer::Shutdown(absl::Time deadline) { impl_->Shutdown(deadline); }

int HttpServer::open_connections() const { return impl_->open_connections(); }

}  // namespace ferry::agent
