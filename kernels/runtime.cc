#include "kernels/runtime.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/config_util.h"
#include "kernels/echo_runtime.h"
#include "kernels/mlp_runtime.h"
#include "kernels/wordfilter_runtime.h"

namespace ferry::kernels {
namespace {

// Runtimes the manifest format knows but this build does not carry yet.
constexpr std::string_view kPlannedRuntimes[] = {"sentence-embedding", "plugin"};

}  // namespace

absl::StatusOr<std::unique_ptr<Runtime>> CreateRuntime(const FunctionSpec& spec,
                                                       const RuntimeContext& context) {
  if (spec.runtime == "echo") return CreateEchoRuntime(spec, context);
  if (spec.runtime == "wordfilter") return CreateWordFilterRuntime(spec, context);
  if (spec.runtime == "mlp") return CreateMlpRuntime(spec, context);
  const std::string available = absl::StrJoin(RuntimeNames(), ", ");
  for (std::string_view planned : kPlannedRuntimes) {
    if (spec.runtime == planned) {
      return absl::UnimplementedError(absl::StrCat(
          config::Where(spec), "spec.runtime: runtime '", spec.runtime,
          "' is not available in this build of ferry; available runtimes: ", available));
    }
  }
  return absl::UnimplementedError(absl::StrCat(config::Where(spec),
                                               "spec.runtime: unknown runtime '", spec.runtime,
                                               "'; available runtimes: ", available));
}

std::vector<std::string> RuntimeNames() { return {"echo", "mlp", "wordfilter"}; }

}  // namespace ferry::kernels
