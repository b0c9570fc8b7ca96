// AgentCore under a control plane: functions load, reload and unload while requests flow; every
// request is answered exactly once, and requests a function accepted finish even when it is
// unloaded meanwhile.
#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "ferry/manifest.h"
#include "gtest/gtest.h"
#include "node-agent/serving_core_impl.h"

namespace ferry::agent {
namespace {

constexpr char kEcho[] = R"(
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo}
spec:
  runtime: echo
  batching: {maxBatchSize: 16, maxQueueDelayMicros: 100, policy: aimd}
  config: {datatype: BYTES, shape: [], inputName: INPUT0, outputName: OUTPUT0}
)";

std::unique_ptr<InferenceRequest> Request() {
  auto req = std::make_unique<InferenceRequest>();
  req->model_name = "echo";
  Tensor t;
  t.name = "INPUT0";
  t.dtype = DataType::kBytes;
  t.shape = {1};
  t.bytes.push_back("x");
  req->inputs.push_back(std::move(t));
  return req;
}

FunctionSpec EchoSpec() {
  auto specs = ParseManifests(kEcho, "echo.yaml", ".");
  EXPECT_TRUE(specs.ok()) << specs.status();
  return specs->front();
}

TEST(AgentCoreDynamicTest, LoadUnloadReloadWhileServing) {
  auto core = AgentCore::Create({});
  ASSERT_TRUE(core.ok());
  AgentCore& c = **core;
  EXPECT_TRUE(c.LoadedFunctions().empty());
  EXPECT_EQ(c.UnloadFunction("echo").code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(c.LoadFunction(EchoSpec(), /*use_gpu=*/false).ok());
  EXPECT_EQ(c.LoadedFunctions(), std::vector<std::string>{"echo"});
  ASSERT_TRUE(c.ModelReady("echo", "").ok());

  // Clients hammer the function while it is reloaded and finally unloaded.
  std::atomic<int> sent{0}, answered{0}, ok{0}, not_found{0}, unavailable{0}, other{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int t = 0; t < 3; ++t) {
    clients.emplace_back([&] {
      // Closed loop (one request in flight per client), so the queue never overflows.
      while (!stop.load()) {
        ++sent;
        absl::Notification done;
        c.Infer(Request(), [&](absl::StatusOr<InferenceResponse> r) {
          ++answered;
          if (r.ok()) {
            ++ok;
          } else if (absl::IsNotFound(r.status())) {
            ++not_found;
          } else if (absl::IsUnavailable(r.status())) {
            ++unavailable;
          } else {
            ++other;
          }
          done.Notify();
        });
        done.WaitForNotification();
      }
    });
  }
  while (ok.load() < 200) std::this_thread::yield();
  ASSERT_TRUE(c.LoadFunction(EchoSpec(), false).ok());  // reload (new generation)
  const int before_unload = ok.load();
  while (ok.load() < before_unload + 200) std::this_thread::yield();
  ASSERT_TRUE(c.UnloadFunction("echo").ok());  // returns once its accepted requests are answered
  while (not_found.load() < 50) std::this_thread::yield();
  stop = true;
  for (auto& t : clients) t.join();
  // Every request got exactly one answer: none lost, none failed for another reason.
  EXPECT_EQ(answered.load(), sent.load());
  EXPECT_EQ(other.load(), 0);
  EXPECT_GT(not_found.load(), 0);
  EXPECT_TRUE(c.LoadedFunctions().empty());
  EXPECT_EQ(c.ModelReady("echo", "").code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ferry::agent
