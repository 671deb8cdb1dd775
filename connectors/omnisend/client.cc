#include "connectors/omnisend/client.h"

#include <boost/json.hpp>
#include <stdexcept>

#include "connectors/omnisend/errors.h"

namespace weft::connectors::omnisend {

namespace {
http::Url checked_url(const std::string& url) {
  auto u = http::Url::parse(url);
  if (!u) throw std::invalid_argument("omnisend: api_url must be an http(s) URL: " + url);
  return *u;
}
}  // namespace

Destination::Destination(const Settings& s) : settings_(s), client_(checked_url(s.api_url), s.timeout_ms) {}

delivery::SendResult Destination::upsert_contact(const std::string& contact_json, int64_t now_ms,
                                                 std::string* contact_id, std::string* answer) {
  auto r = client_.post("/contacts", contact_json, "application/json", {{"X-API-KEY", settings_.api_key}});
  auto result = classify(r.status, r.header("Retry-After"), r.body, now_ms);
  if (result.kind == delivery::SendResult::Kind::ok && contact_id) {
    std::error_code ec;
    auto v = boost::json::parse(r.body, ec);
    if (!ec && v.is_object())
      if (auto* id = v.as_object().if_contains("contactID"); id && id->is_string()) *contact_id = std::string(id->as_string());
  }
  if (result.kind == delivery::SendResult::Kind::ok && answer) *answer = std::move(r.body);
  if (r.status == 0) result.message = "no answer from Omnisend: " + r.error;
  return result;
}

delivery::SendResult Destination::send_event(const std::string& event_json, int64_t now_ms) {
  auto r = client_.post("/events", event_json, "application/json", {{"X-API-KEY", settings_.api_key}});
  auto result = classify(r.status, r.header("Retry-After"), r.body, now_ms);
  if (r.status == 0) result.message = "no answer from Omnisend: " + r.error;
  return result;
}

}  // namespace weft::connectors::omnisend
