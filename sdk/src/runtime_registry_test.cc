#include "ferry/runtime_registry.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class FixedRuntime : public Runtime {
 public:
  explicit FixedRuntime(std::string platform) { signature_.platform = std::move(platform); }
  const ModelSignature& signature() const override { return signature_; }
  absl::Status Execute(absl::Span<RuntimeCall>) override { return absl::OkStatus(); }

 private:
  ModelSignature signature_;
};

RuntimeFactory FactoryFor(std::string platform) {
  return [platform](const FunctionSpec&,
                    const RuntimeContext&) -> absl::StatusOr<std::unique_ptr<Runtime>> {
    return std::make_unique<FixedRuntime>(platform);
  };
}

FunctionSpec Spec(std::string runtime) {
  FunctionSpec spec;
  spec.name = "f";
  spec.runtime = std::move(runtime);
  spec.source = "fns.yaml";
  spec.document = 2;
  return spec;
}

TEST(RuntimeRegistryTest, CreatesByNameAndListsSorted) {
  RuntimeRegistry registry;
  ASSERT_TRUE(registry.Register("zeta", "last", FactoryFor("z")).ok());
  ASSERT_TRUE(registry.Register("alpha", "first", FactoryFor("a")).ok());
  EXPECT_THAT(registry.Names(), ElementsAre("alpha", "zeta"));
  ASSERT_EQ(registry.List().size(), 2u);
  EXPECT_EQ(registry.List()[0].description, "first");
  EXPECT_TRUE(registry.Contains("zeta"));
  EXPECT_FALSE(registry.Contains("beta"));
  absl::StatusOr<std::unique_ptr<Runtime>> rt = registry.Create(Spec("zeta"), RuntimeContext{});
  ASSERT_TRUE(rt.ok()) << rt.status();
  EXPECT_EQ((*rt)->signature().platform, "z");
}

TEST(RuntimeRegistryTest, UnknownNameNamesFileFieldAndAvailableRuntimes) {
  RuntimeRegistry registry;
  ASSERT_TRUE(registry.Register("echo", "", FactoryFor("e")).ok());
  ASSERT_TRUE(registry.Register("mlp", "", FactoryFor("m")).ok());
  absl::StatusOr<std::unique_ptr<Runtime>> rt = registry.Create(Spec("tensorflow"), {});
  ASSERT_FALSE(rt.ok());
  EXPECT_EQ(rt.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(std::string(rt.status().message()),
            "fns.yaml document 2: spec.runtime: unknown runtime 'tensorflow'; available runtimes: "
            "echo, mlp");
  EXPECT_THAT(std::string(RuntimeRegistry().Create(Spec("x"), {}).status().message()),
              HasSubstr("available runtimes: (none)"));
}

TEST(RuntimeRegistryTest, RejectsDuplicateEmptyAndNullRegistrations) {
  RuntimeRegistry registry;
  ASSERT_TRUE(registry.Register("echo", "", FactoryFor("e")).ok());
  EXPECT_EQ(registry.Register("echo", "", FactoryFor("e2")).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.Register("", "", FactoryFor("x")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Register("nofactory", "", nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(registry.Names(), ElementsAre("echo"));
}

TEST(RuntimeRegistryTest, FactoryErrorsPassThrough) {
  RuntimeRegistry registry;
  ASSERT_TRUE(
      registry
          .Register("broken", "",
                    [](const FunctionSpec&,
                       const RuntimeContext& context) -> absl::StatusOr<std::unique_ptr<Runtime>> {
                      return absl::FailedPreconditionError(absl::StrCat("gpu ", context.gpu_index));
                    })
          .ok());
  RuntimeContext context;
  context.gpu_index = 3;
  EXPECT_EQ(registry.Create(Spec("broken"), context).status(),
            absl::FailedPreconditionError("gpu 3"));
}

// Registration and creation from many threads at once: every name lands exactly once and
// creation never sees a half-registered entry (run under tsan by `make tsan`).
TEST(RuntimeRegistryTest, ConcurrentRegisterAndCreate) {
  RuntimeRegistry registry;
  ASSERT_TRUE(registry.Register("base", "", FactoryFor("b")).ok());
  constexpr int kThreads = 8;
  constexpr int kPerThread = 50;
  std::atomic<int> created{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        EXPECT_TRUE(registry.Register(absl::StrCat("r", t, "_", i), "", FactoryFor("x")).ok());
        if (registry.Create(Spec("base"), {}).ok()) created.fetch_add(1);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(registry.Names().size(), 1u + kThreads * kPerThread);
  EXPECT_EQ(created.load(), kThreads * kPerThread);
}

TEST(RuntimeRegistryTest, GlobalIsOneInstance) {
  EXPECT_EQ(&RuntimeRegistry::Global(), &RuntimeRegistry::Global());
}

}  // namespace
}  // namespace ferry
