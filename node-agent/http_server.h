// The node agent's HTTP/1.1 front end: the KServe v2 REST protocol (JSON and the binary tensor
// data extension), a Clipper-style predict endpoint and the Prometheus /metrics page, over
// Boost.Beast. Routes:
//   GET  /v2/health/live, /v2/health/ready, /v2
//   GET  /v2/models/{m}[/versions/{v}], /v2/models/{m}[/versions/{v}]/ready
//   POST /v2/models/{m}[/versions/{v}]/infer
//   POST /{m}/predict                       (Clipper: {"input": X} or {"input_batch": [...]})
//   GET  /metrics                           (text/plain; version=0.0.4)
// Errors answer {"error": "..."} with the status HttpStatusFor gives.
//
// Threading: one io_context run by `num_threads` threads; each connection is served on its own
// strand, one request at a time (keep-alive, no pipelining). Inference completes asynchronously:
// the serving core's callback may run on any thread and only posts the response back to the
// connection's strand.
//
// Every request handler is an error boundary: an exception (std::bad_alloc included) answers
// 500 with its message and the server keeps serving.
#ifndef FERRY_NODE_AGENT_HTTP_SERVER_H_
#define FERRY_NODE_AGENT_HTTP_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "node-agent/byte_budget.h"
#include "node-agent/serving_core.h"

namespace ferry::agent {

struct HttpServerOptions {
  // Address to listen on: an IP literal ("127.0.0.1", "0.0.0.0", "::") or a resolvable name.
  std::string host = "127.0.0.1";
  int port = 8000;  // 0 = an ephemeral port; see HttpServer::port()
  int num_threads = 2;
  // Larger request bodies are answered 413 and the connection is closed.
  int64_t max_body_bytes = int64_t{64} << 20;
  // Request bytes in flight, shared with the gRPC server; not owned, must outlive the server.
  // A body is charged from its Content-Length before it is read (a chunked one as it arrives)
  // until the request is answered; one that does not fit is answered 429 at once and the
  // connection closed. nullptr: no budget.
  ByteBudget* byte_budget = nullptr;
  // Open connections beyond this are accepted and closed at once (after a best-effort 503).
  int max_connections = 10000;
  // Slow or idle clients are cut off (the connection is closed without an answer) when a phase
  // takes longer than its limit: the request header from the first byte (or from the accept)
  // to its end; the body, as time without a byte arriving; the wait for the next request on a
  // kept-alive connection; writing a response.
  int64_t header_timeout_ms = 10'000;
  int64_t body_timeout_ms = 10'000;
  int64_t idle_timeout_ms = 60'000;
  int64_t write_timeout_ms = 30'000;
  // When accept fails for want of file descriptors (EMFILE/ENFILE), the next try waits this
  // long instead of spinning on a listening socket that stays readable.
  int64_t accept_backoff_ms = 50;
  // Renders the Prometheus text exposition for GET /metrics; called on an io thread, must be
  // thread-safe. Empty: /metrics answers 404.
  std::function<std::string()> metrics_text;
};

// OK, or InvalidArgument naming the first option out of range.
absl::Status ValidateHttpServerOptions(const HttpServerOptions& options);

class HttpServerImpl;

class HttpServer {
 public:
  // Binds, listens and starts the io threads. `core` is not owned and must outlive the server.
  // Errors: InvalidArgument (bad options: see ValidateHttpServerOptions), Unavailable (the
  // address cannot be bound, e.g. the port is taken).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Create(const HttpServerOptions& options,
                                                            ServingCore* core);
  ~HttpServer();  // calls Shutdown()

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The port actually listened on (useful with options.port = 0).
  int port() const;

  // Closes the listening socket; open connections keep being served. Connections still in the
  // kernel's backlog are refused. Idempotent; when called outside the io threads, returns once
  // the socket is closed.
  void StopAccepting();

  // For after the core has drained: stops accepting, closes idle connections, lets connections
  // with a request in flight finish writing their response until `deadline` and then closes
  // every connection still open (so a client that never reads its response cannot hold the
  // server), and joins the io threads. Blocks until every Infer call this server made has been
  // answered by the core. Idempotent; later calls return at once.
  void Shutdown(absl::Time deadline = absl::InfiniteFuture());

  // Open connections now (a snapshot; for tests and metrics).
  int open_connections() const;

 private:
  explicit HttpServer(std::unique_ptr<HttpServerImpl> impl);
  std::unique_ptr<HttpServerImpl> impl_;
};

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_HTTP_SERVER_H_
