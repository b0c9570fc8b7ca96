// ferry-agent: the node agent. In standalone mode it serves every Function found in the given
// manifests over HTTP (KServe v2, Clipper predict, Prometheus metrics) and gRPC (KServe v2).
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cuda/device.h"
#include "ferry/flag_spelling.h"
#include "ferry/manifest.h"
#include "kernels/plugin_runtime.h"
#include "node-agent/byte_budget.h"
#include "node-agent/control_client.h"
#include "node-agent/grpc_server.h"
#include "node-agent/http_server.h"
#include "node-agent/inventory.h"
#include "node-agent/log_limiter.h"
#include "node-agent/serving_core_impl.h"

ABSL_FLAG(std::string, manifests, "", "manifest file or folder of manifests to serve");
ABSL_FLAG(std::string, host, "127.0.0.1", "address to listen on");
ABSL_FLAG(std::string, plugin_dir, "",
          "folder of function libraries (runtime: plugin) this agent may load; only files inside "
          "it load. Empty: plugin functions are refused");
ABSL_FLAG(int, http_port, 8000, "HTTP port (0 = pick a free one)");
ABSL_FLAG(int, grpc_port, 8001, "gRPC port (0 = pick a free one; -1 = no gRPC)");
ABSL_FLAG(int, http_threads, 0,
          "HTTP event-loop threads (0 = one per CPU this process may run on)");
ABSL_FLAG(int64_t, max_body_bytes, int64_t{64} << 20, "largest accepted request body, bytes");
ABSL_FLAG(int64_t, max_inflight_bytes, int64_t{256} << 20,
          "request bytes (HTTP bodies, gRPC messages) held at once across all connections; "
          "a request beyond it is answered 429 / RESOURCE_EXHAUSTED at once");
ABSL_FLAG(int, max_connections, 10000,
          "open HTTP connections at most; more are accepted and closed (with a 503)");
ABSL_FLAG(double, http_header_timeout_seconds, 10,
          "a request header must be complete this long after its first byte (or the accept)");
ABSL_FLAG(double, http_body_timeout_seconds, 10,
          "a request body may go this long without a byte arriving");
ABSL_FLAG(double, http_idle_timeout_seconds, 60,
          "a kept-alive connection may wait this long for its next request");
ABSL_FLAG(double, http_write_timeout_seconds, 30, "writing a response may take this long");
ABSL_FLAG(int, grpc_max_concurrent_streams, 1000, "concurrent gRPC calls per connection");
ABSL_FLAG(double, shutdown_grace_seconds, 30,
          "on SIGTERM/SIGINT, accepted requests have this long to finish; then every connection "
          "is closed");
// Control-plane mode (instead of --manifests): see node-agent/control_client.h.
ABSL_FLAG(std::string, control, "", "HOST:PORT of ferry-control: register and run what it places");
ABSL_FLAG(std::string, node_name, "", "node name in the cluster (default: hostname-httpport)");
ABSL_FLAG(std::vector<std::string>, labels, {}, "node labels, KEY=VALUE[,KEY=VALUE...]");
ABSL_FLAG(double, price_per_hour, 0, "this node's price in dollars per hour (for placement)");
ABSL_FLAG(std::string, advertise_host, "",
          "host clients reach this agent's data plane at (default: --host, or the hostname "
          "when --host is 0.0.0.0)");
ABSL_FLAG(bool, exit_on_load_error, false,
          "standalone: exit when any function fails to load (default: serve the others and "
          "report that one not ready, with its error)");
ABSL_FLAG(int, gpu_index, -1,
          "standalone: CUDA device ordinal that every GPU function runs on; -1 (default) spreads "
          "them over the GPUs that fit their gpuMemoryMiB and minComputeCapability");
ABSL_FLAG(int64_t, weight_cache_mib, 1024,
          "host memory (MiB) kept for the prepared weights of unloaded functions, so that a "
          "function scaled to zero and back starts without reading its weights again; 0 keeps "
          "none");
ABSL_FLAG(bool, profile, true, "profile each replica when it becomes ready (control-plane mode)");
ABSL_FLAG(std::string, testonly_fake_gpu, "",
          "TESTS ONLY (needs FERRY_TESTONLY=1): advertise fake GPUs NAME:MEMORY:CC[,...], e.g. "
          "H200:141GiB:9.0; replicas placed on them run on the CPU");

namespace {

// SIGINT and SIGTERM are blocked in every thread, so that none of them dies of a stop signal;
// the main thread lets them in only while it waits for them (WaitForSignalOrByte). Libraries
// start threads before main runs (OpenBLAS in its ELF constructor), and threads inherit the
// signal mask of their creator, so the mask must be set before any library constructor: an
// executable's DT_PREINIT_ARRAY runs before the constructors of every shared library it loads.
void BlockStopSignals(int, char**, char**) {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigprocmask(SIG_BLOCK, &stop, nullptr);
}
using PreinitFunction = void (*)(int, char**, char**);
__attribute__((section(".preinit_array"), used)) PreinitFunction block_stop_signals_early =
    &BlockStopSignals;

// Self-pipe: the stop-signal handler writes the signal number, the stopping thread writes 0.
// A handler (not the default disposition, which kills) also covers a thread that unblocked the
// signals itself: the signal lands there and still only becomes a byte in this pipe.
int g_signal_pipe[2] = {-1, -1};

extern "C" void OnStopSignal(int signal_number) {
  const int saved_errno = errno;
  const auto byte = static_cast<unsigned char>(signal_number);
  [[maybe_unused]] const ssize_t n = write(g_signal_pipe[1], &byte, 1);
  errno = saved_errno;
}

bool InstallStopSignalHandlers() {
  if (pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return false;
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigfillset(&action.sa_mask);
  return sigaction(SIGINT, &action, nullptr) == 0 && sigaction(SIGTERM, &action, nullptr) == 0;
}

// Waits for a byte on the self-pipe (a stop signal's number, or 0), letting the stop signals in
// on this thread only while it waits. -1 when `timeout_ms` (>= 0; < 0: none) passes first.
int WaitForSignalOrByte(int64_t timeout_ms) {
  sigset_t waiting;
  pthread_sigmask(SIG_SETMASK, nullptr, &waiting);
  sigdelset(&waiting, SIGINT);
  sigdelset(&waiting, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    unsigned char byte = 0;
    if (read(g_signal_pipe[0], &byte, 1) == 1) return byte;
    pollfd fd = {g_signal_pipe[0], POLLIN, 0};
    timespec left = {};
    if (timeout_ms >= 0) {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
      if (ns <= 0) return -1;
      left.tv_sec = ns / 1'000'000'000;
      left.tv_nsec = ns % 1'000'000'000;
    }
    // EINTR (a signal was handled here) and readiness both loop back to the read.
    ppoll(&fd, 1, timeout_ms >= 0 ? &left : nullptr, &waiting);
  }
}

const char* SignalName(int signal_number) {
  return signal_number == SIGINT ? "SIGINT" : signal_number == SIGTERM ? "SIGTERM" : "signal";
}

// Seconds from a flag as milliseconds; -1 when not a finite number >= 0.
int64_t FlagMillis(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0 || seconds > 1e9) return -1;
  return static_cast<int64_t>(std::llround(seconds * 1000));
}

// CPUs this process may run on (its affinity mask, so `taskset` and container CPU sets count).
int UsableCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

void Log(const std::string& line) {
  std::fprintf(stderr, "ferry-agent: %s\n", line.c_str());
  std::fflush(stderr);
}

// Descriptors are what connections cost: the soft limit goes up to the hard one.
void RaiseOpenFileLimit(int max_connections) {
  rlimit limit = {};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < static_cast<rlim_t>(max_connections)) {
    Log(absl::StrCat("warning: the open-file limit (", limit.rlim_cur,
                     ") is below --max-connections (", max_connections,
                     "): connections beyond it wait in the listen backlog"));
  }
}

int Run() {
  // Before any server thread exists: protobuf's handler is process-wide and not thread-safe.
  ferry::agent::InstallProtobufLogLimiter("ferry-agent: ");
  const std::string manifests = absl::GetFlag(FLAGS_manifests);
  const std::string control = absl::GetFlag(FLAGS_control);
  if (manifests.empty() == control.empty()) {
    Log("error: give either --manifests (a manifest file or a folder of them: standalone) or "
        "--control HOST:PORT (run what the control plane places)");
    return 2;
  }
  auto specs =
      control.empty()
          ? ferry::LoadManifests(manifests)
          : absl::StatusOr<std::vector<ferry::FunctionSpec>>(std::vector<ferry::FunctionSpec>{});
  if (!specs.ok()) {
    Log(absl::StrCat("error: ", specs.status().message()));
    return 1;
  }

  ferry::agent::AgentCoreOptions core_options;
  core_options.functions = *specs;
  core_options.exit_on_load_error = absl::GetFlag(FLAGS_exit_on_load_error);
  core_options.gpu_index = absl::GetFlag(FLAGS_gpu_index);
  core_options.log = Log;
  const int64_t weight_cache_mib = absl::GetFlag(FLAGS_weight_cache_mib);
  if (weight_cache_mib < 0 || weight_cache_mib > (int64_t{1} << 30)) {
    Log(absl::StrCat("error: --weight-cache-mib: ", weight_cache_mib,
                     " is out of range [0, 1073741824]"));
    return 1;
  }
  core_options.weight_cache_bytes = weight_cache_mib << 20;
  auto gpus = ferry::cuda::ListGpus();
  if (gpus.ok()) {
    core_options.num_gpus = static_cast<int>(gpus->size());
    for (const auto& g : *gpus) {
      core_options.gpus.push_back({.index = g.index,
                                   .name = g.name,
                                   .cc_major = g.compute_capability_major,
                                   .cc_minor = g.compute_capability_minor,
                                   .memory_bytes = g.total_memory_bytes,
                                   .free_bytes = g.free_memory_bytes});
    }
    for (const auto& g : *gpus) {
      Log(absl::StrCat("GPU ", g.index, ": ", g.name, " (compute capability ",
                       g.compute_capability_major, ".", g.compute_capability_minor, ", ",
                       g.total_memory_bytes >> 20, " MiB)"));
    }
  } else {
    core_options.gpu_absent_reason = std::string(gpus.status().message());
    Log(absl::StrCat("serving on CPU only: ", gpus.status().message()));
  }

  // The stop signals are blocked since before the first thread (kBlockStopSignals; again here
  // in case the preinit array was skipped); from now on they become bytes in the self-pipe.
  BlockStopSignals(0, nullptr, nullptr);
  if (!InstallStopSignalHandlers()) {
    Log("error: cannot install the SIGINT/SIGTERM handlers");
    return 1;
  }
  std::signal(SIGPIPE, SIG_IGN);
  const int64_t grace_ms = FlagMillis(absl::GetFlag(FLAGS_shutdown_grace_seconds));
  if (grace_ms < 0 || grace_ms > int64_t{3600} * 1000) {
    Log("error: --shutdown-grace-seconds must be in [0, 3600]");
    return 2;
  }
  if (absl::GetFlag(FLAGS_max_inflight_bytes) <= 0) {
    Log("error: --max-inflight-bytes must be positive");
    return 2;
  }
  RaiseOpenFileLimit(absl::GetFlag(FLAGS_max_connections));
  // Shared by both servers; declared before them so that it outlives them.
  ferry::agent::ByteBudget byte_budget(absl::GetFlag(FLAGS_max_inflight_bytes));

  // Before any function loads: plugins come from this folder only.
  if (const std::string plugin_dir = absl::GetFlag(FLAGS_plugin_dir); !plugin_dir.empty()) {
    struct stat st = {};
    if (stat(plugin_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      Log(absl::StrCat("error: --plugin-dir ", plugin_dir, " is not a folder"));
      return 2;
    }
    ferry::kernels::SetPluginDirectory(plugin_dir);
    Log(absl::StrCat("function plugins load from ", plugin_dir));
  }
  auto core = ferry::agent::AgentCore::Create(core_options);
  if (!core.ok()) {
    Log(absl::StrCat("error: ", core.status().message()));
    return 1;
  }
  const std::map<std::string, absl::Status> failed = (*core)->FailedFunctions();
  for (const auto& spec : *specs) {
    if (auto it = failed.find(spec.name); it != failed.end()) {
      Log(absl::StrCat("error: ", it->second.message(),
                       " (serving the other functions; --exit-on-load-error exits instead)"));
      continue;
    }
    Log(absl::StrCat("loaded function '", spec.name, "' (runtime ", spec.runtime, ", batching ",
                     std::string(ferry::BatchPolicyName(spec.batching.policy)), " max ",
                     spec.batching.max_batch_size, ") from ", spec.source));
  }

  ferry::agent::HttpServerOptions http_options;
  http_options.host = absl::GetFlag(FLAGS_host);
  http_options.port = absl::GetFlag(FLAGS_http_port);
  http_options.num_threads =
      absl::GetFlag(FLAGS_http_threads) > 0 ? absl::GetFlag(FLAGS_http_threads) : UsableCpus();
  http_options.max_body_bytes = absl::GetFlag(FLAGS_max_body_bytes);
  http_options.byte_budget = &byte_budget;
  http_options.max_connections = absl::GetFlag(FLAGS_max_connections);
  http_options.header_timeout_ms = FlagMillis(absl::GetFlag(FLAGS_http_header_timeout_seconds));
  http_options.body_timeout_ms = FlagMillis(absl::GetFlag(FLAGS_http_body_timeout_seconds));
  http_options.idle_timeout_ms = FlagMillis(absl::GetFlag(FLAGS_http_idle_timeout_seconds));
  http_options.write_timeout_ms = FlagMillis(absl::GetFlag(FLAGS_http_write_timeout_seconds));
  ferry::agent::AgentCore* core_ptr = core->get();
  http_options.metrics_text = [core_ptr] { return core_ptr->MetricsText(); };
  auto http = ferry::agent::HttpServer::Create(http_options, core_ptr);
  if (!http.ok()) {
    Log(absl::StrCat("error: HTTP server: ", http.status().message()));
    return 1;
  }

  std::unique_ptr<ferry::agent::GrpcServer> grpc;
  std::string grpc_address = "off";
  if (absl::GetFlag(FLAGS_grpc_port) >= 0) {
    ferry::agent::GrpcServerOptions grpc_options;
    grpc_options.host = absl::GetFlag(FLAGS_host);
    grpc_options.port = absl::GetFlag(FLAGS_grpc_port);
    grpc_options.max_message_bytes = absl::GetFlag(FLAGS_max_body_bytes);
    grpc_options.byte_budget = &byte_budget;
    grpc_options.max_concurrent_streams = absl::GetFlag(FLAGS_grpc_max_concurrent_streams);
    auto server = ferry::agent::GrpcServer::Create(grpc_options, core_ptr);
    if (!server.ok()) {
      Log(absl::StrCat("error: gRPC server: ", server.status().message()));
      return 1;
    }
    grpc = *std::move(server);
    grpc_address = absl::StrCat(grpc_options.host, ":", grpc->port());
  }
  Log(absl::StrCat("listening http=", http_options.host, ":", (*http)->port(),
                   " grpc=", grpc_address, " (", http_options.num_threads, " HTTP threads)"));
  std::unique_ptr<ferry::agent::ControlClient> control_client;
  if (!control.empty()) {
    auto inventory = ferry::agent::DiscoverInventory(absl::GetFlag(FLAGS_testonly_fake_gpu));
    if (!inventory.ok()) {
      Log(absl::StrCat("error: ", inventory.status().message()));
      return 2;
    }
    ferry::agent::ControlClientOptions cc;
    cc.control_address = control;
    cc.inventory = *inventory;
    std::string advertise = absl::GetFlag(FLAGS_advertise_host);
    if (advertise.empty()) {
      advertise = http_options.host;
      if (advertise == "0.0.0.0" || advertise == "::" || advertise.empty()) {
        advertise = inventory->hostname;
      }
    }
    cc.http_address = absl::StrCat(advertise, ":", (*http)->port());
    if (grpc != nullptr) cc.grpc_address = absl::StrCat(advertise, ":", grpc->port());
    cc.node_name = absl::GetFlag(FLAGS_node_name);
    if (cc.node_name.empty())
      cc.node_name = absl::StrCat(inventory->hostname, "-", (*http)->port());
    for (const std::string& kv : absl::GetFlag(FLAGS_labels)) {
      const size_t eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) {
        Log(absl::StrCat("error: --labels: got \"", kv, "\", expected KEY=VALUE"));
        return 2;
      }
      cc.labels[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    cc.price_per_hour = absl::GetFlag(FLAGS_price_per_hour);
    cc.core = core_ptr;
    cc.profile = absl::GetFlag(FLAGS_profile);
    cc.log = Log;
    for (const auto& g : inventory->gpus) {
      if (g.fake) Log(absl::StrCat("TEST ONLY: advertising fake GPU ", g.index, ": ", g.name));
    }
    auto client = ferry::agent::ControlClient::Create(cc);
    if (!client.ok()) {
      Log(absl::StrCat("error: ", client.status().message()));
      return 2;
    }
    control_client = *std::move(client);
    Log(absl::StrCat("node ", cc.node_name, ": ", inventory->cpu_cores, " CPU cores, ",
                     inventory->memory_bytes >> 20, " MiB, ", inventory->gpus.size(), " GPUs, $",
                     cc.price_per_hour, "/h; control plane ", control));
  }
  Log("ready");

  const int signal_number = WaitForSignalOrByte(-1);
  Log(absl::StrCat("received ", SignalName(signal_number),
                   ": stopping (finishing accepted requests, for ", grace_ms / 1000.0,
                   " s at most)"));
  const auto deadline = absl::Now() + absl::Milliseconds(grace_ms);
  const auto left_ms = [deadline] {
    return std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now()));
  };
  // The stop runs on its own thread so that this one keeps taking signals: a second SIGTERM
  // (or SIGINT) during the drain is logged and otherwise ignored; the grace period bounds the
  // drain anyway.
  std::thread stopper([&] {
    if (control_client != nullptr) control_client->Stop();
    (*http)->StopAccepting();
    if (grpc != nullptr) grpc->Shutdown(left_ms());
    (*core)->Drain();  // bounded by the watchdog below
    (*http)->Shutdown(deadline);
    const unsigned char done = 0;
    [[maybe_unused]] const ssize_t n = write(g_signal_pipe[1], &done, 1);
  });
  // A request the core cannot finish (a function that never returns) must not keep the agent
  // alive: shortly after the grace period it exits regardless.
  constexpr int64_t kWatchdogMarginMs = 2000;
  while (true) {
    const int byte = WaitForSignalOrByte(left_ms() + kWatchdogMarginMs);
    if (byte == 0) break;
    if (byte < 0) {
      Log("error: requests still running after the grace period; exiting without them");
      std::_Exit(1);
    }
    Log(absl::StrCat("received ", SignalName(byte), " again: already stopping (",
                     left_ms() / 1000.0, " s of grace left)"));
  }
  stopper.join();
  Log("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Some abseil builds (Debian's among them) check every absl::Mutex acquisition for lock-order
  // cycles, which costs about 50 ns per lock on the request path (docs/perf.md, "Mutex deadlock
  // detection"). The daemons turn it off; unit tests keep it on, so they still catch cycles.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // --help lists the agent's own flags (abseil's default matches files named like the binary).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view path) {
    return absl::StrContains(path, "node-agent/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "ferry node agent. Standalone: ferry-agent --manifests DIR_OR_FILE "
      "[--http-port 8000] [--grpc-port 8001]");
  ferry::DashedFlagArgs args(argc, argv);
  absl::ParseCommandLine(args.argc(), args.argv());
  return Run();
}
