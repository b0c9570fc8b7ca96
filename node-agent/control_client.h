// The node agent's side of the control plane: one bidirectional AgentService.Connect stream
// that registers the node (inventory, labels, price, data-plane addresses), sends heartbeats with
// load and replica states, and receives the node's desired replica set, which a reconciler
// applies to the AgentCore (load, reload on a new generation, unload) the way a kubelet does.
// After a replica becomes ready it is profiled (batch sizes 1, 2, 4, ... up to maxBatchSize on
// synthetic inputs of its signature) and the curve is sent up.
//
// When the control plane is unreachable the agent keeps serving what it has and reconnects with
// exponential back-off (100 ms doubling to max_backoff_ms, with jitter); on reconnect it
// re-registers and reports its replicas so that a restarted control plane adopts them.
//
// Several replicas of one function on one node share one loaded function (the data plane
// addresses functions by name); a function is unloaded when its last replica is.
// Replicas placed on a fake GPU (--testonly-fake-gpu) run on the CPU.
#ifndef FERRY_NODE_AGENT_CONTROL_CLIENT_H_
#define FERRY_NODE_AGENT_CONTROL_CLIENT_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "node-agent/inventory.h"
#include "node-agent/serving_core_impl.h"

namespace ferry::agent {

struct ControlClientOptions {
  std::string control_address;  // host:port of ferry-control
  std::string node_name;        // unique in the cluster
  std::map<std::string, std::string> labels;
  double price_per_hour = 0;
  std::string http_address;  // host:port clients use for this agent's data plane
  std::string grpc_address;  // "" when gRPC is off
  NodeInventory inventory;
  AgentCore* core = nullptr;  // not owned; must outlive the client
  bool profile = true;        // profile replicas when they become ready
  int64_t max_backoff_ms = 2000;
  std::function<void(const std::string&)> log;  // one line per event; may be empty
};

// Thread-safe. Owns three threads (stream, heartbeats, reconciler) until Stop.
class ControlClient {
 public:
  static absl::StatusOr<std::unique_ptr<ControlClient>> Create(const ControlClientOptions& options);
  ~ControlClient();

  // Closes the stream and joins the threads; loaded functions stay loaded. Idempotent; blocks.
  void Stop();

 private:
  class Impl;
  explicit ControlClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_CONTROL_CLIENT_H_
