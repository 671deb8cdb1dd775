// Delivery building blocks: retry policy and backoff, the rate limiter, Retry-After, and
// the Omnisend connector's classification of answers (also against the fake Omnisend).
#include <catch2/catch.hpp>
#include <httplib.h>

#include <boost/json.hpp>

#include "connectors/omnisend/errors.h"
#include "engine/delivery/rate_limiter.h"
#include "engine/delivery/retry.h"
#include "engine/delivery/send_result.h"
#include "tests/fakes/omnisend.h"

using namespace weft::delivery;
namespace omnisend = weft::connectors::omnisend;
namespace json = boost::json;

TEST_CASE("delivery: durations and the retry policy from tenant.json", "[delivery]") {
  CHECK(parse_duration_ms("500ms") == 500);
  CHECK(parse_duration_ms("30s") == 30000);
  CHECK(parse_duration_ms("5m") == 300000);
  CHECK(parse_duration_ms("24h") == 86400000);
  CHECK(parse_duration_ms("2d") == 172800000);
  CHECK_FALSE(parse_duration_ms("5"));
  CHECK_FALSE(parse_duration_ms("h"));
  CHECK_FALSE(parse_duration_ms("5w"));
  CHECK_FALSE(parse_duration_ms("-5s"));
  // Too long is refused, never read as something else: overflowing digits, past 100 years.
  CHECK_FALSE(parse_duration_ms("99999999999999999999d"));
  CHECK_FALSE(parse_duration_ms("106751991167d"));  // overflows int64 milliseconds when scaled
  CHECK_FALSE(parse_duration_ms("36501d"));
  CHECK(parse_duration_ms("36500d") == kMaxDurationMs);
  json::object cfg = json::parse(R"({"max_attempts": 4, "base_ms": 100, "max_ms": 1000, "max_age": "1h"})").as_object();
  RetryPolicy p = retry_policy_from(&cfg);
  CHECK(p.max_attempts == 4);
  CHECK(p.base_ms == 100);
  CHECK(p.max_ms == 1000);
  CHECK(p.max_age_ms == 3600000);
  CHECK(retry_policy_from(nullptr).max_attempts == RetryPolicy{}.max_attempts);
}

TEST_CASE("delivery: backoff grows exponentially with full jitter, capped, never before Retry-After",
          "[delivery]") {
  RetryPolicy p;
  p.base_ms = 100;
  p.max_ms = 1000;
  std::mt19937_64 rng(1);
  for (int attempt = 1; attempt <= 30; ++attempt) {
    int64_t ceiling = std::min<int64_t>(1000, 100LL << std::min(attempt - 1, 20));
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < 400; ++i) {
      int64_t d = backoff_ms(p, attempt, std::nullopt, rng);
      lo = std::min(lo, d);
      hi = std::max(hi, d);
    }
    INFO("attempt " << attempt);
    CHECK(lo >= 0);
    CHECK(hi <= ceiling);
    CHECK(hi > ceiling / 2);  // full jitter spreads over the whole range
    CHECK(lo < ceiling / 2);
  }
  for (int i = 0; i < 100; ++i) CHECK(backoff_ms(p, 1, 7000, rng) >= 7000);
  CHECK(may_retry(p, 1, 0, 1000));
  CHECK_FALSE(may_retry(p, p.max_attempts, 0, 1000));
  CHECK_FALSE(may_retry(p, 1, 0, p.max_age_ms + 1));
}

TEST_CASE("delivery: the rate limiter allows N per sliding window", "[delivery]") {
  RateLimiter limit(400, 60000);
  for (int i = 0; i < 400; ++i) REQUIRE(limit.acquire(1000 + i) == 0);
  CHECK(limit.acquire(1500) == 1000 + 60000 - 1500);  // until the first one leaves the window
  CHECK(limit.acquire(61000) == 0);                   // the first left
  CHECK(limit.acquire(61000) > 0);
  RateLimiter off(0, 60000);
  for (int i = 0; i < 10000; ++i) REQUIRE(off.acquire(0) == 0);
}

TEST_CASE("delivery: a 429 pauses the connection's limiter, also with no limit set", "[delivery]") {
  RateLimiter off(0, 60000);
  off.pause_until(5000);
  CHECK(off.acquire(1000) == 4000);
  off.pause_until(3000);  // a shorter pause does not cut the longer one
  CHECK(off.acquire(4000) == 1000);
  CHECK(off.acquire(5000) == 0);
  RateLimiter some(2, 60000);
  some.pause_until(2000);
  CHECK(some.acquire(1000) == 1000);
  CHECK(some.acquire(2000) == 0);  // the pause took no token
  CHECK(some.acquire(2000) == 0);
  CHECK(some.acquire(2000) > 0);

  SendResult limited{SendResult::Kind::transient, 429, 7000, "rate limit exceeded"};
  CHECK(connection_pause_ms(limited) == 7000);
  limited.retry_after_ms.reset();
  CHECK(connection_pause_ms(limited) == 10000);  // no hint: Omnisend's window slides over a minute
  limited.retry_after_ms = kMaxRetryAfterMs;
  CHECK(connection_pause_ms(limited) == 15 * 60000);  // the operation waits its hint, not the connection
  SendResult unavailable{SendResult::Kind::transient, 503, 7000, "down"};
  CHECK(connection_pause_ms(unavailable) == 0);  // about this request, not the limit
}

TEST_CASE("delivery: a connection's limiter is shared by whoever calls it", "[delivery]") {
  auto worker = shared_limiter("t/omni", 2, 60000);
  auto job = shared_limiter("t/omni", 2, 60000);  // a reconciliation of the same connection
  CHECK(worker == job);
  CHECK(worker->acquire(1000) == 0);
  CHECK(job->acquire(1000) == 0);
  CHECK(worker->acquire(1000) > 0);  // the two together used the connection's 2
  CHECK(shared_limiter("t/other", 2, 60000) != worker);
  CHECK(shared_limiter("t/omni", 3, 60000) != worker);  // a reloaded limit: a new limiter
  std::weak_ptr<RateLimiter> gone = worker;
  worker->pause_until(5000);  // a 429
  worker.reset();
  job.reset();
  CHECK(gone.expired());  // not kept once nobody holds it
  // The pause is the connection's: a limiter made again (a restarted runner, another limit)
  // still holds it.
  CHECK(shared_limiter("t/omni", 2, 60000)->acquire(1000) == 4000);
  CHECK(shared_limiter("t/omni", 5, 60000)->acquire(1000) == 4000);
  CHECK(shared_limiter("t/other", 2, 60000)->acquire(1000) == 0);
  CHECK(shared_limiter("t/omni", 2, 60000)->acquire(5000) == 0);
}

TEST_CASE("delivery: Retry-After as seconds or an HTTP date", "[delivery]") {
  CHECK(parse_retry_after("7", 0) == 7000);
  CHECK(parse_retry_after("0", 0) == 0);
  // An absurd hint is capped (now + wait must not overflow) and dead-letters by max_age.
  CHECK(parse_retry_after("9223372036854775", 0) == kMaxRetryAfterMs);
  CHECK(parse_retry_after("Fri, 01 Jan 9999 00:00:00 GMT", 0) == kMaxRetryAfterMs);
  {
    std::mt19937_64 rng(1);
    RetryPolicy p;
    int64_t now = 1700000000000;
    int64_t next = now + backoff_ms(p, 1, parse_retry_after("9223372036854775", now), rng);
    CHECK(next > now);
    CHECK_FALSE(may_retry(p, 1, now, next));
  }
  int64_t now = 1445412470000;  // 2015-10-21T07:27:50Z
  CHECK(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 10000);
  CHECK(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now) == 0);  // already past
  CHECK_FALSE(parse_retry_after("", 0));
  CHECK_FALSE(parse_retry_after("soon", 0));
  CHECK_FALSE(parse_retry_after("-3", 0));
}

TEST_CASE("omnisend connector: answers are classified as done, transient or permanent", "[delivery][omnisend]") {
  using Kind = SendResult::Kind;
  CHECK(omnisend::classify(200, "", "{}", 0).kind == Kind::ok);
  CHECK(omnisend::classify(201, "", "{}", 0).kind == Kind::ok);
  auto limited = omnisend::classify(429, "", R"({"title":"Too Many Requests","status":429,"retryAfter":12})", 0);
  CHECK(limited.kind == Kind::transient);
  CHECK(limited.retry_after_ms == 12000);
  CHECK(omnisend::classify(429, "3", "{}", 0).retry_after_ms == 3000);  // a header wins
  CHECK(omnisend::classify(503, "", "oops", 0).kind == Kind::transient);
  CHECK(omnisend::classify(0, "", "", 0).kind == Kind::transient);
  CHECK(omnisend::classify(401, "", "{}", 0).kind == Kind::transient);  // fix the key, replay
  auto invalid = omnisend::classify(
      400, "", R"({"title":"Bad Request","detail":"validation failed","errors":[{"field":"identifiers[0].id","message":"phone must be in E.164 format"}]})",
      0);
  CHECK(invalid.kind == Kind::permanent);
  CHECK(invalid.message == "Bad Request: validation failed (identifiers[0].id: phone must be in E.164 format)");
  CHECK(omnisend::classify(409, "", "not json", 0).message == "not json");
}

TEST_CASE("omnisend connector: classification of the fake's real answers", "[delivery][omnisend]") {
  weft::fakes::FakeOmnisend fake;
  httplib::Client cli("127.0.0.1", fake.port());
  httplib::Headers key{{"X-API-KEY", "test-key"}};
  auto send = [&](const std::string& body) {
    auto r = cli.Post("/v3/contacts", key, body, "application/json");
    if (!r) return omnisend::classify(0, "", "", 0);
    return omnisend::classify(r->status, r->get_header_value("Retry-After"), r->body, 0);
  };
  CHECK(send(R"({"identifiers":[{"type":"email","id":"a@x.se"}]})").kind == SendResult::Kind::ok);
  auto bad = send(R"({"identifiers":[{"type":"phone","id":"070"}]})");
  CHECK(bad.kind == SendResult::Kind::permanent);
  CHECK_THAT(bad.message, Catch::Contains("E.164"));
  weft::fakes::Faults f;
  f.rate_limited = 1;
  f.retry_after_s = 9;
  fake.set_faults(f);
  auto limited = send(R"({"identifiers":[{"type":"email","id":"a@x.se"}]})");
  CHECK(limited.kind == SendResult::Kind::transient);
  CHECK(limited.retry_after_ms == 9000);
  f = {};
  f.reset = 1;
  fake.set_faults(f);
  CHECK(send(R"({"identifiers":[{"type":"email","id":"a@x.se"}]})").kind == SendResult::Kind::transient);
}

#include "connectors/omnisend/client.h"

TEST_CASE("omnisend destination: upserts contacts and events against the fake", "[delivery][omnisend]") {
  weft::fakes::FakeOmnisend fake("secret-key");
  omnisend::Destination dest({fake.base_url(), "secret-key", 500});
  std::string id;
  auto ok = dest.upsert_contact(R"({"identifiers":[{"type":"email","id":"a@x.se"}],"firstName":"Anna"})", 0, &id);
  CHECK(ok.kind == SendResult::Kind::ok);
  CHECK(ok.status == 201);
  CHECK_FALSE(id.empty());
  std::string again;
  CHECK(dest.upsert_contact(R"({"identifiers":[{"type":"email","id":"a@x.se"}],"firstName":"Anne"})", 0, &again).status == 200);
  CHECK(again == id);
  CHECK(fake.contact_by_email("a@x.se")->at("firstName") == "Anne");
  CHECK(fake.requests().back().api_key == "secret-key");
  auto ev = dest.send_event(R"({"eventName":"placed order","eventID":"o1","eventTime":"2024-01-01T00:00:00Z","origin":"api","contact":{"email":"a@x.se"}})", 0);
  CHECK(ev.kind == SendResult::Kind::ok);

  omnisend::Destination wrong_key({fake.base_url(), "other", 500});
  CHECK(wrong_key.upsert_contact(R"({"identifiers":[{"type":"email","id":"b@x.se"}]})", 0, nullptr).kind ==
        SendResult::Kind::transient);
  weft::fakes::Faults slow;
  slow.timeout = 1;
  slow.timeout_ms = 1500;
  fake.set_faults(slow);
  auto timed_out = dest.upsert_contact(R"({"identifiers":[{"type":"email","id":"c@x.se"}]})", 0, nullptr);
  CHECK(timed_out.kind == SendResult::Kind::transient);
  CHECK(timed_out.status == 0);
  CHECK_THAT(timed_out.message, Catch::Contains("no answer"));
  CHECK_THROWS(omnisend::Destination({"ftp://x", "k", 100}));
}

TEST_CASE("omnisend destination: batch results reach their contacts, also two with one identifier",
          "[delivery][omnisend]") {
  weft::fakes::FakeOmnisend fake("secret-key");
  omnisend::Destination dest({fake.base_url(), "secret-key", 2000});
  std::vector<std::string> texts = {
      R"({"identifiers":[{"type":"email","id":"a@x.se"}],"firstName":"Anna"})",
      R"({"identifiers":[{"type":"email","id":"b@x.se"}],"firstName":"Bo"})",
      R"({"identifiers":[{"type":"phone","id":"12"}]})",  // refused: not E.164
      R"({"identifiers":[{"type":"email","id":"a@x.se"}],"lastName":"Berg"})"};
  std::vector<std::string_view> views(texts.begin(), texts.end());
  auto results = dest.upsert_contacts(views, 10000);
  REQUIRE(results.size() == 4);
  CHECK(results[0].result.kind == SendResult::Kind::ok);
  CHECK(results[1].result.kind == SendResult::Kind::ok);
  CHECK(results[2].result.kind == SendResult::Kind::permanent);
  CHECK(results[2].result.status == 400);
  // The two writes of a@x.se each got an answer (before: the first had none, and was sent again).
  CHECK(results[3].result.kind == SendResult::Kind::ok);
  CHECK(results[0].contact_id == results[3].contact_id);
  CHECK(results[0].contact_id != results[1].contact_id);
  CHECK(results[1].answer.at("firstName") == "Bo");
  CHECK(results[3].answer.at("lastName") == "Berg");
}
