#include "connectors/commercetools/client.h"

#include "engine/util/time.h"
#include "engine/workspace/json_limits.h"

#include <boost/json.hpp>
#include <simdjson.h>

namespace weft::connectors::commercetools {
namespace json = boost::json;

namespace {
constexpr int64_t kRenewEarlyMs = 60000;  // fetch a new token a minute before expiry

std::string base64(const std::string& in) {
  static const char* chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int val = 0, bits = -6;
  for (unsigned char c : in) {
    val = (val << 8) + c;
    bits += 8;
    while (bits >= 0) {
      out.push_back(chars[(val >> bits) & 0x3F]);
      bits -= 6;
    }
  }
  if (bits > -6) out.push_back(chars[((val << 8) >> (bits + 8)) & 0x3F]);
  while (out.size() % 4) out.push_back('=');
  return out;
}

// The first error's code and message from a commercetools error body.
std::string error_text(const http::Response& r) {
  if (r.status == 0) return "no answer: " + r.error;
  std::error_code ec;
  json::value v = json::parse(r.body, ec, {}, workspace::json_parse_options(8));
  std::string text = "HTTP " + std::to_string(r.status);
  if (!ec && v.is_object()) {
    const auto& o = v.as_object();
    if (auto* errs = o.if_contains("errors"); errs && errs->is_array() && !errs->as_array().empty()) {
      const auto& e = errs->as_array()[0];
      if (e.is_object() && e.as_object().contains("code")) text += " " + json::value_to<std::string>(e.at("code"));
    }
    if (auto* m = o.if_contains("message"); m && m->is_string()) text += ": " + std::string(m->as_string());
  }
  return text;
}

bool transient_status(int status) { return status == 0 || status == 409 || status == 429 || status >= 500; }
}  // namespace

struct Source::Impl {
  Settings s;
  std::function<int64_t()> now_ms;
  http::Client auth;
  http::Client api;
  std::string token;
  int64_t token_expires_ms = 0;
  int tokens_fetched = 0;
  simdjson::dom::parser pages;  // reused: its buffers fit a page after the first
  Impl(Settings settings, std::function<int64_t()> now)
      : s(std::move(settings)),
        now_ms(std::move(now)),
        auth(*http::Url::parse(s.auth_url), s.timeout_ms),
        api(*http::Url::parse(s.api_url), s.timeout_ms) {}
};

Source::Source(Settings s, std::function<int64_t()> now_ms) {
  if (!now_ms) now_ms = util::now_ms;
  if (!http::Url::parse(s.auth_url) || !http::Url::parse(s.api_url))
    throw std::invalid_argument("commercetools: auth_url and api_url must be http(s) URLs");
  impl_ = std::make_unique<Impl>(std::move(s), std::move(now_ms));
}

Source::~Source() = default;

int Source::tokens_fetched() const { return impl_->tokens_fetched; }

bool Source::ensure_token(bool force, Error* err) {
  Impl& I = *impl_;
  if (!force && !I.token.empty() && I.now_ms() < I.token_expires_ms - kRenewEarlyMs) return true;
  http::Headers h{{"Authorization", "Basic " + base64(I.s.client_id + ":" + I.s.client_secret)}};
  auto r = I.auth.post("/oauth/token", "grant_type=client_credentials&scope=manage_project:" + http::url_encode(I.s.project),
                       "application/x-www-form-urlencoded", h);
  if (r.status != 200) {
    *err = {r.status, transient_status(r.status), "commercetools token: " + error_text(r)};
    return false;
  }
  std::error_code ec;
  json::value v = json::parse(r.body, ec, {}, workspace::json_parse_options(8));
  if (ec || !v.is_object() || !v.as_object().contains("access_token")) {
    *err = {r.status, true, "commercetools token: unreadable answer"};
    return false;
  }
  I.token = json::value_to<std::string>(v.at("access_token"));
  int64_t expires_s = v.as_object().contains("expires_in") ? v.at("expires_in").to_number<int64_t>() : 3600;
  I.token_expires_ms = I.now_ms() + expires_s * 1000;
  ++I.tokens_fetched;
  return true;
}

http::Response Source::authorized_get(const std::string& path, Error* err) {
  http::Response r;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!ensure_token(attempt > 0, err)) return r;
    r = impl_->api.get(path, {{"Authorization", "Bearer " + impl_->token}});
    if (r.status != 401) break;  // 401 invalid_token: the token was revoked or expired early
  }
  if (r.status < 200 || r.status >= 300) *err = {r.status, transient_status(r.status), error_text(r)};
  return r;
}

bool Source::customers_since(const std::string& cursor, int limit, Page* out, Error* err) {
  std::string query = "?limit=" + std::to_string(limit) + "&withTotal=false&sort=" +
                      http::url_encode("lastModifiedAt asc") + "&sort=" + http::url_encode("id asc");
  if (!cursor.empty()) {
    auto bar = cursor.find('|');
    std::string at = cursor.substr(0, bar), id = bar == std::string::npos ? "" : cursor.substr(bar + 1);
    std::string where = id.empty() ? "lastModifiedAt > \"" + at + "\""
                                   : "lastModifiedAt > \"" + at + "\" or (lastModifiedAt = \"" + at +
                                         "\" and id > \"" + id + "\")";
    query += "&where=" + http::url_encode(where);
  }
  auto r = authorized_get("/" + impl_->s.project + "/customers" + query, err);
  if (r.status != 200) return false;
  // Parsed with simdjson (validated whole, as before) and each record written out again
  // compact: a page is hundreds of records, and a Boost.JSON tree of it, serialized again
  // record by record, cost more than storing them.
  simdjson::dom::element page;
  simdjson::dom::array results;
  if (impl_->pages.parse(r.body).get(page) || page["results"].get_array().get(results)) {
    *err = {r.status, true, "commercetools customers: unreadable page"};
    return false;
  }
  out->records.clear();
  out->versions.clear();
  out->cursor = cursor;
  size_t count = 0;
  for (simdjson::dom::element c : results) {
    ++count;
    std::string_view id, modified;
    if (c["id"].get_string().get(id) || c["lastModifiedAt"].get_string().get(modified))
      throw std::runtime_error("commercetools customers: a record without a text id and lastModifiedAt");
    out->records.push_back(simdjson::minify(c));
    int64_t version = 0;
    bool has_version = !c["version"].get_int64().get(version);
    std::string v;
    v.reserve(id.size() + modified.size() + 24);
    v.append(modified).append("|").append(id).append(":");
    if (has_version) v += std::to_string(version);
    out->versions.push_back(std::move(v));
    out->cursor = std::string(modified) + "|" + std::string(id);
  }
  out->more = static_cast<int>(count) == limit;
  return true;
}

bool Source::customer(const std::string& id, std::string* json_text, Error* err) {
  auto r = authorized_get("/" + impl_->s.project + "/customers/" + http::url_encode(id), err);
  if (r.status != 200) return false;
  *json_text = r.body;
  return true;
}

}  // namespace weft::connectors::commercetools
