// PlaceOnNode against made-up GPU inventories: no GPU needed.
#include "node-agent/gpu_placement.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cuda/device.h"
#include "cuda/health.h"
#include "gtest/gtest.h"
#include "node-agent/serving_core_impl.h"

namespace ferry::agent {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

NodeGpu Gpu(int index, const char* name, int major, int minor, int64_t memory_gib) {
  NodeGpu g;
  g.index = index;
  g.name = name;
  g.cc_major = major;
  g.cc_minor = minor;
  g.memory_bytes = memory_gib * kGiB;
  return g;
}

GpuPlacementRequest Request(Accelerator accelerator, int64_t gpu_memory_mib = 0,
                            std::string min_cc = "", int pinned = -1) {
  GpuPlacementRequest r;
  r.where = "f.yaml: function 'f'";
  r.hardware.accelerator = accelerator;
  r.hardware.gpu_memory_mib = gpu_memory_mib;
  r.hardware.min_compute_capability = std::move(min_cc);
  r.pinned_gpu = pinned;
  return r;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(GpuPlacementTest, CpuFunctionsStayOnTheCpu) {
  const std::vector<NodeGpu> gpus = {Gpu(0, "H100", 9, 0, 80)};
  auto p = PlaceOnNode(Request(Accelerator::kCpu), gpus, "");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->use_gpu);
}

TEST(GpuPlacementTest, WithoutGpusGpuFailsAndAnyFallsBackSayingWhy) {
  auto gpu = PlaceOnNode(Request(Accelerator::kGpu), {}, "no GPU: driver missing");
  ASSERT_FALSE(gpu.ok());
  EXPECT_EQ(gpu.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Message(gpu.status()),
            "f.yaml: function 'f': spec.hardware.accelerator is gpu but this node has no GPU "
            "(no GPU: driver missing)");
  auto any = PlaceOnNode(Request(Accelerator::kAny), {}, "no GPU: driver missing");
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_FALSE(any->use_gpu);
  EXPECT_TRUE(absl::StrContains(any->reason, "accelerator: any runs on the CPU")) << any->reason;
  EXPECT_TRUE(absl::StrContains(any->reason, "no GPU: driver missing")) << any->reason;
}

TEST(GpuPlacementTest, FunctionsAreSpreadOverTheGpus) {
  std::vector<NodeGpu> gpus = {Gpu(0, "A", 9, 0, 80), Gpu(1, "B", 9, 0, 80), Gpu(2, "C", 9, 0, 80)};
  std::vector<int> chosen;
  for (int i = 0; i < 6; ++i) {
    auto p = PlaceOnNode(Request(Accelerator::kGpu, 1024), gpus, "");
    ASSERT_TRUE(p.ok()) << p.status();
    ASSERT_TRUE(p->use_gpu);
    chosen.push_back(p->gpu_index);
    gpus[p->gpu_index].functions += 1;
    gpus[p->gpu_index].reserved_bytes += 1024LL << 20;
  }
  EXPECT_EQ(chosen, (std::vector<int>{0, 1, 2, 0, 1, 2}));
}

TEST(GpuPlacementTest, AmongEquallyLoadedGpusTheOneWithMostMemoryLeftWins) {
  std::vector<NodeGpu> gpus = {Gpu(0, "A", 8, 0, 40), Gpu(1, "B", 8, 0, 80)};
  gpus[1].free_bytes = 20 * kGiB;  // B is mostly used by someone else: A has more left
  auto p = PlaceOnNode(Request(Accelerator::kAny), gpus, "");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->gpu_index, 0);
}

TEST(GpuPlacementTest, MinComputeCapabilityIsEnforced) {
  const std::vector<NodeGpu> gpus = {Gpu(0, "T4", 7, 5, 16), Gpu(1, "A100", 8, 0, 40)};
  auto p = PlaceOnNode(Request(Accelerator::kGpu, 0, "8.0"), gpus, "");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->gpu_index, 1);
  EXPECT_TRUE(absl::StrContains(p->reason, "GPU 0 (T4) has compute capability 7.5")) << p->reason;

  auto none = PlaceOnNode(Request(Accelerator::kGpu, 0, "9.0"), gpus, "");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(Message(none.status()),
                                "f.yaml: function 'f': no GPU of this "
                                "node fits"))
      << none.status();
  EXPECT_TRUE(absl::StrContains(Message(none.status()),
                                "GPU 1 (A100) has compute capability 8.0, below "
                                "minComputeCapability 9.0"))
      << none.status();
  // 8.10 is above 8.9: numbers, not text, are compared.
  const std::vector<NodeGpu> ada = {Gpu(0, "L4", 8, 9, 24)};
  EXPECT_FALSE(PlaceOnNode(Request(Accelerator::kGpu, 0, "8.10"), ada, "").ok());
  EXPECT_TRUE(PlaceOnNode(Request(Accelerator::kGpu, 0, "8.9"), ada, "").ok());

  auto any = PlaceOnNode(Request(Accelerator::kAny, 0, "9.0"), gpus, "");
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_FALSE(any->use_gpu);
  EXPECT_TRUE(absl::StrContains(any->reason, "below minComputeCapability 9.0")) << any->reason;
}

TEST(GpuPlacementTest, GpuMemoryIsEnforcedCountingWhatIsAlreadyPlaced) {
  std::vector<NodeGpu> gpus = {Gpu(0, "L4", 8, 9, 24)};
  EXPECT_TRUE(PlaceOnNode(Request(Accelerator::kGpu, 20 * 1024), gpus, "").ok());
  gpus[0].reserved_bytes = 10 * kGiB;
  gpus[0].functions = 1;
  auto p = PlaceOnNode(Request(Accelerator::kGpu, 20 * 1024), gpus, "");
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(absl::StrContains(Message(p.status()),
                                "GPU 0 (L4) has 14336 MiB left (10240 MiB reserved by functions "
                                "placed on it), gpuMemoryMiB asks for 20480"))
      << p.status();
  // Free memory, when known, is what counts.
  gpus[0].reserved_bytes = 0;
  gpus[0].free_bytes = 4 * kGiB;
  EXPECT_FALSE(PlaceOnNode(Request(Accelerator::kGpu, 5 * 1024), gpus, "").ok());
  EXPECT_TRUE(PlaceOnNode(Request(Accelerator::kGpu, 3 * 1024), gpus, "").ok());
  // Unknown memory (a GPU known only by its ordinal) is not checked.
  NodeGpu unknown;
  unknown.index = 0;
  EXPECT_TRUE(PlaceOnNode(Request(Accelerator::kGpu, 1 << 20, "9.0"), {unknown}, "").ok());
}

TEST(GpuPlacementTest, APinnedGpuIsTheOnlyCandidate) {
  const std::vector<NodeGpu> gpus = {Gpu(0, "A", 9, 0, 80), Gpu(1, "B", 8, 0, 40)};
  auto p = PlaceOnNode(Request(Accelerator::kGpu, 0, "", 1), gpus, "");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->gpu_index, 1);
  auto too_old = PlaceOnNode(Request(Accelerator::kGpu, 0, "9.0", 1), gpus, "");
  EXPECT_FALSE(too_old.ok());
  auto missing = PlaceOnNode(Request(Accelerator::kGpu, 0, "", 4), gpus, "");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(absl::StrContains(Message(missing.status()), "needs GPU 4 but this node has 2"))
      << missing.status();
  auto any = PlaceOnNode(Request(Accelerator::kAny, 0, "", 4), gpus, "");
  ASSERT_TRUE(any.ok());
  EXPECT_FALSE(any->use_gpu);
}

TEST(GpuPlacementTest, AFaultedGpuGetsNoNewFunctions) {
  std::vector<NodeGpu> gpus = {Gpu(0, "A", 9, 0, 80), Gpu(1, "B", 9, 0, 80)};
  gpus[0].healthy = false;
  auto p = PlaceOnNode(Request(Accelerator::kGpu), gpus, "");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->gpu_index, 1);
  EXPECT_TRUE(absl::StrContains(p->reason, "GPU 0 (A) is unusable")) << p->reason;
}

TEST(GpuPlacementTest, ComputeCapabilityParsing) {
  EXPECT_EQ(*ParseComputeCapability("8.0"), std::make_pair(8, 0));
  EXPECT_EQ(*ParseComputeCapability("10.3"), std::make_pair(10, 3));
  EXPECT_FALSE(ParseComputeCapability("8").ok());
  EXPECT_FALSE(ParseComputeCapability("8.x").ok());
  EXPECT_FALSE(ParseComputeCapability("").ok());
  auto bad = PlaceOnNode(Request(Accelerator::kGpu, 0, "eight"), {Gpu(0, "A", 9, 0, 80)}, "");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- AgentCore: placement and GPU health, with made-up GPUs and the echo runtime (which runs
// anywhere, so a "GPU" function loads without a GPU) ----------------------------------------------

std::string EchoOnGpu(const std::string& name, int64_t gpu_memory_mib, const char* min_cc = "") {
  return absl::StrCat(R"(
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: )",
                      name, R"(}
spec:
  runtime: echo
  hardware: {accelerator: gpu, gpuMemoryMiB: )",
                      gpu_memory_mib,
                      *min_cc != 0 ? absl::StrCat(", minComputeCapability: \"", min_cc, "\"") : "",
                      R"(}
)");
}

FunctionSpec Spec(const std::string& yaml) {
  auto specs = ParseManifests(yaml, "test.yaml", ".");
  EXPECT_TRUE(specs.ok()) << specs.status();
  return specs->front();
}

class AgentCoreGpuTest : public ::testing::Test {
 protected:
  void SetUp() override { cuda::ResetGpuHealthForTest(); }
  void TearDown() override { cuda::ResetGpuHealthForTest(); }

  std::unique_ptr<AgentCore> Core(std::vector<FunctionSpec> functions) {
    AgentCoreOptions options;
    options.functions = std::move(functions);
    options.start_threads = false;
    options.gpus = {Gpu(0, "A", 9, 0, 1), Gpu(1, "B", 8, 0, 1)};  // 1 GiB each
    options.num_gpus = 2;
    options.log = [this](const std::string& line) { log_.push_back(line); };
    auto core = AgentCore::Create(options);
    EXPECT_TRUE(core.ok()) << core.status();
    return core.ok() ? *std::move(core) : nullptr;
  }

  std::vector<std::string> log_;
};

TEST_F(AgentCoreGpuTest, FunctionsAreSpreadAndMemoryIsBooked) {
  auto core = Core({Spec(EchoOnGpu("f1", 600)), Spec(EchoOnGpu("f2", 600)),
                    Spec(EchoOnGpu("f3", 600)), Spec(EchoOnGpu("new", 100, "9.0"))});
  ASSERT_NE(core, nullptr);
  EXPECT_EQ(core->Host("f1")->gpu_index(), 0);
  EXPECT_EQ(core->Host("f2")->gpu_index(), 1);
  // 600 MiB are left free on neither GPU: f3 cannot load, and says why for each GPU.
  const auto failed = core->FailedFunctions();
  ASSERT_TRUE(failed.contains("f3"));
  EXPECT_TRUE(absl::StrContains(failed.at("f3").message(),
                                "GPU 0 (A) has 424 MiB left (600 MiB reserved by functions "
                                "placed on it), gpuMemoryMiB asks for 600"))
      << failed.at("f3");
  // minComputeCapability 9.0: only GPU 0 qualifies, whatever the load.
  EXPECT_EQ(core->Host("new")->gpu_index(), 0);
  bool logged = false;
  for (const std::string& line : log_) logged |= absl::StrContains(line, "function 'f2': on GPU 1");
  EXPECT_TRUE(logged) << absl::StrJoin(log_, "\n");

  // Under a control plane the GPU comes with the load, and the node still checks it.
  const absl::Status too_big = core->LoadFunction(Spec(EchoOnGpu("f4", 600)), true, 1);
  EXPECT_EQ(too_big.code(), absl::StatusCode::kFailedPrecondition) << too_big;
  ASSERT_TRUE(core->UnloadFunction("f2").ok());  // frees GPU 1's booking
  const absl::Status fits = core->LoadFunction(Spec(EchoOnGpu("f4", 600)), true, 1);
  EXPECT_TRUE(fits.ok()) << fits;
  // Replacing a function releases its old booking before booking the new one.
  EXPECT_TRUE(core->LoadFunction(Spec(EchoOnGpu("f4", 900)), true, 1).ok());
}

TEST_F(AgentCoreGpuTest, APoisonedGpuMakesItsFunctionsUnreadyAndTheAgentNotLive) {
  auto core = Core({Spec(EchoOnGpu("on0", 100)), Spec(EchoOnGpu("on1", 100))});
  ASSERT_NE(core, nullptr);
  ASSERT_EQ(core->Host("on0")->gpu_index(), 0);
  ASSERT_EQ(core->Host("on1")->gpu_index(), 1);
  EXPECT_TRUE(core->IsLive());
  EXPECT_TRUE(core->ModelReady("on0", "").ok());
  EXPECT_TRUE(absl::StrContains(core->MetricsText(), "ferry_gpu_context_errors_total 0\n"));

  cuda::ReportGpuFault(0, "cudaErrorIllegalAddress: an illegal memory access was encountered");
  EXPECT_FALSE(core->IsLive());
  const absl::Status ready = core->ModelReady("on0", "");
  EXPECT_EQ(ready.code(), absl::StatusCode::kUnavailable) << ready;
  EXPECT_TRUE(absl::StrContains(ready.message(), "function 'on0': GPU 0 is unusable")) << ready;
  EXPECT_TRUE(core->ModelReady("on1", "").ok());  // the other GPU is fine
  const std::string metrics = core->MetricsText();
  EXPECT_TRUE(absl::StrContains(metrics, "ferry_gpu_context_errors_total 1\n")) << metrics;
  EXPECT_TRUE(absl::StrContains(metrics, "ferry_gpu_healthy{gpu=\"0\"} 0\n")) << metrics;

  // Requests to it fail fast with the reason; new functions avoid that GPU.
  std::optional<absl::StatusOr<InferenceResponse>> answer;
  auto request = std::make_unique<InferenceRequest>();
  request->model_name = "on0";
  core->Infer(std::move(request),
              [&](absl::StatusOr<InferenceResponse> r) { answer = std::move(r); });
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(answer->status().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(core->LoadFunction(Spec(EchoOnGpu("later", 100)), true, 1).ok());
  EXPECT_EQ(core->LoadFunction(Spec(EchoOnGpu("later", 100)), true, 0).code(),
            absl::StatusCode::kFailedPrecondition);
}

// GPU memory in use, per GPU of the agent, read from the driver at each scrape: the families are
// declared on every agent (so /metrics has the same names with or without a GPU); a sample needs
// a real GPU whose driver answers NVML.
TEST_F(AgentCoreGpuTest, GpuMemoryIsReportedPerGpuFromTheDriver) {
  auto core = Core({});
  ASSERT_NE(core, nullptr);
  const std::string metrics = core->MetricsText();
  EXPECT_TRUE(absl::StrContains(metrics, "# TYPE ferry_gpu_memory_used_bytes gauge\n")) << metrics;
  EXPECT_TRUE(absl::StrContains(metrics, "# TYPE ferry_gpu_memory_total_bytes gauge\n")) << metrics;
  for (const int gpu : {0, 1}) {
    const absl::StatusOr<cuda::GpuMemoryInfo> memory = cuda::GetGpuMemory(gpu);
    const std::string used = absl::StrCat("ferry_gpu_memory_used_bytes{gpu=\"", gpu, "\"} ");
    const std::string total = absl::StrCat("ferry_gpu_memory_total_bytes{gpu=\"", gpu, "\"} ");
    // The made-up GPUs are real ones only where this machine has them; without, no samples.
    EXPECT_EQ(absl::StrContains(metrics, used), memory.ok()) << metrics;
    EXPECT_EQ(absl::StrContains(metrics, total), memory.ok()) << metrics;
  }
}

}  // namespace
}  // namespace ferry::agent
