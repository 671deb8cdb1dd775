// The commercetools source connector against the fake commercetools.
#include <catch2/catch.hpp>

#include <boost/json.hpp>
#include <set>
#include <thread>

#include "connectors/commercetools/client.h"
#include "tests/fakes/commercetools.h"

using namespace weft::connectors::commercetools;
using weft::fakes::FakeCommercetools;
namespace json = boost::json;

namespace {
Settings settings(const FakeCommercetools& ct, const std::string& secret = "client-secret") {
  return {ct.url(), ct.url(), "acme-shop", "client-id", secret, 2000};
}
json::object customer(int i) { return weft::fakes::sample_customer(i); }
}  // namespace

TEST_CASE("commercetools source: the delta pull pages through every change once, ties included", "[connectors]") {
  FakeCommercetools ct;
  for (int i = 0; i < 1001; ++i) {
    json::object c = customer(i);
    if (i % 3 == 2)  // a run of equal timestamps across page boundaries
      c["lastModifiedAt"] = ct.customer(std::string(customer(i - 1).at("id").as_string()))->at("lastModifiedAt");
    ct.put_customer(c);
  }
  Source src(settings(ct));
  std::string cursor;
  std::vector<std::string> ids;
  Page page;
  Error err;
  int pages = 0;
  do {
    REQUIRE(src.customers_since(cursor, 100, &page, &err));
    for (const auto& r : page.records) ids.push_back(json::value_to<std::string>(json::parse(r).at("id")));
    cursor = page.cursor;
  } while (page.more && ++pages < 50);
  CHECK(ids.size() == 1001);
  CHECK(std::set<std::string>(ids.begin(), ids.end()).size() == 1001);
  CHECK(src.tokens_fetched() == 1);  // cached across pages

  // Later changes are picked up from the stored cursor, and only they.
  ct.put_customer(customer(7));
  REQUIRE(src.customers_since(cursor, 100, &page, &err));
  REQUIRE(page.records.size() == 1);
  CHECK(json::parse(page.records[0]).at("version") == 2);
  CHECK_FALSE(page.more);
  REQUIRE(src.customers_since(page.cursor, 100, &page, &err));
  CHECK(page.records.empty());

  std::string one;
  REQUIRE(src.customer(std::string(customer(7).at("id").as_string()), &one, &err));
  CHECK(json::parse(one).at("version") == 2);
  CHECK_FALSE(src.customer("missing", &one, &err));
  CHECK(err.status == 404);
  CHECK_FALSE(err.transient);
}

TEST_CASE("commercetools source: a customer nested 60 levels deep is pulled like any other", "[connectors]") {
  // weft reads documents up to 64 levels everywhere; a page nests its records two deeper,
  // and Boost.JSON's default limit (32) made such a page, and so the whole pull, fail.
  FakeCommercetools ct;
  json::object c = customer(1);
  json::value deep = "leaf";
  for (int i = 0; i < 58; ++i) deep = json::array{deep};
  c["custom"] = json::object{{"fields", json::object{{"deep", deep}}}};
  ct.put_customer(c);
  ct.put_customer(customer(2));
  Source src(settings(ct));
  Page page;
  Error err;
  REQUIRE(src.customers_since("", 100, &page, &err));
  CHECK(page.records.size() == 2);
  std::string one;
  REQUIRE(src.customer(std::string(customer(1).at("id").as_string()), &one, &err));
  CHECK(one.find("leaf") != std::string::npos);
}

TEST_CASE("commercetools source: tokens are renewed before expiry and after a 401", "[connectors]") {
  FakeCommercetools ct;
  ct.put_customer(customer(1));
  int64_t now = 0;
  Source src(settings(ct), [&] { return now; });
  Page page;
  Error err;
  ct.set_token_lifetime(3600);
  REQUIRE(src.customers_since("", 10, &page, &err));
  now += 3600 * 1000 - 30000;  // inside the last minute: renewed before use
  REQUIRE(src.customers_since("", 10, &page, &err));
  CHECK(src.tokens_fetched() == 2);
  // A token the API stops accepting (revoked, or expired early) is replaced once, transparently.
  ct.revoke_tokens();
  REQUIRE(src.customers_since("", 10, &page, &err));  // 401 invalid_token -> new token -> ok
  CHECK(src.tokens_fetched() == 3);
  // Still 401 with a fresh token: reported, not retried forever.
  ct.set_token_lifetime(0);
  ct.revoke_tokens();
  CHECK_FALSE(src.customers_since("", 10, &page, &err));
  CHECK(err.status == 401);
  CHECK(src.tokens_fetched() == 4);
}

TEST_CASE("commercetools source: failures say whether a retry can help", "[connectors]") {
  FakeCommercetools ct;
  Page page;
  Error err;
  Source bad(settings(ct, "wrong-secret"));
  CHECK_FALSE(bad.customers_since("", 10, &page, &err));
  CHECK(err.status == 401);
  CHECK_FALSE(err.transient);
  CHECK_THAT(err.message, Catch::Contains("invalid_client"));

  Source src(settings(ct));
  weft::fakes::Faults f;
  f.server_error = 1;
  ct.set_faults(f);
  CHECK_FALSE(src.customers_since("", 10, &page, &err));
  CHECK(err.status >= 500);
  CHECK(err.transient);
  f = {};
  f.reset = 1;
  ct.set_faults(f);
  CHECK_FALSE(src.customers_since("", 10, &page, &err));
  CHECK(err.transient);
  ct.set_faults({});
  CHECK(src.customers_since("", 10, &page, &err));

  Settings s = settings(ct);
  s.api_url = "http://127.0.0.1:1";  // nothing listens there
  Source unreachable(s);
  CHECK_FALSE(unreachable.customers_since("", 10, &page, &err));
  CHECK(err.status == 0);
  CHECK(err.transient);
  CHECK_THROWS(Source(Settings{"not a url", "http://x", "p", "i", "s", 1000}));
}
