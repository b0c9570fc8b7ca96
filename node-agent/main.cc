// ferry-agent: the node agent. In standalone mode it serves every Function found in the given
// manifests over HTTP (KServe v2, Clipper predict, Prometheus metrics) and gRPC (KServe v2).
#include <sched.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
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
#include "cuda/device.h"
#include "ferry/manifest.h"
#include "node-agent/grpc_server.h"
#include "node-agent/http_server.h"
#include "node-agent/serving_core_impl.h"

ABSL_FLAG(std::string, manifests, "", "manifest file or folder of manifests to serve");
ABSL_FLAG(std::string, host, "127.0.0.1", "address to listen on");
ABSL_FLAG(int, http_port, 8000, "HTTP port (0 = pick a free one)");
ABSL_FLAG(int, grpc_port, 8001, "gRPC port (0 = pick a free one; -1 = no gRPC)");
ABSL_FLAG(int, http_threads, 0,
          "HTTP event-loop threads (0 = one per CPU this process may run on)");
ABSL_FLAG(int64_t, max_body_bytes, int64_t{64} << 20, "largest accepted request body, bytes");

namespace {

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

int Run() {
  const std::string manifests = absl::GetFlag(FLAGS_manifests);
  if (manifests.empty()) {
    Log("error: --manifests is required (a manifest file or a folder of them)");
    return 2;
  }
  auto specs = ferry::LoadManifests(manifests);
  if (!specs.ok()) {
    Log(absl::StrCat("error: ", specs.status().message()));
    return 1;
  }

  ferry::agent::AgentCoreOptions core_options;
  core_options.functions = *specs;
  auto gpus = ferry::cuda::ListGpus();
  if (gpus.ok()) {
    core_options.num_gpus = static_cast<int>(gpus->size());
    for (const auto& g : *gpus) {
      Log(absl::StrCat("GPU ", g.index, ": ", g.name, " (compute capability ",
                       g.compute_capability_major, ".", g.compute_capability_minor, ", ",
                       g.total_memory_bytes >> 20, " MiB)"));
    }
  } else {
    core_options.gpu_absent_reason = std::string(gpus.status().message());
    Log(absl::StrCat("serving on CPU only: ", gpus.status().message()));
  }

  // Block the stop signals in every thread; the main thread waits for them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  auto core = ferry::agent::AgentCore::Create(core_options);
  if (!core.ok()) {
    Log(absl::StrCat("error: ", core.status().message()));
    return 1;
  }
  for (const auto& spec : *specs) {
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
  Log("ready");

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  Log(absl::StrCat("received ", signal_number == SIGINT ? "SIGINT" : "SIGTERM",
                   ": stopping (finishing accepted requests)"));
  (*http)->StopAccepting();
  if (grpc != nullptr) grpc->Shutdown();
  (*core)->Drain();
  (*http)->Shutdown();
  Log("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
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
  // Accept the conventional dashed spelling (--http-port) as well as abseil's (--http_port).
  std::vector<std::string> args(argv, argv + argc);
  std::vector<char*> normalized;
  for (std::string& a : args) {
    if (a.rfind("--", 0) == 0) {
      const size_t end = a.find('=');
      for (size_t i = 2; i < std::min(end, a.size()); ++i) {
        if (a[i] == '-') a[i] = '_';
      }
    }
    normalized.push_back(a.data());
  }
  absl::ParseCommandLine(static_cast<int>(normalized.size()), normalized.data());
  return Run();
}
