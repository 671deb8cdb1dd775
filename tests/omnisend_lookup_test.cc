// Omnisend lookups for reconciliation: Destination::find_contact against the fake Omnisend.
#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include "connectors/omnisend/client.h"
#include "tests/fakes/omnisend.h"

namespace omnisend = weft::connectors::omnisend;
using weft::delivery::SendResult;
using weft::fakes::FakeOmnisend;
using weft::fakes::OmnisendFaults;
namespace json = boost::json;

namespace {
std::string contact(const std::string& email, const std::string& phone = "") {
  std::string ids = R"({"type":"email","id":")" + email + R"(","channels":{"email":{"status":"subscribed"}}})";
  if (!phone.empty()) ids += R"(,{"type":"phone","id":")" + phone + R"(","channels":{"sms":{"status":"nonSubscribed"}}})";
  return R"({"identifiers":[)" + ids + R"(],"firstName":"Ada"})";
}

// Creates the contact through the client itself; returns its contactID.
std::string create(omnisend::Destination& dest, const std::string& body) {
  std::string id;
  auto r = dest.upsert_contact(body, 0, &id);
  REQUIRE(r.kind == SendResult::Kind::ok);
  REQUIRE(!id.empty());
  return id;
}
}  // namespace

TEST_CASE("omnisend find_contact: found by email and by phone", "[omnisend]") {
  FakeOmnisend fake;
  omnisend::Destination dest({fake.base_url(), "test-key", 2000});
  std::string id = create(dest, contact("ada@x.se", "+46701234567"));
  create(dest, contact("bob@x.se"));

  std::string got;
  SendResult err;
  REQUIRE(dest.find_contact("email", "ada@x.se", &got, &err));
  REQUIRE(!got.empty());
  json::value c = json::parse(got);
  CHECK(c.at("contactID") == id.c_str());
  CHECK(c.at("firstName") == "Ada");

  got.clear();
  REQUIRE(dest.find_contact("phone", "+46701234567", &got, &err));  // '+' is sent encoded
  REQUIRE(!got.empty());
  CHECK(json::parse(got).at("contactID") == id.c_str());

  REQUIRE(dest.find_contact("email", "bob@x.se", &got, &err));
  CHECK(json::parse(got).at("contactID") != id.c_str());

  // The request as Omnisend saw it: a GET with the key and the filter.
  auto reqs = fake.requests();
  REQUIRE(!reqs.empty());
  CHECK(reqs.back().method == "GET");
  CHECK(reqs.back().api_key == "test-key");
}

TEST_CASE("omnisend find_contact: not found", "[omnisend]") {
  FakeOmnisend fake;
  omnisend::Destination dest({fake.base_url(), "test-key", 2000});
  std::string got = "stale";
  SendResult err;
  REQUIRE(dest.find_contact("email", "nobody@x.se", &got, &err));
  CHECK(got.empty());

  create(dest, contact("gone@x.se"));
  REQUIRE(dest.find_contact("email", "gone@x.se", &got, &err));
  CHECK(!got.empty());
  REQUIRE(fake.delete_contact_by_email("gone@x.se"));
  REQUIRE(dest.find_contact("email", "gone@x.se", &got, &err));
  CHECK(got.empty());

  // Only "email" and "phone" are lookups Omnisend offers: anything else fails without a request.
  size_t before = fake.request_count();
  CHECK_FALSE(dest.find_contact("externalId", "x", &got, &err));
  CHECK(err.kind == SendResult::Kind::permanent);
  CHECK(err.message.find("externalId") != std::string::npos);
  CHECK(fake.request_count() == before);
}

TEST_CASE("omnisend find_contact: 429 is transient with the retry hint", "[omnisend]") {
  FakeOmnisend fake;
  omnisend::Destination dest({fake.base_url(), "test-key", 2000});
  OmnisendFaults limited;
  limited.rate_limited = 1;
  limited.retry_after_s = 7;
  SECTION("hint in the body (Omnisend's way)") {}
  SECTION("hint in a Retry-After header") { limited.retry_after_header = true; }
  fake.set_faults(limited);

  std::string got = "stale";
  SendResult err;
  CHECK_FALSE(dest.find_contact("email", "ada@x.se", &got, &err));
  CHECK(got.empty());
  CHECK(err.kind == SendResult::Kind::transient);
  CHECK(err.status == 429);
  REQUIRE(err.retry_after_ms);
  CHECK(*err.retry_after_ms >= 6000);
  CHECK(*err.retry_after_ms <= 7000);
}

TEST_CASE("omnisend find_contact: 401, 5xx and no answer", "[omnisend]") {
  FakeOmnisend fake;
  std::string got;
  SendResult err;

  omnisend::Destination wrong_key({fake.base_url(), "other-key", 2000});
  CHECK_FALSE(wrong_key.find_contact("email", "ada@x.se", &got, &err));
  CHECK(err.status == 401);
  CHECK(err.kind == SendResult::Kind::transient);  // waits for the configuration to be fixed, as sends do
  CHECK(!err.message.empty());

  omnisend::Destination dest({fake.base_url(), "test-key", 2000});
  fake.set_down(true);
  CHECK_FALSE(dest.find_contact("email", "ada@x.se", &got, &err));
  CHECK(err.status == 503);
  CHECK(err.kind == SendResult::Kind::transient);
  fake.set_down(false);

  omnisend::Destination nowhere({"http://127.0.0.1:1/v3", "test-key", 500});
  CHECK_FALSE(nowhere.find_contact("email", "ada@x.se", &got, &err));
  CHECK(err.status == 0);
  CHECK(err.kind == SendResult::Kind::transient);
  CHECK(err.message.find("no answer from Omnisend") == 0);
}
