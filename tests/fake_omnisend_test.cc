// The fake Omnisend behaves like the real API where the sync engine depends on it.
#include <catch2/catch.hpp>
#include <httplib.h>

#include <boost/json.hpp>

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
}  // namespace

TEST_CASE("fake omnisend: auth, create, update by identifier, read back", "[fakes]") {
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

TEST_CASE("fake omnisend: validation errors and identifier conflicts", "[fakes]") {
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

TEST_CASE("fake omnisend: events are deduplicated on eventID + eventTime only", "[fakes]") {
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

TEST_CASE("fake omnisend: injected faults", "[fakes]") {
  FakeOmnisend fake;
  httplib::Client cli("127.0.0.1", fake.port());
  cli.set_read_timeout(0, 300000);

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
  CHECK_FALSE(cli.Post("/v3/contacts", key(), contact("a@x.se"), "application/json"));  // client gave up

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
  for (int i = 0; i < 200; ++i)
    if (cli.Post("/v3/contacts", key(), contact("u" + std::to_string(i) + "@x.se"), "application/json")->status >= 500)
      ++failed;
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
