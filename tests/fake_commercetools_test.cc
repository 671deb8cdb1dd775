// The fake commercetools behaves like the real API where the delta pull depends on it.
#include <catch2/catch.hpp>
#include <httplib.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <set>
#include <thread>

#include "tests/fakes/commercetools.h"

using weft::fakes::FakeCommercetools;
namespace json = boost::json;

namespace {
std::string token(httplib::Client& cli, const std::string& id = "client-id", const std::string& secret = "client-secret",
                  int* status = nullptr) {
  cli.set_basic_auth(id.c_str(), secret.c_str());
  auto r = cli.Post("/oauth/token", "grant_type=client_credentials", "application/x-www-form-urlencoded");
  cli.set_basic_auth("", "");
  REQUIRE(r);
  if (status) *status = r->status;
  if (r->status != 200) return "";
  return std::string(json::parse(r->body).at("access_token").as_string());
}

httplib::Headers bearer(const std::string& t) { return {{"Authorization", "Bearer " + t}}; }

json::object customer(int i) { return weft::fakes::sample_customer(i); }
// The query of one delta page of 500 after (last_time, last_id), the id breaking ties; the
// first page when last_time is empty. `extra` is one more parameter.
httplib::Params delta_page(const std::string& last_time, const std::string& last_id,
                           std::pair<std::string, std::string> extra) {
  httplib::Params p{{"limit", "500"}, {"sort", "lastModifiedAt asc"}, std::move(extra)};
  if (!last_time.empty())
    p.emplace("where", "lastModifiedAt > \"" + last_time + "\" or (lastModifiedAt = \"" + last_time +
                           "\" and id > \"" + last_id + "\")");
  return p;
}

}  // namespace

TEST_CASE("fake commercetools: client credentials, expiring tokens", "[fakes][fake_commercetools]") {
  FakeCommercetools ct;
  httplib::Client cli("127.0.0.1", ct.port());
  int status = 0;
  CHECK(token(cli, "client-id", "wrong", &status).empty());
  CHECK(status == 401);
  CHECK(cli.Get("/acme-shop/customers")->status == 401);
  ct.set_token_lifetime(1);
  std::string t = token(cli);
  REQUIRE_FALSE(t.empty());
  CHECK(cli.Get("/acme-shop/customers", bearer(t))->status == 200);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  auto expired = cli.Get("/acme-shop/customers", bearer(t));
  CHECK(expired->status == 401);
  CHECK(json::parse(expired->body).at("errors").at(0).at("code") == "invalid_token");
  CHECK(ct.tokens_issued() == 1);
}

TEST_CASE("fake commercetools: delta pages by lastModifiedAt with an id tie-breaker", "[fakes][fake_commercetools]") {
  FakeCommercetools ct;
  // 1,203 customers; every fourth shares its timestamp with the previous one (ties).
  for (int i = 0; i < 1203; ++i) {
    json::object c = customer(i);
    if (i % 4 == 3) c["lastModifiedAt"] = ct.customer(std::string(customer(i - 1).at("id").as_string()))->at("lastModifiedAt");
    ct.put_customer(c);
  }
  ct.put_customer(customer(5));  // an update: version 2, newest timestamp
  CHECK(ct.customer(std::string(customer(5).at("id").as_string()))->at("version") == 2);
  httplib::Client cli("127.0.0.1", ct.port());
  auto auth = bearer(token(cli));

  std::string last_time, last_id;
  std::vector<std::string> seen;
  for (int pages = 0; pages < 10; ++pages) {
    httplib::Params p = delta_page(last_time, last_id, {"withTotal", "false"});
    auto r = cli.Get("/acme-shop/customers", p, auth);
    REQUIRE(r);
    REQUIRE(r->status == 200);
    auto results = json::parse(r->body).at("results").as_array();
    if (results.empty()) break;
    for (const auto& c : results) seen.push_back(std::string(c.at("id").as_string()));
    last_time = std::string(results.back().at("lastModifiedAt").as_string());
    last_id = std::string(results.back().at("id").as_string());
  }
  CHECK(seen.size() == 1203);
  CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == 1203);
  CHECK(seen.back() == std::string(customer(5).at("id").as_string()));  // the update comes last

  auto simple = cli.Get("/acme-shop/customers", httplib::Params{{"where", "lastModifiedAt >= \"2024-01-01T00:00:00.005Z\""}, {"limit", "3"}}, auth);
  REQUIRE(simple);
  CHECK(json::parse(simple->body).at("results").as_array().size() == 3);
  CHECK(cli.Get("/acme-shop/customers", httplib::Params{{"limit", "501"}}, auth)->status == 400);
  CHECK(cli.Get("/acme-shop/customers", httplib::Params{{"offset", "10001"}}, auth)->status == 400);
  auto bad = cli.Get("/acme-shop/customers", httplib::Params{{"where", "email = \"x\""}}, auth);
  CHECK(bad->status == 400);
  CHECK(json::parse(bad->body).at("errors").at(0).at("code") == "InvalidInput");
  CHECK(cli.Get(("/acme-shop/customers/" + seen[0]).c_str(), auth)->status == 200);
  auto missing = cli.Get("/acme-shop/customers/nope", auth);
  CHECK(missing->status == 404);
  CHECK(json::parse(missing->body).at("errors").at(0).at("code") == "ResourceNotFound");
}

TEST_CASE("fake commercetools: subscription notifications and faults", "[fakes][fake_commercetools]") {
  FakeCommercetools ct;
  auto c = ct.put_customer(customer(1));
  std::string id(c.at("id").as_string());
  ct.put_customer(customer(1));
  auto msg = ct.notification(id, "Message", "CustomerLastNameSet");
  CHECK(msg.at("notificationType") == "Message");
  CHECK(msg.at("sequenceNumber") == 2);
  CHECK(msg.at("resourceVersion") == 2);
  CHECK(msg.at("resource").at("id").as_string() == id);
  CHECK(msg.contains("customer"));
  auto big = ct.notification(id, "Message", "CustomerCreated", true);
  CHECK(big.contains("payloadNotIncluded"));
  CHECK_FALSE(big.contains("customer"));
  auto upd = ct.notification(id, "ResourceUpdated");
  CHECK(upd.at("version") == 2);
  CHECK(upd.at("oldVersion") == 1);

  httplib::Client cli("127.0.0.1", ct.port());
  auto auth = bearer(token(cli));
  weft::fakes::Faults f;
  f.server_error = 1;
  ct.set_faults(f);
  auto r = cli.Get("/acme-shop/customers", auth);
  REQUIRE(r);
  CHECK(r->status >= 500);
  CHECK(json::parse(r->body).as_object().contains("statusCode"));
  ct.set_faults({});
  CHECK(cli.Get("/acme-shop/customers", auth)->status == 200);
  CHECK(ct.requests().back().status == 200);
}

TEST_CASE("fake commercetools: bulk seeding, and paging through 20,000 customers by predicate", "[fake_commercetools]") {
  FakeCommercetools ct;
  ct.put_customers_bulk(0, 20000);
  REQUIRE(ct.customer_count() == 20000);
  auto c7 = *ct.customer(std::string(customer(7).at("id").as_string()));
  CHECK(c7.at("email") == "c7@x.se");
  CHECK(c7.at("version") == 1);
  CHECK(c7.at("lastModifiedAt") == "2024-01-01T00:00:00.008Z");
  // Three updates at one later time (a tie the id breaks), one deletion.
  for (int i : {300, 20, 9000}) {
    json::object c = customer(i);
    c["lastModifiedAt"] = "2030-01-01T00:00:00.000Z";
    ct.put_customer(c);
  }
  CHECK(ct.delete_customer(std::string(customer(5).at("id").as_string())));
  CHECK_FALSE(ct.delete_customer(std::string(customer(5).at("id").as_string())));

  httplib::Client cli("127.0.0.1", ct.port());
  cli.set_keep_alive(true);
  cli.set_tcp_nodelay(true);
  auto auth = bearer(token(cli));
  std::vector<std::string> seen;
  std::vector<std::pair<std::string, std::string>> order;
  std::string last_time, last_id;
  int pages = 0;
  for (; pages < 100; ++pages) {
    httplib::Params p = delta_page(last_time, last_id, {"sort", "id asc"});
    auto r = cli.Get("/acme-shop/customers", p, auth);
    REQUIRE(r);
    REQUIRE(r->status == 200);
    auto page = json::parse(r->body).as_object();
    CHECK(page.at("total").to_number<size_t>() == 19999 - seen.size());  // what is left, this page included
    auto results = page.at("results").as_array();
    if (results.empty()) break;
    CHECK(page.at("count").to_number<size_t>() == results.size());
    for (const auto& c : results) {
      seen.push_back(std::string(c.at("id").as_string()));
      order.emplace_back(std::string(c.at("lastModifiedAt").as_string()), seen.back());
    }
    last_time = order.back().first;
    last_id = order.back().second;
  }
  CHECK(pages == 40);
  CHECK(seen.size() == 19999);
  CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == 19999);
  CHECK(std::is_sorted(order.begin(), order.end()));
  CHECK(std::find(seen.begin(), seen.end(), std::string(customer(5).at("id").as_string())) == seen.end());
  REQUIRE(seen.size() >= 3);
  CHECK(seen[seen.size() - 3] == std::string(customer(20).at("id").as_string()));
  CHECK(seen[seen.size() - 2] == std::string(customer(300).at("id").as_string()));
  CHECK(seen[seen.size() - 1] == std::string(customer(9000).at("id").as_string()));

  // The simple predicates, and offset on top of a predicate.
  auto after = [&](const std::string& where, const std::string& offset) {
    auto r = cli.Get("/acme-shop/customers", httplib::Params{{"where", where}, {"limit", "2"}, {"offset", offset}}, auth);
    REQUIRE(r);
    REQUIRE(r->status == 200);
    return json::parse(r->body).as_object();
  };
  auto gt = after("lastModifiedAt > \"2024-01-01T00:00:00.010Z\"", "0");
  CHECK(gt.at("results").at(0).at("email") == "c10@x.se");
  CHECK(gt.at("total") == 19999 - 9);  // c0..c9 but c5 are before
  auto ge = after("lastModifiedAt >= \"2024-01-01T00:00:00.010Z\"", "0");
  CHECK(ge.at("results").at(0).at("email") == "c9@x.se");
  auto skip = after("lastModifiedAt >= \"2024-01-01T00:00:00.010Z\"", "3");
  CHECK(skip.at("results").at(0).at("email") == "c12@x.se");
  auto none = after("lastModifiedAt > \"2031-01-01T00:00:00.000Z\"", "0");
  CHECK(none.at("results").as_array().empty());
  CHECK(none.at("total") == 0);
}

// (How fast it seeds and pages is for the benchmark to show, not for a timed test on a
// shared machine; this checks that deep pages of a large set come back right.)
TEST_CASE("fake commercetools: a hundred thousand customers seed and page deep", "[fake_commercetools]") {
  FakeCommercetools ct;
  ct.put_customers_bulk(0, 100000);
  CHECK(ct.customer_count() == 100000);

  httplib::Client cli("127.0.0.1", ct.port());
  cli.set_keep_alive(true);
  cli.set_tcp_nodelay(true);
  auto auth = bearer(token(cli));
  // 20 pages deep in the listing, each starting where its predicate says.
  for (int i = 0; i < 20; ++i) {
    char when[40];
    std::snprintf(when, sizeof when, "2024-01-01T00:01:%02d.%03dZ", 20 + i / 2, i % 2 * 500);  // customer 80,000 on
    auto r = cli.Get("/acme-shop/customers",
                     httplib::Params{{"limit", "100"}, {"where", std::string("lastModifiedAt > \"") + when + "\""}}, auth);
    REQUIRE(r);
    REQUIRE(r->status == 200);
    auto results = json::parse(r->body).at("results").as_array();
    REQUIRE(results.size() == 100);
    CHECK(std::string(results[0].at("lastModifiedAt").as_string()) > when);
  }
}
