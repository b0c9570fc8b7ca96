// The "plugin" runtime: serves a user's function from a shared library that implements the C
// ABI of ferry/function.h, loaded only from the agent's plugin directory.
//
// Manifest:
//   spec:
//     runtime: plugin
//     config:
//       library: libtext_normalize.so   # a file in the agent's --plugin-dir (no "/" escapes)
//       config: {lowercase: true}       # optional; handed to the function's create() as JSON
//
// spec.batching.instances is the number of function instances (one per executor thread);
// each instance runs one batch at a time.
#ifndef FERRY_KERNELS_PLUGIN_RUNTIME_H_
#define FERRY_KERNELS_PLUGIN_RUNTIME_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "ferry/manifest.h"
#include "ferry/runtime.h"

namespace ferry::kernels {

// Sets the folder plugins may be loaded from (the agent's --plugin-dir), process-wide. Empty (the
// default): every plugin function is refused with an error that says so. Thread-safe; the agent
// sets it once before loading functions.
void SetPluginDirectory(std::string dir);
std::string PluginDirectory();

// Resolves `library` (a relative file name) inside `dir`: refuses empty names, absolute paths,
// ".." components, and anything whose real path (after symlinks) is not a regular file inside
// the real path of `dir`. Returns the real path. Errors name `library` and say why.
absl::StatusOr<std::string> ResolvePluginPath(const std::string& dir, const std::string& library);

struct PluginRuntimeOptions {
  std::string plugin_dir;   // as SetPluginDirectory
  std::string library;      // relative to plugin_dir
  std::string config_json;  // handed to create(); "{}" when empty
  int instances = 1;        // >= 1
  bool use_gpu = false;     // the replica was placed on a GPU
  int gpu_index = 0;
  std::string where;  // message prefix naming the manifest, e.g. "fns/x.yaml: "
};

// Loads the library (dlopen RTLD_NOW | RTLD_LOCAL), checks its ABI version and declarations,
// and creates `instances` instances. Errors name the library file and the field at fault.
absl::StatusOr<std::unique_ptr<Runtime>> LoadPluginRuntime(const PluginRuntimeOptions& options);

// From a manifest: spec.config.library / spec.config.config, the directory from
// PluginDirectory(), the device from `context`. Registered as runtime "plugin".
absl::StatusOr<std::unique_ptr<Runtime>> CreatePluginRuntime(const FunctionSpec& spec,
                                                             const RuntimeContext& context);

}  // namespace ferry::kernels

#endif  // FERRY_KERNELS_PLUGIN_RUNTIME_H_
