// Workspace loading, config validation, fixtures, reload and secrets.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <map>
#include <thread>

#include "engine/workspace/fixtures.h"
#include "engine/workspace/registry.h"
#include "engine/workspace/schema.h"
#include "engine/workspace/secrets.h"
#include "engine/workspace/tenant.h"
#include "tests/test_util.h"

using namespace weft;
using weft::testing::TempDir;
using weft::testing::write_basic_tenant;
namespace json = boost::json;

namespace {
std::string all_problems(const std::vector<workspace::Problem>& ps) {
  std::string s;
  for (const auto& p : ps) s += p.str() + "\n";
  return s;
}

const char* kCase = R"({"name": "email lowercased", "flow": "c",
  "input": {"id": "1", "email": " Anna@Example.COM "},
  "expect": {"identifiers": [{"type": "email", "id": "anna@example.com"}]}})";
}  // namespace

TEST_CASE("a valid tenant loads with its flows, lib and fixtures", "[workspace]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  ws.write("lib/util/text.lua", "return {}");
  ws.write("t1/tests/a.json", kCase);
  std::vector<workspace::Problem> problems;
  auto t = workspace::load_tenant(ws.path(), "t1", &problems);
  REQUIRE(t);
  CHECK(problems.empty());
  CHECK(t->flows.size() == 1);
  CHECK(t->flow("c")->destination_system == "omnisend");
  CHECK(t->code.lib.count("util.text") == 1);
  CHECK(t->fixtures.size() == 1);
  CHECK(t->version.size() == 12);
  CHECK(workspace::list_tenants(ws.path()) == std::vector<std::string>{"t1"});
}

TEST_CASE("tenant.json errors name the file and the JSON path", "[workspace]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  std::vector<workspace::Problem> problems;

  SECTION("wrong type deep inside") {
    ws.write("t1/tenant.json", R"({"tenant": "t1", "limits": {"cpu_ms": "fast"},
      "connections": {"ct": {"system": "commercetools", "project": "p", "client_id": "id", "client_secret": "${CT_SECRET}"},
                      "om": {"system": "omnisend", "api_key": "${OM_KEY}"}},
      "flows": {"c": {"source": {"connection": "ct", "entity": "customer"},
                      "destination": {"connection": "om", "entity": "contact"}, "script": "c.lua"}}})");
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    std::string s = all_problems(problems);
    CHECK_THAT(s, Catch::Contains("t1/tenant.json: $.limits.cpu_ms"));
  }
  SECTION("a context key weft sets itself") {
    ws.write("t1/tenant.json", R"({"tenant": "t1",
      "connections": {"ct": {"system": "commercetools", "project": "p", "client_id": "c", "client_secret": "${S}"},
                      "om": {"system": "omnisend", "api_key": "${K}"}},
      "flows": {"c": {"source": {"connection": "ct", "entity": "customer"}, "context": {"now": "2024-01-01", "region": "SE"},
                      "destination": {"connection": "om", "entity": "contact"}, "script": "c.lua"}}})");
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    CHECK_THAT(all_problems(problems), Catch::Contains("$.flows.c.context.now: ctx.now is set by weft"));
  }
  SECTION("a key twice (a flow block copied and not renamed)") {
    ws.write("t1/tenant.json", R"({"tenant": "t1",
      "connections": {"ct": {"system": "commercetools"}, "om": {"system": "omnisend"}},
      "flows": {"c": {"source": {"connection": "ct", "entity": "customer"},
                      "destination": {"connection": "om", "entity": "contact"}, "script": "c.lua"},
                "c": {"source": {"connection": "ct", "entity": "customer"},
                      "destination": {"connection": "om", "entity": "contact"}, "script": "c.lua"}}})");
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    CHECK_THAT(all_problems(problems), Catch::Contains("t1/tenant.json: $.flows: duplicate key \"c\""));
    problems.clear();
    ws.write("t1/tests/a.json", R"({"name": "n", "flow": "c", "input": {"list": [{"id": 1, "id": 2}]},
      "expect": {"identifiers": []}})");
    write_basic_tenant(ws, weft::testing::kBasicScript);
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    CHECK_THAT(all_problems(problems), Catch::Contains("$.input.list[0]: duplicate key \"id\""));
  }
  SECTION("unknown system") {
    ws.write("t1/tenant.json", R"({"tenant": "t1",
      "connections": {"ct": {"system": "shopify"}},
      "flows": {"c": {"source": {"connection": "ct", "entity": "customer"},
                      "destination": {"connection": "ct", "entity": "contact"}, "script": "c.lua"}}})");
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    CHECK_THAT(all_problems(problems), Catch::Contains("t1/tenant.json: $.connections.ct.system"));
  }
  SECTION("unknown field") {
    ws.write("t1/tenant.json", R"({"tenant": "t1", "colour": "red",
      "connections": {"ct": {"system": "commercetools", "project": "p", "client_id": "id", "client_secret": "${CT_SECRET}"}},
      "flows": {"c": {"source": {"connection": "ct", "entity": "customer"},
                      "destination": {"connection": "ct", "entity": "contact"}, "script": "c.lua"}}})");
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    CHECK_THAT(all_problems(problems), Catch::Contains("colour"));
  }
  SECTION("flow names a connection that does not exist") {
    ws.write("t1/tenant.json", R"({"tenant": "t1",
      "connections": {"ct": {"system": "commercetools", "project": "p", "client_id": "id", "client_secret": "${CT_SECRET}"}},
      "flows": {"c": {"source": {"connection": "ct", "entity": "customer"},
                      "destination": {"connection": "nope", "entity": "contact"}, "script": "c.lua"}}})");
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    CHECK_THAT(all_problems(problems), Catch::Contains("$.flows.c.destination.connection: no connection named 'nope'"));
  }
  SECTION("tenant name differs from the folder") {
    ws.write("t1/tenant.json", R"({"tenant": "other",
      "connections": {"ct": {"system": "commercetools", "project": "p", "client_id": "id", "client_secret": "${CT_SECRET}"}},
      "flows": {"c": {"source": {"connection": "ct", "entity": "customer"},
                      "destination": {"connection": "ct", "entity": "contact"}, "script": "c.lua"}}})");
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    CHECK_THAT(all_problems(problems), Catch::Contains("$.tenant"));
  }
  SECTION("invalid JSON gives the line") {
    ws.write("t1/tenant.json", "{\n  \"tenant\": \"t1\",\n  oops\n}");
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    REQUIRE(problems.size() == 1);
    CHECK(problems[0].file == "t1/tenant.json");
    CHECK(problems[0].line == 3);
  }
  SECTION("missing script file") {
    std::filesystem::remove(ws.path() / "t1/c.lua");
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    CHECK_THAT(all_problems(problems), Catch::Contains("$.flows.c.script: cannot read t1/c.lua"));
  }
  SECTION("malformed fixture") {
    ws.write("t1/tests/bad.json", R"({"name": "x", "flow": "c", "input": {}})");  // no expectation
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    CHECK_THAT(all_problems(problems), Catch::Contains("t1/tests/bad.json"));
  }
  SECTION("fixture for an unknown flow") {
    ws.write("t1/tests/bad.json", R"({"name": "x", "flow": "zzz", "input": {}, "expect_skip": true})");
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    CHECK_THAT(all_problems(problems), Catch::Contains("no flow named 'zzz'"));
  }
}

namespace {
// tenant.json for "t1" with the given connections and script; the flow runs ct -> om.
std::string tenant_json(const std::string& connections, const std::string& script = "c.lua") {
  return R"({"tenant": "t1", "connections": )" + connections + R"(,
    "flows": {"c": {"source": {"connection": "ct", "entity": "customer"},
                    "destination": {"connection": "om", "entity": "contact"}, "script": ")" + script + R"("}}})";
}

// Connections with every setting their system needs: commercetools "ct" (with a webhook
// unless told), omnisend "om", and voyado "vo", which weft cannot deliver to yet.
std::string connections(bool ct_webhook = true) {
  return std::string(R"({
  "ct": {"system": "commercetools", "project": "p", "client_id": "id", "client_secret": "${CT_SECRET}")") +
         (ct_webhook ? R"(, "webhook": {"hmac_secret": "${CT_HOOK}"})" : "") + R"(},
  "om": {"system": "omnisend", "api_key": "${OM_KEY}"},
  "vo": {"system": "voyado"}})";
}

// tenant.json for "t1" with one flow "c" (the members given) over `connections`.
std::string flow_tenant(const std::string& flow, const std::string& conns = connections()) {
  return R"({"tenant": "t1", "connections": )" + conns + R"(, "flows": {"c": {"script": "c.lua", )" + flow +
         "}}}";
}
const std::string kCtToOm = R"("source": {"connection": "ct", "entity": "customer"},
                               "destination": {"connection": "om", "entity": "contact"})";
}  // namespace

TEST_CASE("a flow's ends are ones sync and serve can run: errors name the file and the path", "[workspace]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  std::vector<workspace::Problem> problems;
  auto refused = [&](const std::string& flow) {
    ws.write("t1/tenant.json", flow_tenant(flow));
    problems.clear();
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    return all_problems(problems);
  };
  auto loads = [&](const std::string& flow) {
    ws.write("t1/tenant.json", flow_tenant(flow));
    problems.clear();
    bool ok = workspace::load_tenant(ws.path(), "t1", &problems) != nullptr;
    INFO(all_problems(problems));
    CHECK(ok);
  };
  loads(kCtToOm);
  loads(R"("source": {"connection": "ct", "entity": "customer"}, "destination": {"connection": "om", "entity": "event"})");

  SECTION("a destination entity weft has no model for") {
    CHECK_THAT(refused(R"("source": {"connection": "ct", "entity": "customer"},
                          "destination": {"connection": "om", "entity": "contacts"})"),
               Catch::Contains("t1/tenant.json: $.flows.c.destination.entity: omnisend has no entity \"contacts\" "
                               "(known: contact, event); a flow with it must be \"enabled\": false"));
  }
  SECTION("a source entity weft cannot take") {
    CHECK_THAT(refused(R"("source": {"connection": "ct", "entity": "customers"},
                          "destination": {"connection": "om", "entity": "contact"})"),
               Catch::Contains("t1/tenant.json: $.flows.c.source.entity: commercetools has no entity \"customers\" "
                               "weft can take (known: customer, order)"));
  }
  SECTION("a source that is a destination-only system, a destination that is a source-only one") {
    std::string s = refused(R"("source": {"connection": "om", "entity": "contact"},
                               "destination": {"connection": "ct", "entity": "customer"})");
    CHECK_THAT(s, Catch::Contains("t1/tenant.json: $.flows.c.source.connection: weft cannot take records from omnisend yet"));
    CHECK_THAT(s, Catch::Contains("t1/tenant.json: $.flows.c.destination.connection: weft cannot deliver to commercetools yet"));
  }
  SECTION("a system or entity weft cannot deliver to yet is for a disabled flow (map, dry-run, test)") {
    CHECK_THAT(refused(R"("source": {"connection": "ct", "entity": "customer"},
                          "destination": {"connection": "vo", "entity": "contact"})"),
               Catch::Contains("$.flows.c.destination.connection: weft cannot deliver to voyado yet; a flow with it "
                               "must be \"enabled\": false"));
    loads(R"("enabled": false, "source": {"connection": "ct", "entity": "customer"},
             "destination": {"connection": "vo", "entity": "contact"})");
    // A product feed written before its connector exists.
    loads(R"("enabled": false, "source": {"connection": "ct", "entity": "product"},
             "destination": {"connection": "om", "entity": "product"})");
  }
  SECTION("records that come by webhook only: nothing to pull, and a connection that takes webhooks") {
    const std::string orders = R"("source": {"connection": "ct", "entity": "order"},
                                  "destination": {"connection": "om", "entity": "event"})";
    loads(orders);
    std::string s = refused(orders + R"(, "pull": {"every": "5m"}, "refresh_on_change": true)");
    CHECK_THAT(s, Catch::Contains("$.flows.c.pull: commercetools order records come by webhook only: weft cannot pull them"));
    CHECK_THAT(s, Catch::Contains("$.flows.c.refresh_on_change: commercetools order records come by webhook only"));
    ws.write("t1/tenant.json", flow_tenant(orders, connections(false)));
    problems.clear();
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    CHECK_THAT(all_problems(problems),
               Catch::Contains("$.flows.c.source.connection: commercetools order records come by webhook only: weft "
                               "cannot pull them, and connection ct takes no webhooks"));
  }
  SECTION("reconciliation needs a destination it can look records up in") {
    CHECK_THAT(refused(R"("source": {"connection": "ct", "entity": "customer"},
                          "destination": {"connection": "om", "entity": "event"}, "reconcile": {"every": "1d"})"),
               Catch::Contains("$.flows.c.reconcile: reconciliation compares with Omnisend contacts only yet, not "
                               "omnisend event"));
  }
}

TEST_CASE("secrets in tenant.json must be ${ENV_VAR} references", "[workspace][secrets]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  std::vector<workspace::Problem> problems;
  SECTION("references and a plain client_id load") {
    ws.write("t1/tenant.json", tenant_json(R"({"ct": {"system": "commercetools", "project": "acme-shop",
        "client_id": "acme-shop-client", "client_secret": "${ACME_CT_SECRET}", "webhook": {"hmac_secret": "${H}"}},
      "ct2": {"system": "commercetools", "project": "acme-shop", "client_id": "${ACME_CT_ID}",
        "client_secret": "${ACME_CT_SECRET}", "webhook": {"bearer_token": "${_B2}"}},
      "om": {"system": "omnisend", "api_key": "${OM_KEY}"}})"));
    CHECK(workspace::load_tenant(ws.path(), "t1", &problems));
    CHECK(all_problems(problems).empty());
  }
  SECTION("a secret written out is refused with a readable message that does not repeat it") {
    ws.write("t1/tenant.json", tenant_json(R"({"ct": {"system": "commercetools", "client_secret": "hunter2",
        "webhook": {"hmac_secret": "whsec_123", "bearer_token": "Bearer ${TOKEN}"}},
      "om": {"system": "omnisend", "api_key": "${OM KEY}"}})"));
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    std::string s = all_problems(problems);
    const std::string why = ": must be a ${ENV_VAR} reference, not the secret itself";
    CHECK_THAT(s, Catch::Contains("t1/tenant.json: $.connections.ct.client_secret" + why));
    CHECK_THAT(s, Catch::Contains("t1/tenant.json: $.connections.ct.webhook.hmac_secret" + why));
    CHECK_THAT(s, Catch::Contains("t1/tenant.json: $.connections.ct.webhook.bearer_token" + why));
    CHECK_THAT(s, Catch::Contains("t1/tenant.json: $.connections.om.api_key" + why));
    CHECK_THAT(s, !Catch::Contains("hunter2"));
    CHECK_THAT(s, !Catch::Contains("does not match the pattern"));
  }
}

TEST_CASE("a pull or reconcile block that would never run is refused, a reconcile window alone is not",
          "[workspace][schedule]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  std::vector<workspace::Problem> problems;
  auto load = [&](const std::string& extra) {
    ws.write("t1/tenant.json", flow_tenant(kCtToOm + ", " + extra));
    problems.clear();
    return workspace::load_tenant(ws.path(), "t1", &problems) != nullptr;
  };
  CHECK_FALSE(load(R"("pull": {})"));
  CHECK_THAT(all_problems(problems),
             Catch::Contains("t1/tenant.json: $.flows.c.pull: needs every (\"5m\") or cron (\"*/5 * * * *\"): "
                             "without one weft serve never pulls"));
  CHECK_FALSE(load(R"("reconcile": {})"));
  CHECK_THAT(all_problems(problems), Catch::Contains("t1/tenant.json: $.flows.c.reconcile: sets nothing"));
  CHECK_FALSE(load(R"("pull": {"timezone": "Europe/Stockholm"})"));  // a time zone is no schedule
  CHECK_THAT(all_problems(problems), Catch::Contains("$.flows.c.pull: schedule: needs every"));
  // The README's reconcile started only through the admin API: its window is the point.
  CHECK(load(R"("reconcile": {"window": "30d"})"));
  CHECK(load(R"("pull": {"every": "5m"}, "reconcile": {"cron": "0 3 * * *", "window": "2d"})"));
  CHECK(all_problems(problems).empty());
}

TEST_CASE("numbers that would wrap or fall back silently are refused, with their path", "[workspace]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  std::vector<workspace::Problem> problems;
  auto refused = [&](const std::string& extra, const std::string& om_extra = "") {
    std::string conns = connections();
    const std::string key = R"("api_key": "${OM_KEY}")";
    if (!om_extra.empty()) conns.replace(conns.find(key), key.size(), key + ", " + om_extra);
    ws.write("t1/tenant.json", flow_tenant(kCtToOm + (extra.empty() ? "" : ", " + extra), conns));
    problems.clear();
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    return all_problems(problems);
  };
  CHECK_THAT(refused(R"("retry": {"max_attempts": 3000000000})"),
             Catch::Contains("t1/tenant.json: $.flows.c.retry.max_attempts: must be at most 1000\n"));
  CHECK_THAT(refused(R"("retry": {"max_attempts": 1001})"), Catch::Contains("$.flows.c.retry.max_attempts: "));
  CHECK_THAT(refused(R"("retry": {"max_age": "99999999999999999999d"})"),
             Catch::Contains("t1/tenant.json: $.flows.c.retry.max_age: \"99999999999999999999d\" is not a duration "
                             "weft can use: a whole number of ms, s, m, h or d, at most 36500d"));
  CHECK_THAT(refused(R"("retry": {"max_age": "36501d"})"), Catch::Contains("$.flows.c.retry.max_age: \"36501d\" is not"));
  CHECK_THAT(refused(R"("reconcile": {"window": "999999999999999d"})"),
             Catch::Contains("$.flows.c.reconcile.window: \"999999999999999d\" is not a duration"));
  CHECK_THAT(refused(R"("retry": {"base_ms": 1000, "max_ms": 500})"),
             Catch::Contains("t1/tenant.json: $.flows.c.retry.base_ms: 1000 is more than max_ms (500)"));
  CHECK_THAT(refused(R"("retry": {"base_ms": 600000})"),
             Catch::Contains("$.flows.c.retry.base_ms: 600000 is more than max_ms (300000, the default)"));
  CHECK_THAT(refused(R"("retry": {"max_ms": 86400001})"), Catch::Contains("$.flows.c.retry.max_ms: "));
  CHECK_THAT(refused(R"("backfill": {"max_backlog": 10000000000})"), Catch::Contains("$.flows.c.backfill.max_backlog: "));
  CHECK_THAT(refused("", R"("rate_limit": {"requests": 3000000000, "per_seconds": 60})"),
             Catch::Contains("t1/tenant.json: $.connections.om.rate_limit.requests: must be at most 1000000\n"));
  CHECK_THAT(refused("", R"("rate_limit": {"requests": 10, "per_seconds": 0.0001})"),
             Catch::Contains("$.connections.om.rate_limit.per_seconds: must be at least 0.001\n"));
  // At the limits: fine.
  ws.write("t1/tenant.json", flow_tenant(kCtToOm + R"(, "retry": {"max_attempts": 1000, "base_ms": 500, "max_ms": 500,
      "max_age": "36500d"}, "reconcile": {"window": "5000d"})"));
  problems.clear();
  CHECK(workspace::load_tenant(ws.path(), "t1", &problems));
  CHECK(all_problems(problems).empty());
}

TEST_CASE("a webhook needs exactly one way to authenticate, on a system weft takes webhooks from",
          "[workspace][webhook]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  std::vector<workspace::Problem> problems;
  auto load = [&](const std::string& ct_webhook, const std::string& om_extra = "") {
    ws.write("t1/tenant.json", tenant_json(R"({"ct": {"system": "commercetools", "project": "p", "client_id": "id",
        "client_secret": "${CT_SECRET}", "webhook": )" + ct_webhook + R"(},
      "om": {"system": "omnisend", "api_key": "${OM_KEY}")" + om_extra + "}}"));
    problems.clear();
    return workspace::load_tenant(ws.path(), "t1", &problems) != nullptr;
  };
  CHECK_FALSE(load("{}"));
  CHECK_THAT(all_problems(problems),
             Catch::Contains("t1/tenant.json: $.connections.ct.webhook: needs hmac_secret or bearer_token (or "
                             "\"unauthenticated\": true, for local tests only): without one every webhook is refused"));
  CHECK_FALSE(load(R"({"unauthenticated": false, "max_body_bytes": 1000})"));
  CHECK_THAT(all_problems(problems), Catch::Contains("$.connections.ct.webhook: needs hmac_secret or bearer_token"));
  CHECK_FALSE(load(R"({"hmac_secret": "${H}", "bearer_token": "${B}"})"));
  CHECK_THAT(all_problems(problems),
             Catch::Contains("$.connections.ct.webhook: has both hmac_secret and bearer_token: give one"));
  CHECK_FALSE(load(R"({"bearer_token": "${B}", "unauthenticated": true})"));
  CHECK_THAT(all_problems(problems),
             Catch::Contains("$.connections.ct.webhook.unauthenticated: is true beside bearer_token: give one"));
  CHECK_FALSE(load(R"({"bearer_token": "${B}", "signature_header": "X-Sig"})"));
  CHECK_THAT(all_problems(problems),
             Catch::Contains("$.connections.ct.webhook.signature_header: applies to hmac_secret only"));
  CHECK_FALSE(load(R"({"hmac_secret": "${H}"})", R"(, "webhook": {"bearer_token": "${B}"})"));
  CHECK_THAT(all_problems(problems),
             Catch::Contains("$.connections.om.webhook: weft takes webhooks from commercetools connections only, "
                             "not omnisend"));
  // One way each: fine.
  CHECK(load(R"({"hmac_secret": "${H}", "signature_header": "X-Sig", "unauthenticated": false})"));
  CHECK(load(R"({"bearer_token": "${B}", "max_body_bytes": 1000})"));
  CHECK(load(R"({"unauthenticated": true})"));
  CHECK(all_problems(problems).empty());
}

TEST_CASE("each system's connection needs the settings its connector cannot work without", "[workspace]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  std::vector<workspace::Problem> problems;
  ws.write("t1/tenant.json", tenant_json(R"({"ct": {"system": "commercetools", "client_id": "id"},
      "om": {"system": "omnisend", "api_url": "https://api.omnisend.com/v3"}})"));
  CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
  std::string s = all_problems(problems);
  CHECK_THAT(s, Catch::Contains("t1/tenant.json: $.connections.ct: \"project\" is required for commercetools connections"));
  CHECK_THAT(s, Catch::Contains("t1/tenant.json: $.connections.ct: \"client_secret\" is required for commercetools "
                                "connections"));
  CHECK_THAT(s, !Catch::Contains("\"client_id\" is required"));
  CHECK_THAT(s, Catch::Contains("t1/tenant.json: $.connections.om: \"api_key\" is required for omnisend connections"));
  // A system without a connector yet has nothing required (a disabled flow may map to it).
  problems.clear();
  ws.write("t1/tenant.json", R"({"tenant": "t1", "connections": {"ct": {"system": "commercetools", "project": "p",
      "client_id": "id", "client_secret": "${CT_SECRET}"}, "vo": {"system": "voyado"}},
    "flows": {"c": {"enabled": false, "source": {"connection": "ct", "entity": "customer"},
                    "destination": {"connection": "vo", "entity": "contact"}, "script": "c.lua"}}})");
  CHECK(workspace::load_tenant(ws.path(), "t1", &problems));
  CHECK(all_problems(problems).empty());
}

TEST_CASE("api_url and auth_url are read as the HTTP client reads them", "[workspace]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  std::vector<workspace::Problem> problems;
  auto with_urls = [&](const std::string& ct_auth, const std::string& om_api) {
    ws.write("t1/tenant.json", tenant_json(R"({"ct": {"system": "commercetools", "project": "p", "client_id": "id",
        "client_secret": "${CT_SECRET}", "auth_url": ")" + ct_auth + R"("},
      "om": {"system": "omnisend", "api_key": "${OM_KEY}", "api_url": ")" + om_api + R"("}})"));
    problems.clear();
    return workspace::load_tenant(ws.path(), "t1", &problems) != nullptr;
  };
  // The schema's pattern takes both; the client refuses both.
  CHECK_FALSE(with_urls("https:///", "https://api.omnisend.com/v3?x=1"));
  std::string s = all_problems(problems);
  CHECK_THAT(s, Catch::Contains("t1/tenant.json: $.connections.ct.auth_url: is not a URL weft can call"));
  CHECK_THAT(s, Catch::Contains("t1/tenant.json: $.connections.om.api_url: is not a URL weft can call"));
  CHECK_FALSE(with_urls("https://auth.example.com#x", "https://api.omnisend.com/v3"));
  CHECK_THAT(all_problems(problems), Catch::Contains("$.connections.ct.auth_url: is not a URL weft can call"));
  // A port, a trailing slash, plain http (fakes), and ${ENV_VAR}s (read when used) are fine.
  CHECK(with_urls("http://127.0.0.1:8080", "https://api.omnisend.com/v3/"));
  CHECK(with_urls("${CT_AUTH_URL}", "${OM_URL}"));
  CHECK(all_problems(problems).empty());
}

TEST_CASE("connections refuse unknown fields", "[workspace]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  ws.write("t1/tenant.json", tenant_json(R"({"ct": {"system": "commercetools", "api_urll": "https://x"},
      "om": {"system": "omnisend"}})"));
  std::vector<workspace::Problem> problems;
  CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
  CHECK_THAT(all_problems(problems), Catch::Contains("api_urll"));
}

TEST_CASE("a flow script must stay inside the tenant folder", "[workspace]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  ws.write("outside.lua", weft::testing::kBasicScript);
  const std::string conns = R"({"ct": {"system": "commercetools", "project": "p", "client_id": "id", "client_secret": "${CT_SECRET}"},
    "om": {"system": "omnisend", "api_key": "${OM_KEY}"}})";
  std::vector<workspace::Problem> problems;
  SECTION("absolute path: refused by the schema") {
    ws.write("t1/tenant.json", tenant_json(conns, (ws.path() / "outside.lua").string()));
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    CHECK_THAT(all_problems(problems), Catch::Contains("t1/tenant.json: $.flows.c.script"));
  }
  SECTION("..") {
    ws.write("t1/tenant.json", tenant_json(conns, "../outside.lua"));
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    CHECK_THAT(all_problems(problems), Catch::Contains("$.flows.c.script: must stay inside the tenant folder"));
  }
  SECTION("a symlink that leads out") {
    std::filesystem::create_directory_symlink(ws.path(), ws.path() / "t1/up");
    ws.write("t1/tenant.json", tenant_json(conns, "up/outside.lua"));
    CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
    CHECK_THAT(all_problems(problems), Catch::Contains("$.flows.c.script: must stay inside the tenant folder"));
  }
  SECTION("a symlink inside the folder, and a subfolder, are fine") {
    ws.write("t1/flows/c.lua", weft::testing::kBasicScript);
    std::filesystem::create_symlink("flows/c.lua", ws.path() / "t1/link.lua");
    ws.write("t1/tenant.json", tenant_json(conns, "link.lua"));
    CHECK(workspace::load_tenant(ws.path(), "t1", &problems));
    ws.write("t1/tenant.json", tenant_json(conns, "./flows/c.lua"));
    CHECK(workspace::load_tenant(ws.path(), "t1", &problems));
    CHECK(all_problems(problems).empty());
  }
}

TEST_CASE("fixtures nested up to 64 levels load and pass", "[workspace][fixtures]") {
  TempDir ws;
  write_basic_tenant(ws, "return { map = function(rec) return { deep = rec.deep } end }");
  auto nested = [](int levels) {  // {"deep":[[...]]}: `levels` objects and arrays in all
    return "{\"deep\":" + std::string(levels - 1, '[') + std::string(levels - 1, ']') + "}";
  };
  ws.write("t1/tests/deep.json", R"({"name": "deep", "flow": "c", "input": )" + nested(64) +
                                     R"(, "expect": )" + nested(64) + "}");
  std::vector<workspace::Problem> problems;
  auto t = workspace::load_tenant(ws.path(), "t1", &problems);
  INFO(all_problems(problems));
  REQUIRE(t);
  std::string err;
  auto box = script::Sandbox::create(t->code, &err);
  REQUIRE(box);
  auto results = workspace::run_fixtures(*t, *box);
  REQUIRE(results.size() == 1);
  INFO(results[0].detail);
  CHECK(results[0].passed);

  // One level more is refused when the file is read, with the file named: no exception.
  ws.write("t1/tests/deep.json", R"({"name": "deep", "flow": "c", "input": )" + nested(65) + R"(, "expect_skip": true})");
  problems.clear();
  CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
  CHECK_THAT(all_problems(problems), Catch::Contains("t1/tests/deep.json:1: invalid JSON"));
}

TEST_CASE("problems_from_error turns a sandbox error into file:line problems", "[workspace]") {
  auto ps = workspace::problems_from_error("t1/c.lua:4: '=' expected near 'end'\nlib/util.lua:2: boom\n", "/ws/t1");
  REQUIRE(ps.size() == 2);
  CHECK(ps[0].file == "t1/c.lua");
  CHECK(ps[0].line == 4);
  CHECK(ps[0].message == "'=' expected near 'end'");
  CHECK(ps[1].file == "lib/util.lua");
  CHECK(ps[1].line == 2);
  // A line number out of range (text a script raised) is no line number, and no crash.
  auto huge = workspace::problems_from_error("t1/c.lua:99999999999: y\n", "/ws/t1");
  REQUIRE(huge.size() == 1);
  CHECK(huge[0].file == "?");
  CHECK(huge[0].message == "t1/c.lua:99999999999: y");
  auto none = workspace::problems_from_error("", "/ws/t1");
  REQUIRE(none.size() == 1);  // a failure is never reported as no problem
}

TEST_CASE("compile errors are reported as file:line", "[workspace]") {
  TempDir ws;
  write_basic_tenant(ws, "local M = {}\nfunction M.map(rec)\n  return {\nend\nreturn M\n");
  std::vector<workspace::Problem> problems;
  auto t = workspace::load_tenant(ws.path(), "t1", &problems);
  REQUIRE(t);
  auto ps = workspace::compile_check(*t);
  REQUIRE(ps.size() == 1);
  CHECK(ps[0].file == "t1/c.lua");
  CHECK(ps[0].line == 4);
}

TEST_CASE("fixtures pass, fail with a diff, and check rejections and skips", "[workspace][fixtures]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  ws.write("t1/tests/1-pass.json", kCase);
  ws.write("t1/tests/2-diff.json", R"({"name": "wrong expectation", "flow": "c",
    "input": {"id": "1", "email": "b@example.com", "phone": "070-123 45 67"},
    "expect": {"identifiers": [{"type": "email", "id": "B@example.com"}]}})");
  ws.write("t1/tests/3-reject.json", R"({"name": "no email", "flow": "c", "input": {"id": "1"},
    "expect_reject": "has no email"})");
  ws.write("t1/tests/4-reject-wrong.json", R"({"name": "reject reason differs", "flow": "c", "input": {"id": "1"},
    "expect_reject": "something else"})");
  ws.write("t1/tests/5-skip.json", R"({"name": "skip", "flow": "c", "input": {"email": "a@b.se", "skip": true},
    "expect_skip": true})");
  ws.write("t1/tests/6-skip-wrong.json", R"({"name": "expected skip", "flow": "c", "input": {"email": "a@b.se"},
    "expect_skip": true})");
  std::vector<workspace::Problem> problems;
  auto t = workspace::load_tenant(ws.path(), "t1", &problems);
  REQUIRE(t);
  std::string err;
  auto box = script::Sandbox::create(t->code, &err);
  REQUIRE(box);
  auto results = workspace::run_fixtures(*t, *box);
  REQUIRE(results.size() == 6);
  CHECK(results[0].passed);
  CHECK_FALSE(results[1].passed);
  CHECK_THAT(results[1].detail, Catch::Contains("$.identifiers[0].id: expected \"B@example.com\", got \"b@example.com\""));
  CHECK_THAT(results[1].detail, Catch::Contains("$.identifiers[1]: unexpected"));
  CHECK(results[2].passed);
  CHECK_FALSE(results[3].passed);
  CHECK_THAT(results[3].detail, Catch::Contains("does not contain \"something else\""));
  CHECK(results[4].passed);
  CHECK_FALSE(results[5].passed);
  CHECK_THAT(results[5].detail, Catch::Contains("expected a skip"));
}

TEST_CASE("a fixture with a number records cannot have is refused, as map refuses the record",
          "[workspace][fixtures]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  ws.write("t1/tests/big.json", R"({"name": "big id", "flow": "c",
    "input": {"id": 123456789012345678901234, "email": "a@b.se"}, "expect_skip": true})");
  std::vector<workspace::Problem> problems;
  CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
  CHECK_THAT(all_problems(problems), Catch::Contains("t1/tests/big.json: $: a number is out of range"));
  problems.clear();
  ws.write("t1/tests/big.json", R"({"name": "big id", "flow": "c",
    "input": {"id": 1e400, "email": "a@b.se"}, "expect_skip": true})");
  CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
  CHECK_THAT(all_problems(problems), Catch::Contains("a number is out of range"));
}

TEST_CASE("json_diff names paths and treats 1 and 1.0 as equal", "[fixtures]") {
  auto d = workspace::json_diff(json::parse(R"({"a": 1, "b": [1, 2], "c": {"x": "y"}})"),
                                json::parse(R"({"a": 1.0, "b": [1], "c": {"x": "z"}, "d": true})"));
  CHECK_THAT(d, Catch::Contains("$.b[1]: missing (expected 2)"));
  CHECK_THAT(d, Catch::Contains("$.c.x: expected \"y\", got \"z\""));
  CHECK_THAT(d, Catch::Contains("$.d: unexpected true"));
  CHECK_THAT(d, !Catch::Contains("$.a"));
  CHECK(workspace::json_diff(json::parse("[1,{\"a\":null}]"), json::parse("[1,{\"a\":null}]")).empty());
  CHECK_FALSE(workspace::json_diff(json::parse("{\"a\":null}"), json::parse("{}")).empty());
}

TEST_CASE("M.owners and M.match name destination fields: a typo is refused, not left to the source",
          "[workspace]") {
  TempDir ws;
  auto build = [&](const std::string& decl) {
    write_basic_tenant(ws, "local M = {}\n" + decl +
                               "\nfunction M.map(rec) return { identifiers = { { type = 'email', id = 'a@b.se' } } } end\n"
                               "return M\n");
    std::vector<workspace::Problem> problems;
    auto v = workspace::build_version(ws.path(), "t1", false, &problems);
    return v ? std::string("ok") : all_problems(problems);
  };
  CHECK(build("M.owners = { ['consent.email'] = 'destination', consent_sms = nil, firstName = 'latest',\n"
              "  ['customProperties.tier'] = 'flag', ['identifiers[phone].channels.sms.status'] = 'destination',\n"
              "  tags = 'source' }\n"
              "M.match = { 'externalId', 'email', 'phone', 'customProperties.customerNumber' }") == "ok");
  std::string typo = build("M.owners = { ['consent.emial'] = 'destination' }");
  CHECK_THAT(typo, Catch::Contains("t1/c.lua"));
  CHECK_THAT(typo, Catch::Contains("M.owners[\"consent.emial\"]: not a field of omnisend contact"));
  CHECK_THAT(typo, Catch::Contains("consent.email, consent.sms"));  // what it could have been
  CHECK_THAT(build("M.owners = { firstname = 'latest' }"), Catch::Contains("M.owners[\"firstname\"]"));
  CHECK_THAT(build("M.owners = { ['firstName.x'] = 'latest' }"), Catch::Contains("not a field"));
  CHECK_THAT(build("M.owners = { ['identifiers[email].channels.email.stat'] = 'destination' }"),
             Catch::Contains("not a field"));
  CHECK_THAT(build("M.match = { 'externalId', 'emial' }"), Catch::Contains("M.match: \"emial\" is not a field"));
  // A key without a version would stop each record at its first version.
  CHECK_THAT(build("M.key = function(rec) return rec.id end"), Catch::Contains("M.key needs M.version"));
  CHECK(build("M.key = function(rec) return rec.id end\nM.version = function(rec) return rec.version end") == "ok");
}

TEST_CASE("reload swaps in a good version and keeps the last good one when the new one is broken",
          "[workspace][reload]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  ws.write("t1/tests/a.json", kCase);
  workspace::Registry reg(ws.path());
  auto first = reg.reload("t1");
  REQUIRE(first.ok);
  auto v1 = reg.active("t1");
  REQUIRE(v1);
  CHECK(v1->version == first.version);

  auto map_email = [&](const std::string& email) {
    auto v = reg.active("t1");
    std::string err;
    auto box = script::Sandbox::create(v->code, &err);
    REQUIRE(box);
    return box->map("c", json::parse("{\"email\":\"" + email + "\"}"), {}).payload;
  };
  CHECK(map_email("X@Y.se") == R"({"identifiers":[{"id":"x@y.se","type":"email"}]})");

  SECTION("a syntax error is refused with file:line") {
    ws.write("t1/c.lua", "local M = {}\nfunction M.map(rec) return {} \nreturn M\n");
    auto r = reg.reload("t1");
    CHECK_FALSE(r.ok);
    CHECK(r.version == v1->version);
    REQUIRE_FALSE(r.problems.empty());
    CHECK(r.problems[0].file == "t1/c.lua");
    CHECK(r.problems[0].line > 0);
    CHECK(reg.active("t1")->version == v1->version);
    CHECK_FALSE(reg.last_error("t1").empty());
    CHECK(map_email("X@Y.se") == R"({"identifiers":[{"id":"x@y.se","type":"email"}]})");
  }
  SECTION("a version that fails its own fixtures is refused") {
    ws.write("t1/c.lua", "local M = {}\nfunction M.map(rec) return { identifiers = { { type = 'email', id = rec.email } } } end\nreturn M\n");
    auto r = reg.reload("t1");
    CHECK_FALSE(r.ok);
    CHECK_THAT(all_problems(r.problems), Catch::Contains("fixture \"email lowercased\" failed"));
    CHECK(reg.active("t1")->version == v1->version);
  }
  SECTION("an invalid tenant.json is refused") {
    ws.write("t1/tenant.json", "{\"tenant\": \"t1\"}");
    auto r = reg.reload("t1");
    CHECK_FALSE(r.ok);
    CHECK(reg.active("t1")->version == v1->version);
  }
  SECTION("a good change is swapped in with a new version id; holders of the old one keep it") {
    ws.write("t1/c.lua", std::string(weft::testing::kBasicScript) + "-- a comment changes the content hash\n");
    auto r = reg.reload("t1");
    CHECK(r.ok);
    CHECK(r.version != v1->version);
    CHECK(reg.active("t1")->version == r.version);
    CHECK(reg.last_error("t1").empty());
    // Results are stamped with the version that produced them.
    std::string err;
    auto box = script::Sandbox::create(reg.active("t1")->code, &err);
    REQUIRE(box);
    CHECK(box->map("c", json::parse(R"({"email":"a@b.se"})"), {}).script_version == r.version);
    auto old_box = script::Sandbox::create(v1->code, &err);
    REQUIRE(old_box);
    CHECK(old_box->map("c", json::parse(R"({"email":"a@b.se"})"), {}).script_version == v1->version);
    CHECK(v1->code.flows.at("c").code == weft::testing::kBasicScript);  // the old snapshot is untouched
  }
  SECTION("a tenant whose folder is removed is dropped") {
    std::filesystem::remove_all(ws.path() / "t1");
    reg.reload_all();
    CHECK_FALSE(reg.active("t1"));
  }
}

TEST_CASE("overlapping reloads of a tenant finish in order: the newest files win", "[workspace][reload]") {
  TempDir ws;
  // The old version's top level takes 0.4 s of CPU; the new one loads at once.
  const std::string slow = "local t = os.clock()\nwhile os.clock() - t < 0.4 do end\n" +
                           std::string(weft::testing::kBasicScript);
  const std::string fast = std::string(weft::testing::kBasicScript) + "-- new\n";
  write_basic_tenant(ws, slow);
  ws.write("t1/tenant.json", R"({"tenant": "t1", "limits": {"cpu_ms": 5000},
    "connections": {"ct": {"system": "commercetools", "project": "p", "client_id": "id", "client_secret": "${CT_SECRET}"},
                    "om": {"system": "omnisend", "api_key": "${OM_KEY}"}},
    "flows": {"c": {"source": {"connection": "ct", "entity": "customer"},
                    "destination": {"connection": "om", "entity": "contact"}, "script": "c.lua"}}})");
  workspace::Registry reg(ws.path());
  std::thread first([&] { reg.reload("t1"); });  // reads the slow version, then builds it
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  ws.write("t1/c.lua", fast);
  auto second = reg.reload("t1");
  first.join();
  CHECK(second.ok);
  REQUIRE(reg.active("t1"));
  CHECK(reg.active("t1")->code.flows.at("c").code == fast);
  CHECK(reg.active("t1")->version == second.version);
}

TEST_CASE("a lib change alters the version id", "[workspace][reload]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  ws.write("lib/h.lua", "return {}");
  std::vector<workspace::Problem> problems;
  auto a = workspace::load_tenant(ws.path(), "t1", &problems);
  ws.write("lib/h.lua", "return { x = 1 }");
  auto b = workspace::load_tenant(ws.path(), "t1", &problems);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->version != b->version);
  auto c = workspace::load_tenant(ws.path(), "t1", &problems);
  CHECK(b->version == c->version);
}

TEST_CASE("secrets resolve from the environment and are redacted", "[workspace][secrets]") {
  setenv("WEFT_TEST_SECRET", "s3cr3t-value", 1);
  unsetenv("WEFT_TEST_UNSET");
  workspace::Secrets secrets;
  std::string missing;
  auto v = secrets.resolve("Bearer ${WEFT_TEST_SECRET}", &missing);
  REQUIRE(v);
  CHECK(*v == "Bearer s3cr3t-value");
  CHECK(secrets.redact("header: Bearer s3cr3t-value; again s3cr3t-value") == "header: Bearer ***; again ***");
  CHECK_FALSE(secrets.resolve("${WEFT_TEST_UNSET}", &missing));
  CHECK(missing == "WEFT_TEST_UNSET");
  // Set but empty counts as not configured: an empty key would only be refused by the API.
  setenv("WEFT_TEST_EMPTY", "", 1);
  bool empty = false;
  CHECK_FALSE(secrets.resolve("Bearer ${WEFT_TEST_EMPTY}", &missing, &empty));
  CHECK(missing == "WEFT_TEST_EMPTY");
  CHECK(empty);
  CHECK_FALSE(secrets.resolve("${WEFT_TEST_UNSET}", &missing, &empty));
  CHECK_FALSE(empty);
  CHECK(workspace::is_secret_ref("${X}"));
  CHECK_FALSE(workspace::is_secret_ref("plain"));
}

TEST_CASE("schema patterns: checked where the schema says, with a message naming the pattern",
          "[workspace][schema]") {
  const auto& contact = workspace::Schema::get("destinations/omnisend.contact.schema.json");
  auto issues = [&](const char* doc) { return contact.validate(json::parse(doc)); };
  const char* ok = R"({"identifiers": [{"type": "phone", "id": "+46701234567",
      "channels": {"sms": {"status": "subscribed", "statusDate": "2024-05-01T10:00:00Z"}}}],
      "countryCode": "SE", "birthdate": "1990-02-03"})";
  CHECK(issues(ok).empty());

  // Each pattern is checked in its own place: top level, under a $ref'd definition, and in a
  // conditional ("then") branch.
  auto bad = issues(R"({"identifiers": [{"type": "phone", "id": "0701234567",
      "channels": {"sms": {"status": "subscribed", "statusDate": "yesterday"}}}],
      "countryCode": "SEX", "birthdate": "x1990-02-03"})");
  std::map<std::string, std::string> by_path;
  for (const auto& i : bad) by_path[i.path] = i.message;
  CHECK(by_path["$.countryCode"] == "does not match the pattern ^[A-Z]{2}$");
  CHECK(by_path["$.birthdate"] == "does not match the pattern ^[0-9]{4}-[0-9]{2}-[0-9]{2}$");
  CHECK(by_path["$.identifiers[0].id"] == "does not match the pattern ^\\+[1-9][0-9]{6,14}$");
  CHECK(by_path.count("$.identifiers[0].channels.sms.statusDate") == 1);
  // The phone pattern applies to phone identifiers only (the "if"); email ids are free text.
  CHECK(issues(R"({"identifiers": [{"type": "email", "id": "a@b.se"}]})").empty());
  // A match must cover what the anchors say: text around a matching part is refused.
  const std::string email = R"({"identifiers": [{"type": "email", "id": "a@b.se"}], "countryCode": )";
  CHECK(issues((email + R"("SE"})").c_str()).empty());
  CHECK(issues((email + R"("SE "})").c_str()).size() == 1);
  CHECK(issues((email + R"(" SE"})").c_str()).size() == 1);
  // A value too long to run a regex over (std::regex recurses per character) is refused
  // with its length, instead of overflowing the stack.
  auto huge = issues(("{\"identifiers\": [{\"type\": \"email\", \"id\": \"a@b.se\", \"channels\": {\"email\": "
                      "{\"status\": \"subscribed\", \"statusDate\": \"2024-01-01T" + std::string(100000, '1') +
                      "Z\"}}}]}").c_str());
  REQUIRE(huge.size() == 1);
  CHECK(huge[0].path == "$.identifiers[0].channels.email.statusDate");
  CHECK(huge[0].message.find("is 100012 characters long, more than the 2048") == 0);
  // Non-strings are the "type" keyword's business, not the pattern's.
  auto typed = issues((email + "46}").c_str());
  REQUIRE(typed.size() == 1);
  CHECK(typed[0].message.find("pattern") == std::string::npos);
}

TEST_CASE("schema errors say what was found and what is allowed", "[workspace][schema]") {
  const auto& contact = workspace::Schema::get("destinations/omnisend.contact.schema.json");
  auto by_path = [&](const char* doc) {
    std::map<std::string, std::string> out;
    for (const auto& i : contact.validate(json::parse(doc))) out[i.path] = i.message;
    return out;
  };
  // An enum names the value and the allowed ones, under a $ref'd definition and in an array.
  auto bad = by_path(R"({"identifiers": [{"type": "email", "id": "a@b.se",
      "channels": {"email": {"status": "subscribd"}}}], "firstName": 5, "tags": ["a", 7]})");
  CHECK(bad["$.identifiers[0].channels.email.status"] ==
        R"("subscribd" is not one of "subscribed", "unsubscribed", "nonSubscribed")");
  // A type error names the kinds only: the value could be a secret written in place.
  CHECK(bad["$.firstName"] == "must be a string, not a whole number");
  CHECK(bad["$.tags[1]"] == "must be a string, not a whole number");

  // tenant.json: an unknown property lists the known ones; a long value is cut.
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  ws.write("t1/tenant.json", tenant_json(R"({"ct": {"system": "commercetools", "api_urll": "https://x"},
      "om": {"system": "omnisend", "api_key": 12345}})"));
  std::vector<workspace::Problem> problems;
  CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
  std::string all = all_problems(problems);
  CHECK_THAT(all, Catch::Contains(R"(unknown property "api_urll" (known: system, )"));
  CHECK_THAT(all, Catch::Contains("$.connections.om.api_key: must be a string, not a whole number"));
  CHECK_THAT(all, !Catch::Contains("12345"));
  // An enum shows a scalar it refuses (cut, whole characters only), never an object's content.
  ws.write("t1/tenant.json", tenant_json(R"({"ct": {"system": {"api_key": "SECRETVALUE123"}},
      "om": {"system": ")" + std::string(55, 'a') + "\u00e9\u00e9\u00e9" + R"("}})"));
  problems.clear();
  CHECK_FALSE(workspace::load_tenant(ws.path(), "t1", &problems));
  all = all_problems(problems);
  CHECK_THAT(all, !Catch::Contains("SECRETVALUE123"));
  CHECK_THAT(all, Catch::Contains("$.connections.ct.system: an object is not one of"));
  CHECK_THAT(all, Catch::Contains("\"" + std::string(55, 'a') + "... is not one of"));  // not half an \u00e9
}

TEST_CASE("schema patterns: only a top-level ^ without a top-level | anchors the match", "[schema]") {
  using workspace::detail::anchored_at_start;
  CHECK(anchored_at_start("^[A-Z]{2}$"));
  CHECK(anchored_at_start("^(https?://[^\\s]+|\\$\\{[A-Z]+\\})$"));  // '|' inside a group
  CHECK(anchored_at_start("^[|]x"));                                   // '|' inside a class
  CHECK(anchored_at_start("^a\\|b"));                                  // an escaped '|'
  CHECK(anchored_at_start("^[\\]|]x"));                                // an escaped ']' in a class
  CHECK_FALSE(anchored_at_start("^a|b"));                              // "xb" matches at 1
  CHECK_FALSE(anchored_at_start("^(a)|b"));
  CHECK_FALSE(anchored_at_start("[A-Z]{2}$"));
  CHECK_FALSE(anchored_at_start(""));
}
