// The control plane's data-plane gateway: an HTTP/1.1 reverse proxy in front of the node agents.
// It serves the same routes as an agent (KServe v2 JSON and binary, Clipper predict, health) and
// forwards each model request, bytes unchanged, to a ready replica of the function named in the
// path; the agent's answer goes back unchanged (status, Content-Type,
// Inference-Header-Content-Length, body). It never decodes tensors.
//
//   GET  /v2/health/live                    200 while the gateway runs
//   GET  /v2/health/ready                   200 once it has a route table, else 503
//   GET  /v2                                 gateway metadata
//   GET  /v2/models/{m}[/versions/{v}][/ready]      forwarded
//   POST /v2/models/{m}[/versions/{v}]/infer        forwarded
//   POST /{m}/predict                                forwarded (Clipper)
//   GET  /metrics                            Prometheus text from options.metrics_text
//
// Holding (scale from zero). A request for a function with no ready route asks
// options.demand_replica for one; when it says a replica is on its way, the request is held (not
// answered) until the function's first ready route arrives and is then forwarded, or answered 503
// with the reason after hold_timeout_ms. At most hold_max_requests are held at once; beyond that
// 503 at once. Held requests keep their connection and body; nothing else is queued per request.
//
// Choice: power of two random choices on the requests outstanding per replica address (replicas
// of one function on one node share the node's data-plane address and are one choice). Retry:
// when a request fails before any byte of the answer arrived because the connection could not be
// made or broke (refused, reset, closed), it is sent once more to another replica: inference is
// assumed idempotent. A failure on a kept-alive pooled connection is first retried on a fresh
// connection to the same replica (the agent may have closed an idle connection). The failed
// address is avoided for `eject_ms` or until the route table changes. Timeouts are not retried:
// the replica may still be running the request.
//
// Errors are JSON {"error": "..."}: 404 for a function the control plane does not know, 503 (with
// the reason, e.g. the pending reasons) for a known function without a ready replica or when
// every try failed, 504 when the replica did not answer in time, 400/405/413 for bad requests,
// 500 if a handler throws (the gateway keeps serving).
//
// Threading: `num_threads` io threads, each with its own io_context; a client connection and the
// upstream connections serving its requests live on one of them (no strands, no thread per
// request). Keep-alive connection pools are per io thread and replica address. Route updates may
// come from any thread.
#ifndef FERRY_CONTROL_PLANE_GATEWAY_H_
#define FERRY_CONTROL_PLANE_GATEWAY_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "ferry_control.pb.h"

namespace ferry::control {

class Controller;

struct GatewayOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0 = an ephemeral port; see Gateway::port()
  int num_threads = 2;
  // Larger request bodies are answered 413 (the connection is closed).
  int64_t max_body_bytes = int64_t{64} << 20;
  // Larger upstream answers fail the request with 502.
  int64_t max_response_bytes = int64_t{256} << 20;
  // Client connections beyond this get a best-effort 503 and are closed.
  int max_connections = 10000;
  // Client side: reading the request header; the body (per read); idle keep-alive wait; writing.
  int64_t header_timeout_ms = 10'000;
  int64_t body_timeout_ms = 10'000;
  int64_t idle_timeout_ms = 60'000;
  int64_t write_timeout_ms = 30'000;
  // Upstream side: connecting to a replica; the whole exchange once connected (504 when over).
  int64_t connect_timeout_ms = 1'000;
  int64_t upstream_timeout_ms = 60'000;
  // Idle kept-alive connections kept per io thread and replica address.
  int max_idle_per_upstream = 64;
  // How long an address that failed a connection is avoided (unless it is the only choice).
  int64_t eject_ms = 2'000;
  // For a function without a ready route: nullopt when the function is unknown (404), else why
  // it has no ready replica (503). Called on an io thread, only on that path; thread-safe.
  // Empty: every function without routes is unknown.
  std::function<std::optional<std::string>(const std::string& function)> why_unroutable;
  // For a function without a ready route: asks for a replica (scale from zero); true = one is
  // ready or coming, hold the request. Called on an io thread; thread-safe; may block briefly.
  // Empty: never hold.
  std::function<bool(const std::string& function)> demand_replica;
  int hold_max_requests = 1000;
  int64_t hold_timeout_ms = 30'000;
  // GET /metrics body (Prometheus text format 0.0.4); empty: 404. Called on an io thread.
  std::function<std::string()> metrics_text;
};

class GatewayImpl;

class Gateway {
 public:
  // Binds, listens and starts the io threads. Errors: InvalidArgument (options), Unavailable
  // (cannot bind).
  static absl::StatusOr<std::unique_ptr<Gateway>> Create(const GatewayOptions& options);
  ~Gateway();  // Shutdown()

  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  int port() const;

  // Applies a RouteUpdate (snapshot or delta, as WatchRoutes sends them). Only ready routes
  // with an http_address receive traffic. Thread-safe; non-blocking apart from a short mutex.
  void ApplyRouteUpdate(const v1::RouteUpdate& update);

  // Stops accepting, closes connections, joins the io threads. Idempotent.
  void Shutdown();

  struct Stats {
    int64_t requests = 0;            // forwarded requests answered (any status)
    int64_t retries = 0;             // second tries on another replica
    int64_t fresh_reconnects = 0;    // pooled connection failed, retried on a fresh one
    int64_t connections_opened = 0;  // upstream
    int64_t held = 0;                // requests held for a replica (scale from zero), in total
    int64_t held_now = 0;            // held at this moment
    int64_t hold_timeouts = 0;       // held requests answered 503 after hold_timeout_ms
    int64_t hold_rejected = 0;       // answered 503 because hold_max_requests were held
  };
  Stats stats() const;

 private:
  explicit Gateway(std::unique_ptr<GatewayImpl> impl);
  std::unique_ptr<GatewayImpl> impl_;
};

// Feeds a Gateway from a Controller in the same process: a thread that waits for route changes
// (Controller::WaitForRouteChange) and applies them. Stop() (or the destructor) joins it within
// one wait (<= 200 ms).
class RouteFollower {
 public:
  // Neither is owned; both must outlive the follower.
  RouteFollower(Controller* controller, Gateway* gateway);
  ~RouteFollower();
  void Stop();

 private:
  void Run();
  Controller* const controller_;
  Gateway* const gateway_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace ferry::control

#endif  // FERRY_CONTROL_PLANE_GATEWAY_H_
