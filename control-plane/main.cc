// ferry-control: the control plane. Serves the ControlPlane API (apply/get/list/delete
// functions, nodes, routes and their watch) and the AgentService stream on one gRPC port, keeps
// its state in an SQLite file, places replicas on registered agents and expires their leases.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "control-plane/control_metrics.h"
#include "control-plane/controller.h"
#include "control-plane/gateway.h"
#include "control-plane/service.h"
#include "control-plane/sqlite_state_store.h"
#include "ferry/flag_spelling.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7070",
          "HOST:PORT for the gRPC control API and agent streams (port 0 = pick a free one)");
ABSL_FLAG(std::string, state, "ferry-state",
          "folder for the control plane's state (SQLite file ferry.db inside)");
ABSL_FLAG(std::string, admin_token_file, "",
          "file holding the bearer token the ControlPlane API requires (empty = no auth)");
ABSL_FLAG(int64_t, heartbeat_ms, 500, "agent heartbeat interval, milliseconds");
ABSL_FLAG(int64_t, lease_ms, 2000, "an agent silent this long is lost, milliseconds");
ABSL_FLAG(std::string, http_listen, "",
          "HOST:PORT for the data-plane HTTP gateway (KServe v2, Clipper predict) that forwards "
          "to ready replicas (port 0 = pick a free one; empty = no gateway)");
ABSL_FLAG(int, gateway_threads, 2, "gateway io threads");
ABSL_FLAG(int64_t, gateway_max_body_bytes, int64_t{64} << 20,
          "larger request bodies are answered 413 by the gateway");
ABSL_FLAG(int, gateway_max_connections, 10000, "open gateway client connections at most");
ABSL_FLAG(int64_t, gateway_upstream_timeout_ms, 60000,
          "a replica that has not answered a forwarded request in this time: 504");
ABSL_FLAG(int, gateway_hold_max_requests, 1000,
          "requests the gateway holds at most while functions without a ready replica scale from "
          "zero (beyond: 503 at once)");
ABSL_FLAG(int64_t, gateway_hold_timeout_ms, 30000,
          "a request held for a replica longer than this is answered 503 with the reason");
ABSL_FLAG(int64_t, autoscale_interval_ms, 500, "how often the autoscaler evaluates, milliseconds");
ABSL_FLAG(int64_t, drain_ms, 1000,
          "a replica being scaled down gets no new routes this long before its agent unloads it");

namespace {

sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

void Log(const std::string& line) {
  std::fprintf(stderr, "ferry-control: %s\n", line.c_str());
  std::fflush(stderr);
}

int Run() {
  std::string token;
  if (const std::string path = absl::GetFlag(FLAGS_admin_token_file); !path.empty()) {
    std::ifstream in(path);
    if (!in) {
      Log(absl::StrCat("error: cannot read --admin_token_file ", path));
      return 2;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    token = std::string(absl::StripAsciiWhitespace(ss.str()));
    if (token.empty()) {
      Log(absl::StrCat("error: --admin_token_file ", path, " is empty"));
      return 2;
    }
  }

  auto store = ferry::control::SqliteStateStore::Create(
      {.path = absl::StrCat(absl::GetFlag(FLAGS_state), "/ferry.db")});
  if (!store.ok()) {
    Log(absl::StrCat("error: ", store.status().message()));
    return 1;
  }
  ferry::control::ControllerOptions options;
  options.store = store->get();
  options.heartbeat_ms = absl::GetFlag(FLAGS_heartbeat_ms);
  options.lease_ms = absl::GetFlag(FLAGS_lease_ms);
  options.autoscale_interval_ms = absl::GetFlag(FLAGS_autoscale_interval_ms);
  options.drain_ms = absl::GetFlag(FLAGS_drain_ms);
  auto controller = ferry::control::Controller::Create(options);
  if (!controller.ok()) {
    Log(absl::StrCat("error: ", controller.status().message()));
    return 1;
  }

  ferry::control::ControlPlaneService control_service(controller->get(), token);
  ferry::control::AgentServiceImpl agent_service(controller->get());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&control_service);
  builder.RegisterService(&agent_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    Log(absl::StrCat("error: cannot listen on ", absl::GetFlag(FLAGS_listen)));
    return 1;
  }
  std::string host = absl::GetFlag(FLAGS_listen);
  host = host.substr(0, host.rfind(':'));
  Log(absl::StrCat("listening on ", host, ":", port, " (state ", absl::GetFlag(FLAGS_state),
                   "/ferry.db, heartbeat ", options.heartbeat_ms, " ms, lease ", options.lease_ms,
                   " ms", token.empty() ? ", no admin token" : ", admin token required", ")"));

  // The stop signals were blocked in main() before any thread started (gRPC, the store, the
  // gateway inherit the mask); the main thread waits for them with sigwait.
  sigset_t stop_signals = StopSignals();

  // The gateway's io threads start after the mask, so the stop signals reach sigwait.
  std::unique_ptr<ferry::control::Gateway> gateway;
  std::unique_ptr<ferry::control::RouteFollower> follower;
  if (const std::string http = absl::GetFlag(FLAGS_http_listen); !http.empty()) {
    const size_t colon = http.rfind(':');
    int http_port = -1;
    if (colon == std::string::npos || !absl::SimpleAtoi(http.substr(colon + 1), &http_port)) {
      Log(absl::StrCat("error: --http_listen wants HOST:PORT, got '", http, "'"));
      return 2;
    }
    ferry::control::GatewayOptions gw;
    gw.host = http.substr(0, colon);
    if (gw.host.size() >= 2 && gw.host.front() == '[')
      gw.host = gw.host.substr(1, gw.host.size() - 2);
    gw.port = http_port;
    gw.num_threads = absl::GetFlag(FLAGS_gateway_threads);
    gw.max_body_bytes = absl::GetFlag(FLAGS_gateway_max_body_bytes);
    gw.max_connections = absl::GetFlag(FLAGS_gateway_max_connections);
    gw.upstream_timeout_ms = absl::GetFlag(FLAGS_gateway_upstream_timeout_ms);
    ferry::control::Controller* ctl = controller->get();
    gw.why_unroutable = [ctl](const std::string& fn) -> std::optional<std::string> {
      auto status = ctl->GetFunction(fn);
      if (!status.ok()) return std::nullopt;
      if (status->pending_reasons_size() > 0) return absl::StrJoin(status->pending_reasons(), "; ");
      return absl::StrCat(status->ready_replicas(), "/", status->desired_replicas(),
                          " replicas ready (the others are being placed or loaded)");
    };
    gw.hold_max_requests = absl::GetFlag(FLAGS_gateway_hold_max_requests);
    gw.hold_timeout_ms = absl::GetFlag(FLAGS_gateway_hold_timeout_ms);
    gw.demand_replica = [ctl](const std::string& fn) {
      absl::StatusOr<bool> coming = ctl->DemandReplica(fn);
      return coming.ok() && *coming;
    };
    // Set once the gateway exists; it is shut down before the controller goes.
    static std::atomic<ferry::control::Gateway*> metrics_gateway{nullptr};
    gw.metrics_text = [ctl]() {
      ferry::control::Gateway::Stats stats;
      if (auto* g = metrics_gateway.load()) stats = g->stats();
      return ferry::control::RenderControlMetrics(ctl->ListFunctions(), &stats);
    };
    auto created = ferry::control::Gateway::Create(gw);
    if (!created.ok()) {
      Log(absl::StrCat("error: gateway: ", created.status().message()));
      return 1;
    }
    gateway = std::move(*created);
    metrics_gateway.store(gateway.get());
    follower = std::make_unique<ferry::control::RouteFollower>(ctl, gateway.get());
    Log(absl::StrCat("gateway listening on ", gw.host, ":", gateway->port(),
                     " (HTTP data plane: KServe v2, Clipper predict)"));
  }

  absl::Notification stopping;
  const int64_t tick_ms = std::max<int64_t>(10, std::min<int64_t>(100, options.heartbeat_ms / 2));
  std::thread ticker([&] {
    while (!stopping.WaitForNotificationWithTimeout(absl::Milliseconds(tick_ms))) {
      (*controller)->Tick();
    }
  });

  int sig = 0;
  sigwait(&stop_signals, &sig);
  Log(absl::StrCat("signal ", sig, ": stopping"));
  stopping.Notify();
  ticker.join();
  // Usage taken since the last periodic flush (agents' counters already moved past it).
  if (absl::Status s = (*controller)->FlushUsage(); !s.ok()) {
    Log(absl::StrCat("warning: could not store the last usage: ", s.message()));
  }
  if (follower != nullptr) follower->Stop();
  if (gateway != nullptr) gateway->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server->Wait();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Some abseil builds (Debian's among them) check every absl::Mutex acquisition for lock-order
  // cycles, which costs about 50 ns per lock (docs/perf.md, "Mutex deadlock detection"). The
  // daemons turn it off; unit tests keep it on, so they still catch cycles.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Block the stop signals before any library or server starts a thread, so that they are
  // delivered to sigwait in Run() and never kill a worker thread's process with the default
  // action.
  const sigset_t stop_signals = StopSignals();
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // --help lists ferry-control's own flags (abseil's default matches files named like the
  // binary, and this one is main.cc, so it listed none).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view path) {
    return absl::StrContains(path, "control-plane/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "ferry-control --listen HOST:PORT --state DIR [--admin_token_file FILE]\n"
      "The ferry control plane: function and node registry, placement, routes.");
  ferry::DashedFlagArgs args(argc, argv);
  absl::ParseCommandLine(args.argc(), args.argv());
  return Run();
}
