// End-to-end GPU placement check: starts ferry-control and one ferry-agent (as child processes,
// on loopback), waits until the agent has registered the GPUs it discovered, applies an
// `accelerator: gpu` MLP function (minComputeCapability 8.0), waits until the control plane has
// placed it on a GPU and the agent reports it ready, infers through the agent's KServe gRPC
// endpoint against a float64 CPU reference, and prints the profile the agent measured.
//
//   control_gpu_check --control-bin PATH --agent-bin PATH --out DIR [--fake-gpu SPEC]
//
// --fake-gpu (e.g. H200:141GiB:9.0) exercises the same path without a GPU, through the agent's
// test-only flag. Writes DIR/control_gpu.json. Exit status 0 on success, 1 on failure, 2 when
// the machine has no GPU to check (and no --fake-gpu).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ferry_control.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "kserve_inference.grpc.pb.h"

extern char** environ;

namespace {

namespace v1 = ferry::control::v1;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const std::vector<int> kDims = {64, 256, 256, 16};

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

pid_t Spawn(const std::vector<std::string>& args, const std::string& log,
            const std::vector<std::string>& extra_env) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> env_store;
  for (char** e = environ; *e != nullptr; ++e) env_store.emplace_back(*e);
  for (const auto& e : extra_env) env_store.push_back(e);
  std::vector<char*> envp;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data()) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

bool WaitFor(const std::function<bool()>& cond, int seconds) {
  const auto end = Clock::now() + std::chrono::seconds(seconds);
  while (Clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return cond();
}

void WriteSafetensors(const std::string& path, const std::vector<std::vector<float>>& w,
                      const std::vector<std::vector<float>>& b) {
  std::string header = "{";
  int64_t offset = 0;
  std::string blob;
  for (size_t i = 0; i < w.size(); ++i) {
    auto add = [&](const std::string& name, const std::vector<float>& v, const std::string& shape) {
      const int64_t n = static_cast<int64_t>(v.size() * sizeof(float));
      if (header.size() > 1) header += ",";
      header += "\"" + name + "\":{\"dtype\":\"F32\",\"shape\":" + shape + ",\"data_offsets\":[" +
                std::to_string(offset) + "," + std::to_string(offset + n) + "]}";
      blob.append(reinterpret_cast<const char*>(v.data()), n);
      offset += n;
    };
    add("layers." + std::to_string(i) + ".weight", w[i],
        "[" + std::to_string(kDims[i + 1]) + "," + std::to_string(kDims[i]) + "]");
    add("layers." + std::to_string(i) + ".bias", b[i], "[" + std::to_string(kDims[i + 1]) + "]");
  }
  header += "}";
  while (header.size() % 8 != 0) header += " ";
  std::ofstream out(path, std::ios::binary);
  const uint64_t len = header.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << header << blob;
}

std::string Arg(int argc, char** argv, const char* name) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (!std::strcmp(argv[i], name)) return argv[i + 1];
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  const std::string control_bin = Arg(argc, argv, "--control-bin");
  const std::string agent_bin = Arg(argc, argv, "--agent-bin");
  const std::string out_dir = Arg(argc, argv, "--out");
  const std::string fake_gpu = Arg(argc, argv, "--fake-gpu");
  if (control_bin.empty() || agent_bin.empty() || out_dir.empty()) {
    std::fprintf(stderr,
                 "usage: control_gpu_check --control-bin P --agent-bin P --out DIR "
                 "[--fake-gpu SPEC]\n");
    return 1;
  }
  fs::create_directories(out_dir);
  const std::string work =
      fs::temp_directory_path() / ("ferry-control-gpu-" + std::to_string(getpid()));
  fs::create_directories(work);

  // Model and manifest.
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 0.1f);
  std::vector<std::vector<float>> w(3), b(3);
  for (int i = 0; i < 3; ++i) {
    w[i].resize(static_cast<size_t>(kDims[i + 1]) * kDims[i]);
    b[i].resize(kDims[i + 1]);
    for (float& x : w[i]) x = nd(rng);
    for (float& x : b[i]) x = nd(rng);
  }
  WriteSafetensors(work + "/mlp.safetensors", w, b);
  const std::string manifest = R"(apiVersion: ferry.dev/v1
kind: Function
metadata: {name: mlp-gpu}
spec:
  runtime: mlp
  model: {uri: "file://mlp.safetensors"}
  hardware: {accelerator: gpu, gpuMemoryMiB: 256, minComputeCapability: "8.0", cpuCores: 1, memoryMiB: 256}
  batching: {maxBatchSize: 64, maxQueueDelayMicros: 200, policy: aimd}
  scaling: {minReplicas: 1, maxReplicas: 1}
  slo: {latency: {percentile: 99, targetMillis: 20}}
  config: {activations: [relu, relu, none], inputName: input, outputName: output}
)";

  const int control_port = FreePort();
  const int agent_grpc_port = FreePort();
  const std::string control_addr = "127.0.0.1:" + std::to_string(control_port);
  pid_t control = Spawn({control_bin, "--listen", control_addr, "--state", work + "/state",
                         "--heartbeat_ms", "200", "--lease_ms", "1000"},
                        out_dir + "/control_gpu_control.log", {});
  std::vector<std::string> agent_args = {agent_bin,
                                         "--control",
                                         control_addr,
                                         "--http-port",
                                         "0",
                                         "--grpc-port",
                                         std::to_string(agent_grpc_port),
                                         "--node-name",
                                         "gpu-node",
                                         "--price-per-hour",
                                         "4"};
  std::vector<std::string> env;
  if (!fake_gpu.empty()) {
    agent_args.push_back("--testonly-fake-gpu=" + fake_gpu);
    env.push_back("FERRY_TESTONLY=1");
  }
  pid_t agent = Spawn(agent_args, out_dir + "/control_gpu_agent.log", env);
  auto cleanup = [&] {
    for (pid_t p : {agent, control}) {
      if (p > 0) kill(p, SIGTERM);
    }
    for (pid_t p : {agent, control}) {
      if (p > 0) waitpid(p, nullptr, 0);
    }
    std::error_code ec;
    fs::remove_all(work, ec);
  };
  if (control < 0 || agent < 0) {
    std::fprintf(stderr, "control_gpu_check: cannot start the binaries\n");
    cleanup();
    return 1;
  }
  auto stub = v1::ControlPlane::NewStub(
      grpc::CreateChannel(control_addr, grpc::InsecureChannelCredentials()));
  auto fail = [&](const std::string& why) {
    std::fprintf(stderr, "control_gpu_check: FAILED: %s (logs in %s)\n", why.c_str(),
                 out_dir.c_str());
    cleanup();
    return 1;
  };

  // 1. The agent registers with the GPUs it discovered.
  v1::Node node;
  const bool registered = WaitFor(
      [&] {
        grpc::ClientContext ctx;
        v1::ListNodesResponse resp;
        if (!stub->ListNodes(&ctx, {}, &resp).ok() || resp.nodes_size() == 0) return false;
        node = resp.nodes(0);
        return true;
      },
      30);
  if (!registered) return fail("the agent did not register");
  std::printf("node %s: %.0f CPU cores, %lld MiB, %d GPUs\n", node.name().c_str(),
              node.inventory().cpu_cores(),
              static_cast<long long>(node.inventory().memory_bytes() >> 20),
              node.inventory().gpus_size());
  for (const auto& g : node.inventory().gpus()) {
    std::printf("  GPU %d: %s, %lld MiB, compute capability %s%s\n", g.index(), g.name().c_str(),
                static_cast<long long>(g.memory_bytes() >> 20), g.compute_capability().c_str(),
                g.fake() ? " (fake)" : "");
  }
  if (node.inventory().gpus_size() == 0) {
    std::printf("control_gpu_check: skipped, the agent found no GPU here\n");
    cleanup();
    return 2;
  }

  // 2. Apply; wait until placed on a GPU and ready.
  const auto t_apply = Clock::now();
  {
    grpc::ClientContext ctx;
    v1::ApplyRequest req;
    req.add_files()->set_path(work + "/mlp-gpu.yaml");
    req.mutable_files(0)->set_content(manifest);
    v1::ApplyResponse resp;
    grpc::Status s = stub->Apply(&ctx, req, &resp);
    if (!s.ok()) return fail("apply: " + s.error_message());
  }
  v1::FunctionStatus st;
  const bool ready = WaitFor(
      [&] {
        grpc::ClientContext ctx;
        v1::GetFunctionRequest req;
        req.set_name("mlp-gpu");
        return stub->GetFunction(&ctx, req, &st).ok() && st.ready_replicas() == 1;
      },
      60);
  const double ready_ms = std::chrono::duration<double, std::milli>(Clock::now() - t_apply).count();
  if (!ready) {
    std::string why = "mlp-gpu not ready within 60 s";
    for (const auto& r : st.replicas())
      why += "; replica state " + std::to_string(r.state()) + " " + r.message();
    for (const auto& r : st.pending_reasons()) why += "; pending: " + r;
    return fail(why);
  }
  const v1::Replica& rep = st.replicas(0);
  std::printf("placed %s on %s, %s (device %d), ready %.0f ms after apply\n",
              rep.replica_id().c_str(), rep.node_id().c_str(), rep.hardware_kind().c_str(),
              rep.device_index(), ready_ms);
  if (rep.device_index() < 0) return fail("placed on a CPU, not a GPU");

  // 3. Infer through the agent's KServe gRPC endpoint; compare with a float64 reference.
  const int rows = 4;
  std::vector<float> x(static_cast<size_t>(rows) * kDims[0]);
  for (float& v : x) v = nd(rng);
  auto infer = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel(rep.grpc_address(), grpc::InsecureChannelCredentials()));
  inference::ModelInferRequest ireq;
  ireq.set_model_name("mlp-gpu");
  auto* in = ireq.add_inputs();
  in->set_name("input");
  in->set_datatype("FP32");
  in->add_shape(rows);
  in->add_shape(kDims[0]);
  ireq.add_raw_input_contents(
      std::string(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(float)));
  inference::ModelInferResponse iresp;
  double infer_us = 0;
  for (int i = 0; i < 20; ++i) {
    grpc::ClientContext ctx;
    const auto t0 = Clock::now();
    grpc::Status s = infer->ModelInfer(&ctx, ireq, &iresp);
    infer_us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    if (!s.ok()) return fail("infer: " + s.error_message());
  }
  std::vector<double> y(x.begin(), x.end());
  int width = kDims[0];
  for (int l = 0; l < 3; ++l) {
    std::vector<double> z(static_cast<size_t>(rows) * kDims[l + 1]);
    for (int r = 0; r < rows; ++r) {
      for (int o = 0; o < kDims[l + 1]; ++o) {
        double acc = b[l][o];
        for (int k = 0; k < width; ++k) acc += y[r * width + k] * w[l][o * width + k];
        z[r * kDims[l + 1] + o] = l < 2 ? std::max(0.0, acc) : acc;
      }
    }
    y = std::move(z);
    width = kDims[l + 1];
  }
  if (iresp.raw_output_contents_size() != 1 ||
      iresp.raw_output_contents(0).size() != y.size() * sizeof(float)) {
    return fail("unexpected output shape");
  }
  const float* got = reinterpret_cast<const float*>(iresp.raw_output_contents(0).data());
  double max_err = 0;
  for (size_t i = 0; i < y.size(); ++i) max_err = std::max(max_err, std::abs(got[i] - y[i]));
  std::printf("inference: %d rows, max abs error %.2e vs float64 reference, last call %.0f us\n",
              rows, max_err, infer_us);
  if (max_err > 1e-3) return fail("output differs from the reference");

  // 4. The profile the agent measured on the GPU.
  const bool profiled = WaitFor(
      [&] {
        grpc::ClientContext ctx;
        v1::GetFunctionRequest req;
        req.set_name("mlp-gpu");
        if (!stub->GetFunction(&ctx, req, &st).ok()) return false;
        for (const auto& p : st.profiles()) {
          if (p.measured()) return true;
        }
        return false;
      },
      30);
  std::string profile_json = "[]";
  if (profiled) {
    for (const auto& p : st.profiles()) {
      if (!p.measured()) continue;
      std::printf(
          "profile on %s: latency_us(n) = %.1f n + %.1f, batch %d within the SLO, "
          "%.0f rps per replica\n",
          p.hardware_kind().c_str(), p.a_us(), p.b_us(), p.batch_within_slo(), p.throughput_rps());
      profile_json = "[";
      for (const auto& pt : p.points()) {
        std::printf("  batch %3d: %8.1f us\n", pt.batch_size(), pt.latency_us());
        if (profile_json.size() > 1) profile_json += ",";
        profile_json +=
            "[" + std::to_string(pt.batch_size()) + "," + std::to_string(pt.latency_us()) + "]";
      }
      profile_json += "]";
    }
  } else {
    std::printf("profile: none within 30 s\n");
  }
  std::ofstream(out_dir + "/control_gpu.json")
      << "{\"node\":\"" << node.name() << "\",\"gpu\":\"" << node.inventory().gpus(0).name()
      << "\",\"hardware_kind\":\"" << rep.hardware_kind()
      << "\",\"device_index\":" << rep.device_index() << ",\"ready_ms\":" << ready_ms
      << ",\"max_abs_error\":" << max_err << ",\"infer_us\":" << infer_us
      << ",\"profile\":" << profile_json << "}\n";
  std::printf("control_gpu_check: OK\n");
  cleanup();
  return 0;
}
