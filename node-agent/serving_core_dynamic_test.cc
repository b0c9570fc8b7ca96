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
  const int unavailable_at_unload = unavailable.load();
  while (unavailable.load() < unavailable_at_unload + 50) std::this_thread::yield();
  stop = true;
  for (auto& t : clients) t.join();
  // Every request got exactly one answer: none lost, none failed for another reason. After the
  // unload the function is "not here any more" (503), never "unknown" (404).
  EXPECT_EQ(answered.load(), sent.load());
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(not_found.load(), 0);
  EXPECT_TRUE(c.LoadedFunctions().empty());
  absl::Status ready = c.ModelReady("echo", "");
  EXPECT_EQ(ready.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(ready.message().find("no longer served on this node"), std::string::npos) << ready;
}

TEST(AgentCoreDynamicTest, UnloadedNamesAreRememberedBoundedAndForgottenOnReload) {
  AgentCoreOptions options;
  options.unloaded_names_kept = 2;
  auto core = AgentCore::Create(options);
  ASSERT_TRUE(core.ok());
  AgentCore& c = **core;
  EXPECT_EQ(c.ModelReady("never", "").code(), absl::StatusCode::kNotFound);
  for (const char* name : {"a", "b", "c"}) {
    FunctionSpec spec = EchoSpec();
    spec.name = name;
    ASSERT_TRUE(c.LoadFunction(spec, false).ok());
    ASSERT_TRUE(c.UnloadFunction(name).ok());
  }
  EXPECT_EQ(c.ModelReady("a", "").code(), absl::StatusCode::kNotFound) << "oldest forgotten";
  EXPECT_EQ(c.ModelReady("b", "").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(c.ModelReady("c", "").code(), absl::StatusCode::kUnavailable);
  // A second unload of an unloaded name is still NotFound: nothing is loaded under it.
  EXPECT_EQ(c.UnloadFunction("c").code(), absl::StatusCode::kNotFound);
  FunctionSpec b = EchoSpec();
  b.name = "b";
  ASSERT_TRUE(c.LoadFunction(b, false).ok());
  EXPECT_TRUE(c.ModelReady("b", "").ok());
  // Reloading b freed its slot: unloading two more keeps c and the newest.
  ASSERT_TRUE(c.UnloadFunction("b").ok());
  EXPECT_EQ(c.ModelReady("b", "").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(c.ModelReady("c", "").code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace ferry::agent
