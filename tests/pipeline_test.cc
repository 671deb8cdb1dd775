// The pipeline's steps against a real store, without the network: ordering and replays,
// identity (guest -> registered, duplicate identifiers), and the merge policies as they
// shape the planned request.
#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include "engine/pipeline/fields.h"
#include "engine/pipeline/pipeline.h"
#include "engine/store/store.h"
#include "engine/util/ids.h"
#include "engine/workspace/tenant.h"
#include "tests/test_util.h"

using namespace weft;
using weft::testing::TempDir;
namespace json = boost::json;
using Status = pipeline::RecordResult::Status;

namespace {

const char* kTenant = R"({
  "tenant": "t",
  "limits": { "cpu_ms": 2000 },
  "connections": {
    "ct": { "system": "commercetools", "project": "t-shop", "client_id": "t-client", "client_secret": "${T_CT_SECRET}",
            "webhook": { "hmac_secret": "${T_CT_HOOK}" } },
    "om": { "system": "omnisend", "api_key": "${T_OM_KEY}" }
  },
  "flows": {
    "customers": { "source": { "connection": "ct", "entity": "customer" },
                   "destination": { "connection": "om", "entity": "contact" }, "script": "customers.lua" },
    "guest_orders": { "source": { "connection": "ct", "entity": "order" },
                      "destination": { "connection": "om", "entity": "contact" }, "script": "guest_orders.lua" },
    "placed": { "source": { "connection": "ct", "entity": "order" },
                "destination": { "connection": "om", "entity": "event" }, "script": "placed.lua" }
  }
})";

// An event per message (no M.key): weft fills in eventID and eventTime.
const char* kPlaced = R"(return { map = function(rec)
  return { eventName = "placed order", origin = "api", contact = { email = rec.customerEmail },
           properties = { orderID = rec.id } }
end })";

const char* kCustomers = R"(local M = {}
M.key = function(rec) return rec.id end
M.version = function(rec) return rec.version, rec.lastModifiedAt end
M.match = { "externalId", "email", "phone" }
M.owners = { ["consent.email"] = "destination", firstName = "flag", lastName = "latest" }
function M.map(rec)
  local ids = { { type = "email", id = rec.email,
                  channels = { email = { status = rec.consent or "nonSubscribed" } } } }
  if rec.phone then
    ids[2] = { type = "phone", id = rec.phone, channels = rec.sms and { sms = { status = rec.sms } } or nil }
  end
  return { identifiers = ids, firstName = rec.firstName, lastName = rec.lastName }
end
return M
)";

const char* kGuestOrders = R"(local M = {}
M.key = function(rec) return rec.id end
M.version = function(rec) return rec.version end
M.match = { "email" }
function M.map(rec)
  return { identifiers = { { type = "email", id = rec.customerEmail } }, tags = { "guest-buyer" } }
end
return M
)";

struct Fixture {
  TempDir dir;
  std::shared_ptr<const workspace::TenantVersion> version;
  std::unique_ptr<store::Store> store = store::open_sqlite(":memory:");
  std::unique_ptr<pipeline::Pipeline> pipe;
  int seq = 0;

  Fixture() {
    dir.write("t/tenant.json", kTenant);
    dir.write("t/customers.lua", kCustomers);
    dir.write("t/guest_orders.lua", kGuestOrders);
    dir.write("t/placed.lua", kPlaced);
    std::vector<workspace::Problem> problems;
    version = workspace::load_tenant(dir.path(), "t", &problems);
    REQUIRE(problems.empty());
    REQUIRE(version);
    pipe = std::make_unique<pipeline::Pipeline>(version, *store);
  }

  pipeline::RecordResult run(const std::string& flow, const json::object& rec, bool replay = false,
                             const std::string& message_id = "", int64_t received_ms = 0) {
    store::InboxRecord r;
    r.tenant = "t";
    r.connection = "ct";
    r.flow = flow;
    r.received_ms = received_ms;
    r.message_id = message_id.empty() ? "m" + std::to_string(++seq) : message_id;
    r.correlation_id = "corr-" + std::to_string(seq);
    r.payload = json::serialize(rec);
    pipeline::Options opts;
    opts.replay = replay;
    return pipe->process(*version->flow(flow), r, opts);
  }

  // What a successful delivery does: the operation done, the shadow updated with what was
  // sent and what the destination answered with.
  void deliver(const pipeline::RecordResult& r, const json::object& destination_holds, int64_t at_ms) {
    store->delivered(r.op.id);
    json::object shadow = pipeline::decode_shadow(store->shadow(r.entity_id).fields_json);
    static const std::vector<std::string> atomic = {"identifiers[*].channels.*", "tags"};
    // What was sent: the body's fields (the changes and the identifier), as the worker reads it.
    json::value body = json::parse(r.op.body);
    pipeline::Flat sent = pipeline::flatten(body.as_object(), atomic);
    pipeline::record_delivery(shadow, sent, pipeline::flatten(destination_holds, atomic), at_ms, "v1");
    store->set_shadow(r.entity_id, pipeline::encode_shadow(shadow));
  }
};

json::object customer(const std::string& id, int version, const std::string& email, const std::string& first = "Anna") {
  return {{"id", id},       {"version", version},   {"email", email},
          {"firstName", first}, {"lastName", "Berg"}, {"lastModifiedAt", "2024-05-0" + std::to_string(version) + "T00:00:00.000Z"}};
}

}  // namespace

TEST_CASE("pipeline: an older or equal version is dropped as stale, a replay may repeat the applied one",
          "[pipeline][order]") {
  Fixture f;
  auto v2 = f.run("customers", customer("c1", 2, "a@x.se"));
  CHECK(v2.status == Status::planned);
  auto v1 = f.run("customers", customer("c1", 1, "a@x.se", "Older"));
  CHECK(v1.status == Status::stale);
  CHECK(v1.reason.find("not newer") != std::string::npos);
  auto again = f.run("customers", customer("c1", 2, "a@x.se"));
  CHECK(again.status == Status::stale);
  // Nothing about the stale record reached the outbox: the planned body is still version 2's.
  CHECK(f.store->outbox_total() == 1);
  // A replay of the applied version goes through (and supersedes the waiting operation).
  auto replay = f.run("customers", customer("c1", 2, "a@x.se"), true);
  CHECK(replay.status == Status::planned);
  CHECK(replay.superseded == v2.op.id);
  CHECK(f.store->outbox_total() == 1);
}

TEST_CASE("pipeline: a rejected record does not advance its key's version", "[pipeline][order]") {
  Fixture f;
  CHECK(f.run("customers", customer("c1", 2, "a@x.se")).status == Status::planned);
  // Version 9 fails the destination's schema (an email id shorter than 3): refused, and the
  // key stays at version 2, so version 5 (arriving late, or a fixed source) still goes on.
  auto bad = f.run("customers", customer("c1", 9, "x"));
  CHECK(bad.status == Status::rejected);
  CHECK(f.store->applied_version("t", "customers", "c1")->number == 2);
  auto v5 = f.run("customers", customer("c1", 5, "a@x.se", "Five"));
  CHECK(v5.status == Status::planned);
  CHECK(f.store->applied_version("t", "customers", "c1")->number == 5);
  CHECK(f.run("customers", customer("c1", 4, "a@x.se", "Four")).status == Status::stale);
  CHECK(f.run("customers", customer("c1", 5, "a@x.se", "Five")).status == Status::stale);
  // Refused at identify (an order without the email its flow matches by): the same.
  CHECK(f.run("guest_orders", {{"id", "o1"}, {"version", 1}, {"customerEmail", "g@x.se"}}).status == Status::planned);
  auto no_email = f.run("guest_orders", {{"id", "o1"}, {"version", 7}});
  CHECK(no_email.status == Status::rejected);
  CHECK(f.store->applied_version("t", "guest_orders", "o1")->number == 1);
  CHECK(f.run("guest_orders", {{"id", "o1"}, {"version", 3}, {"customerEmail", "g@x.se"}}).status != Status::stale);
}

TEST_CASE("pipeline: a replayed event keeps its eventID and eventTime", "[pipeline][order]") {
  Fixture f;
  json::object order{{"id", "o1"}, {"customerEmail", "g@x.se"}};
  auto first = f.run("placed", order, false, "msg-77", 1700000000123);
  INFO(first.reason);
  REQUIRE(first.status == Status::planned);
  json::value sent = json::parse(first.op.body);
  CHECK(sent.at("eventTime") == "2023-11-14T22:13:20.123Z");
  // Dead-lettered, then replayed: a new message id (util::replay_id) that carries the first,
  // and the time it first arrived (Parked::received_ms), so Omnisend sees the same event.
  auto again = f.run("placed", order, true, weft::util::replay_id(5, 1700000999999, "msg-77"), 1700000000123);
  REQUIRE(again.status == Status::planned);
  json::value resent = json::parse(again.op.body);
  CHECK(resent.at("eventID") == sent.at("eventID"));
  CHECK(resent.at("eventTime") == sent.at("eventTime"));
  CHECK(std::string(sent.at("eventID").as_string()).find("msg-77") != std::string::npos);
}

TEST_CASE("pipeline: a guest who registers is linked to the same destination record", "[pipeline][identity]") {
  Fixture f;
  auto guest = f.run("guest_orders", {{"id", "o1"}, {"version", 1}, {"customerEmail", "g@x.se"}});
  REQUIRE(guest.status == Status::planned);
  auto registered = f.run("customers", customer("c9", 1, "g@x.se"));
  REQUIRE(registered.status == Status::planned);
  CHECK(registered.entity_id == guest.entity_id);
  CHECK(registered.identity.find("found by email") != std::string::npos);
  CHECK(registered.identity.find("guest became a registered customer") != std::string::npos);
  // From now on the customer id alone finds it, even with a new email.
  auto moved = f.run("customers", customer("c9", 2, "new@x.se"));
  CHECK(moved.entity_id == guest.entity_id);
  CHECK(moved.identity.find("found by externalId") != std::string::npos);
  // A later guest order by the registered customer's email goes to the same record: an
  // order id is not a customer id (the flow does not match by externalId), so no conflict.
  auto later = f.run("guest_orders", {{"id", "o2"}, {"version", 1}, {"customerEmail", "new@x.se"}});
  INFO(later.reason);
  CHECK(later.status == Status::unchanged);  // its tag waits in the first order's operation
  CHECK(later.entity_id == guest.entity_id);
  CHECK(f.store->conflicts("t", false, 10).empty());
}

TEST_CASE("pipeline: two source records claiming one identifier are a conflict, not a merge", "[pipeline][identity]") {
  Fixture f;
  auto c1 = f.run("customers", customer("c1", 1, "same@x.se"));
  REQUIRE(c1.status == Status::planned);
  auto c2 = f.run("customers", customer("c2", 1, "same@x.se"));
  CHECK(c2.status == Status::conflict);
  CHECK(c2.reason.find("already held by source record c1") != std::string::npos);
  CHECK(f.store->outbox_total() == 1);  // nothing planned for c2
  auto open = f.store->conflicts("t", false, 10);
  REQUIRE(open.size() == 1);
  CHECK(open[0].kind == "identity");
  CHECK(open[0].record_key == "c2");

  // A phone already linked to another record: also a conflict.
  json::object c3 = customer("c3", 1, "c3@x.se");
  c3["phone"] = "+46701234567";
  REQUIRE(f.run("customers", c3).status == Status::planned);
  json::object c4 = customer("c4", 1, "c4@x.se");
  c4["phone"] = "+46701234567";
  auto r4 = f.run("customers", c4);
  CHECK(r4.status == Status::conflict);
  CHECK(f.store->conflicts("t", false, 10).size() == 2);
}

TEST_CASE("pipeline: merge policies decide what is sent, consent changed at the destination is kept",
          "[pipeline][merge]") {
  Fixture f;
  json::object v1 = customer("c1", 1, "a@x.se", "Anna");
  v1["consent"] = "subscribed";
  auto r1 = f.run("customers", v1);
  REQUIRE(r1.status == Status::planned);
  // Delivered; then the customer unsubscribes and is renamed in Omnisend's UI, seen later.
  json::object holds = json::parse(R"({"identifiers":[{"type":"email","id":"a@x.se",
      "channels":{"email":{"status":"subscribed"}}}],"firstName":"Anna","lastName":"Berg"})").as_object();
  f.deliver(r1, holds, 1000);
  json::object changed = json::parse(R"({"identifiers":[{"type":"email","id":"a@x.se",
      "channels":{"email":{"status":"unsubscribed"}}}],"firstName":"Annie","lastName":"Berg"})").as_object();
  {
    json::object shadow = pipeline::decode_shadow(f.store->shadow(r1.entity_id).fields_json);
    static const std::vector<std::string> atomic = {"identifiers[*].channels.*", "tags"};
    pipeline::record_delivery(shadow, {}, pipeline::flatten(changed, atomic), 2000, "v1");
    f.store->set_shadow(r1.entity_id, pipeline::encode_shadow(shadow));
  }

  // The source changes first and last name and still says subscribed.
  json::object v2 = customer("c1", 2, "a@x.se", "Anne");
  v2["lastName"] = "Lind";
  v2["consent"] = "subscribed";
  auto r2 = f.run("customers", v2);
  REQUIRE(r2.status == Status::planned);
  std::map<std::string, std::string> action;
  for (const auto& d : r2.decisions) action[d.path] = pipeline::action_name(d.action);
  CHECK(action["identifiers[email].channels.email"] == "keep destination");  // destination-owned
  CHECK(action["firstName"] == "conflict");                                 // flag: both changed
  CHECK(action["lastName"] == "send");                                      // latest: destination unchanged
  CHECK(action["identifiers[email].id"] == "unchanged");
  json::object body = json::parse(r2.op.body).as_object();
  CHECK(body.at("lastName") == "Lind");
  CHECK_FALSE(body.contains("firstName"));
  const auto& id0 = body.at("identifiers").as_array()[0].as_object();
  CHECK(id0.at("id") == "a@x.se");
  CHECK_FALSE(id0.contains("channels"));  // the unsubscribe in Omnisend is not overwritten
  auto conflicts = f.store->conflicts("t", false, 10);
  REQUIRE(conflicts.size() == 1);
  CHECK(conflicts[0].field == "firstName");
  CHECK(conflicts[0].detail.find("Annie") != std::string::npos);

  // Nothing changed at the source since: nothing is planned.
  f.deliver(r2, {}, 3000);
  json::object v3 = v2;
  v3["version"] = 3;
  v3["lastModifiedAt"] = "2024-05-03T00:00:00.000Z";
  auto r3 = f.run("customers", v3);
  CHECK(r3.status == Status::conflict);  // firstName still differs on both sides
  CHECK(f.store->outbox_total() == 0);
  CHECK(f.store->conflicts("t", false, 10).size() == 1);  // recorded once, not per version
}

TEST_CASE("pipeline: a destination-owned field's first write is guarded, later ones are not", "[pipeline][merge]") {
  Fixture f;
  json::object v1 = customer("c1", 1, "a@x.se");
  v1["consent"] = "subscribed";
  auto r1 = f.run("customers", v1);
  REQUIRE(r1.status == Status::planned);
  // Never synced: the destination may hold consent already, or another first name (this
  // flow flags firstName); the worker asks first.
  CHECK(r1.op.guard == R"([{"flag":"firstName"},"identifiers[email].channels.email"])");
  // Stored with the operation, so a restart still asks first.
  auto due = f.store->due("t", "om", int64_t{1} << 62, 10, {});
  REQUIRE(due.size() == 1);
  CHECK(due[0].guard == r1.op.guard);
  f.deliver(r1, {}, 1000);
  json::object v2 = v1;
  v2["version"] = 2;
  v2["lastModifiedAt"] = "2024-05-02T00:00:00.000Z";
  v2["consent"] = "unsubscribed";
  v2["firstName"] = "Anne";
  auto r2 = f.run("customers", v2);
  REQUIRE(r2.status == Status::planned);
  CHECK(r2.op.guard.empty());  // weft knows what it holds now (and keeps it: owned there)
  CHECK(r2.op.body.find("unsubscribed") == std::string::npos);
}

TEST_CASE("pipeline: a change to the phone's SMS consent alone names the phone", "[pipeline][merge]") {
  // Omnisend refuses an identifier without its id: the changed channel goes with the
  // identifier it belongs to (and the email, which Omnisend finds the contact by).
  Fixture f;
  json::object v1 = customer("c1", 1, "a@x.se");
  v1["phone"] = "+46701234567";
  v1["sms"] = "subscribed";
  auto r1 = f.run("customers", v1);
  REQUIRE(r1.status == Status::planned);
  f.deliver(r1, {}, 1000);
  json::object v2 = v1;
  v2["version"] = 2;
  v2["lastModifiedAt"] = "2024-05-02T00:00:00.000Z";
  v2["sms"] = "unsubscribed";
  auto r2 = f.run("customers", v2);
  REQUIRE(r2.status == Status::planned);
  INFO(r2.op.body);
  json::object body = json::parse(r2.op.body).as_object();
  CHECK_FALSE(body.contains("firstName"));  // unchanged
  bool phone_named = false, email_named = false;
  for (const auto& idv : body.at("identifiers").as_array()) {
    const json::object& id = idv.as_object();
    if (id.at("type") == "phone") {
      phone_named = id.contains("id") && id.at("id") == "+46701234567";
      CHECK(id.at("channels").at("sms").at("status") == "unsubscribed");
    }
    if (id.at("type") == "email") email_named = id.at("id") == "a@x.se";
  }
  CHECK(phone_named);
  CHECK(email_named);
}

TEST_CASE("pipeline: a change back while an older operation waits or is being sent is not lost",
          "[pipeline][order]") {
  Fixture f;
  auto v1 = f.run("customers", customer("c1", 1, "a@x.se", "Rob"));
  f.deliver(v1, {}, 1000);  // the destination holds "Rob"

  SECTION("waiting: the older operation is dropped, nothing is sent") {
    auto v2 = f.run("customers", customer("c1", 2, "a@x.se", "Bob"));
    REQUIRE(v2.status == Status::planned);
    auto v3 = f.run("customers", customer("c1", 3, "a@x.se", "Rob"));
    CHECK(v3.status == Status::unchanged);
    CHECK(v3.superseded == v2.op.id);
    CHECK(f.store->outbox_total() == 0);
  }
  SECTION("being sent: the change back is planned to go after it") {
    auto v2 = f.run("customers", customer("c1", 2, "a@x.se", "Bob"));
    REQUIRE(v2.status == Status::planned);
    store::InboxRecord r;
    r.tenant = "t";
    r.connection = "ct";
    r.flow = "customers";
    r.message_id = "m-v3";
    r.correlation_id = "corr-v3";
    r.payload = json::serialize(customer("c1", 3, "a@x.se", "Rob"));
    pipeline::Options opts;
    opts.in_flight = {v2.op.id};
    auto v3 = f.pipe->process(*f.version->flow("customers"), r, opts);
    REQUIRE(v3.status == Status::planned);
    CHECK(v3.superseded == 0);
    CHECK(json::parse(v3.op.body).at("firstName") == "Rob");
    CHECK(f.store->outbox_total() == 2);  // "Bob" being sent, then "Rob"
  }
}

TEST_CASE("pipeline: an email change is not sent as a new contact, it is a conflict", "[pipeline][identity]") {
  Fixture f;
  auto v1 = f.run("customers", customer("c1", 1, "old@x.se", "Anna"));
  f.deliver(v1, json::parse(R"({"identifiers":[{"type":"email","id":"old@x.se"}],"firstName":"Anna"})").as_object(),
            1000);
  auto v2 = f.run("customers", customer("c1", 2, "new@x.se", "Anne"));
  REQUIRE(v2.status == Status::planned);
  json::object body = json::parse(v2.op.body).as_object();
  // Sent to the contact Omnisend holds, found by the email it knows.
  CHECK(body.at("identifiers").as_array()[0].at("id") == "old@x.se");
  CHECK(body.at("firstName") == "Anne");
  auto conflicts = f.store->conflicts("t", false, 10);
  REQUIRE(conflicts.size() == 1);
  CHECK(conflicts[0].field == "identifiers[email].id");
  CHECK(conflicts[0].detail.find("new@x.se") != std::string::npos);
}
