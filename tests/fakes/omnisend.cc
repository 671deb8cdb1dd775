#include "tests/fakes/omnisend.h"

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <map>
#include <mutex>
#include <string_view>
#include <thread>

namespace weft::fakes {
namespace json = boost::json;

using Clock = std::chrono::steady_clock;

namespace {
// One contact and what was written to it.
struct StoredContact {
  json::object contact;
  std::vector<int64_t> versions;  // customProperties.commercetoolsVersion of each write
  int64_t max_version = INT64_MIN;
};

// One batch (POST /v3/batches), processed when it was created.
struct Batch {
  std::string id, method, endpoint, created_at, ended_at;
  // BatchItems answered 2xx / not, serialized and comma-joined when the batch ran: the
  // fake shares the benchmark's cores with weft, so it does not copy them at every read.
  std::string responses, errors;
  size_t total = 0, failed = 0;
  bool polled = false;  // the first GET saw it in progress; later ones see it finished
};

// A hex id of 24 digits (like Omnisend's ObjectIDs) with a prefix per kind of object.
std::string hex_id(uint32_t prefix, uint64_t n) {
  char id[32];
  std::snprintf(id, sizeof id, "%08x%016llx", prefix, static_cast<unsigned long long>(n));
  return id;
}

// Now, as ISO 8601 UTC ("2024-05-01T10:07:28Z").
std::string now_iso() {
  std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char out[32];
  std::strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return out;
}
}  // namespace

struct FakeOmnisend::State {
  std::string api_key;
  httplib::Server server;
  std::thread thread;
  int port = 0;

  FaultInjector faults;
  mutable std::mutex mu;
  std::map<std::string, StoredContact> contacts;  // contactID -> contact
  std::map<std::string, std::string> index;       // "type:id" -> contactID, for every identifier
  std::vector<json::object> events;
  std::map<std::string, bool> event_keys;        // eventID + eventTime already stored
  std::vector<OmnisendRequest> log;
  uint64_t next_id = 1;
  int64_t order_violations = 0;
  std::map<std::string, Clock::time_point> not_before;  // request key -> end of its 429 wait
  int64_t retry_after_violations = 0;
  Clock::time_point brand_not_before{};  // end of the latest 429's wait, for every request
  int64_t brand_wait_violations = 0;
  std::map<std::string, Batch> batches;  // batchID -> batch
  uint64_t next_batch_id = 1, next_item_id = 1;

  // The contact an identifier key belongs to, or nullptr.
  StoredContact* find(const std::string& key) {
    auto it = index.find(key);
    return it == index.end() ? nullptr : &contacts.at(it->second);
  }
  void index_add(const std::string& id, const json::object& contact);
  void index_remove(const std::string& id, const json::object& contact);
  void record_write(StoredContact& stored, const json::object& body);
  // POST /v3/contacts and POST /v3/events on a parsed body, with `mu` held: the status and
  // the JSON answer (a contact, {} or problem JSON). A batch runs its items through these.
  std::pair<int, json::value> post_contact(const json::value& body);
  std::pair<int, json::value> post_event(const json::value& body);
};

namespace {

// RFC 9457 problem JSON, as Omnisend answers errors.
json::object problem_json(int status, const std::string& title, const std::string& detail, json::array errors = {},
                          int retry_after = 0) {
  json::object p{{"type", "about:blank"}, {"title", title}, {"status", status}, {"detail", detail},
                 {"instance", ""}};
  if (!errors.empty()) p["errors"] = std::move(errors);
  if (retry_after > 0) p["retryAfter"] = retry_after;
  return p;
}

std::string problem(int status, const std::string& title, const std::string& detail, json::array errors = {},
                    int retry_after = 0) {
  return json::serialize(problem_json(status, title, detail, std::move(errors), retry_after));
}

void answer(httplib::Response& res, int status, const std::string& body) {
  res.status = status;
  res.set_content(body, status >= 400 ? "application/problem+json" : "application/json");
}

// Which identifiers a contact has, as "type:id" keys.
std::vector<std::string> identifier_keys(const json::object& contact) {
  std::vector<std::string> keys;
  if (auto* ids = contact.if_contains("identifiers"); ids && ids->is_array())
    for (const auto& i : ids->get_array())
      if (i.is_object() && i.as_object().contains("type") && i.as_object().contains("id"))
        keys.push_back(std::string(i.at("type").as_string()) + ":" + std::string(i.at("id").as_string()));
  return keys;
}

// Validates a contact body like the real API; returns the field errors.
json::array validate_contact(const json::value& body) {
  // E.164: '+', a first digit 1-9, 7 to 15 digits in all.
  auto e164 = [](std::string_view p) {
    if (p.size() < 8 || p.size() > 16 || p[0] != '+' || p[1] < '1' || p[1] > '9') return false;
    return std::all_of(p.begin() + 1, p.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  json::array errors;
  auto err = [&](const std::string& field, const std::string& message) {
    errors.push_back(json::object{{"field", field}, {"code", "invalid"}, {"message", message}});
  };
  if (!body.is_object()) {
    err("", "body must be a JSON object");
    return errors;
  }
  const auto* ids = body.as_object().if_contains("identifiers");
  if (!ids || !ids->is_array() || ids->as_array().empty()) {
    err("identifiers", "at least one identifier is required");
    return errors;
  }
  for (size_t n = 0; n < ids->as_array().size(); ++n) {
    const auto& i = ids->as_array()[n];
    std::string at = "identifiers[" + std::to_string(n) + "]";
    const json::object* o = i.if_object();
    const json::string* type = o && o->contains("type") ? o->at("type").if_string() : nullptr;
    const json::string* id = o && o->contains("id") ? o->at("id").if_string() : nullptr;
    if (!type || (*type != "email" && *type != "phone")) err(at + ".type", "must be email or phone");
    else if (!id) err(at + ".id", "is required");
    else if (*type == "email" && std::string_view(*id).find('@') == std::string_view::npos)
      err(at + ".id", "invalid email");
    else if (*type == "phone" && !e164(*id))
      err(at + ".id", "phone must be in E.164 format");
    if (o && o->contains("channels") && !o->at("channels").is_object()) {
      err(at + ".channels", "must be an object");
    } else if (o && o->contains("channels")) {
      for (const auto& ch : o->at("channels").as_object()) {
        const json::value* st = ch.value().is_object() ? ch.value().as_object().if_contains("status") : nullptr;
        if (!st || !st->is_string() ||
            (st->as_string() != "subscribed" && st->as_string() != "unsubscribed" && st->as_string() != "nonSubscribed"))
          err(at + ".channels." + std::string(ch.key()) + ".status", "must be subscribed, unsubscribed or nonSubscribed");
      }
    }
  }
  return errors;
}

// Merges an update into a contact like the real API's partial update: top-level fields
// replaced, except customProperties (merged key by key) and identifiers (merged by type + id:
// one sent without channels keeps the stored channels, one with channels replaces only the
// channels it names, so a sync that sends no consent does not wipe the consent set in
// Omnisend). The contactID never changes.
void merge_contact(json::object& contact, const json::object& update) {
  for (const auto& kv : update) {
    if (kv.key() == "identifiers" || kv.key() == "contactID") continue;
    if (kv.key() == "customProperties" && kv.value().is_object()) {
      json::value& have = contact["customProperties"];
      if (!have.is_object()) have = json::object{};
      for (const auto& p : kv.value().as_object()) have.as_object()[p.key()] = p.value();
      continue;
    }
    contact[kv.key()] = kv.value();
  }
  const json::value* ids = update.if_contains("identifiers");
  if (!ids || !ids->is_array()) return;
  json::value& have_v = contact["identifiers"];
  if (!have_v.is_array()) have_v = json::array{};
  json::array& have = have_v.as_array();
  for (const auto& iv : ids->as_array()) {
    const json::object& i = iv.as_object();
    json::object* match = nullptr;
    for (auto& h : have)
      if (h.is_object() && h.as_object().if_contains("type") && h.as_object().if_contains("id") &&
          h.at("type") == i.at("type") && h.at("id") == i.at("id"))
        match = &h.as_object();
    if (!match) {
      have.push_back(i);
      continue;
    }
    for (const auto& kv : i) {
      if (kv.key() != "channels") {
        (*match)[kv.key()] = kv.value();
        continue;
      }
      json::value& channels = (*match)["channels"];
      if (!channels.is_object()) channels = json::object{};
      for (const auto& ch : kv.value().as_object()) channels.as_object()[ch.key()] = ch.value();
    }
  }
}

// customProperties.commercetoolsVersion of a write, if it carries one.
std::optional<int64_t> commercetools_version(const json::object& body) {
  const json::value* props = body.if_contains("customProperties");
  const json::value* v = props && props->is_object() ? props->as_object().if_contains("commercetoolsVersion") : nullptr;
  if (!v) return std::nullopt;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return static_cast<int64_t>(v->get_uint64());
  if (v->is_double()) return static_cast<int64_t>(v->get_double());
  return std::nullopt;
}

// The email a contact or event body writes ("" if none).
std::string written_email(const json::value& body) {
  if (!body.is_object()) return "";
  const json::object& o = body.as_object();
  if (const json::value* ids = o.if_contains("identifiers"); ids && ids->is_array())
    for (const auto& i : ids->as_array())
      if (i.is_object() && i.as_object().if_contains("type") && i.at("type") == "email" &&
          i.as_object().if_contains("id") && i.at("id").is_string())
        return std::string(i.at("id").as_string());
  if (const json::value* c = o.if_contains("contact"); c && c->is_object())
    if (const json::value* e = c->as_object().if_contains("email"); e && e->is_string())
      return std::string(e->as_string());
  return "";
}

// The keys a 429's wait applies to: the email of the contact or event a request writes
// (path + email); for a batch, that of each item, as if it had been sent to its endpoint
// alone (so a contact retried in another batch, or on its own, is still checked); else the
// request's method and target (a lookup of one contact, GET /contacts?email=..., is
// another request than a lookup of another).
std::vector<std::string> retry_keys(const httplib::Request& req) {
  std::error_code ec;
  json::value body = req.body.empty() ? json::value() : json::parse(req.body, ec);
  if (!ec && body.is_object()) {
    const json::object& o = body.as_object();
    const json::value* items = o.if_contains("items");
    const json::value* endpoint = o.if_contains("endpoint");
    if (req.path == "/v3/batches" && items && items->is_array() && endpoint && endpoint->is_string()) {
      std::vector<std::string> keys;
      for (const auto& item : items->as_array())
        if (std::string email = written_email(item); !email.empty())
          keys.push_back("/v3/" + std::string(endpoint->as_string()) + " " + email);
      if (!keys.empty()) return keys;
    } else if (std::string email = written_email(body); !email.empty()) {
      return {req.path + " " + email};
    }
  }
  return {req.method + " " + (req.target.empty() ? req.path : req.target)};
}

}  // namespace

void FakeOmnisend::State::index_add(const std::string& id, const json::object& contact) {
  for (const auto& key : identifier_keys(contact)) index[key] = id;
}

void FakeOmnisend::State::index_remove(const std::string& id, const json::object& contact) {
  for (const auto& key : identifier_keys(contact)) {
    auto it = index.find(key);
    if (it != index.end() && it->second == id) index.erase(it);
  }
}

void FakeOmnisend::State::record_write(StoredContact& stored, const json::object& body) {
  auto v = commercetools_version(body);
  if (!v) return;
  if (*v < stored.max_version) ++order_violations;
  stored.versions.push_back(*v);
  stored.max_version = std::max(stored.max_version, *v);
}

std::pair<int, json::value> FakeOmnisend::State::post_contact(const json::value& body) {
  json::array errors = validate_contact(body);
  if (!errors.empty()) return {400, problem_json(400, "Bad Request", "validation failed", errors)};
  const json::object& update = body.as_object();
  // Two contacts never share an identifier: every identifier must point at one contact.
  std::string found;
  for (const auto& key : identifier_keys(update)) {
    auto it = index.find(key);
    if (it == index.end()) continue;
    if (!found.empty() && found != it->second)
      return {409, problem_json(409, "Conflict", "identifiers belong to different contacts")};
    found = it->second;
  }
  if (found.empty()) {
    char id[32];
    std::snprintf(id, sizeof id, "%024llx", static_cast<unsigned long long>(next_id++));
    StoredContact& stored = contacts[id];
    stored.contact = update;
    stored.contact["contactID"] = id;
    index_add(id, stored.contact);
    record_write(stored, update);
    return {201, stored.contact};
  }
  StoredContact& stored = contacts.at(found);
  merge_contact(stored.contact, update);
  index_add(found, stored.contact);
  record_write(stored, update);
  return {200, stored.contact};
}

std::pair<int, json::value> FakeOmnisend::State::post_event(const json::value& body) {
  const json::object* o = body.if_object();
  if (!o) return {400, problem_json(400, "Bad Request", "body must be a JSON object")};
  json::array errors;
  if (!o->contains("eventName")) errors.push_back(json::object{{"field", "eventName"}, {"code", "required"}, {"message", "is required"}});
  if (!o->contains("origin")) errors.push_back(json::object{{"field", "origin"}, {"code", "required"}, {"message", "is required"}});
  if (!o->contains("contact")) errors.push_back(json::object{{"field", "contact"}, {"code", "required"}, {"message", "is required"}});
  if (!errors.empty()) return {400, problem_json(400, "Bad Request", "validation failed", errors)};
  // Deduplicated only when both eventID and eventTime are present.
  if (o->contains("eventID") && o->contains("eventTime")) {
    std::string key = json::serialize(o->at("eventID")) + "|" + json::serialize(o->at("eventTime"));
    if (event_keys[key]) return {200, json::object{}};
    event_keys[key] = true;
  }
  events.push_back(*o);
  return {200, json::object{}};
}

FakeOmnisend::FakeOmnisend(std::string api_key) : state_(std::make_unique<State>()) {
  State* S = state_.get();
  S->api_key = std::move(api_key);
  S->server.set_tcp_nodelay(true);  // without it, keep-alive answers wait ~40 ms (Nagle)

  // Auth before any route.
  S->server.set_pre_routing_handler([S](const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("X-API-KEY") != S->api_key) {
      answer(res, 401, problem(401, "Unauthorized", "missing or invalid API key"));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Runs for every answer, just before it is written: the request log.
  S->server.set_post_routing_handler([S](const httplib::Request& req, httplib::Response& res) {
    int status = FaultInjector::was_reset(res) ? 0 : res.status;
    std::lock_guard<std::mutex> lock(S->mu);
    S->log.push_back({req.method, req.path, req.body, req.get_header_value("X-API-KEY"), status});
  });

  // Faults, and the check that clients wait out a 429, wrap every route: they need the
  // request body (the key of a wait is the email it writes), which the pre-routing handler
  // does not have yet.
  auto route = [S](std::function<void(const httplib::Request&, httplib::Response&)> handler) {
    return [S, handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
      Clock::time_point arrived = Clock::now();
      std::vector<std::string> keys;
      bool waits;
      {
        std::lock_guard<std::mutex> lock(S->mu);
        waits = !S->not_before.empty();
        if (arrived < S->brand_not_before) ++S->brand_wait_violations;
      }
      if (waits) {
        keys = retry_keys(req);
        std::lock_guard<std::mutex> lock(S->mu);
        bool early = false;  // one violation per request, however many of its keys came early
        for (const auto& key : keys) {
          auto it = S->not_before.find(key);
          if (it == S->not_before.end()) continue;
          if (arrived < it->second) early = true;
          else S->not_before.erase(it);
        }
        if (early) ++S->retry_after_violations;
      }
      auto body = [](int status, const std::string& detail, int retry_after) {
        return problem(status, status == 429 ? "Too Many Requests" : "Server Error", detail, {}, retry_after);
      };
      FaultOutcome outcome;
      if (!S->faults.apply(res, body, &outcome)) return handler(req, res);
      if (outcome.status == 429) {
        if (keys.empty()) keys = retry_keys(req);
        auto until = Clock::now() + std::chrono::milliseconds(outcome.retry_after_s * 1000 - 20);
        std::lock_guard<std::mutex> lock(S->mu);
        for (const auto& key : keys) S->not_before[key] = until;
        S->brand_not_before = std::max(S->brand_not_before, until);
      }
    };
  };

  S->server.Post("/v3/contacts", route([S](const httplib::Request& req, httplib::Response& res) {
    std::error_code ec;
    json::value body = json::parse(req.body, ec);
    if (ec) return answer(res, 400, problem(400, "Bad Request", "body is not valid JSON"));
    std::lock_guard<std::mutex> lock(S->mu);
    auto [status, out] = S->post_contact(body);
    answer(res, status, json::serialize(out));
  }));

  S->server.Get(R"(/v3/contacts/([0-9a-f]+))", route([S](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(S->mu);
    auto it = S->contacts.find(req.matches[1]);
    if (it == S->contacts.end()) return answer(res, 404, problem(404, "Not Found", "no such contact"));
    answer(res, 200, json::serialize(it->second.contact));
  }));

  S->server.Get("/v3/contacts", route([S](const httplib::Request& req, httplib::Response& res) {
    std::string want;
    if (req.has_param("email")) want = "email:" + req.get_param_value("email");
    else if (req.has_param("phone")) want = "phone:" + req.get_param_value("phone");
    std::lock_guard<std::mutex> lock(S->mu);
    json::array out;
    if (want.empty()) {
      for (const auto& kv : S->contacts) out.push_back(kv.second.contact);
    } else if (const StoredContact* c = S->find(want)) {
      out.push_back(c->contact);
    }
    json::object page{{"contacts", out},
                      {"paging", json::object{{"limit", 100}, {"hasMore", false}, {"cursors", json::object{}}}}};
    answer(res, 200, json::serialize(page));
  }));

  S->server.Patch(R"(/v3/contacts/([0-9a-f]+))", route([S](const httplib::Request& req, httplib::Response& res) {
    std::error_code ec;
    json::value body = json::parse(req.body, ec);
    if (ec || !body.is_object()) return answer(res, 400, problem(400, "Bad Request", "body must be a JSON object"));
    if (body.as_object().contains("identifiers")) {
      json::array errors = validate_contact(body);
      if (!errors.empty()) return answer(res, 400, problem(400, "Bad Request", "validation failed", errors));
    }
    std::lock_guard<std::mutex> lock(S->mu);
    std::string id = req.matches[1];
    auto it = S->contacts.find(id);
    if (it == S->contacts.end()) return answer(res, 404, problem(404, "Not Found", "no such contact"));
    for (const auto& key : identifier_keys(body.as_object())) {
      auto owner = S->index.find(key);
      if (owner != S->index.end() && owner->second != id)
        return answer(res, 409, problem(409, "Conflict", "identifier belongs to another contact"));
    }
    merge_contact(it->second.contact, body.as_object());
    S->index_add(id, it->second.contact);
    S->record_write(it->second, body.as_object());
    answer(res, 200, json::serialize(it->second.contact));
  }));

  S->server.Post("/v3/events", route([S](const httplib::Request& req, httplib::Response& res) {
    std::error_code ec;
    json::value body = json::parse(req.body, ec);
    if (ec) return answer(res, 400, problem(400, "Bad Request", "body must be a JSON object"));
    std::lock_guard<std::mutex> lock(S->mu);
    auto [status, out] = S->post_event(body);
    answer(res, status, json::serialize(out));
  }));

  // Batches: up to 100 POST/PUT operations on contacts or events, each item processed as
  // its own request would be, results kept per item. Processed at once, but the first GET
  // of a batch sees it still in progress (a client must poll, as with the real API).
  S->server.Post("/v3/batches", route([S](const httplib::Request& req, httplib::Response& res) {
    std::error_code ec;
    json::value body = json::parse(req.body, ec);
    const json::object* o = ec ? nullptr : body.if_object();
    if (!o) return answer(res, 400, problem(400, "Bad Request", "body must be a JSON object"));
    json::array errors;
    auto err = [&](const std::string& field, const std::string& message) {
      errors.push_back(json::object{{"field", field}, {"code", "invalid"}, {"message", message}});
    };
    const json::value* method = o->if_contains("method");
    const json::value* endpoint = o->if_contains("endpoint");
    const json::value* items = o->if_contains("items");
    if (!method || !method->is_string() || (method->as_string() != "POST" && method->as_string() != "PUT"))
      err("method", "must be POST or PUT");
    if (!endpoint || !endpoint->is_string() || (endpoint->as_string() != "contacts" && endpoint->as_string() != "events"))
      err("endpoint", "must be contacts or events");
    if (!items || !items->is_array() || items->as_array().empty() || items->as_array().size() > 100)
      err("items", "must be an array of 1 to 100 items");
    if (!errors.empty()) return answer(res, 400, problem(400, "Bad Request", "validation failed", errors));

    std::lock_guard<std::mutex> lock(S->mu);
    Batch b;
    b.id = hex_id(0xba7c0000u, S->next_batch_id++);
    b.method = std::string(method->as_string());
    b.endpoint = std::string(endpoint->as_string());
    b.created_at = now_iso();
    b.total = items->as_array().size();
    bool contacts = b.endpoint == "contacts";
    for (const auto& item : items->as_array()) {
      auto [status, out] = contacts ? S->post_contact(item) : S->post_event(item);
      json::object bi{{"itemID", hex_id(0x17e30000u, S->next_item_id++)},
                      {"request", item},
                      {"responseCode", status},
                      {"response", std::move(out)},
                      {"status", "finished"}};
      bool ok = status >= 200 && status < 300;
      std::string& list = ok ? b.responses : b.errors;
      if (!list.empty()) list += ',';
      list += json::serialize(bi);
      if (!ok) ++b.failed;
    }
    b.ended_at = now_iso();
    json::object created{{"batchID", b.id}, {"totalCount", b.total}};
    S->batches.emplace(b.id, std::move(b));
    answer(res, 201, json::serialize(created));
  }));

  // The batch as GET /v3/batches/{id} shows it (and its items, for /items); the first GET of
  // either kind sees it in progress.
  auto batch_view = [S](const std::string& id, bool with_items, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(S->mu);
    auto it = S->batches.find(id);
    if (it == S->batches.end()) return answer(res, 404, problem(404, "Not Found", "no such batch"));
    Batch& b = it->second;
    bool finished = b.polled;
    b.polled = true;
    json::object out{{"batchID", b.id},
                     {"method", b.method},
                     {"endpoint", b.endpoint},
                     {"status", finished ? "finished" : "inProgress"},
                     {"totalCount", b.total},
                     {"finishedCount", finished ? b.total : 0},
                     {"errorsCount", finished ? b.failed : 0},
                     {"createdAt", b.created_at},
                     {"endedAt", finished ? json::value(b.ended_at) : json::value(nullptr)}};
    std::string text = json::serialize(out);
    if (with_items) {
      text.pop_back();  // the closing brace: the item lists go in as they were serialized
      text += ",\"responses\":[" + (finished ? b.responses : std::string()) + "],\"errors\":[" +
              (finished ? b.errors : std::string()) + "]}";
    }
    answer(res, 200, text);
  };
  S->server.Get(R"(/v3/batches/([^/]+))", route([batch_view](const httplib::Request& req, httplib::Response& res) {
    batch_view(req.matches[1], false, res);
  }));
  S->server.Get(R"(/v3/batches/([^/]+)/items)", route([batch_view](const httplib::Request& req, httplib::Response& res) {
    batch_view(req.matches[1], true, res);
  }));

  S->port = S->server.bind_to_any_port("127.0.0.1");
  S->thread = std::thread([S] { S->server.listen_after_bind(); });
  // bind_to_any_port already listens: connections queue until the accept loop runs.
}

FakeOmnisend::~FakeOmnisend() {
  state_->server.stop();
  if (state_->thread.joinable()) state_->thread.join();
}

int FakeOmnisend::port() const { return state_->port; }
std::string FakeOmnisend::base_url() const { return "http://127.0.0.1:" + std::to_string(state_->port) + "/v3"; }

void FakeOmnisend::set_faults(const OmnisendFaults& f) { state_->faults.set(f); }
void FakeOmnisend::set_down(bool down) { state_->faults.set_down(down); }

std::vector<json::object> FakeOmnisend::contacts() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  std::vector<json::object> out;
  out.reserve(state_->contacts.size());
  for (const auto& kv : state_->contacts) out.push_back(kv.second.contact);
  return out;
}

std::optional<json::object> FakeOmnisend::contact_by_email(const std::string& email) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  if (const StoredContact* c = state_->find("email:" + email)) return c->contact;
  return std::nullopt;
}

size_t FakeOmnisend::contact_count() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->contacts.size();
}

std::vector<json::object> FakeOmnisend::events() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->events;
}

bool FakeOmnisend::delete_contact_by_email(const std::string& email) {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto owner = state_->index.find("email:" + email);
  if (owner == state_->index.end()) return false;
  std::string id = owner->second;
  auto it = state_->contacts.find(id);
  state_->index_remove(id, it->second.contact);
  state_->contacts.erase(it);
  return true;
}

bool FakeOmnisend::update_contact(const std::string& email, const std::function<void(json::object&)>& change) {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto owner = state_->index.find("email:" + email);
  if (owner == state_->index.end()) return false;
  std::string id = owner->second;
  StoredContact& stored = state_->contacts.at(id);
  json::object changed = stored.contact;
  change(changed);
  changed["contactID"] = id;
  for (const auto& key : identifier_keys(changed)) {
    auto other = state_->index.find(key);
    if (other != state_->index.end() && other->second != id) return false;  // two contacts never share one
  }
  state_->index_remove(id, stored.contact);
  stored.contact = std::move(changed);
  state_->index_add(id, stored.contact);
  return true;
}

std::vector<OmnisendRequest> FakeOmnisend::requests() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->log;
}

size_t FakeOmnisend::request_count() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->log.size();
}

std::vector<int64_t> FakeOmnisend::written_versions(const std::string& email) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  if (const StoredContact* c = state_->find("email:" + email)) return c->versions;
  return {};
}

int64_t FakeOmnisend::order_violations() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->order_violations;
}

size_t FakeOmnisend::batch_count() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->batches.size();
}

int64_t FakeOmnisend::brand_wait_violations() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->brand_wait_violations;
}

int64_t FakeOmnisend::retry_after_violations() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->retry_after_violations;
}

}  // namespace weft::fakes
