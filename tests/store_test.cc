// The SQLite store: migrations, inbox idempotency, ordering by applied version, cursors.
#include <catch2/catch.hpp>
#include <SQLiteCpp/SQLiteCpp.h>

#include "engine/store/store.h"
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
  CHECK(Version{2, "a"}.newer_than(Version{1, "z"}));
  CHECK(Version{1, "b"}.newer_than(Version{1, "a"}));
  CHECK_FALSE(Version{1, "a"}.newer_than(Version{1, "a"}));
}
