#include "tests/fakes/omnisend.h"

#include <httplib.h>

#include <chrono>
#include <map>
#include <mutex>
#include <regex>
#include <thread>

namespace weft::fakes {
namespace json = boost::json;

struct FakeOmnisend::State {
  std::string api_key;
  httplib::Server server;
  std::thread thread;
  int port = 0;

  FaultInjector faults;
  mutable std::mutex mu;
  std::map<std::string, json::object> contacts;  // contactID -> contact
  std::vector<json::object> events;
  std::map<std::string, bool> event_keys;        // eventID + eventTime already stored
  std::vector<OmnisendRequest> log;
  uint64_t next_id = 1;
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
    if (o && o->contains("channels")) {
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

// Merges an update into a contact: top-level fields replaced, identifiers merged by type+id.
void merge_contact(json::object& contact, const json::object& update) {
  for (const auto& kv : update) {
    if (kv.key() == "identifiers") continue;
    contact[kv.key()] = kv.value();
  }
  if (auto* ids = update.if_contains("identifiers")) {
    json::array& have = contact["identifiers"].as_array();
    for (const auto& i : ids->as_array()) {
      bool replaced = false;
      for (auto& h : have) {
        if (h.at("type") == i.at("type") && h.at("id") == i.at("id")) {
          h = i;
          replaced = true;
        }
      }
      if (!replaced) have.push_back(i);
    }
  }
}

}  // namespace

FakeOmnisend::FakeOmnisend(std::string api_key) : state_(std::make_unique<State>()) {
  State* S = state_.get();
  S->api_key = std::move(api_key);
  S->server.set_tcp_nodelay(true);  // without it, keep-alive answers wait ~40 ms (Nagle)

  // Auth and faults, before any route.
  S->server.set_pre_routing_handler([S](const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("X-API-KEY") != S->api_key) {
      answer(res, 401, problem(401, "Unauthorized", "missing or invalid API key"));
      return httplib::Server::HandlerResponse::Handled;
    }
    auto body = [](int status, const std::string& detail, int retry_after) {
      return problem(status, status == 429 ? "Too Many Requests" : "Server Error", detail, {}, retry_after);
    };
    return S->faults.apply(res, body) ? httplib::Server::HandlerResponse::Handled
                                      : httplib::Server::HandlerResponse::Unhandled;
  });
  // Runs for every answer, just before it is written: the request log.
  S->server.set_post_routing_handler([S](const httplib::Request& req, httplib::Response& res) {
    int status = FaultInjector::was_reset(res) ? 0 : res.status;
    std::lock_guard<std::mutex> lock(S->mu);
    S->log.push_back({req.method, req.path, req.body, req.get_header_value("X-API-KEY"), status});
  });

  S->server.Post("/v3/contacts", [S](const httplib::Request& req, httplib::Response& res) {
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
      for (const auto& [id, c] : S->contacts) {
        auto have = identifier_keys(c);
        if (std::find(have.begin(), have.end(), key) == have.end()) continue;
        if (!found.empty() && found != id)
          return answer(res, 409, problem(409, "Conflict", "identifiers belong to different contacts"));
        found = id;
      }
    }
    if (found.empty()) {
      char id[32];
      std::snprintf(id, sizeof id, "%024llx", static_cast<unsigned long long>(S->next_id++));
      json::object c = update;
      c["contactID"] = id;
      S->contacts[id] = c;
      return answer(res, 201, json::serialize(c));
    }
    merge_contact(S->contacts[found], update);
    answer(res, 200, json::serialize(S->contacts[found]));
  });

  S->server.Get(R"(/v3/contacts/([0-9a-f]+))", [S](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(S->mu);
    auto it = S->contacts.find(req.matches[1]);
    if (it == S->contacts.end()) return answer(res, 404, problem(404, "Not Found", "no such contact"));
    answer(res, 200, json::serialize(it->second));
  });

  S->server.Get("/v3/contacts", [S](const httplib::Request& req, httplib::Response& res) {
    std::string want;
    if (req.has_param("email")) want = "email:" + req.get_param_value("email");
    else if (req.has_param("phone")) want = "phone:" + req.get_param_value("phone");
    std::lock_guard<std::mutex> lock(S->mu);
    json::array out;
    for (const auto& [id, c] : S->contacts) {
      auto keys = identifier_keys(c);
      if (want.empty() || std::find(keys.begin(), keys.end(), want) != keys.end()) out.push_back(c);
    }
    json::object page{{"contacts", out},
                      {"paging", json::object{{"limit", 100}, {"hasMore", false}, {"cursors", json::object{}}}}};
    answer(res, 200, json::serialize(page));
  });

  S->server.Patch(R"(/v3/contacts/([0-9a-f]+))", [S](const httplib::Request& req, httplib::Response& res) {
    std::error_code ec;
    json::value body = json::parse(req.body, ec);
    if (ec || !body.is_object()) return answer(res, 400, problem(400, "Bad Request", "body must be a JSON object"));
    std::lock_guard<std::mutex> lock(S->mu);
    auto it = S->contacts.find(req.matches[1]);
    if (it == S->contacts.end()) return answer(res, 404, problem(404, "Not Found", "no such contact"));
    merge_contact(it->second, body.as_object());
    answer(res, 200, json::serialize(it->second));
  });

  S->server.Post("/v3/events", [S](const httplib::Request& req, httplib::Response& res) {
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
  });

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
  for (const auto& kv : state_->contacts) out.push_back(kv.second);
  return out;
}

std::optional<json::object> FakeOmnisend::contact_by_email(const std::string& email) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  for (const auto& [id, c] : state_->contacts) {
    auto keys = identifier_keys(c);
    if (std::find(keys.begin(), keys.end(), "email:" + email) != keys.end()) return c;
  }
  return std::nullopt;
}

std::vector<json::object> FakeOmnisend::events() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->events;
}

bool FakeOmnisend::delete_contact_by_email(const std::string& email) {
  std::lock_guard<std::mutex> lock(state_->mu);
  for (auto it = state_->contacts.begin(); it != state_->contacts.end(); ++it) {
    auto keys = identifier_keys(it->second);
    if (std::find(keys.begin(), keys.end(), "email:" + email) != keys.end()) {
      state_->contacts.erase(it);
      return true;
    }
  }
  return false;
}

std::vector<OmnisendRequest> FakeOmnisend::requests() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->log;
}

}  // namespace weft::fakes
