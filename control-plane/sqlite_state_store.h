// StateStore on an embedded SQLite file: WAL journal and synchronous=FULL, so a commit returns
// only after its WAL frames are fsync'ed; a crash (kill -9, power loss) loses no acknowledged
// write. One connection, serialised by a mutex (the control plane's write rate is low).
#ifndef FERRY_CONTROL_PLANE_SQLITE_STATE_STORE_H_
#define FERRY_CONTROL_PLANE_SQLITE_STATE_STORE_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "control-plane/state_store.h"

struct sqlite3;

namespace ferry::control {

class SqliteStateStore final : public StateStore {
 public:
  struct Options {
    std::string path;  // the database file; created (with its folder) when missing
  };
  static absl::StatusOr<std::unique_ptr<SqliteStateStore>> Create(const Options& options);
  ~SqliteStateStore() override;

  absl::StatusOr<int64_t> Commit(const std::vector<Mutation>& mutations) override;
  absl::StatusOr<std::optional<KeyValue>> Get(std::string_view key) override;
  absl::StatusOr<std::vector<KeyValue>> List(std::string_view prefix) override;
  absl::StatusOr<int64_t> Revision() override;
  absl::Status AddUsage(const std::vector<UsageRecord>& rows,
                        const std::vector<UsageBaseline>& baselines) override;
  absl::StatusOr<std::vector<UsageRecord>> ListUsage(int64_t since_minute,
                                                     std::string_view function) override;
  absl::StatusOr<std::vector<UsageBaseline>> ListUsageBaselines() override;

 private:
  explicit SqliteStateStore(sqlite3* db) : db_(db) {}
  absl::Status Exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Error(const std::string& what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<int64_t> RevisionLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::control

#endif  // FERRY_CONTROL_PLANE_SQLITE_STATE_STORE_H_
