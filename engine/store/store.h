#pragma once
// Persistence behind one narrow interface, so a second backend (PostgreSQL, for several
// engine nodes) can be added without touching the pipeline. SQLite (sqlite_store.cc) is the
// embedded default. Schema changes are numbered migrations applied at open.
//
// What it holds (DESIGN.md, "the path of one record"): the inbox (durable before
// acknowledged, idempotent on tenant + connection + message id), the per-record-key applied
// version (stale updates are dropped), identity links (destination records and the match
// keys that find them), shadow state (per destination record and field: what was last sent
// and what the destination was last seen holding), the outbox, rejections, dead letters,
// conflicts, sync cursors and the audit trail keyed by correlation id.
//
// Threading: a Store is one connection; callers serialize on it (the pipeline and delivery
// share one through engine/pipeline/engine.h, which holds the lock for a whole batch).
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
  std::string entity;          // the source entity ("customer"); flows take records of their entity
  std::string flow;            // set for pulled records: only this flow takes them; "" = every flow
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

// A destination record as weft knows it: created when a record first resolves to nothing.
struct Entity {
  int64_t id = 0;
  std::string remote_id;       // the destination's id (Omnisend contactID) once known
};

// One field of the shadow state (flattened path -> this), kept as JSON by the store.
//   sent: the value weft last wrote and the destination confirmed (null: never)
//   held: the value the destination was last seen holding (from answers / observation)
//   at:   when `held` took its value (epoch ms), by: the script version (or "destination")
struct ShadowState {
  std::string fields_json = "{}";  // as pipeline/fields.h encode_shadow writes it
  bool exists = false;
};

// A planned outbound operation.
struct Operation {
  int64_t id = 0;
  std::string tenant, flow, connection;   // connection: the destination connection
  std::string record_key;                 // the source record's key
  int64_t entity_id = 0;                  // the destination record (ordering is per entity)
  std::string kind;                       // "contact.upsert", "event.send"
  std::string body;                       // the request body, secrets-free
  std::string fields_json;                // the flattened fields it changes; "": the body's fields
  std::string idempotency_key;
  std::string correlation_id, script_version;
  Version version;
  int64_t inbox_seq = 0;                  // the source record, kept in the inbox (replays map it again)
  int attempts = 0;
  int64_t first_attempt_ms = 0, next_attempt_ms = 0, created_ms = 0;
  std::string last_error;
  // Destination-owned fields this operation writes for the first time (weft has never seen
  // what the destination holds there), as a JSON array of paths; "" none. The delivery
  // worker looks the record up first and leaves out those the destination holds.
  std::string guard;
};

// A record that stopped: rejected by the script, the destination schema or the API, or an
// operation whose attempts or age ran out (kind "dead_letter").
struct Parked {
  int64_t id = 0;
  std::string kind;            // "rejection" | "dead_letter"
  std::string tenant, flow, stage;  // stage: map, check, identify, deliver
  std::string record_key, correlation_id, script_version;
  std::string error, reason, location;
  std::string detail;          // JSON: reject() fields, schema errors, the API's answer
  std::string source;          // the source record (park() reads it from the inbox when empty)
  int64_t inbox_seq = 0;       // where the source record is, when `source` is not given
  Version version;
  int attempts = 0;
  int64_t created_ms = 0, replayed_ms = 0;
  // When the source record arrived (park() reads it from the inbox with the source): a
  // replay keeps it, so an event's eventTime is its own, not the replay's.
  int64_t received_ms = 0;
};

struct Conflict {
  int64_t id = 0;
  std::string tenant, flow, kind;   // "identity" | "field"
  std::string record_key;
  int64_t entity_id = 0;
  std::string field;                // the field path ("" for identity conflicts)
  std::string detail;               // JSON: the values on each side, the claiming records
  std::string correlation_id;
  int64_t created_ms = 0, resolved_ms = 0;
  std::string resolution;
};

struct AuditEvent {
  std::string correlation_id, tenant, flow, record_key, stage, detail;
  int64_t at_ms = 0;
};

// One run of a flow's job (weft serve's scheduler): "pull", "backfill" or "reconcile".
struct JobRun {
  int64_t id = 0;
  std::string tenant, flow, job;
  std::string trigger;             // "schedule", "start" (missed while down), "api", "reload", "resume"
  int64_t scheduled_ms = 0, started_ms = 0, ended_ms = 0;  // ended 0: running (or cut short by a crash)
  std::string status = "running";  // running, ok, failed, stopped
  std::string counts_json = "{}";
  std::string error;
};

// Counts for `weft status`, per tenant + flow.
struct FlowStatus {
  std::string tenant, flow;
  int64_t outbox = 0, outbox_oldest_ms = 0, dead_letters = 0, rejections = 0, conflicts = 0;
  std::string cursor;
};

class Store {
 public:
  virtual ~Store() = default;

  // One batch is one transaction: begin, the writes, commit (durable on return; WAL mode
  // with synchronous=NORMAL, so a batch costs one log write, not one fsync per record).
  virtual void begin() = 0;
  // Commits from now on are synced to disk before they return (true) or only written to the
  // log (false, the default: safe against a crash of weft, not of the machine). Outside a
  // transaction.
  virtual void set_synced_commits(bool on) = 0;
  virtual void commit() = 0;
  virtual void rollback() = 0;

  // Adds a received record; false (and nothing written) if this tenant + connection +
  // message id is already in the inbox. Sets r.seq when added.
  virtual bool inbox_add(InboxRecord& r) = 0;
  // The oldest records not yet marked done, at most `limit` (of one tenant, if given), after
  // `after_seq` (records already taken but not yet done).
  virtual std::vector<InboxRecord> inbox_next(size_t limit, const std::string& tenant = "", int64_t after_seq = 0) = 0;
  virtual void inbox_done(int64_t seq) = 0;
  // The newest inbox record of the tenant with this correlation id (done or not).
  virtual std::optional<InboxRecord> inbox_by_correlation(const std::string& tenant,
                                                          const std::string& correlation_id) = 0;
  // Whether this tenant + connection + message id is in the inbox (done or not).
  virtual bool inbox_has(const std::string& tenant, const std::string& connection, const std::string& message_id) = 0;
  // The same for several records (a committed batch), in fewer statements.
  virtual void inbox_done(const std::vector<int64_t>& seqs) {
    for (int64_t seq : seqs) inbox_done(seq);
  }
  // Records not yet done (of one tenant, if given).
  virtual int64_t inbox_backlog(const std::string& tenant = "") = 0;
  // Drops up to `limit` done inbox records received before `older_than_ms` that no outbox
  // operation refers to; returns how many. Done records are kept a while so late duplicates
  // of a message are still recognized.
  virtual int64_t prune(int64_t older_than_ms, size_t limit) = 0;

  // Records `v` as applied for the key and returns true if it is newer than the version
  // applied before; returns false (and changes nothing) for an equal or older version.
  // With allow_equal (replays), an equal version is applied again.
  // `inbox_seq`: the inbox record of that version (0 if none), for applied_record.
  virtual bool apply_version(const std::string& tenant, const std::string& flow, const std::string& key,
                             const Version& v, bool allow_equal = false, int64_t inbox_seq = 0) = 0;
  // The inbox record whose version is applied for the key: its newest version taken (none
  // if that was not recorded, before schema 7, or the inbox row was pruned).
  virtual std::optional<InboxRecord> applied_record(const std::string& tenant, const std::string& flow,
                                                    const std::string& key) = 0;
  virtual std::optional<Version> applied_version(const std::string& tenant, const std::string& flow,
                                                 const std::string& key) = 0;

  virtual std::optional<std::string> cursor(const std::string& tenant, const std::string& flow) = 0;
  virtual void set_cursor(const std::string& tenant, const std::string& flow, const std::string& value) = 0;

  // Identity: match keys ("email", "phone", "externalId:<source connection>") per
  // destination connection point at one entity.
  virtual std::optional<int64_t> find_identity(const std::string& tenant, const std::string& connection,
                                               const std::string& kind, const std::string& value) = 0;
  // Links the key to the entity (replacing nothing: a key already linked elsewhere stays).
  virtual void link_identity(const std::string& tenant, const std::string& connection, const std::string& kind,
                             const std::string& value, int64_t entity_id) = 0;
  // Every key linked to an entity, as (kind, value), by kind and then oldest first (an
  // entity keeps the old email it was found by when the source changes it).
  virtual std::vector<std::pair<std::string, std::string>> identity_keys(int64_t entity_id) = 0;
  virtual int64_t create_entity(const std::string& tenant, const std::string& connection) = 0;
  virtual Entity entity(int64_t id) = 0;
  virtual void set_remote_id(int64_t entity_id, const std::string& remote_id) = 0;

  virtual ShadowState shadow(int64_t entity_id) = 0;
  virtual void set_shadow(int64_t entity_id, const std::string& fields_json) = 0;

  // Outbox. plan() supersedes the entity's newest operation when it came from the same flow
  // and record and is not in flight (its changes were computed against the same shadow, so
  // the newer one carries them), keeping its attempts and next attempt time so a Retry-After
  // still holds; returns the replaced id or 0. Operations without an entity (events) are
  // never replaced, and are not ordered among themselves.
  virtual int64_t plan(Operation& op, const std::vector<int64_t>& in_flight) = 0;
  // Operations due at now_ms for a destination connection: per entity only the oldest
  // (ordering), leaving out the operations in `skip_ops` and every operation of the
  // entities in `skip_entities` (in flight); at most `limit`.
  virtual std::vector<Operation> due(const std::string& tenant, const std::string& connection, int64_t now_ms,
                                     size_t limit, const std::vector<int64_t>& skip_ops,
                                     const std::vector<int64_t>& skip_entities = {}) = 0;
  // The earliest next_attempt_ms of the connection's operations (nullopt: none waiting).
  virtual std::optional<int64_t> next_due(const std::string& tenant, const std::string& connection) = 0;
  // The outbox operations of one destination record, oldest first.
  virtual std::vector<Operation> entity_ops(int64_t entity_id) = 0;
  // Of these outbox operation ids, the ones still there.
  virtual std::vector<int64_t> existing_ops(const std::vector<int64_t>& ids) = 0;
  virtual void delivered(int64_t op_id) = 0;
  virtual void reschedule(int64_t op_id, int attempts, int64_t first_attempt_ms, int64_t next_attempt_ms,
                          const std::string& last_error) = 0;
  virtual int64_t outbox_size(const std::string& tenant, const std::string& flow) = 0;
  virtual int64_t outbox_total() = 0;

  // Rejections and dead letters; `op_id` (dead letters, API rejections) is removed from the outbox.
  virtual int64_t park(Parked& p, int64_t op_id = 0) = 0;
  // In id order, those after `after_id` (paging: a replay of thousands reads them a page at a
  // time, not all with their source records at once).
  virtual std::vector<Parked> parked(const std::string& tenant, const std::string& flow, const std::string& kind,
                                     bool include_replayed, size_t limit, int64_t after_id = 0) = 0;
  virtual std::optional<Parked> parked_by_id(int64_t id) = 0;
  // False when it was marked already (replayed meanwhile, e.g. by the admin API and weft
  // replay one after the other from one listing): it must not be replayed twice.
  virtual bool mark_replayed(int64_t id) = 0;

  virtual int64_t add_conflict(Conflict& c) = 0;
  virtual std::vector<Conflict> conflicts(const std::string& tenant, bool include_resolved, size_t limit) = 0;

  // Marks an open conflict resolved; false if there is none with this id (or it is resolved).
  virtual bool resolve_conflict(int64_t id, const std::string& resolution) = 0;

  // Job runs, newest first (flow / job "" = any).
  virtual int64_t job_start(JobRun& r) = 0;
  virtual void job_end(int64_t id, const std::string& status, const std::string& counts_json,
                       const std::string& error) = 0;
  virtual std::vector<JobRun> job_runs(const std::string& tenant, const std::string& flow, const std::string& job,
                                       size_t limit) = 0;

  // Forgets what weft knows the destination holds for an entity (reconciliation found the
  // record gone there): the next merge plans every field again.
  virtual void clear_shadow(int64_t entity_id) = 0;

  virtual void audit(const AuditEvent& e) = 0;
  // Several events, written in their order (a batch's, in fewer statements).
  virtual void audit(const std::vector<AuditEvent>& events) {
    for (const auto& e : events) audit(e);
  }
  virtual std::vector<AuditEvent> trace(const std::string& correlation_id) = 0;

  virtual std::vector<FlowStatus> status() = 0;

  // Copies committed log pages back into the database without blocking writers (SQLite:
  // a PASSIVE checkpoint). `weft sync` runs it from a thread of its own so the writer does
  // not pay for it inside its transactions.
  virtual void checkpoint() = 0;

  virtual int schema_version() = 0;
};

// Opens (creating if needed) the SQLite store at `path` and applies pending migrations.
// Throws StoreError naming the path and the problem, e.g. a database written by a newer weft.
// `cache_kib` bounds the connection's page cache (0: SQLite's default, 2 MiB). The one
// connection that writes the pipeline's batches gets kWriterCacheKiB: the identity, version
// and inbox indexes are looked up and updated at random places, and with 2 MiB most of
// those lookups read their page again from the file (measured: `weft sync` of 100,000
// customers read 7.7 GB through 1.9 M reads; with 32 MiB, 1.8 GB). The cache is a fixed
// bound, so memory still does not grow with the backlog.
constexpr int kWriterCacheKiB = 32 * 1024;
std::unique_ptr<Store> open_sqlite(const std::string& path, int cache_kib = 0);
// A weft database that exists, as it is: never created, migrated or pruned, for commands that
// only read (status, replay --list; dry-run, whose plans are rolled back), so a newer weft's
// status run against a live database does not upgrade it under the weft serving it. Throws
// StoreError when the database is missing or has another schema version than this weft's.
std::unique_ptr<Store> open_sqlite_as_is(const std::string& path);

}  // namespace weft::store
