#include "engine/serve/spool.h"

#include <SQLiteCpp/SQLiteCpp.h>

#include <mutex>

namespace weft::serve {

struct Spool::Impl {
  std::mutex mu;
  SQLite::Database db;
  SQLite::Statement insert, select, remove, count;
  explicit Impl(const std::string& path)
      : db(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE | SQLite::OPEN_FULLMUTEX),
        insert(init(db), "INSERT OR IGNORE INTO spool (tenant, connection, message_id, entity, correlation_id, payload, "
                         "received_ms) VALUES (?,?,?,?,?,?,?)"),
        select(db, "SELECT id, tenant, connection, message_id, entity, correlation_id, payload, received_ms FROM spool "
                   "ORDER BY id LIMIT ?"),
        remove(db, "DELETE FROM spool WHERE id <= ?"),
        count(db, "SELECT count(*) FROM spool") {}
  std::string path;
  std::unique_ptr<SQLite::Database> checkpointer;  // a connection of its own (see checkpoint())
  static SQLite::Database& init(SQLite::Database& db) {
    // Small pages: a commit of one webhook writes a leaf, an overflow page and an index leaf
    // of 1 KiB each instead of 4 KiB (a new file only: a page size is fixed once written).
    db.exec("PRAGMA page_size=1024");
    db.exec("PRAGMA journal_mode=WAL");
    // A 202 promises the records survive even a power cut: every (group) commit is synced.
    db.exec("PRAGMA synchronous=FULL");
    // Checkpoints run from Spool::checkpoint on another connection, not inside a webhook's
    // commit (they made the latency tail).
    db.exec("PRAGMA wal_autocheckpoint=0");
    db.setBusyTimeout(5000);
    // No AUTOINCREMENT (it rewrote sqlite_sequence's page in every commit): an id may come
    // again once the table is empty, and nothing remembers ids across a move.
    db.exec(
        "CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, "
        "connection TEXT NOT NULL, message_id TEXT NOT NULL, entity TEXT NOT NULL, correlation_id TEXT NOT NULL, "
        "payload TEXT NOT NULL, received_ms INTEGER NOT NULL, UNIQUE (tenant, connection, message_id))");
    return db;
  }
};

Spool::Spool(const std::string& path) {
  try {
    impl_ = std::make_unique<Impl>(path);
    impl_->path = path;
  } catch (const std::exception& e) {
    throw store::StoreError(path + ": " + e.what());
  }
}

Spool::~Spool() = default;

void Spool::add(std::vector<store::InboxRecord>& records, std::vector<bool>* added) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  added->assign(records.size(), false);
  SQLite::Transaction t(impl_->db);
  auto& q = impl_->insert;
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    q.reset();
    q.bind(1, r.tenant);
    q.bind(2, r.connection);
    q.bind(3, r.message_id);
    q.bind(4, r.entity);
    q.bind(5, r.correlation_id);
    q.bind(6, r.payload);
    q.bind(7, r.received_ms);
    (*added)[i] = q.exec() > 0;
  }
  t.commit();
}

std::vector<store::InboxRecord> Spool::take(size_t limit) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto& q = impl_->select;
  q.reset();
  q.bind(1, static_cast<int64_t>(limit));
  std::vector<store::InboxRecord> out;
  while (q.executeStep()) {
    store::InboxRecord r;
    r.seq = q.getColumn(0).getInt64();
    r.tenant = q.getColumn(1).getString();
    r.connection = q.getColumn(2).getString();
    r.message_id = q.getColumn(3).getString();
    r.entity = q.getColumn(4).getString();
    r.correlation_id = q.getColumn(5).getString();
    r.payload = q.getColumn(6).getString();
    r.received_ms = q.getColumn(7).getInt64();
    out.push_back(std::move(r));
  }
  q.reset();
  return out;
}

void Spool::done(int64_t seq) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  // Not synced: a delete lost to a power cut only moves those records again, which the
  // inbox ignores; a synced one would hold up the webhooks' commits for an fsync.
  impl_->db.exec("PRAGMA synchronous=NORMAL");
  impl_->remove.reset();
  impl_->remove.bind(1, seq);
  try {
    impl_->remove.exec();
  } catch (...) {
    impl_->db.exec("PRAGMA synchronous=FULL");
    throw;
  }
  impl_->db.exec("PRAGMA synchronous=FULL");
}

void Spool::checkpoint() {
  // Not under the spool's lock: a passive checkpoint copies committed pages while the
  // ingest connection goes on writing.
  if (!impl_->checkpointer) {
    impl_->checkpointer = std::make_unique<SQLite::Database>(impl_->path, SQLite::OPEN_READWRITE);
    impl_->checkpointer->setBusyTimeout(1000);
  }
  impl_->checkpointer->exec("PRAGMA wal_checkpoint(PASSIVE)");
}

int64_t Spool::size() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->count.reset();
  impl_->count.executeStep();
  int64_t n = impl_->count.getColumn(0).getInt64();
  impl_->count.reset();
  return n;
}

}  // namespace weft::serve
