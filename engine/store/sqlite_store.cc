// The SQLite store (SQLiteCpp): WAL journal, numbered migrations tracked in user_version.
#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>

#include "engine/store/store.h"
#include "engine/util/time.h"

namespace weft::store {
namespace {

// Ids as a JSON array, for one statement over many of them (json_each).
std::string json_ids(const std::vector<int64_t>& ids) {
  std::string out = "[";
  for (int64_t id : ids) {
    if (out.size() > 1) out += ',';
    out += std::to_string(id);
  }
  return out + ']';
}

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
    // 2: the rest of the path of one record: entities and identity keys, shadow state,
    // outbox, parked records (rejections, dead letters), conflicts, audit trail.
    R"sql(
    ALTER TABLE inbox ADD COLUMN entity TEXT NOT NULL DEFAULT '';
    ALTER TABLE inbox ADD COLUMN flow TEXT NOT NULL DEFAULT '';
    -- The record itself, apart: marking an inbox row done then rewrites a small row, not
    -- the record (inbox.payload stays for rows written before this migration).
    CREATE TABLE inbox_payload (
      seq INTEGER PRIMARY KEY,
      payload TEXT NOT NULL
    );
    CREATE TABLE entities (
      id INTEGER PRIMARY KEY,
      tenant TEXT NOT NULL,
      connection TEXT NOT NULL,
      remote_id TEXT NOT NULL DEFAULT '',
      created_ms INTEGER NOT NULL
    );
    CREATE TABLE identity_keys (
      tenant TEXT NOT NULL,
      connection TEXT NOT NULL,
      kind TEXT NOT NULL,
      value TEXT NOT NULL,
      entity_id INTEGER NOT NULL REFERENCES entities (id),
      linked_ms INTEGER NOT NULL,
      PRIMARY KEY (tenant, connection, kind, value)
    ) WITHOUT ROWID;
    CREATE INDEX identity_by_entity ON identity_keys (entity_id);
    CREATE TABLE shadow (
      entity_id INTEGER PRIMARY KEY REFERENCES entities (id),
      fields TEXT NOT NULL,
      updated_ms INTEGER NOT NULL
    );
    CREATE TABLE outbox (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      tenant TEXT NOT NULL,
      flow TEXT NOT NULL,
      connection TEXT NOT NULL,
      record_key TEXT NOT NULL,
      entity_id INTEGER NOT NULL,
      kind TEXT NOT NULL,
      body TEXT NOT NULL,
      fields TEXT NOT NULL,
      idempotency_key TEXT NOT NULL,
      correlation_id TEXT NOT NULL,
      script_version TEXT NOT NULL,
      version_number INTEGER NOT NULL,
      version_text TEXT NOT NULL,
      inbox_seq INTEGER NOT NULL,
      attempts INTEGER NOT NULL DEFAULT 0,
      first_attempt_ms INTEGER NOT NULL DEFAULT 0,
      next_attempt_ms INTEGER NOT NULL,
      last_error TEXT NOT NULL DEFAULT '',
      created_ms INTEGER NOT NULL
    );
    CREATE INDEX inbox_by_tenant ON inbox (tenant, done, seq);
    CREATE INDEX inbox_done_age ON inbox (done, received_ms);
    CREATE INDEX outbox_by_inbox ON outbox (inbox_seq);
    CREATE INDEX outbox_due ON outbox (tenant, connection, next_attempt_ms);
    CREATE INDEX outbox_entity ON outbox (entity_id, id);
    CREATE INDEX outbox_flow ON outbox (tenant, flow, created_ms);
    CREATE TABLE parked (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      kind TEXT NOT NULL,
      tenant TEXT NOT NULL,
      flow TEXT NOT NULL,
      stage TEXT NOT NULL,
      record_key TEXT NOT NULL,
      correlation_id TEXT NOT NULL,
      script_version TEXT NOT NULL,
      error TEXT NOT NULL,
      reason TEXT NOT NULL,
      location TEXT NOT NULL,
      detail TEXT NOT NULL,
      source TEXT NOT NULL,
      version_number INTEGER NOT NULL,
      version_text TEXT NOT NULL,
      attempts INTEGER NOT NULL,
      created_ms INTEGER NOT NULL,
      replayed_ms INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX parked_by_flow ON parked (tenant, flow, kind, replayed_ms);
    CREATE TABLE conflicts (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      tenant TEXT NOT NULL,
      flow TEXT NOT NULL,
      kind TEXT NOT NULL,
      record_key TEXT NOT NULL,
      entity_id INTEGER NOT NULL,
      field TEXT NOT NULL,
      detail TEXT NOT NULL,
      correlation_id TEXT NOT NULL,
      created_ms INTEGER NOT NULL,
      resolved_ms INTEGER NOT NULL DEFAULT 0,
      resolution TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX conflicts_open ON conflicts (tenant, resolved_ms);
    CREATE INDEX conflicts_by_record ON conflicts (tenant, flow, record_key);
    CREATE TABLE audit (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      correlation_id TEXT NOT NULL,
      tenant TEXT NOT NULL,
      flow TEXT NOT NULL,
      record_key TEXT NOT NULL,
      at_ms INTEGER NOT NULL,
      stage TEXT NOT NULL,
      detail TEXT NOT NULL
    );
    CREATE INDEX audit_by_correlation ON audit (correlation_id, id);
    )sql",
    // 3: scheduled and started jobs (weft serve): one row per run.
    R"sql(
    CREATE TABLE job_runs (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      tenant TEXT NOT NULL,
      flow TEXT NOT NULL,
      job TEXT NOT NULL,
      trigger TEXT NOT NULL,
      scheduled_ms INTEGER NOT NULL,
      started_ms INTEGER NOT NULL,
      ended_ms INTEGER NOT NULL DEFAULT 0,
      status TEXT NOT NULL DEFAULT 'running',
      counts TEXT NOT NULL DEFAULT '{}',
      error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX job_runs_by_flow ON job_runs (tenant, flow, job, id);
    )sql",
    // 4: fewer index entries to keep per inbox record. Three indexes held `done`, so marking a
    // record done moved an entry in each of them (six B-tree writes). Now the records waiting
    // are in one partial index (marking done deletes their entry) and the done ones, for
    // pruning by age, in another (one insert at its end: received_ms grows).
    R"sql(
    DROP INDEX inbox_pending;
    DROP INDEX inbox_by_tenant;
    DROP INDEX inbox_done_age;
    CREATE INDEX inbox_waiting ON inbox (tenant, seq) WHERE done = 0;
    CREATE INDEX inbox_done_at ON inbox (received_ms) WHERE done = 1;
    )sql",
    // 5: the fields a first write must not set if the destination already holds them
    // (destination-owned, never seen there): looked up before the operation is sent.
    R"sql(
    ALTER TABLE outbox ADD COLUMN guard TEXT NOT NULL DEFAULT '';
    )sql",
    // 6: when a parked record's source arrived, so that its replay keeps that time.
    R"sql(
    ALTER TABLE parked ADD COLUMN received_ms INTEGER NOT NULL DEFAULT 0;
    )sql",
    // 7: which inbox record's version is applied, so that a conflict resolved for the
    // source goes through again as the record's newest version (0: not known).
    R"sql(
    ALTER TABLE applied_versions ADD COLUMN inbox_seq INTEGER NOT NULL DEFAULT 0;
    )sql",
};
#define OP_COLUMNS                                                                                       \
  "id, tenant, flow, connection, record_key, entity_id, kind, body, fields, idempotency_key, correlation_id, " \
  "script_version, version_number, version_text, inbox_seq, attempts, first_attempt_ms, next_attempt_ms, "    \
  "last_error, created_ms, guard"
#define PARKED_COLUMNS                                                                                   \
  "id, kind, tenant, flow, stage, record_key, correlation_id, script_version, error, reason, location, " \
  "detail, source, version_number, version_text, attempts, created_ms, replayed_ms, received_ms"

constexpr int kLatest = static_cast<int>(sizeof kMigrations / sizeof kMigrations[0]);


class SqliteStore final : public Store {
 public:
  SqliteStore(const std::string& path, int cache_kib, bool as_is = false)
      : path_(path),
        db_(path, SQLite::OPEN_READWRITE | (as_is ? 0 : SQLite::OPEN_CREATE) | SQLite::OPEN_FULLMUTEX) {
    if (as_is) {
      db_.setBusyTimeout(5000);
      int have = schema_version();
      if (have != kLatest)
        throw StoreError(path_ + ": " +
                         (have == 0 ? std::string("not a weft database")
                          : have > kLatest
                              ? "the database has schema version " + std::to_string(have) + ", newer than this weft knows (" +
                                    std::to_string(kLatest) + "); use a newer weft"
                              : "the database has schema version " + std::to_string(have) + ", older than this weft's (" +
                                    std::to_string(kLatest) + "); it is upgraded when weft serve (restarted with this version) or weft sync next opens it; "
                                    "this command only reads"));
      db_.exec("PRAGMA foreign_keys=ON");
      return;
    }
    if (cache_kib > 0) db_.exec("PRAGMA cache_size=-" + std::to_string(cache_kib));
    db_.exec("PRAGMA journal_mode=WAL");
    db_.exec("PRAGMA synchronous=NORMAL");  // WAL + NORMAL: durable at commit, no fsync per record
    db_.exec("PRAGMA foreign_keys=ON");
    // The writer checkpoints only past ~80 MiB of log: `weft sync` checkpoints from a thread
    // of its own (Store::checkpoint) so the writer does not pay for it inside its batches;
    // this bound is for when nothing else does.
    db_.exec("PRAGMA wal_autocheckpoint=20000");
    db_.setBusyTimeout(5000);
    migrate();
  }

  int64_t prune(int64_t older_than_ms, size_t limit) override {
    // Done inbox rows no operation refers to, oldest first, in bounded chunks so a writer
    // never waits long for the lock.
    std::vector<int64_t> seqs;
    {
      auto q = stmt("SELECT seq FROM inbox WHERE done = 1 AND received_ms < ? "
                    "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.inbox_seq = inbox.seq) ORDER BY received_ms LIMIT ?");
      q.bind(1, older_than_ms);
      q.bind(2, static_cast<int64_t>(limit));
      while (q.executeStep()) seqs.push_back(q.getColumn(0).getInt64());
    }
    for (int64_t seq : seqs) {
      auto a = stmt("DELETE FROM inbox_payload WHERE seq = ?");
      a.bind(1, seq);
      a.exec();
      auto b = stmt("DELETE FROM inbox WHERE seq = ?");
      b.bind(1, seq);
      b.exec();
    }
    return static_cast<int64_t>(seqs.size());
  }

  void begin() override { db_.exec("BEGIN IMMEDIATE"); }
  void set_synced_commits(bool on) override { db_.exec(on ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL"); }
  void commit() override { db_.exec("COMMIT"); }
  void rollback() override { db_.exec("ROLLBACK"); }

  bool inbox_add(InboxRecord& r) override {
    auto q = stmt(
        "INSERT INTO inbox (tenant, connection, message_id, correlation_id, payload, received_ms, entity, flow) "
        "VALUES (?, ?, ?, ?, '', ?, ?, ?) ON CONFLICT (tenant, connection, message_id) DO NOTHING");
    q.bind(1, r.tenant);
    q.bind(2, r.connection);
    q.bind(3, r.message_id);
    q.bind(4, r.correlation_id);
    if (!r.received_ms) r.received_ms = util::now_ms();
    q.bind(5, r.received_ms);
    q.bind(6, r.entity);
    q.bind(7, r.flow);
    if (q.exec() == 0) return false;
    r.seq = db_.getLastInsertRowid();
    auto body = stmt("INSERT INTO inbox_payload (seq, payload) VALUES (?, ?)");
    body.bind(1, r.seq);
    body.bind(2, r.payload);
    body.exec();
    return true;
  }

  std::vector<InboxRecord> inbox_next(size_t limit, const std::string& tenant, int64_t after_seq) override {
    // Two statements, so the one with a tenant reads the waiting index (tenant, seq) in order
    // (an "?2 = '' OR tenant = ?2" would keep SQLite from using it).
#define INBOX_NEXT_SELECT                                                                                 \
  "SELECT i.seq, tenant, connection, message_id, correlation_id, coalesce(p.payload, i.payload), received_ms, " \
  "entity, flow FROM inbox i LEFT JOIN inbox_payload p ON p.seq = i.seq "
    auto q = tenant.empty() ? stmt(INBOX_NEXT_SELECT "WHERE done = 0 AND i.seq > ?3 ORDER BY i.seq LIMIT ?1")
                            : stmt(INBOX_NEXT_SELECT "WHERE done = 0 AND tenant = ?2 AND i.seq > ?3 ORDER BY i.seq LIMIT ?1");
#undef INBOX_NEXT_SELECT
    q.bind(1, static_cast<int64_t>(limit));
    if (!tenant.empty()) q.bind(2, tenant);
    q.bind(3, after_seq);
    std::vector<InboxRecord> out;
    while (q.executeStep()) out.push_back(read_inbox(q));
    return out;
  }

  void inbox_done(int64_t seq) override {
    auto q = stmt("UPDATE inbox SET done = 1 WHERE seq = ?");
    q.bind(1, seq);
    q.exec();
  }

// One inbox record as read_inbox reads it (the inbox as i, its payload table as p).
#define INBOX_RECORD_COLUMNS                                                                    \
  "i.seq, i.tenant, i.connection, i.message_id, i.correlation_id, coalesce(p.payload, i.payload), " \
  "i.received_ms, i.entity, i.flow"
  std::optional<InboxRecord> inbox_by_correlation(const std::string& tenant, const std::string& cid) override {
    // No index on correlation ids (it would cost every insert): an admin action scans.
    auto q = stmt("SELECT " INBOX_RECORD_COLUMNS " FROM inbox i LEFT JOIN inbox_payload p ON p.seq = i.seq "
                  "WHERE i.tenant = ? AND i.correlation_id = ? ORDER BY i.seq DESC LIMIT 1");
    q.bind(1, tenant);
    q.bind(2, cid);
    if (!q.executeStep()) return std::nullopt;
    return read_inbox(q);
  }

  bool inbox_has(const std::string& tenant, const std::string& connection, const std::string& message_id) override {
    auto q = stmt("SELECT 1 FROM inbox WHERE tenant = ? AND connection = ? AND message_id = ?");
    q.bind(1, tenant);
    q.bind(2, connection);
    q.bind(3, message_id);
    return q.executeStep();
  }

  void inbox_done(const std::vector<int64_t>& seqs) override {
    if (seqs.empty()) return;
    if (seqs.size() == 1) return inbox_done(seqs.front());
    auto q = stmt("UPDATE inbox SET done = 1 WHERE seq IN (SELECT value FROM json_each(?))");
    q.bind(1, json_ids(seqs));
    q.exec();
  }

  int64_t inbox_backlog(const std::string& tenant) override {
    auto q = tenant.empty() ? stmt("SELECT count(*) FROM inbox WHERE done = 0")
                            : stmt("SELECT count(*) FROM inbox WHERE done = 0 AND tenant = ?1");
    if (!tenant.empty()) q.bind(1, tenant);
    q.executeStep();
    return q.getColumn(0).getInt64();
  }

  bool apply_version(const std::string& tenant, const std::string& flow, const std::string& key, const Version& v,
                     bool allow_equal, int64_t inbox_seq) override {
    // One statement: insert, or update only when strictly newer (number, then text), or
    // equal when a replay asks for it.
    auto q = stmt(
        "INSERT INTO applied_versions (tenant, flow, record_key, version_number, version_text, applied_ms, inbox_seq) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?8) "
        "ON CONFLICT (tenant, flow, record_key) DO UPDATE SET "
        "version_number = excluded.version_number, version_text = excluded.version_text, "
        "applied_ms = excluded.applied_ms, inbox_seq = excluded.inbox_seq "
        "WHERE excluded.version_number > applied_versions.version_number OR "
        "(excluded.version_number = applied_versions.version_number AND "
        " (excluded.version_text > applied_versions.version_text OR "
        "  (?7 AND excluded.version_text = applied_versions.version_text)))");
    q.bind(1, tenant);
    q.bind(2, flow);
    q.bind(3, key);
    q.bind(4, v.number);
    q.bind(5, v.text);
    q.bind(6, util::now_ms());
    q.bind(7, allow_equal ? 1 : 0);
    q.bind(8, inbox_seq);
    return q.exec() > 0;
  }

  std::optional<InboxRecord> applied_record(const std::string& tenant, const std::string& flow,
                                            const std::string& key) override {
    auto q = stmt("SELECT " INBOX_RECORD_COLUMNS " FROM applied_versions a JOIN inbox i ON i.seq = a.inbox_seq "
                  "LEFT JOIN inbox_payload p ON p.seq = i.seq "
                  "WHERE a.tenant = ? AND a.flow = ? AND a.record_key = ? AND a.inbox_seq > 0");
    q.bind(1, tenant);
    q.bind(2, flow);
    q.bind(3, key);
    if (!q.executeStep()) return std::nullopt;
    return read_inbox(q);
  }

  std::optional<Version> applied_version(const std::string& tenant, const std::string& flow,
                                         const std::string& key) override {
    auto q = stmt(
        "SELECT version_number, version_text FROM applied_versions "
        "WHERE tenant = ? AND flow = ? AND record_key = ?");
    q.bind(1, tenant);
    q.bind(2, flow);
    q.bind(3, key);
    if (!q.executeStep()) return std::nullopt;
    return Version{q.getColumn(0).getInt64(), q.getColumn(1).getString()};
  }

  std::optional<std::string> cursor(const std::string& tenant, const std::string& flow) override {
    auto q = stmt("SELECT value FROM cursors WHERE tenant = ? AND flow = ?");
    q.bind(1, tenant);
    q.bind(2, flow);
    if (!q.executeStep()) return std::nullopt;
    return q.getColumn(0).getString();
  }

  void set_cursor(const std::string& tenant, const std::string& flow, const std::string& value) override {
    auto q = stmt(
        "INSERT INTO cursors (tenant, flow, value, updated_ms) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (tenant, flow) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms");
    q.bind(1, tenant);
    q.bind(2, flow);
    q.bind(3, value);
    q.bind(4, util::now_ms());
    q.exec();
  }

  std::optional<int64_t> find_identity(const std::string& tenant, const std::string& connection,
                                       const std::string& kind, const std::string& value) override {
    auto q = stmt(
        "SELECT entity_id FROM identity_keys WHERE tenant = ? AND connection = ? AND kind = ? AND value = ?");
    q.bind(1, tenant);
    q.bind(2, connection);
    q.bind(3, kind);
    q.bind(4, value);
    if (!q.executeStep()) return std::nullopt;
    return q.getColumn(0).getInt64();
  }

  void link_identity(const std::string& tenant, const std::string& connection, const std::string& kind,
                     const std::string& value, int64_t entity_id) override {
    auto q = stmt(
        "INSERT INTO identity_keys (tenant, connection, kind, value, entity_id, linked_ms) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING");
    q.bind(1, tenant);
    q.bind(2, connection);
    q.bind(3, kind);
    q.bind(4, value);
    q.bind(5, entity_id);
    q.bind(6, util::now_ms());
    q.exec();
  }

  std::vector<std::pair<std::string, std::string>> identity_keys(int64_t entity_id) override {
    auto q = stmt("SELECT kind, value FROM identity_keys WHERE entity_id = ? ORDER BY kind, linked_ms");
    q.bind(1, entity_id);
    std::vector<std::pair<std::string, std::string>> out;
    while (q.executeStep()) out.emplace_back(q.getColumn(0).getString(), q.getColumn(1).getString());
    return out;
  }

  int64_t create_entity(const std::string& tenant, const std::string& connection) override {
    auto q = stmt("INSERT INTO entities (tenant, connection, created_ms) VALUES (?, ?, ?)");
    q.bind(1, tenant);
    q.bind(2, connection);
    q.bind(3, util::now_ms());
    q.exec();
    return db_.getLastInsertRowid();
  }

  Entity entity(int64_t id) override {
    auto q = stmt("SELECT remote_id FROM entities WHERE id = ?");
    q.bind(1, id);
    Entity e;
    if (q.executeStep()) {
      e.id = id;
      e.remote_id = q.getColumn(0).getString();
    }
    return e;
  }

  void set_remote_id(int64_t entity_id, const std::string& remote_id) override {
    auto q = stmt("UPDATE entities SET remote_id = ? WHERE id = ?");
    q.bind(1, remote_id);
    q.bind(2, entity_id);
    q.exec();
  }

  ShadowState shadow(int64_t entity_id) override {
    auto q = stmt("SELECT fields FROM shadow WHERE entity_id = ?");
    q.bind(1, entity_id);
    ShadowState s;
    if (q.executeStep()) {
      s.fields_json = q.getColumn(0).getString();
      s.exists = true;
    }
    return s;
  }

  void set_shadow(int64_t entity_id, const std::string& fields_json) override {
    auto q = stmt(
        "INSERT INTO shadow (entity_id, fields, updated_ms) VALUES (?, ?, ?) "
        "ON CONFLICT (entity_id) DO UPDATE SET fields = excluded.fields, updated_ms = excluded.updated_ms");
    q.bind(1, entity_id);
    q.bind(2, fields_json);
    q.bind(3, util::now_ms());
    q.exec();
  }

  int64_t plan(Operation& op, const std::vector<int64_t>& in_flight) override {
    // The entity's newest waiting operation, if it came from the same record and flow (so
    // the new one carries its changes) and is not being sent right now, is replaced.
    // Operations without an entity (append-only events) are never replaced.
    auto newest = stmt("SELECT id, attempts, first_attempt_ms, next_attempt_ms, last_error, flow, record_key, created_ms "
                       "FROM outbox WHERE entity_id = ? ORDER BY id DESC LIMIT 1");
    newest.bind(1, op.entity_id);
    int64_t replace = 0;
    if (op.entity_id != 0 && newest.executeStep()) {
      int64_t id = newest.getColumn(0).getInt64();
      bool same_record = newest.getColumn(5).getString() == op.flow && newest.getColumn(6).getString() == op.record_key;
      if (same_record && std::find(in_flight.begin(), in_flight.end(), id) == in_flight.end()) {
        replace = id;
        op.attempts = newest.getColumn(1).getInt();
        op.first_attempt_ms = newest.getColumn(2).getInt64();
        op.next_attempt_ms = std::max(op.next_attempt_ms, newest.getColumn(3).getInt64());
        op.last_error = newest.getColumn(4).getString();
        op.created_ms = newest.getColumn(7).getInt64();  // the change has waited since then
      }
    }
    newest.reset();
    if (replace) {
      auto del = stmt("DELETE FROM outbox WHERE id = ?");
      del.bind(1, replace);
      del.exec();
    }
    auto q = stmt(
        "INSERT INTO outbox (tenant, flow, connection, record_key, entity_id, kind, body, fields, idempotency_key, "
        "correlation_id, script_version, version_number, version_text, inbox_seq, attempts, first_attempt_ms, "
        "next_attempt_ms, last_error, created_ms, guard) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    q.bind(1, op.tenant);
    q.bind(2, op.flow);
    q.bind(3, op.connection);
    q.bind(4, op.record_key);
    q.bind(5, op.entity_id);
    q.bind(6, op.kind);
    q.bind(7, op.body);
    q.bind(8, op.fields_json);
    q.bind(9, op.idempotency_key);
    q.bind(10, op.correlation_id);
    q.bind(11, op.script_version);
    q.bind(12, op.version.number);
    q.bind(13, op.version.text);
    q.bind(14, op.inbox_seq);
    q.bind(15, op.attempts);
    q.bind(16, op.first_attempt_ms);
    q.bind(17, op.next_attempt_ms);
    q.bind(18, op.last_error);
    q.bind(19, op.created_ms ? op.created_ms : util::now_ms());
    q.bind(20, op.guard);
    q.exec();
    op.id = db_.getLastInsertRowid();
    return replace;
  }

  std::vector<Operation> due(const std::string& tenant, const std::string& connection, int64_t now_ms, size_t limit,
                             const std::vector<int64_t>& skip_ops, const std::vector<int64_t>& skip_entities) override {
    // Oldest first; an operation is due only if no older one for its entity is waiting (so
    // an operation in flight holds back its entity's later ones). The operations in flight
    // are the oldest, so they come first in the scan: they are left out on their id alone,
    // before the older-operation lookup (that lookup for each one of hundreds was most of
    // the dispatcher's time).
    auto q = stmt(
        "SELECT " OP_COLUMNS " FROM outbox o WHERE tenant = ? AND connection = ? AND next_attempt_ms <= ? "
        "AND o.id NOT IN (SELECT value FROM json_each(?)) AND o.entity_id NOT IN (SELECT value FROM json_each(?)) "
        "AND (o.entity_id = 0 OR NOT EXISTS (SELECT 1 FROM outbox p WHERE p.entity_id = o.entity_id AND p.id < o.id)) "
        "ORDER BY next_attempt_ms, id LIMIT ?");
    q.bind(1, tenant);
    q.bind(2, connection);
    q.bind(3, now_ms);
    q.bind(4, json_ids(skip_ops));
    q.bind(5, json_ids(skip_entities));
    q.bind(6, static_cast<int64_t>(limit));
    std::vector<Operation> out;
    while (q.executeStep()) out.push_back(read_op(q));
    return out;
  }

  std::optional<int64_t> next_due(const std::string& tenant, const std::string& connection) override {
    auto q = stmt("SELECT min(next_attempt_ms) FROM outbox WHERE tenant = ? AND connection = ?");
    q.bind(1, tenant);
    q.bind(2, connection);
    if (!q.executeStep() || q.getColumn(0).isNull()) return std::nullopt;
    return q.getColumn(0).getInt64();
  }

  std::vector<Operation> entity_ops(int64_t entity_id) override {
    auto q = stmt("SELECT " OP_COLUMNS " FROM outbox WHERE entity_id = ? ORDER BY id");
    q.bind(1, entity_id);
    std::vector<Operation> out;
    while (q.executeStep()) out.push_back(read_op(q));
    return out;
  }

  std::vector<int64_t> existing_ops(const std::vector<int64_t>& ids) override {
    // One statement for the lot (the ids as a JSON array).
    auto q = stmt("SELECT id FROM outbox WHERE id IN (SELECT value FROM json_each(?))");
    q.bind(1, json_ids(ids));
    std::vector<int64_t> out;
    while (q.executeStep()) out.push_back(q.getColumn(0).getInt64());
    return out;
  }

  void delivered(int64_t op_id) override {
    auto q = stmt("DELETE FROM outbox WHERE id = ?");
    q.bind(1, op_id);
    q.exec();
  }

  void reschedule(int64_t op_id, int attempts, int64_t first_attempt_ms, int64_t next_attempt_ms,
                  const std::string& last_error) override {
    auto q = stmt("UPDATE outbox SET attempts = ?, first_attempt_ms = ?, next_attempt_ms = ?, last_error = ? "
                   "WHERE id = ?");
    q.bind(1, attempts);
    q.bind(2, first_attempt_ms);
    q.bind(3, next_attempt_ms);
    q.bind(4, last_error);
    q.bind(5, op_id);
    q.exec();
  }

  int64_t outbox_size(const std::string& tenant, const std::string& flow) override {
    auto q = stmt("SELECT count(*) FROM outbox WHERE tenant = ? AND flow = ?");
    q.bind(1, tenant);
    q.bind(2, flow);
    q.executeStep();
    return q.getColumn(0).getInt64();
  }

  int64_t outbox_total() override { return scalar("SELECT count(*) FROM outbox"); }

  int64_t park(Parked& p, int64_t op_id) override {
    if (p.source.empty() && p.inbox_seq) {  // the outbox keeps only a reference to its record
      auto src = stmt("SELECT coalesce(p.payload, i.payload), i.received_ms FROM inbox i LEFT JOIN inbox_payload p "
                      "ON p.seq = i.seq WHERE i.seq = ?");
      src.bind(1, p.inbox_seq);
      if (src.executeStep()) {
        p.source = src.getColumn(0).getString();
        if (!p.received_ms) p.received_ms = src.getColumn(1).getInt64();
      }
    }
    auto q = stmt(
        "INSERT INTO parked (kind, tenant, flow, stage, record_key, correlation_id, script_version, error, reason, "
        "location, detail, source, version_number, version_text, attempts, created_ms, received_ms) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    q.bind(1, p.kind);
    q.bind(2, p.tenant);
    q.bind(3, p.flow);
    q.bind(4, p.stage);
    q.bind(5, p.record_key);
    q.bind(6, p.correlation_id);
    q.bind(7, p.script_version);
    q.bind(8, p.error);
    q.bind(9, p.reason);
    q.bind(10, p.location);
    q.bind(11, p.detail);
    q.bind(12, p.source);
    q.bind(13, p.version.number);
    q.bind(14, p.version.text);
    q.bind(15, p.attempts);
    q.bind(16, p.created_ms ? p.created_ms : util::now_ms());
    q.bind(17, p.received_ms);
    q.exec();
    p.id = db_.getLastInsertRowid();
    if (op_id) delivered(op_id);
    return p.id;
  }

  std::vector<Parked> parked(const std::string& tenant, const std::string& flow, const std::string& kind,
                             bool include_replayed, size_t limit, int64_t after_id) override {
    auto q = stmt(
        "SELECT " PARKED_COLUMNS " FROM parked WHERE id > ?6 AND (?1 = '' OR tenant = ?1) AND (?2 = '' OR flow = ?2) "
        "AND (?3 = '' OR kind = ?3) AND (?4 OR replayed_ms = 0) ORDER BY id LIMIT ?5");
    q.bind(6, after_id);
    q.bind(1, tenant);
    q.bind(2, flow);
    q.bind(3, kind);
    q.bind(4, include_replayed ? 1 : 0);
    q.bind(5, static_cast<int64_t>(limit));
    std::vector<Parked> out;
    while (q.executeStep()) out.push_back(read_parked(q));
    return out;
  }

  std::optional<Parked> parked_by_id(int64_t id) override {
    auto q = stmt("SELECT " PARKED_COLUMNS " FROM parked WHERE id = ?");
    q.bind(1, id);
    if (!q.executeStep()) return std::nullopt;
    return read_parked(q);
  }

  bool mark_replayed(int64_t id) override {
    auto q = stmt("UPDATE parked SET replayed_ms = ? WHERE id = ? AND replayed_ms = 0");
    q.bind(1, util::now_ms());
    q.bind(2, id);
    return q.exec() > 0;
  }

  int64_t add_conflict(Conflict& c) override {
    // The same open conflict (record, field, values) is recorded once, however often the
    // record comes through before someone resolves it.
    {
      auto open = stmt("SELECT id FROM conflicts WHERE tenant = ? AND flow = ? AND record_key = ? AND field = ? "
                       "AND detail = ? AND resolved_ms = 0");
      open.bind(1, c.tenant);
      open.bind(2, c.flow);
      open.bind(3, c.record_key);
      open.bind(4, c.field);
      open.bind(5, c.detail);
      if (open.executeStep()) return c.id = open.getColumn(0).getInt64();
    }
    auto q = stmt(
        "INSERT INTO conflicts (tenant, flow, kind, record_key, entity_id, field, detail, correlation_id, created_ms) "
        "VALUES (?,?,?,?,?,?,?,?,?)");
    q.bind(1, c.tenant);
    q.bind(2, c.flow);
    q.bind(3, c.kind);
    q.bind(4, c.record_key);
    q.bind(5, c.entity_id);
    q.bind(6, c.field);
    q.bind(7, c.detail);
    q.bind(8, c.correlation_id);
    q.bind(9, c.created_ms ? c.created_ms : util::now_ms());
    q.exec();
    c.id = db_.getLastInsertRowid();
    return c.id;
  }

  std::vector<Conflict> conflicts(const std::string& tenant, bool include_resolved, size_t limit) override {
    auto q = stmt(
        "SELECT id, tenant, flow, kind, record_key, entity_id, field, detail, correlation_id, created_ms, "
        "resolved_ms, resolution FROM conflicts WHERE (?1 = '' OR tenant = ?1) AND (?2 OR resolved_ms = 0) "
        "ORDER BY id LIMIT ?3");
    q.bind(1, tenant);
    q.bind(2, include_resolved ? 1 : 0);
    q.bind(3, static_cast<int64_t>(limit));
    std::vector<Conflict> out;
    while (q.executeStep()) {
      Conflict c;
      c.id = q.getColumn(0).getInt64();
      c.tenant = q.getColumn(1).getString();
      c.flow = q.getColumn(2).getString();
      c.kind = q.getColumn(3).getString();
      c.record_key = q.getColumn(4).getString();
      c.entity_id = q.getColumn(5).getInt64();
      c.field = q.getColumn(6).getString();
      c.detail = q.getColumn(7).getString();
      c.correlation_id = q.getColumn(8).getString();
      c.created_ms = q.getColumn(9).getInt64();
      c.resolved_ms = q.getColumn(10).getInt64();
      c.resolution = q.getColumn(11).getString();
      out.push_back(std::move(c));
    }
    return out;
  }

  void audit(const AuditEvent& e) override {
    auto q = stmt(
        "INSERT INTO audit (correlation_id, tenant, flow, record_key, at_ms, stage, detail) VALUES (?,?,?,?,?,?,?)");
    q.bind(1, e.correlation_id);
    q.bind(2, e.tenant);
    q.bind(3, e.flow);
    q.bind(4, e.record_key);
    q.bind(5, e.at_ms ? e.at_ms : util::now_ms());
    q.bind(6, e.stage);
    q.bind(7, e.detail);
    q.exec();
  }

  void audit(const std::vector<AuditEvent>& events) override {
    // Multi-row inserts of 32, then 8, then single rows: one statement per row was the
    // costliest part of writing the trail (a row per record and stage).
    static const std::string sql[3] = {audit_sql(32), audit_sql(8), audit_sql(1)};
    static constexpr size_t rows[3] = {32, 8, 1};
    int64_t now = util::now_ms();
    size_t i = 0;
    while (i < events.size()) {
      int k = events.size() - i >= 32 ? 0 : events.size() - i >= 8 ? 1 : 2;
      auto q = stmt(sql[k].c_str());
      for (size_t r = 0; r < rows[k]; ++r, ++i) {
        const AuditEvent& e = events[i];
        int c = static_cast<int>(r) * 7;
        q.s.bindNoCopy(c + 1, e.correlation_id);
        q.s.bindNoCopy(c + 2, e.tenant);
        q.s.bindNoCopy(c + 3, e.flow);
        q.s.bindNoCopy(c + 4, e.record_key);
        q.bind(c + 5, e.at_ms ? e.at_ms : now);
        q.s.bindNoCopy(c + 6, e.stage);
        q.s.bindNoCopy(c + 7, e.detail);
      }
      q.exec();
    }
  }

  std::vector<AuditEvent> trace(const std::string& correlation_id) override {
    auto q = stmt("SELECT correlation_id, tenant, flow, record_key, at_ms, stage, detail FROM audit "
                   "WHERE correlation_id = ? ORDER BY id");
    q.bind(1, correlation_id);
    std::vector<AuditEvent> out;
    while (q.executeStep()) {
      AuditEvent e;
      e.correlation_id = q.getColumn(0).getString();
      e.tenant = q.getColumn(1).getString();
      e.flow = q.getColumn(2).getString();
      e.record_key = q.getColumn(3).getString();
      e.at_ms = q.getColumn(4).getInt64();
      e.stage = q.getColumn(5).getString();
      e.detail = q.getColumn(6).getString();
      out.push_back(std::move(e));
    }
    return out;
  }

  std::vector<FlowStatus> status() override {
    // Every tenant + flow that has anything: cursors, outbox, parked records, conflicts.
    auto q = stmt(R"sql(
      WITH flows AS (
        SELECT tenant, flow FROM cursors WHERE flow NOT LIKE '%#%' UNION SELECT tenant, flow FROM outbox
        UNION SELECT tenant, flow FROM parked UNION SELECT tenant, flow FROM conflicts)
      SELECT f.tenant, f.flow,
        (SELECT count(*) FROM outbox o WHERE o.tenant = f.tenant AND o.flow = f.flow),
        (SELECT ifnull(min(created_ms), 0) FROM outbox o WHERE o.tenant = f.tenant AND o.flow = f.flow),
        (SELECT count(*) FROM parked p WHERE p.tenant = f.tenant AND p.flow = f.flow AND p.kind = 'dead_letter'
           AND p.replayed_ms = 0),
        (SELECT count(*) FROM parked p WHERE p.tenant = f.tenant AND p.flow = f.flow AND p.kind = 'rejection'
           AND p.replayed_ms = 0),
        (SELECT count(*) FROM conflicts c WHERE c.tenant = f.tenant AND c.flow = f.flow AND c.resolved_ms = 0),
        (SELECT ifnull(value, '') FROM cursors c WHERE c.tenant = f.tenant AND c.flow = f.flow)
      FROM flows f ORDER BY f.tenant, f.flow)sql");
    std::vector<FlowStatus> out;
    while (q.executeStep()) {
      FlowStatus s;
      s.tenant = q.getColumn(0).getString();
      s.flow = q.getColumn(1).getString();
      s.outbox = q.getColumn(2).getInt64();
      s.outbox_oldest_ms = q.getColumn(3).getInt64();
      s.dead_letters = q.getColumn(4).getInt64();
      s.rejections = q.getColumn(5).getInt64();
      s.conflicts = q.getColumn(6).getInt64();
      s.cursor = q.getColumn(7).isNull() ? "" : q.getColumn(7).getString();
      out.push_back(std::move(s));
    }
    return out;
  }

  bool resolve_conflict(int64_t id, const std::string& resolution) override {
    auto q = stmt("UPDATE conflicts SET resolved_ms = ?, resolution = ? WHERE id = ? AND resolved_ms = 0");
    q.bind(1, util::now_ms());
    q.bind(2, resolution);
    q.bind(3, id);
    return q.exec() > 0;
  }

  int64_t job_start(JobRun& r) override {
    auto q = stmt("INSERT INTO job_runs (tenant, flow, job, trigger, scheduled_ms, started_ms) VALUES (?,?,?,?,?,?)");
    q.bind(1, r.tenant);
    q.bind(2, r.flow);
    q.bind(3, r.job);
    q.bind(4, r.trigger);
    q.bind(5, r.scheduled_ms);
    q.bind(6, r.started_ms ? r.started_ms : util::now_ms());
    q.exec();
    return r.id = db_.getLastInsertRowid();
  }

  void job_end(int64_t id, const std::string& status, const std::string& counts_json,
               const std::string& error) override {
    auto q = stmt("UPDATE job_runs SET ended_ms = ?, status = ?, counts = ?, error = ? WHERE id = ?");
    q.bind(1, util::now_ms());
    q.bind(2, status);
    q.bind(3, counts_json);
    q.bind(4, error);
    q.bind(5, id);
    q.exec();
  }

  std::vector<JobRun> job_runs(const std::string& tenant, const std::string& flow, const std::string& job,
                               size_t limit) override {
    auto q = stmt(
        "SELECT id, tenant, flow, job, trigger, scheduled_ms, started_ms, ended_ms, status, counts, error "
        "FROM job_runs WHERE tenant = ?1 AND (?2 = '' OR flow = ?2) AND (?3 = '' OR job = ?3) "
        "ORDER BY id DESC LIMIT ?4");
    q.bind(1, tenant);
    q.bind(2, flow);
    q.bind(3, job);
    q.bind(4, static_cast<int64_t>(limit));
    std::vector<JobRun> out;
    while (q.executeStep()) {
      JobRun r;
      r.id = q.getColumn(0).getInt64();
      r.tenant = q.getColumn(1).getString();
      r.flow = q.getColumn(2).getString();
      r.job = q.getColumn(3).getString();
      r.trigger = q.getColumn(4).getString();
      r.scheduled_ms = q.getColumn(5).getInt64();
      r.started_ms = q.getColumn(6).getInt64();
      r.ended_ms = q.getColumn(7).getInt64();
      r.status = q.getColumn(8).getString();
      r.counts_json = q.getColumn(9).getString();
      r.error = q.getColumn(10).getString();
      out.push_back(std::move(r));
    }
    return out;
  }

  void clear_shadow(int64_t entity_id) override {
    auto q = stmt("DELETE FROM shadow WHERE entity_id = ?");
    q.bind(1, entity_id);
    q.exec();
  }

  void checkpoint() override { db_.exec("PRAGMA wal_checkpoint(PASSIVE)"); }

  int schema_version() override { return db_.execAndGet("PRAGMA user_version").getInt(); }

 private:
  // Prepared once per connection, reset before each use (preparing costs more than most
  // of these statements take to run).
  // The handle resets its statement when it goes out of scope, so no statement keeps a read
  // snapshot open between calls.
  struct Q {
    SQLite::Statement& s;
    explicit Q(SQLite::Statement& st) : s(st) {}
    Q(const Q&) = delete;
    ~Q() {
      try {
        s.reset();
      } catch (...) {
      }
    }
    template <class... A>
    void bind(A&&... a) { s.bind(std::forward<A>(a)...); }
    // A named string outlives the statement's run (bind, exec or step, reset: all in the
    // caller's scope), so SQLite reads it in place instead of copying it; a temporary is copied.
    void bind(int i, const std::string& v) { s.bindNoCopy(i, v); }
    void bind(int i, std::string&& v) { s.bind(i, v); }
    int exec() { return s.exec(); }
    bool executeStep() { return s.executeStep(); }
    SQLite::Column getColumn(int i) { return s.getColumn(i); }
    void reset() { s.reset(); }
  };
  Q stmt(const char* sql) {
    auto it = cache_.find(sql);
    if (it == cache_.end()) it = cache_.emplace(sql, std::make_unique<SQLite::Statement>(db_, sql)).first;
    // (Reset by the last handle's destructor; the bindings are cleared, so none is left over.)
    it->second->clearBindings();
    return Q(*it->second);
  }

  static std::string audit_sql(size_t rows) {
    std::string sql = "INSERT INTO audit (correlation_id, tenant, flow, record_key, at_ms, stage, detail) VALUES ";
    for (size_t r = 0; r < rows; ++r) sql += r ? ",(?,?,?,?,?,?,?)" : "(?,?,?,?,?,?,?)";
    return sql;
  }

  int64_t scalar(const char* sql) {
    auto q = stmt(sql);
    q.executeStep();
    return q.getColumn(0).getInt64();
  }

  // A row of "SELECT i.seq, tenant, connection, message_id, correlation_id, payload,
  // received_ms, entity, flow".
  static InboxRecord read_inbox(Q& q) {
    InboxRecord r;
    r.seq = q.getColumn(0).getInt64();
    r.tenant = q.getColumn(1).getString();
    r.connection = q.getColumn(2).getString();
    r.message_id = q.getColumn(3).getString();
    r.correlation_id = q.getColumn(4).getString();
    r.payload = q.getColumn(5).getString();
    r.received_ms = q.getColumn(6).getInt64();
    r.entity = q.getColumn(7).getString();
    r.flow = q.getColumn(8).getString();
    return r;
  }

  static Operation read_op(Q& q) {
    Operation op;
    op.id = q.getColumn(0).getInt64();
    op.tenant = q.getColumn(1).getString();
    op.flow = q.getColumn(2).getString();
    op.connection = q.getColumn(3).getString();
    op.record_key = q.getColumn(4).getString();
    op.entity_id = q.getColumn(5).getInt64();
    op.kind = q.getColumn(6).getString();
    op.body = q.getColumn(7).getString();
    op.fields_json = q.getColumn(8).getString();
    op.idempotency_key = q.getColumn(9).getString();
    op.correlation_id = q.getColumn(10).getString();
    op.script_version = q.getColumn(11).getString();
    op.version.number = q.getColumn(12).getInt64();
    op.version.text = q.getColumn(13).getString();
    op.inbox_seq = q.getColumn(14).getInt64();
    op.attempts = q.getColumn(15).getInt();
    op.first_attempt_ms = q.getColumn(16).getInt64();
    op.next_attempt_ms = q.getColumn(17).getInt64();
    op.last_error = q.getColumn(18).getString();
    op.created_ms = q.getColumn(19).getInt64();
    op.guard = q.getColumn(20).getString();
    return op;
  }

  static Parked read_parked(Q& q) {
    Parked p;
    p.id = q.getColumn(0).getInt64();
    p.kind = q.getColumn(1).getString();
    p.tenant = q.getColumn(2).getString();
    p.flow = q.getColumn(3).getString();
    p.stage = q.getColumn(4).getString();
    p.record_key = q.getColumn(5).getString();
    p.correlation_id = q.getColumn(6).getString();
    p.script_version = q.getColumn(7).getString();
    p.error = q.getColumn(8).getString();
    p.reason = q.getColumn(9).getString();
    p.location = q.getColumn(10).getString();
    p.detail = q.getColumn(11).getString();
    p.source = q.getColumn(12).getString();
    p.version.number = q.getColumn(13).getInt64();
    p.version.text = q.getColumn(14).getString();
    p.attempts = q.getColumn(15).getInt();
    p.created_ms = q.getColumn(16).getInt64();
    p.replayed_ms = q.getColumn(17).getInt64();
    p.received_ms = q.getColumn(18).getInt64();
    return p;
  }

  void migrate() {
    int have = schema_version();
    if (have > kLatest)
      throw StoreError(path_ + ": the database has schema version " + std::to_string(have) +
                       ", newer than this weft knows (" + std::to_string(kLatest) +
                       "); use a newer weft or another --db");
    if (have == kLatest) return;
    // Taken for writing before the version is read again: two processes starting on an
    // old database at once must not both apply the same migration.
    db_.exec("BEGIN IMMEDIATE");
    try {
      have = schema_version();
      if (have > kLatest)  // a newer weft migrated it meanwhile
        throw StoreError(path_ + ": the database has schema version " + std::to_string(have) +
                         ", newer than this weft knows (" + std::to_string(kLatest) + "); use a newer weft");
      for (int n = have + 1; n <= kLatest; ++n) {
        db_.exec(kMigrations[n - 1]);
        db_.exec("PRAGMA user_version = " + std::to_string(n));
      }
      db_.exec("COMMIT");
    } catch (...) {
      db_.exec("ROLLBACK");
      throw;
    }
  }

  std::string path_;
  SQLite::Database db_;
  std::map<const char*, std::unique_ptr<SQLite::Statement>> cache_;
};

}  // namespace

std::unique_ptr<Store> open_sqlite(const std::string& path, int cache_kib) {
  // weft never reads SQLite's memory statistics, and keeping them takes one process-wide
  // mutex on every allocation, which the writer, the readers and the checkpointer contend
  // on. Turned off before SQLite initializes (if something else initialized it first, the
  // call is refused and nothing changes).
  static const bool memstatus_off = [] { return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) == SQLITE_OK; }();
  (void)memstatus_off;
  try {
    return std::make_unique<SqliteStore>(path, cache_kib);
  } catch (const StoreError&) {
    throw;
  } catch (const std::exception& e) {
    throw StoreError(path + ": " + e.what());
  }
}

std::unique_ptr<Store> open_sqlite_as_is(const std::string& path) {
  try {
    return std::make_unique<SqliteStore>(path, 0, true);
  } catch (const StoreError&) {
    throw;
  } catch (const std::exception& e) {
    throw StoreError(path + ": " + e.what());
  }
}

}  // namespace weft::store
