// The control plane's durable state behind a small key-value interface, so that the embedded
// SQLite store and an etcd-backed one (with leader election on an etcd lease) are
// interchangeable without touching placement or the API.
//
// Model (etcd's): a flat, ordered key space of strings; every committed change bumps one global
// revision; Commit applies several puts and deletes atomically. Keys used by the control plane:
//   functions/<name>  -> the canonical manifest (JSON) of an applied Function
//   profiles/<function>/<hardware kind> -> measured profile points (JSON)
// Metered usage (control-plane/usage.h) is kept beside the key space, not in it: it is added to
// every second or so, far more often than functions change, and read by time range.
#ifndef FERRY_CONTROL_PLANE_STATE_STORE_H_
#define FERRY_CONTROL_PLANE_STATE_STORE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ferry::control {

struct KeyValue {
  std::string key;
  std::string value;
  int64_t mod_revision = 0;  // revision of the commit that last wrote it
};

struct Mutation {
  enum class Kind { kPut, kDelete };
  Kind kind = Kind::kPut;
  std::string key;
  std::string value;  // for kPut

  static Mutation Put(std::string key, std::string value) {
    return {Kind::kPut, std::move(key), std::move(value)};
  }
  static Mutation Delete(std::string key) { return {Kind::kDelete, std::move(key), ""}; }
};

// Usage of one function on one node during one minute (or, in a UsageBaseline, cumulative).
struct UsageRecord {
  int64_t minute = 0;  // Unix time / 60
  std::string function;
  std::string node;
  int64_t requests = 0;
  int64_t cost_units = 0;
  int64_t cpu_us = 0;
  int64_t gpu_us = 0;
  int64_t load_us = 0;
  int64_t overhead_us = 0;
  double cost = 0;  // dollars
  // Latency histogram: bucket upper bound in us (0 = unbounded) -> requests.
  std::map<int64_t, int64_t> latency;
};

// The last cumulative counters taken from one agent process (epoch) for one function.
struct UsageBaseline {
  uint64_t epoch = 0;
  UsageRecord counters;  // function and node set; minute and cost unused
};

// Thread-safe. Every method blocks until done; a successful write is durable when it returns
// (an acknowledged write survives kill -9 and power loss as far as the storage honours fsync).
class StateStore {
 public:
  virtual ~StateStore() = default;

  // Applies every mutation or none. Returns the new revision.
  virtual absl::StatusOr<int64_t> Commit(const std::vector<Mutation>& mutations) = 0;
  virtual absl::StatusOr<std::optional<KeyValue>> Get(std::string_view key) = 0;
  // Every key starting with `prefix`, in key order.
  virtual absl::StatusOr<std::vector<KeyValue>> List(std::string_view prefix) = 0;
  // The revision of the last commit (0 for an empty store).
  virtual absl::StatusOr<int64_t> Revision() = 0;

  // Whether this process may write (leader). Embedded stores are always leaders; an etcd store
  // campaigns on a lease and answers false on standbys, which then serve reads only.
  virtual bool IsLeader() const { return true; }

  // Usage metering. A store without it answers Unimplemented (usage is then kept in memory
  // only). AddUsage adds `rows` to the stored ones of the same (minute, function, node) and
  // replaces the baselines of the same (node, function), all in one durable transaction.
  virtual absl::Status AddUsage(const std::vector<UsageRecord>& /*rows*/,
                                const std::vector<UsageBaseline>& /*baselines*/) {
    return absl::UnimplementedError("this state store keeps no usage");
  }
  // Rows with minute >= since_minute (of `function`, or all when ""), by minute.
  virtual absl::StatusOr<std::vector<UsageRecord>> ListUsage(int64_t /*since_minute*/,
                                                             std::string_view /*function*/) {
    return absl::UnimplementedError("this state store keeps no usage");
  }
  virtual absl::StatusOr<std::vector<UsageBaseline>> ListUsageBaselines() {
    return absl::UnimplementedError("this state store keeps no usage");
  }

  absl::StatusOr<int64_t> Put(std::string key, std::string value) {
    return Commit({Mutation::Put(std::move(key), std::move(value))});
  }
  absl::StatusOr<int64_t> Delete(std::string key) {
    return Commit({Mutation::Delete(std::move(key))});
  }
};

}  // namespace ferry::control

#endif  // FERRY_CONTROL_PLANE_STATE_STORE_H_
