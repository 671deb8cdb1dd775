#include "tests/fakes/commercetools.h"

#include "engine/util/time.h"

#include <ext/pb_ds/assoc_container.hpp>
#include <ext/pb_ds/tree_policy.hpp>
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <map>
#include <mutex>
#include <regex>
#include <thread>

namespace weft::fakes {
namespace json = boost::json;

namespace {
constexpr int64_t kStartMs = 1704067200000;  // 2024-01-01T00:00:00.000Z

std::string ct_error(int status, const std::string& code, const std::string& message) {
  json::object e{{"statusCode", status},
                 {"message", message},
                 {"errors", json::array{json::object{{"code", code}, {"message", message}}}}};
  return json::serialize(e);
}

void answer(httplib::Response& res, int status, const std::string& body) {
  res.status = status;
  res.set_content(body, "application/json");
}

// The `where` predicates the delta pull uses: lastModifiedAt after a point, optionally with
// the id tie-breaker for records at exactly that point.
struct Where {
  bool any = true;
  std::string after;     // lastModifiedAt > after (or >= when inclusive)
  bool inclusive = false;
  std::string tie_id;    // or (lastModifiedAt = after and id > tie_id)
};

// Customers in delta order (lastModifiedAt asc, id asc), with ranks, so a page is found in
// O(log n) and read in O(limit) however many customers there are.
using OrderKey = std::pair<std::string, std::string>;  // (lastModifiedAt, id)
using OrderIndex = __gnu_pbds::tree<OrderKey, __gnu_pbds::null_type, std::less<OrderKey>, __gnu_pbds::rb_tree_tag,
                                    __gnu_pbds::tree_order_statistics_node_update>;

// The first customer a predicate matches: every one after it in delta order matches too.
OrderIndex::const_iterator first_match(const OrderIndex& order, const Where& w) {
  if (w.any) return order.begin();
  if (!w.tie_id.empty()) return order.upper_bound({w.after, w.tie_id});
  if (w.inclusive) return order.lower_bound({w.after, ""});
  return order.lower_bound({w.after + '\0', ""});  // the least time after `after`
}

bool parse_where(const std::string& w, Where* out) {
  static const std::regex simple(R"re(^\s*lastModifiedAt\s*(>=|>)\s*"([^"]+)"\s*$)re");
  static const std::regex tie(
      R"re(^\s*\(?\s*lastModifiedAt\s*>\s*"([^"]+)"\s+or\s+\(\s*lastModifiedAt\s*=\s*"([^"]+)"\s+and\s+id\s*>\s*"([^"]+)"\s*\)\s*\)?\s*$)re");
  std::smatch m;
  if (w.empty()) return true;
  out->any = false;
  if (std::regex_match(w, m, simple)) {
    out->inclusive = m[1] == ">=";
    out->after = m[2];
    return true;
  }
  if (std::regex_match(w, m, tie) && m[1] == m[2]) {
    out->after = m[1];
    out->tie_id = m[3];
    return true;
  }
  return false;
}

std::string base64_decode(const std::string& in) {
  static const std::string chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int val = 0, bits = -8;
  for (char c : in) {
    auto pos = chars.find(c);
    if (pos == std::string::npos) break;
    val = (val << 6) + static_cast<int>(pos);
    bits += 6;
    if (bits >= 0) {
      out.push_back(static_cast<char>((val >> bits) & 0xFF));
      bits -= 8;
    }
  }
  return out;
}

}  // namespace


struct FakeCommercetools::State {
  std::string project, client_id, client_secret;
  httplib::Server server;
  std::thread thread;
  int port = 0;
  FaultInjector faults;

  mutable std::mutex mu;
  int token_lifetime_s = 172800;
  std::map<std::string, std::chrono::steady_clock::time_point> tokens;  // token -> expiry
  std::map<std::string, json::object> customers;
  // Each customer as a page shows it, serialized when it is written: a page of 500 is then
  // joined text, not 500 objects copied and serialized again (the fake shares the
  // benchmark's two cores with weft).
  std::map<std::string, std::string> texts;
  OrderIndex order;                         // every customer, in delta order
  std::map<std::string, int64_t> sequence;  // customer id -> last message sequenceNumber
  int64_t clock_ms = kStartMs;
  std::vector<CommercetoolsRequest> log;

  bool authorized(const httplib::Request& req) {
    std::string auth = req.get_header_value("Authorization");
    if (auth.rfind("Bearer ", 0) != 0) return false;
    std::lock_guard<std::mutex> lock(mu);
    auto it = tokens.find(auth.substr(7));
    return it != tokens.end() && std::chrono::steady_clock::now() < it->second;
  }
};

FakeCommercetools::FakeCommercetools(std::string project, std::string client_id, std::string client_secret)
    : state_(std::make_unique<State>()) {
  State* S = state_.get();
  S->project = std::move(project);
  S->client_id = std::move(client_id);
  S->client_secret = std::move(client_secret);
  S->server.set_tcp_nodelay(true);

  S->server.Post("/oauth/token", [S](const httplib::Request& req, httplib::Response& res) {
    std::string auth = req.get_header_value("Authorization");
    std::string creds = auth.rfind("Basic ", 0) == 0 ? base64_decode(auth.substr(6)) : "";
    if (creds != S->client_id + ":" + S->client_secret)
      return answer(res, 401, R"({"statusCode":401,"message":"Please provide valid client credentials using HTTP Basic Authentication.","errors":[{"code":"invalid_client","message":"Please provide valid client credentials using HTTP Basic Authentication."}],"error":"invalid_client"})");
    if (req.get_param_value("grant_type") != "client_credentials")
      return answer(res, 400, R"({"statusCode":400,"message":"Invalid grant type","errors":[{"code":"unsupported_grant_type","message":"Invalid grant type"}],"error":"unsupported_grant_type"})");
    std::lock_guard<std::mutex> lock(S->mu);
    std::string token = "token-" + std::to_string(S->tokens.size() + 1);
    S->tokens[token] = std::chrono::steady_clock::now() + std::chrono::seconds(S->token_lifetime_s);
    json::object out{{"access_token", token},
                     {"token_type", "Bearer"},
                     {"expires_in", S->token_lifetime_s},
                     {"scope", "manage_project:" + S->project}};
    answer(res, 200, json::serialize(out));
  });

  S->server.set_pre_routing_handler([S](const httplib::Request& req, httplib::Response& res) {
    if (req.path == "/oauth/token") return httplib::Server::HandlerResponse::Unhandled;
    if (!S->authorized(req)) {
      answer(res, 401, ct_error(401, "invalid_token", "invalid_token"));
      return httplib::Server::HandlerResponse::Handled;
    }
    auto body = [](int status, const std::string& detail, int) {
      return ct_error(status, status == 503 ? "OverCapacity" : status == 429 ? "TooManyRequests" : "General", detail);
    };
    return S->faults.apply(res, body) ? httplib::Server::HandlerResponse::Handled
                                      : httplib::Server::HandlerResponse::Unhandled;
  });
  S->server.set_post_routing_handler([S](const httplib::Request& req, httplib::Response& res) {
    std::string query;
    for (const auto& p : req.params) query += (query.empty() ? "" : "&") + p.first + "=" + p.second;
    int status = FaultInjector::was_reset(res) ? 0 : res.status;
    std::lock_guard<std::mutex> lock(S->mu);
    S->log.push_back({req.method, req.path, query, req.get_header_value("Authorization"), status});
  });

  std::string base = "/" + S->project;
  S->server.Get(base + "/customers", [S](const httplib::Request& req, httplib::Response& res) {
    int limit = req.has_param("limit") ? std::atoi(req.get_param_value("limit").c_str()) : 20;
    int offset = req.has_param("offset") ? std::atoi(req.get_param_value("offset").c_str()) : 0;
    if (limit < 1 || limit > 500)
      return answer(res, 400, ct_error(400, "InvalidInput", "The limit must be between 1 and 500."));
    if (offset < 0 || offset > 10000)
      return answer(res, 400, ct_error(400, "InvalidInput", "The offset cannot exceed 10000."));
    Where where;
    if (!parse_where(req.get_param_value("where"), &where))
      return answer(res, 400, ct_error(400, "InvalidInput", "Malformed parameter: where: " + req.get_param_value("where")));
    std::lock_guard<std::mutex> lock(S->mu);
    // Always sort=lastModifiedAt asc, sort=id asc (the only order the delta pull asks for).
    auto first = first_match(S->order, where);
    size_t skipped = first == S->order.end() ? S->order.size() : S->order.order_of_key(*first);
    size_t total = S->order.size() - skipped;
    std::string results;
    size_t count = 0;
    if (static_cast<size_t>(offset) < total) {
      auto it = S->order.find_by_order(skipped + offset);
      for (; it != S->order.end() && count < static_cast<size_t>(limit); ++it, ++count) {
        if (count) results += ',';
        results += S->texts.at(it->second);
      }
    }
    std::string page = "{\"limit\":" + std::to_string(limit) + ",\"offset\":" + std::to_string(offset) +
                       ",\"count\":" + std::to_string(count) + ",\"results\":[" + results + "]";
    if (req.get_param_value("withTotal") != "false") page += ",\"total\":" + std::to_string(total);
    answer(res, 200, page + "}");
  });

  S->server.Get(base + R"(/customers/([A-Za-z0-9_-]+))", [S](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(S->mu);
    auto it = S->customers.find(req.matches[1]);
    if (it == S->customers.end())
      return answer(res, 404, ct_error(404, "ResourceNotFound",
                                       "The Resource with ID '" + std::string(req.matches[1]) + "' was not found."));
    answer(res, 200, S->texts.at(it->first));
  });

  S->port = S->server.bind_to_any_port("127.0.0.1");
  S->thread = std::thread([S] { S->server.listen_after_bind(); });
}

FakeCommercetools::~FakeCommercetools() {
  state_->server.stop();
  if (state_->thread.joinable()) state_->thread.join();
}

int FakeCommercetools::port() const { return state_->port; }
std::string FakeCommercetools::url() const { return "http://127.0.0.1:" + std::to_string(state_->port); }
void FakeCommercetools::set_faults(const Faults& f) { state_->faults.set(f); }
void FakeCommercetools::set_down(bool down) { state_->faults.set_down(down); }

void FakeCommercetools::set_token_lifetime(int seconds) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->token_lifetime_s = seconds;
}

void FakeCommercetools::revoke_tokens() {
  std::lock_guard<std::mutex> lock(state_->mu);
  for (auto& kv : state_->tokens) kv.second = std::chrono::steady_clock::time_point{};
}

// put_customer with the lock held.
static json::object put_locked(FakeCommercetools::State* S, json::object c) {
  std::string id(c.at("id").as_string());
  auto it = S->customers.find(id);
  int64_t version = it == S->customers.end() ? 1 : it->second.at("version").to_number<int64_t>() + 1;
  c["version"] = version;
  if (!c.contains("lastModifiedAt")) c["lastModifiedAt"] = util::iso8601_ms(++S->clock_ms);
  if (it != S->customers.end()) {
    c["createdAt"] = it->second.at("createdAt");
    S->order.erase({std::string(it->second.at("lastModifiedAt").as_string()), id});
    it->second = c;
  } else {
    if (!c.contains("createdAt")) c["createdAt"] = c["lastModifiedAt"];
    S->customers.emplace(id, c);
  }
  S->order.insert({std::string(c.at("lastModifiedAt").as_string()), id});
  S->texts[id] = json::serialize(c);
  ++S->sequence[id];
  return c;
}

json::object FakeCommercetools::put_customer(json::object c) {
  std::lock_guard<std::mutex> lock(state_->mu);
  return put_locked(state_.get(), std::move(c));
}

void FakeCommercetools::put_customers_bulk(int first, int count) {
  std::lock_guard<std::mutex> lock(state_->mu);
  for (int i = first; i < first + count; ++i) put_locked(state_.get(), sample_customer(i));
}

bool FakeCommercetools::delete_customer(const std::string& id) {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto it = state_->customers.find(id);
  if (it == state_->customers.end()) return false;
  state_->order.erase({std::string(it->second.at("lastModifiedAt").as_string()), id});
  state_->customers.erase(it);
  state_->texts.erase(id);
  return true;
}

std::optional<json::object> FakeCommercetools::customer(const std::string& id) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto it = state_->customers.find(id);
  if (it == state_->customers.end()) return std::nullopt;
  return it->second;
}

size_t FakeCommercetools::customer_count() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->customers.size();
}

json::object FakeCommercetools::notification(const std::string& id, const std::string& notification_type,
                                             const std::string& message_type, bool payload_not_included) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  const json::object& c = state_->customers.at(id);
  int64_t version = c.at("version").to_number<int64_t>();
  json::object resource{{"typeId", "customer"}, {"id", id}};
  json::object n{{"notificationType", notification_type}, {"projectKey", state_->project}, {"resource", resource}};
  if (notification_type == "Message") {
    int64_t seq = state_->sequence.at(id);
    n["id"] = id + "-msg-" + std::to_string(seq);
    n["version"] = 1;
    n["sequenceNumber"] = seq;
    n["resourceVersion"] = version;
    n["type"] = message_type;
    n["createdAt"] = c.at("lastModifiedAt");
    n["lastModifiedAt"] = c.at("lastModifiedAt");
    if (payload_not_included)
      n["payloadNotIncluded"] = json::object{{"reason", "Payload too large"}, {"payloadType", message_type}};
    else
      n["customer"] = c;
  } else {
    n["resourceUserProvidedIdentifiers"] = json::object{};
    n["version"] = version;
    if (notification_type == "ResourceUpdated") n["oldVersion"] = version - 1;
    n["modifiedAt"] = c.at("lastModifiedAt");
  }
  return n;
}

json::object sample_customer(int i) {
  char id[40];
  std::snprintf(id, sizeof id, "00000000-0000-0000-0000-%012d", i);
  return {{"id", id}, {"email", "c" + std::to_string(i) + "@x.se"}};
}

std::vector<CommercetoolsRequest> FakeCommercetools::requests() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->log;
}

size_t FakeCommercetools::tokens_issued() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->tokens.size();
}

}  // namespace weft::fakes
