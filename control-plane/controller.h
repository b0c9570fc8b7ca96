// The control plane's brain: the function registry (applied manifests, persisted in the
// StateStore), the node registry (agents with leases), replica placement and reconciliation, and
// the route table with its watchers. Transport-free: the gRPC services in service.h translate
// calls; tests drive it directly with a FakeClock.
//
// Leases. An agent registers on its stream and heartbeats every heartbeat_ms. A node silent for
// lease_ms, or whose stream ends, is lost: its replicas are released and re-placed on other nodes
// and its routes withdrawn, all in the next Tick. A lost node that registers again is a fresh
// node with the same id.
//
// Restart. Create() reloads every function and profile from the store. Agents that reconnect
// report the replicas they still serve, and the controller adopts them (same ids, same nodes)
// instead of placing new ones; for one lease after a restart with functions in the store, no new
// replicas are placed, so that agents have time to come back first.
//
// Autoscaling. Every autoscale_interval_ms (on Tick) each function's autoscaler
// (autoscaler.h) is fed the requests that arrived at its replicas since the last evaluation (from
// the agents' requests_total counters) and their in-flight requests, and states the function's
// need: the throughput within the SLO its replicas must provide (ScaleDecision::need_rps, never
// below the SLO's minRps). Reconcile covers it with whole replicas, each placed with the need
// still uncovered as PlacementHints::needed_rps, so that placement chooses the hardware and the
// count together (two T4 replicas or one A10G); the count stays within [minReplicas,
// maxReplicas] (replica_target.h), and the desired count shown is the replicas placed plus those
// placement could not place yet. A
// scale-down drains: the replica chosen turns DRAINING (its route stops being ready, so the
// gateway and route watchers stop sending to it), stays in its agent's desired set for drain_ms,
// and is then removed (the agent's unload finishes its in-flight requests). A scale-up revives
// draining replicas before placing new ones.
//
// Thread-safe. Every public method may block briefly on the controller's mutex; Apply and
// DeleteFunction also block on a durable store write.
#ifndef FERRY_CONTROL_PLANE_CONTROLLER_H_
#define FERRY_CONTROL_PLANE_CONTROLLER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "control-plane/autoscaler.h"
#include "control-plane/placement.h"
#include "control-plane/replica_target.h"
#include "control-plane/state_store.h"
#include "control-plane/usage.h"
#include "ferry/clock.h"
#include "ferry/manifest.h"
#include "ferry_control.pb.h"

namespace ferry::control {

// The controller's way to talk to one connected agent. Send must not block (queue and return)
// and is called with the controller's mutex held. Thread-safe.
class AgentChannel {
 public:
  virtual ~AgentChannel() = default;
  virtual void Send(const v1::ControlMessage& message) = 0;
};

struct ControllerOptions {
  StateStore* store = nullptr;  // not owned; required
  Clock* clock = nullptr;       // not owned; nullptr = RealClock
  int64_t heartbeat_ms = 500;
  int64_t lease_ms = 2000;
  // Metering (control-plane/usage.h): Unix-time clock for usage rows (nullptr = system clock;
  // not owned) and how often new usage is written to the store.
  Clock* wall_clock = nullptr;
  int64_t usage_flush_ms = 1000;
  int64_t autoscale_interval_ms = 500;
  // How long a replica being scaled down stays routable-off before its agent unloads it: long
  // enough for route watchers (the gateway follows in-process, in milliseconds) to stop using it.
  int64_t drain_ms = 1000;
};

class Controller {
 public:
  static absl::StatusOr<std::unique_ptr<Controller>> Create(const ControllerOptions& options);

  // --- ControlPlane API ---------------------------------------------------------------------
  // All-or-nothing; InvalidArgument names file and field. Durable when it returns OK.
  absl::StatusOr<v1::ApplyResponse> Apply(const v1::ApplyRequest& request);
  // NotFound when no such function.
  absl::StatusOr<int64_t> DeleteFunction(const std::string& name);
  absl::StatusOr<v1::FunctionStatus> GetFunction(const std::string& name);
  v1::ListFunctionsResponse ListFunctions();
  v1::ListNodesResponse ListNodes();
  // `function` "" = all.
  v1::GetRoutesResponse GetRoutes(const std::string& function);

  // Route watching: blocks until the route revision exceeds `after_revision` or `timeout_ms`
  // passes (real time). Returns the current route revision.
  int64_t WaitForRouteChange(int64_t after_revision, int64_t timeout_ms);
  // The route sets of the functions (matching `function`, "" = all) that changed after
  // `after_revision`; with after_revision < 0, a snapshot of every function that has routes.
  // Also returns the current revision.
  v1::RouteUpdate RouteChangesSince(int64_t after_revision, const std::string& function);

  // --- Agents -------------------------------------------------------------------------------
  // Registers (or re-registers) the node and sends Registered, then its desired replicas, on
  // `channel` (not owned; valid until AgentDisconnected(session) returns). Returns the session.
  absl::StatusOr<int64_t> RegisterAgent(const v1::Register& registration, AgentChannel* channel);
  // FailedPrecondition when the session is no longer current (the stream should end).
  absl::Status HandleAgentMessage(int64_t session, const v1::AgentMessage& message);
  // The stream ended: the node is lost now (no reconnect grace; an agent that reconnects
  // registers afresh and is told what to run).
  void AgentDisconnected(int64_t session);

  // Expires leases, reconciles replicas to the desired counts, pushes changed desired sets to
  // agents and updates routes. Called periodically (every ~100 ms) by the server; tests call it.
  void Tick();

  // Metered usage (control-plane/usage.h) with each function's SLO cost budget beside it.
  absl::StatusOr<v1::GetUsageResponse> GetUsage(const v1::GetUsageRequest& request);
  // Writes usage not yet in the store (Tick does so every usage_flush_ms; call before exit).
  absl::Status FlushUsage();

  // A request waits for a replica of `function` (the gateway holds it): tell its autoscaler and,
  // when the function has no live replica, scale it from zero now. Returns whether a replica is
  // ready or on its way (false: it cannot be placed; see pending_reasons). NotFound when no such
  // function.
  absl::StatusOr<bool> DemandReplica(const std::string& function);

  int64_t heartbeat_ms() const { return options_.heartbeat_ms; }
  int64_t lease_ms() const { return options_.lease_ms; }

 private:
  struct FunctionRecord {
    FunctionSpec spec;
    Requirements req;
    std::string manifest;  // canonical
    int64_t generation = 0;
    FunctionProfiles profiles;
    std::map<int, std::vector<std::pair<int, double>>> profile_points;  // by kind
    int desired = 0;
    std::vector<std::string> pending_reasons;
    // Autoscaling (see the class comment).
    std::unique_ptr<Autoscaler> scaler;
    int autoscaled = 0;        // the autoscaler's last desired count
    double need_rps = -1;      // its need behind that count; -1 before its first decision
    int64_t arrived = 0;       // requests counted since the last evaluation
    std::string scale_reason;  // of the last change of `autoscaled`
    int64_t scale_changed_us = 0;
    ScaleDecision last_decision;
  };
  struct ReplicaRecord {
    std::string id;
    std::string function;
    int node = -1;  // Cluster index
    int device_index = -1;
    int kind = kCpuKind;
    v1::ReplicaState state = v1::REPLICA_STATE_ASSIGNED;
    std::string message;
    double cost_per_million = 0;
    int64_t in_flight = 0;
    double requests_per_second = 0;
    int64_t draining_until_us = 0;  // != 0: DRAINING, removed at this time
  };
  struct NodeRecord {
    std::string id;
    int index = -1;  // Cluster index
    v1::Register registration;
    v1::LeaseState lease = v1::LEASE_STATE_ACTIVE;
    int64_t last_heartbeat_us = 0;
    int64_t session = 0;
    AgentChannel* channel = nullptr;
    v1::NodeLoad load;
    std::set<std::string> warm;
    std::string sent_fingerprint;  // of the last DesiredReplicas sent
    // Per function on this node (replicas of one function share these counters): the last
    // requests_total seen and the requests in flight.
    std::map<std::string, int64_t> requests_total;
    std::map<std::string, int64_t> in_flight;
  };

  explicit Controller(const ControllerOptions& options);
  absl::Status Load();

  void ReconcileLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AutoscaleLocked(FunctionRecord& fn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  AutoscalerSettings ScalerSettings(const FunctionSpec& spec) const;
  void CountLoadLocked(NodeRecord& node, const v1::Heartbeat& hb)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishDrainsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpireLeasesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LoseNodeLocked(NodeRecord& node, const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveReplicaLocked(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PushDesiredLocked(NodeRecord& node, bool force) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateRoutesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ApplyReplicaStatusLocked(NodeRecord& node, const v1::ReplicaStatus& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleProfileLocked(const v1::Profile& profile) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void InstallFunctionLocked(FunctionSpec spec, std::string manifest, int64_t generation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One replica's capacity on the hardware kind most of its replicas run on.
  Capacity PlanningCapacityLocked(const FunctionRecord& fn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One replica's throughput within the SLO on its hardware (placement.h CapacityOf).
  static double ReplicaThroughput(const FunctionRecord& fn, const ReplicaRecord& r);
  // Replicas of the planning hardware (at least 1 while one is wanted) that the target still
  // lacks: what `ferry get functions` shows as pending.
  static int MissingReplicas(const ReplicaTarget& target, int count, double have_rps,
                             double planning_rps);
  PlacementHints HintsLocked(const std::string& function) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string NewReplicaIdLocked(const std::string& function) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::FunctionStatus StatusLocked(const FunctionRecord& fn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<v1::Route> RoutesOfLocked(const std::string& function)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  NodeRecord* NodeBySessionLocked(int64_t session) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Indexed replica bookkeeping: accounts the replica in the Cluster and the indexes.
  void AddReplicaLocked(ReplicaRecord r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const std::set<std::string>& ReplicasOfLocked(const std::string& function)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ControllerOptions options_;
  Clock* const clock_;
  std::unique_ptr<UsageLedger> usage_;  // thread-safe itself; set in Create
  absl::Mutex apply_mu_;  // serialises store writers (Apply, Delete), taken before mu_
  absl::Mutex mu_;
  std::map<std::string, FunctionRecord> functions_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, ReplicaRecord> replicas_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::set<std::string>> by_function_ ABSL_GUARDED_BY(mu_);  // replica ids
  std::map<int, std::set<std::string>> by_node_ ABSL_GUARDED_BY(mu_);  // by Cluster index
  // Something changed since the last reconcile (heartbeats that change nothing cost nothing).
  bool dirty_ ABSL_GUARDED_BY(mu_) = true;
  std::map<std::string, NodeRecord> nodes_ ABSL_GUARDED_BY(mu_);  // by id
  std::vector<std::string> node_ids_ ABSL_GUARDED_BY(mu_);        // by Cluster index
  Cluster cluster_ ABSL_GUARDED_BY(mu_);
  int64_t next_session_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t id_seed_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t adopt_until_us_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t store_revision_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_autoscale_us_ ABSL_GUARDED_BY(mu_) = 0;
  // Routes: per function, the last published set and the route revision it changed at
  // (functions whose routes were withdrawn keep an empty entry).
  struct PublishedRoutes {
    std::vector<v1::Route> routes;
    int64_t revision = 0;
  };
  std::map<std::string, PublishedRoutes> routes_ ABSL_GUARDED_BY(mu_);
  int64_t route_revision_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ferry::control

#endif  // FERRY_CONTROL_PLANE_CONTROLLER_H_
