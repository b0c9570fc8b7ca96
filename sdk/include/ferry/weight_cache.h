// A node-wide cache of prepared model weights in host memory, so that a function scaled to zero
// and back (or moved away and back) reuses what it loaded instead of reading, converting and
// packing its weights again. Runtimes look their prepared, immutable weights up by a key that
// names the source files and their identity (size and modification time, so a replaced file is
// never served stale); the agent owns one cache and hands it to runtimes in RuntimeContext.
//
// Entries in use by a loaded function are never evicted. Entries no loaded function uses
// ("idle": the cache holds the only reference) are kept while their bytes fit in the budget and
// evicted least recently used first past it. A budget of 0 keeps nothing idle: the cache then
// only shares weights between functions loaded at the same time from the same files.
#ifndef FERRY_WEIGHT_CACHE_H_
#define FERRY_WEIGHT_CACHE_H_

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace ferry {

class WeightCache {
 public:
  struct Stats {
    int64_t hits = 0;
    int64_t misses = 0;
    int64_t evictions = 0;
    int64_t entries = 0;
    int64_t bytes = 0;       // all entries, in use or idle
    int64_t idle_bytes = 0;  // entries no loaded function uses
  };

  explicit WeightCache(int64_t idle_budget_bytes) : idle_budget_bytes_(idle_budget_bytes) {}
  WeightCache(const WeightCache&) = delete;
  WeightCache& operator=(const WeightCache&) = delete;

  // The value cached under `key`, or the result of `load` (run outside the lock, so a slow load
  // never blocks other lookups; two concurrent misses of one key may both load, and the first to
  // finish wins). `load` returns the value and its size in bytes. A failed load caches nothing.
  // Thread-safe; blocks while `load` runs.
  template <typename T>
  absl::StatusOr<std::shared_ptr<const T>> GetOrLoad(
      const std::string& key,
      const std::function<absl::StatusOr<std::pair<std::shared_ptr<const T>, int64_t>>()>& load) {
    absl::StatusOr<std::shared_ptr<const void>> v = GetOrLoadErased(
        key, [&load]() -> absl::StatusOr<std::pair<std::shared_ptr<const void>, int64_t>> {
          auto loaded = load();
          if (!loaded.ok()) return loaded.status();
          return std::pair<std::shared_ptr<const void>, int64_t>(std::move(loaded->first),
                                                                 loaded->second);
        });
    if (!v.ok()) return v.status();
    return std::static_pointer_cast<const T>(*std::move(v));
  }

  // Evicts idle entries past the budget, least recently used first. The agent calls it after a
  // function unloads (its references are gone then); GetOrLoad calls it after each insert.
  void Trim();

  Stats stats() const;
  int64_t idle_budget_bytes() const { return idle_budget_bytes_; }

  // A key for files: each path with its size and modification time, plus `variant` (what the
  // runtime derived from them: precision, sequence length, ...). NotFound when a file is missing.
  static absl::StatusOr<std::string> FileKey(const std::string& variant,
                                             const std::vector<std::string>& paths);

 private:
  using Loaded = std::pair<std::shared_ptr<const void>, int64_t>;
  struct Entry {
    std::shared_ptr<const void> value;
    int64_t bytes = 0;
    std::list<std::string>::iterator lru;  // position in lru_, front = most recent
  };

  absl::StatusOr<std::shared_ptr<const void>> GetOrLoadErased(
      const std::string& key, const std::function<absl::StatusOr<Loaded>()>& load);
  void TrimLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int64_t idle_budget_bytes_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::list<std::string> lru_ ABSL_GUARDED_BY(mu_);
  int64_t hits_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t misses_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t evictions_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ferry

#endif  // FERRY_WEIGHT_CACHE_H_
