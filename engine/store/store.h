#pragma once
// Persistence behind one narrow interface, so a second backend (PostgreSQL, for several
// engine nodes) can be added without touching the pipeline. SQLite (sqlite_store.cc) is the
// embedded default. Schema changes are numbered migrations applied at open.
//
// Started with what the pipeline's first steps need (issue 3): the inbox (durable before
// acknowledged, idempotent on tenant + connection + message id), the per-record-key
// applied version (stale updates are dropped) and sync cursors. Identity links, shadow
// state, outbox, rejections, dead letters, conflicts and the audit trail come as further
// migrations with the pipeline stages that use them.
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace weft::store {

// A failure of the store itself (cannot open, corrupt, newer schema, disk full): the caller
// must not acknowledge anything it was writing.
class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct InboxRecord {
  int64_t seq = 0;             // assigned by the store: arrival order
  std::string tenant, connection, message_id;
  std::string correlation_id;
  std::string payload;         // the source record as JSON text
  int64_t received_ms = 0;     // epoch milliseconds
};

// The version a source gives a record (commercetools `version` or `sequenceNumber`, or a
// modified timestamp): compared by `number`, then by `text` (ISO 8601 UTC sorts as text).
struct Version {
  int64_t number = 0;
  std::string text;
  bool newer_than(const Version& o) const { return number != o.number ? number > o.number : text > o.text; }
};

class Store {
 public:
  virtual ~Store() = default;

  // One batch is one transaction: begin, the writes, commit (durable on return; WAL mode
  // with synchronous=NORMAL, so a batch costs one log write, not one fsync per record).
  virtual void begin() = 0;
  virtual void commit() = 0;
  virtual void rollback() = 0;

  // Adds a received record; false (and nothing written) if this tenant + connection +
  // message id is already in the inbox. Sets r.seq when added.
  virtual bool inbox_add(InboxRecord& r) = 0;
  // The oldest records not yet marked done, at most `limit`.
  virtual std::vector<InboxRecord> inbox_next(size_t limit) = 0;
  virtual void inbox_done(int64_t seq) = 0;
  virtual int64_t inbox_backlog() = 0;

  // Records `v` as applied for the key and returns true if it is newer than the version
  // applied before; returns false (and changes nothing) for an equal or older version.
  virtual bool apply_version(const std::string& tenant, const std::string& flow, const std::string& key,
                             const Version& v) = 0;
  virtual std::optional<Version> applied_version(const std::string& tenant, const std::string& flow,
                                                 const std::string& key) = 0;

  virtual std::optional<std::string> cursor(const std::string& tenant, const std::string& flow) = 0;
  virtual void set_cursor(const std::string& tenant, const std::string& flow, const std::string& value) = 0;

  virtual int schema_version() = 0;
};

// Opens (creating if needed) the SQLite store at `path` and applies pending migrations.
// Throws StoreError naming the path and the problem, e.g. a database written by a newer weft.
std::unique_ptr<Store> open_sqlite(const std::string& path);

}  // namespace weft::store
