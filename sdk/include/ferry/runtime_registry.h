// The runtime registry: spec.runtime name -> factory. Each built-in runtime registers itself from
// its own .cc with FERRY_REGISTER_RUNTIME, so adding a runtime is one new file pair (plus its
// tests) and one line in kernels/CMakeLists.txt. The node agent creates every function's runtime
// through RuntimeRegistry::Global(); an unknown name fails there, naming the manifest file,
// `spec.runtime` and the registered names. The manifest parser itself checks only the spelling, so
// binaries that link no runtime (ferry-control, the `ferry` CLI) parse the same manifests.
#ifndef FERRY_RUNTIME_REGISTRY_H_
#define FERRY_RUNTIME_REGISTRY_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "ferry/manifest.h"
#include "ferry/runtime.h"

namespace ferry {

// Creates a runtime for `spec` (validating spec.config, loading spec.model_path) on the hardware
// in `context`. Errors name the manifest file and field path (ferry/config_reader.h). Must be
// thread-safe: the agent may create several functions' runtimes at once.
using RuntimeFactory = std::function<absl::StatusOr<std::unique_ptr<Runtime>>(
    const FunctionSpec& spec, const RuntimeContext& context)>;

struct RuntimeInfo {
  std::string name;         // the spec.runtime value
  std::string description;  // one line, for listings
};

// Thread-safe.
class RuntimeRegistry {
 public:
  RuntimeRegistry() = default;
  RuntimeRegistry(const RuntimeRegistry&) = delete;
  RuntimeRegistry& operator=(const RuntimeRegistry&) = delete;

  // The process-wide registry the built-in runtimes register into (before main runs). Never
  // destroyed.
  static RuntimeRegistry& Global();

  // AlreadyExists when `name` is taken; InvalidArgument for an empty name or factory.
  absl::Status Register(std::string name, std::string description, RuntimeFactory factory);

  // Runs the factory registered under spec.runtime (blocking). An unknown name is Unimplemented
  // "<file>[ document N]: spec.runtime: unknown runtime 'x'; available runtimes: a, b".
  absl::StatusOr<std::unique_ptr<Runtime>> Create(const FunctionSpec& spec,
                                                  const RuntimeContext& context) const;

  bool Contains(std::string_view name) const;
  // Registered names, sorted.
  std::vector<std::string> Names() const;
  // Registered runtimes, sorted by name.
  std::vector<RuntimeInfo> List() const;

 private:
  struct Entry {
    std::string description;
    RuntimeFactory factory;
  };

  mutable absl::Mutex mu_;
  std::map<std::string, Entry, std::less<>> entries_ ABSL_GUARDED_BY(mu_);
};

// Registers a runtime into RuntimeRegistry::Global() when constructed; a duplicate name aborts
// the process at start-up (two runtimes claiming one name is a build mistake). Use through
// FERRY_REGISTER_RUNTIME at namespace scope.
class RuntimeRegistrar {
 public:
  RuntimeRegistrar(const char* name, const char* description, RuntimeFactory factory);
};

#define FERRY_RUNTIME_REGISTRY_CONCAT_INNER(a, b) a##b
#define FERRY_RUNTIME_REGISTRY_CONCAT(a, b) FERRY_RUNTIME_REGISTRY_CONCAT_INNER(a, b)

// FERRY_REGISTER_RUNTIME("echo", "returns its input", &CreateEchoRuntime);
// The object file holding this must be linked whole (see kernels/CMakeLists.txt): nothing
// references the registrar, so a plain static-library link would drop it.
#define FERRY_REGISTER_RUNTIME(name, description, factory)              \
  static const ::ferry::RuntimeRegistrar FERRY_RUNTIME_REGISTRY_CONCAT( \
      ferry_runtime_registrar_, __LINE__)(name, description, factory)

}  // namespace ferry

#endif  // FERRY_RUNTIME_REGISTRY_H_
