#include "control-plane/sqlite_state_store.h"

#include <sqlite3.h>

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace ferry::control {
namespace {

// Owns a prepared statement.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() { return stmt_; }
  void BindText(int i, std::string_view v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void BindInt(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  std::string Text(int col) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p == nullptr ? std::string() : std::string(p, sqlite3_column_bytes(stmt_, col));
  }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_OK;
};

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteStateStore>> SqliteStateStore::Create(const Options& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("state store: empty path");
  std::error_code ec;
  const auto parent = std::filesystem::path(options.path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("state store: cannot create ", parent.string(), ": ", ec.message()));
  }
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(options.path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::FailedPreconditionError(
        absl::StrCat("state store: cannot open ", options.path, ": ", msg));
  }
  std::unique_ptr<SqliteStateStore> store(new SqliteStateStore(db));
  absl::MutexLock lock(&store->mu_);
  sqlite3_busy_timeout(db, 5000);
  // WAL + synchronous=FULL: every commit fsyncs the WAL before returning.
  for (const char* sql : {
           "PRAGMA journal_mode=WAL",
           "PRAGMA synchronous=FULL",
           "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, "
           "mod_revision INTEGER NOT NULL)",
           "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
           "INSERT OR IGNORE INTO meta(name, value) VALUES ('revision', 0)",
       }) {
    if (absl::Status s = store->Exec(sql); !s.ok()) return s;
  }
  // journal_mode answers with the mode it got; make sure it is WAL (not e.g. a read-only "memory").
  Stmt mode(db, "PRAGMA journal_mode");
  if (!mode.ok() || sqlite3_step(mode.get()) != SQLITE_ROW || mode.Text(0) != "wal") {
    return absl::FailedPreconditionError(
        absl::StrCat("state store: ", options.path, ": cannot use WAL journal mode"));
  }
  return store;
}

SqliteStateStore::~SqliteStateStore() {
  absl::MutexLock lock(&mu_);
  sqlite3_close(db_);
}

absl::Status SqliteStateStore::Error(const std::string& what) {
  return absl::InternalError(absl::StrCat("state store: ", what, ": ", sqlite3_errmsg(db_)));
}

absl::Status SqliteStateStore::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("state store: ", sql, ": ", msg));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SqliteStateStore::RevisionLocked() {
  Stmt q(db_, "SELECT value FROM meta WHERE name = 'revision'");
  if (!q.ok()) return Error("read revision");
  if (sqlite3_step(q.get()) != SQLITE_ROW) return Error("read revision");
  return sqlite3_column_int64(q.get(), 0);
}

absl::StatusOr<int64_t> SqliteStateStore::Commit(const std::vector<Mutation>& mutations) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  auto rollback = [&](absl::Status s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    (void)Exec("ROLLBACK");
    return s;
  };
  absl::StatusOr<int64_t> rev = RevisionLocked();
  if (!rev.ok()) return rollback(rev.status());
  const int64_t next = *rev + 1;
  {
    Stmt put(db_,
             "INSERT INTO kv(key, value, mod_revision) VALUES (?1, ?2, ?3) "
             "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
             "mod_revision = excluded.mod_revision");
    Stmt del(db_, "DELETE FROM kv WHERE key = ?1");
    Stmt bump(db_, "UPDATE meta SET value = ?1 WHERE name = 'revision'");
    if (!put.ok() || !del.ok() || !bump.ok()) return rollback(Error("prepare"));
    for (const Mutation& m : mutations) {
      Stmt& st = m.kind == Mutation::Kind::kPut ? put : del;
      sqlite3_reset(st.get());
      st.BindText(1, m.key);
      if (m.kind == Mutation::Kind::kPut) {
        sqlite3_bind_blob(st.get(), 2, m.value.data(), static_cast<int>(m.value.size()),
                          SQLITE_TRANSIENT);
        st.BindInt(3, next);
      }
      if (sqlite3_step(st.get()) != SQLITE_DONE) return rollback(Error("write " + m.key));
    }
    bump.BindInt(1, next);
    if (sqlite3_step(bump.get()) != SQLITE_DONE) return rollback(Error("bump revision"));
  }
  // With synchronous=FULL in WAL mode, COMMIT returns after the WAL is fsync'ed.
  if (absl::Status s = Exec("COMMIT"); !s.ok()) return rollback(s);
  return next;
}

absl::StatusOr<std::optional<KeyValue>> SqliteStateStore::Get(std::string_view key) {
  absl::MutexLock lock(&mu_);
  Stmt q(db_, "SELECT value, mod_revision FROM kv WHERE key = ?1");
  if (!q.ok()) return Error("prepare get");
  q.BindText(1, key);
  const int rc = sqlite3_step(q.get());
  if (rc == SQLITE_DONE) return std::optional<KeyValue>();
  if (rc != SQLITE_ROW) return Error(absl::StrCat("get ", std::string(key)));
  KeyValue kv;
  kv.key = std::string(key);
  kv.value = q.Text(0);
  kv.mod_revision = sqlite3_column_int64(q.get(), 1);
  return std::optional<KeyValue>(std::move(kv));
}

absl::StatusOr<std::vector<KeyValue>> SqliteStateStore::List(std::string_view prefix) {
  absl::MutexLock lock(&mu_);
  // Range scan [prefix, prefix + 0xff...) keeps the primary-key index in use (LIKE would not,
  // and would treat '%' and '_' in keys as wildcards).
  Stmt q(db_,
         "SELECT key, value, mod_revision FROM kv WHERE key >= ?1 AND substr(key, 1, ?2) = ?1 "
         "ORDER BY key");
  if (!q.ok()) return Error("prepare list");
  q.BindText(1, prefix);
  q.BindInt(2, static_cast<int64_t>(prefix.size()));
  std::vector<KeyValue> out;
  int rc;
  while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
    KeyValue kv;
    kv.key = q.Text(0);
    kv.value = q.Text(1);
    kv.mod_revision = sqlite3_column_int64(q.get(), 2);
    out.push_back(std::move(kv));
  }
  if (rc != SQLITE_DONE) return Error(absl::StrCat("list ", std::string(prefix)));
  return out;
}

absl::StatusOr<int64_t> SqliteStateStore::Revision() {
  absl::MutexLock lock(&mu_);
  return RevisionLocked();
}

}  // namespace ferry::control
