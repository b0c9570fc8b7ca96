#include "ferry/weight_cache.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ferry {

absl::StatusOr<std::shared_ptr<const void>> WeightCache::GetOrLoadErased(
    const std::string& key, const std::function<absl::StatusOr<Loaded>()>& load) {
  {
    absl::MutexLock lock(&mu_);
    if (auto it = entries_.find(key); it != entries_.end()) {
      ++hits_;
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      return it->second.value;
    }
    ++misses_;
  }
  absl::StatusOr<Loaded> loaded = load();
  if (!loaded.ok()) return loaded.status();
  if (loaded->first == nullptr) return absl::InternalError("weight loader returned no value");
  absl::MutexLock lock(&mu_);
  if (auto it = entries_.find(key); it != entries_.end()) {
    // Another load of the same key finished first: share its value, drop ours.
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return it->second.value;
  }
  lru_.push_front(key);
  Entry& e = entries_[key];
  e.value = std::move(loaded->first);
  e.bytes = loaded->second;
  e.lru = lru_.begin();
  std::shared_ptr<const void> value = e.value;  // held by the caller: not idle during the trim
  TrimLocked();
  return value;
}

void WeightCache::Trim() {
  absl::MutexLock lock(&mu_);
  TrimLocked();
}

void WeightCache::TrimLocked() {
  int64_t idle = 0;
  for (const auto& [key, e] : entries_) {
    if (e.value.use_count() == 1) idle += e.bytes;
  }
  // Oldest first. An entry whose only reference is ours is unused by any runtime.
  for (auto it = lru_.end(); idle > idle_budget_bytes_ && it != lru_.begin();) {
    --it;
    auto entry = entries_.find(*it);
    if (entry->second.value.use_count() != 1) continue;
    idle -= entry->second.bytes;
    ++evictions_;
    entries_.erase(entry);
    it = lru_.erase(it);
  }
}

WeightCache::Stats WeightCache::stats() const {
  absl::MutexLock lock(&mu_);
  Stats s;
  s.hits = hits_;
  s.misses = misses_;
  s.evictions = evictions_;
  s.entries = static_cast<int64_t>(entries_.size());
  for (const auto& [key, e] : entries_) {
    s.bytes += e.bytes;
    if (e.value.use_count() == 1) s.idle_bytes += e.bytes;
  }
  return s;
}

absl::StatusOr<std::string> WeightCache::FileKey(const std::string& variant,
                                                 const std::vector<std::string>& paths) {
  std::string key = variant;
  for (const std::string& path : paths) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
    }
    absl::StrAppend(&key, "|", path, ":", static_cast<int64_t>(st.st_size), ":",
                    static_cast<int64_t>(st.st_mtim.tv_sec), ".",
                    static_cast<int64_t>(st.st_mtim.tv_nsec));
  }
  return key;
}

}  // namespace ferry
