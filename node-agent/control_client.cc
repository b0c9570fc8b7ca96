#include "node-agent/control_client.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "ferry/manifest.h"
#include "ferry_control.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace ferry::agent {
namespace v1 = ferry::control::v1;

namespace {

// One replica as the agent knows it.
struct Replica {
  std::string id;
  std::string function;
  int64_t generation = 0;
  int device_index = -1;
  std::string hardware_kind;
  v1::ReplicaState state = v1::REPLICA_STATE_LOADING;
  std::string message;
};

// Synthetic request of `rows` rows for a function's declared inputs.
std::unique_ptr<InferenceRequest> SyntheticRequest(const std::string& function,
                                                   const ModelMetadata& md, int64_t rows) {
  auto req = std::make_unique<InferenceRequest>();
  req->model_name = function;
  req->id = "ferry-profile";
  for (const auto& in : md.inputs) {
    Tensor t;
    t.name = in.name;
    t.dtype = in.dtype;
    t.shape = in.shape;
    for (size_t d = 0; d < t.shape.size(); ++d) {
      if (t.shape[d] < 0) t.shape[d] = (d == 0 && md.batched) ? rows : 1;
    }
    const int64_t n = ElementCount(t.shape);
    if (t.dtype == DataType::kBytes) {
      for (int64_t i = 0; i < n; ++i) t.bytes.push_back("the quick brown fox jumps over it");
    } else {
      t.data.assign(static_cast<size_t>(n * DataTypeSizeBytes(t.dtype)), '\0');
    }
    req->inputs.push_back(std::move(t));
  }
  return req;
}

}  // namespace

class ControlClient::Impl {
 public:
  explicit Impl(const ControlClientOptions& options) : options_(options) {
    std::random_device rd;
    rng_.seed(rd());
  }

  void Start() {
    stream_thread_ = std::thread([this] { StreamLoop(); });
    reconcile_thread_ = std::thread([this] { ReconcileLoop(); });
  }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      stopping_ = true;
      if (context_ != nullptr) context_->TryCancel();
    }
    if (stream_thread_.joinable()) stream_thread_.join();
    if (reconcile_thread_.joinable()) reconcile_thread_.join();
  }

 private:
  void Log(const std::string& line) {
    if (options_.log) options_.log(line);
  }

  bool Stopping() {
    absl::MutexLock lock(&mu_);
    return stopping_;
  }

  // Sleeps up to `d` unless stopping; returns false when stopping.
  bool SleepUnlessStopping(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), d);
    return !stopping_;
  }

  v1::ReplicaStatus StatusOf(const Replica& r) {
    v1::ReplicaStatus s;
    s.set_replica_id(r.id);
    s.set_function(r.function);
    s.set_state(r.state);
    s.set_message(r.message);
    s.set_device_index(r.device_index);
    return s;
  }

  v1::AgentMessage RegisterMessage() {
    v1::AgentMessage m;
    v1::Register* reg = m.mutable_register_();
    reg->set_node_name(options_.node_name);
    v1::Inventory* inv = reg->mutable_inventory();
    inv->set_cpu_cores(options_.inventory.cpu_cores);
    inv->set_memory_bytes(options_.inventory.memory_bytes);
    inv->set_hostname(options_.inventory.hostname);
    for (const auto& g : options_.inventory.gpus) {
      v1::Gpu* gpu = inv->add_gpus();
      gpu->set_index(g.index);
      gpu->set_name(g.name);
      gpu->set_memory_bytes(g.memory_bytes);
      gpu->set_compute_capability(absl::StrCat(g.cc_major, ".", g.cc_minor));
      gpu->set_fake(g.fake);
    }
    for (const auto& [k, v] : options_.labels) (*reg->mutable_labels())[k] = v;
    reg->set_price_per_hour(options_.price_per_hour);
    reg->set_http_address(options_.http_address);
    reg->set_grpc_address(options_.grpc_address);
    reg->set_agent_version(FERRY_VERSION);
    absl::MutexLock lock(&mu_);
    for (const auto& [id, r] : replicas_) {
      if (r.state == v1::REPLICA_STATE_READY) *reg->add_replicas() = StatusOf(r);
    }
    for (const auto& name : warm_) reg->add_warm_functions(name);
    return m;
  }

  // The agent process's CPU use since the last call (0..1 of the node's usable cores) and RSS.
  void FillLoad(v1::NodeLoad* load) {
    std::ifstream stat("/proc/self/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const size_t paren = text.rfind(')');
    if (paren != std::string::npos) {
      std::istringstream fields(text.substr(paren + 2));
      std::string skip;
      for (int i = 0; i < 11; ++i) fields >> skip;  // fields 3..13
      int64_t utime = 0, stime = 0;
      fields >> utime >> stime;
      const int64_t ticks = utime + stime;
      const auto now = std::chrono::steady_clock::now();
      const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
      if (last_cpu_ticks_ >= 0 && hz > 0) {
        const double wall_s = std::chrono::duration<double>(now - last_cpu_time_).count();
        const double cpu_s = static_cast<double>(ticks - last_cpu_ticks_) / hz;
        if (wall_s > 0) {
          load->set_cpu_utilization(
              std::min(1.0, cpu_s / wall_s / std::max(1.0, options_.inventory.cpu_cores)));
        }
      }
      last_cpu_ticks_ = ticks;
      last_cpu_time_ = now;
    }
    std::ifstream statm("/proc/self/statm");
    int64_t pages = 0, resident = 0;
    if (statm >> pages >> resident) load->set_memory_used_bytes(resident * sysconf(_SC_PAGESIZE));
  }

  // Cumulative metering counters of every function (node-agent/meter.h); the control plane takes
  // differences between heartbeats.
  void FillUsage(v1::Heartbeat* hb) {
    const Meter& meter = options_.core->meter();
    hb->set_usage_epoch(meter.epoch());
    const auto& bounds = LatencyBoundsUs();
    for (const FunctionUsageSnapshot& s : meter.Snapshot()) {
      v1::FunctionUsage* u = hb->add_usage();
      u->set_function(s.function);
      u->set_requests(s.requests);
      u->set_cpu_us(s.cpu_us);
      u->set_gpu_us(s.gpu_us);
      u->set_load_us(s.load_us);
      u->set_overhead_us(s.overhead_us);
      u->set_cost_units(s.cost_units);
      for (size_t i = 0; i < s.latency_counts.size(); ++i) {
        if (s.latency_counts[i] == 0) continue;
        v1::LatencyBucket* b = u->add_latency();
        b->set_le_us(i < bounds.size() ? bounds[i] : 0);
        b->set_count(s.latency_counts[i]);
      }
    }
  }

  v1::AgentMessage HeartbeatMessage() {
    v1::AgentMessage m;
    v1::Heartbeat* hb = m.mutable_heartbeat();
    FillLoad(hb->mutable_load());
    FillUsage(hb);
    absl::MutexLock lock(&mu_);
    // Load per function (replicas of one function here share its host) for the autoscaler.
    std::map<std::string, FunctionHost::Load> load;
    for (const auto& [id, r] : replicas_) {
      if (load.count(r.function) > 0) continue;
      std::shared_ptr<FunctionHost> host = options_.core->Host(r.function);
      load[r.function] = host != nullptr ? host->load() : FunctionHost::Load{};
    }
    for (const auto& [id, r] : replicas_) {
      v1::ReplicaStatus* status = hb->add_replicas();
      *status = StatusOf(r);
      const FunctionHost::Load& l = load[r.function];
      status->set_requests_total(l.arrived);
      status->set_in_flight(l.in_flight);
      status->set_queued(l.queued);
    }
    for (const auto& name : warm_) hb->add_warm_functions(name);
    return m;
  }

  // Sends on the current stream, if any. Thread-safe (writes are serialised).
  void Send(const v1::AgentMessage& m) {
    absl::MutexLock lock(&write_mu_);
    if (stream_ != nullptr) stream_->Write(m);
  }

  void StreamLoop() {
    int64_t backoff_ms = 100;
    bool was_connected = true;  // log the first failure
    auto channel =
        grpc::CreateChannel(options_.control_address, grpc::InsecureChannelCredentials());
    while (!Stopping()) {
      auto stub = v1::AgentService::NewStub(channel);
      auto context = std::make_unique<grpc::ClientContext>();
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) break;
        context_ = context.get();
      }
      auto stream = stub->Connect(context.get());
      bool registered = false;
      if (stream->Write(RegisterMessage())) {
        {
          absl::MutexLock lock(&write_mu_);
          stream_ = stream.get();
        }
        absl::Notification stream_done;
        std::thread heartbeats;
        v1::ControlMessage msg;
        while (stream->Read(&msg)) {
          if (msg.has_registered()) {
            registered = true;
            backoff_ms = 100;
            was_connected = true;
            Log(absl::StrCat("registered with the control plane at ", options_.control_address,
                             " as node ", msg.registered().node_id(), " (heartbeat ",
                             msg.registered().heartbeat_interval_ms(), " ms)"));
            const int64_t interval =
                std::max<int64_t>(10, msg.registered().heartbeat_interval_ms());
            if (!heartbeats.joinable()) {
              heartbeats = std::thread([this, interval, &stream_done] {
                while (!stream_done.WaitForNotificationWithTimeout(absl::Milliseconds(interval))) {
                  Send(HeartbeatMessage());
                }
              });
            }
          } else if (msg.has_desired_replicas()) {
            absl::MutexLock lock(&mu_);
            desired_ = msg.desired_replicas();
            desired_version_++;
          }
        }
        stream_done.Notify();
        if (heartbeats.joinable()) heartbeats.join();
        {
          absl::MutexLock lock(&write_mu_);
          stream_ = nullptr;
        }
      }
      grpc::Status status = stream->Finish();
      {
        absl::MutexLock lock(&mu_);
        context_ = nullptr;
      }
      if (Stopping()) break;
      if (was_connected) {
        Log(absl::StrCat(registered ? "lost the control plane" : "cannot reach the control plane",
                         " at ", options_.control_address, " (", status.error_message(),
                         "); serving on, reconnecting with back-off"));
        was_connected = false;
      }
      const int64_t jitter = std::uniform_int_distribution<int64_t>(0, backoff_ms / 2)(rng_);
      if (!SleepUnlessStopping(absl::Milliseconds(backoff_ms + jitter))) break;
      backoff_ms = std::min(options_.max_backoff_ms, backoff_ms * 2);
    }
  }

  void SetState(const std::string& id, v1::ReplicaState state, const std::string& message) {
    v1::ReplicaStatus status;
    {
      absl::MutexLock lock(&mu_);
      auto it = replicas_.find(id);
      if (it == replicas_.end()) return;
      it->second.state = state;
      it->second.message = message;
      status = StatusOf(it->second);
    }
    v1::AgentMessage m;
    *m.mutable_replica_status() = status;
    Send(m);
  }

  bool OnRealGpu(int device_index) const {
    for (const auto& g : options_.inventory.gpus) {
      if (g.index == device_index) return !g.fake;
    }
    return false;
  }

  void ReconcileLoop() {
    int64_t seen = 0;
    while (true) {
      v1::DesiredReplicas desired;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this, &seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_ || desired_version_ != seen;
        };
        mu_.Await(absl::Condition(&ready));
        if (stopping_) return;
        seen = desired_version_;
        desired = desired_;
      }
      Reconcile(desired);
    }
  }

  void Reconcile(const v1::DesiredReplicas& desired) {
    // Group the desired replicas by function: one loaded function serves them all.
    std::map<std::string, std::vector<const v1::DesiredReplica*>> by_function;
    for (const auto& d : desired.replicas()) by_function[d.function()].push_back(&d);

    // Forget replicas no longer desired; unload functions with none left.
    std::set<std::string> unload;
    {
      absl::MutexLock lock(&mu_);
      std::set<std::string> wanted;
      for (const auto& d : desired.replicas()) wanted.insert(d.replica_id());
      for (auto it = replicas_.begin(); it != replicas_.end();) {
        if (wanted.count(it->first) == 0) {
          if (by_function.count(it->second.function) == 0) unload.insert(it->second.function);
          it = replicas_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (const std::string& fn : unload) {
      if (options_.core->UnloadFunction(fn).ok()) {
        Log(absl::StrCat("unloaded function '", fn, "' (no replica desired here any more)"));
      }
      absl::MutexLock lock(&mu_);
      loaded_generation_.erase(fn);
    }

    for (const auto& [fn, reps] : by_function) {
      const v1::DesiredReplica& first = *reps.front();
      bool needs_load;
      {
        absl::MutexLock lock(&mu_);
        auto it = loaded_generation_.find(fn);
        needs_load = it == loaded_generation_.end() || it->second != first.generation();
        for (const auto* d : reps) {
          auto [rit, inserted] = replicas_.try_emplace(d->replica_id());
          Replica& r = rit->second;
          if (inserted || r.generation != d->generation()) {
            r.id = d->replica_id();
            r.function = fn;
            r.generation = d->generation();
            r.device_index = d->device_index();
            r.hardware_kind = d->hardware_kind();
            r.state = needs_load ? v1::REPLICA_STATE_LOADING : v1::REPLICA_STATE_READY;
            r.message.clear();
          }
        }
      }
      if (!needs_load) {
        for (const auto* d : reps) SetState(d->replica_id(), v1::REPLICA_STATE_READY, "");
        continue;
      }
      for (const auto* d : reps) SetState(d->replica_id(), v1::REPLICA_STATE_LOADING, "");
      absl::Status status = Load(first);
      for (const auto* d : reps) {
        SetState(d->replica_id(), status.ok() ? v1::REPLICA_STATE_READY : v1::REPLICA_STATE_FAILED,
                 status.ok() ? "" : std::string(status.message()));
      }
      if (!status.ok()) {
        Log(absl::StrCat("replica ", first.replica_id(), " of '", fn,
                         "' failed to load: ", status.message()));
        continue;
      }
      {
        absl::MutexLock lock(&mu_);
        loaded_generation_[fn] = first.generation();
        warm_.insert(fn);
      }
      Log(absl::StrCat(
          "loaded function '", fn, "' generation ", first.generation(), " for replica ",
          first.replica_id(),
          first.device_index() >= 0
              ? absl::StrCat(" on GPU ", first.device_index(),
                             OnRealGpu(first.device_index()) ? "" : " (fake: runs on CPU)")
              : " on CPU"));
      if (options_.profile) Profile(first);
    }
  }

  absl::Status Load(const v1::DesiredReplica& d) {
    auto specs = ParseManifests(d.manifest(), d.source().empty() ? "control plane" : d.source(),
                                d.base_dir());
    if (!specs.ok()) return specs.status();
    if (specs->size() != 1) return absl::InvalidArgumentError("expected one Function document");
    // A real GPU's inventory index is its CUDA ordinal (cuda::ListGpus).
    const bool on_gpu = OnRealGpu(d.device_index());
    return options_.core->LoadFunction(specs->front(), on_gpu, on_gpu ? d.device_index() : 0);
  }

  // Measures batch latency at 1, 2, 4, ... maxBatchSize and sends the curve.
  void Profile(const v1::DesiredReplica& d) {
    std::shared_ptr<FunctionHost> host = options_.core->Host(d.function());
    if (host == nullptr) return;
    const ModelMetadata md = host->metadata();
    const int64_t max_batch = md.batched ? std::max<int64_t>(1, md.max_batch_size) : 1;
    constexpr int kRepeats = 5;
    constexpr int64_t kMaxBatchForProfile = 1024;
    const absl::Time give_up = absl::Now() + absl::Seconds(5);
    {
      // Warm-up: first calls pay one-time costs (lazy GPU library init, caches).
      absl::Notification warm;
      host->InferUnmetered(
          SyntheticRequest(d.function(), md, std::min(max_batch, kMaxBatchForProfile)),
          [&](absl::StatusOr<InferenceResponse>) { warm.Notify(); });
      warm.WaitForNotification();
    }
    v1::AgentMessage m;
    v1::Profile* p = m.mutable_profile();
    p->set_function(d.function());
    p->set_replica_id(d.replica_id());
    p->set_hardware_kind(d.hardware_kind().empty() ? "cpu" : d.hardware_kind());
    for (int64_t n = 1; n <= std::min(max_batch, kMaxBatchForProfile) && !Stopping();
         n = n * 2 > max_batch && n < max_batch ? max_batch : n * 2) {
      std::vector<double> samples;
      for (int i = 0; i < kRepeats; ++i) {
        absl::Notification done;
        bool ok = false;
        const auto start = std::chrono::steady_clock::now();
        host->InferUnmetered(SyntheticRequest(d.function(), md, n),
                             [&](absl::StatusOr<InferenceResponse> r) {
                               ok = r.ok();
                               done.Notify();
                             });
        done.WaitForNotification();
        const double us =
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                .count();
        if (!ok) break;
        samples.push_back(us);
      }
      if (samples.empty()) break;
      std::sort(samples.begin(), samples.end());
      auto* pt = p->add_points();
      pt->set_batch_size(static_cast<int32_t>(n));
      pt->set_latency_us(samples[samples.size() / 2]);
      if (absl::Now() > give_up) break;
    }
    if (p->points_size() == 0) {
      Log(absl::StrCat("could not profile '", d.function(),
                       "' on synthetic inputs; the control plane keeps its default"));
      return;
    }
    Log(absl::StrCat("profiled '", d.function(), "': ", p->points_size(), " batch sizes, batch 1 ",
                     static_cast<int64_t>(p->points(0).latency_us()), " us"));
    Send(m);
  }

  const ControlClientOptions options_;
  std::mt19937_64 rng_;
  // FillLoad's previous sample; touched only by the heartbeat thread of the current stream.
  int64_t last_cpu_ticks_ = -1;
  std::chrono::steady_clock::time_point last_cpu_time_;
  std::thread stream_thread_;
  std::thread reconcile_thread_;

  absl::Mutex write_mu_;
  grpc::ClientReaderWriter<v1::AgentMessage, v1::ControlMessage>* stream_
      ABSL_GUARDED_BY(write_mu_) = nullptr;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  v1::DesiredReplicas desired_ ABSL_GUARDED_BY(mu_);
  int64_t desired_version_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, Replica> replicas_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> loaded_generation_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> warm_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<ControlClient>> ControlClient::Create(
    const ControlClientOptions& options) {
  if (options.core == nullptr) return absl::InvalidArgumentError("control client: no core");
  if (options.control_address.empty()) {
    return absl::InvalidArgumentError("control client: --control HOST:PORT is empty");
  }
  if (options.node_name.empty()) return absl::InvalidArgumentError("control client: no node name");
  auto impl = std::make_unique<Impl>(options);
  impl->Start();
  return std::unique_ptr<ControlClient>(new ControlClient(std::move(impl)));
}

ControlClient::ControlClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ControlClient::~ControlClient() { Stop(); }

void ControlClient::Stop() { impl_->Stop(); }

}  // namespace ferry::agent
