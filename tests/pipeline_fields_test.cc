// The field-level view of destination payloads (engine/pipeline/fields.h): flatten and
// unflatten of Omnisend contacts, path patterns, owners, the three-way merge under each
// policy, recording a delivery into the shadow, and source timestamps.
#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <algorithm>

#include "engine/pipeline/fields.h"

using namespace weft::pipeline;
namespace json = boost::json;

namespace {

using A = FieldDecision::Action;

// The Omnisend contact model's atomic paths (connectors/registry.cc).
const std::vector<std::string> kAtomic = {"identifiers[*].channels.*", "tags"};

json::object obj(const char* text) { return json::parse(text).as_object(); }
json::value val(const char* text) { return json::parse(text); }

// A contact as the acme mapping produces it (scripts/acme/tests/*.json).
const char* kContact = R"({
  "identifiers": [
    {"type": "email", "id": "anna.andersson@example.com",
     "channels": {"email": {"status": "subscribed", "statusDate": "2024-03-05T10:00:00Z"}}},
    {"type": "phone", "id": "+46701234567",
     "channels": {"sms": {"status": "unsubscribed", "statusDate": "2024-03-05T10:00:00Z"}}}
  ],
  "firstName": "Anna",
  "lastName": "Andersson",
  "countryCode": "SE",
  "birthdate": null,
  "tags": ["source:commercetools", "store:nordic-store", "locale:sv-SE"],
  "customProperties": {
    "loyaltyTier": "gold",
    "customerNumber": "C101014",
    "commercetoolsVersion": 7,
    "address": {"city": "Stockholm", "postalCode": "11455"}
  }
})";

// Type-keyed arrays carry no meaning in their order; unflatten gives them sorted by type.
json::value canonical(const json::value& v) {
  if (v.is_object()) {
    json::object o;
    for (const auto& kv : v.as_object()) o[kv.key()] = canonical(kv.value());
    return o;
  }
  if (v.is_array()) {
    json::array a;
    for (const auto& e : v.as_array()) a.push_back(canonical(e));
    bool keyed = !a.empty() && std::all_of(a.begin(), a.end(), [](const json::value& e) {
      return e.is_object() && e.as_object().if_contains("type") && e.as_object().at("type").is_string();
    });
    if (keyed)
      std::stable_sort(a.begin(), a.end(), [](const json::value& x, const json::value& y) {
        return x.as_object().at("type").as_string() < y.as_object().at("type").as_string();
      });
    return a;
  }
  return v;
}

// A shadow entry.
json::object entry(json::value sent, json::value held, int64_t at = 1000, const char* by = "v1") {
  return json::object{{"sent", sent}, {"held", held}, {"at", at}, {"by", by}};
}

// A shadow field as the long form entry() builds, whatever the stored encoding.
json::value long_form(const json::object& shadow, const std::string& path) {
  ShadowField f = shadow_field(shadow, path);
  json::object o;
  if (f.sent) o["sent"] = *f.sent;
  if (f.held) o["held"] = *f.held;
  o["at"] = f.at;
  o["by"] = f.by;
  return o;
}

const FieldDecision& decision(const MergeResult& r, const std::string& path) {
  for (const auto& d : r.decisions)
    if (d.path == path) return d;
  FAIL("no decision for " << path);
  throw std::logic_error("unreachable");
}

// Merges one field "f" with value `next` under `policy` against `shadow_entry` (null: none).
MergeResult merge_one(const char* policy, json::value next, json::value shadow_entry, int64_t record_ms = 0) {
  Flat flat{{"f", next}};
  json::object shadow;
  if (!shadow_entry.is_null()) shadow["f"] = shadow_entry;
  std::map<std::string, std::string> owners;
  if (policy) owners["f"] = policy;
  return merge(flat, shadow, owners, record_ms);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// flatten / unflatten

TEST_CASE("fields: an Omnisend contact flattens into identifier-keyed paths", "[fields]") {
  Flat f = flatten(obj(kContact), kAtomic);

  // Identifiers are keyed by their type; "type" itself is not a field.
  CHECK(f.at("identifiers[email].id") == "anna.andersson@example.com");
  CHECK(f.at("identifiers[phone].id") == "+46701234567");
  CHECK_FALSE(f.count("identifiers[email].type"));
  CHECK_FALSE(f.count("identifiers"));
  // Channels are atomic: one value per channel, not descended into.
  CHECK(f.at("identifiers[email].channels.email") ==
        val(R"({"status":"subscribed","statusDate":"2024-03-05T10:00:00Z"})"));
  CHECK(f.at("identifiers[phone].channels.sms") ==
        val(R"({"status":"unsubscribed","statusDate":"2024-03-05T10:00:00Z"})"));
  CHECK_FALSE(f.count("identifiers[email].channels.email.status"));
  CHECK_FALSE(f.count("identifiers[email].channels"));
  // Tags are one value, in their order.
  CHECK(f.at("tags") == val(R"(["source:commercetools","store:nordic-store","locale:sv-SE"])"));
  CHECK_FALSE(f.count("tags[0]"));
  // Plain and nested members; null stays a value.
  CHECK(f.at("firstName") == "Anna");
  CHECK(f.at("birthdate").is_null());
  CHECK(f.at("customProperties.loyaltyTier") == "gold");
  CHECK(f.at("customProperties.commercetoolsVersion") == 7);
  CHECK(f.at("customProperties.address.city") == "Stockholm");
  CHECK(f.at("customProperties.address.postalCode") == "11455");
  CHECK_FALSE(f.count("customProperties"));
  CHECK_FALSE(f.count("customProperties.address"));

  std::vector<std::string> paths;
  for (const auto& kv : f) paths.push_back(kv.first);
  CHECK(paths == std::vector<std::string>{"birthdate",
                                          "countryCode",
                                          "customProperties.address.city",
                                          "customProperties.address.postalCode",
                                          "customProperties.commercetoolsVersion",
                                          "customProperties.customerNumber",
                                          "customProperties.loyaltyTier",
                                          "firstName",
                                          "identifiers[email].channels.email",
                                          "identifiers[email].id",
                                          "identifiers[phone].channels.sms",
                                          "identifiers[phone].id",
                                          "lastName",
                                          "tags"});
}

TEST_CASE("fields: without atomic patterns channels are descended into", "[fields]") {
  Flat f = flatten(obj(kContact), {});
  CHECK(f.at("identifiers[email].channels.email.status") == "subscribed");
  CHECK_FALSE(f.count("identifiers[email].channels.email"));
  // A plain array is still one value.
  CHECK(f.at("tags").is_array());
}

TEST_CASE("fields: arrays that are not keyed by a string type are single values", "[fields]") {
  Flat f = flatten(obj(R"({
    "empty": [],
    "numbers": [1, 2],
    "mixed": [{"type": "a", "x": 1}, {"x": 2}],
    "numeric_type": [{"type": 1, "x": 1}],
    "not_objects": [{"type": "a"}, "b"],
    "empty_object": {},
    "typed_only": [{"type": "email"}]
  })"),
                   {});
  CHECK(f.at("empty") == val("[]"));
  CHECK(f.at("numbers") == val("[1,2]"));
  CHECK(f.at("mixed") == val(R"([{"type":"a","x":1},{"x":2}])"));
  CHECK(f.at("numeric_type") == val(R"([{"type":1,"x":1}])"));
  CHECK(f.at("not_objects") == val(R"([{"type":"a"},"b"])"));
  CHECK(f.at("empty_object") == val("{}"));
  // An element with nothing but its type keeps its type as the field.
  CHECK(f.at("typed_only[email].type") == "email");
  CHECK(f.size() == 7);
  // ...and all of it comes back.
  CHECK(json::value(unflatten(f)) == val(R"({
    "empty": [], "numbers": [1, 2], "mixed": [{"type": "a", "x": 1}, {"x": 2}],
    "numeric_type": [{"type": 1, "x": 1}], "not_objects": [{"type": "a"}, "b"],
    "empty_object": {}, "typed_only": [{"type": "email"}]})"));
}

TEST_CASE("fields: unflatten(flatten(contact)) is the contact", "[fields]") {
  SECTION("the acme contact") {
    json::object c = obj(kContact);
    json::object back = unflatten(flatten(c, kAtomic));
    CHECK(json::value(back) == json::value(c));  // object equality ignores key order
    CHECK(json::value(unflatten(flatten(c, {}))) == json::value(c));
  }
  SECTION("identifiers with only an email, phone first, and no optional fields") {
    json::object c = obj(R"({
      "identifiers": [
        {"type": "phone", "id": "+46700000000", "channels": {"sms": {"status": "subscribed"}}},
        {"type": "email", "id": "a@x.se"}
      ],
      "tags": [],
      "customProperties": {}
    })");
    json::object back = unflatten(flatten(c, kAtomic));
    CHECK(canonical(back) == canonical(c));
    // Keyed elements come back in type order (their order carries no meaning).
    CHECK(back.at("identifiers").as_array()[0].as_object().at("type") == "email");
  }
  SECTION("an identifier with nothing but its type") {
    json::object c = obj(R"({"identifiers": [{"type": "email"}], "firstName": "A"})");
    CHECK(json::value(unflatten(flatten(c, kAtomic))) == json::value(c));
  }
}

TEST_CASE("fields: unflatten of a subset builds only what is named", "[fields]") {
  Flat f = flatten(obj(kContact), kAtomic);
  Flat subset;
  subset["identifiers[email].id"] = f.at("identifiers[email].id");
  subset["identifiers[phone].channels.sms"] = f.at("identifiers[phone].channels.sms");
  subset["customProperties.address.city"] = f.at("customProperties.address.city");
  subset["lastName"] = "Berg";
  CHECK(canonical(unflatten(subset)) == canonical(val(R"({
    "identifiers": [
      {"type": "email", "id": "anna.andersson@example.com"},
      {"type": "phone", "channels": {"sms": {"status": "unsubscribed", "statusDate": "2024-03-05T10:00:00Z"}}}
    ],
    "customProperties": {"address": {"city": "Stockholm"}},
    "lastName": "Berg"
  })")));

  // One channel of one identifier: the identifier is identified by its type alone.
  Flat consent{{"identifiers[email].channels.email", val(R"({"status":"unsubscribed"})")}};
  CHECK(json::value(unflatten(consent)) ==
        val(R"({"identifiers":[{"type":"email","channels":{"email":{"status":"unsubscribed"}}}]})"));

  CHECK(unflatten(Flat{}).empty());
}

// ---------------------------------------------------------------------------------------
// path patterns and owners

TEST_CASE("fields: path_matches compares segment by segment", "[fields]") {
  CHECK(path_matches("tags", "tags"));
  CHECK_FALSE(path_matches("tags", "tagsX"));
  CHECK_FALSE(path_matches("tags", "tags.x"));
  CHECK(path_matches("identifiers[*].channels.*", "identifiers[email].channels.email"));
  CHECK(path_matches("identifiers[*].channels.*", "identifiers[phone].channels.sms"));
  CHECK_FALSE(path_matches("identifiers[*].channels.*", "identifiers[email].channels"));
  CHECK_FALSE(path_matches("identifiers[*].channels.*", "identifiers[email].channels.email.status"));
  CHECK_FALSE(path_matches("identifiers[*].channels.*", "identifiers.channels.email"));   // no key
  CHECK_FALSE(path_matches("identifiers[*].channels.*", "identifiers[].channels.email"));  // empty key
  CHECK_FALSE(path_matches("identifiers[*].channels.*", "others[email].channels.email"));
  CHECK_FALSE(path_matches("identifiers[*].channels.*", "identifiers[email].id"));
  CHECK(path_matches("identifiers[email].id", "identifiers[email].id"));
  CHECK_FALSE(path_matches("identifiers[email].id", "identifiers[phone].id"));
  CHECK(path_matches("*", "firstName"));
  CHECK(path_matches("*.city", "customProperties.city"));
  CHECK_FALSE(path_matches("*", "customProperties.city"));
  CHECK(path_matches("customProperties.*", "customProperties.tier"));
}

TEST_CASE("fields: owner_of takes the longest prefix at a segment boundary", "[fields]") {
  std::map<std::string, std::string> owners{
      {"identifiers", "destination"},
      {"identifiers[email].channels.email", "flag"},
      {"email", "latest"},
      {"customProperties", "latest"},
      {"customProperties.loyaltyTier", "destination"},
  };
  CHECK(owner_of(owners, "identifiers[email].channels.email") == "flag");  // exact, longest
  CHECK(owner_of(owners, "identifiers[phone].channels.sms") == "destination");  // "identifiers" + '['
  CHECK(owner_of(owners, "identifiers[email].id") == "destination");
  CHECK(owner_of(owners, "customProperties.loyaltyTier") == "destination");
  CHECK(owner_of(owners, "customProperties.customerNumber") == "latest");  // "customProperties" + '.'
  CHECK(owner_of(owners, "customProperties.loyaltyTierX") == "latest");    // not the longer entry
  CHECK(owner_of(owners, "email") == "latest");
  CHECK(owner_of(owners, "emailX") == "source");  // not a segment boundary
  CHECK(owner_of(owners, "emails.work") == "source");
  CHECK(owner_of(owners, "firstName") == "source");  // default
  CHECK(owner_of({}, "anything") == "source");
  CHECK(owner_of(owners, "identifier") == "source");  // a prefix of an owner is not owned
}

// ---------------------------------------------------------------------------------------
// merge

TEST_CASE("fields: merge without shadow sends everything", "[fields]") {
  for (const char* policy : {"source", "destination", "latest", "flag"}) {
    INFO(policy);
    auto r = merge_one(policy, "x", nullptr);
    REQUIRE(r.decisions.size() == 1);
    CHECK(r.decisions[0].action == A::send);
    CHECK(r.decisions[0].owner == policy);
    CHECK(r.decisions[0].held.is_null());
    CHECK(r.decisions[0].sent.is_null());
    CHECK(r.changes == Flat{{"f", "x"}});
    CHECK_FALSE(r.has_conflict());
  }
  // A shadow entry with neither held nor sent is the same as none.
  for (const char* policy : {"source", "destination", "latest", "flag"}) {
    INFO(policy);
    auto r = merge_one(policy, "x", entry(nullptr, nullptr));
    CHECK(r.decisions[0].action == A::send);
  }
  // An entire contact with an empty shadow: every field is sent.
  Flat f = flatten(obj(kContact), kAtomic);
  auto r = merge(f, json::object{}, {{"identifiers", "destination"}}, 0);
  CHECK(r.changes == f);
  CHECK(r.decisions.size() == f.size());
}

TEST_CASE("fields: merge leaves a field the destination already holds unchanged", "[fields]") {
  for (const char* policy : {"source", "destination", "latest", "flag"}) {
    INFO(policy);
    // Even when what weft sent last differs, or was never sent.
    for (json::value sent : {json::value("x"), json::value("old"), json::value(nullptr)}) {
      auto r = merge_one(policy, "x", entry(sent, "x"), 5000);
      REQUIRE(r.decisions.size() == 1);
      CHECK(r.decisions[0].action == A::unchanged);
      CHECK(r.decisions[0].held == "x");
      CHECK(r.changes.empty());
      CHECK_FALSE(r.has_conflict());
    }
  }
  // Structured values compare by value.
  auto r = merge_one("source", val(R"({"status":"subscribed"})"), entry(nullptr, val(R"({"status":"subscribed"})")));
  CHECK(r.decisions[0].action == A::unchanged);
}

TEST_CASE("fields: merge, source policy", "[fields]") {
  SECTION("the default owner is the source") {
    auto r = merge_one(nullptr, "new", entry("old", "old"));
    CHECK(r.decisions[0].owner == "source");
    CHECK(r.decisions[0].action == A::send);
  }
  SECTION("sends over a value the destination changed") {
    auto r = merge_one("source", "new", entry("old", "theirs", 9'000'000), 1);
    CHECK(r.decisions[0].action == A::send);
    CHECK(r.decisions[0].sent == "old");
    CHECK(r.decisions[0].held == "theirs");
    CHECK(r.changes == Flat{{"f", "new"}});
  }
  SECTION("sends when the destination holds a value weft never sent") {
    auto r = merge_one("source", "new", entry(nullptr, "theirs"));
    CHECK(r.decisions[0].action == A::send);
  }
  SECTION("sends null over a value") {
    auto r = merge_one("source", nullptr, entry("a", "a"));
    CHECK(r.decisions[0].action == A::send);
    CHECK(r.changes.at("f").is_null());
  }
}

TEST_CASE("fields: merge, destination policy", "[fields]") {
  SECTION("keeps a value the destination holds") {
    auto r = merge_one("destination", "new", entry("old", "old"));
    CHECK(r.decisions[0].action == A::keep_destination);
    CHECK(r.changes.empty());
    CHECK_FALSE(r.has_conflict());
    auto r2 = merge_one("destination", "new", entry(nullptr, "theirs"));
    CHECK(r2.decisions[0].action == A::keep_destination);
  }
  SECTION("sends when the destination holds nothing") {
    auto r = merge_one("destination", "new", entry("old", nullptr));
    CHECK(r.decisions[0].action == A::send);
    CHECK(r.changes == Flat{{"f", "new"}});
    // A shadow entry that lacks "held" altogether.
    auto r2 = merge_one("destination", "new", json::object{{"sent", "old"}});
    CHECK(r2.decisions[0].action == A::send);
  }
  SECTION("owned by prefix") {
    Flat f = flatten(obj(kContact), kAtomic);
    json::object shadow;
    shadow["identifiers[email].channels.email"] = entry(nullptr, val(R"({"status":"unsubscribed"})"));
    shadow["firstName"] = entry("Ann", "Ann");
    auto r = merge(f, shadow, {{"identifiers", "destination"}}, 0);
    CHECK(decision(r, "identifiers[email].channels.email").action == A::keep_destination);
    CHECK(decision(r, "identifiers[email].channels.email").owner == "destination");
    CHECK(decision(r, "identifiers[phone].channels.sms").action == A::send);  // nothing held
    CHECK(decision(r, "firstName").action == A::send);
    CHECK_FALSE(r.changes.count("identifiers[email].channels.email"));
    CHECK(r.changes.count("firstName"));
  }
}

TEST_CASE("fields: merge, latest policy", "[fields]") {
  SECTION("sends when the destination is unchanged since weft sent, however old the record") {
    auto r = merge_one("latest", "new", entry("old", "old", 9'000'000), 1);
    CHECK(r.decisions[0].action == A::send);
    CHECK(r.changes == Flat{{"f", "new"}});
  }
  SECTION("the destination changed: a newer source record wins") {
    auto r = merge_one("latest", "new", entry("old", "theirs", 1'000), 2'000);
    CHECK(r.decisions[0].action == A::send);
    CHECK(r.changes == Flat{{"f", "new"}});
  }
  SECTION("the destination changed: a newer destination change wins") {
    auto r = merge_one("latest", "new", entry("old", "theirs", 2'000), 1'000);
    CHECK(r.decisions[0].action == A::keep_destination);
    CHECK(r.changes.empty());
    CHECK_FALSE(r.has_conflict());
  }
  SECTION("never sent, the destination holds a value: compared by time") {
    CHECK(merge_one("latest", "new", entry(nullptr, "theirs", 1'000), 2'000).decisions[0].action == A::send);
    CHECK(merge_one("latest", "new", entry(nullptr, "theirs", 2'000), 1'000).decisions[0].action ==
          A::keep_destination);
  }
  SECTION("with real timestamps") {
    int64_t changed_at = parse_time_ms("2024-03-05T10:00:00.000Z");
    auto older = merge_one("latest", "new", entry("old", "theirs", changed_at),
                           parse_time_ms("2024-03-05T09:59:59.999Z"));
    CHECK(older.decisions[0].action == A::keep_destination);
    auto newer = merge_one("latest", "new", entry("old", "theirs", changed_at),
                           parse_time_ms("2024-03-05T10:00:00.001Z"));
    CHECK(newer.decisions[0].action == A::send);
  }
}

TEST_CASE("fields: merge, flag policy", "[fields]") {
  SECTION("changed on both sides: a conflict, nothing sent") {
    auto r = merge_one("flag", "ours", entry("old", "theirs"));
    REQUIRE(r.decisions.size() == 1);
    CHECK(r.decisions[0].action == A::conflict);
    CHECK(r.decisions[0].next == "ours");
    CHECK(r.decisions[0].sent == "old");
    CHECK(r.decisions[0].held == "theirs");
    CHECK_FALSE(r.decisions[0].why.empty());
    CHECK(r.has_conflict());
    CHECK(r.changes.empty());
  }
  SECTION("changed at the source only: sent") {
    auto r = merge_one("flag", "ours", entry("old", "old"));
    CHECK(r.decisions[0].action == A::send);
    CHECK_FALSE(r.has_conflict());
    CHECK(r.changes == Flat{{"f", "ours"}});
  }
  SECTION("changed at the destination only: kept") {
    auto r = merge_one("flag", "old", entry("old", "theirs"));
    CHECK(r.decisions[0].action == A::keep_destination);
    CHECK_FALSE(r.has_conflict());
    CHECK(r.changes.empty());
  }
  SECTION("never sent and the destination holds another value: a conflict") {
    auto r = merge_one("flag", "ours", entry(nullptr, "theirs"));
    CHECK(r.decisions[0].action == A::conflict);
  }
  SECTION("a conflict on one field does not hold back the others") {
    Flat next{{"a", "ours"}, {"b", "new"}};
    json::object shadow{{"a", entry("old", "theirs")}, {"b", entry("x", "x")}};
    auto r = merge(next, shadow, {{"a", "flag"}}, 0);
    CHECK(r.has_conflict());
    CHECK(decision(r, "a").action == A::conflict);
    CHECK(decision(r, "b").action == A::send);
    CHECK(r.changes == Flat{{"b", "new"}});
  }
}

TEST_CASE("fields: merge decides per field of the mapped payload only", "[fields]") {
  // Shadow fields the payload does not carry are not decided on (nothing is removed).
  Flat next{{"firstName", "Anna"}};
  json::object shadow{{"firstName", entry("Anna", "Anna")}, {"lastName", entry("Berg", "Berg")}};
  auto r = merge(next, shadow, {}, 0);
  REQUIRE(r.decisions.size() == 1);
  CHECK(r.decisions[0].path == "firstName");
  CHECK(r.decisions[0].action == A::unchanged);
  CHECK(r.changes.empty());
  CHECK(std::string(action_name(A::send)) == "send");
  CHECK(std::string(action_name(A::unchanged)) == "unchanged");
  CHECK(std::string(action_name(A::keep_destination)) == "keep destination");
  CHECK(std::string(action_name(A::conflict)) == "conflict");
}

// ---------------------------------------------------------------------------------------
// record_delivery

TEST_CASE("fields: record_delivery writes sent fields as sent and held", "[fields]") {
  json::object shadow{{"untouched", entry("u", "u", 1, "v0")}};
  Flat sent{{"firstName", "Anna"}, {"identifiers[email].id", "a@x.se"}};
  record_delivery(shadow, sent, {}, 5000, "v2");
  CHECK(long_form(shadow, "firstName") == json::value(entry("Anna", "Anna", 5000, "v2")));
  CHECK(long_form(shadow, "identifiers[email].id") == json::value(entry("a@x.se", "a@x.se", 5000, "v2")));
  CHECK(long_form(shadow, "untouched") == json::value(entry("u", "u", 1, "v0")));
  CHECK(shadow.size() == 3);

  // Sent again later: overwritten.
  record_delivery(shadow, {{"firstName", "Anne"}}, {}, 6000, "v3");
  CHECK(long_form(shadow, "firstName") == json::value(entry("Anne", "Anne", 6000, "v3")));
}

TEST_CASE("fields: record_delivery takes what the destination answered", "[fields]") {
  json::object shadow{
      {"lastName", entry("Berg", "Berg", 100, "v1")},
      {"city", entry("Lund", "Lund", 100, "v1")},
  };
  Flat sent{{"identifiers[email].id", "Anna@X.se"}};
  Flat answered{
      {"identifiers[email].id", "anna@x.se"},  // the destination normalized what was sent
      {"lastName", "Berg"},                    // unchanged
      {"city", "Malmö"},                       // changed at the destination
      {"customProperties.tier", "gold"},       // never seen before
  };
  record_delivery(shadow, sent, answered, 7000, "v2");
  // A sent field: sent is what weft sent, held what the destination holds.
  CHECK(long_form(shadow, "identifiers[email].id") == json::value(entry("Anna@X.se", "anna@x.se", 7000, "v2")));
  // Answered only, unchanged: not touched (at and by stay).
  CHECK(long_form(shadow, "lastName") == json::value(entry("Berg", "Berg", 100, "v1")));
  // Answered only, changed: held, at and by "destination"; sent stays.
  CHECK(long_form(shadow, "city") == json::value(entry("Lund", "Malmö", 7000, "destination")));
  // Answered only, new: no "sent" (never sent), held from the destination.
  CHECK(long_form(shadow, "customProperties.tier") ==
        json::value(json::object{{"held", "gold"}, {"at", 7000}, {"by", "destination"}}));
  CHECK(shadow.size() == 4);
}

TEST_CASE("fields: after a recorded delivery the same payload merges as unchanged", "[fields]") {
  Flat f = flatten(obj(kContact), kAtomic);
  f.erase("birthdate");  // null values: see the [!mayfail] case below
  std::map<std::string, std::string> owners{{"identifiers", "flag"}, {"lastName", "latest"}};
  json::object shadow;
  auto first = merge(f, shadow, owners, 1000);
  CHECK(first.changes == f);
  record_delivery(shadow, first.changes, {}, 2000, "v1");
  auto second = merge(f, shadow, owners, 3000);
  CHECK(second.changes.empty());
  for (const auto& d : second.decisions) CHECK(d.action == A::unchanged);

  // The destination changes the email consent; the source changes the first name.
  record_delivery(shadow, {}, {{"identifiers[email].channels.email", val(R"({"status":"unsubscribed"})")}}, 4000,
                  "v1");
  f["firstName"] = "Anne";
  auto third = merge(f, shadow, owners, 5000);
  CHECK(decision(third, "identifiers[email].channels.email").action == A::keep_destination);
  CHECK(decision(third, "firstName").action == A::send);
  CHECK(third.changes == Flat{{"firstName", "Anne"}});
  // The source changes the consent too: both changed, a conflict.
  f["identifiers[email].channels.email"] = val(R"({"status":"nonSubscribed"})");
  auto fourth = merge(f, shadow, owners, 6000);
  CHECK(decision(fourth, "identifiers[email].channels.email").action == A::conflict);
  CHECK(fourth.has_conflict());
}

TEST_CASE("fields: a field delivered as null merges as unchanged afterwards", "[fields]") {
  // A script writes json.null to clear a field. After the delivery is recorded the shadow
  // knows the destination holds null, so the same payload is "unchanged", not planned again.
  Flat f{{"birthdate", nullptr}, {"firstName", "Anna"}};
  json::object shadow;
  auto first = merge(f, shadow, {}, 1000);
  CHECK(first.changes == f);
  record_delivery(shadow, first.changes, {}, 2000, "v1");
  CHECK(long_form(shadow, "birthdate") == json::value(entry(nullptr, nullptr, 2000, "v1")));
  auto second = merge(f, shadow, {}, 3000);
  CHECK(decision(second, "firstName").action == A::unchanged);
  CHECK(decision(second, "birthdate").action == A::unchanged);
  CHECK(second.changes.empty());
}

// ---------------------------------------------------------------------------------------
// encode_shadow / decode_shadow: the stored form

TEST_CASE("fields: the stored shadow writes the common time and version once and reads back whole", "[fields]") {
  json::object shadow;
  record_delivery(shadow, {{"firstName", "Anna"}, {"lastName", "Berg"}, {"tags", val(R"(["a","b"])")}}, {}, 2000, "v1");
  // One field the destination changed later, one it answered differently from what was sent.
  record_delivery(shadow, {}, {{"city", "Lund"}}, 3000, "destination");
  record_delivery(shadow, {{"postalCode", "22100"}}, {{"postalCode", "221 00"}}, 2000, "v1");
  std::string text = encode_shadow(shadow);
  json::object stored = json::parse(text).as_object();
  CHECK(stored.at("~") == 2);
  CHECK(stored.at("t") == 2000);
  CHECK(stored.at("b") == "v1");
  // The common pair is left out of the fields that have it, kept where it differs.
  CHECK(stored.at("f").at("firstName") == json::parse(R"({"v":"Anna"})"));
  CHECK(stored.at("f").at("city") == json::parse(R"({"h":"Lund","t":3000,"b":"destination"})"));
  CHECK(stored.at("f").at("postalCode") == json::parse(R"({"s":"22100","h":"221 00"})"));
  auto count = [&](const std::string& what) {
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  };
  CHECK(count("\"v1\"") == 1);
  CHECK(count("2000") == 1);
  // Read back, it is the same shadow: every field whole, merges decide the same.
  json::object back = decode_shadow(text);
  CHECK(back == shadow);
  ShadowField city = shadow_field(back, "city");
  REQUIRE(city.held);
  CHECK(*city.held == "Lund");
  CHECK(city.at == 3000);
  CHECK(city.by == "destination");
  Flat next{{"firstName", "Anna"}, {"lastName", "Berg"}, {"city", "Lund"}, {"postalCode", "22100"}};
  auto a = merge(next, shadow, {}, 4000), b = merge(next, back, {}, 4000);
  CHECK(a.changes == b.changes);
  REQUIRE(a.decisions.size() == b.decisions.size());
  for (size_t i = 0; i < a.decisions.size(); ++i) CHECK(a.decisions[i].action == b.decisions[i].action);
}

TEST_CASE("fields: shadows stored before the compact form are read as they are", "[fields]") {
  // The form weft wrote before (one object per field at the top level), short and long keys.
  std::string old = R"({"firstName":{"v":"Anna","t":1000,"b":"v1"},)"
                    R"("lastName":{"sent":"Berg","held":"Berg-Ek","at":1500,"by":"destination"}})";
  json::object back = decode_shadow(old);
  CHECK(back == json::parse(old).as_object());
  ShadowField last = shadow_field(back, "lastName");
  REQUIRE(last.sent);
  CHECK(*last.sent == "Berg");
  CHECK(*last.held == "Berg-Ek");
  CHECK(last.at == 1500);
  // A field whose path happens to be "~" in the old form is a field, not a marker.
  json::object odd = decode_shadow(R"({"~":{"v":1,"t":1,"b":"v1"},"f":{"v":2,"t":1,"b":"v1"}})");
  CHECK(odd.size() == 2);
  CHECK(odd.at("f").at("v") == 2);
  CHECK(decode_shadow("{}").empty());
  CHECK(encode_shadow(json::object{}) == "{}");

  // Such a row is written again in the compact form at the next delivery of another field:
  // the long-form field keeps its own time and author, not the delivery's.
  json::object sh = decode_shadow(old);
  record_delivery(sh, {{"firstName", "Anne"}}, {}, 2000, "v2");
  json::object again = decode_shadow(encode_shadow(sh));
  ShadowField kept = shadow_field(again, "lastName");
  CHECK(kept.at == 1500);
  CHECK(kept.by == "destination");
  REQUIRE(kept.held);
  CHECK(*kept.held == "Berg-Ek");
  ShadowField first = shadow_field(again, "firstName");
  CHECK(first.at == 2000);
  CHECK(first.by == "v2");
}

TEST_CASE("fields: a stored shadow that is not a JSON object is an error that says so", "[fields]") {
  CHECK_THROWS_WITH(decode_shadow("[1,2]"), Catch::Contains("shadow state is not a JSON object"));
  CHECK_THROWS_WITH(decode_shadow("{\"firstName\":"), Catch::Contains("shadow state is not a JSON object"));
  CHECK_THROWS_WITH(decode_shadow(R"({"~":2,"t":1})"), Catch::Contains("without"));
}

// ---------------------------------------------------------------------------------------
// parse_time_ms

TEST_CASE("fields: parse_time_ms reads ISO 8601 timestamps", "[fields]") {
  const int64_t jan1 = 1704067200000;  // 2024-01-01T00:00:00Z
  CHECK(parse_time_ms("2024-01-01T00:00:00.000Z") == jan1);
  CHECK(parse_time_ms("2024-01-01T00:00:00Z") == jan1);
  CHECK(parse_time_ms("2024-01-01T00:00:00.250Z") == jan1 + 250);
  CHECK(parse_time_ms("2024-03-05T10:00:00.250Z") == 1709632800250);
  CHECK(parse_time_ms("1970-01-01T00:00:00.000Z") == 0);
  // Offsets.
  CHECK(parse_time_ms("2024-01-01T01:00:00+01:00") == jan1);
  CHECK(parse_time_ms("2024-01-01T01:00:00.000+01:00") == jan1);
  CHECK(parse_time_ms("2023-12-31T19:00:00.000-05:00") == jan1);
  CHECK(parse_time_ms("2024-01-01T05:30:00.000+05:30") == jan1);
  CHECK(parse_time_ms("2024-01-01T00:00:00+00:00") == jan1);
  // Without the colon (Salesforce: 2024-01-01T00:00:00.000+0000), and hours alone.
  CHECK(parse_time_ms("2024-01-01T00:00:00.000+0000") == jan1);
  CHECK(parse_time_ms("2024-01-01T05:30:00.000+0530") == jan1);
  CHECK(parse_time_ms("2023-12-31T19:00:00-0500") == jan1);
  CHECK(parse_time_ms("2024-01-01T02:00:00+02") == jan1);
  // Order follows time, not text.
  CHECK(parse_time_ms("2024-01-01T00:30:00+01:00") < parse_time_ms("2024-01-01T00:00:00Z"));
}

TEST_CASE("fields: parse_time_ms gives -1 for what is not a timestamp", "[fields]") {
  for (const char* text : {"", "garbage", "yesterday at noon please", "2024-01-01", "2024-01-01T00:00",
                           "7", "1704067200000", "01/01/2024 00:00:00 AM", "2024-13-01T00:00:00Z",
                           "2024-01-01T25:00:00Z", "2024-01-01X00:00:00Z", "not a timestamp at all, no",
                           "2024-01-01T00:00:00+1", "2024-01-01T00:00:00+123", "2024-01-01T00:00:00+24:00",
                           "2024-01-01T00:00:00+01:60", "2024-01-01T00:00:00+0a00", "2024-01-01T00:00:00+01:00:00",
                           "2024-01-01T00:00:00+"}) {
    INFO(text);
    CHECK(parse_time_ms(text) == -1);
  }
}

TEST_CASE("fields: parse_time_ms with more than millisecond precision is exact or refused", "[fields]") {
  // Microsecond (PostgreSQL, many APIs) and 100 ns (.NET) fractions. A truncated value
  // (1704067200123) or -1 would both be acceptable; a value hours off is not.
  const int64_t jan1 = 1704067200000;
  for (const char* text : {"2024-01-01T00:00:00.123456Z", "2024-01-01T00:00:00.123456+00:00",
                           "2024-01-01T01:00:00.1234567+01:00", "2024-01-01T00:00:00.1234Z"}) {
    INFO(text);
    int64_t ms = parse_time_ms(text);
    CAPTURE(ms);
    CHECK((ms == -1 || ms == jan1 + 123));
  }
  int64_t ms = parse_time_ms("2024-01-01T00:00:00.999999Z");
  CAPTURE(ms);
  CHECK((ms == -1 || ms == jan1 + 999));
}

TEST_CASE("fields: parse_time_ms refuses a timestamp followed by other text", "[fields]") {
  CHECK(parse_time_ms("2024-01-01T00:00:00.000Zjunk") == -1);
  CHECK(parse_time_ms("2024-01-01T00:00:00.000Z 2025") == -1);
}
