#include "kernels/plugin_runtime.h"

#include <stdio.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cuda/device.h"
#include "ferry/runtime_registry.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::kernels {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

namespace fs = std::filesystem;

// Where CMake put the libraries; the environment may say otherwise (a bundle run elsewhere, such
// as on a GPU machine).
std::string DirFromEnv(const char* name, const char* built) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : built;
}
const std::string kTestDir = DirFromEnv("FERRY_TEST_PLUGIN_DIR", FERRY_TEST_PLUGIN_DIR);
const std::string kExampleDir = DirFromEnv("FERRY_EXAMPLE_PLUGIN_DIR", FERRY_EXAMPLE_PLUGIN_DIR);

PluginRuntimeOptions Options(const std::string& library, const std::string& config = "{}") {
  PluginRuntimeOptions o;
  o.plugin_dir = kTestDir;
  o.library = library;
  o.config_json = config;
  o.where = "fns/test.yaml: ";
  return o;
}

InferenceRequest Rows(const std::vector<float>& values) {
  InferenceRequest r;
  Tensor x{
      .name = "x", .dtype = DataType::kFp32, .shape = {static_cast<int64_t>(values.size() / 2), 2}};
  x.data.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  r.inputs.push_back(std::move(x));
  return r;
}

std::vector<float> Floats(const Tensor& t) {
  std::vector<float> v(t.data.size() / sizeof(float));
  std::memcpy(v.data(), t.data.data(), t.data.size());
  return v;
}

// Runs `requests` as one batch; returns the batch status, calls filled in.
struct Ran {
  absl::Status status;
  std::vector<InferenceRequest> requests;
  std::vector<InferenceResponse> responses;
  std::vector<RuntimeCall> calls;
};
std::unique_ptr<Ran> RunBatch(Runtime& runtime, std::vector<InferenceRequest> requests) {
  auto ran = std::make_unique<Ran>();
  ran->requests = std::move(requests);
  ran->responses.resize(ran->requests.size());
  for (size_t i = 0; i < ran->requests.size(); ++i) {
    EXPECT_TRUE(ValidateRequest(runtime.signature(), ran->requests[i]).ok());
    ran->calls.push_back(RuntimeCall{&ran->requests[i], &ran->responses[i], absl::OkStatus()});
  }
  ran->status = runtime.Execute(absl::MakeSpan(ran->calls));
  return ran;
}

std::string LoadError(const PluginRuntimeOptions& o) {
  absl::StatusOr<std::unique_ptr<Runtime>> r = LoadPluginRuntime(o);
  EXPECT_FALSE(r.ok());
  return r.ok() ? "" : std::string(r.status().message());
}

TEST(PluginRuntimeTest, GoodPluginDeclaresItsSignature) {
  auto runtime = LoadPluginRuntime(Options("libtest_good.so"));
  ASSERT_TRUE(runtime.ok()) << runtime.status();
  const ModelSignature& sig = (*runtime)->signature();
  EXPECT_EQ(sig.platform, "ferry_plugin");
  EXPECT_TRUE(sig.batched);
  ASSERT_EQ(sig.inputs.size(), 1u);
  EXPECT_EQ(sig.inputs[0].name, "x");
  EXPECT_EQ(sig.inputs[0].dtype, DataType::kFp32);
  EXPECT_THAT(sig.inputs[0].shape, ElementsAre(-1, 2));
  ASSERT_EQ(sig.outputs.size(), 1u);
  EXPECT_EQ(sig.outputs[0].name, "y");
}

TEST(PluginRuntimeTest, StacksTheBatchAndSplitsOutputsPerRequest) {
  auto runtime = LoadPluginRuntime(Options("libtest_good.so", R"({"factor":3})"));
  ASSERT_TRUE(runtime.ok()) << runtime.status();
  auto ran = RunBatch(**runtime, {Rows({1, 2}), Rows({3, 4, 5, 6})});
  ASSERT_TRUE(ran->status.ok()) << ran->status;
  ASSERT_TRUE(ran->calls[0].status.ok() && ran->calls[1].status.ok());
  ASSERT_EQ(ran->responses[0].outputs.size(), 1u);
  EXPECT_THAT(ran->responses[0].outputs[0].shape, ElementsAre(1, 2));
  EXPECT_THAT(Floats(ran->responses[0].outputs[0]), ElementsAre(3, 6));
  EXPECT_THAT(ran->responses[1].outputs[0].shape, ElementsAre(2, 2));
  EXPECT_THAT(Floats(ran->responses[1].outputs[0]), ElementsAre(9, 12, 15, 18));
  EXPECT_TRUE(ran->responses[1].outputs[0].CheckConsistent().ok());
}

TEST(PluginRuntimeTest, PerItemErrorFailsOnlyThatRequest) {
  auto runtime = LoadPluginRuntime(Options("libtest_good.so"));
  ASSERT_TRUE(runtime.ok()) << runtime.status();
  auto ran = RunBatch(**runtime, {Rows({1, 1}), Rows({2, 2, -1, 0}), Rows({4, 4})});
  ASSERT_TRUE(ran->status.ok()) << ran->status;
  EXPECT_TRUE(ran->calls[0].status.ok());
  EXPECT_EQ(ran->calls[1].status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ran->calls[1].status.message(),
              AllOf(HasSubstr("libtest_good.so"), HasSubstr("x[0] is -1 in this request")));
  EXPECT_TRUE(ran->responses[1].outputs.empty());
  ASSERT_TRUE(ran->calls[2].status.ok());
  EXPECT_THAT(Floats(ran->responses[2].outputs[0]), ElementsAre(8, 8));
}

TEST(PluginRuntimeTest, BatchErrorFailsTheBatchAndTheRuntimeKeepsServing) {
  auto runtime = LoadPluginRuntime(Options("libtest_good.so"));
  ASSERT_TRUE(runtime.ok()) << runtime.status();
  auto ran = RunBatch(**runtime, {Rows({999, 1}), Rows({1, 1})});
  EXPECT_EQ(ran->status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(ran->status.message(), AllOf(HasSubstr("fns/test.yaml: plugin 'libtest_good.so'"),
                                           HasSubstr("execute failed: the batch holds 999")));
  auto again = RunBatch(**runtime, {Rows({1, 1})});
  ASSERT_TRUE(again->status.ok()) << again->status;
  EXPECT_THAT(Floats(again->responses[0].outputs[0]), ElementsAre(2, 2));
}

TEST(PluginRuntimeTest, CreateErrorFailsTheLoad) {
  EXPECT_THAT(
      LoadError(Options("libtest_good.so", R"({"fail_create":true})")),
      AllOf(HasSubstr("libtest_good.so"), HasSubstr("create failed: config asks create to fail")));
}

TEST(PluginRuntimeTest, AbiMajorMismatchIsRefused) {
  EXPECT_THAT(LoadError(Options("libtest_abi_major.so")),
              AllOf(HasSubstr("plugin 'libtest_abi_major.so'"), HasSubstr("abi_major"),
                    HasSubstr("built for function ABI 2.0; this agent speaks 1.0")));
}

TEST(PluginRuntimeTest, NewerAbiMinorIsRefused) {
  EXPECT_THAT(LoadError(Options("libtest_abi_minor.so")),
              AllOf(HasSubstr("libtest_abi_minor.so"), HasSubstr("abi_minor"),
                    HasSubstr("newer than this agent's 1.0")));
}

TEST(PluginRuntimeTest, MissingEntrySymbolIsRefused) {
  EXPECT_THAT(LoadError(Options("libtest_no_entry.so")),
              AllOf(HasSubstr("libtest_no_entry.so"),
                    HasSubstr("exports no 'ferry_function_entry' symbol")));
}

TEST(PluginRuntimeTest, BadDeclarationsNameTheField) {
  EXPECT_THAT(LoadError(Options("libtest_bad_dtype.so")),
              AllOf(HasSubstr("libtest_bad_dtype.so"), HasSubstr("bad declaration"),
                    HasSubstr("inputs[0] 'x'.datatype: unknown datatype 'FLOAT99'")));
  EXPECT_THAT(LoadError(Options("libtest_bad_batch.so")),
              HasSubstr("inputs[0] 'x'.shape: [2,-1]: the first dim must be -1, the batch dim"));
  EXPECT_THAT(LoadError(Options("libtest_dup_names.so")),
              HasSubstr("inputs[1] 'x'.name: duplicate name"));
}

TEST(PluginRuntimeTest, DynamicOutputsAllocatedByTheFunction) {
  auto runtime = LoadPluginRuntime(Options("libtest_dynamic.so"));
  ASSERT_TRUE(runtime.ok()) << runtime.status();
  EXPECT_THAT((*runtime)->signature().outputs[0].shape, ElementsAre(-1, -1));
  auto ran = RunBatch(**runtime, {Rows({1, 2}), Rows({3, 4, 5, 6})});
  ASSERT_TRUE(ran->status.ok()) << ran->status;
  ASSERT_EQ(ran->responses[1].outputs.size(), 2u);
  EXPECT_THAT(ran->responses[1].outputs[0].shape, ElementsAre(2, 2));
  EXPECT_THAT(Floats(ran->responses[1].outputs[0]), ElementsAre(6, 8, 10, 12));
  EXPECT_EQ(ran->responses[1].outputs[1].dtype, DataType::kBytes);
  EXPECT_THAT(ran->responses[1].outputs[1].shape, ElementsAre(2));
  EXPECT_EQ(ran->responses[1].outputs[1].bytes, (std::vector<std::string>{"ok", "ok"}));
  EXPECT_EQ(ran->responses[0].outputs[1].bytes, (std::vector<std::string>{"ok"}));
}

TEST(PluginRuntimeTest, RequestsOfDifferentWidthsRunAsSeparateCalls) {
  auto runtime = LoadPluginRuntime(Options("libtest_wide.so"));
  ASSERT_TRUE(runtime.ok()) << runtime.status();
  InferenceRequest wide;
  const std::vector<float> w = {1, 2, 3, 4, 5, 6};
  wide.inputs.push_back(Tensor{.name = "x", .dtype = DataType::kFp32, .shape = {2, 3}});
  wide.inputs[0].data.assign(reinterpret_cast<const char*>(w.data()), w.size() * sizeof(float));
  // Widths 2, 3, 2: three groups, each stacked on its own.
  auto ran = RunBatch(**runtime, {Rows({1, 2}), wide, Rows({7, 8, -1, 9})});
  ASSERT_TRUE(ran->status.ok()) << ran->status;
  EXPECT_THAT(ran->responses[0].outputs[0].shape, ElementsAre(1, 2));
  EXPECT_THAT(Floats(ran->responses[0].outputs[0]), ElementsAre(2, 4));
  EXPECT_THAT(ran->responses[1].outputs[0].shape, ElementsAre(2, 3));
  EXPECT_THAT(Floats(ran->responses[1].outputs[0]), ElementsAre(2, 4, 6, 8, 10, 12));
  EXPECT_EQ(ran->responses[1].outputs[1].bytes, (std::vector<std::string>{"ok", "ok"}));
  // The per-item error of the last group lands on its request.
  EXPECT_THAT(std::string(ran->calls[2].status.message()), HasSubstr("x[0] is -1"));
}

TEST(PluginRuntimeTest, WrongOutputsFailTheBatchWithTheReason) {
  struct Case {
    const char* mode;
    const char* expected;
  };
  for (const Case& c : {
           Case{"wrong_rows", "output 'y': shape [2,2] has 2 rows; the batch has 1"},
           Case{"wrong_bytes", "output 'y': 12 bytes for shape [1,2] of FP32; that needs 8"},
           Case{"no_alloc", "output 'y' was not produced"},
           Case{"bad_bytes", "produced malformed BYTES"},
       }) {
    SCOPED_TRACE(c.mode);
    auto runtime = LoadPluginRuntime(
        Options("libtest_dynamic.so", absl::StrCat(R"({"mode":")", c.mode, "\"}")));
    ASSERT_TRUE(runtime.ok()) << runtime.status();
    auto ran = RunBatch(**runtime, {Rows({1, 2})});
    EXPECT_EQ(ran->status.code(), absl::StatusCode::kInternal);
    EXPECT_THAT(ran->status.message(),
                AllOf(HasSubstr("libtest_dynamic.so"), HasSubstr(c.expected)));
  }
}

TEST(PluginRuntimeTest, InstancesServeConcurrentBatches) {
  PluginRuntimeOptions o = Options("libtest_good.so");
  o.instances = 3;
  auto runtime = LoadPluginRuntime(o);
  ASSERT_TRUE(runtime.ok()) << runtime.status();
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        auto ran = RunBatch(**runtime, {Rows({float(t), float(i)})});
        if (!ran->status.ok() ||
            Floats(ran->responses[0].outputs[0]) != std::vector<float>{2.0f * t, 2.0f * i}) {
          ++failures[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(failures, ElementsAre(0, 0, 0, 0));
}

// --- where plugins may come from -----------------------------------------------------------------

class PluginDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("ferry_plugin_dir_test_" + std::to_string(getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "plugins" / "sub");
    fs::create_directories(root_ / "outside");
    fs::copy_file(kTestDir + "/libtest_good.so", root_ / "plugins" / "sub" / "libgood.so");
    fs::copy_file(kTestDir + "/libtest_good.so", root_ / "outside" / "libevil.so");
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string dir() const { return (root_ / "plugins").string(); }
  fs::path root_;
};

TEST_F(PluginDirTest, LoadsFromInsideTheDirectory) {
  auto path = ResolvePluginPath(dir(), "sub/libgood.so");
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, fs::canonical(root_ / "plugins" / "sub" / "libgood.so").string());
  // A symlink that stays inside the directory is fine.
  fs::create_symlink("sub/libgood.so", root_ / "plugins" / "link.so");
  EXPECT_TRUE(ResolvePluginPath(dir(), "link.so").ok());
}

TEST_F(PluginDirTest, RefusesPathsOutsideTheDirectory) {
  EXPECT_THAT(std::string(ResolvePluginPath("", "libgood.so").status().message()),
              HasSubstr("start ferry-agent with --plugin-dir DIR"));
  const std::string abs = (root_ / "outside" / "libevil.so").string();
  EXPECT_THAT(std::string(ResolvePluginPath(dir(), abs).status().message()),
              HasSubstr("an absolute path"));
  EXPECT_THAT(std::string(ResolvePluginPath(dir(), "../outside/libevil.so").status().message()),
              HasSubstr("'..' may not appear"));
  EXPECT_THAT(
      std::string(ResolvePluginPath(dir(), "sub/../../outside/libevil.so").status().message()),
      HasSubstr("'..' may not appear"));
  fs::create_symlink(root_ / "outside" / "libevil.so", root_ / "plugins" / "escape.so");
  fs::create_symlink(root_ / "outside", root_ / "plugins" / "escape_dir");
  for (const char* name : {"escape.so", "escape_dir/libevil.so"}) {
    absl::StatusOr<std::string> p = ResolvePluginPath(dir(), name);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kPermissionDenied) << name;
    EXPECT_THAT(std::string(p.status().message()),
                AllOf(HasSubstr("outside the plugin directory"), HasSubstr("symlink")));
  }
  EXPECT_THAT(std::string(ResolvePluginPath(dir(), "nope.so").status().message()),
              HasSubstr("not found in the plugin directory"));
  EXPECT_THAT(std::string(ResolvePluginPath(dir(), "sub").status().message()),
              HasSubstr("is not a regular file"));
  // The load itself goes through the same check, and names the manifest field.
  PluginRuntimeOptions o = Options("escape.so");
  o.plugin_dir = dir();
  EXPECT_THAT(LoadError(o), AllOf(HasSubstr("fns/test.yaml: spec.config.library: plugin "
                                            "'escape.so'"),
                                  HasSubstr("outside the plugin directory")));
}

// --- GPU functions -------------------------------------------------------------------------------

TEST(PluginRuntimeTest, GpuFunctionNeedsCudaAndAGpuPlacement) {
  PluginRuntimeOptions o = Options("libtest_gpu.so");
  if (!cuda::BuiltWithCuda()) {
    EXPECT_THAT(LoadError(o), AllOf(HasSubstr("libtest_gpu.so"),
                                    HasSubstr("this build of ferry has no CUDA backend")));
    return;
  }
  EXPECT_THAT(LoadError(o), HasSubstr("this replica was placed on the CPU"));
  o.use_gpu = true;
  if (!cuda::ListGpus().ok()) {
    EXPECT_THAT(LoadError(o), HasSubstr("the function runs on a GPU and GPU 0 cannot be used"));
  } else {
    // Declared GPU, so it gets a stream; the test function only computes on the host pointer
    // when run, so it is loaded and not executed here.
    auto runtime = LoadPluginRuntime(o);
    EXPECT_TRUE(runtime.ok()) << runtime.status();
  }
}

TEST(PluginRuntimeTest, GpuScaleExampleRunsItsKernel) {
  if (!cuda::BuiltWithCuda()) GTEST_SKIP() << "built without CUDA: gpu-scale is not built";
  if (auto gpus = cuda::ListGpus(); !gpus.ok()) {
    GTEST_SKIP() << "no GPU here (" << gpus.status().message() << "): gpu-scale runs on a GPU";
  }
  PluginRuntimeOptions o = Options("libgpu_scale.so", R"({"scale":3,"offset":1})");
  o.plugin_dir = kExampleDir;
  o.use_gpu = true;
  o.instances = 2;
  auto runtime = LoadPluginRuntime(o);
  ASSERT_TRUE(runtime.ok()) << runtime.status();
  // Widths 2, 2 then 3: the last request cannot be stacked with the others and runs on its own.
  InferenceRequest wide;
  const std::vector<float> w = {1, 2, 3};
  wide.inputs.push_back(Tensor{.name = "x", .dtype = DataType::kFp32, .shape = {1, 3}});
  wide.inputs[0].data.assign(reinterpret_cast<const char*>(w.data()), w.size() * sizeof(float));
  auto ran = RunBatch(**runtime, {Rows({1, 2}), Rows({3, 4, 5, 6}), wide});
  ASSERT_TRUE(ran->status.ok()) << ran->status;
  EXPECT_THAT(Floats(ran->responses[0].outputs[0]), ElementsAre(4, 7));
  EXPECT_THAT(Floats(ran->responses[1].outputs[0]), ElementsAre(10, 13, 16, 19));
  EXPECT_THAT(ran->responses[2].outputs[0].shape, ElementsAre(1, 3));
  EXPECT_THAT(Floats(ran->responses[2].outputs[0]), ElementsAre(4, 7, 10));
}

// --- from a manifest, through the registry -------------------------------------------------------

FunctionSpec PluginSpec(nlohmann::json config) {
  FunctionSpec spec;
  spec.name = "normalize";
  spec.runtime = "plugin";
  spec.source = "fns/normalize.yaml";
  spec.config = std::move(config);
  return spec;
}

InferenceRequest Texts(const std::vector<std::string>& texts) {
  InferenceRequest r;
  Tensor t{.name = "text", .dtype = DataType::kBytes, .shape = {int64_t(texts.size())}};
  t.bytes = BytesList(texts);
  r.inputs.push_back(std::move(t));
  return r;
}

TEST(PluginRuntimeTest, TextNormalizeExampleThroughTheRegistry) {
  SetPluginDirectory(kExampleDir);
  auto runtime = RuntimeRegistry::Global().Create(
      PluginSpec({{"library", "libtext_normalize.so"}, {"config", {{"maxBytes", 20}}}}), {});
  ASSERT_TRUE(runtime.ok()) << runtime.status();
  auto ran = RunBatch(**runtime, {Texts({"  Hello \t  WORLD  ", "A"}),
                                  Texts({"this one is far too long"}), Texts({"Ok\nthen"})});
  ASSERT_TRUE(ran->status.ok()) << ran->status;
  ASSERT_TRUE(ran->calls[0].status.ok()) << ran->calls[0].status;
  EXPECT_EQ(ran->responses[0].outputs[0].name, "normalized");
  EXPECT_EQ(ran->responses[0].outputs[0].bytes, (std::vector<std::string>{"hello world", "a"}));
  EXPECT_THAT(std::string(ran->calls[1].status.message()),
              HasSubstr("text of 24 bytes is longer than maxBytes (20)"));
  EXPECT_EQ(ran->responses[2].outputs[0].bytes, (std::vector<std::string>{"ok then"}));
  SetPluginDirectory("");
}

TEST(PluginRuntimeTest, ManifestErrorsNameTheField) {
  SetPluginDirectory(kExampleDir);
  auto missing = RuntimeRegistry::Global().Create(PluginSpec(nlohmann::json::object()), {});
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("fns/normalize.yaml: spec.config.library: required"));
  auto unknown = RuntimeRegistry::Global().Create(
      PluginSpec({{"library", "libtext_normalize.so"}, {"path", "x"}}), {});
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("spec.config.path"));
  auto bad_config = RuntimeRegistry::Global().Create(
      PluginSpec({{"library", "libtext_normalize.so"}, {"config", 3}}), {});
  EXPECT_THAT(std::string(bad_config.status().message()),
              HasSubstr("spec.config.config: expected an object"));
  auto refused = RuntimeRegistry::Global().Create(
      PluginSpec({{"library", "libtext_normalize.so"}, {"config", {{"lowercase", "yes"}}}}), {});
  EXPECT_THAT(std::string(refused.status().message()),
              AllOf(HasSubstr("create failed"), HasSubstr("config.lowercase")));
  SetPluginDirectory("");
  auto no_dir =
      RuntimeRegistry::Global().Create(PluginSpec({{"library", "libtext_normalize.so"}}), {});
  EXPECT_THAT(std::string(no_dir.status().message()),
              AllOf(HasSubstr("fns/normalize.yaml: spec.config.library"),
                    HasSubstr("this agent serves no plugins")));
}

// --- what the libraries export -------------------------------------------------------------------

std::vector<std::string> ExportedFerrySymbols(const std::string& path) {
  std::vector<std::string> names;
  FILE* p = popen(("nm -D --defined-only " + path + " 2>/dev/null").c_str(), "r");
  if (p == nullptr) return {"(nm failed)"};
  char line[4096];
  while (fgets(line, sizeof(line), p) != nullptr) {
    std::string s(line);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    const size_t space = s.rfind(' ');
    const std::string name = space == std::string::npos ? s : s.substr(space + 1);
    if (name.rfind("ferry", 0) == 0 || name.find("ferry") != std::string::npos) {
      names.push_back(name);
    }
  }
  pclose(p);
  return names;
}

TEST(PluginRuntimeTest, LibrariesExportOnlyTheEntryPoint) {
  if (system("nm --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "nm (binutils) not found";
  std::vector<std::string> libraries = {kExampleDir + "/libtext_normalize.so",
                                        kTestDir + "/libtest_good.so"};
  if (fs::exists(kExampleDir + "/libgpu_scale.so")) {
    libraries.push_back(kExampleDir + "/libgpu_scale.so");
  }
  for (const std::string& lib : libraries) {
    EXPECT_THAT(ExportedFerrySymbols(lib), ElementsAre("ferry_function_entry")) << lib;
  }
}

}  // namespace
}  // namespace ferry::kernels
