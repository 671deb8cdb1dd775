// The SQLite store (SQLiteCpp): WAL journal, numbered migrations tracked in user_version.
#include <SQLiteCpp/SQLiteCpp.h>

#include <chrono>

#include "engine/store/store.h"
#include "engine/util/time.h"

namespace weft::store {
namespace {

// Migration N is kMigrations[N - 1]. Append only: a released migration never changes.
const char* const kMigrations[] = {
    // 1: inbox, applied versions, cursors
    R"sql(
    CREATE TABLE inbox (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      tenant TEXT NOT NULL,
      connection TEXT NOT NULL,
      message_id TEXT NOT NULL,
      correlation_id TEXT NOT NULL,
      payload TEXT NOT NULL,
      received_ms INTEGER NOT NULL,
      done INTEGER NOT NULL DEFAULT 0,
      UNIQUE (tenant, connection, message_id)
    );
    CREATE INDEX inbox_pending ON inbox (done, seq);
    CREATE TABLE applied_versions (
      tenant TEXT NOT NULL,
      flow TEXT NOT NULL,
      record_key TEXT NOT NULL,
      version_number INTEGER NOT NULL,
      version_text TEXT NOT NULL,
      applied_ms INTEGER NOT NULL,
      PRIMARY KEY (tenant, flow, record_key)
    ) WITHOUT ROWID;
    CREATE TABLE cursors (
      tenant TEXT NOT NULL,
      flow TEXT NOT NULL,
      value TEXT NOT NULL,
      updated_ms INTEGER NOT NULL,
      PRIMARY KEY (tenant, flow)
    ) WITHOUT ROWID;
    )sql",
};
constexpr int kLatest = static_cast<int>(sizeof kMigrations / sizeof kMigrations[0]);


class SqliteStore final : public Store {
 public:
  explicit SqliteStore(const std::string& path)
      : path_(path), db_(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE | SQLite::OPEN_FULLMUTEX) {
    db_.exec("PRAGMA journal_mode=WAL");
    db_.exec("PRAGMA synchronous=NORMAL");  // WAL + NORMAL: durable at commit, no fsync per record
    db_.exec("PRAGMA foreign_keys=ON");
    db_.setBusyTimeout(5000);
    migrate();
  }

  void begin() override { db_.exec("BEGIN IMMEDIATE"); }
  void commit() override { db_.exec("COMMIT"); }
  void rollback() override { db_.exec("ROLLBACK"); }

  bool inbox_add(InboxRecord& r) override {
    SQLite::Statement q(db_,
                        "INSERT INTO inbox (tenant, connection, message_id, correlation_id, payload, received_ms) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, connection, message_id) DO NOTHING");
    q.bind(1, r.tenant);
    q.bind(2, r.connection);
    q.bind(3, r.message_id);
    q.bind(4, r.correlation_id);
    q.bind(5, r.payload);
    q.bind(6, r.received_ms ? r.received_ms : util::now_ms());
    if (q.exec() == 0) return false;
    r.seq = db_.getLastInsertRowid();
    return true;
  }

  std::vector<InboxRecord> inbox_next(size_t limit) override {
    SQLite::Statement q(db_,
                        "SELECT seq, tenant, connection, message_id, correlation_id, payload, received_ms "
                        "FROM inbox WHERE done = 0 ORDER BY seq LIMIT ?");
    q.bind(1, static_cast<int64_t>(limit));
    std::vector<InboxRecord> out;
    while (q.executeStep()) {
      InboxRecord r;
      r.seq = q.getColumn(0).getInt64();
      r.tenant = q.getColumn(1).getString();
      r.connection = q.getColumn(2).getString();
      r.message_id = q.getColumn(3).getString();
      r.correlation_id = q.getColumn(4).getString();
      r.payload = q.getColumn(5).getString();
      r.received_ms = q.getColumn(6).getInt64();
      out.push_back(std::move(r));
    }
    return out;
  }

  void inbox_done(int64_t seq) override {
    SQLite::Statement q(db_, "UPDATE inbox SET done = 1 WHERE seq = ?");
    q.bind(1, seq);
    q.exec();
  }

  int64_t inbox_backlog() override {
    return db_.execAndGet("SELECT count(*) FROM inbox WHERE done = 0").getInt64();
  }

  bool apply_version(const std::string& tenant, const std::string& flow, const std::string& key,
                     const Version& v) override {
    // One statement: insert, or update only when strictly newer (number, then text).
    SQLite::Statement q(db_,
                        "INSERT INTO applied_versions (tenant, flow, record_key, version_number, version_text, applied_ms) "
                        "VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
                        "ON CONFLICT (tenant, flow, record_key) DO UPDATE SET "
                        "version_number = excluded.version_number, version_text = excluded.version_text, "
                        "applied_ms = excluded.applied_ms "
                        "WHERE excluded.version_number > applied_versions.version_number OR "
                        "(excluded.version_number = applied_versions.version_number AND "
                        " excluded.version_text > applied_versions.version_text)");
    q.bind(1, tenant);
    q.bind(2, flow);
    q.bind(3, key);
    q.bind(4, v.number);
    q.bind(5, v.text);
    q.bind(6, util::now_ms());
    return q.exec() > 0;
  }

  std::optional<Version> applied_version(const std::string& tenant, const std::string& flow,
                                         const std::string& key) override {
    SQLite::Statement q(db_,
                        "SELECT version_number, version_text FROM applied_versions "
                        "WHERE tenant = ? AND flow = ? AND record_key = ?");
    q.bind(1, tenant);
    q.bind(2, flow);
    q.bind(3, key);
    if (!q.executeStep()) return std::nullopt;
    return Version{q.getColumn(0).getInt64(), q.getColumn(1).getString()};
  }

  std::optional<std::string> cursor(const std::string& tenant, const std::string& flow) override {
    SQLite::Statement q(db_, "SELECT value FROM cursors WHERE tenant = ? AND flow = ?");
    q.bind(1, tenant);
    q.bind(2, flow);
    if (!q.executeStep()) return std::nullopt;
    return q.getColumn(0).getString();
  }

  void set_cursor(const std::string& tenant, const std::string& flow, const std::string& value) override {
    SQLite::Statement q(db_,
                        "INSERT INTO cursors (tenant, flow, value, updated_ms) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (tenant, flow) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms");
    q.bind(1, tenant);
    q.bind(2, flow);
    q.bind(3, value);
    q.bind(4, util::now_ms());
    q.exec();
  }

  int schema_version() override { return db_.execAndGet("PRAGMA user_version").getInt(); }

 private:
  void migrate() {
    int have = schema_version();
    if (have > kLatest)
      throw StoreError(path_ + ": the database has schema version " + std::to_string(have) +
                       ", newer than this weft knows (" + std::to_string(kLatest) +
                       "); use a newer weft or another --db");
    for (int n = have + 1; n <= kLatest; ++n) {
      SQLite::Transaction t(db_);
      db_.exec(kMigrations[n - 1]);
      db_.exec("PRAGMA user_version = " + std::to_string(n));
      t.commit();
    }
  }

  std::string path_;
  SQLite::Database db_;
};

}  // namespace

std::unique_ptr<Store> open_sqlite(const std::string& path) {
  try {
    return std::make_unique<SqliteStore>(path);
  } catch (const StoreError&) {
    throw;
  } catch (const std::exception& e) {
    throw StoreError(path + ": " + e.what());
  }
}

}  // namespace weft::store
