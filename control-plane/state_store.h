// The control plane's durable state behind a small key-value interface, so that the embedded
// SQLite store and an etcd-backed one (with leader election on an etcd lease) are
// interchangeable without touching placement or the API.
//
// Model (etcd's): a flat, ordered key space of strings; every committed change bumps one global
// revision; Commit applies several puts and deletes atomically. Keys used by the control plane:
//   functions/<name>  -> the canonical manifest (JSON) of an applied Function
//   profiles/<function>/<hardware kind> -> measured profile points (JSON)
#ifndef FERRY_CONTROL_PLANE_STATE_STORE_H_
#define FERRY_CONTROL_PLANE_STATE_STORE_H_

#include <cstdint>
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

  absl::StatusOr<int64_t> Put(std::string key, std::string value) {
    return Commit({Mutation::Put(std::move(key), std::move(value))});
  }
  absl::StatusOr<int64_t> Delete(std::string key) {
    return Commit({Mutation::Delete(std::move(key))});
  }
};

}  // namespace ferry::control

#endif  // FERRY_CONTROL_PLANE_STATE_STORE_H_
