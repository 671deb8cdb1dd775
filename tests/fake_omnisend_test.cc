// The fake Omnisend behaves like the real API where the sync engine depends on it.
#include <catch2/catch.hpp>
#include <httplib.h>

#include <boost/json.hpp>
#include <chrono>
#include <thread>

#include "tests/fakes/omnisend.h"

using weft::fakes::FakeOmnisend;
using weft::fakes::OmnisendFaults;
namespace json = boost::json;

namespace {
httplib::Headers key(const std::string& k = "test-key") { return {{"X-API-KEY", k}}; }

std::string contact(const std::string& email, const std::string& extra = "") {
  return R"({"identifiers":[{"type":"email","id":")" + email +
         R"(","channels":{"email":{"status":"subscribed"}}}])" + extra + "}";
}

// A contact write carrying the commercetools version it was made from.
std::string versioned(const std::string& email, int version) {
  return R"({"identifiers":[{"type":"email","id":")" + email + R"("}],"customProperties":{"commercetoolsVersion":)" +
         std::to_string(version) + "}}";
}

int post(httplib::Client& cli, const std::string& path, const std::string& body) {
  auto r = cli.Post(path.c_str(), key(), body, "application/json");
  return r ? r->status : -1;
}

std::string contact_id(const json::object& c) { return std::string(c.at("contactID").as_string()); }

// The contacts GET /v3/contacts?<query> answers.
json::array listed(httplib::Client& cli, const std::string& query) {
  auto r = cli.Get(("/v3/contacts?" + query).c_str(), key());
  REQUIRE(r);
  REQUIRE(r->status == 200);
  return json::parse(r->body).at("contacts").as_array();
}

// The channel status an identifier of a contact has ("" if none).
std::string channel_status(const json::object& c, const std::string& type, const std::string& channel) {
  for (const auto& i : c.at("identifiers").as_array()) {
    if (i.at("type") != type.c_str()) continue;
    const auto* channels = i.as_object().if_contains("channels");
    if (!channels || !channels->as_object().contains(channel)) return "";
    return std::string(channels->at(channel).at("status").as_string());
  }
  return "";
}
}  // namespace

TEST_CASE("fake omnisend: auth, create, update by identifier, read back", "[fakes][fake_omnisend]") {
  FakeOmnisend fake;
  httplib::Client cli("127.0.0.1", fake.port());
  auto denied = cli.Post("/v3/contacts", key("wrong"), contact("a@x.se"), "application/json");
  REQUIRE(denied);
  CHECK(denied->status == 401);
  CHECK(fake.contacts().empty());

  auto created = cli.Post("/v3/contacts", key(), contact("a@x.se", R"(,"firstName":"Anna")"), "application/json");
  REQUIRE(created);
  CHECK(created->status == 201);
  std::string id(json::parse(created->body).at("contactID").as_string());

  auto updated = cli.Post("/v3/contacts", key(), contact("a@x.se", R"(,"firstName":"Anne")"), "application/json");
  REQUIRE(updated);
  CHECK(updated->status == 200);
  CHECK(json::parse(updated->body).at("contactID").as_string() == id);
  REQUIRE(fake.contacts().size() == 1);
  CHECK(fake.contact_by_email("a@x.se")->at("firstName") == "Anne");

  auto got = cli.Get(("/v3/contacts/" + id).c_str(), key());
  REQUIRE(got);
  CHECK(got->status == 200);
  auto by_email = cli.Get("/v3/contacts?email=a@x.se", key());
  REQUIRE(by_email);
  CHECK(json::parse(by_email->body).at("contacts").as_array().size() == 1);
  auto missing = cli.Get("/v3/contacts/ffffffffffffffffffffffff", key());
  REQUIRE(missing);
  CHECK(missing->status == 404);

  std::string seen;
  for (const auto& r : fake.requests()) seen += r.method + " " + r.path + " " + std::to_string(r.status) + "\n";
  INFO(seen);
  CHECK(fake.requests().size() == 6);
  CHECK(fake.requests()[5].status == 404);
  CHECK(fake.requests()[0].status == 401);
  CHECK(fake.requests()[1].status == 201);
}

TEST_CASE("fake omnisend: validation errors and identifier conflicts", "[fakes][fake_omnisend]") {
  FakeOmnisend fake;
  httplib::Client cli("127.0.0.1", fake.port());
  auto bad = cli.Post("/v3/contacts", key(), R"({"identifiers":[{"type":"phone","id":"0701234567"}]})", "application/json");
  REQUIRE(bad);
  CHECK(bad->status == 400);
  auto problem = json::parse(bad->body);
  CHECK(problem.at("status") == 400);
  CHECK(problem.at("errors").at(0).at("field") == "identifiers[0].id");
  CHECK(cli.Post("/v3/contacts", key(), "not json", "application/json")->status == 400);
  CHECK(cli.Post("/v3/contacts", key(), R"({"firstName":"x"})", "application/json")->status == 400);

  // Two contacts, then one request naming both of their identifiers: 409.
  CHECK(cli.Post("/v3/contacts", key(), contact("a@x.se"), "application/json")->status == 201);
  CHECK(cli.Post("/v3/contacts", key(), R"({"identifiers":[{"type":"phone","id":"+46701234567"}]})", "application/json")->status == 201);
  auto both = cli.Post("/v3/contacts", key(),
                       R"({"identifiers":[{"type":"email","id":"a@x.se"},{"type":"phone","id":"+46701234567"}]})",
                       "application/json");
  REQUIRE(both);
  CHECK(both->status == 409);
  CHECK(fake.contacts().size() == 2);
}

TEST_CASE("fake omnisend: events are deduplicated on eventID + eventTime only", "[fakes][fake_omnisend]") {
  FakeOmnisend fake;
  httplib::Client cli("127.0.0.1", fake.port());
  std::string ev = R"({"eventName":"placed order","eventID":"o1","eventTime":"2024-01-01T00:00:00Z","origin":"api","contact":{"email":"a@x.se"}})";
  CHECK(cli.Post("/v3/events", key(), ev, "application/json")->status == 200);
  CHECK(cli.Post("/v3/events", key(), ev, "application/json")->status == 200);
  std::string no_time = R"({"eventName":"viewed","eventID":"v1","origin":"api","contact":{"email":"a@x.se"}})";
  CHECK(cli.Post("/v3/events", key(), no_time, "application/json")->status == 200);
  CHECK(cli.Post("/v3/events", key(), no_time, "application/json")->status == 200);
  CHECK(fake.events().size() == 3);
  CHECK(cli.Post("/v3/events", key(), R"({"eventName":"x"})", "application/json")->status == 400);
}

TEST_CASE("fake omnisend: injected faults", "[fakes][fake_omnisend]") {
  FakeOmnisend fake;
  httplib::Client cli("127.0.0.1", fake.port());

  OmnisendFaults limited;
  limited.rate_limited = 1;
  limited.retry_after_s = 7;
  limited.retry_after_header = true;
  fake.set_faults(limited);
  auto r = cli.Post("/v3/contacts", key(), contact("a@x.se"), "application/json");
  REQUIRE(r);
  CHECK(r->status == 429);
  CHECK(json::parse(r->body).at("retryAfter") == 7);
  CHECK(r->get_header_value("Retry-After") == "7");

  OmnisendFaults reset;
  reset.reset = 1;
  fake.set_faults(reset);
  auto broken = cli.Post("/v3/contacts", key(), contact("a@x.se"), "application/json");
  CHECK((!broken || broken->body.size() < 64));  // the answer never arrives whole

  OmnisendFaults slow;
  slow.timeout = 1;
  slow.timeout_ms = 800;
  fake.set_faults(slow);
  httplib::Client quick("127.0.0.1", fake.port());  // only this client gives up after 300 ms
  quick.set_read_timeout(0, 300000);
  CHECK_FALSE(quick.Post("/v3/contacts", key(), contact("a@x.se"), "application/json"));  // client gave up

  OmnisendFaults errors;
  errors.server_error = 1;
  fake.set_faults(errors);
  auto e = cli.Post("/v3/contacts", key(), contact("a@x.se"), "application/json");
  REQUIRE(e);
  CHECK(e->status >= 500);

  // A share of faults: about that share of requests fail, repeatably for a seed.
  OmnisendFaults some;
  some.server_error = 0.3;
  fake.set_faults(some);
  int failed = 0;
  for (int i = 0; i < 200; ++i) {
    auto got = cli.Post("/v3/contacts", key(), contact("u" + std::to_string(i) + "@x.se"), "application/json");
    REQUIRE(got);
    if (got->status >= 500) ++failed;
  }
  CHECK(failed > 30);
  CHECK(failed < 90);

  fake.set_faults({});
  fake.set_down(true);
  CHECK(cli.Post("/v3/contacts", key(), contact("a@x.se"), "application/json")->status == 503);
  fake.set_down(false);
  CHECK(cli.Post("/v3/contacts", key(), contact("z@x.se"), "application/json")->status == 201);
  CHECK(fake.delete_contact_by_email("z@x.se"));
  CHECK_FALSE(fake.contact_by_email("z@x.se"));
}

TEST_CASE("fake omnisend: the identifier index follows creates, merges, deletes and PATCHes", "[fake_omnisend]") {
  FakeOmnisend fake;
  httplib::Client cli("127.0.0.1", fake.port());
  cli.set_keep_alive(true);
  cli.set_tcp_nodelay(true);
  CHECK(post(cli, "/v3/contacts",
             R"({"identifiers":[{"type":"email","id":"a@x.se"},{"type":"phone","id":"+46700000001"}]})") == 201);
  std::string a = contact_id(*fake.contact_by_email("a@x.se"));
  // Found by its phone, it gains a second email: both emails and the phone lead to it.
  CHECK(post(cli, "/v3/contacts",
             R"({"identifiers":[{"type":"phone","id":"+46700000001"},{"type":"email","id":"a2@x.se"}]})") == 200);
  REQUIRE(fake.contact_by_email("a2@x.se"));
  CHECK(contact_id(*fake.contact_by_email("a2@x.se")) == a);
  CHECK(fake.contact_by_email("a2@x.se")->at("identifiers").as_array().size() == 3);
  REQUIRE(listed(cli, "phone=%2B46700000001").size() == 1);
  CHECK(contact_id(listed(cli, "phone=%2B46700000001")[0].as_object()) == a);

  CHECK(post(cli, "/v3/contacts", contact("b@x.se")) == 201);
  std::string b = contact_id(*fake.contact_by_email("b@x.se"));
  CHECK(b != a);
  CHECK(post(cli, "/v3/contacts", R"({"identifiers":[{"type":"email","id":"a2@x.se"},{"type":"email","id":"b@x.se"}]})") ==
        409);
  CHECK(fake.contact_count() == 2);

  // Deleted: none of its identifiers leads anywhere; the phone is free for a new contact.
  CHECK(fake.delete_contact_by_email("a@x.se"));
  CHECK_FALSE(fake.delete_contact_by_email("a@x.se"));
  CHECK_FALSE(fake.contact_by_email("a2@x.se"));
  CHECK(listed(cli, "phone=%2B46700000001").empty());
  CHECK(post(cli, "/v3/contacts", R"({"identifiers":[{"type":"phone","id":"+46700000001"}]})") == 201);
  CHECK(fake.contact_count() == 2);
  std::string c = contact_id(listed(cli, "phone=%2B46700000001")[0].as_object());
  CHECK(c != a);

  // PATCH: an identifier of another contact is a conflict; a new one is indexed.
  auto taken = cli.Patch(("/v3/contacts/" + b).c_str(), key(),
                         R"({"identifiers":[{"type":"phone","id":"+46700000001"}]})", "application/json");
  REQUIRE(taken);
  CHECK(taken->status == 409);
  auto added = cli.Patch(("/v3/contacts/" + b).c_str(), key(),
                         R"({"identifiers":[{"type":"phone","id":"+46700000002"}],"firstName":"Bo"})", "application/json");
  REQUIRE(added);
  CHECK(added->status == 200);
  CHECK(json::parse(added->body).at("firstName") == "Bo");
  REQUIRE(listed(cli, "phone=%2B46700000002").size() == 1);
  CHECK(contact_id(listed(cli, "phone=%2B46700000002")[0].as_object()) == b);
  CHECK(post(cli, "/v3/contacts", R"({"identifiers":[{"type":"phone","id":"+46700000002"}],"lastName":"B"})") == 200);
  CHECK(fake.contact_by_email("b@x.se")->at("lastName") == "B");
  auto bad = cli.Patch(("/v3/contacts/" + b).c_str(), key(), R"({"identifiers":[{"type":"fax","id":"1"}]})",
                       "application/json");
  REQUIRE(bad);
  CHECK(bad->status == 400);

  // Many contacts: each found again by its email, and an update finds the right one.
  for (int i = 0; i < 2000; ++i) REQUIRE(post(cli, "/v3/contacts", contact("n" + std::to_string(i) + "@x.se")) == 201);
  CHECK(fake.contact_count() == 2002);
  CHECK(post(cli, "/v3/contacts", contact("n1234@x.se", R"(,"firstName":"N")")) == 200);
  CHECK(fake.contact_by_email("n1234@x.se")->at("firstName") == "N");
  CHECK_FALSE(fake.contact_by_email("n1233@x.se")->contains("firstName"));
  CHECK(listed(cli, "email=n1999@x.se").size() == 1);
}

TEST_CASE("fake omnisend: an update without channels keeps the consent set in Omnisend", "[fake_omnisend]") {
  FakeOmnisend fake;
  httplib::Client cli("127.0.0.1", fake.port());
  CHECK(post(cli, "/v3/contacts", contact("a@x.se", R"(,"firstName":"Anna")")) == 201);
  CHECK(channel_status(*fake.contact_by_email("a@x.se"), "email", "email") == "subscribed");
  // The customer unsubscribes in Omnisend; then a sync sends the email without consent.
  REQUIRE(fake.update_contact("a@x.se", [](json::object& c) {
    c["identifiers"].as_array()[0].as_object()["channels"] =
        json::object{{"email", json::object{{"status", "unsubscribed"}, {"statusDate", "2024-02-01T00:00:00Z"}}}};
  }));
  CHECK(post(cli, "/v3/contacts", R"({"identifiers":[{"type":"email","id":"a@x.se"}],"firstName":"Anne"})") == 200);
  auto c = *fake.contact_by_email("a@x.se");
  CHECK(c.at("firstName") == "Anne");
  CHECK(channel_status(c, "email", "email") == "unsubscribed");
  CHECK(c.at("identifiers").as_array()[0].at("channels").at("email").at("statusDate") == "2024-02-01T00:00:00Z");

  // Channels sent are merged channel by channel: the one named changes, the others stay.
  CHECK(post(cli, "/v3/contacts",
             R"({"identifiers":[{"type":"email","id":"a@x.se","channels":{"sms":{"status":"subscribed"}}}]})") == 200);
  c = *fake.contact_by_email("a@x.se");
  CHECK(channel_status(c, "email", "email") == "unsubscribed");
  CHECK(channel_status(c, "email", "sms") == "subscribed");
  CHECK(post(cli, "/v3/contacts",
             R"({"identifiers":[{"type":"email","id":"a@x.se","channels":{"email":{"status":"subscribed"}}}]})") == 200);
  c = *fake.contact_by_email("a@x.se");
  CHECK(channel_status(c, "email", "email") == "subscribed");
  CHECK(channel_status(c, "email", "sms") == "subscribed");
  CHECK(c.at("identifiers").as_array().size() == 1);

  // A phone identifier added later keeps the email's channels, and is merged the same way.
  CHECK(post(cli, "/v3/contacts",
             R"({"identifiers":[{"type":"email","id":"a@x.se"},{"type":"phone","id":"+46701234567","channels":{"sms":{"status":"nonSubscribed"}}}]})") ==
        200);
  CHECK(post(cli, "/v3/contacts", R"({"identifiers":[{"type":"phone","id":"+46701234567"}]})") == 200);
  c = *fake.contact_by_email("a@x.se");
  CHECK(channel_status(c, "phone", "sms") == "nonSubscribed");
  CHECK(channel_status(c, "email", "email") == "subscribed");
}

TEST_CASE("fake omnisend: customProperties are merged key by key, other fields replaced", "[fake_omnisend]") {
  FakeOmnisend fake;
  httplib::Client cli("127.0.0.1", fake.port());
  CHECK(post(cli, "/v3/contacts", contact("a@x.se", R"(,"tags":["a","b"],"city":"Lund","customProperties":{"tier":"gold","points":10})")) == 201);
  std::string id = contact_id(*fake.contact_by_email("a@x.se"));
  auto r = cli.Post("/v3/contacts", key(), contact("a@x.se", R"(,"tags":["c"],"customProperties":{"points":12,"store":"se"})"),
                    "application/json");
  REQUIRE(r);
  CHECK(r->status == 200);
  auto answered = json::parse(r->body).as_object();
  CHECK(answered.at("contactID") == id.c_str());
  CHECK(answered.at("customProperties") == json::parse(R"({"tier":"gold","points":12,"store":"se"})"));
  CHECK(answered.at("tags") == json::parse(R"(["c"])"));
  CHECK(answered.at("city") == "Lund");  // not sent: kept
  CHECK(*fake.contact_by_email("a@x.se") == answered);

  auto patched = cli.Patch(("/v3/contacts/" + id).c_str(), key(), R"({"customProperties":{"tier":"silver"},"contactID":"x"})",
                           "application/json");
  REQUIRE(patched);
  CHECK(patched->status == 200);
  auto c = *fake.contact_by_email("a@x.se");
  CHECK(c.at("customProperties") == json::parse(R"({"tier":"silver","points":12,"store":"se"})"));
  CHECK(c.at("contactID") == id.c_str());
}

TEST_CASE("fake omnisend: written commercetools versions and order violations", "[fake_omnisend]") {
  FakeOmnisend fake;
  httplib::Client cli("127.0.0.1", fake.port());
  cli.set_keep_alive(true);
  cli.set_tcp_nodelay(true);
  for (int v : {1, 2, 2, 1, 3}) CHECK(post(cli, "/v3/contacts", versioned("a@x.se", v)) < 300);
  CHECK(fake.written_versions("a@x.se") == std::vector<int64_t>{1, 2, 2, 1, 3});
  CHECK(fake.order_violations() == 1);  // the 1 after the 2; the resent 2 is fine

  // Another contact has its own history; a version older than a@'s is no violation there.
  CHECK(post(cli, "/v3/contacts", versioned("b@x.se", 1)) == 201);
  CHECK(post(cli, "/v3/contacts", contact("b@x.se")) == 200);  // no version: not recorded
  CHECK(fake.written_versions("b@x.se") == std::vector<int64_t>{1});
  CHECK(fake.order_violations() == 1);

  // PATCH writes count too; failed writes do not.
  std::string id = contact_id(*fake.contact_by_email("a@x.se"));
  auto patched = cli.Patch(("/v3/contacts/" + id).c_str(), key(), R"({"customProperties":{"commercetoolsVersion":2}})",
                           "application/json");
  REQUIRE(patched);
  CHECK(patched->status == 200);
  CHECK(post(cli, "/v3/contacts",
             R"({"identifiers":[{"type":"email","id":"a@x.se"},{"type":"email","id":"b@x.se"}],"customProperties":{"commercetoolsVersion":0}})") ==
        409);
  CHECK(fake.written_versions("a@x.se") == std::vector<int64_t>{1, 2, 2, 1, 3, 2});
  CHECK(fake.order_violations() == 2);
  CHECK(fake.written_versions("nobody@x.se").empty());
  CHECK(fake.written_versions("b@x.se") == std::vector<int64_t>{1});
}

TEST_CASE("fake omnisend: a request before the wait a 429 asked for is a violation", "[fake_omnisend]") {
  FakeOmnisend fake;
  httplib::Client cli("127.0.0.1", fake.port());
  OmnisendFaults limited;
  limited.rate_limited = 1;
  limited.retry_after_s = 1;
  fake.set_faults(limited);
  CHECK(post(cli, "/v3/contacts", contact("a@x.se")) == 429);
  CHECK(post(cli, "/v3/contacts", contact("b@x.se")) == 429);
  fake.set_faults({});
  CHECK(post(cli, "/v3/contacts", contact("a@x.se")) == 201);  // retried at once
  CHECK(fake.retry_after_violations() == 1);
  CHECK(post(cli, "/v3/contacts", contact("c@x.se")) == 201);  // another email: no wait asked
  CHECK(fake.retry_after_violations() == 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  CHECK(post(cli, "/v3/contacts", contact("b@x.se")) == 201);  // retried after the wait
  CHECK(fake.retry_after_violations() == 1);
  CHECK(post(cli, "/v3/contacts", contact("a@x.se")) == 200);  // its wait is over too
  CHECK(fake.retry_after_violations() == 1);

  // Without an email in the body, the wait is per method + path.
  fake.set_faults(limited);
  auto got = cli.Get("/v3/contacts", key());
  REQUIRE(got);
  CHECK(got->status == 429);
  fake.set_faults({});
  CHECK(cli.Get("/v3/contacts", key())->status == 200);
  CHECK(fake.retry_after_violations() == 2);
}

TEST_CASE("fake omnisend: update_contact changes a contact as Omnisend's UI would", "[fake_omnisend]") {
  FakeOmnisend fake;
  httplib::Client cli("127.0.0.1", fake.port());
  CHECK_FALSE(fake.update_contact("a@x.se", [](json::object&) {}));
  CHECK(post(cli, "/v3/contacts", contact("a@x.se")) == 201);
  CHECK(post(cli, "/v3/contacts", contact("b@x.se")) == 201);
  std::string id = contact_id(*fake.contact_by_email("a@x.se"));

  // A new email and a phone (and an attempt to change the contactID, which is kept).
  REQUIRE(fake.update_contact("a@x.se", [](json::object& c) {
    c["identifiers"] = json::parse(R"([{"type":"email","id":"new@x.se"},{"type":"phone","id":"+46701234567"}])");
    c["contactID"] = "ffff";
    c["firstName"] = "Ny";
  }));
  CHECK_FALSE(fake.contact_by_email("a@x.se"));
  REQUIRE(fake.contact_by_email("new@x.se"));
  CHECK(contact_id(*fake.contact_by_email("new@x.se")) == id);
  CHECK(fake.contact_by_email("new@x.se")->at("firstName") == "Ny");
  CHECK(contact_id(listed(cli, "phone=%2B46701234567")[0].as_object()) == id);
  CHECK(post(cli, "/v3/contacts", contact("a@x.se")) == 201);  // the old email is free: a new contact
  CHECK(fake.contact_count() == 3);

  // An identifier of another contact: refused, nothing changes.
  CHECK_FALSE(fake.update_contact("new@x.se", [](json::object& c) {
    c["identifiers"].as_array().push_back(json::object{{"type", "email"}, {"id", "b@x.se"}});
    c["firstName"] = "X";
  }));
  CHECK(fake.contact_by_email("new@x.se")->at("firstName") == "Ny");
  CHECK(contact_id(*fake.contact_by_email("b@x.se")) != id);
  CHECK(fake.written_versions("new@x.se").empty());  // not a write by a client
}

namespace {
// GET path -> parsed answer (status checked by the caller through `status`).
json::object got(httplib::Client& cli, const std::string& path, int* status) {
  auto r = cli.Get(path.c_str(), key());
  REQUIRE(r);
  *status = r->status;
  return json::parse(r->body).as_object();
}
}  // namespace

TEST_CASE("fake omnisend: batches process each item as its own request, polled asynchronously", "[fake_omnisend]") {
  FakeOmnisend fake;
  httplib::Client cli("127.0.0.1", fake.port());
  CHECK(post(cli, "/v3/contacts", versioned("old@x.se", 5)) == 201);
  std::string old_id = contact_id(*fake.contact_by_email("old@x.se"));

  std::string batch = R"({"method":"POST","endpoint":"contacts","origin":"api","items":[)"
                      R"({"identifiers":[{"type":"email","id":"no-at.x.se"}]},)" +
                      versioned("new@x.se", 1) + "," + versioned("old@x.se", 3) + "]}";
  auto denied = cli.Post("/v3/batches", key("wrong"), batch, "application/json");
  REQUIRE(denied);
  CHECK(denied->status == 401);
  CHECK(fake.batch_count() == 0);
  CHECK(cli.Get("/v3/batches/ba7c00000000000000000001", key("wrong"))->status == 401);

  auto created = cli.Post("/v3/batches", key(), batch, "application/json");
  REQUIRE(created);
  REQUIRE(created->status == 201);
  auto c = json::parse(created->body).as_object();
  CHECK(c.size() == 2);
  CHECK(c.at("totalCount") == 3);
  std::string id(c.at("batchID").as_string());
  CHECK(id.size() == 24);
  CHECK(id.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(fake.batch_count() == 1);

  // Processed at once: the contacts are there, with their write history.
  CHECK(fake.contact_count() == 2);
  REQUIRE(fake.contact_by_email("new@x.se"));
  CHECK(contact_id(*fake.contact_by_email("old@x.se")) == old_id);
  CHECK(fake.contact_by_email("old@x.se")->at("customProperties").at("commercetoolsVersion") == 3);
  CHECK(fake.written_versions("old@x.se") == std::vector<int64_t>{5, 3});
  CHECK(fake.written_versions("new@x.se") == std::vector<int64_t>{1});
  CHECK(fake.order_violations() == 1);

  // The first GET sees it in progress, the next one finished.
  int status = 0;
  auto first = got(cli, "/v3/batches/" + id, &status);
  CHECK(status == 200);
  CHECK(first.at("status") == "inProgress");
  CHECK(first.at("finishedCount") == 0);
  CHECK(first.at("batchID") == id.c_str());
  CHECK(first.at("method") == "POST");
  CHECK(first.at("endpoint") == "contacts");
  CHECK(first.at("totalCount") == 3);
  CHECK(first.at("createdAt").is_string());
  auto second = got(cli, "/v3/batches/" + id, &status);
  CHECK(status == 200);
  CHECK(second.at("status") == "finished");
  CHECK(second.at("finishedCount") == 3);
  CHECK(second.at("errorsCount") == 1);
  CHECK(second.at("endedAt").is_string());
  CHECK_FALSE(second.contains("responses"));

  auto items = got(cli, "/v3/batches/" + id + "/items", &status);
  CHECK(status == 200);
  CHECK(items.at("status") == "finished");
  CHECK(items.at("batchID") == id.c_str());
  const auto& responses = items.at("responses").as_array();
  const auto& errors = items.at("errors").as_array();
  REQUIRE(responses.size() == 2);
  REQUIRE(errors.size() == 1);
  CHECK(responses[0].at("responseCode") == 201);
  CHECK(responses[0].at("response").at("contactID") == contact_id(*fake.contact_by_email("new@x.se")).c_str());
  CHECK(responses[0].at("request") == json::parse(versioned("new@x.se", 1)));
  CHECK(responses[1].at("responseCode") == 200);
  CHECK(responses[1].at("response").at("contactID") == old_id.c_str());
  CHECK(responses[1].at("status") == "finished");
  CHECK(responses[0].at("itemID").as_string().size() == 24);
  CHECK(responses[0].at("itemID") != responses[1].at("itemID"));
  CHECK(errors[0].at("responseCode") == 400);
  CHECK(errors[0].at("response").at("status") == 400);
  CHECK(errors[0].at("response").at("errors").at(0).at("field") == "identifiers[0].id");
  CHECK(errors[0].at("status") == "finished");

  // A 409 per item, as POST /v3/contacts answers it; nothing is written.
  std::string conflict = R"({"method":"PUT","endpoint":"contacts","items":[{"identifiers":[{"type":"email","id":"new@x.se"},{"type":"email","id":"old@x.se"}],"customProperties":{"commercetoolsVersion":0}}]})";
  auto c2 = cli.Post("/v3/batches", key(), conflict, "application/json");
  REQUIRE(c2);
  REQUIRE(c2->status == 201);
  std::string id2(json::parse(c2->body).at("batchID").as_string());
  CHECK(id2 != id);
  got(cli, "/v3/batches/" + id2 + "/items", &status);  // the first GET: in progress
  auto items2 = got(cli, "/v3/batches/" + id2 + "/items", &status);
  CHECK(items2.at("responses").as_array().empty());
  REQUIRE(items2.at("errors").as_array().size() == 1);
  CHECK(items2.at("errors").at(0).at("responseCode") == 409);
  CHECK(fake.written_versions("old@x.se") == std::vector<int64_t>{5, 3});
  CHECK(fake.order_violations() == 1);

  // Events, processed (and deduplicated) like POST /v3/events.
  std::string ev = R"({"eventName":"placed order","eventID":"o1","eventTime":"2024-01-01T00:00:00Z","origin":"api","contact":{"email":"a@x.se"}})";
  auto c3 = cli.Post("/v3/batches", key(), R"({"method":"POST","endpoint":"events","items":[)" + ev + "," + ev + R"(,{"eventName":"x"}]})",
                     "application/json");
  REQUIRE(c3);
  CHECK(c3->status == 201);
  CHECK(fake.events().size() == 1);
  CHECK(fake.batch_count() == 3);

  // Invalid batches: 400 problem JSON, nothing created.
  std::string many = R"({"method":"POST","endpoint":"contacts","items":[)";
  for (int i = 0; i < 101; ++i) many += (i ? "," : "") + contact("m" + std::to_string(i) + "@x.se");
  many += "]}";
  auto too_many = cli.Post("/v3/batches", key(), many, "application/json");
  REQUIRE(too_many);
  CHECK(too_many->status == 400);
  CHECK(json::parse(too_many->body).at("errors").at(0).at("field") == "items");
  CHECK(post(cli, "/v3/batches", R"({"method":"POST","endpoint":"contacts","items":[]})") == 400);
  CHECK(post(cli, "/v3/batches", R"({"method":"DELETE","endpoint":"contacts","items":[{}]})") == 400);
  CHECK(post(cli, "/v3/batches", R"({"method":"POST","endpoint":"orders","items":[{}]})") == 400);
  CHECK(post(cli, "/v3/batches", "not json") == 400);
  CHECK(fake.batch_count() == 3);
  CHECK(fake.contact_count() == 2);

  // Unknown batch: 404 problem JSON.
  auto unknown = cli.Get("/v3/batches/ffffffffffffffffffffffff", key());
  REQUIRE(unknown);
  CHECK(unknown->status == 404);
  CHECK(json::parse(unknown->body).at("status") == 404);
  auto unknown_items = cli.Get("/v3/batches/nope/items", key());
  REQUIRE(unknown_items);
  CHECK(unknown_items->status == 404);
  CHECK(json::parse(unknown_items->body).at("status") == 404);
}

TEST_CASE("fake omnisend: faults apply to a batch as a whole", "[fake_omnisend]") {
  FakeOmnisend fake;
  httplib::Client cli("127.0.0.1", fake.port());
  std::string batch = R"({"method":"POST","endpoint":"contacts","items":[)" + contact("a@x.se") + "," + contact("b@x.se") + "]}";
  OmnisendFaults limited;
  limited.rate_limited = 1;
  limited.retry_after_s = 1;
  fake.set_faults(limited);
  CHECK(post(cli, "/v3/batches", batch) == 429);
  CHECK(fake.batch_count() == 0);
  CHECK(fake.contact_count() == 0);
  fake.set_faults({});
  // Each item's contact was told to wait: another batch without them is fine, a batch or a
  // single write of one of them before the wait is over is a violation (once per request).
  std::string other = R"({"method":"POST","endpoint":"contacts","items":[)" + contact("c@x.se") + "]}";
  CHECK(post(cli, "/v3/batches", other) == 201);
  CHECK(fake.retry_after_violations() == 0);
  CHECK(post(cli, "/v3/batches", batch) == 201);  // retried at once
  CHECK(fake.retry_after_violations() == 1);
  CHECK(fake.contact_count() == 3);

  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  fake.set_faults(limited);
  CHECK(post(cli, "/v3/batches", batch) == 429);
  fake.set_faults({});
  CHECK(post(cli, "/v3/contacts", contact("b@x.se")) == 200);  // one of its contacts on its own, at once
  CHECK(fake.retry_after_violations() == 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  CHECK(post(cli, "/v3/batches", batch) == 201);  // after the wait
  CHECK(fake.retry_after_violations() == 2);

  OmnisendFaults errors;
  errors.server_error = 1;
  fake.set_faults(errors);
  CHECK(post(cli, "/v3/batches", batch) >= 500);
  CHECK(fake.batch_count() == 3);
  auto log = fake.requests();
  REQUIRE(log.size() == 7);
  CHECK(log[0].path == "/v3/batches");
  CHECK(log[0].status == 429);
  CHECK(log[1].status == 201);
  CHECK(log[6].status >= 500);
}
