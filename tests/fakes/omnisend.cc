#include "tests/fakes/omnisend.h"

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <regex>
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

  // The contact an identifier key belongs to, or nullptr.
  StoredContact* find(const std::string& key) {
    auto it = index.find(key);
    return it == index.end() ? nullptr : &contacts.at(it->second);
  }
  void index_add(const std::string& id, const json::object& contact);
  void index_remove(const std::string& id, const json::object& contact);
  void record_write(StoredContact& stored, const json::object& body);
};

namespace {

// RFC 9457 problem JSON, as Omnisend answers errors.
std::string problem(int status, const std::string& title, const std::string& detail, json::array errors = {},
                    int retry_after = 0) {
  json::object p{{"type", "about:blank"}, {"title", title}, {"status", status}, {"detail", detail},
                 {"instance", ""}};
  if (!errors.empty()) p["errors"] = std::move(errors);
  if (retry_after > 0) p["retryAfter"] = retry_after;
  return json::serialize(p);
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
  static const std::regex e164(R"(^\+[1-9][0-9]{6,14}$)");
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
    else if (*type == "phone" && !std::regex_match(std::string(*id), e164))
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

// The key a 429's wait applies to: the email of the contact or event a request writes, else
// its method and path.
std::string retry_key(const httplib::Request& req) {
  std::error_code ec;
  json::value body = req.body.empty() ? json::value() : json::parse(req.body, ec);
  if (!ec && body.is_object()) {
    const json::object& o = body.as_object();
    if (const json::value* ids = o.if_contains("identifiers"); ids && ids->is_array())
      for (const auto& i : ids->as_array())
        if (i.is_object() && i.as_object().if_contains("type") && i.at("type") == "email" &&
            i.as_object().if_contains("id") && i.at("id").is_string())
          return req.path + " " + std::string(i.at("id").as_string());
    if (const json::value* c = o.if_contains("contact"); c && c->is_object())
      if (const json::value* e = c->as_object().if_contains("email"); e && e->is_string())
        return req.path + " " + std::string(e->as_string());
  }
  return req.method + " " + req.path;
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
      std::string key;
      bool waits;
      {
        std::lock_guard<std::mutex> lock(S->mu);
        waits = !S->not_before.empty();
      }
      if (waits) {
        key = retry_key(req);
        std::lock_guard<std::mutex> lock(S->mu);
        auto it = S->not_before.find(key);
        if (it != S->not_before.end()) {
          if (arrived < it->second) ++S->retry_after_violations;
          else S->not_before.erase(it);
        }
      }
      auto body = [](int status, const std::string& detail, int retry_after) {
        return problem(status, status == 429 ? "Too Many Requests" : "Server Error", detail, {}, retry_after);
      };
      FaultOutcome outcome;
      if (!S->faults.apply(res, body, &outcome)) return handler(req, res);
      if (outcome.status == 429) {
        if (key.empty()) key = retry_key(req);
        auto until = Clock::now() + std::chrono::milliseconds(outcome.retry_after_s * 1000 - 20);
        std::lock_guard<std::mutex> lock(S->mu);
        S->not_before[key] = until;
      }
    };
  };

  S->server.Post("/v3/contacts", route([S](const httplib::Request& req, httplib::Response& res) {
    std::error_code ec;
    json::value body = json::parse(req.body, ec);
    if (ec) return answer(res, 400, problem(400, "Bad Request", "body is not valid JSON"));
    json::array errors = validate_contact(body);
    if (!errors.empty()) return answer(res, 400, problem(400, "Bad Request", "validation failed", errors));
    const json::object& update = body.as_object();
    std::lock_guard<std::mutex> lock(S->mu);
    // Two contacts never share an identifier: every identifier must point at one contact.
    std::string found;
    for (const auto& key : identifier_keys(update)) {
      auto it = S->index.find(key);
      if (it == S->index.end()) continue;
      if (!found.empty() && found != it->second)
        return answer(res, 409, problem(409, "Conflict", "identifiers belong to different contacts"));
      found = it->second;
    }
    if (found.empty()) {
      char id[32];
      std::snprintf(id, sizeof id, "%024llx", static_cast<unsigned long long>(S->next_id++));
      StoredContact& stored = S->contacts[id];
      stored.contact = update;
      stored.contact["contactID"] = id;
      S->index_add(id, stored.contact);
      S->record_write(stored, update);
      return answer(res, 201, json::serialize(stored.contact));
    }
    StoredContact& stored = S->contacts.at(found);
    merge_contact(stored.contact, update);
    S->index_add(found, stored.contact);
    S->record_write(stored, update);
    answer(res, 200, json::serialize(stored.contact));
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
    json::array errors;
    const json::object* o = ec ? nullptr : body.if_object();
    if (!o) return answer(res, 400, problem(400, "Bad Request", "body must be a JSON object"));
    if (!o->contains("eventName")) errors.push_back(json::object{{"field", "eventName"}, {"code", "required"}, {"message", "is required"}});
    if (!o->contains("origin")) errors.push_back(json::object{{"field", "origin"}, {"code", "required"}, {"message", "is required"}});
    if (!o->contains("contact")) errors.push_back(json::object{{"field", "contact"}, {"code", "required"}, {"message", "is required"}});
    if (!errors.empty()) return answer(res, 400, problem(400, "Bad Request", "validation failed", errors));
    std::lock_guard<std::mutex> lock(S->mu);
    // Deduplicated only when both eventID and eventTime are present.
    if (o->contains("eventID") && o->contains("eventTime")) {
      std::string key = json::serialize(o->at("eventID")) + "|" + json::serialize(o->at("eventTime"));
      if (S->event_keys[key]) return answer(res, 200, "{}");
      S->event_keys[key] = true;
    }
    S->events.push_back(*o);
    answer(res, 200, "{}");
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

int64_t FakeOmnisend::retry_after_violations() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->retry_after_violations;
}

}  // namespace weft::fakes
