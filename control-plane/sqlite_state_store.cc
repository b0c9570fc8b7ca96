#include "control-plane/sqlite_state_store.h"

#include <sqlite3.h>

#include <cstdlib>
#include <filesystem>
#include <map>
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

// Latency histograms are stored as "le:count,le:count" (le in us, 0 = unbounded).
std::string EncodeLatency(const std::map<int64_t, int64_t>& latency) {
  std::string out;
  for (const auto& [le, count] : latency) {
    if (count == 0) continue;
    absl::StrAppend(&out, out.empty() ? "" : ",", le, ":", count);
  }
  return out;
}

std::map<int64_t, int64_t> DecodeLatency(const std::string& text) {
  std::map<int64_t, int64_t> out;
  const char* p = text.c_str();
  while (*p != '\0') {
    char* end = nullptr;
    const long long le = std::strtoll(p, &end, 10);
    if (end == p || *end != ':') break;
    p = end + 1;
    const long long count = std::strtoll(p, &end, 10);
    if (end == p) break;
    out[le] += count;
    p = *end == ',' ? end + 1 : end;
  }
  return out;
}

// Columns of a usage row after (minute, function, node) or (node, function, epoch): requests,
// cost_units, cpu_us, gpu_us, load_us, overhead_us, then latency.
void BindCounters(Stmt& st, int first, const UsageRecord& r) {
  st.BindInt(first, r.requests);
  st.BindInt(first + 1, r.cost_units);
  st.BindInt(first + 2, r.cpu_us);
  st.BindInt(first + 3, r.gpu_us);
  st.BindInt(first + 4, r.load_us);
  st.BindInt(first + 5, r.overhead_us);
}

void ReadCounters(Stmt& st, int first, UsageRecord* r) {
  r->requests = sqlite3_column_int64(st.get(), first);
  r->cost_units = sqlite3_column_int64(st.get(), first + 1);
  r->cpu_us = sqlite3_column_int64(st.get(), first + 2);
  r->gpu_us = sqlite3_column_int64(st.get(), first + 3);
  r->load_us = sqlite3_column_int64(st.get(), first + 4);
  r->overhead_us = sqlite3_column_int64(st.get(), first + 5);
}

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
           // Metered usage per minute, function and node (control-plane/usage.h).
           "CREATE TABLE IF NOT EXISTS usage (minute INTEGER NOT NULL, function TEXT NOT NULL, "
           "node TEXT NOT NULL, requests INTEGER NOT NULL, cost_units INTEGER NOT NULL, "
           "cpu_us INTEGER NOT NULL, gpu_us INTEGER NOT NULL, load_us INTEGER NOT NULL, "
           "overhead_us INTEGER NOT NULL, cost REAL NOT NULL, latency TEXT NOT NULL, "
           "PRIMARY KEY (minute, function, node))",
           // The agents' cumulative counters last taken, so a restart neither loses nor
           // double-counts what happened since.
           "CREATE TABLE IF NOT EXISTS usage_baseline (node TEXT NOT NULL, function TEXT NOT NULL, "
           "epoch INTEGER NOT NULL, requests INTEGER NOT NULL, cost_units INTEGER NOT NULL, "
           "cpu_us INTEGER NOT NULL, gpu_us INTEGER NOT NULL, load_us INTEGER NOT NULL, "
           "overhead_us INTEGER NOT NULL, latency TEXT NOT NULL, PRIMARY KEY (node, function))",
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

namespace ferry::control {

absl::Status SqliteStateStore::AddUsage(const std::vector<UsageRecord>& rows,
                                        const std::vector<UsageBaseline>& baselines) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  auto rollback = [&](absl::Status s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    (void)Exec("ROLLBACK");
    return s;
  };
  {
    Stmt get(db_, "SELECT latency FROM usage WHERE minute = ?1 AND function = ?2 AND node = ?3");
    Stmt add(db_,
             "INSERT INTO usage(minute, function, node, requests, cost_units, cpu_us, gpu_us, "
             "load_us, overhead_us, cost, latency) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
             "?10, ?11) ON CONFLICT(minute, function, node) DO UPDATE SET "
             "requests = requests + excluded.requests, "
             "cost_units = cost_units + excluded.cost_units, "
             "cpu_us = cpu_us + excluded.cpu_us, gpu_us = gpu_us + excluded.gpu_us, "
             "load_us = load_us + excluded.load_us, "
             "overhead_us = overhead_us + excluded.overhead_us, cost = cost + excluded.cost, "
             "latency = excluded.latency");
    Stmt base(db_,
              "INSERT OR REPLACE INTO usage_baseline(node, function, epoch, requests, cost_units, "
              "cpu_us, gpu_us, load_us, overhead_us, latency) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
              "?8, ?9, ?10)");
    if (!get.ok() || !add.ok() || !base.ok()) return rollback(Error("prepare usage"));
    for (const UsageRecord& r : rows) {
      // The histogram is merged here (SQL cannot add two encoded maps).
      std::map<int64_t, int64_t> latency = r.latency;
      sqlite3_reset(get.get());
      get.BindInt(1, r.minute);
      get.BindText(2, r.function);
      get.BindText(3, r.node);
      const int rc = sqlite3_step(get.get());
      if (rc == SQLITE_ROW) {
        for (const auto& [le, n] : DecodeLatency(get.Text(0))) latency[le] += n;
      } else if (rc != SQLITE_DONE) {
        return rollback(Error("read usage"));
      }
      sqlite3_reset(add.get());
      add.BindInt(1, r.minute);
      add.BindText(2, r.function);
      add.BindText(3, r.node);
      BindCounters(add, 4, r);
      sqlite3_bind_double(add.get(), 10, r.cost);
      add.BindText(11, EncodeLatency(latency));
      if (sqlite3_step(add.get()) != SQLITE_DONE) return rollback(Error("write usage"));
    }
    for (const UsageBaseline& b : baselines) {
      sqlite3_reset(base.get());
      base.BindText(1, b.counters.node);
      base.BindText(2, b.counters.function);
      base.BindInt(3, static_cast<int64_t>(b.epoch));  // stored bit for bit
      BindCounters(base, 4, b.counters);
      base.BindText(10, EncodeLatency(b.counters.latency));
      if (sqlite3_step(base.get()) != SQLITE_DONE) return rollback(Error("write usage baseline"));
    }
  }
  if (absl::Status s = Exec("COMMIT"); !s.ok()) return rollback(s);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<UsageRecord>> SqliteStateStore::ListUsage(int64_t since_minute,
                                                                     std::string_view function) {
  absl::MutexLock lock(&mu_);
  Stmt q(db_,
         "SELECT minute, function, node, requests, cost_units, cpu_us, gpu_us, load_us, "
         "overhead_us, cost, latency FROM usage WHERE minute >= ?1 AND (?2 = '' OR function = ?2) "
         "ORDER BY minute, function, node");
  if (!q.ok()) return Error("prepare list usage");
  q.BindInt(1, since_minute);
  q.BindText(2, function);
  std::vector<UsageRecord> out;
  int rc;
  while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
    UsageRecord r;
    r.minute = sqlite3_column_int64(q.get(), 0);
    r.function = q.Text(1);
    r.node = q.Text(2);
    ReadCounters(q, 3, &r);
    r.cost = sqlite3_column_double(q.get(), 9);
    r.latency = DecodeLatency(q.Text(10));
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return Error("list usage");
  return out;
}

absl::StatusOr<std::vector<UsageBaseline>> SqliteStateStore::ListUsageBaselines() {
  absl::MutexLock lock(&mu_);
  Stmt q(db_,
         "SELECT node, function, epoch, requests, cost_units, cpu_us, gpu_us, load_us, "
         "overhead_us, latency FROM usage_baseline ORDER BY node, function");
  if (!q.ok()) return Error("prepare list usage baselines");
  std::vector<UsageBaseline> out;
  int rc;
  while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
    UsageBaseline b;
    b.counters.node = q.Text(0);
    b.counters.function = q.Text(1);
    b.epoch = static_cast<uint64_t>(sqlite3_column_int64(q.get(), 2));
    ReadCounters(q, 3, &b.counters);
    b.counters.latency = DecodeLatency(q.Text(9));
    out.push_back(std::move(b));
  }
  if (rc != SQLITE_DONE) return Error("list usage baselines");
  return out;
}

}  // namespace ferry::control
