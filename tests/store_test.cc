// The SQLite store: migrations, inbox idempotency, ordering by applied version, cursors.
#include <catch2/catch.hpp>
#include <SQLiteCpp/SQLiteCpp.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "engine/store/store.h"
#include "engine/util/ids.h"
#include "tests/test_util.h"

using namespace weft::store;
using weft::testing::TempDir;

namespace {
InboxRecord rec(const std::string& message_id, const std::string& payload = "{}") {
  InboxRecord r;
  r.tenant = "acme";
  r.connection = "ct";
  r.message_id = message_id;
  r.correlation_id = "cid-" + message_id;
  r.payload = payload;
  return r;
}
}  // namespace

TEST_CASE("store: a new database is migrated, in WAL mode, and reopens as it was", "[store]") {
  TempDir dir;
  std::string path = (dir.path() / "weft.db").string();
  {
    auto s = open_sqlite(path);
    CHECK(s->schema_version() >= 1);
    InboxRecord r = rec("m1", R"({"id":"c1"})");
    CHECK(s->inbox_add(r));
    s->set_cursor("acme", "customers", "2024-01-01T00:00:00.000Z|c1");
  }
  SQLite::Database raw(path);
  CHECK(raw.execAndGet("PRAGMA journal_mode").getString() == "wal");
  auto s = open_sqlite(path);
  REQUIRE(s->inbox_next(10).size() == 1);
  CHECK(s->inbox_next(10)[0].payload == R"({"id":"c1"})");
  CHECK(s->cursor("acme", "customers") == std::optional<std::string>("2024-01-01T00:00:00.000Z|c1"));
}

TEST_CASE("store: a database from a newer weft is refused with a clear error", "[store]") {
  TempDir dir;
  std::string path = (dir.path() / "weft.db").string();
  open_sqlite(path).reset();
  {
    SQLite::Database raw(path, SQLite::OPEN_READWRITE);
    raw.exec("PRAGMA user_version = 999");
  }
  try {
    open_sqlite(path);
    FAIL("opened a newer database");
  } catch (const StoreError& e) {
    CHECK_THAT(e.what(), Catch::Contains("schema version 999"));
    CHECK_THAT(e.what(), Catch::Contains(path));
  }
  CHECK_THROWS_AS(open_sqlite((dir.path() / "no/such/dir/weft.db").string()), StoreError);
}

TEST_CASE("store: commands that only read open a database as it is", "[store]") {
  TempDir dir;
  std::string path = (dir.path() / "weft.db").string();
  CHECK_THROWS_WITH(open_sqlite_as_is(path), Catch::Contains(path));  // never created
  CHECK_FALSE(std::filesystem::exists(path));
  {
    auto s = open_sqlite(path);
    InboxRecord r = rec("m1");
    CHECK(s->inbox_add(r));
  }
  CHECK(open_sqlite_as_is(path)->inbox_next(10).size() == 1);
  // Another database (not weft's, or an older weft's) is refused and left as it was, not
  // migrated under whoever uses it.
  std::string other = (dir.path() / "other.db").string();
  {
    SQLite::Database raw(other, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    raw.exec("CREATE TABLE t (x)");
  }
  CHECK_THROWS_WITH(open_sqlite_as_is(other), Catch::Contains("not a weft database"));
  {
    SQLite::Database raw(other, SQLite::OPEN_READWRITE);
    CHECK(raw.execAndGet("SELECT count(*) FROM sqlite_master").getInt() == 1);
    raw.exec("PRAGMA user_version = 1");
  }
  CHECK_THROWS_WITH(open_sqlite_as_is(other), Catch::Contains("older than this weft's"));
  SQLite::Database raw(other, SQLite::OPEN_READONLY);
  CHECK(raw.execAndGet("PRAGMA user_version").getInt() == 1);
  CHECK(raw.execAndGet("SELECT count(*) FROM sqlite_master").getInt() == 1);
}

TEST_CASE("store: the inbox is idempotent on tenant, connection and message id", "[store]") {
  TempDir dir;
  auto s = open_sqlite((dir.path() / "weft.db").string());
  InboxRecord a = rec("m1"), again = rec("m1"), other_conn = rec("m1"), b = rec("m2");
  other_conn.connection = "ct2";
  CHECK(s->inbox_add(a));
  CHECK(a.seq > 0);
  CHECK_FALSE(s->inbox_add(again));
  CHECK(again.seq == 0);
  CHECK(s->inbox_add(other_conn));
  CHECK(s->inbox_add(b));
  CHECK(s->inbox_backlog() == 3);
  auto next = s->inbox_next(2);
  REQUIRE(next.size() == 2);
  CHECK(next[0].seq < next[1].seq);  // arrival order
  CHECK(next[0].correlation_id == "cid-m1");
  s->inbox_done(next[0].seq);
  CHECK(s->inbox_backlog() == 2);
  CHECK(s->inbox_next(10).front().seq == next[1].seq);
  // Done records still count as seen: a replay of m1 is not taken again.
  InboxRecord replay = rec("m1");
  CHECK_FALSE(s->inbox_add(replay));
}

TEST_CASE("store: a rolled back batch leaves nothing behind", "[store]") {
  TempDir dir;
  auto s = open_sqlite((dir.path() / "weft.db").string());
  s->begin();
  InboxRecord a = rec("m1");
  CHECK(s->inbox_add(a));
  CHECK(s->apply_version("acme", "customers", "c1", {3, ""}));
  s->rollback();
  CHECK(s->inbox_backlog() == 0);
  CHECK_FALSE(s->applied_version("acme", "customers", "c1"));
  s->begin();
  CHECK(s->inbox_add(a));
  s->commit();
  CHECK(s->inbox_backlog() == 1);
}

TEST_CASE("store: an update older than or equal to the applied one is refused", "[store]") {
  TempDir dir;
  auto s = open_sqlite((dir.path() / "weft.db").string());
  CHECK(s->apply_version("acme", "customers", "c1", {5, "2024-01-01T00:00:05.000Z"}));
  CHECK_FALSE(s->apply_version("acme", "customers", "c1", {5, "2024-01-01T00:00:05.000Z"}));  // replay
  CHECK_FALSE(s->apply_version("acme", "customers", "c1", {4, "2024-01-01T00:00:09.000Z"}));  // older version
  CHECK(s->applied_version("acme", "customers", "c1")->number == 5);
  CHECK(s->apply_version("acme", "customers", "c1", {5, "2024-01-01T00:00:06.000Z"}));  // same number, later time
  CHECK(s->apply_version("acme", "customers", "c1", {6, ""}));
  CHECK(s->applied_version("acme", "customers", "c1")->number == 6);
  // Keys are per tenant and flow.
  CHECK(s->apply_version("acme", "orders", "c1", {1, ""}));
  CHECK(s->apply_version("other", "customers", "c1", {1, ""}));
  // The inbox record of the applied version is kept with it; an older one does not move it.
  InboxRecord v7 = rec("m7"), v3 = rec("m3");
  REQUIRE(s->inbox_add(v7));
  REQUIRE(s->inbox_add(v3));
  CHECK_FALSE(s->applied_record("acme", "customers", "c1"));  // applied without a record
  CHECK(s->apply_version("acme", "customers", "c1", {7, ""}, false, v7.seq));
  CHECK_FALSE(s->apply_version("acme", "customers", "c1", {3, ""}, false, v3.seq));
  auto applied = s->applied_record("acme", "customers", "c1");
  REQUIRE(applied);
  CHECK(applied->message_id == "m7");
  CHECK(applied->seq == v7.seq);
  CHECK(Version{2, "a"}.newer_than(Version{1, "z"}));
  CHECK(Version{1, "b"}.newer_than(Version{1, "a"}));
  CHECK_FALSE(Version{1, "a"}.newer_than(Version{1, "a"}));
}

// ---------------------------------------------------------------------------------------
// The path of one record: outbox, parked records, identity, conflicts, audit, status.

namespace {
Operation op_for(int64_t entity_id, int64_t next_attempt_ms, const std::string& body = "{}",
                 const std::string& connection = "omni") {
  Operation op;
  op.tenant = "acme";
  op.flow = "customers";
  op.connection = connection;
  op.record_key = "c" + std::to_string(entity_id);
  op.entity_id = entity_id;
  op.kind = "contact.upsert";
  op.body = body;
  op.fields_json = "{}";
  op.idempotency_key = "acme/customers/" + op.record_key + "/" + body;
  op.correlation_id = "cid-" + body;
  op.script_version = "v1";
  op.version = {1, ""};
  op.inbox_seq = 42;
  op.next_attempt_ms = next_attempt_ms;
  return op;
}

std::vector<int64_t> ids(const std::vector<Operation>& ops) {
  std::vector<int64_t> out;
  for (const auto& o : ops) out.push_back(o.id);
  return out;
}

Parked parked_rec(const std::string& kind, const std::string& tenant, const std::string& flow,
                  const std::string& key) {
  Parked p;
  p.kind = kind;
  p.tenant = tenant;
  p.flow = flow;
  p.stage = kind == "dead_letter" ? "deliver" : "map";
  p.record_key = key;
  p.correlation_id = "cid-" + key;
  p.script_version = "v7";
  p.error = kind == "dead_letter" ? "http_500" : "rejected";
  p.reason = "reason for " + key;
  p.location = "acme/customers.lua:12";
  p.detail = R"({"id":")" + key + R"("})";
  p.source = R"({"id":")" + key + R"(","version":3})";
  p.version = {3, "2024-01-01T00:00:00.000Z"};
  p.attempts = kind == "dead_letter" ? 8 : 0;
  return p;
}

Conflict conflict_rec(const std::string& tenant, const std::string& key, int64_t entity_id) {
  Conflict c;
  c.tenant = tenant;
  c.flow = "customers";
  c.kind = "field";
  c.record_key = key;
  c.entity_id = entity_id;
  c.field = "identifiers[email].channels.email";
  c.detail = R"({"source":"a","destination":"b","last_synced":null})";
  c.correlation_id = "cid-" + key;
  return c;
}
}  // namespace

TEST_CASE("store: plan supersedes the entity's waiting operation, keeping its retry state", "[store]") {
  TempDir dir;
  auto s = open_sqlite((dir.path() / "weft.db").string());
  int64_t e = s->create_entity("acme", "omni");
  int64_t other = s->create_entity("acme", "omni");
  CHECK(other != e);

  Operation first = op_for(e, 1000, "b1");
  CHECK(s->plan(first, {}) == 0);  // nothing to supersede
  CHECK(first.id > 0);
  Operation unrelated = op_for(other, 1000, "x1");
  CHECK(s->plan(unrelated, {}) == 0);
  // The first attempt failed with a Retry-After: next attempt at 5000.
  s->reschedule(first.id, 3, 500, 5000, "429 Too Many Requests");

  SECTION("the new operation takes the old one's attempts, first attempt and later next attempt") {
    Operation second = op_for(e, 2000, "b2");
    CHECK(s->plan(second, {}) == first.id);
    CHECK(second.id != first.id);
    CHECK(second.attempts == 3);
    CHECK(second.first_attempt_ms == 500);
    CHECK(second.next_attempt_ms == 5000);  // the Retry-After still holds
    CHECK(second.last_error == "429 Too Many Requests");
    CHECK(s->outbox_total() == 2);
    CHECK(s->outbox_size("acme", "customers") == 2);

    CHECK(ids(s->due("acme", "omni", 4999, 10, {})) == std::vector<int64_t>{unrelated.id});
    auto due = s->due("acme", "omni", 5000, 10, {unrelated.id});
    REQUIRE(due.size() == 1);
    CHECK(due[0].id == second.id);
    CHECK(due[0].body == "b2");
    CHECK(due[0].attempts == 3);
    CHECK(due[0].first_attempt_ms == 500);
    CHECK(due[0].next_attempt_ms == 5000);
    CHECK(due[0].last_error == "429 Too Many Requests");
    CHECK(due[0].idempotency_key == "acme/customers/c" + std::to_string(e) + "/b2");

    // When the new operation's own time is the later one, it keeps it.
    Operation third = op_for(e, 9000, "b3");
    CHECK(s->plan(third, {}) == second.id);
    CHECK(third.next_attempt_ms == 9000);
    CHECK(third.attempts == 3);
    CHECK(s->outbox_total() == 2);
    CHECK(s->next_due("acme", "omni") == std::optional<int64_t>(1000));  // the unrelated one
  }

  SECTION("an operation in flight is not superseded; the one planned after it is") {
    Operation second = op_for(e, 2000, "b2");
    CHECK(s->plan(second, {unrelated.id, first.id}) == 0);
    CHECK(second.attempts == 0);
    CHECK(second.first_attempt_ms == 0);
    CHECK(second.next_attempt_ms == 2000);
    CHECK(second.last_error.empty());
    CHECK(s->outbox_total() == 3);

    // A third change while the first is still in flight replaces the second, not the first.
    Operation third = op_for(e, 3000, "b3");
    CHECK(s->plan(third, {first.id}) == second.id);
    CHECK(third.attempts == 0);
    CHECK(third.next_attempt_ms == 3000);
    CHECK(s->outbox_total() == 3);

    // Delivery stays in order: first, then third.
    auto due = s->due("acme", "omni", 10000, 10, {unrelated.id});
    CHECK(ids(due) == std::vector<int64_t>{first.id});
    s->delivered(first.id);
    due = s->due("acme", "omni", 10000, 10, {unrelated.id});
    REQUIRE(ids(due) == std::vector<int64_t>{third.id});
    CHECK(due[0].body == "b3");
  }

  SECTION("another entity's operation is never superseded") {
    Operation again = op_for(other, 1500, "x2");
    CHECK(s->plan(again, {}) == unrelated.id);
    auto due = s->due("acme", "omni", 10000, 10, {});
    CHECK(ids(due) == std::vector<int64_t>{again.id, first.id});  // by next attempt time
  }
}

TEST_CASE("store: operations without an entity (append-only events) are not superseded",
          "[store]") {
  // engine/pipeline/pipeline.cc plans append-only operations (Omnisend "event.send",
  // Model::merge false: "the whole payload, once per message") without identifying a
  // destination record, so their entity_id stays 0. Each event must be delivered.
  TempDir dir;
  auto s = open_sqlite((dir.path() / "weft.db").string());
  Operation ev1 = op_for(0, 100, R"({"event":"placed order","n":1})");
  ev1.kind = "event.send";
  Operation ev2 = op_for(0, 100, R"({"event":"placed order","n":2})");
  ev2.kind = "event.send";
  CHECK(s->plan(ev1, {}) == 0);
  CHECK(s->plan(ev2, {}) == 0);
  CHECK(s->outbox_total() == 2);
  // Nor by another tenant's event on another connection.
  Operation ev3 = op_for(0, 100, R"({"event":"viewed product"})", "omni2");
  ev3.tenant = "other";
  ev3.kind = "event.send";
  CHECK(s->plan(ev3, {}) == 0);
  CHECK(s->outbox_total() == 3);
  // Events are not ordered among themselves: one in flight holds back no other.
  CHECK(ids(s->due("acme", "omni", 1000, 10, {})) == std::vector<int64_t>{ev1.id, ev2.id});
  CHECK(ids(s->due("acme", "omni", 1000, 10, {ev1.id})) == std::vector<int64_t>{ev2.id});
  CHECK(ids(s->due("acme", "omni", 1000, 10, {ev1.id, ev2.id})).empty());
}

TEST_CASE("store: due gives the oldest operation per entity, leaves out operations in flight and future ones",
          "[store]") {
  TempDir dir;
  auto s = open_sqlite((dir.path() / "weft.db").string());
  int64_t e1 = s->create_entity("acme", "omni");
  int64_t e2 = s->create_entity("acme", "omni");
  int64_t e3 = s->create_entity("acme", "omni");
  int64_t e4 = s->create_entity("acme", "omni2");

  Operation a1 = op_for(e1, 100, "a1");
  s->plan(a1, {});
  Operation a2 = op_for(e1, 50, "a2");  // newer, due earlier, but behind a1
  CHECK(s->plan(a2, {a1.id}) == 0);
  Operation b1 = op_for(e2, 200, "b1");
  s->plan(b1, {});
  Operation c1 = op_for(e3, 10'000, "c1");  // not yet due
  s->plan(c1, {});
  Operation d1 = op_for(e4, 10, "d1", "omni2");  // another connection
  s->plan(d1, {});
  Operation t1 = op_for(e1 + 100, 10, "t1");
  t1.tenant = "other";
  s->plan(t1, {});

  CHECK(ids(s->due("acme", "omni", 1000, 10, {})) == std::vector<int64_t>{a1.id, b1.id});
  CHECK(ids(s->due("acme", "omni", 99, 10, {})).empty());  // a2 is due but waits for a1
  CHECK(ids(s->due("acme", "omni", 150, 10, {})) == std::vector<int64_t>{a1.id});
  // Operations in flight are left out, and their entities' later ones wait behind them;
  // the limit still fills from the others.
  CHECK(ids(s->due("acme", "omni", 1000, 10, {a1.id})) == std::vector<int64_t>{b1.id});
  CHECK(ids(s->due("acme", "omni", 1000, 1, {})) == std::vector<int64_t>{a1.id});
  CHECK(ids(s->due("acme", "omni", 1000, 1, {a1.id})) == std::vector<int64_t>{b1.id});
  CHECK(ids(s->due("acme", "omni", 1000, 10, {a1.id, b1.id})).empty());
  // An entity in flight holds back every operation of its own, even one that replaced the
  // operation in flight (another process may plan on the same database).
  CHECK(ids(s->due("acme", "omni", 1000, 10, {}, {e1})) == std::vector<int64_t>{b1.id});
  CHECK(ids(s->due("acme", "omni", 1000, 10, {999}, {e1, e2})).empty());
  CHECK(ids(s->due("acme", "omni", 1000, 0, {})).empty());
  CHECK(ids(s->due("acme", "omni", 20'000, 10, {})) == std::vector<int64_t>{a1.id, b1.id, c1.id});
  CHECK(ids(s->due("acme", "omni2", 1000, 10, {})) == std::vector<int64_t>{d1.id});
  CHECK(ids(s->due("other", "omni", 1000, 10, {})) == std::vector<int64_t>{t1.id});
  CHECK(s->next_due("acme", "omni") == std::optional<int64_t>(50));
  CHECK(s->next_due("acme", "omni2") == std::optional<int64_t>(10));
  CHECK_FALSE(s->next_due("acme", "nothing"));

  // a1 answered: a2 is next for e1, and due earlier than b1.
  s->delivered(a1.id);
  CHECK(ids(s->due("acme", "omni", 1000, 10, {})) == std::vector<int64_t>{a2.id, b1.id});
  // b1 fails and is retried later.
  s->reschedule(b1.id, 1, 200, 5000, "503");
  CHECK(ids(s->due("acme", "omni", 1000, 10, {})) == std::vector<int64_t>{a2.id});
  CHECK(ids(s->due("acme", "omni", 4999, 10, {a2.id})).empty());
  auto later = s->due("acme", "omni", 5000, 10, {a2.id});
  REQUIRE(later.size() == 1);
  CHECK(later[0].id == b1.id);
  CHECK(later[0].attempts == 1);
  CHECK(later[0].first_attempt_ms == 200);
  CHECK(later[0].next_attempt_ms == 5000);
  CHECK(later[0].last_error == "503");
  // Every field of the operation comes back.
  CHECK(later[0].tenant == "acme");
  CHECK(later[0].flow == "customers");
  CHECK(later[0].connection == "omni");
  CHECK(later[0].record_key == "c" + std::to_string(e2));
  CHECK(later[0].entity_id == e2);
  CHECK(later[0].kind == "contact.upsert");
  CHECK(later[0].body == "b1");
  CHECK(later[0].fields_json == "{}");
  CHECK(later[0].correlation_id == "cid-b1");
  CHECK(later[0].script_version == "v1");
  CHECK(later[0].version.number == 1);
  CHECK(later[0].inbox_seq == 42);
  CHECK(later[0].created_ms > 0);

  s->delivered(a2.id);
  s->delivered(b1.id);
  s->delivered(c1.id);
  CHECK_FALSE(s->next_due("acme", "omni"));
  CHECK(s->outbox_size("acme", "customers") == 1);  // d1 (omni2)
  CHECK(s->outbox_total() == 2);                     // d1 and t1
}

TEST_CASE("store: due fills its limit past many busy entities", "[store]") {
  TempDir dir;
  auto s = open_sqlite((dir.path() / "weft.db").string());
  std::vector<int64_t> busy, free_ops;
  for (int i = 0; i < 20; ++i) {
    int64_t e = s->create_entity("acme", "omni");
    Operation op = op_for(e, 100 + i, "o" + std::to_string(i));
    s->plan(op, {});
    if (i < 10)
      busy.push_back(e);  // the ten oldest are being sent
    else
      free_ops.push_back(op.id);
  }
  busy.push_back(999'999);  // an entity with nothing waiting
  auto due = s->due("acme", "omni", 1000, 5, busy);
  CHECK(ids(due) == std::vector<int64_t>(free_ops.begin(), free_ops.begin() + 5));
  CHECK(ids(s->due("acme", "omni", 1000, 100, busy)) == free_ops);
}

TEST_CASE("store: a replay applies an equal version again, never an older one", "[store]") {
  TempDir dir;
  auto s = open_sqlite((dir.path() / "weft.db").string());
  CHECK(s->apply_version("acme", "customers", "c1", {5, "2024-01-01T00:00:05.000Z"}, true));  // first: applied
  CHECK_FALSE(s->apply_version("acme", "customers", "c1", {5, "2024-01-01T00:00:05.000Z"}));
  CHECK(s->apply_version("acme", "customers", "c1", {5, "2024-01-01T00:00:05.000Z"}, true));
  CHECK_FALSE(s->apply_version("acme", "customers", "c1", {4, "2024-01-01T00:00:09.000Z"}, true));
  CHECK_FALSE(s->apply_version("acme", "customers", "c1", {5, "2024-01-01T00:00:04.000Z"}, true));
  auto v = s->applied_version("acme", "customers", "c1");
  REQUIRE(v);
  CHECK(v->number == 5);
  CHECK(v->text == "2024-01-01T00:00:05.000Z");
  CHECK(s->apply_version("acme", "customers", "c1", {6, ""}, true));
  CHECK(s->applied_version("acme", "customers", "c1")->number == 6);
  CHECK_FALSE(s->applied_version("acme", "customers", "nope"));
}

TEST_CASE("store: a parked record keeps when its source arrived, a replay's id keeps its key", "[store]") {
  TempDir dir;
  auto s = open_sqlite((dir.path() / "weft.db").string());
  InboxRecord r = rec("evt-1", R"({"id":"o1"})");
  r.received_ms = 1700000000123;
  REQUIRE(s->inbox_add(r));
  Parked p;  // a dead letter: the outbox kept only where its record is
  p.kind = "dead_letter";
  p.tenant = "acme";
  p.flow = "orders";
  p.stage = "deliver";
  p.record_key = "evt-1";
  p.inbox_seq = r.seq;
  s->park(p);
  auto back = s->parked_by_id(p.id);
  REQUIRE(back);
  CHECK(back->source == R"({"id":"o1"})");
  CHECK(back->received_ms == 1700000000123);

  using weft::util::replay_id;
  using weft::util::replayed_key;
  CHECK(replay_id(7, 1700000009999, "evt-1") == "replay:7:1700000009999:evt-1");
  CHECK(replayed_key(replay_id(7, 1700000009999, "evt-1")) == "evt-1");
  CHECK(replayed_key(replay_id(8, 1, "replay:7:2:a:b")) == "replay:7:2:a:b");  // a key with colons, whole
  CHECK(replayed_key("replay:7:1700000009999") == "replay:7:1700000009999");  // from before keys were kept
  CHECK(replayed_key("m-1") == "m-1");
}

TEST_CASE("store: parked records are listed by tenant, flow and kind, and replays are marked", "[store]") {
  TempDir dir;
  auto s = open_sqlite((dir.path() / "weft.db").string());
  int64_t e = s->create_entity("acme", "omni");
  Operation doomed = op_for(e, 100, "doomed");
  s->plan(doomed, {});
  Operation kept = op_for(s->create_entity("acme", "omni"), 100, "kept");
  s->plan(kept, {});

  Parked r1 = parked_rec("rejection", "acme", "customers", "k1");
  Parked d1 = parked_rec("dead_letter", "acme", "customers", "k2");
  Parked r2 = parked_rec("rejection", "acme", "orders", "k3");
  Parked r3 = parked_rec("rejection", "other", "customers", "k4");
  int64_t id1 = s->park(r1);
  CHECK(id1 == r1.id);
  CHECK(id1 > 0);
  s->park(d1, doomed.id);  // a dead letter leaves the outbox
  s->park(r2);
  s->park(r3);
  CHECK(s->outbox_total() == 1);
  CHECK(ids(s->due("acme", "omni", 1000, 10, {})) == std::vector<int64_t>{kept.id});

  auto key_list = [](const std::vector<Parked>& ps) {
    std::vector<std::string> out;
    for (const auto& p : ps) out.push_back(p.record_key);
    return out;
  };
  using V = std::vector<std::string>;
  CHECK(key_list(s->parked("", "", "", false, 100)) == V{"k1", "k2", "k3", "k4"});
  CHECK(key_list(s->parked("acme", "", "", false, 100)) == V{"k1", "k2", "k3"});
  CHECK(key_list(s->parked("acme", "customers", "", false, 100)) == V{"k1", "k2"});
  CHECK(key_list(s->parked("acme", "", "rejection", false, 100)) == V{"k1", "k3"});
  CHECK(key_list(s->parked("", "", "dead_letter", false, 100)) == V{"k2"});
  CHECK(key_list(s->parked("", "customers", "rejection", false, 100)) == V{"k1", "k4"});
  CHECK(key_list(s->parked("", "", "", false, 2)) == V{"k1", "k2"});
  CHECK(key_list(s->parked("", "", "", false, 2, id1)) == V{"k2", "k3"});  // the next page
  CHECK(s->parked("nobody", "", "", true, 100).empty());

  CHECK(s->mark_replayed(id1));
  CHECK_FALSE(s->mark_replayed(id1));  // once: a second replay from an older listing does nothing
  CHECK(key_list(s->parked("acme", "customers", "", false, 100)) == V{"k2"});
  auto all = s->parked("acme", "customers", "", true, 100);
  CHECK(key_list(all) == V{"k1", "k2"});
  CHECK(all[0].replayed_ms > 0);
  CHECK(all[1].replayed_ms == 0);

  auto got = s->parked_by_id(d1.id);
  REQUIRE(got);
  CHECK(got->id == d1.id);
  CHECK(got->kind == "dead_letter");
  CHECK(got->tenant == "acme");
  CHECK(got->flow == "customers");
  CHECK(got->stage == "deliver");
  CHECK(got->record_key == "k2");
  CHECK(got->correlation_id == "cid-k2");
  CHECK(got->script_version == "v7");
  CHECK(got->error == "http_500");
  CHECK(got->reason == "reason for k2");
  CHECK(got->location == "acme/customers.lua:12");
  CHECK(got->detail == R"({"id":"k2"})");
  CHECK(got->source == R"({"id":"k2","version":3})");
  CHECK(got->version.number == 3);
  CHECK(got->version.text == "2024-01-01T00:00:00.000Z");
  CHECK(got->attempts == 8);
  CHECK(got->created_ms > 0);
  CHECK(got->replayed_ms == 0);
  CHECK(s->parked_by_id(id1)->replayed_ms > 0);  // still found after a replay
  CHECK_FALSE(s->parked_by_id(987654));

  // A given created_ms is kept.
  Parked dated = parked_rec("rejection", "acme", "customers", "k5");
  dated.created_ms = 12345;
  s->park(dated);
  CHECK(s->parked_by_id(dated.id)->created_ms == 12345);
}

TEST_CASE("store: identity keys find their entity, and a linked key is never moved", "[store]") {
  TempDir dir;
  auto s = open_sqlite((dir.path() / "weft.db").string());
  int64_t e1 = s->create_entity("acme", "omni");
  int64_t e2 = s->create_entity("acme", "omni");
  CHECK(e1 > 0);
  CHECK(e2 != e1);
  CHECK_FALSE(s->find_identity("acme", "omni", "email", "a@x.se"));

  s->link_identity("acme", "omni", "email", "a@x.se", e1);
  s->link_identity("acme", "omni", "phone", "+46700000000", e1);
  s->link_identity("acme", "omni", "externalId:ct", "cust-1", e1);
  CHECK(s->find_identity("acme", "omni", "email", "a@x.se") == std::optional<int64_t>(e1));
  CHECK(s->find_identity("acme", "omni", "phone", "+46700000000") == std::optional<int64_t>(e1));
  // Per tenant, connection and kind; exact values.
  CHECK_FALSE(s->find_identity("other", "omni", "email", "a@x.se"));
  CHECK_FALSE(s->find_identity("acme", "omni2", "email", "a@x.se"));
  CHECK_FALSE(s->find_identity("acme", "omni", "phone", "a@x.se"));
  CHECK_FALSE(s->find_identity("acme", "omni", "email", "A@x.se"));

  // The key stays with the record it was linked to first.
  s->link_identity("acme", "omni", "email", "a@x.se", e2);
  CHECK(s->find_identity("acme", "omni", "email", "a@x.se") == std::optional<int64_t>(e1));
  CHECK(s->identity_keys(e2).empty());
  s->link_identity("acme", "omni", "email", "b@x.se", e2);
  CHECK(s->find_identity("acme", "omni", "email", "b@x.se") == std::optional<int64_t>(e2));

  using Keys = std::vector<std::pair<std::string, std::string>>;
  CHECK(s->identity_keys(e1) ==
        Keys{{"email", "a@x.se"}, {"externalId:ct", "cust-1"}, {"phone", "+46700000000"}});
  CHECK(s->identity_keys(e2) == Keys{{"email", "b@x.se"}});
  CHECK(s->identity_keys(424242).empty());

  // Entities and their destination ids.
  CHECK(s->entity(e1).id == e1);
  CHECK(s->entity(e1).remote_id.empty());
  s->set_remote_id(e1, "omni-123");
  CHECK(s->entity(e1).remote_id == "omni-123");
  CHECK(s->entity(e2).remote_id.empty());
  CHECK(s->entity(424242).id == 0);

  // Shadow state.
  CHECK_FALSE(s->shadow(e1).exists);
  CHECK(s->shadow(e1).fields_json == "{}");
  s->set_shadow(e1, R"({"firstName":{"sent":"A","held":"A","at":1,"by":"v1"}})");
  s->set_shadow(e1, R"({"firstName":{"sent":"B","held":"B","at":2,"by":"v1"}})");
  CHECK(s->shadow(e1).exists);
  CHECK(s->shadow(e1).fields_json == R"({"firstName":{"sent":"B","held":"B","at":2,"by":"v1"}})");
  CHECK_FALSE(s->shadow(e2).exists);
}

TEST_CASE("store: identity_keys gives every key of an entity, by kind and then oldest first", "[store]") {
  // An entity keeps the old email it was found by when the source changes it.
  TempDir dir;
  auto s = open_sqlite((dir.path() / "weft.db").string());
  int64_t e = s->create_entity("acme", "omni");
  s->link_identity("acme", "omni", "email", "old@x.se", e);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // linked_ms has millisecond resolution
  s->link_identity("acme", "omni", "email", "new@x.se", e);
  using Keys = std::vector<std::pair<std::string, std::string>>;
  s->link_identity("acme", "omni", "externalId:ct", "c1", e);
  CHECK(s->identity_keys(e) == Keys{{"email", "old@x.se"}, {"email", "new@x.se"}, {"externalId:ct", "c1"}});
}

TEST_CASE("store: conflicts are listed per tenant, resolved ones only when asked", "[store]") {
  TempDir dir;
  std::string path = (dir.path() / "weft.db").string();
  auto s = open_sqlite(path);
  Conflict c1 = conflict_rec("acme", "k1", 11);
  Conflict c2 = conflict_rec("acme", "k2", 12);
  Conflict c3 = conflict_rec("other", "k3", 13);
  c2.kind = "identity";
  c2.field = "";
  CHECK(s->add_conflict(c1) == c1.id);
  CHECK(c1.id > 0);
  s->add_conflict(c2);
  c3.created_ms = 777;
  s->add_conflict(c3);
  {
    // Resolving is not part of the Store interface yet: done as an operator would.
    SQLite::Database raw(path, SQLite::OPEN_READWRITE);
    raw.exec("UPDATE conflicts SET resolved_ms = 5000, resolution = 'kept destination' WHERE id = " +
             std::to_string(c1.id));
  }
  auto keys = [](const std::vector<Conflict>& cs) {
    std::vector<std::string> out;
    for (const auto& c : cs) out.push_back(c.record_key);
    return out;
  };
  using V = std::vector<std::string>;
  CHECK(keys(s->conflicts("acme", false, 100)) == V{"k2"});
  CHECK(keys(s->conflicts("acme", true, 100)) == V{"k1", "k2"});
  CHECK(keys(s->conflicts("", false, 100)) == V{"k2", "k3"});
  CHECK(keys(s->conflicts("", true, 100)) == V{"k1", "k2", "k3"});
  CHECK(keys(s->conflicts("", true, 2)) == V{"k1", "k2"});
  CHECK(s->conflicts("nobody", true, 100).empty());

  auto all = s->conflicts("", true, 100);
  REQUIRE(all.size() == 3);
  CHECK(all[0].id == c1.id);
  CHECK(all[0].tenant == "acme");
  CHECK(all[0].flow == "customers");
  CHECK(all[0].kind == "field");
  CHECK(all[0].entity_id == 11);
  CHECK(all[0].field == "identifiers[email].channels.email");
  CHECK(all[0].detail == R"({"source":"a","destination":"b","last_synced":null})");
  CHECK(all[0].correlation_id == "cid-k1");
  CHECK(all[0].created_ms > 0);
  CHECK(all[0].resolved_ms == 5000);
  CHECK(all[0].resolution == "kept destination");
  CHECK(all[1].kind == "identity");
  CHECK(all[1].field.empty());
  CHECK(all[1].resolved_ms == 0);
  CHECK(all[1].resolution.empty());
  CHECK(all[2].created_ms == 777);
}

TEST_CASE("store: the audit trail of a correlation id is in the order it was written", "[store]") {
  TempDir dir;
  auto s = open_sqlite((dir.path() / "weft.db").string());
  auto ev = [](const std::string& cid, const std::string& stage, int64_t at) {
    AuditEvent e;
    e.correlation_id = cid;
    e.tenant = "acme";
    e.flow = "customers";
    e.record_key = "k-" + cid;
    e.stage = stage;
    e.detail = R"({"stage":")" + stage + R"("})";
    e.at_ms = at;
    return e;
  };
  s->audit(ev("c1", "received", 1000));
  s->audit(ev("c2", "received", 1001));
  s->audit(ev("c1", "mapped", 1002));
  s->audit(ev("c1", "planned", 1002));  // same millisecond: still in write order
  s->audit(ev("c2", "rejected", 1003));
  s->audit(ev("c1", "delivered", 0));   // no time given: now

  auto t = s->trace("c1");
  REQUIRE(t.size() == 4);
  CHECK(t[0].stage == "received");
  CHECK(t[1].stage == "mapped");
  CHECK(t[2].stage == "planned");
  CHECK(t[3].stage == "delivered");
  CHECK(t[0].at_ms == 1000);
  CHECK(t[2].at_ms == 1002);
  CHECK(t[3].at_ms > 1'600'000'000'000);
  CHECK(t[1].correlation_id == "c1");
  CHECK(t[1].tenant == "acme");
  CHECK(t[1].flow == "customers");
  CHECK(t[1].record_key == "k-c1");
  CHECK(t[1].detail == R"({"stage":"mapped"})");
  auto t2 = s->trace("c2");
  REQUIRE(t2.size() == 2);
  CHECK(t2[1].stage == "rejected");
  CHECK(s->trace("nope").empty());
}

TEST_CASE("store: status counts per tenant and flow, with the cursor", "[store]") {
  TempDir dir;
  std::string path = (dir.path() / "weft.db").string();
  auto s = open_sqlite(path);
  CHECK(s->status().empty());

  s->set_cursor("acme", "customers", "2024-01-01T00:00:00.000Z|c9");
  s->set_cursor("acme", "orders", "o-cursor");
  Operation o1 = op_for(s->create_entity("acme", "omni"), 100, "o1");
  o1.created_ms = 2000;
  s->plan(o1, {});
  Operation o2 = op_for(s->create_entity("acme", "omni"), 100, "o2");
  o2.created_ms = 1000;
  s->plan(o2, {});
  Parked dl = parked_rec("dead_letter", "acme", "customers", "k1");
  s->park(dl);
  Parked dl_replayed = parked_rec("dead_letter", "acme", "customers", "k2");
  s->park(dl_replayed);
  s->mark_replayed(dl_replayed.id);
  Parked rej = parked_rec("rejection", "acme", "customers", "k3");
  s->park(rej);
  Parked rej2 = parked_rec("rejection", "acme", "customers", "k4");
  s->park(rej2);
  Parked other_rej = parked_rec("rejection", "other", "customers", "k5");
  s->park(other_rej);
  Conflict open = conflict_rec("acme", "k6", 1);
  s->add_conflict(open);
  Conflict resolved = conflict_rec("acme", "k7", 2);
  s->add_conflict(resolved);
  {
    SQLite::Database raw(path, SQLite::OPEN_READWRITE);
    raw.exec("UPDATE conflicts SET resolved_ms = 5000 WHERE id = " + std::to_string(resolved.id));
  }

  auto st = s->status();
  REQUIRE(st.size() == 3);
  CHECK(st[0].tenant == "acme");
  CHECK(st[0].flow == "customers");
  CHECK(st[0].outbox == 2);
  CHECK(st[0].outbox_oldest_ms == 1000);
  CHECK(st[0].dead_letters == 1);
  CHECK(st[0].rejections == 2);
  CHECK(st[0].conflicts == 1);
  CHECK(st[0].cursor == "2024-01-01T00:00:00.000Z|c9");

  CHECK(st[1].tenant == "acme");
  CHECK(st[1].flow == "orders");
  CHECK(st[1].outbox == 0);
  CHECK(st[1].outbox_oldest_ms == 0);
  CHECK(st[1].dead_letters == 0);
  CHECK(st[1].rejections == 0);
  CHECK(st[1].conflicts == 0);
  CHECK(st[1].cursor == "o-cursor");

  CHECK(st[2].tenant == "other");
  CHECK(st[2].flow == "customers");
  CHECK(st[2].rejections == 1);
  CHECK(st[2].outbox == 0);
  CHECK(st[2].cursor.empty());

  // Delivered and replayed work no longer counts.
  s->delivered(o1.id);
  s->delivered(o2.id);
  s->mark_replayed(dl.id);
  st = s->status();
  REQUIRE(st.size() == 3);
  CHECK(st[0].outbox == 0);
  CHECK(st[0].outbox_oldest_ms == 0);
  CHECK(st[0].dead_letters == 0);
  CHECK(st[0].rejections == 2);
}

TEST_CASE("store: a version-1 database is migrated, keeping its inbox, versions and cursors", "[store]") {
  TempDir dir;
  std::string path = (dir.path() / "weft.db").string();
  int64_t recent = static_cast<int64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  {
    // Migration 1's schema exactly as released, and some rows written by that weft.
    SQLite::Database raw(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    raw.exec(R"sql(
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
    PRAGMA user_version = 1;
    )sql");
    SQLite::Statement ins(raw,
                          "INSERT INTO inbox (tenant, connection, message_id, correlation_id, payload, received_ms, "
                          "done) VALUES (?, ?, ?, ?, ?, ?, ?)");
    auto add = [&](const char* mid, const char* payload, int done) {
      ins.reset();
      ins.bind(1, "acme");
      ins.bind(2, "ct");
      ins.bind(3, mid);
      ins.bind(4, std::string("cid-") + mid);
      ins.bind(5, payload);
      ins.bind(6, recent);
      ins.bind(7, done);
      ins.exec();
    };
    add("m1", R"({"id":"c1"})", 1);
    add("m2", R"({"id":"c2"})", 0);
    add("m3", R"({"id":"c3"})", 0);
    raw.exec("INSERT INTO applied_versions VALUES ('acme', 'customers', 'c1', 4, 'v4', 1)");
    raw.exec("INSERT INTO cursors VALUES ('acme', 'customers', 'cur-1', 1)");
  }

  {
    auto s = open_sqlite(path);
    CHECK(s->schema_version() >= 2);
    // The inbox as it was: pending rows in order, with the new columns empty.
    CHECK(s->inbox_backlog() == 2);
    auto next = s->inbox_next(10);
    REQUIRE(next.size() == 2);
    CHECK(next[0].message_id == "m2");
    CHECK(next[0].payload == R"({"id":"c2"})");
    CHECK(next[0].correlation_id == "cid-m2");
    CHECK(next[0].received_ms == recent);
    CHECK(next[0].entity.empty());
    CHECK(next[0].flow.empty());
    CHECK(next[1].message_id == "m3");
    CHECK(next[0].seq < next[1].seq);
    // Done rows still guard against duplicates.
    InboxRecord dup = rec("m1");
    CHECK_FALSE(s->inbox_add(dup));
    InboxRecord fresh = rec("m4");
    fresh.entity = "customer";
    fresh.flow = "customers";
    CHECK(s->inbox_add(fresh));
    CHECK(fresh.seq > next[1].seq);
    CHECK(s->inbox_next(10).back().flow == "customers");
    CHECK(s->applied_version("acme", "customers", "c1")->text == "v4");
    CHECK(s->cursor("acme", "customers") == std::optional<std::string>("cur-1"));

    // The new tables work.
    int64_t e = s->create_entity("acme", "omni");
    s->link_identity("acme", "omni", "email", "a@x.se", e);
    CHECK(s->find_identity("acme", "omni", "email", "a@x.se") == std::optional<int64_t>(e));
    s->set_shadow(e, "{}");
    CHECK(s->shadow(e).exists);
    Operation op = op_for(e, 1, "b");
    s->plan(op, {});
    CHECK(s->outbox_total() == 1);
    Parked p = parked_rec("rejection", "acme", "customers", "k1");
    s->park(p);
    Conflict c = conflict_rec("acme", "k1", e);
    s->add_conflict(c);
    AuditEvent a;
    a.correlation_id = "cid-m2";
    a.stage = "received";
    s->audit(a);
    CHECK(s->trace("cid-m2").size() == 1);
    REQUIRE(s->status().size() == 1);
    CHECK(s->status()[0].cursor == "cur-1");
  }
  // Reopening does not migrate again.
  auto again = open_sqlite(path);
  CHECK(again->schema_version() >= 2);
  CHECK(again->inbox_backlog() == 3);
  CHECK(again->outbox_total() == 1);
}
