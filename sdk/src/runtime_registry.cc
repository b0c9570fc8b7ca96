#include "ferry/runtime_registry.h"

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ferry/config_reader.h"

namespace ferry {

RuntimeRegistry& RuntimeRegistry::Global() {
  // Leaked on purpose: registrars in other translation units run before main and the registry
  // must outlive every static destructor that might still create a runtime.
  static RuntimeRegistry* const registry = new RuntimeRegistry();
  return *registry;
}

absl::Status RuntimeRegistry::Register(std::string name, std::string description,
                                       RuntimeFactory factory) {
  if (name.empty()) return absl::InvalidArgumentError("runtime registry: empty runtime name");
  if (!factory) {
    return absl::InvalidArgumentError(
        absl::StrCat("runtime registry: runtime '", name, "' has no factory"));
  }
  absl::MutexLock lock(&mu_);
  if (entries_.count(name) > 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("runtime registry: runtime '", name, "' is registered twice"));
  }
  entries_.emplace(std::move(name), Entry{std::move(description), std::move(factory)});
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Runtime>> RuntimeRegistry::Create(
    const FunctionSpec& spec, const RuntimeContext& context) const {
  RuntimeFactory factory;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(spec.runtime);
    if (it != entries_.end()) factory = it->second.factory;
  }
  if (!factory) {
    const std::vector<std::string> names = Names();
    // Unimplemented rather than InvalidArgument: the manifest is well-formed, this build of the
    // agent just carries no such runtime.
    return absl::UnimplementedError(absl::StrCat(
        SpecLocation(spec), ": spec.runtime: unknown runtime '", spec.runtime,
        "'; available runtimes: ", names.empty() ? "(none)" : absl::StrJoin(names, ", ")));
  }
  // Outside the lock: factories load models and may take seconds.
  return factory(spec, context);
}

bool RuntimeRegistry::Contains(std::string_view name) const {
  absl::MutexLock lock(&mu_);
  return entries_.find(name) != entries_.end();
}

std::vector<std::string> RuntimeRegistry::Names() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, entry] : entries_) out.push_back(name);
  return out;
}

std::vector<RuntimeInfo> RuntimeRegistry::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<RuntimeInfo> out;
  out.reserve(entries_.size());
  for (const auto& [name, entry] : entries_) out.push_back({name, entry.description});
  return out;
}

RuntimeRegistrar::RuntimeRegistrar(const char* name, const char* description,
                                   RuntimeFactory factory) {
  absl::Status s = RuntimeRegistry::Global().Register(name, description, std::move(factory));
  if (!s.ok()) {
    std::fprintf(stderr, "ferry: %s\n", std::string(s.message()).c_str());
    std::abort();
  }
}

}  // namespace ferry
