// weft serve end to end: the real binary on 127.0.0.1 with the fake APIs. Webhooks to
// Omnisend with the correlation id traced, every bad input refused with nothing stored,
// authentication, the admin API's token, and a graceful stop under load losing nothing.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <set>

#include "engine/http/webhook.h"
#include "engine/serve/spool.h"
#include "engine/store/store.h"
#include "engine/util/time.h"
#include "tests/serve_util.h"

using namespace weft::testing;
namespace json = boost::json;

namespace {

std::string message(int i, int64_t version = 1, const std::string& msg_id = "") {
  return json::serialize(
      customer_created(serve_customer(i, version), msg_id.empty() ? "msg-" + std::to_string(i) + "-" + std::to_string(version) : msg_id));
}


// `n` threads post new customers' webhooks until stop(); acked() is what got its 202.
class Senders {
 public:
  Senders(ServeWorld& w, int n) {
    for (int t = 0; t < n; ++t)
      threads_.emplace_back([this, &w] {
        while (go_) {
          int i = next_++;
          auto r = w.post_webhook(message(i));
          if (r && r->status == 202) {
            std::lock_guard<std::mutex> lock(mu_);
            acked_.insert(i);
          }
        }
      });
  }
  ~Senders() { stop(); }
  void stop() {
    go_ = false;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  const std::set<int>& acked() const { return acked_; }
  size_t acked_count() {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_.size();
  }

 private:
  std::atomic<bool> go_{true};
  std::atomic<int> next_{0};
  std::mutex mu_;
  std::set<int> acked_;
  std::vector<std::thread> threads_;
};

// After a restart, every acknowledged record reaches Omnisend, none out of order.
void check_all_delivered(ServeWorld& w, const std::set<int>& acked) {
  w.start();
  w.wait_for_contacts(acked, 60000);  // the missing ones are named below
  for (int i : acked) {
    INFO(i);
    CHECK(w.om.contact_by_email("c" + std::to_string(i) + "@x.se").has_value());
  }
  CHECK(w.om.order_violations() == 0);
  CHECK(w.stop() == 0);
}

}  // namespace

TEST_CASE("serve: a webhook reaches Omnisend, and its correlation id traces it", "[serve]") {
  ServeWorld w;
  w.start();
  auto r = w.post_webhook(message(1), {{"X-Correlation-ID", "order-flow-123"}});
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 202);
  CHECK(r->get_header_value("X-Correlation-ID") == "order-flow-123");
  json::value body = json::parse(r->body);
  CHECK(body.at("accepted").as_array().size() == 1);
  CHECK(body.at("accepted").at(0) == "msg-1-1");

  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_by_email("c1@x.se").has_value(); }));
  // The trace shows the record's path in order, ending with the delivery.
  json::value trace;
  REQUIRE(ServeWorld::wait_for([&] {
    trace = w.admin_json("/api/trace/order-flow-123");
    auto* ev = trace.as_object().if_contains("events");
    return ev && !ev->as_array().empty() && ev->as_array().back().at("stage") == "delivered";
  }));
  auto& events = trace.at("events").as_array();
  CHECK(events.front().at("stage") == "planned");
  CHECK(events.front().at("key") == serve_customer(1).at("id"));

  // A W3C traceparent is adopted: its trace id becomes the correlation id.
  std::string tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  r = w.post_webhook(message(2), {{"traceparent", tp}});
  REQUIRE(r);
  REQUIRE(r->status == 202);
  CHECK(r->get_header_value("X-Correlation-ID") == "4bf92f3577b34da6a3ce929d0e0e4736");
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_by_email("c2@x.se").has_value(); }));
  REQUIRE(ServeWorld::wait_for([&] {
    auto t = w.admin_get("/api/trace/4bf92f3577b34da6a3ce929d0e0e4736");
    return t && t->status == 200 && t->body.find("delivered") != std::string::npos;
  }));

  // The same message again is accepted and ignored.
  r = w.post_webhook(message(1));
  REQUIRE(r);
  CHECK(r->status == 202);
  body = json::parse(r->body);
  CHECK(body.at("accepted").as_array().empty());
  CHECK(body.at("duplicates").at(0) == "msg-1-1");

  // A batch: two messages in one request.
  std::string batch = "[" + message(3) + "," + message(4) + "]";
  r = w.post_webhook(batch);
  REQUIRE(r);
  CHECK(r->status == 202);
  CHECK(json::parse(r->body).at("accepted").as_array().size() == 2);
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_count() == 4; }));

  // What the metrics say about it: 4 requests answered 202 (one a duplicate), their ack
  // times, and 4 records delivered with their latency.
  CHECK(w.metric("weft_webhook_requests_total", "status=\"202\"") == 4);
  CHECK(w.metric("weft_webhook_duplicates_total") == 1);
  CHECK(w.metric("weft_webhook_ack_seconds_count", "connection=\"ct\"") == 4);
  CHECK(w.metric("weft_webhook_ack_seconds_bucket", "le=\"+Inf\"") == 4);
  REQUIRE(ServeWorld::wait_for([&] {
    return w.metric("weft_deliveries_total", "outcome=\"delivered\"") == 4 &&
           w.metric("weft_delivery_latency_seconds_count") == 4;  // recorded just after the count
  }));
  CHECK(w.stop() == 0);
}

TEST_CASE("serve: bad webhooks get a clear 4xx and store nothing", "[serve]") {
  ServeWorld w("", R"({ "hmac_secret": "${SERVE_T_HOOK_SECRET}", "max_body_bytes": 20000 })");
  w.start();
  struct Case {
    std::string name, body, path, content_type;
    httplib::Headers headers;
    int status;
    std::string code;
  };
  std::string good = message(1);
  std::string deep(5000, '[');
  deep += std::string(5000, ']');
  std::string big = "{\"pad\":\"" + std::string(30000, 'x') + "\"}";
  std::string bad_utf8 = good;
  bad_utf8.replace(bad_utf8.find("Anna"), 4, "\xc3\x28nn");
  std::vector<Case> cases = {
      {"malformed JSON", "{\"notificationType\": ", "/webhooks/acme/ct", "application/json", {}, 400, "malformed_json"},
      {"wrong content type", good, "/webhooks/acme/ct", "text/plain", {}, 415, "unsupported_media_type"},
      {"unknown tenant", good, "/webhooks/nobody/ct", "application/json", {}, 404, "unknown_tenant"},
      {"unknown connection", good, "/webhooks/acme/nope", "application/json", {}, 404, "unknown_connection"},
      {"a connection without webhooks", good, "/webhooks/acme/omnisend", "application/json", {}, 404, "unknown_connection"},
      {"oversize body", big, "/webhooks/acme/ct", "application/json", {}, 413, "payload_too_large"},
      {"deeply nested", deep, "/webhooks/acme/ct", "application/json", {}, 400, "too_deep"},
      {"invalid UTF-8", bad_utf8, "/webhooks/acme/ct", "application/json", {}, 400, "invalid_utf8"},
      {"not a notification", "{\"hello\":1}", "/webhooks/acme/ct", "application/json", {}, 400, "not_a_notification"},
      {"forged signature", good, "/webhooks/acme/ct", "application/json",
       {{"X-Weft-Signature", weft::http::hmac_sha256_hex("wrong-secret", good)}}, 401, "unauthorized"},
      {"missing signature", good, "/webhooks/acme/ct", "application/json", {{"X-Weft-Signature", ""}}, 401, "unauthorized"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    auto r = w.post_webhook(c.body, c.headers, c.path, c.content_type);
    REQUIRE(r);
    INFO(r->body);
    CHECK(r->status == c.status);
    json::value e = json::parse(r->body);
    CHECK(e.at("error").at("code").as_string() == c.code);
    CHECK(!e.at("error").at("message").as_string().empty());
    CHECK(e.at("error").at("correlationId").as_string() == r->get_header_value("X-Correlation-ID"));
    if (c.status == 401) CHECK(e.at("error").at("message") == "the request could not be authenticated");
  }
  // An unknown name from the URL is logged masked: a newline in it starts no line.
  auto forged = w.post_webhook(good, {}, "/webhooks/evil%0A2026-01-01T00:00:00.000%20info%20forged/ct");
  REQUIRE(forged);
  CHECK(forged->status == 404);
  CHECK(w.metric("weft_records_received_total") == 0);
  CHECK(w.stop() == 0);
  CHECK(slurp(w.log_path).find("\n2026-01-01T00:00:00.000 info forged") == std::string::npos);
  // Nothing reached the inbox or the spool.
  auto s = weft::store::open_sqlite(w.db());
  CHECK(s->inbox_next(10, "", 0).empty());
  CHECK(s->inbox_backlog("") == 0);
  CHECK(w.om.contact_count() == 0);
}

TEST_CASE("serve: a webhook secret whose variable is empty is not configured (503), as an unset one is",
          "[serve][secrets]") {
  ServeWorld w;
  for (bool empty : {true, false}) {
    INFO((empty ? "SERVE_T_HOOK_SECRET=''" : "SERVE_T_HOOK_SECRET unset"));
    if (empty) setenv("SERVE_T_HOOK_SECRET", "", 1);
    else unsetenv("SERVE_T_HOOK_SECRET");
    w.start();
    setenv("SERVE_T_HOOK_SECRET", kServeHookSecret, 1);
    // Signed with an empty key, as an empty secret would check it: still refused, with 503.
    auto r = w.post_webhook(message(1), {{"X-Weft-Signature", weft::http::hmac_sha256_hex("", message(1))}});
    REQUIRE(r);
    INFO(r->body);
    CHECK(r->status == 503);
    CHECK(json::parse(r->body).at("error").at("code") == "not_configured");
    CHECK(r->get_header_value("Retry-After") == "60");
    CHECK(w.stop() == 0);
    CHECK(slurp(w.log_path).find(std::string("webhook secret of connection ct is ") + (empty ? "empty" : "unset") +
                                 " (environment variable SERVE_T_HOOK_SECRET)") != std::string::npos);
  }
  CHECK(w.om.contact_count() == 0);
}

TEST_CASE("serve: the admin API needs its token, /healthz does not", "[serve]") {
  ServeWorld w;
  w.start();
  auto h = w.admin_get("/healthz", false);
  REQUIRE(h);
  CHECK(h->status == 200);
  for (const char* path : {"/readyz", "/metrics", "/api/tenants", "/api/tenants/acme", "/api/trace/x",
                           "/api/tenants/acme/parked", "/api/tenants/acme/conflicts"}) {
    INFO(path);
    auto r = w.admin_get(path, false);
    REQUIRE(r);
    CHECK(r->status == 401);
    CHECK(json::parse(r->body).at("error").at("code") == "unauthorized");
    auto c = w.client();
    r = c.Get(path, {{"Authorization", "Bearer not-the-token"}});
    REQUIRE(r);
    CHECK(r->status == 401);
  }
  for (const char* path : {"/api/reload", "/api/tenants/acme/flows/customers/jobs/pull", "/api/tenants/acme/replay"}) {
    INFO(path);
    auto r = w.admin_post(path, "{}", false);
    REQUIRE(r);
    CHECK(r->status == 401);
  }
  auto ready = w.admin_get("/readyz");
  REQUIRE(ready);
  CHECK(ready->status == 200);
  json::value tenants = w.admin_json("/api/tenants");
  REQUIRE(tenants.at("tenants").as_array().size() == 1);
  CHECK(tenants.at("tenants").at(0).at("state") == "running");
  auto missing = w.admin_get("/api/tenants/nobody");
  REQUIRE(missing);
  CHECK(missing->status == 404);
  CHECK(json::parse(missing->body).at("error").at("code") == "unknown_tenant");
  // The admin API's dry-run answers as `weft dry-run` does.
  auto c = w.client();
  auto dry = c.Post("/api/tenants/acme/flows/customers/dry-run",
                    {{"Authorization", std::string("Bearer ") + kServeAdminToken}},
                    json::serialize(serve_customer(7)), "application/json");
  REQUIRE(dry);
  INFO(dry->body);
  REQUIRE(dry->status == 200);
  json::value d = json::parse(dry->body);
  CHECK(d.at("records").at(0).at("status") == "ok");
  CHECK(d.at("records").at(0).at("plan").at("status") == "planned");
  CHECK(dry->body.find(kServeOmniKey) == std::string::npos);
  CHECK(w.stop() == 0);
  // Secrets never reach the log.
  std::string log = slurp(w.log_path);
  CHECK(log.find(kServeOmniKey) == std::string::npos);
  CHECK(log.find(kServeHookSecret) == std::string::npos);
  CHECK(log.find(kServeAdminToken) == std::string::npos);
}

TEST_CASE("serve: over capacity, webhooks get 503 with Retry-After", "[serve]") {
  // A mapping that takes a while per record, and a backlog bound of 5.
  std::string slow = R"(local inner = require("acme_customers_inner")
local M = {}
for k, v in pairs(inner) do M[k] = v end
function M.map(rec, ctx)
  local x = 0
  for i = 1, 20000000 do x = x + i % 7 end
  if x < 0 then error("never") end
  return inner.map(rec, ctx)
end
return M
)";
  ServeWorld w;
  w.dir.write("lib/acme_customers_inner.lua", slurp(std::string(WEFT_SOURCE_DIR) + "/scripts/acme/customers.lua"));
  w.dir.write("acme/customers.lua", slow);
  w.start({"--max-backlog", "5"});
  int accepted = 0, refused = 0;
  for (int i = 0; i < 60; ++i) {
    auto r = w.post_webhook(message(i));
    REQUIRE(r);
    if (r->status == 202) {
      ++accepted;
    } else {
      INFO(r->body);
      REQUIRE(r->status == 503);
      CHECK(json::parse(r->body).at("error").at("code") == "over_capacity");
      CHECK(!r->get_header_value("Retry-After").empty());
      ++refused;
    }
  }
  INFO(slurp(w.log_path));
  CHECK(accepted >= 5);
  CHECK(refused > 0);
  // What was accepted is delivered.
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_count() == static_cast<size_t>(accepted); }, 60000));
  CHECK(w.stop() == 0);
}

TEST_CASE("serve: SIGTERM under load stops in time and loses nothing acknowledged", "[serve]") {
  ServeWorld w;
  w.start();
  Senders senders(w, 4);
  // Under load: some acknowledged, more in flight (waited for, not slept: a loaded machine
  // acknowledges slower).
  REQUIRE(ServeWorld::wait_for([&] { return senders.acked_count() > 60; }, 30000));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  int64_t t0 = weft::util::now_ms();
  int code = w.stop(20000);
  int64_t took = weft::util::now_ms() - t0;
  senders.stop();
  CHECK(code == 0);
  CHECK(took < 15000);
  REQUIRE(senders.acked().size() > 50);
  // Restarted, it finishes what was left.
  check_all_delivered(w, senders.acked());
}

TEST_CASE("serve: SIGKILL under concurrent webhooks loses nothing acknowledged, whichever lane took it", "[serve]") {
  ServeWorld w;
  w.start();
  Senders senders(w, 8);  // more senders than lanes, so every lane commits
  REQUIRE(ServeWorld::wait_for([&] { return senders.acked_count() > 60; }, 30000));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  w.kill_hard();
  senders.stop();
  REQUIRE(senders.acked().size() > 50);
  check_all_delivered(w, senders.acked());
}

TEST_CASE("serve: records left in any lane's spool by a crash move on at the next start", "[serve]") {
  ServeWorld w;
  // What a crash can leave: an acknowledged record still in the last lane's spool.
  std::filesystem::create_directories(std::filesystem::path(w.db()).parent_path());
  {
    std::vector<weft::http::WebhookMessage> msgs;
    weft::http::WebhookError err;
    std::string body = message(77);
    REQUIRE(weft::http::parse_webhook("commercetools", "application/json", body, {}, &msgs, &err));
    REQUIRE(msgs.size() == 1);
    weft::store::InboxRecord r;
    r.tenant = "acme";
    r.connection = "ct";
    r.message_id = msgs[0].message_id;
    r.entity = msgs[0].entity;
    r.correlation_id = "left-in-lane-3";
    r.payload = msgs[0].payload;
    r.received_ms = weft::util::now_ms();
    std::vector<weft::store::InboxRecord> recs{r};
    std::vector<bool> added;
    weft::serve::Spool spool(w.db() + "-spool-3");
    spool.add(recs, &added);
    REQUIRE(added.at(0));
  }
  w.start();
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_by_email("c77@x.se").has_value(); }));
  // The trace says so once weft has recorded Omnisend's answer (just after the contact is there).
  CHECK(ServeWorld::wait_for([&] {
    auto t = w.admin_get("/api/trace/left-in-lane-3");
    return t && t->status == 200 && t->body.find("delivered") != std::string::npos;
  }));
  CHECK(w.stop() == 0);
  CHECK(weft::serve::Spool(w.db() + "-spool-3").size() == 0);
}

TEST_CASE("serve: webhooks that trickle in reach Omnisend in batches, not a request each", "[serve]") {
  // Omnisend allows 400 requests a minute: one request per contact would cap a tenant at
  // under 7 webhooks a second. A short batch waits a moment for more, so the delivery has a
  // backlog to send through the Batches API.
  ServeWorld w;
  w.start();
  const int n = 40;
  int64_t t0 = weft::util::now_ms();
  for (int i = 0; i < n; ++i) {
    auto r = w.post_webhook(message(500 + i));
    REQUIRE(r);
    REQUIRE(r->status == 202);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  int64_t span_ms = weft::util::now_ms() - t0;
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_count() >= n; }, 30000));
  // Batching needs several records per 50 ms gathering window (a batch takes 4 or more). If
  // this machine took over 12 ms a post (each waits for an fsync), fewer arrive per window
  // and single requests are the right answer: then there is nothing to check.
  if (span_ms > n * 12) {
    WARN("posting took " << span_ms << " ms (" << span_ms / n << " ms a webhook): too slow a trickle to batch; not checked");
    CHECK(w.stop() == 0);
    return;
  }
  int singles = 0, batches = 0;
  for (const auto& req : w.om.requests()) {
    if (req.method == "POST" && req.path == "/v3/contacts") ++singles;
    if (req.method == "POST" && req.path == "/v3/batches") ++batches;
  }
  INFO(singles << " single contact requests, " << batches << " batches");
  CHECK(singles + batches <= n / 2);
  CHECK(batches >= 1);
  CHECK(w.stop() == 0);
}

TEST_CASE("serve: --log-format json writes one JSON object per line", "[serve]") {
  ServeWorld w;
  w.start({"--log-format", "json"});
  auto r = w.post_webhook(message(1), {{"X-Weft-Signature", "forged"}});
  REQUIRE(r);
  CHECK(r->status == 401);
  // A name in the URL cannot pose as a correlation id or start a line of its own.
  auto posing = w.post_webhook(message(2), {}, "/webhooks/x%20%5Bcorrelation%20victim-42%5D%0Aforged/ct");
  REQUIRE(posing);
  CHECK(posing->status == 404);
  CHECK(w.stop() == 0);
  CHECK(slurp(w.log_path).find("\"correlationId\":\"victim-42\"") == std::string::npos);
  std::istringstream in(slurp(w.log_path));
  std::string line;
  int lines = 0;
  bool tenant_field = false;
  while (std::getline(in, line)) {
    INFO(line);
    json::value v = json::parse(line);
    CHECK(v.as_object().contains("at"));
    CHECK(v.as_object().contains("level"));
    CHECK(v.as_object().contains("msg"));
    if (v.as_object().contains("tenant")) tenant_field = true;
    ++lines;
  }
  CHECK(lines >= 3);
  CHECK(tenant_field);
}

TEST_CASE("serve: a flagged conflict is listed and resolved for either side through the admin API", "[serve]") {
  std::string script = slurp(std::string(WEFT_SOURCE_DIR) + "/scripts/acme/customers.lua");
  auto at = script.find("M.owners = {");
  REQUIRE(at != std::string::npos);
  script.replace(at, 12, "M.owners = { firstName = \"flag\",");
  ServeWorld w("", R"({ "hmac_secret": "${SERVE_T_HOOK_SECRET}" })", script);
  w.start();
  auto send = [&](int64_t version, const std::string& first, const std::string& last) {
    json::object c = serve_customer(1, version);
    c["firstName"] = first;
    c["lastName"] = last;
    auto r = w.post_webhook(json::serialize(customer_created(c, "m-" + std::to_string(version), version)));
    REQUIRE(r);
    REQUIRE(r->status == 202);
  };
  auto first_name = [&] {
    auto c = w.om.contact_by_email("c1@x.se");
    return c ? std::string(c->at("firstName").as_string()) : std::string();
  };
  send(1, "Anna", "Svensson");
  REQUIRE(ServeWorld::wait_for([&] { return first_name() == "Anna"; }));
  // Someone renames the contact in Omnisend; weft learns it from the answer to its next write.
  REQUIRE(w.om.update_contact("c1@x.se", [](json::object& c) { c["firstName"] = "Bob"; }));
  send(2, "Anna", "Berg");
  REQUIRE(ServeWorld::wait_for([&] {
    auto c = w.om.contact_by_email("c1@x.se");
    return c && c->at("lastName") == "Berg";
  }));
  CHECK(first_name() == "Bob");
  // Now the source renames too: both sides changed since the last sync -> a conflict.
  send(3, "Carl", "Berg");
  json::array conflicts;
  REQUIRE(ServeWorld::wait_for([&] {
    conflicts = w.admin_json("/api/tenants/acme/conflicts").at("conflicts").as_array();
    return !conflicts.empty();
  }));
  REQUIRE(conflicts.size() == 1);
  CHECK(conflicts[0].at("field") == "firstName");
  CHECK(conflicts[0].at("detail").at("source") == "Carl");
  CHECK(conflicts[0].at("detail").at("destination") == "Bob");
  CHECK(first_name() == "Bob");  // not written while in conflict
  int64_t id = conflicts[0].at("id").to_number<int64_t>();

  auto bad = w.admin_post("/api/tenants/acme/conflicts/" + std::to_string(id) + "/resolve", R"({"side":"both"})");
  REQUIRE(bad);
  CHECK(bad->status == 400);
  auto open_conflicts = [&] { return w.admin_json("/api/tenants/acme/conflicts").at("conflicts").as_array(); };
  auto last_name = [&] {
    auto c = w.om.contact_by_email("c1@x.se");
    return c ? std::string(c->at("lastName").as_string()) : std::string();
  };
  SECTION("for the source: its value is written") {
    auto r = w.admin_post("/api/tenants/acme/conflicts/" + std::to_string(id) + "/resolve", R"({"side":"source"})");
    REQUIRE(r);
    INFO(r->body);
    CHECK(r->status == 200);
    REQUIRE(ServeWorld::wait_for([&] { return first_name() == "Carl"; }));
    CHECK(open_conflicts().empty());
    auto again = w.admin_post("/api/tenants/acme/conflicts/" + std::to_string(id) + "/resolve", R"({"side":"source"})");
    REQUIRE(again);
    CHECK(again->status == 404);
    // The trail says who chose what.
    json::value trace = w.admin_json("/api/trace/" + std::string(conflicts[0].at("correlation_id").as_string()));
    CHECK(json::serialize(trace).find("resolved for the source") != std::string::npos);
  }
  SECTION("for the source, after a newer version of the record: the newest goes through") {
    send(4, "Carl", "Lund");  // the same conflict (recorded once); the last name is written
    REQUIRE(ServeWorld::wait_for([&] { return last_name() == "Lund"; }));
    CHECK(open_conflicts().size() == 1);
    auto r = w.admin_post("/api/tenants/acme/conflicts/" + std::to_string(id) + "/resolve", R"({"side":"source"})");
    REQUIRE(r);
    INFO(r->body);
    CHECK(r->status == 200);
    // Version 3 (which raised the conflict) would be stale now: version 4 goes through.
    REQUIRE(ServeWorld::wait_for([&] { return first_name() == "Carl"; }));
    CHECK(last_name() == "Lund");
    CHECK(open_conflicts().empty());
  }
  SECTION("for the destination: its value stays when the source record comes again") {
    auto r = w.admin_post("/api/tenants/acme/conflicts/" + std::to_string(id) + "/resolve", R"({"side":"destination"})");
    REQUIRE(r);
    INFO(r->body);
    CHECK(r->status == 200);
    CHECK(open_conflicts().empty());
    // The customer changes another field at the source; the source still says "Carl".
    send(4, "Carl", "Lund");
    REQUIRE(ServeWorld::wait_for([&] { return last_name() == "Lund"; }));
    CHECK(first_name() == "Bob");
    CHECK(open_conflicts().empty());
    // A new first name at the source while the destination holds another: flagged again.
    send(5, "Dave", "Lund");
    REQUIRE(ServeWorld::wait_for([&] { return !open_conflicts().empty(); }));
    CHECK(open_conflicts()[0].at("detail").at("source") == "Dave");
    CHECK(first_name() == "Bob");
  }
  CHECK(w.stop() == 0);
}

TEST_CASE("serve: configuration errors exit 2 with a message that says what", "[serve]") {
  TempDir empty;
  auto r = run_weft("serve --workspace " + empty.path().string() + "/nope --listen 127.0.0.1:0");
  CHECK(r.code == 2);
  CHECK(r.err.find("no such folder") != std::string::npos);
  r = run_weft("serve --workspace " + empty.path().string() + " --listen localhost");
  CHECK(r.code == 2);
  CHECK(r.err.find("HOST:PORT") != std::string::npos);
  r = run_weft("serve --workspace " + empty.path().string() + " --listen 127.0.0.1:99999");
  CHECK(r.code == 2);
  r = run_weft("serve --workspace " + empty.path().string() + " --db :memory:");
  CHECK(r.code == 2);
  CHECK(r.err.find("--db must be a file") != std::string::npos);
  // A bad cron expression is refused by weft check, with where it is.
  ServeWorld w(R"("pull": { "cron": "0 25 * * *" })");
  r = run_weft("check --workspace " + w.ws);
  CHECK(r.code == 2);
  CHECK(r.err.find("$.flows.customers.pull") != std::string::npos);
  CHECK(r.err.find("out of range") != std::string::npos);
}

namespace {
// Sends each request on one connection, each after the answer to the one before (cpp-httplib
// does not read pipelined requests), and returns the answers.
std::vector<std::string> exchange(int port, const std::vector<std::string>& requests) {
  std::vector<std::string> answers;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return answers;
  }
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string pending;  // bytes read past the last answer
  for (const auto& request : requests) {
    for (size_t at = 0; at < request.size();) {
      ssize_t n = ::write(fd, request.data() + at, request.size() - at);
      if (n <= 0) break;
      at += static_cast<size_t>(n);
    }
    std::string& out = pending;
    char buf[4096];
    size_t head_end, length = 0;
    for (;;) {
      head_end = out.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        size_t cl = out.find("Content-Length: ");
        length = cl != std::string::npos && cl < head_end ? std::stoul(out.substr(cl + 16)) : 0;
        if (out.size() >= head_end + 4 + length) break;
      }
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    if (head_end == std::string::npos) {
      answers.push_back(out);
      break;
    }
    answers.push_back(out.substr(0, head_end + 4 + length));
    out.erase(0, head_end + 4 + length);
  }
  ::close(fd);
  return answers;
}

long peak_rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}
}  // namespace

TEST_CASE("serve: a body is kept only for a request its headers allow", "[serve]") {
  ServeWorld w("", R"({ "bearer_token": "${SERVE_T_HOOK_SECRET}", "max_body_bytes": 20000 })");
  w.start();
  auto request = [](const std::string& path, const std::string& auth, const std::string& body) {
    return "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + auth +
           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  };
  const std::string health = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  std::string bearer = std::string("Authorization: Bearer ") + kServeHookSecret + "\r\n";
  // Each refusal, then a second request on the same connection: the body was read past (not
  // taken for the next request, which would smuggle one request inside another's body).
  std::string smuggled = "GET /api/tenants HTTP/1.1\r\nHost: x\r\n\r\n";
  struct Case {
    std::string name, request, status, code;
  };
  std::vector<Case> cases = {
      {"unknown tenant", request("/webhooks/nobody/ct", bearer, smuggled), "404", "unknown_tenant"},
      {"unknown connection", request("/webhooks/acme/nope", bearer, smuggled), "404", "unknown_connection"},
      {"wrong token", request("/webhooks/acme/ct", "Authorization: Bearer nope\r\n", smuggled), "401", "unauthorized"},
      {"over the connection's limit", request("/webhooks/acme/ct", bearer, std::string(30000, 'x')), "413",
       "payload_too_large"},
      {"admin route without the token", request("/api/reload", "", smuggled), "401", "unauthorized"},
      {"no such route", request("/nothing/here", "", smuggled), "404", "not_found"},
      {"no such route, a newline in the path", request("/x%0Ay", "", smuggled), "404", "not_found"},
      // A compressed body is read as the bytes it is, not inflated (a broken stream would
      // stop the read part-way and leave the rest for the next request).
      {"a compressed webhook", request("/webhooks/acme/ct", bearer + "Content-Encoding: gzip\r\n", std::string(4000, '\0') + smuggled),
       "415", "unsupported_media_type"},
      {"a compressed admin body", request("/api/reload", "Authorization: Bearer " + std::string(kServeAdminToken) +
                                                             "\r\nContent-Encoding: gzip\r\n", smuggled),
       "415", "unsupported_media_type"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    auto answers = exchange(w.port, {c.request, health});
    REQUIRE(answers.size() == 2);
    INFO(answers[0] << "\n---\n" << answers[1]);
    CHECK(answers[0].rfind("HTTP/1.1 " + c.status, 0) == 0);
    CHECK(answers[0].find("\"code\":\"" + c.code + "\"") != std::string::npos);
    // The next answer is /healthz's, not the smuggled request's.
    CHECK(answers[1].rfind("HTTP/1.1 200", 0) == 0);
    CHECK(answers[1].find("\"status\":\"ok\"") != std::string::npos);
  }
  // 40 MB sent to an unknown tenant and to an admin route without the token: read and
  // dropped, not kept (the server's peak memory grows by far less than the bodies).
  long before = peak_rss_kb(w.pid);
  REQUIRE(before > 0);
  std::string big(40 << 20, 'x');
  for (const char* path : {"/webhooks/nobody/ct", "/api/reload", "/x%0Ay"}) {
    auto answers = exchange(w.port, {request(path, bearer, big)});
    REQUIRE(answers.size() == 1);
    CHECK(answers[0].rfind("HTTP/1.1 40", 0) == 0);
  }
  CHECK(peak_rss_kb(w.pid) - before < 20 * 1024);
  // A POST that declares no length has no body (it is not read until the connection ends).
  auto bare = exchange(w.port, {"POST /api/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                                    std::string(kServeAdminToken) + "\r\n\r\n",
                                health});
  REQUIRE(bare.size() == 2);
  CHECK(bare[0].rfind("HTTP/1.1 200", 0) == 0);
  CHECK(bare[1].rfind("HTTP/1.1 200", 0) == 0);
  // Within the limit, the same headers with the body are read and accepted as before.
  auto ok = w.post_webhook(message(1), {{"Authorization", std::string("Bearer ") + kServeHookSecret}});
  REQUIRE(ok);
  CHECK(ok->status == 202);
  CHECK(w.stop() == 0);
}
