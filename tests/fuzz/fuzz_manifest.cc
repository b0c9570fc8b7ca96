// Deployment manifests and SLO documents (YAML or JSON, several documents per text), then the
// runtime-specific spec.config checks an accepted Function goes through when it is loaded.
// Relative paths resolve against a scratch folder holding one valid SLO file, so that
// spec.slo.file can succeed as well as fail.
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <string_view>

#include "ferry/manifest.h"
#include "ferry/runtime_registry.h"

namespace {

std::string* scratch_dir = nullptr;

void RemoveScratch() {
  if (scratch_dir == nullptr) return;
  ::unlink((*scratch_dir + "/slo.yaml").c_str());
  ::rmdir(scratch_dir->c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  const char* tmp = ::getenv("TMPDIR");
  std::string pattern =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/ferry-fuzz-manifest-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  scratch_dir = new std::string(pattern);
  std::ofstream(*scratch_dir + "/slo.yaml") << "apiVersion: ferry.dev/v1\n"
                                               "kind: SLO\n"
                                               "metadata: {name: fast}\n"
                                               "spec:\n"
                                               "  latency: {percentile: 99, targetMillis: 20}\n"
                                               "  onOverload: reject\n";
  std::atexit(RemoveScratch);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto specs = ferry::ParseManifests(text, "fuzz.yaml", *scratch_dir);
  if (!specs.ok()) return 0;
  for (const ferry::FunctionSpec& spec : *specs) {
    if (spec.name.empty()) __builtin_trap();
    (void)ferry::RuntimeRegistry::Global().Create(spec, ferry::RuntimeContext{});
  }
  return 0;
}
