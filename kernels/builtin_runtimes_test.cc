// Links ferry_kernels but names none of its runtimes: the built-ins must still be registered,
// which fails if the linker drops their objects (see kernels/CMakeLists.txt).
#include <memory>
#include <string>

#include "ferry/manifest.h"
#include "ferry/runtime.h"
#include "ferry/runtime_registry.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using ::testing::IsSupersetOf;

TEST(BuiltinRuntimesTest, AreRegisteredWithoutBeingReferenced) {
  EXPECT_THAT(RuntimeRegistry::Global().Names(), IsSupersetOf({"echo", "mlp", "wordfilter"}));
  for (const RuntimeInfo& info : RuntimeRegistry::Global().List()) {
    EXPECT_FALSE(info.description.empty()) << info.name;
  }
}

TEST(BuiltinRuntimesTest, EchoIsCreatedByName) {
  FunctionSpec spec;
  spec.name = "f";
  spec.runtime = "echo";
  spec.source = "fn.yaml";
  absl::StatusOr<std::unique_ptr<Runtime>> rt =
      RuntimeRegistry::Global().Create(spec, RuntimeContext{});
  ASSERT_TRUE(rt.ok()) << rt.status();
  EXPECT_EQ((*rt)->signature().platform, "ferry_echo");
}

}  // namespace
}  // namespace ferry
