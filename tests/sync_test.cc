// weft sync / replay / status end to end: the real binary against the fake commercetools and
// the fake Omnisend on 127.0.0.1 — delivery, ordering, faults, dead letters and replay,
// crash safety under SIGKILL, and secrets never stored or printed.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <atomic>
#include <chrono>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "connectors/omnisend/client.h"
#include "engine/store/db_lock.h"
#include "engine/store/store.h"
#include "tests/fakes/commercetools.h"
#include "tests/fakes/omnisend.h"
#include "tests/test_util.h"

extern char** environ;

using namespace weft::fakes;
using weft::testing::run_weft;
using weft::testing::RunResult;
using weft::testing::TempDir;
namespace json = boost::json;

namespace {

const char* kOmniKey = "om-key-Zq81-s3cret";
const char* kCtSecret = "ct-secret-Hw27";

// A customer with the fields the acme mapping reads; `version` is set by the fake.
json::object customer(int i, const std::string& first_name = "Anna") {
  json::object c = sample_customer(i);
  c["firstName"] = first_name;
  c["lastName"] = "Svensson";
  return c;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The example's lib/ into a test workspace, and the secrets its tenant.json names.
void copy_lib(const TempDir& dir) {
  setenv("SYNC_T_CT_SECRET", kCtSecret, 1);
  setenv("SYNC_T_OMNI_KEY", kOmniKey, 1);
  for (const auto& e : std::filesystem::directory_iterator(std::string(WEFT_SOURCE_DIR) + "/scripts/lib"))
    dir.write("lib/" + e.path().filename().string(), read_file(e.path().string()));
}

// The commercetools connection of a test tenant.json, pointed at the fake.
std::string ct_connection(const FakeCommercetools& ct) {
  return R"({ "system": "commercetools", "project": "acme-shop", "auth_url": ")" + ct.url() + R"(", "api_url": ")" +
         ct.url() + R"(", "client_id": "client-id", "client_secret": "${SYNC_T_CT_SECRET}" })";
}

// A workspace with the acme customers mapping pointed at the fakes. `retry` and
// `omnisend_extra` are JSON members added to the flow's retry policy / the Omnisend connection.
struct World {
  FakeCommercetools ct{"acme-shop", "client-id", kCtSecret};
  FakeOmnisend om{kOmniKey};
  TempDir dir;
  std::string ws;

  explicit World(const std::string& retry = R"("max_attempts": 8, "base_ms": 20, "max_ms": 200)",
                 const std::string& omnisend_extra = R"("rate_limit": "off")", const std::string& script = "") {
    ws = dir.path().string();
    copy_lib(dir);
    dir.write("acme/customers.lua",
              script.empty() ? read(std::string(WEFT_SOURCE_DIR) + "/scripts/acme/customers.lua") : script);
    dir.write("acme/tenant.json", R"({
  "tenant": "acme",
  "limits": { "cpu_ms": 2000 },
  "connections": {
    "ct": )" + ct_connection(ct) + R"(,
    "omnisend": { "system": "omnisend", "api_url": ")" + om.base_url() +
                                      R"(", "api_key": "${SYNC_T_OMNI_KEY}",
                  )" + (omnisend_extra.find("timeout_ms") == std::string::npos ? R"("timeout_ms": 5000, )" : "") +
                                      omnisend_extra + R"( }
  },
  "flows": {
    "customers": {
      "source": { "connection": "ct", "entity": "customer" },
      "destination": { "connection": "omnisend", "entity": "contact" },
      "script": "customers.lua",
      "context": { "region": "SE", "default_locale": "en-US" },
      "retry": { )" + retry + R"( }
    }
  }
})");
  }
  static std::string read(const std::string& path) { return read_file(path); }
  std::string db() const { return ws + "/.weft/weft.db"; }
  RunResult sync() const { return run_weft("sync --workspace " + ws + " --tenant acme"); }
  json::object summary(const RunResult& r) const {
    auto nl = r.out.find('\n');
    return json::parse(r.out.substr(0, nl)).as_object();
  }
  int64_t version_at_omnisend(int i) const {
    auto c = om.contact_by_email("c" + std::to_string(i) + "@x.se");
    if (!c) return -1;
    return c->at("customProperties").at("commercetoolsVersion").to_number<int64_t>();
  }
};

int64_t num(const json::object& o, const char* k) { return o.at(k).to_number<int64_t>(); }

}  // namespace

TEST_CASE("sync: customers reach Omnisend, a second run sends only what changed", "[sync]") {
  World w;
  for (int i = 0; i < 300; ++i) w.ct.put_customer(customer(i));
  RunResult r = w.sync();
  INFO(r.err);
  REQUIRE(r.code == 0);
  auto s = w.summary(r);
  CHECK(num(s, "pulled") == 300);
  CHECK(num(s, "delivered") == 300);
  CHECK(w.om.contact_count() == 300);
  auto c7 = w.om.contact_by_email("c7@x.se");
  REQUIRE(c7);
  CHECK(c7->at("firstName") == "Anna");

  // Nothing new: nothing pulled, nothing sent.
  size_t before = w.om.request_count();
  r = w.sync();
  REQUIRE(r.code == 0);
  CHECK(num(w.summary(r), "pulled") == 0);
  CHECK(w.om.request_count() == before);

  // One changed field: one request, carrying the change and the identifier, not the rest.
  w.ct.put_customer(customer(7, "Annika"));
  r = w.sync();
  REQUIRE(r.code == 0);
  CHECK(num(w.summary(r), "delivered") == 1);
  auto reqs = w.om.requests();
  REQUIRE(reqs.size() == before + 1);
  json::object body = json::parse(reqs.back().body).as_object();
  CHECK(body.at("firstName") == "Annika");
  CHECK_FALSE(body.contains("lastName"));  // unchanged fields are not sent
  CHECK(body.at("identifiers").as_array()[0].at("id") == "c7@x.se");
  CHECK(w.om.contact_by_email("c7@x.se")->at("firstName") == "Annika");
  CHECK(w.om.contact_by_email("c7@x.se")->at("lastName") == "Svensson");

  // status knows the cursor and an empty backlog.
  RunResult st = run_weft("status --db " + w.db());
  REQUIRE(st.code == 0);
  auto flows = json::parse(st.out).at("flows").as_array();
  REQUIRE(flows.size() == 1);
  CHECK(flows[0].at("outbox") == 0);
  CHECK_FALSE(flows[0].at("cursor").as_string().empty());
}

TEST_CASE("sync: a version older than or equal to the applied one is never written over it", "[sync][order]") {
  World w;
  w.ct.put_customer(customer(1, "First"));
  w.ct.put_customer(customer(1, "Second"));  // version 2
  REQUIRE(w.sync().code == 0);
  CHECK(w.version_at_omnisend(1) == 2);
  // The source hands back an old snapshot (a lagging replica): version 1 with a newer
  // timestamp must not win over version 2.
  json::object old = customer(1, "First");
  w.ct.put_customer(old);  // version 3, Third-party change
  RunResult r = w.sync();
  REQUIRE(r.code == 0);
  CHECK(w.version_at_omnisend(1) == 3);
  CHECK(w.om.order_violations() == 0);
  auto versions = w.om.written_versions("c1@x.se");
  CHECK(std::is_sorted(versions.begin(), versions.end()));
}

TEST_CASE("sync: faults at Omnisend are retried until everything is delivered, never before Retry-After",
          "[sync][faults]") {
  World w(R"("max_attempts": 40, "base_ms": 10, "max_ms": 200, "max_age": "1h")",
          R"("rate_limit": "off", "concurrency": 4, "timeout_ms": 400)");
  for (int i = 0; i < 200; ++i) w.ct.put_customer(customer(i));
  Faults f;
  f.server_error = 0.20;
  f.rate_limited = 0.10;
  f.retry_after_s = 1;
  f.retry_after_header = true;
  f.timeout = 0.05;
  f.timeout_ms = 700;  // longer than the connection's 400 ms timeout
  f.reset = 0.05;
  f.seed = 7;
  w.om.set_faults(f);
  RunResult r = w.sync();
  INFO(r.err);
  REQUIRE(r.code == 0);
  auto s = w.summary(r);
  CHECK(num(s, "delivered") == 200);
  CHECK(num(s, "retried") > 20);
  CHECK(num(s, "dead_lettered") == 0);
  CHECK(w.om.contact_count() == 200);
  CHECK(w.om.retry_after_violations() == 0);
  for (int i = 0; i < 200; ++i) CHECK(w.version_at_omnisend(i) == 1);
}

TEST_CASE("sync: a 429 holds the whole connection, its lookups and writes alike", "[sync][faults]") {
  // One sender, so every request after a 429 is one weft sent knowing of it. Omnisend's
  // limit is the brand's: a request to another contact during the wait is refused too.
  World w(R"("max_attempts": 30, "base_ms": 10, "max_ms": 200, "max_age": "1h")",
          R"("rate_limit": "off", "concurrency": 1)");
  for (int i = 0; i < 20; ++i) w.ct.put_customer(customer(i));
  Faults f;
  f.rate_limited = 0.12;
  f.retry_after_s = 1;  // in the body, as the real API does
  f.seed = 11;
  w.om.set_faults(f);
  RunResult r = w.sync();
  INFO(r.err);
  REQUIRE(r.code == 0);
  auto s = w.summary(r);
  CHECK(num(s, "delivered") == 20);
  CHECK(num(s, "retried") > 0);
  CHECK(w.om.contact_count() == 20);
  CHECK(w.om.brand_wait_violations() == 0);
  CHECK(w.om.retry_after_violations() == 0);
}

TEST_CASE("sync: validation errors become rejections with the API's message", "[sync][faults]") {
  // A mapping whose email passes weft's schema but not Omnisend's own check.
  World w(R"("max_attempts": 3, "base_ms": 10)", R"("rate_limit": "off")", R"(local M = {}
M.key = function(rec) return rec.id end
M.version = function(rec) return rec.version, rec.lastModifiedAt end
function M.map(rec)
  local id = rec.email
  if rec.firstName == "Broken" then id = "no-at-sign" end
  return { identifiers = { { type = "email", id = id } }, firstName = rec.firstName }
end
return M
)");
  w.ct.put_customer(customer(1));
  w.ct.put_customer(customer(2, "Broken"));
  RunResult r = w.sync();
  CHECK(r.code == 1);
  auto s = w.summary(r);
  CHECK(num(s, "delivered") == 1);
  CHECK(num(s, "rejected") == 1);
  RunResult list = run_weft("replay --workspace " + w.ws + " --tenant acme --list");
  REQUIRE(list.code == 0);
  json::object p = json::parse(list.out.substr(0, list.out.find('\n'))).as_object();
  CHECK(p.at("kind") == "rejection");
  CHECK(p.at("stage") == "deliver");
  CHECK(p.at("error") == "http 400");
  CHECK(std::string(p.at("reason").as_string()).find("invalid email") != std::string::npos);
}

TEST_CASE("sync: a destination that never recovers fills the dead letters, replay delivers them", "[sync][faults]") {
  World w(R"("max_attempts": 3, "base_ms": 10, "max_ms": 20)");
  for (int i = 0; i < 20; ++i) w.ct.put_customer(customer(i));
  w.om.set_down(true);
  RunResult r = w.sync();
  CHECK(r.code == 1);
  CHECK(num(w.summary(r), "dead_lettered") == 20);
  CHECK(w.om.contact_count() == 0);
  RunResult st = run_weft("status --db " + w.db());
  CHECK(json::parse(st.out).at("flows").as_array()[0].at("dead_letters") == 20);

  w.om.set_down(false);
  r = run_weft("replay --workspace " + w.ws + " --tenant acme --kind dead_letter");
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(num(w.summary(r), "delivered") == 20);
  CHECK(w.om.contact_count() == 20);
  st = run_weft("status --db " + w.db());
  CHECK(json::parse(st.out).at("flows").as_array()[0].at("dead_letters") == 0);
  // Replayed once: a second replay has nothing to do.
  r = run_weft("replay --workspace " + w.ws + " --tenant acme");
  CHECK(num(w.summary(r), "delivered") == 0);
}

TEST_CASE("sync: one engine per database, a second sync or replay is refused and changes nothing",
          "[sync][lock]") {
  World w(R"("max_attempts": 2, "base_ms": 10, "max_ms": 20)");
  for (int i = 0; i < 5; ++i) w.ct.put_customer(customer(i));
  w.om.set_down(true);
  REQUIRE(w.sync().code == 1);  // five dead letters to replay
  {
    // Another engine (as weft serve would) holds the database.
    std::string error;
    auto held = weft::store::DbLock::take(w.db(), "weft serve", &error);
    REQUIRE(held);
    CHECK_FALSE(weft::store::DbLock::take(w.db(), "weft sync", &error));  // also within one process
    CHECK(error.find("weft serve, pid " + std::to_string(getpid())) != std::string::npos);
    w.om.set_down(false);
    RunResult r = w.sync();
    CHECK(r.code == 2);
    CHECK(r.err.find("another weft is running on " + w.db() + " (weft serve, pid") != std::string::npos);
    r = run_weft("replay --workspace " + w.ws + " --tenant acme");
    CHECK(r.code == 2);
    CHECK(r.err.find("replay through its admin API") != std::string::npos);
    r = run_weft("serve --workspace " + w.ws + " --listen 127.0.0.1:0 --no-watch");
    CHECK(r.code == 2);
    CHECK(r.err.find("another weft is running on " + w.db()) != std::string::npos);
    CHECK(w.om.contact_count() == 0);
    // Reading needs no lock.
    RunResult list = run_weft("replay --workspace " + w.ws + " --tenant acme --list");
    CHECK(list.code == 0);
    CHECK(std::count(list.out.begin(), list.out.end(), '\n') == 5);
    CHECK(run_weft("status --db " + w.db()).code == 0);
  }
  // Released with its holder: the replay runs.
  RunResult r = run_weft("replay --workspace " + w.ws + " --tenant acme");
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK(w.om.contact_count() == 5);
}

TEST_CASE("sync: secrets never reach the store, the output or the dry-run", "[sync][secrets]") {
  World w(R"("max_attempts": 2, "base_ms": 10, "max_ms": 20)");
  for (int i = 0; i < 5; ++i) w.ct.put_customer(customer(i));
  w.om.set_down(true);  // errors get stored and printed
  RunResult r = w.sync();
  RunResult list = run_weft("replay --workspace " + w.ws + " --tenant acme --list");
  RunResult st = run_weft("status --db " + w.db() + " --conflicts");
  std::string input = (w.dir.path() / "in.json").string();
  json::object next = *w.ct.customer(sample_customer(1).at("id").as_string().c_str());
  next["version"] = 99;  // newer than what the store applied, so a request is planned
  std::ofstream(input) << json::serialize(next);
  RunResult dry = run_weft("dry-run --workspace " + w.ws + " --tenant acme --flow customers --db " + w.db() +
                           " --input " + input);
  REQUIRE(dry.code == 0);
  CHECK(dry.out.find("X-API-KEY") != std::string::npos);
  for (const std::string& secret : {std::string(kOmniKey), std::string(kCtSecret)}) {
    for (const RunResult* x : {&r, &list, &st, &dry}) {
      CHECK(x->out.find(secret) == std::string::npos);
      CHECK(x->err.find(secret) == std::string::npos);
    }
    for (const char* f : {"weft.db", "weft.db-wal"}) {
      std::string bytes = World::read(w.ws + "/.weft/" + f);
      CHECK(bytes.find(secret) == std::string::npos);
    }
  }
}

TEST_CASE("sync: a flow fed only by webhooks is passed over, the others are pulled", "[sync]") {
  World w;
  // Orders come by subscription only, to the connection's webhook: weft sync cannot pull
  // them (it stopped at this flow, exit 2, before pulling the flows after it).
  std::string cfg = World::read(w.ws + "/acme/tenant.json");
  cfg.replace(cfg.find("\"client_secret\": \"${SYNC_T_CT_SECRET}\""), 38,
              R"("client_secret": "${SYNC_T_CT_SECRET}", "webhook": { "hmac_secret": "${SYNC_T_HOOK}" })");
  cfg.replace(cfg.find("\"flows\": {"), 10, R"("flows": {
    "a_orders": {
      "source": { "connection": "ct", "entity": "order" },
      "destination": { "connection": "omnisend", "entity": "event" },
      "script": "orders.lua"
    },)");
  w.dir.write("acme/tenant.json", cfg);
  w.dir.write("acme/orders.lua", "return { map = function(rec) return { eventName = 'placed order' } end }");
  for (int i = 0; i < 20; ++i) w.ct.put_customer(customer(i));
  RunResult r = w.sync();
  INFO(r.out << r.err);
  CHECK(r.code == 0);
  CHECK(r.err.find("flow a_orders is not pulled") != std::string::npos);
  CHECK(num(w.summary(r), "delivered") == 20);
  // Named with --flow, it is an error that says why.
  RunResult named = run_weft("sync --workspace " + w.ws + " --tenant acme --flow a_orders");
  CHECK(named.code != 0);
  CHECK(named.err.find("only commercetools customers") != std::string::npos);
}

TEST_CASE("dry-run: the plan is made from the payload shown, --context included", "[sync][cli]") {
  World w;
  json::object c = customer(1);
  c.erase("firstName");  // the preferred name in the wanted locale is the first name then
  c["custom"] = json::object{{"fields", json::object{{"preferredName", json::object{{"en-US", "Anna"}, {"de-DE", "Anke"}}}}}};
  std::string input = (w.dir.path() / "in.json").string();
  std::ofstream(input) << json::serialize(c);
  RunResult dry = run_weft("dry-run --workspace " + w.ws + " --tenant acme --flow customers --input " + input +
                           " --context '{\"locale\":\"de-DE\"}'");
  INFO(dry.out << dry.err);
  REQUIRE(dry.code == 0);
  json::value out = json::parse(dry.out);
  CHECK(out.at("payload").at("firstName") == "Anke");
  const json::value& body = out.at("plan").at("requests").at(0).at("body");
  CHECK(body.at("firstName") == "Anke");  // was "Anna": the plan mapped without --context
}

namespace {
pid_t spawn_sync(const World& w) {
  std::string bin = WEFT_BINARY;
  std::vector<std::string> args = {bin, "sync", "--workspace", w.ws, "--tenant", "acme"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  posix_spawn(&pid, bin.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}
}  // namespace

TEST_CASE("sync: killed with SIGKILL at random moments and restarted, nothing is lost or reordered",
          "[sync][crash]") {
  World w(R"("max_attempts": 50, "base_ms": 10, "max_ms": 100)", R"("rate_limit": "off", "concurrency": 4)");
  const int n = 20000;
  w.ct.put_customers_bulk(0, n);
  std::mt19937 rng(20261122);
  int kills = 0;
  for (int round = 0; kills < 12 && round < 60; ++round) {
    // Updates land at the source between runs: their new versions must win.
    for (int k = 0; k < 1500; ++k) {
      int i = std::uniform_int_distribution<int>(0, n - 1)(rng);
      json::object c = *w.ct.customer(sample_customer(i).at("id").as_string().c_str());
      c["firstName"] = "Round" + std::to_string(round);
      c.erase("lastModifiedAt");  // the fake stamps the change
      w.ct.put_customer(c);
    }
    pid_t pid = spawn_sync(w);
    REQUIRE(pid > 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(50, 1200)(rng)));
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      ++kills;
    }
  }
  CHECK(kills >= 10);
  RunResult r = w.sync();
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(w.om.contact_count() == static_cast<size_t>(n));
  int wrong = 0;
  for (int i = 0; i < n; ++i) {
    auto c = w.ct.customer(sample_customer(i).at("id").as_string().c_str());
    if (w.version_at_omnisend(i) != c->at("version").to_number<int64_t>()) ++wrong;
  }
  CHECK(wrong == 0);
  CHECK(w.om.order_violations() == 0);
  // A last run finds nothing left to do.
  r = w.sync();
  CHECK(num(w.summary(r), "planned") == 0);
}

TEST_CASE("sync: subscription notifications in the inbox are resolved, fetched when they carry no payload",
          "[sync][notifications]") {
  World w;
  for (int i = 0; i < 5; ++i) w.ct.put_customer(customer(i));
  REQUIRE(w.sync().code == 0);  // all five delivered, cursor at the end
  // Changes arrive as notifications instead (as a webhook would store them).
  for (int i = 0; i < 4; ++i) w.ct.put_customer(customer(i, "Changed" + std::to_string(i)));
  json::object bad{{"notificationType", "Message"}, {"type", "CustomerCreated"}};  // no resource
  {
    auto store = weft::store::open_sqlite(w.db());
    store->begin();
    auto add = [&](const std::string& id, const json::object& n) {
      weft::store::InboxRecord r;
      r.tenant = "acme";
      r.connection = "ct";
      r.entity = "customer";
      r.message_id = id;
      r.correlation_id = "corr-" + id;
      r.payload = json::serialize(n);
      CHECK(store->inbox_add(r));
    };
    auto id = [](int i) { return std::string(sample_customer(i).at("id").as_string()); };
    add("n0", w.ct.notification(id(0), "Message", "CustomerCreated"));              // carries the customer
    add("n1", w.ct.notification(id(1), "Message", "CustomerFirstNameSet", true));    // payloadNotIncluded
    add("n2", w.ct.notification(id(2), "ResourceUpdated"));                         // change notification
    add("n3", w.ct.notification(id(3), "Message", "CustomerFirstNameSet"));         // partial message
    add("n4", w.ct.notification(id(4), "ResourceDeleted"));
    add("n5", bad);
    store->commit();
  }
  // The pull finds the same changes too: the notifications' versions make them stale or vice versa.
  RunResult r = w.sync();
  INFO(r.err);
  CHECK(r.code == 1);  // the malformed one is rejected
  auto s = w.summary(r);
  CHECK(num(s, "rejected") == 1);
  CHECK(num(s, "skipped") == 1);
  for (int i = 0; i < 4; ++i)
    CHECK(w.om.contact_by_email("c" + std::to_string(i) + "@x.se")->at("firstName") == json::value("Changed" + std::to_string(i)));
  CHECK(w.om.order_violations() == 0);
  RunResult list = run_weft("replay --workspace " + w.ws + " --tenant acme --list");
  CHECK(list.out.find("without resource.id") != std::string::npos);
  CHECK(list.out.find("\"stage\":\"receive\"") != std::string::npos);
  // The trace of one notification: taken from the inbox, delivered or found already applied.
  auto store = weft::store::open_sqlite(w.db());
  auto trace = store->trace("corr-n1");
  REQUIRE_FALSE(trace.empty());
  CHECK(trace.front().detail.find("received from ct") != std::string::npos);
}

TEST_CASE("sync: a destination that hangs does not hold up another connection's deliveries", "[sync][isolation]") {
  // Two Omnisend brands; the second answers nothing for 1.5 s (longer than its timeout)
  // on every request. The first must get everything, in the time its own work takes.
  FakeCommercetools ct{"acme-shop", "client-id", kCtSecret};
  FakeOmnisend good{kOmniKey};
  FakeOmnisend slow{kOmniKey};
  Faults hang;
  hang.timeout = 1.0;
  hang.timeout_ms = 1500;
  slow.set_faults(hang);
  TempDir dir;
  copy_lib(dir);
  std::string script = World::read(std::string(WEFT_SOURCE_DIR) + "/scripts/acme/customers.lua");
  dir.write("acme/customers.lua", script);
  dir.write("acme/customers_b.lua", script);
  auto omni = [](const FakeOmnisend& o, int timeout_ms) {
    return R"({ "system": "omnisend", "api_url": ")" + o.base_url() + R"(", "api_key": "${SYNC_T_OMNI_KEY}", "timeout_ms": )" +
           std::to_string(timeout_ms) + R"(, "rate_limit": "off" })";
  };
  // The slow brand's operations need at least 8 timed-out attempts of 300 ms: 2.4 s.
  auto flow = [](const std::string& conn, const std::string& script_file) {
    return R"({ "source": { "connection": "ct", "entity": "customer" },
                "destination": { "connection": ")" + conn + R"(", "entity": "contact" },
                "script": ")" + script_file + R"(", "context": { "region": "SE" },
                "retry": { "max_attempts": 8, "base_ms": 100, "max_ms": 400 } })";
  };
  dir.write("acme/tenant.json", R"({
  "tenant": "acme",
  "limits": { "cpu_ms": 2000 },
  "connections": {
    "ct": )" + ct_connection(ct) + R"(,
    "good": )" + omni(good, 5000) + R"(,
    "slow": )" + omni(slow, 300) + R"(
  },
  "flows": { "to_good": )" + flow("good", "customers.lua") + R"(, "to_slow": )" +
                                    flow("slow", "customers_b.lua") + R"( }
})");
  for (int i = 0; i < 300; ++i) ct.put_customer(customer(i));
  // When the good brand had everything, and when the run ended.
  std::atomic<bool> running{true};
  std::chrono::steady_clock::time_point good_done{};
  std::thread watch([&] {
    while (running) {
      if (good_done == std::chrono::steady_clock::time_point{} && good.contact_count() == 300)
        good_done = std::chrono::steady_clock::now();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  RunResult r = run_weft("sync --workspace " + dir.path().string() + " --tenant acme");
  auto ended = std::chrono::steady_clock::now();
  running = false;
  watch.join();
  INFO(r.err);
  CHECK(r.code == 1);  // the slow brand's records end as dead letters
  CHECK(good.contact_count() == 300);
  CHECK(slow.contact_count() == 0);
  auto s = json::parse(r.out.substr(0, r.out.find('\n'))).as_object();
  CHECK(num(s, "delivered") == 300);
  CHECK(num(s, "dead_lettered") == 300);
  // A lookup that got no answer failed the rest of its batch with it: the slow brand was
  // asked about once per batch and attempt, not once per contact (300 x 8 lookups, each
  // waiting out its timeout).
  CHECK(slow.request_count() < 300);
  // The good brand's contacts did not wait for the slow one: all of them had arrived while
  // the slow brand was still timing out (it needs at least 2.4 s after its first attempt).
  REQUIRE(good_done != std::chrono::steady_clock::time_point{});
  CHECK(std::chrono::duration<double>(ended - good_done).count() > 0.5);
}

TEST_CASE("sync: events are sent once each, with an eventID and eventTime for Omnisend's dedupe", "[sync][events]") {
  World w;
  w.dir.write("acme/customer_events.lua", R"(local M = {}
function M.map(rec)
  return { eventName = "customer synced", origin = "api", contact = { email = rec.email },
           properties = { customerId = rec.id } }
end
return M
)");
  std::string tenant = World::read(w.ws + "/acme/tenant.json");
  auto at = tenant.find("\"customers\": {");
  REQUIRE(at != std::string::npos);
  tenant.insert(at, R"("customer_events": {
      "source": { "connection": "ct", "entity": "customer" },
      "destination": { "connection": "omnisend", "entity": "event" },
      "script": "customer_events.lua" },
    )");
  w.dir.write("acme/tenant.json", tenant);
  for (int i = 0; i < 40; ++i) w.ct.put_customer(customer(i));
  RunResult r = w.sync();
  INFO(r.err);
  REQUIRE(r.code == 0);
  auto events = w.om.events();
  CHECK(events.size() == 40);
  std::set<std::string> ids;
  for (const auto& e : events) {
    REQUIRE(e.contains("eventID"));
    CHECK(e.contains("eventTime"));
    ids.insert(std::string(e.at("eventID").as_string()));
  }
  CHECK(ids.size() == 40);
  CHECK(w.om.contact_count() == 40);  // the contacts flow ran beside it
}

TEST_CASE("sync: an unsubscribe made in Omnisend survives later syncs (consent owned by the destination)",
          "[sync][merge]") {
  World w;
  json::object c = customer(1);
  c["custom"] = json::object{{"type", json::object{{"key", "customer-consent"}}},
                             {"fields", json::object{{"emailConsent", "subscribed"}}}};
  w.ct.put_customer(c);
  REQUIRE(w.sync().code == 0);
  auto channel = [&] {
    auto contact = w.om.contact_by_email("c1@x.se");
    return contact->at("identifiers").as_array()[0].at("channels").at("email").at("status");
  };
  REQUIRE(channel() == "subscribed");
  // The customer unsubscribes in Omnisend.
  REQUIRE(w.om.update_contact("c1@x.se", [](json::object& contact) {
    contact["identifiers"].as_array()[0].as_object()["channels"].as_object()["email"].as_object()["status"] =
        "unsubscribed";
  }));
  // Two later changes at commercetools (the second after weft has seen the unsubscribe).
  for (const char* name : {"Annika", "Anneli"}) {
    json::object next = *w.ct.customer(std::string(sample_customer(1).at("id").as_string()));
    next["firstName"] = name;
    next.erase("lastModifiedAt");
    w.ct.put_customer(next);
    RunResult r = w.sync();
    INFO(r.err);
    REQUIRE(r.code == 0);
    CHECK(w.om.contact_by_email("c1@x.se")->at("firstName") == json::value(name));
    CHECK(channel() == "unsubscribed");
  }
}

TEST_CASE("sync: the first write keeps the consent Omnisend already holds, first_write: send does not look",
          "[sync][merge]") {
  for (bool lookup : {true, false}) {
    INFO((lookup ? "first_write: lookup (default)" : "first_write: send"));
    World w;
    if (!lookup) {
      std::string cfg = World::read(w.ws + "/acme/tenant.json");
      cfg.replace(cfg.find("\"script\": \"customers.lua\","), 26, R"("script": "customers.lua", "first_write": "send",)");
      w.dir.write("acme/tenant.json", cfg);
    }
    // c1 signed up through an Omnisend form and unsubscribed there, before weft came.
    weft::connectors::omnisend::Destination direct({w.om.base_url(), kOmniKey, 5000});
    REQUIRE(direct.upsert_contact(R"({"identifiers":[{"type":"email","id":"c1@x.se",
        "channels":{"email":{"status":"unsubscribed"}}}],"firstName":"Form"})", 0, nullptr).kind ==
            weft::delivery::SendResult::Kind::ok);
    for (int i : {1, 2}) {
      json::object c = customer(i);
      c["custom"] = json::object{{"type", json::object{{"key", "customer-consent"}}},
                                 {"fields", json::object{{"emailConsent", "subscribed"}}}};
      w.ct.put_customer(c);
    }
    RunResult r = w.sync();
    INFO(r.out << r.err);
    REQUIRE(r.code == 0);
    auto channel = [&](int i) {
      auto contact = w.om.contact_by_email("c" + std::to_string(i) + "@x.se");
      return contact->at("identifiers").as_array()[0].at("channels").at("email").at("status");
    };
    CHECK(channel(1) == (lookup ? "unsubscribed" : "subscribed"));
    CHECK(channel(2) == "subscribed");  // held nothing there: the source's consent is written
    CHECK(w.om.contact_by_email("c1@x.se")->at("firstName") == "Anna");  // source-owned fields go
    size_t lookups = 0;
    for (const auto& q : w.om.requests())
      if (q.method == "GET" && q.path == "/v3/contacts") ++lookups;
    CHECK(lookups == (lookup ? 2u : 0u));
    // The next sync has seen what Omnisend holds: no lookups, and the unsubscribe stays.
    json::object next = *w.ct.customer(std::string(sample_customer(1).at("id").as_string()));
    next["firstName"] = "Annika";
    next.erase("lastModifiedAt");
    w.ct.put_customer(next);
    REQUIRE(w.sync().code == 0);
    size_t after = 0;
    for (const auto& q : w.om.requests())
      if (q.method == "GET" && q.path == "/v3/contacts") ++after;
    CHECK(after == lookups);
    CHECK(channel(1) == (lookup ? "unsubscribed" : "subscribed"));
  }
}

TEST_CASE("sync: the first write keeps the SMS consent of a contact Omnisend holds by phone only", "[sync][merge]") {
  World w;
  // +46701234567 signed up for SMS in Omnisend and unsubscribed there; Omnisend has no email
  // for them. Omnisend updates the contact holding any identifier of a write.
  weft::connectors::omnisend::Destination direct({w.om.base_url(), kOmniKey, 5000});
  REQUIRE(direct.upsert_contact(R"({"identifiers":[{"type":"phone","id":"+46701234567",
      "channels":{"sms":{"status":"unsubscribed"}}}]})", 0, nullptr).kind == weft::delivery::SendResult::Kind::ok);
  // Another person's contact shares c3's phone (a household's), and unsubscribed from email.
  REQUIRE(direct.upsert_contact(R"({"identifiers":[{"type":"email","id":"other@x.se",
      "channels":{"email":{"status":"unsubscribed"}}},{"type":"phone","id":"+46701112233"}]})", 0, nullptr).kind ==
          weft::delivery::SendResult::Kind::ok);
  for (int i : {1, 2, 3}) {
    json::object c = customer(i);
    const char* phone = i == 1 ? "070-123 45 67" : i == 2 ? "070-765 43 21" : "070-111 22 33";
    c["addresses"] = json::array{json::object{{"id", "a1"}, {"country", "SE"}, {"phone", phone}}};
    c["custom"] = json::object{{"type", json::object{{"key", "customer-consent"}}},
                               {"fields", json::object{{"smsConsent", "subscribed"}, {"emailConsent", "subscribed"}}}};
    w.ct.put_customer(c);
  }
  RunResult r = w.sync();
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  auto sms = [&](int i) {
    auto contact = w.om.contact_by_email("c" + std::to_string(i) + "@x.se");
    REQUIRE(contact);
    for (const auto& id : contact->at("identifiers").as_array())
      if (id.at("type") == "phone") return id.at("channels").at("sms").at("status");
    FAIL("no phone identifier");
    return json::value();
  };
  CHECK(sms(1) == "unsubscribed");  // found by phone: kept
  CHECK(sms(2) == "subscribed");    // held nowhere: written
  size_t lookups = 0;
  bool c3_email_consent_sent = false;
  for (const auto& q : w.om.requests()) {
    if (q.method == "GET" && q.path == "/v3/contacts") ++lookups;
    if (q.method == "POST" && q.body.find("c3@x.se") != std::string::npos)
      c3_email_consent_sent = q.body.find(R"("email":{"status":"subscribed")") != std::string::npos;
  }
  CHECK(lookups == 6);  // each by email, then (finding nothing) by phone
  // Found by phone, the other person's email consent is not taken for c3's.
  CHECK(c3_email_consent_sent);
}

TEST_CASE("sync: a flagged field's first write does not overwrite another value the destination holds",
          "[sync][merge]") {
  std::string script = World::read(std::string(WEFT_SOURCE_DIR) + "/scripts/acme/customers.lua");
  auto at = script.find("M.owners = {");
  REQUIRE(at != std::string::npos);
  script.replace(at, 12, "M.owners = { firstName = \"flag\", lastName = \"flag\",");
  World w(R"("max_attempts": 8, "base_ms": 20, "max_ms": 200)", R"("rate_limit": "off")", script);
  // c1 is in Omnisend already, with another first name and the same last name.
  json::object c1 = customer(1);
  weft::connectors::omnisend::Destination direct({w.om.base_url(), kOmniKey, 5000});
  REQUIRE(direct.upsert_contact(R"({"identifiers":[{"type":"email","id":"c1@x.se"}],"firstName":"Form","lastName":)" +
                                    json::serialize(c1.at("lastName")) + "}",
                                0, nullptr)
              .kind == weft::delivery::SendResult::Kind::ok);
  w.ct.put_customer(c1);
  w.ct.put_customer(customer(2));
  RunResult r = w.sync();
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  CHECK(num(w.summary(r), "delivered") == 2);
  CHECK(num(w.summary(r), "conflicts") == 1);
  auto contact = [&](int i) { return *w.om.contact_by_email("c" + std::to_string(i) + "@x.se"); };
  CHECK(contact(1).at("firstName") == "Form");                 // kept, and flagged
  CHECK(contact(1).at("lastName") == c1.at("lastName"));       // the same value: no conflict
  CHECK(contact(2).at("firstName") == customer(2).at("firstName"));  // nothing there: written
  auto store = weft::store::open_sqlite(w.db());
  auto conflicts = store->conflicts("acme", false, 10);
  REQUIRE(conflicts.size() == 1);
  CHECK(conflicts[0].field == "firstName");
  auto detail = json::parse(conflicts[0].detail);
  CHECK(detail.at("source") == customer(1).at("firstName"));
  CHECK(detail.at("destination") == "Form");
  store.reset();
  // The record's next change: the conflict stays one, and the first name is still not written.
  json::object next = *w.ct.customer(std::string(c1.at("id").as_string()));
  next["lastName"] = "Berg";
  next.erase("lastModifiedAt");
  w.ct.put_customer(next);
  REQUIRE(w.sync().code == 0);
  CHECK(contact(1).at("lastName") == "Berg");  // changed at the source only: written
  CHECK(contact(1).at("firstName") == "Form");
  CHECK(weft::store::open_sqlite(w.db())->conflicts("acme", false, 10).size() == 1);
}

TEST_CASE("sync: a contact deleted in Omnisend is made again whole at the record's next change (not in part)",
          "[sync][merge]") {
  World w;
  for (int i : {1, 2}) w.ct.put_customer(customer(i));
  REQUIRE(w.sync().code == 0);
  REQUIRE(w.om.contact_by_email("c1@x.se")->at("firstName") == "Anna");
  // Someone deletes c1 in Omnisend; then the customer changes their last name.
  REQUIRE(w.om.delete_contact_by_email("c1@x.se"));
  json::object next = *w.ct.customer(std::string(customer(1).at("id").as_string()));
  next["lastName"] = "Berg";
  next.erase("lastModifiedAt");
  w.ct.put_customer(next);
  RunResult r = w.sync();
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  // The change alone would have made a contact with nothing but the email and last name:
  // the record went through again, whole.
  auto c = w.om.contact_by_email("c1@x.se");
  REQUIRE(c);
  CHECK(c->at("lastName") == "Berg");
  CHECK(c->at("firstName") == "Anna");
  CHECK(w.om.contact_count() == 2);
  // And the next run has nothing more to do.
  size_t before = w.om.request_count();
  REQUIRE(w.sync().code == 0);
  CHECK(w.om.request_count() == before);
}

TEST_CASE("sync: an unset secret is a configuration error naming the variable, before anything runs",
          "[sync][secrets]") {
  World w;
  w.ct.put_customer(customer(1));
  unsetenv("SYNC_T_CT_SECRET");
  RunResult r = w.sync();
  setenv("SYNC_T_CT_SECRET", kCtSecret, 1);
  CHECK(r.code == 2);
  CHECK(r.err.find("SYNC_T_CT_SECRET") != std::string::npos);
  CHECK(r.out.empty());
  CHECK(w.ct.requests().empty());
  CHECK(w.om.request_count() == 0);
  CHECK_FALSE(std::filesystem::exists(w.db()));  // nothing written: no database made
}

TEST_CASE("sync: a secret whose variable is set but empty is a configuration error, as an unset one is",
          "[sync][secrets]") {
  World w;
  w.ct.put_customer(customer(1));
  setenv("SYNC_T_OMNI_KEY", "", 1);
  RunResult r = w.sync();
  setenv("SYNC_T_OMNI_KEY", kOmniKey, 1);
  INFO(r.err);
  CHECK(r.code == 2);
  CHECK(r.err.find("connection omnisend: \"api_key\" refers to environment variable SYNC_T_OMNI_KEY, which is "
                   "empty") != std::string::npos);
  CHECK(r.out.empty());
  CHECK(w.ct.requests().empty());
  CHECK(w.om.request_count() == 0);  // no request went out with an empty key
}
