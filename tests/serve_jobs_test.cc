// weft serve end to end, the moving parts: live reload under load (good, broken, good again;
// inotify, SIGHUP and the admin API), scheduled delta pulls, a backfill that resumes after
// SIGKILL, reconciliation against the fake Omnisend, a missed schedule run once at start,
// and the admin API's replay of a dead letter and its answer for an unknown conflict.
#include <SQLiteCpp/SQLiteCpp.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <climits>
#include <map>
#include <mutex>
#include <set>

#include "engine/store/store.h"
#include "engine/util/time.h"
#include "tests/serve_util.h"

using namespace weft::testing;
namespace json = boost::json;

namespace {

std::string message(int i, int64_t version = 1, const std::string& msg_id = "") {
  return json::serialize(customer_created(
      serve_customer(i, version), msg_id.empty() ? "msg-" + std::to_string(i) + "-" + std::to_string(version) : msg_id));
}

std::string email(int i) { return "c" + std::to_string(i) + "@x.se"; }

json::object tenant(const ServeWorld& w) { return w.admin_json("/api/tenants/acme").as_object(); }

std::string script_version(const ServeWorld& w) {
  auto t = tenant(w);
  auto* v = t.if_contains("script_version");
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

// The customers flow's recent job runs (newest first) from GET /api/tenants/acme.
json::array job_runs(const ServeWorld& w) {
  auto t = tenant(w);
  for (auto& f : t.at("flows").as_array())
    if (f.at("flow") == "customers") return f.at("job_runs").as_array();
  return {};
}

std::optional<json::object> run_by_id(const ServeWorld& w, int64_t id) {
  for (auto& r : job_runs(w))
    if (r.at("id").to_number<int64_t>() == id) return r.as_object();
  return std::nullopt;
}

int64_t count_of(const json::object& run, const char* key) {
  auto* c = run.at("counts").as_object().if_contains(key);
  return c ? c->to_number<int64_t>() : -1;
}

// The script version named by the audit trail of a correlation id ("" while none).
std::string stamped_version(const ServeWorld& w, const std::string& cid) {
  auto r = w.admin_get("/api/trace/" + cid);
  if (!r || r->status != 200) return "";
  json::value t = json::parse(r->body);
  for (auto& e : t.at("events").as_array()) {
    std::string d(e.at("detail").as_string());
    auto at = d.find(", script ");
    if (at == std::string::npos) continue;
    at += 9;
    auto end = d.find(']', at);
    return d.substr(at, end == std::string::npos ? std::string::npos : end - at);
  }
  return "";
}

std::string acme_script() { return slurp(std::string(WEFT_SOURCE_DIR) + "/scripts/acme/customers.lua"); }

// The acme script adding the tag "reload:<tag>".
std::string tagged_script(const std::string& tag) {
  std::string s = acme_script();
  std::string anchor = "omni.add_tag(tags, \"source\", \"commercetools\")";
  auto at = s.find(anchor);
  REQUIRE(at != std::string::npos);
  s.insert(at + anchor.size(), "\n  omni.add_tag(tags, \"reload\", \"" + tag + "\")");
  return s;
}

bool has_tag(const json::object& contact, const std::string& tag) {
  auto* tags = contact.if_contains("tags");
  if (!tags || !tags->is_array()) return false;
  for (auto& t : tags->as_array())
    if (t.is_string() && t.as_string() == tag) return true;
  return false;
}

// Starts weft with customers 1..n at the fake commercetools, pulls them, and waits until all
// are contacts at the fake Omnisend.
void start_with_contacts(ServeWorld& w, int n) {
  w.ct.put_customers_bulk(1, n);
  w.start();
  auto r = w.admin_post("/api/tenants/acme/flows/customers/jobs/pull");
  REQUIRE(r);
  REQUIRE(r->status == 202);
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_count() == static_cast<size_t>(n); }));
}

// Waits (up to 60 s) until contacts 1..n are all at the fake Omnisend with `tag`.
bool all_tagged(const ServeWorld& w, int n, const std::string& tag) {
  return ServeWorld::wait_for(
      [&] {
        for (int i = 1; i <= n; ++i) {
          auto c = w.om.contact_by_email(email(i));
          if (!c || !has_tag(*c, tag)) return false;
        }
        return true;
      },
      60000);
}

std::string email_consent(const json::object& contact) {
  for (auto& i : contact.at("identifiers").as_array())
    if (i.at("type") == "email") {
      auto* ch = i.as_object().if_contains("channels");
      if (ch && ch->is_object())
        if (auto* e = ch->as_object().if_contains("email"); e && e->is_object())
          if (auto* s = e->as_object().if_contains("status"); s && s->is_string()) return std::string(s->as_string());
    }
  return "";
}

std::string str(const json::object& o, const char* key) {
  auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

}  // namespace

TEST_CASE("serve: reload under load: nothing lost, a broken script refused, records stamped with their version",
          "[serve]") {
  ServeWorld w;
  w.start();
  const std::string v0 = script_version(w);
  {
    INFO("tenant: " << json::serialize(tenant(w)) << "\nlog:\n" << slurp(w.log_path));
    REQUIRE(!v0.empty());
  }

  // A sender posting signed messages, one correlation id each, until told to stop.
  std::atomic<bool> go{true};
  std::atomic<int> next{0};
  std::mutex mu;
  std::vector<int> acked;
  std::vector<std::string> failed;
  std::thread sender([&] {
    while (go) {
      int i = next++;
      auto r = w.post_webhook(message(i), {{"X-Correlation-ID", "reload-" + std::to_string(i)}});
      std::lock_guard<std::mutex> lock(mu);
      if (r && r->status == 202) acked.push_back(i);
      else failed.push_back(std::to_string(i) + ": " + (r ? std::to_string(r->status) + " " + r->body : "no answer"));
      std::this_thread::sleep_for(std::chrono::milliseconds(4));
    }
  });
  struct Phase {
    std::string version;
    int from;  // messages numbered from here on were sent after the version was active
  };
  std::vector<Phase> phases{{v0, 0}};
  auto wait_sent = [&](int more) {
    int target = next + more;
    REQUIRE(ServeWorld::wait_for([&] { return next >= target; }));
  };
  // Writes the script and waits for the watcher to make it active.
  auto change_to = [&](const std::string& script) {
    std::string before = phases.back().version;
    w.dir.write("acme/customers.lua", script);
    std::string now;
    REQUIRE(ServeWorld::wait_for([&] { return (now = script_version(w)) != before; }, 20000));
    phases.push_back({now, next.load()});
    return now;
  };
  wait_sent(60);

  // Good: a tag more.
  const std::string v1 = change_to(tagged_script("b"));
  wait_sent(60);

  // Broken: a syntax error on a known line; refused and reported, v1 keeps running.
  std::string broken = tagged_script("b");
  auto line_start = broken.find("function M.map(rec, ctx)");
  REQUIRE(line_start != std::string::npos);
  int bad_line = 1 + static_cast<int>(std::count(broken.begin(), broken.begin() + line_start, '\n'));
  broken.insert(line_start, "local oops = = 1\n");
  w.dir.write("acme/customers.lua", broken);
  json::object report;
  REQUIRE(ServeWorld::wait_for([&] {
    report = tenant(w).at("last_reload").as_object();
    return str(report, "result") == "refused";
  }));
  {
    INFO(json::serialize(report));
    CHECK(str(report, "trigger") == "watch");
    REQUIRE(report.contains("problems"));
    auto& problems = report.at("problems").as_array();
    REQUIRE(!problems.empty());
    CHECK(str(problems[0].as_object(), "file").find("customers.lua") != std::string::npos);
    CHECK(problems[0].at("line").to_number<int>() == bad_line);
  }
  CHECK(script_version(w) == v1);
  // /api/tenants lists it too.
  CHECK(json::serialize(w.admin_json("/api/tenants")).find("refused") != std::string::npos);
  wait_sent(40);

  // SIGHUP and POST /api/reload read the broken file again: refused again, v1 still runs.
  w.signal(SIGHUP);
  REQUIRE(ServeWorld::wait_for([&] {
    report = tenant(w).at("last_reload").as_object();
    return str(report, "trigger") == "signal";
  }));
  CHECK(str(report, "result") == "refused");
  auto api = w.admin_post("/api/reload?tenant=acme", "");
  REQUIRE(api);
  INFO(api->body);
  CHECK(api->status == 422);
  json::value api_report = json::parse(api->body);
  CHECK(api_report.at("result") == "refused");
  CHECK(api_report.at("trigger") == "api");
  CHECK(api_report.at("problems").at(0).at("line").to_number<int>() == bad_line);
  CHECK(str(tenant(w).at("last_reload").as_object(), "trigger") == "api");
  CHECK(script_version(w) == v1);
  wait_sent(40);

  // Fixed back to exactly the running version: nothing to swap, but the tenant no longer
  // reports the refused reload.
  w.dir.write("acme/customers.lua", tagged_script("b"));
  CHECK(ServeWorld::wait_for([&] { return str(tenant(w).at("last_reload").as_object(), "result") != "refused"; }));
  CHECK(script_version(w) == v1);
  CHECK(json::serialize(w.admin_json("/api/tenants")).find("refused") == std::string::npos);

  // Good again, another change.
  const std::string v2 = change_to(tagged_script("c"));
  wait_sent(60);
  // A reload of what runs changes nothing.
  auto same = w.admin_post("/api/reload?tenant=acme", "");
  REQUIRE(same);
  CHECK(same->status == 200);
  CHECK(json::parse(same->body).at("result") == "unchanged");
  CHECK(script_version(w) == v2);

  go = false;
  sender.join();
  std::set<std::string> versions{v0, v1, v2};
  CHECK(versions.size() == 3);
  {
    INFO("failed posts: " << failed.size() << (failed.empty() ? "" : " first: " + failed[0]));
    CHECK(failed.empty());
  }
  REQUIRE(acked.size() > 200);

  // Every acknowledged record reaches Omnisend; nothing parked.
  w.wait_for_contacts(acked, 60000);  // the missing ones are named below
  for (int i : acked) {
    INFO(i);
    CHECK(w.om.contact_by_email(email(i)).has_value());
  }
  auto parked = w.admin_json("/api/tenants/acme/parked");
  CHECK(parked.at("parked").as_array().empty());
  CHECK(w.om.order_violations() == 0);

  // Each record names the version that mapped it: one active when it was sent, or a later one.
  std::map<std::string, size_t> index;
  for (size_t k = 0; k < phases.size(); ++k) index[phases[k].version] = k;
  std::map<std::string, int> per_version;
  int exact = 0;
  for (int i : acked) {
    size_t phase = 0;
    while (phase + 1 < phases.size() && phases[phase + 1].from <= i) ++phase;
    std::string cid = "reload-" + std::to_string(i);
    std::string v;
    REQUIRE(ServeWorld::wait_for([&] { return !(v = stamped_version(w, cid)).empty(); }, 10000));
    INFO(cid << " stamped " << v << ", sent in phase " << phase);
    REQUIRE(index.count(v));  // a version that ran (never the broken one)
    CHECK(index[v] >= phase);
    if (index[v] == phase) ++exact;
    ++per_version[v];
  }
  // Each good version mapped records of its own.
  CHECK(per_version[v0] > 0);
  CHECK(per_version[v1] > 0);
  CHECK(per_version[v2] > 0);
  CHECK(exact > static_cast<int>(acked.size()) / 2);
  // The records sent under v2 carry its tag.
  auto last = w.om.contact_by_email(email(acked.back()));
  REQUIRE(last);
  CHECK(has_tag(*last, "reload:c"));

  CHECK(w.stop() == 0);
  std::string log = slurp(w.log_path);
  CHECK(log.find("reload refused (watch)") != std::string::npos);
  CHECK(log.find("reload refused (signal)") != std::string::npos);
  CHECK(log.find("reload refused (api)") != std::string::npos);
  CHECK(log.find("customers.lua:" + std::to_string(bad_line)) != std::string::npos);
}

TEST_CASE("serve: the scheduler runs delta pulls on schedule", "[serve]") {
  ServeWorld w(R"("pull": { "every": "1s" })");
  for (int i = 1; i <= 20; ++i) w.ct.put_customer(serve_customer(i));
  w.start();
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_count() == 20; }));
  // More, and a changed one, later: the next pulls bring them.
  auto changed = serve_customer(5);
  changed["firstName"] = "Annika";
  w.ct.put_customer(changed);
  for (int i = 21; i <= 30; ++i) w.ct.put_customer(serve_customer(i));
  REQUIRE(ServeWorld::wait_for([&] {
    auto c = w.om.contact_by_email(email(5));
    return w.om.contact_count() == 30 && c && c->at("firstName") == "Annika";
  }));
  for (int i = 1; i <= 30; ++i) CHECK(w.om.contact_by_email(email(i)).has_value());
  CHECK(w.om.order_violations() == 0);
  // Only the schedule ran pulls.
  json::array runs;
  REQUIRE(ServeWorld::wait_for([&] {
    runs = job_runs(w);
    int ok = 0;
    for (auto& r : runs)
      if (r.at("trigger") == "schedule" && r.at("status") == "ok") ++ok;
    return ok >= 2;
  }));
  INFO(json::serialize(runs));
  for (auto& r : runs) {
    CHECK(r.at("job") == "pull");
    CHECK(r.at("trigger") == "schedule");
    CHECK(r.as_object().contains("scheduled_for"));
  }
  // The admin API shows the schedule and its next run.
  auto t = tenant(w);
  bool shown = false;
  for (auto& j : t.at("flows").at(0).at("jobs").as_array())
    if (j.at("job") == "pull") shown = j.as_object().contains("schedule") && j.as_object().contains("next_run");
  CHECK(shown);
  CHECK(w.stop() == 0);
}

TEST_CASE("serve: a backfill resumes from its checkpoint after SIGKILL", "[serve]") {
  const int n = 3000;
  ServeWorld w(R"("backfill": { "page_size": 50, "pause_ms": 100 })");
  w.ct.put_customers_bulk(1, n);
  w.start();
  auto r = w.admin_post("/api/tenants/acme/flows/customers/jobs/backfill");
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 202);
  int64_t first_run = json::parse(r->body).at("run").to_number<int64_t>();
  CHECK(first_run > 0);
  // One at a time.
  auto again = w.admin_post("/api/tenants/acme/flows/customers/jobs/backfill");
  REQUIRE(again);
  CHECK(again->status == 409);
  CHECK(json::parse(again->body).at("error").at("code") == "conflict");
  // Unknown jobs and flows are 404s.
  auto bad = w.admin_post("/api/tenants/acme/flows/customers/jobs/nope");
  REQUIRE(bad);
  CHECK(bad->status == 404);
  bad = w.admin_post("/api/tenants/acme/flows/nope/jobs/backfill");
  REQUIRE(bad);
  CHECK(bad->status == 404);

  // Part of it done (a checkpoint is stored), then the process dies.
  REQUIRE(ServeWorld::wait_for([&] {
    auto s = weft::store::open_sqlite(w.db());
    auto c = s->cursor("acme", "customers#backfill");
    return c && !c->empty() && w.metric("weft_records_received_total") >= 300;
  }));
  w.kill_hard();
  {
    auto s = weft::store::open_sqlite(w.db());
    auto runs = s->job_runs("acme", "customers", "backfill", 10);
    REQUIRE(runs.size() == 1);
    REQUIRE(runs[0].status == "running");  // it had not finished
  }

  w.start();
  json::object resumed;
  bool finished = ServeWorld::wait_for(
      [&] {
        for (auto& run : job_runs(w))
          if (run.at("job") == "backfill" && run.at("trigger") == "resume" && run.at("status") != "running") {
            resumed = run.as_object();
            return true;
          }
        return false;
      },
      120000);  // generous: ctest runs other heavy tests beside this one
  INFO("weft serve's log:\n" + slurp(w.log_path) + "\njob runs: " + json::serialize(job_runs(w)));
  REQUIRE(finished);
  INFO(json::serialize(resumed));
  CHECK(resumed.at("status") == "ok");
  // It went on from the checkpoint rather than from the beginning.
  CHECK(count_of(resumed, "pulled") > 0);
  CHECK(count_of(resumed, "pulled") < n);
  auto first = run_by_id(w, first_run);
  REQUIRE(first);
  CHECK(first->at("status") == "stopped");
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_count() == static_cast<size_t>(n); }, 60000));
  CHECK(w.om.order_violations() == 0);
  CHECK(w.admin_json("/api/tenants/acme/parked").at("parked").as_array().empty());
  CHECK(w.stop() == 0);
}

TEST_CASE("serve: reconciliation restores what the destination lost or changed, except destination-owned fields",
          "[serve]") {
  // The fake's customers were changed in 2024: a window reaching back that far.
  ServeWorld w(R"("reconcile": { "window": "5000d" })");
  for (int i = 1; i <= 10; ++i) w.ct.put_customer(serve_customer(i));
  w.start();
  auto pull = w.admin_post("/api/tenants/acme/flows/customers/jobs/pull");
  REQUIRE(pull);
  REQUIRE(pull->status == 202);
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_count() == 10; }));
  // Wait for the deliveries to be recorded (the outbox drained).
  REQUIRE(ServeWorld::wait_for([&] {
    auto t = tenant(w);
    auto& f = t.at("flows").at(0).as_object();
    return f.contains("outbox") && f.at("outbox").to_number<int64_t>() == 0;
  }));

  auto reconcile = [&](const char* status = "ok") {
    auto r = w.admin_post("/api/tenants/acme/flows/customers/jobs/reconcile");
    REQUIRE(r);
    INFO(r->body);
    REQUIRE(r->status == 202);
    int64_t id = json::parse(r->body).at("run").to_number<int64_t>();
    std::optional<json::object> run;
    REQUIRE(ServeWorld::wait_for([&] { return (run = run_by_id(w, id)) && run->at("status") != "running"; }));
    INFO(json::serialize(*run));
    CHECK(run->at("status") == status);
    return *run;
  };

  // Deleted in Omnisend: sent again.
  REQUIRE(w.om.delete_contact_by_email(email(3)));
  REQUIRE(w.om.delete_contact_by_email(email(7)));
  REQUIRE(w.om.contact_count() == 8);
  auto run = reconcile();
  INFO(json::serialize(run));
  CHECK(count_of(run, "checked") == 10);
  CHECK(count_of(run, "missing") == 2);
  CHECK(count_of(run, "same") == 8);
  REQUIRE(ServeWorld::wait_for([&] {
    return w.om.contact_by_email(email(3)).has_value() && w.om.contact_by_email(email(7)).has_value();
  }));
  CHECK(w.om.contact_by_email(email(3))->at("firstName") == "Anna");
  CHECK(w.om.contact_count() == 10);

  // Changed in Omnisend: a source-owned field is set back, the consent (destination-owned)
  // stays as Omnisend has it.
  REQUIRE(email_consent(*w.om.contact_by_email(email(4))) == "nonSubscribed");
  REQUIRE(w.om.update_contact(email(4), [](json::object& c) {
    c["firstName"] = "Changed";
    for (auto& i : c["identifiers"].as_array())
      if (i.at("type") == "email") i.as_object()["channels"] = json::object{{"email", json::object{{"status", "unsubscribed"}, {"statusDate", "2026-11-01T00:00:00Z"}}}};
  }));
  REQUIRE(w.om.update_contact(email(6), [](json::object& c) {
    for (auto& i : c["identifiers"].as_array())
      if (i.at("type") == "email") i.as_object()["channels"] = json::object{{"email", json::object{{"status", "unsubscribed"}, {"statusDate", "2026-11-01T00:00:00Z"}}}};
  }));
  size_t requests_before = w.om.request_count();
  run = reconcile();
  INFO(json::serialize(run));
  CHECK(count_of(run, "different") == 1);  // only contact 4: contact 6 differs in a destination-owned field
  CHECK(count_of(run, "missing") == 0);
  REQUIRE(ServeWorld::wait_for([&] {
    auto c = w.om.contact_by_email(email(4));
    return c && c->at("firstName") == "Anna";
  }));
  CHECK(w.om.request_count() > requests_before);
  CHECK(email_consent(*w.om.contact_by_email(email(4))) == "unsubscribed");
  CHECK(email_consent(*w.om.contact_by_email(email(6))) == "unsubscribed");
  CHECK(w.om.order_violations() == 0);
  CHECK(w.admin_json("/api/tenants/acme/parked").at("parked").as_array().empty());

  // A record whose operation still waits in the outbox (Omnisend down) is not at the
  // destination yet: not compared, so not counted missing nor queued again.
  w.ct.put_customer(serve_customer(11));
  w.om.set_down(true);
  auto pull2 = w.admin_post("/api/tenants/acme/flows/customers/jobs/pull");
  REQUIRE(pull2);
  REQUIRE(ServeWorld::wait_for([&] {
    auto t = tenant(w);
    auto& f = t.at("flows").at(0).as_object();
    return f.contains("outbox") && f.at("outbox").to_number<int64_t>() == 1;
  }));
  // The others cannot be looked up while Omnisend is down: the run compared nothing, and
  // ends failed (an alert on failed runs fires), with its counts and the first error.
  run = reconcile("failed");
  INFO(json::serialize(run));
  CHECK(count_of(run, "pending") == 1);
  CHECK(count_of(run, "missing") == 0);
  CHECK(count_of(run, "errors") == 10);
  CHECK(std::string(run.at("error").as_string()).find("10 of 11 records could not be looked up") != std::string::npos);
  w.om.set_down(false);
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_by_email(email(11)).has_value(); }));
  CHECK(w.stop() == 0);
}

TEST_CASE("serve: reconciliation looks a record whose email changed up by the email Omnisend holds", "[serve]") {
  ServeWorld w(R"("reconcile": { "window": "5000d" })");
  for (int i = 1; i <= 3; ++i) w.ct.put_customer(serve_customer(i));
  w.start();
  auto job = [&](const char* name) {
    auto r = w.admin_post(std::string("/api/tenants/acme/flows/customers/jobs/") + name);
    REQUIRE(r);
    REQUIRE(r->status == 202);
    int64_t id = json::parse(r->body).at("run").to_number<int64_t>();
    std::optional<json::object> run;
    REQUIRE(ServeWorld::wait_for([&] { return (run = run_by_id(w, id)) && run->at("status") != "running"; }));
    return *run;
  };
  auto drained = [&] {
    return ServeWorld::wait_for([&] {
      auto t = tenant(w);
      auto& f = t.at("flows").at(0).as_object();
      return f.contains("outbox") && f.at("outbox").to_number<int64_t>() == 0;
    });
  };
  job("pull");
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_count() == 3; }));
  REQUIRE(drained());
  // Customer 2 changes their email at the source: a conflict (Omnisend finds the contact by
  // its email), the other change goes to the contact Omnisend holds.
  json::object moved = serve_customer(2, 2);
  moved["email"] = "moved@x.se";
  moved["lastName"] = "Berg";
  w.ct.put_customer(moved);
  job("pull");
  REQUIRE(ServeWorld::wait_for([&] {
    auto c = w.om.contact_by_email(email(2));
    return c && c->at("lastName") == "Berg";
  }));
  REQUIRE(drained());
  REQUIRE(w.admin_json("/api/tenants/acme/conflicts").at("conflicts").as_array().size() == 1);
  // Reconciliation finds it under the email Omnisend knows: not missing, nothing re-sent
  // under the new email (which would make a second contact).
  json::object run = job("reconcile");
  INFO(json::serialize(run));
  CHECK(run.at("status") == "ok");
  CHECK(count_of(run, "missing") == 0);
  CHECK(count_of(run, "same") == 3);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  REQUIRE(drained());
  CHECK_FALSE(w.om.contact_by_email("moved@x.se"));
  CHECK(w.om.contact_count() == 3);
  CHECK(w.stop() == 0);
}

TEST_CASE("serve: a schedule missed while weft was down runs once at start", "[serve]") {
  ServeWorld w(R"("pull": { "every": "1h" })");
  for (int i = 1; i <= 3; ++i) w.ct.put_customer(serve_customer(i));
  w.start();
  REQUIRE(ServeWorld::wait_for([&] {
    auto runs = job_runs(w);
    return !runs.empty() && runs[0].at("status") == "ok";
  }));
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_count() == 3; }));
  CHECK(w.stop() == 0);
  {
    auto s = weft::store::open_sqlite(w.db());
    auto runs = s->job_runs("acme", "customers", "pull", 10);
    REQUIRE(runs.size() == 1);
    CHECK(runs[0].trigger == "schedule");
  }
  // Three hours (and a few seconds) ago: three slots were missed while weft was down.
  {
    SQLite::Database db(w.db(), SQLite::OPEN_READWRITE);
    db.exec("UPDATE job_runs SET scheduled_ms = scheduled_ms - 10800000, started_ms = started_ms - 10800000, "
            "ended_ms = ended_ms - 10800000");
  }
  w.ct.put_customer(serve_customer(4));
  w.start();
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_count() == 4; }));
  // Give the scheduler a few turns to run any more it wrongly thinks it owes.
  std::this_thread::sleep_for(std::chrono::milliseconds(3000));
  CHECK(w.stop() == 0);
  auto s = weft::store::open_sqlite(w.db());
  auto runs = s->job_runs("acme", "customers", "pull", 10);
  REQUIRE(runs.size() == 2);
  CHECK(runs[0].trigger == "start");
  CHECK(runs[0].status == "ok");
  CHECK(runs[1].trigger == "schedule");
}

TEST_CASE("serve: admin API: a dead letter is listed and inspected and replayed and delivered, an unknown conflict is a 404",
          "[serve]") {
  ServeWorld w;
  {
    std::string cfg = slurp(w.ws + "/acme/tenant.json");
    auto at = cfg.find("\"max_attempts\": 8");
    REQUIRE(at != std::string::npos);
    cfg.replace(at, 17, "\"max_attempts\": 2");
    w.dir.write("acme/tenant.json", cfg);
  }
  w.start();
  w.om.set_down(true);
  for (int i : {1, 2}) {
    auto r = w.post_webhook(message(i), {{"X-Correlation-ID", "dead-" + std::to_string(i)}});
    REQUIRE(r);
    REQUIRE(r->status == 202);
  }
  json::array dead;
  REQUIRE(ServeWorld::wait_for([&] {
    dead = w.admin_json("/api/tenants/acme/parked?kind=dead_letter").at("parked").as_array();
    return dead.size() == 2;
  }));
  INFO(json::serialize(dead));
  if (dead[0].at("correlation_id") != "dead-1") std::swap(dead[0], dead[1]);
  CHECK(dead[0].at("kind") == "dead_letter");
  CHECK(dead[0].at("flow") == "customers");
  CHECK(dead[0].at("correlation_id") == "dead-1");
  CHECK(dead[0].at("attempts").to_number<int64_t>() == 2);
  CHECK(w.admin_json("/api/tenants/acme/parked?kind=rejection").at("parked").as_array().empty());
  int64_t id = dead[0].at("id").to_number<int64_t>();

  auto one = w.admin_get("/api/tenants/acme/parked/" + std::to_string(id));
  REQUIRE(one);
  REQUIRE(one->status == 200);
  json::value item = json::parse(one->body);
  INFO(one->body);
  CHECK(item.at("id").to_number<int64_t>() == id);
  CHECK(item.at("source").at("customer").at("email").as_string() == email(1));
  CHECK(!item.at("error").as_string().empty());
  auto missing = w.admin_get("/api/tenants/acme/parked/987654");
  REQUIRE(missing);
  CHECK(missing->status == 404);
  // An id past 64 bits is a 404 too (it was a 500: std::stoll threw).
  auto huge = w.admin_get("/api/tenants/acme/parked/99999999999999999999");
  REQUIRE(huge);
  CHECK(huge->status == 404);
  auto huge_resolve = w.admin_post("/api/tenants/acme/conflicts/99999999999999999999/resolve", R"({"side":"source"})");
  REQUIRE(huge_resolve);
  CHECK(huge_resolve->status == 404);

  w.om.set_down(false);
  CHECK(!w.om.contact_by_email(email(1)));
  auto replay = w.admin_post("/api/tenants/acme/parked/" + std::to_string(id) + "/replay");
  REQUIRE(replay);
  INFO(replay->body);
  REQUIRE(replay->status == 202);
  CHECK(json::parse(replay->body).at("replayed") == 1);
  if (!ServeWorld::wait_for([&] { return w.om.contact_by_email(email(1)).has_value(); })) {
    INFO("trace: " << w.admin_get("/api/trace/dead-1")->body);
    INFO("parked: " << w.admin_get("/api/tenants/acme/parked?all=1")->body);
    INFO("tenant: " << w.admin_get("/api/tenants/acme")->body);
    INFO("log: " << slurp(w.log_path));
    FAIL("the replayed record did not reach Omnisend");
  }
  CHECK(!w.om.contact_by_email(email(2)));
  // A body that is not exactly what replay takes is refused, never read as "replay all".
  for (const char* body : {R"({"kind":"dead_letter","ids":["424242"]})", R"({"kind":"dead_letter","id":[1]})",
                           R"({"kind":"dead_letter","ids":[1.5]})", R"({"kind":"dead_letter","ids":[]})",
                           R"({"kind":"dead_letters"})", R"([1])"}) {
    INFO(body);
    auto refused = w.admin_post("/api/tenants/acme/replay", body);
    REQUIRE(refused);
    CHECK(refused->status == 400);
    CHECK(json::parse(refused->body).at("error").at("code") == "bad_request");
  }
  CHECK(!w.om.contact_by_email(email(2)));
  CHECK(w.admin_json("/api/tenants/acme/parked?kind=dead_letter").at("parked").as_array().size() == 1);
  // The rest, all at once.
  auto bulk = w.admin_post("/api/tenants/acme/replay", R"({"kind":"dead_letter"})");
  REQUIRE(bulk);
  INFO(bulk->body);
  REQUIRE(bulk->status == 202);
  CHECK(json::parse(bulk->body).at("replayed") == 1);
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_by_email(email(2)).has_value(); }));
  // Replayed: off the list (kept with ?all); a second replay finds nothing to do.
  CHECK(w.admin_json("/api/tenants/acme/parked?kind=dead_letter").at("parked").as_array().empty());
  CHECK(w.admin_json("/api/tenants/acme/parked?all=1").at("parked").as_array().size() == 2);
  CHECK(w.admin_json("/api/tenants/acme/parked?kind=rejection").at("parked").as_array().empty());
  auto twice = w.admin_post("/api/tenants/acme/parked/" + std::to_string(id) + "/replay");
  REQUIRE(twice);
  CHECK(twice->status == 404);
  // The trace follows the record through the replay to its delivery.
  REQUIRE(ServeWorld::wait_for([&] {
    auto t = w.admin_get("/api/trace/dead-1");
    return t && t->status == 200 && t->body.find("\"replay\"") != std::string::npos &&
           json::parse(t->body).at("events").as_array().back().at("stage") == "delivered";
  }));

  // A conflict that does not exist.
  auto c = w.client();
  auto res = c.Post("/api/tenants/acme/conflicts/424242/resolve",
                    {{"Authorization", std::string("Bearer ") + kServeAdminToken}, {"X-Correlation-ID", "resolve-1"}},
                    R"({"side":"source"})", "application/json");
  REQUIRE(res);
  INFO(res->body);
  CHECK(res->status == 404);
  json::value e = json::parse(res->body);
  CHECK(e.at("error").at("code") == "not_found");
  CHECK(!e.at("error").at("message").as_string().empty());
  CHECK(e.at("error").at("correlationId") == "resolve-1");
  // A bad side is a 400 with the same shape.
  res = c.Post("/api/tenants/acme/conflicts/424242/resolve",
               {{"Authorization", std::string("Bearer ") + kServeAdminToken}}, R"({"side":"both"})", "application/json");
  REQUIRE(res);
  CHECK(res->status == 400);
  CHECK(json::parse(res->body).at("error").at("code") == "bad_request");
  CHECK(w.stop() == 0);
}

TEST_CASE("serve: without the watcher, SIGHUP and POST /api/reload swap in a changed script", "[serve]") {
  ServeWorld w;
  w.start({"--no-watch"});
  const std::string v0 = script_version(w);
  REQUIRE(!v0.empty());
  auto r = w.post_webhook(message(1), {{"X-Correlation-ID", "hup-1"}});
  REQUIRE(r);
  REQUIRE(r->status == 202);
  REQUIRE(ServeWorld::wait_for([&] { return stamped_version(w, "hup-1") == v0; }));

  // Not watched: a change waits for a signal.
  w.dir.write("acme/customers.lua", tagged_script("hup"));
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  CHECK(script_version(w) == v0);
  w.signal(SIGHUP);
  std::string v1;
  REQUIRE(ServeWorld::wait_for([&] { return (v1 = script_version(w)) != v0; }));
  auto report = tenant(w).at("last_reload").as_object();
  CHECK(str(report, "trigger") == "signal");
  CHECK(str(report, "result") == "loaded");
  r = w.post_webhook(message(2), {{"X-Correlation-ID", "hup-2"}});
  REQUIRE(r);
  REQUIRE(r->status == 202);
  REQUIRE(ServeWorld::wait_for([&] { return !stamped_version(w, "hup-2").empty(); }));
  CHECK(stamped_version(w, "hup-2") == v1);

  w.dir.write("acme/customers.lua", tagged_script("api"));
  auto api = w.admin_post("/api/reload?tenant=acme", "");
  REQUIRE(api);
  INFO(api->body);
  CHECK(api->status == 200);
  json::value rep = json::parse(api->body);
  CHECK(rep.at("result") == "loaded");
  CHECK(rep.at("previous").as_string() == v1);
  std::string v2(rep.at("version").as_string());
  CHECK(v2 != v1);
  REQUIRE(ServeWorld::wait_for([&] { return script_version(w) == v2; }));
  r = w.post_webhook(message(3), {{"X-Correlation-ID", "hup-3"}});
  REQUIRE(r);
  REQUIRE(r->status == 202);
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_by_email(email(3)).has_value(); }));
  CHECK(stamped_version(w, "hup-3") == v2);
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_by_email(email(1)) && w.om.contact_by_email(email(2)); }));
  CHECK(has_tag(*w.om.contact_by_email(email(3)), "reload:api"));
  CHECK(has_tag(*w.om.contact_by_email(email(2)), "reload:hup"));
  CHECK(!has_tag(*w.om.contact_by_email(email(1)), "reload:hup"));
  // Every tenant at once: nothing changed.
  auto all = w.admin_post("/api/reload", "");
  REQUIRE(all);
  CHECK(all->status == 200);
  CHECK(json::parse(all->body).at("acme").at("result") == "unchanged");
  CHECK(w.stop() == 0);
}

TEST_CASE("serve: a reload that changes the mapping refreshes every record when the flow asks for it", "[serve]") {
  const int n = 40;
  ServeWorld w(R"("refresh_on_change": true, "backfill": { "page_size": 20, "pause_ms": 0 })");
  start_with_contacts(w, n);
  // The mapping changes: every contact must get the new tag, though no customer changed.
  std::string before = script_version(w);
  w.dir.write("acme/customers.lua", tagged_script("v2"));
  REQUIRE(ServeWorld::wait_for([&] { return script_version(w) != before; }));
  REQUIRE(all_tagged(w, n, "reload:v2"));
  bool refreshed = false;
  for (auto& run : job_runs(w))
    if (run.at("job") == "backfill" && run.at("trigger") == "reload") refreshed = true;
  CHECK(refreshed);
  // A reload that changes nothing of the flow's code starts no refresh.
  size_t runs_before = job_runs(w).size();
  w.dir.write("acme/notes.txt", "not code");
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  CHECK(job_runs(w).size() == runs_before);
  CHECK(w.stop() == 0);
}

TEST_CASE("serve: a mapping changed while weft was down (a deploy by restart) is refreshed at start", "[serve]") {
  const int n = 30;
  ServeWorld w(R"("refresh_on_change": true, "backfill": { "page_size": 20, "pause_ms": 0 })");
  start_with_contacts(w, n);
  CHECK(w.stop() == 0);
  auto backfills = [&](const char* trigger) {
    int k = 0;
    for (auto& run : job_runs(w))
      if (run.at("job") == "backfill" && run.at("trigger") == trigger) ++k;
    return k;
  };
  // The same mapping again: no refresh.
  w.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  CHECK(backfills("start") == 0);
  CHECK(w.stop() == 0);
  // A new mapping deployed while weft was down: every contact gets it, though no customer
  // changed.
  w.dir.write("acme/customers.lua", tagged_script("v2"));
  w.start();
  REQUIRE(all_tagged(w, n, "reload:v2"));
  CHECK(backfills("start") == 1);
  CHECK(w.stop() == 0);
  // Remembered: the next start refreshes nothing more.
  w.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  CHECK(backfills("start") == 1);
  CHECK(w.stop() == 0);
}

TEST_CASE("serve: a mapping changed during a backfill is refreshed after it", "[serve]") {
  const int n = 40;
  ServeWorld w(R"("refresh_on_change": true, "backfill": { "page_size": 10, "pause_ms": 1000 })");
  start_with_contacts(w, n);
  // A backfill of 4 pages, 1 s apart; the mapping changes while it runs (on a host so busy
  // that the reload lands after it, the refresh simply starts at once: the checks hold).
  auto b = w.admin_post("/api/tenants/acme/flows/customers/jobs/backfill");
  REQUIRE(b);
  REQUIRE(b->status == 202);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::string before = script_version(w);
  w.dir.write("acme/customers.lua", tagged_script("v2"));
  REQUIRE(ServeWorld::wait_for([&] { return script_version(w) != before; }));
  // Every contact ends with the new mapping, those the running backfill took first too.
  REQUIRE(all_tagged(w, n, "reload:v2"));
  int manual = 0, refresh = 0;
  for (auto& run : job_runs(w)) {
    if (run.at("job") != "backfill") continue;
    if (run.at("trigger") == "reload") ++refresh;
    else ++manual;
  }
  CHECK(manual == 1);
  CHECK(refresh == 1);
  CHECK(w.stop() == 0);
}

TEST_CASE("serve: tenants come and go with their folders", "[serve]") {
  ServeWorld w;
  w.start();
  auto names = [&] {
    std::set<std::string> out;
    json::value all = w.admin_json("/api/tenants");  // kept alive for the loop
    for (auto& t : all.at("tenants").as_array()) out.insert(std::string(t.at("tenant").as_string()));
    return out;
  };
  REQUIRE(names() == std::set<std::string>{"acme"});
  // A second tenant: a copy of acme under another name.
  std::string cfg = slurp(w.ws + "/acme/tenant.json");
  cfg.replace(cfg.find("\"tenant\": \"acme\""), 16, "\"tenant\": \"beta\"");
  w.dir.write("beta/customers.lua", acme_script());
  w.dir.write("beta/tenant.json", cfg);
  REQUIRE(ServeWorld::wait_for([&] { return names().count("beta") == 1; }));
  REQUIRE(ServeWorld::wait_for([&] {
    auto t = w.admin_get("/api/tenants/beta");
    return t && t->status == 200 && json::parse(t->body).at("state") == "running";
  }));
  auto r = w.post_webhook(message(5), {}, "/webhooks/beta/ct");
  REQUIRE(r);
  CHECK(r->status == 202);
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_by_email(email(5)).has_value(); }));
  // A tenant broken from the start shows why in the admin API (not only in the log).
  std::string gamma = cfg;
  gamma.replace(gamma.find("\"tenant\": \"beta\""), 16, "\"tenant\": \"gamma\"");
  w.dir.write("gamma/customers.lua", "local oops = = 1\n" + acme_script());
  w.dir.write("gamma/tenant.json", gamma);
  json::object refused;
  REQUIRE(ServeWorld::wait_for([&] {
    auto t = w.admin_get("/api/tenants/gamma");
    if (!t || t->status != 200) return false;
    json::value v = json::parse(t->body);
    if (!v.as_object().contains("last_reload")) return false;
    refused = v.at("last_reload").as_object();
    return true;
  }));
  INFO(json::serialize(refused));
  CHECK(refused.at("result") == "refused");
  REQUIRE(refused.contains("problems"));
  CHECK(std::string(refused.at("problems").at(0).at("file").as_string()).find("customers.lua") != std::string::npos);
  CHECK(refused.at("problems").at(0).at("line").to_number<int>() == 1);
  std::filesystem::remove_all(w.ws + "/gamma");
  std::filesystem::remove_all(w.ws + "/beta");
  REQUIRE(ServeWorld::wait_for([&] { return names() == std::set<std::string>{"acme"}; }));
  r = w.post_webhook(message(6), {}, "/webhooks/beta/ct");
  REQUIRE(r);
  CHECK(r->status == 404);
  CHECK(w.stop() == 0);
}

TEST_CASE("serve: a notification deferred while the source is down is fetched again later, without a restart",
          "[serve]") {
  setenv("WEFT_DEFERRED_RETRY_MS", "1000", 1);  // instead of 30 s
  ServeWorld w;
  json::object c = w.ct.put_customer(serve_customer(9));
  w.start();
  unsetenv("WEFT_DEFERRED_RETRY_MS");
  // A change notification carries no customer: weft must fetch it, and the source is down.
  w.ct.set_down(true);
  auto r = w.post_webhook(json::serialize(w.ct.notification(std::string(c.at("id").as_string()), "ResourceUpdated")));
  REQUIRE(r);
  REQUIRE(r->status == 202);
  REQUIRE(ServeWorld::wait_for([&] { return w.metric("weft_records_total", "status=\"deferred\"") >= 1; }));
  CHECK(!w.om.contact_by_email(email(9)).has_value());
  // The source comes back: the record is tried again and delivered.
  w.ct.set_down(false);
  REQUIRE(ServeWorld::wait_for([&] { return w.om.contact_by_email(email(9)).has_value(); }, 30000));
  CHECK(w.stop() == 0);
}
