#include "control-plane/controller.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "control-plane/manifest_codec.h"
#include "nlohmann/json.hpp"

namespace ferry::control {
namespace {

using nlohmann::json;

constexpr char kFunctionsPrefix[] = "functions/";
constexpr char kProfilesPrefix[] = "profiles/";

bool ValidNodeName(const std::string& name) {
  if (name.empty() || name.size() > 253) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_')) {
      return false;
    }
  }
  return true;
}

std::string StoredFunction(const FunctionSpec& spec, const std::string& manifest,
                           int64_t generation) {
  return json{{"manifest", manifest},
              {"source", spec.source},
              {"base_dir", spec.base_dir},
              {"generation", generation}}
      .dump();
}

v1::HardwareRequirements HardwareProto(const HardwareSpec& hw) {
  v1::HardwareRequirements out;
  out.set_accelerator(std::string(AcceleratorName(hw.accelerator)));
  out.set_gpu_memory_mib(hw.gpu_memory_mib);
  out.set_min_compute_capability(hw.min_compute_capability);
  out.set_cpu_cores(hw.cpu_cores);
  out.set_memory_mib(hw.memory_mib);
  return out;
}

v1::Slo SloProto(const SloSpec& slo) {
  v1::Slo out;
  out.set_latency_percentile(slo.latency_percentile);
  out.set_latency_target_ms(slo.latency_target_ms);
  out.set_min_rps(slo.min_rps);
  out.set_has_max_cost_per_million(slo.max_cost_per_million.has_value());
  out.set_max_cost_per_million(slo.max_cost_per_million.value_or(0));
  out.set_on_overload(std::string(OverloadActionName(slo.on_overload)));
  return out;
}

}  // namespace

Controller::Controller(const ControllerOptions& options)
    : options_(options), clock_(options.clock ? options.clock : RealClock::Get()) {}

absl::StatusOr<std::unique_ptr<Controller>> Controller::Create(const ControllerOptions& options) {
  if (options.store == nullptr) return absl::InvalidArgumentError("controller: no state store");
  if (options.heartbeat_ms <= 0 || options.lease_ms <= options.heartbeat_ms) {
    return absl::InvalidArgumentError(
        "controller: need heartbeat_ms > 0 and lease_ms > heartbeat_ms");
  }
  std::unique_ptr<Controller> c(new Controller(options));
  if (absl::Status s = c->Load(); !s.ok()) return s;
  UsageLedgerOptions usage;
  usage.store = options.store;
  usage.wall_clock = options.wall_clock;
  usage.flush_interval_ms = options.usage_flush_ms;
  auto ledger = UsageLedger::Create(usage);
  if (!ledger.ok()) return ledger.status();
  c->usage_ = *std::move(ledger);
  return c;
}

absl::Status Controller::Load() {
  absl::StatusOr<std::vector<KeyValue>> fns = options_.store->List(kFunctionsPrefix);
  if (!fns.ok()) return fns.status();
  absl::StatusOr<std::vector<KeyValue>> profiles = options_.store->List(kProfilesPrefix);
  if (!profiles.ok()) return profiles.status();
  absl::StatusOr<int64_t> rev = options_.store->Revision();
  if (!rev.ok()) return rev.status();
  absl::MutexLock lock(&mu_);
  store_revision_ = *rev;
  std::random_device rd;
  id_seed_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  for (const KeyValue& kv : *fns) {
    json stored = json::parse(kv.value, nullptr, false);
    if (stored.is_discarded() || !stored.is_object()) {
      return absl::DataLossError(absl::StrCat("state store: ", kv.key, ": not JSON"));
    }
    const std::string manifest = stored.value("manifest", "");
    absl::StatusOr<FunctionSpec> spec = ParseCanonicalManifest(
        manifest, stored.value("source", kv.key), stored.value("base_dir", ""));
    if (!spec.ok()) {
      return absl::DataLossError(
          absl::StrCat("state store: ", kv.key, ": ", spec.status().message()));
    }
    InstallFunctionLocked(*std::move(spec), manifest, stored.value("generation", int64_t{1}));
  }
  for (const KeyValue& kv : *profiles) {
    // profiles/<function>/<kind>
    const std::string rest = kv.key.substr(sizeof(kProfilesPrefix) - 1);
    const size_t slash = rest.find('/');
    if (slash == std::string::npos) continue;
    json points = json::parse(kv.value, nullptr, false);
    if (!points.is_array()) continue;
    v1::Profile p;
    p.set_function(rest.substr(0, slash));
    p.set_hardware_kind(rest.substr(slash + 1));
    for (const json& pt : points) {
      if (!pt.is_array() || pt.size() != 2) continue;
      auto* point = p.add_points();
      point->set_batch_size(pt[0].get<int>());
      point->set_latency_us(pt[1].get<double>());
    }
    auto it = functions_.find(p.function());
    if (it == functions_.end()) continue;
    const int kind = cluster_.kinds().Intern(p.hardware_kind());
    std::vector<std::pair<int, double>> pts;
    for (const auto& pt : p.points()) pts.emplace_back(pt.batch_size(), pt.latency_us());
    if (auto model = FitLatency(pts)) {
      it->second.profiles.Set(kind, *model);
      it->second.profile_points[kind] = std::move(pts);
    }
  }
  if (!functions_.empty()) adopt_until_us_ = clock_->NowMicros() + options_.lease_ms * 1000;
  ReconcileLocked();
  return absl::OkStatus();
}

AutoscalerSettings Controller::ScalerSettings(const FunctionSpec& spec) const {
  AutoscalerSettings settings = SettingsOf(spec.scaling);
  settings.report_interval_us = options_.heartbeat_ms * 1000;
  // Burst headroom exists to keep latency within a target; a function without a latency SLO is
  // scaled on its mean rate alone (headroom for Poisson noise would double its replicas at low
  // rates for no promise made).
  if (spec.slo.latency_target_ms <= 0) settings.burst_z = 0;
  return settings;
}

void Controller::InstallFunctionLocked(FunctionSpec spec, std::string manifest,
                                       int64_t generation) {
  dirty_ = true;
  FunctionRecord& fn = functions_[spec.name];
  const Requirements old_req = fn.req;
  const bool existed = fn.generation > 0;
  fn.req = RequirementsOf(spec);
  fn.spec = std::move(spec);
  fn.manifest = std::move(manifest);
  fn.generation = generation;
  const ScalingSpec& scaling = fn.spec.scaling;
  if (fn.scaler == nullptr) {
    // Initial scale 1 (as Knative's): a function at minReplicas 0 starts with one replica and
    // goes to zero after idleSeconds without requests.
    fn.autoscaled = static_cast<int>(
        std::min<int64_t>(std::max<int64_t>(1, scaling.min_replicas), scaling.max_replicas));
    fn.scaler = std::make_unique<Autoscaler>(ScalerSettings(fn.spec), clock_, fn.autoscaled);
    fn.scale_reason = "initial scale";
    fn.scale_changed_us = clock_->NowMicros();
  } else {
    fn.scaler->set_settings(ScalerSettings(fn.spec));
    fn.autoscaled = static_cast<int>(
        std::clamp<int64_t>(fn.autoscaled, scaling.min_replicas, scaling.max_replicas));
  }
  if (!existed) return;
  // Re-account existing replicas under the new requirements; drop those that no longer fit.
  const std::set<std::string> mine = by_function_[fn.spec.name];
  for (const std::string& id : mine) {
    const ReplicaRecord& r = replicas_.at(id);
    cluster_.Release(r.node, r.device_index, old_req);
  }
  for (const std::string& id : mine) {
    ReplicaRecord& r = replicas_.at(id);
    if (CandidateFits(cluster_, fn.req, fn.profiles, r.node, r.device_index)) {
      cluster_.Assign(r.node, r.device_index, fn.req);
      r.state = v1::REPLICA_STATE_ASSIGNED;  // the agent reloads it with the new generation
    } else {
      by_node_[r.node].erase(id);
      by_function_[fn.spec.name].erase(id);
      replicas_.erase(id);
    }
  }
}

// --- Apply / delete ----------------------------------------------------------------------------

absl::StatusOr<v1::ApplyResponse> Controller::Apply(const v1::ApplyRequest& request) {
  std::vector<ManifestFileInput> files;
  for (const auto& f : request.files()) files.push_back({f.path(), f.content()});
  absl::StatusOr<std::vector<FunctionSpec>> specs = ParseApplyFiles(files);
  if (!specs.ok()) return specs.status();

  absl::MutexLock apply_lock(&apply_mu_);
  v1::ApplyResponse response;
  std::vector<Mutation> mutations;
  std::vector<std::tuple<FunctionSpec, std::string, int64_t>> installs;
  {
    absl::MutexLock lock(&mu_);
    for (FunctionSpec& spec : *specs) {
      std::string manifest = CanonicalManifest(spec);
      auto* change = response.add_changes();
      change->set_name(spec.name);
      change->set_source(spec.source);
      auto it = functions_.find(spec.name);
      int64_t generation = 1;
      if (it == functions_.end()) {
        change->set_action("created");
      } else if (it->second.manifest == manifest && it->second.spec.base_dir == spec.base_dir) {
        change->set_action("unchanged");
        continue;
      } else {
        change->set_action("configured");
        generation = it->second.generation + 1;
      }
      mutations.push_back(Mutation::Put(absl::StrCat(kFunctionsPrefix, spec.name),
                                        StoredFunction(spec, manifest, generation)));
      installs.emplace_back(std::move(spec), std::move(manifest), generation);
    }
  }
  if (request.dry_run() || mutations.empty()) {
    absl::MutexLock lock(&mu_);
    response.set_revision(request.dry_run() ? 0 : store_revision_);
    return response;
  }
  // Durable before anything changes in memory or on agents.
  absl::StatusOr<int64_t> rev = options_.store->Commit(mutations);
  if (!rev.ok()) return rev.status();
  absl::MutexLock lock(&mu_);
  store_revision_ = *rev;
  for (auto& [spec, manifest, generation] : installs) {
    InstallFunctionLocked(std::move(spec), std::move(manifest), generation);
  }
  ReconcileLocked();
  response.set_revision(*rev);
  return response;
}

absl::StatusOr<int64_t> Controller::DeleteFunction(const std::string& name) {
  absl::MutexLock apply_lock(&apply_mu_);
  std::vector<std::string> profile_keys;
  {
    absl::MutexLock lock(&mu_);
    auto it = functions_.find(name);
    if (it == functions_.end()) {
      return absl::NotFoundError(absl::StrCat("no function named \"", name, "\""));
    }
    for (const auto& [kind, pts] : it->second.profile_points) {
      profile_keys.push_back(absl::StrCat(kProfilesPrefix, name, "/", cluster_.kinds().Name(kind)));
    }
  }
  std::vector<Mutation> mutations = {Mutation::Delete(absl::StrCat(kFunctionsPrefix, name))};
  for (auto& k : profile_keys) mutations.push_back(Mutation::Delete(std::move(k)));
  absl::StatusOr<int64_t> rev = options_.store->Commit(mutations);
  if (!rev.ok()) return rev.status();
  absl::MutexLock lock(&mu_);
  store_revision_ = *rev;
  const std::set<std::string> ids = by_function_[name];
  for (const auto& id : ids) RemoveReplicaLocked(id);
  functions_.erase(name);
  by_function_.erase(name);
  dirty_ = true;
  ReconcileLocked();
  return *rev;
}

// --- Status --------------------------------------------------------------------------------------

v1::FunctionStatus Controller::StatusLocked(const FunctionRecord& fn) {
  v1::FunctionStatus st;
  const FunctionSpec& spec = fn.spec;
  st.set_name(spec.name);
  st.set_runtime(spec.runtime);
  st.set_source(spec.source);
  st.set_generation(fn.generation);
  *st.mutable_hardware() = HardwareProto(spec.hardware);
  *st.mutable_slo() = SloProto(spec.slo);
  st.set_min_replicas(spec.scaling.min_replicas);
  st.set_max_replicas(spec.scaling.max_replicas);
  st.set_max_batch_size(spec.batching.max_batch_size);
  st.set_desired_replicas(fn.desired);
  st.set_manifest(fn.manifest);
  int ready = 0;
  int assigned = 0;
  int draining = 0;
  for (const std::string& id : ReplicasOfLocked(spec.name)) {
    const ReplicaRecord& r = replicas_.at(id);
    if (r.draining_until_us != 0) {
      ++draining;
    } else {
      ++assigned;
    }
    const NodeRecord& node = nodes_.at(node_ids_[r.node]);
    auto* rep = st.add_replicas();
    rep->set_replica_id(id);
    rep->set_function(r.function);
    rep->set_node_id(node.id);
    rep->set_state(r.draining_until_us != 0 ? v1::REPLICA_STATE_DRAINING : r.state);
    rep->set_http_address(node.registration.http_address());
    rep->set_grpc_address(node.registration.grpc_address());
    rep->set_hardware_kind(cluster_.kinds().Name(r.kind));
    rep->set_device_index(r.device_index);
    rep->set_message(r.message);
    rep->set_cost_per_million(r.cost_per_million);
    rep->set_in_flight(r.in_flight);
    rep->set_requests_per_second(r.requests_per_second);
    if (r.state == v1::REPLICA_STATE_READY && r.draining_until_us == 0) ++ready;
  }
  for (int i = assigned; i < fn.desired; ++i) {
    auto* rep = st.add_replicas();
    rep->set_function(spec.name);
    rep->set_state(v1::REPLICA_STATE_PENDING);
    rep->set_device_index(-1);
    if (!fn.pending_reasons.empty()) rep->set_message(fn.pending_reasons.front());
  }
  st.set_ready_replicas(ready);
  st.set_draining_replicas(draining);
  st.set_scale_reason(fn.scale_reason);
  st.set_scale_decision_age_ms((clock_->NowMicros() - fn.scale_changed_us) / 1000);
  st.set_observed_rps(fn.last_decision.stable_rps);
  st.set_observed_in_flight(fn.last_decision.stable_concurrency);
  st.set_panic(fn.last_decision.panic);
  for (const auto& reason : fn.pending_reasons) st.add_pending_reasons(reason);
  // Profiles: every measured kind, plus the default for the kinds in use.
  std::set<int> kinds;
  for (const auto& [kind, pts] : fn.profile_points) kinds.insert(kind);
  if (kinds.empty()) kinds.insert(spec.hardware.accelerator == Accelerator::kGpu ? -1 : kCpuKind);
  for (int kind : kinds) {
    auto* p = st.add_profiles();
    const LatencyModel model = kind < 0 ? DefaultLatencyModel(true) : fn.profiles.Get(kind);
    p->set_hardware_kind(kind < 0 ? "gpu" : cluster_.kinds().Name(kind));
    p->set_measured(model.measured);
    p->set_a_us(model.a_us);
    p->set_b_us(model.b_us);
    const Capacity cap = CapacityOf(model, fn.req);
    p->set_batch_within_slo(static_cast<int32_t>(cap.batch));
    p->set_throughput_rps(cap.throughput_rps);
    if (auto it = fn.profile_points.find(kind); it != fn.profile_points.end()) {
      for (const auto& [n, us] : it->second) {
        auto* pt = p->add_points();
        pt->set_batch_size(n);
        pt->set_latency_us(us);
      }
    }
  }
  return st;
}

absl::StatusOr<v1::FunctionStatus> Controller::GetFunction(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = functions_.find(name);
  if (it == functions_.end()) {
    return absl::NotFoundError(absl::StrCat("no function named \"", name, "\""));
  }
  return StatusLocked(it->second);
}

v1::ListFunctionsResponse Controller::ListFunctions() {
  absl::MutexLock lock(&mu_);
  v1::ListFunctionsResponse out;
  for (const auto& [name, fn] : functions_) *out.add_functions() = StatusLocked(fn);
  return out;
}

v1::ListNodesResponse Controller::ListNodes() {
  absl::MutexLock lock(&mu_);
  v1::ListNodesResponse out;
  const int64_t now = clock_->NowMicros();
  for (const auto& [id, node] : nodes_) {
    auto* n = out.add_nodes();
    n->set_node_id(id);
    n->set_name(node.registration.node_name());
    *n->mutable_inventory() = node.registration.inventory();
    *n->mutable_labels() = node.registration.labels();
    n->set_price_per_hour(node.registration.price_per_hour());
    *n->mutable_load() = node.load;
    n->set_lease_state(node.lease);
    n->set_last_heartbeat_age_ms((now - node.last_heartbeat_us) / 1000);
    n->set_http_address(node.registration.http_address());
    n->set_grpc_address(node.registration.grpc_address());
    n->set_agent_version(node.registration.agent_version());
    auto on_node = by_node_.find(node.index);
    n->set_replicas(on_node == by_node_.end() ? 0 : static_cast<int>(on_node->second.size()));
    const NodeSpec& spec = cluster_.nodes()[node.index];
    const NodeUsage& use = cluster_.usage()[node.index];
    for (size_t g = 0; g < spec.gpus.size(); ++g) {
      n->add_gpu_free_bytes(spec.gpus[g].memory_bytes - use.gpu_bytes[g]);
    }
    n->set_cpu_cores_free(spec.cpu_cores - use.cpu_cores);
    n->set_memory_free_bytes(spec.memory_bytes - use.memory_bytes);
  }
  return out;
}

// --- Routes --------------------------------------------------------------------------------------

std::vector<v1::Route> Controller::RoutesOfLocked(const std::string& function) {
  std::vector<v1::Route> out;
  for (const std::string& id : ReplicasOfLocked(function)) {
    const ReplicaRecord& r = replicas_.at(id);
    const NodeRecord& node = nodes_.at(node_ids_[r.node]);
    if (node.lease != v1::LEASE_STATE_ACTIVE) continue;
    v1::Route route;
    route.set_function(function);
    route.set_replica_id(id);
    route.set_node_id(node.id);
    route.set_http_address(node.registration.http_address());
    route.set_grpc_address(node.registration.grpc_address());
    route.set_ready(r.state == v1::REPLICA_STATE_READY && r.draining_until_us == 0);
    if (auto fit = functions_.find(function); fit != functions_.end()) {
      route.set_throughput_rps(ReplicaThroughput(fit->second, r));
    }
    out.push_back(std::move(route));
  }
  return out;
}

void Controller::UpdateRoutesLocked() {
  std::set<std::string> names;
  for (const auto& [name, fn] : functions_) names.insert(name);
  for (const auto& [name, pr] : routes_) names.insert(name);
  bool changed = false;
  for (const std::string& name : names) {
    std::vector<v1::Route> routes = RoutesOfLocked(name);
    PublishedRoutes& pub = routes_[name];
    bool same = pub.routes.size() == routes.size();
    for (size_t i = 0; same && i < routes.size(); ++i) {
      same = pub.routes[i].SerializeAsString() == routes[i].SerializeAsString();
    }
    if (same && pub.revision != 0) continue;
    if (same && routes.empty()) continue;  // never had routes
    if (!changed) ++route_revision_;
    changed = true;
    pub.routes = std::move(routes);
    pub.revision = route_revision_;
  }
}

v1::GetRoutesResponse Controller::GetRoutes(const std::string& function) {
  absl::MutexLock lock(&mu_);
  v1::GetRoutesResponse out;
  for (const auto& [name, pub] : routes_) {
    if (!function.empty() && name != function) continue;
    for (const auto& r : pub.routes) *out.add_routes() = r;
  }
  out.set_revision(route_revision_);
  return out;
}

int64_t Controller::WaitForRouteChange(int64_t after_revision, int64_t timeout_ms) {
  absl::MutexLock lock(&mu_);
  auto changed = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return route_revision_ > after_revision; };
  mu_.AwaitWithTimeout(absl::Condition(&changed), absl::Milliseconds(timeout_ms));
  return route_revision_;
}

v1::RouteUpdate Controller::RouteChangesSince(int64_t after_revision, const std::string& function) {
  absl::MutexLock lock(&mu_);
  v1::RouteUpdate out;
  const bool snapshot = after_revision < 0;
  out.set_snapshot(snapshot);
  for (const auto& [name, pub] : routes_) {
    if (!function.empty() && name != function) continue;
    if (snapshot ? pub.routes.empty() : pub.revision <= after_revision) continue;
    auto* fr = out.add_functions();
    fr->set_function(name);
    for (const auto& r : pub.routes) *fr->add_routes() = r;
  }
  out.set_revision(route_revision_);
  return out;
}

// --- Agents --------------------------------------------------------------------------------------

Controller::NodeRecord* Controller::NodeBySessionLocked(int64_t session) {
  for (auto& [id, node] : nodes_) {
    if (node.session == session) return &node;
  }
  return nullptr;
}

absl::StatusOr<int64_t> Controller::RegisterAgent(const v1::Register& reg, AgentChannel* channel) {
  if (!ValidNodeName(reg.node_name())) {
    return absl::InvalidArgumentError(
        absl::StrCat("register: node_name \"", reg.node_name(),
                     "\" must be 1-253 characters of letters, digits, '-', '.' and '_'"));
  }
  if (reg.http_address().empty()) {
    return absl::InvalidArgumentError("register: http_address is required");
  }
  absl::MutexLock lock(&mu_);
  const std::string id = reg.node_name();
  NodeSpec spec;
  spec.id = id;
  spec.cpu_cores = reg.inventory().cpu_cores();
  spec.memory_bytes = reg.inventory().memory_bytes();
  spec.price_per_hour = reg.price_per_hour();
  for (const auto& g : reg.inventory().gpus()) {
    GpuDevice d;
    d.index = g.index();
    d.kind = cluster_.kinds().Intern(g.name());
    d.memory_bytes = g.memory_bytes();
    d.compute_capability_x10 = ParseComputeCapability(g.compute_capability());
    spec.gpus.push_back(d);
  }
  auto it = nodes_.find(id);
  if (it != nodes_.end()) {
    // A new session replaces the old one: drop what the old session ran (re-adopted below).
    NodeRecord& old = it->second;
    if (old.lease == v1::LEASE_STATE_ACTIVE) LoseNodeLocked(old, "re-registered");
    old.channel = nullptr;
  }
  NodeRecord& node = nodes_[id];
  if (node.index < 0) {
    node.index = cluster_.AddNode(spec);
    node_ids_.push_back(id);
  } else {
    // No replica is accounted here (LoseNodeLocked released them); the inventory may differ.
    cluster_.ReplaceNode(node.index, spec);
  }
  node.id = id;
  node.registration = reg;
  node.lease = v1::LEASE_STATE_ACTIVE;
  node.last_heartbeat_us = clock_->NowMicros();
  node.session = next_session_++;
  node.channel = channel;
  node.load = v1::NodeLoad();
  node.warm = {reg.warm_functions().begin(), reg.warm_functions().end()};
  node.sent_fingerprint.clear();
  cluster_.mutable_node(node.index).ready = true;
  dirty_ = true;

  v1::ControlMessage hello;
  hello.mutable_registered()->set_node_id(id);
  hello.mutable_registered()->set_heartbeat_interval_ms(options_.heartbeat_ms);
  hello.mutable_registered()->set_lease_ms(options_.lease_ms);
  channel->Send(hello);

  // Adopt the replicas the agent still serves, while the function wants them and they fit.
  for (const v1::ReplicaStatus& rs : reg.replicas()) {
    auto fit = functions_.find(rs.function());
    if (fit == functions_.end() || replicas_.count(rs.replica_id()) > 0) continue;
    FunctionRecord& fn = fit->second;
    const int have = static_cast<int>(ReplicasOfLocked(fn.spec.name).size());
    // During the restart grace the autoscaler has not seen the load yet: keep what the agents
    // still run, up to maxReplicas.
    const int want = clock_->NowMicros() < adopt_until_us_
                         ? static_cast<int>(fn.spec.scaling.max_replicas)
                         : std::max(fn.desired, static_cast<int>(fn.spec.scaling.min_replicas));
    if (have >= std::max(want, 1)) continue;
    if (!CandidateFits(cluster_, fn.req, fn.profiles, node.index, rs.device_index())) continue;
    ReplicaRecord r;
    r.id = rs.replica_id();
    r.function = fn.spec.name;
    r.node = node.index;
    r.device_index = rs.device_index();
    r.kind = kCpuKind;
    for (const auto& g : cluster_.nodes()[node.index].gpus) {
      if (g.index == rs.device_index()) r.kind = g.kind;
    }
    r.state = rs.state();
    r.cost_per_million = 0;
    AddReplicaLocked(std::move(r));
    if (have + 1 > fn.autoscaled) {
      fn.autoscaled = have + 1;
      fn.scaler->KeepAtLeast(fn.autoscaled);
    }
  }
  ReconcileLocked();
  PushDesiredLocked(node, /*force=*/true);
  return node.session;
}

void Controller::ApplyReplicaStatusLocked(NodeRecord& node, const v1::ReplicaStatus& status) {
  auto it = replicas_.find(status.replica_id());
  if (it == replicas_.end() || it->second.node != node.index) return;
  ReplicaRecord& r = it->second;
  if (status.state() != v1::REPLICA_STATE_UNSPECIFIED && status.state() != r.state) {
    r.state = status.state();
    dirty_ = true;  // routes follow readiness
  }
  r.message = status.message();
  r.in_flight = status.in_flight();
  r.requests_per_second = status.requests_per_second();
}

void Controller::HandleProfileLocked(const v1::Profile& profile) {
  auto it = functions_.find(profile.function());
  if (it == functions_.end() || profile.points().empty()) return;
  std::vector<std::pair<int, double>> pts;
  for (const auto& p : profile.points()) {
    if (p.batch_size() > 0 && p.latency_us() > 0) pts.emplace_back(p.batch_size(), p.latency_us());
  }
  auto model = FitLatency(pts);
  if (!model) return;
  const int kind = cluster_.kinds().Intern(profile.hardware_kind());
  it->second.profiles.Set(kind, *model);
  dirty_ = true;  // replica counts and costs follow the profile
  json stored = json::array();
  for (const auto& [n, us] : pts) stored.push_back({n, us});
  it->second.profile_points[kind] = std::move(pts);
  // Best effort: a lost profile is measured again by the next replica that loads.
  absl::StatusOr<int64_t> rev = options_.store->Put(
      absl::StrCat(kProfilesPrefix, profile.function(), "/", profile.hardware_kind()),
      stored.dump());
  if (rev.ok()) store_revision_ = *rev;
}

absl::Status Controller::HandleAgentMessage(int64_t session, const v1::AgentMessage& message) {
  absl::MutexLock lock(&mu_);
  NodeRecord* node = NodeBySessionLocked(session);
  if (node == nullptr || node->lease != v1::LEASE_STATE_ACTIVE) {
    return absl::FailedPreconditionError("session is no longer current; register again");
  }
  node->last_heartbeat_us = clock_->NowMicros();
  switch (message.msg_case()) {
    case v1::AgentMessage::kHeartbeat: {
      const v1::Heartbeat& hb = message.heartbeat();
      node->load = hb.load();
      for (const auto& rs : hb.replicas()) ApplyReplicaStatusLocked(*node, rs);
      CountLoadLocked(*node, hb);
      if (hb.usage_size() > 0) {
        NodePricing pricing;
        pricing.price_per_hour = node->registration.price_per_hour();
        pricing.cpu_cores = node->registration.inventory().cpu_cores();
        pricing.gpus = node->registration.inventory().gpus_size();
        usage_->Ingest(node->id, pricing, hb.usage_epoch(), hb.usage());
      }
      node->warm = {hb.warm_functions().begin(), hb.warm_functions().end()};
      break;
    }
    case v1::AgentMessage::kReplicaStatus:
      ApplyReplicaStatusLocked(*node, message.replica_status());
      break;
    case v1::AgentMessage::kProfile:
      HandleProfileLocked(message.profile());
      break;
    case v1::AgentMessage::kRegister:
      return absl::FailedPreconditionError("already registered on this stream");
    default:
      break;
  }
  ReconcileLocked();
  return absl::OkStatus();
}

void Controller::CountLoadLocked(NodeRecord& node, const v1::Heartbeat& hb) {
  // Replicas of one function on one node share the counters: take each function's first.
  std::map<std::string, const v1::ReplicaStatus*> by_function;
  for (const auto& rs : hb.replicas()) by_function.try_emplace(rs.function(), &rs);
  std::erase_if(node.in_flight, [&](const auto& kv) { return by_function.count(kv.first) == 0; });
  std::erase_if(node.requests_total,
                [&](const auto& kv) { return by_function.count(kv.first) == 0; });
  for (const auto& [name, rs] : by_function) {
    node.in_flight[name] = rs->in_flight();
    auto last = node.requests_total.find(name);
    // The first report is the baseline; a smaller total means the function was reloaded.
    const int64_t delta = last == node.requests_total.end() ? 0
                          : rs->requests_total() >= last->second
                              ? rs->requests_total() - last->second
                              : rs->requests_total();
    node.requests_total[name] = rs->requests_total();
    auto fit = functions_.find(name);
    if (fit != functions_.end()) fit->second.arrived += delta;
  }
}

void Controller::AgentDisconnected(int64_t session) {
  absl::MutexLock lock(&mu_);
  NodeRecord* node = NodeBySessionLocked(session);
  if (node == nullptr) return;
  node->channel = nullptr;
  node->session = 0;
  if (node->lease == v1::LEASE_STATE_ACTIVE) LoseNodeLocked(*node, "stream closed");
  ReconcileLocked();
}

void Controller::RemoveReplicaLocked(const std::string& id) {
  auto it = replicas_.find(id);
  if (it == replicas_.end()) return;
  auto fit = functions_.find(it->second.function);
  if (fit != functions_.end()) {
    cluster_.Release(it->second.node, it->second.device_index, fit->second.req);
  }
  by_node_[it->second.node].erase(id);
  by_function_[it->second.function].erase(id);
  replicas_.erase(it);
  dirty_ = true;
}

void Controller::LoseNodeLocked(NodeRecord& node, const std::string& /*why*/) {
  node.lease = v1::LEASE_STATE_LOST;
  cluster_.mutable_node(node.index).ready = false;
  const std::set<std::string> ids = by_node_[node.index];
  for (const auto& id : ids) RemoveReplicaLocked(id);
  node.sent_fingerprint.clear();
  node.requests_total.clear();
  node.in_flight.clear();
  dirty_ = true;
}

void Controller::ExpireLeasesLocked() {
  const int64_t now = clock_->NowMicros();
  for (auto& [id, node] : nodes_) {
    if (node.lease == v1::LEASE_STATE_ACTIVE &&
        now - node.last_heartbeat_us > options_.lease_ms * 1000) {
      LoseNodeLocked(node, "lease expired");
      node.channel = nullptr;  // its stream handler ends on its next message
    }
  }
}

absl::Status Controller::FlushUsage() { return usage_->Flush(/*force=*/true); }

absl::StatusOr<v1::GetUsageResponse> Controller::GetUsage(const v1::GetUsageRequest& request) {
  if (request.since_seconds() < 0) {
    return absl::InvalidArgumentError("usage: since_seconds must be >= 0");
  }
  absl::StatusOr<v1::GetUsageResponse> out =
      usage_->Query(request.since_seconds(), request.function());
  if (!out.ok()) return out.status();
  absl::MutexLock lock(&mu_);
  auto budget = [this](v1::UsageSummary* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = functions_.find(s->function());
    if (it == functions_.end() || !it->second.spec.slo.max_cost_per_million.has_value()) return;
    const double max = *it->second.spec.slo.max_cost_per_million;
    s->set_has_max_cost_per_million(true);
    s->set_max_cost_per_million(max);
    s->set_over_budget(s->requests() > 0 && s->cost_per_million() > max);
  };
  for (auto& s : *out->mutable_functions()) budget(&s);
  for (auto& s : *out->mutable_nodes()) budget(&s);
  return out;
}

void Controller::Tick() {
  // Outside mu_: the store write must not hold up agents' heartbeats. A failed write is retried
  // on the next tick (the usage stays pending).
  (void)usage_->Flush(/*force=*/false);
  absl::MutexLock lock(&mu_);
  if (adopt_until_us_ != 0 && clock_->NowMicros() >= adopt_until_us_) {
    adopt_until_us_ = 0;  // the restart grace is over: place what is still missing
    dirty_ = true;
  }
  ExpireLeasesLocked();
  FinishDrainsLocked();
  if (const int64_t now = clock_->NowMicros(); now >= next_autoscale_us_) {
    next_autoscale_us_ = now + options_.autoscale_interval_ms * 1000;
    for (auto& [name, fn] : functions_) AutoscaleLocked(fn);
  }
  ReconcileLocked();
}

void Controller::FinishDrainsLocked() {
  const int64_t now = clock_->NowMicros();
  std::vector<std::string> done;
  for (const auto& [id, r] : replicas_) {
    if (r.draining_until_us != 0 &&
        (now >= r.draining_until_us || r.state != v1::REPLICA_STATE_READY)) {
      done.push_back(id);
    }
  }
  for (const auto& id : done) RemoveReplicaLocked(id);
}

void Controller::AutoscaleLocked(FunctionRecord& fn) {
  const std::string& name = fn.spec.name;
  double in_flight = 0;
  for (const auto& [id, node] : nodes_) {
    if (node.lease != v1::LEASE_STATE_ACTIVE) continue;
    if (auto it = node.in_flight.find(name); it != node.in_flight.end()) in_flight += it->second;
  }
  fn.scaler->Record(fn.arrived, in_flight);
  fn.arrived = 0;
  int current = 0;
  int ready = 0;
  for (const std::string& id : ReplicasOfLocked(name)) {
    const ReplicaRecord& r = replicas_.at(id);
    if (r.draining_until_us != 0) continue;
    ++current;
    if (r.state == v1::REPLICA_STATE_READY) ++ready;
  }
  const Capacity cap = PlanningCapacityLocked(fn);
  fn.last_decision = fn.scaler->Decide(current, ready, cap.throughput_rps,
                                       static_cast<double>(cap.batch * fn.req.instances));
  if (fn.last_decision.desired != fn.autoscaled) {
    fn.autoscaled = fn.last_decision.desired;
    fn.scale_reason = fn.last_decision.reason;
    fn.scale_changed_us = clock_->NowMicros();
    dirty_ = true;
  }
  // The need moves with every report; reconcile when it moved enough to change what covers it.
  const double need = fn.last_decision.need_rps;
  if (fn.need_rps < 0 || std::abs(need - fn.need_rps) > 0.05 * std::max(need, fn.need_rps)) {
    dirty_ = true;
  }
  fn.need_rps = need;
}

absl::StatusOr<bool> Controller::DemandReplica(const std::string& function) {
  absl::MutexLock lock(&mu_);
  auto it = functions_.find(function);
  if (it == functions_.end()) {
    return absl::NotFoundError(absl::StrCat("no function named \"", function, "\""));
  }
  FunctionRecord& fn = it->second;
  fn.scaler->Demand();
  int live = 0;
  int failed = 0;
  for (const std::string& id : ReplicasOfLocked(function)) {
    const ReplicaRecord& r = replicas_.at(id);
    if (r.draining_until_us != 0) continue;
    ++live;
    if (r.state == v1::REPLICA_STATE_FAILED) ++failed;
  }
  // Replicas that failed to load will not become ready by waiting: answer with the reason now.
  if (live > 0) return failed < live;
  AutoscaleLocked(fn);  // from zero now, not at the next interval
  ReconcileLocked();
  const bool adopting = clock_->NowMicros() < adopt_until_us_;
  return fn.desired > 0 && (fn.pending_reasons.empty() || adopting);
}

// --- Reconcile -----------------------------------------------------------------------------------

double Controller::ReplicaThroughput(const FunctionRecord& fn, const ReplicaRecord& r) {
  return CapacityOf(fn.profiles.Get(r.kind), fn.req).throughput_rps;
}

int Controller::MissingReplicas(const ReplicaTarget& target, int count, double have_rps,
                                double planning_rps) {
  if (!WantsAnother(target, count, have_rps)) return 0;
  int missing = std::max(0, target.min_replicas - count);
  if (planning_rps > 0) {
    missing = std::max(
        missing, static_cast<int>(std::ceil(Uncovered(target, have_rps) / planning_rps - 1e-9)));
  }
  return std::clamp(missing, 1, std::max(1, target.max_replicas - count));
}

Capacity Controller::PlanningCapacityLocked(const FunctionRecord& fn) {
  // The hardware kind most of its replicas run on; before any, the default for its accelerator.
  std::map<int, int> by_kind;
  for (const std::string& id : ReplicasOfLocked(fn.spec.name)) ++by_kind[replicas_.at(id).kind];
  if (by_kind.empty()) {
    return CapacityOf(DefaultLatencyModel(fn.spec.hardware.accelerator == Accelerator::kGpu),
                      fn.req);
  }
  auto best = std::max_element(by_kind.begin(), by_kind.end(),
                               [](const auto& a, const auto& b) { return a.second < b.second; });
  return CapacityOf(fn.profiles.Get(best->first), fn.req);
}

PlacementHints Controller::HintsLocked(const std::string& function) {
  PlacementHints hints;
  std::map<int, int> on;
  for (const std::string& id : ReplicasOfLocked(function)) ++on[replicas_.at(id).node];
  hints.replicas_on_node.assign(on.begin(), on.end());
  for (const auto& [id, node] : nodes_) {
    if (node.warm.count(function) > 0) hints.warm_nodes.push_back(node.index);
  }
  std::sort(hints.warm_nodes.begin(), hints.warm_nodes.end());
  return hints;
}

const std::set<std::string>& Controller::ReplicasOfLocked(const std::string& function) {
  return by_function_[function];
}

void Controller::AddReplicaLocked(ReplicaRecord r) {
  const FunctionRecord& fn = functions_.at(r.function);
  cluster_.Assign(r.node, r.device_index, fn.req);
  by_node_[r.node].insert(r.id);
  by_function_[r.function].insert(r.id);
  std::string id = r.id;
  replicas_.emplace(std::move(id), std::move(r));
  dirty_ = true;
}

std::string Controller::NewReplicaIdLocked(const std::string& function) {
  for (;;) {
    id_seed_ = id_seed_ * 6364136223846793005ULL + 1442695040888963407ULL;
    std::string id = absl::StrFormat("%s-%06x", function, (id_seed_ >> 40) & 0xffffff);
    if (replicas_.count(id) == 0) return id;
  }
}

void Controller::ReconcileLocked() {
  if (!dirty_) return;
  const int64_t now = clock_->NowMicros();
  const bool adopting = now < adopt_until_us_;
  for (auto& [name, fn] : functions_) {
    // The autoscaler's need, never below minRps, covered by whole replicas of whatever hardware
    // placement finds cheapest (replica_target.h); the count stays within [minReplicas,
    // maxReplicas]. Before the autoscaler's first decision its starting count on the planning
    // hardware is the need.
    const Capacity plan = PlanningCapacityLocked(fn);
    const int max_replicas = static_cast<int>(fn.spec.scaling.max_replicas);
    ReplicaTarget target;
    target.max_replicas = max_replicas;
    target.min_replicas = std::min(static_cast<int>(fn.spec.scaling.min_replicas), max_replicas);
    target.need_rps = fn.need_rps >= 0 ? fn.need_rps : fn.autoscaled * plan.throughput_rps;
    if (fn.autoscaled == 0) target.need_rps = 0;  // idle: to zero (or minReplicas)
    target.need_rps = std::max(target.need_rps, fn.spec.slo.min_rps);
    std::vector<std::string> mine;  // live: not draining
    std::vector<std::string> draining;
    double have = 0;
    for (const std::string& id : ReplicasOfLocked(name)) {
      const bool live = replicas_.at(id).draining_until_us == 0;
      (live ? mine : draining).push_back(id);
      if (live) have += ReplicaThroughput(fn, replicas_.at(id));
    }
    // Scale down: not-ready replicas go at once (nothing routes to them), ready ones drain.
    std::sort(mine.begin(), mine.end(),
              [&](const auto& a, const auto& b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                const ReplicaRecord& ra = replicas_[a];
                const ReplicaRecord& rb = replicas_[b];
                const bool a_ready = ra.state == v1::REPLICA_STATE_READY;
                const bool b_ready = rb.state == v1::REPLICA_STATE_READY;
                if (a_ready != b_ready) return !a_ready;  // not-ready first
                return ra.id > rb.id;
              });
    // A ready replica is not drained in favour of one still loading: the need counts the loading
    // one, but until it is ready the function would have nothing to route to.
    const bool loading = std::any_of(
        mine.begin(), mine.end(), [&](const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          const v1::ReplicaState st = replicas_.at(id).state;
          return st != v1::REPLICA_STATE_READY && st != v1::REPLICA_STATE_FAILED;
        });
    for (size_t i = 0; i < mine.size();) {
      ReplicaRecord& r = replicas_.at(mine[i]);
      const double rps = ReplicaThroughput(fn, r);
      if ((loading && r.state == v1::REPLICA_STATE_READY) ||
          !MayRemove(target, static_cast<int>(mine.size()), have, rps)) {
        ++i;
        continue;
      }
      have -= rps;
      if (r.state == v1::REPLICA_STATE_READY) {
        r.draining_until_us = now + options_.drain_ms * 1000;
        dirty_ = true;
      } else {
        RemoveReplicaLocked(mine[i]);
      }
      mine.erase(mine.begin() + static_cast<std::ptrdiff_t>(i));
    }
    // Scale up: revive draining replicas (ready ones) before placing new ones.
    while (WantsAnother(target, static_cast<int>(mine.size()), have) && !draining.empty()) {
      replicas_.at(draining.back()).draining_until_us = 0;
      have += ReplicaThroughput(fn, replicas_.at(draining.back()));
      mine.push_back(draining.back());
      draining.pop_back();
      dirty_ = true;
    }
    fn.pending_reasons.clear();
    fn.desired = static_cast<int>(mine.size());
    if (WantsAnother(target, fn.desired, have) && adopting) {
      fn.pending_reasons.push_back(
          absl::StrCat("waiting up to ", options_.lease_ms,
                       " ms for agents to re-register after a control-plane restart"));
      fn.desired += MissingReplicas(target, fn.desired, have, plan.throughput_rps);
      continue;
    }
    while (WantsAnother(target, static_cast<int>(mine.size()), have)) {
      PlacementHints hints = HintsLocked(name);
      hints.needed_rps = Uncovered(target, have);
      const Decision d = PlaceOne(cluster_, fn.req, fn.profiles, hints);
      if (!d.placed) {
        fn.pending_reasons.push_back(d.reason);
        break;
      }
      ReplicaRecord r;
      r.id = NewReplicaIdLocked(name);
      r.function = name;
      r.node = d.node;
      r.device_index = d.device_index;
      r.kind = d.kind;
      r.cost_per_million = d.cost_per_million;
      mine.push_back(r.id);
      have += ReplicaThroughput(fn, r);
      AddReplicaLocked(std::move(r));
    }
    // What the function shows as desired: the replicas placed, plus as many of the planning
    // hardware as the need still lacks where placement could not place them.
    fn.desired = static_cast<int>(mine.size()) +
                 MissingReplicas(target, static_cast<int>(mine.size()), have, plan.throughput_rps);
  }
  // Refresh predicted costs (profiles may have arrived).
  for (auto& [id, r] : replicas_) {
    const FunctionRecord& fn = functions_.at(r.function);
    const Capacity cap = CapacityOf(fn.profiles.Get(r.kind), fn.req);
    const double share = PriceShare(cluster_.nodes()[r.node], r.device_index, fn.req);
    r.cost_per_million = cap.throughput_rps > 0 ? share / 3600.0 / cap.throughput_rps * 1e6 : 0;
  }
  for (auto& [id, node] : nodes_) {
    if (node.lease == v1::LEASE_STATE_ACTIVE) PushDesiredLocked(node, false);
  }
  UpdateRoutesLocked();
  dirty_ = false;  // (placing and removing above marked it again)
}

void Controller::PushDesiredLocked(NodeRecord& node, bool force) {
  if (node.channel == nullptr) return;
  v1::ControlMessage msg;
  v1::DesiredReplicas* desired = msg.mutable_desired_replicas();
  std::string fingerprint;
  for (const std::string& id : by_node_[node.index]) {
    const ReplicaRecord& r = replicas_.at(id);
    const FunctionRecord& fn = functions_.at(r.function);
    auto* d = desired->add_replicas();
    d->set_replica_id(id);
    d->set_function(r.function);
    d->set_manifest(fn.manifest);
    d->set_generation(fn.generation);
    d->set_device_index(r.device_index);
    d->set_hardware_kind(cluster_.kinds().Name(r.kind));
    d->set_base_dir(fn.spec.base_dir);
    d->set_source(fn.spec.source);
    absl::StrAppend(&fingerprint, id, "@", fn.generation, "/", r.device_index, ";");
  }
  if (!force && fingerprint == node.sent_fingerprint) return;
  node.sent_fingerprint = fingerprint;
  desired->set_revision(store_revision_);
  node.channel->Send(msg);
}

}  // namespace ferry::control
