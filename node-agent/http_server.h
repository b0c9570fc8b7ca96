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
#ifndef FERRY_NODE_AGENT_HTTP_SERVER_H_
#define FERRY_NODE_AGENT_HTTP_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "node-agent/serving_core.h"

namespace ferry::agent {

struct HttpServerOptions {
  // Address to listen on: an IP literal ("127.0.0.1", "0.0.0.0", "::") or a resolvable name.
  std::string host = "127.0.0.1";
  int port = 8000;  // 0 = an ephemeral port; see HttpServer::port()
  int num_threads = 2;
  // Larger request bodies are answered 413 and the connection is closed.
  int64_t max_body_bytes = int64_t{64} << 20;
  // Renders the Prometheus text exposition for GET /metrics; called on an io thread, must be
  // thread-safe. Empty: /metrics answers 404.
  std::function<std::string()> metrics_text;
};

class HttpServerImpl;

class HttpServer {
 public:
  // Binds, listens and starts the io threads. `core` is not owned and must outlive the server.
  // Errors: InvalidArgument (bad options), Unavailable (the address cannot be bound, e.g. the
  // port is taken).
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
  // with a request in flight finish writing their response and then closes them, and joins the
  // io threads. Blocks until every Infer call this server made has been answered by the core.
  // Idempotent.
  void Shutdown();

 private:
  explicit HttpServer(std::unique_ptr<HttpServerImpl> impl);
  std::unique_ptr<HttpServerImpl> impl_;
};

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_HTTP_SERVER_H_
