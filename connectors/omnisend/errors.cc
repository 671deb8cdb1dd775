#include "connectors/omnisend/errors.h"

#include <boost/json.hpp>
#include <algorithm>

namespace weft::connectors::omnisend {
namespace json = boost::json;
using delivery::SendResult;

namespace {
// "title: detail (field: message; ...)" from an RFC 9457 problem body, or the raw body.
std::string problem_text(const json::value& body, const std::string& raw) {
  const json::object* p = body.if_object();
  if (!p) return raw.substr(0, 500);
  std::string out;
  if (auto* t = p->if_contains("title"); t && t->is_string()) out += std::string(t->as_string());
  if (auto* d = p->if_contains("detail"); d && d->is_string() && !d->as_string().empty())
    out += (out.empty() ? "" : ": ") + std::string(d->as_string());
  if (auto* errs = p->if_contains("errors"); errs && errs->is_array()) {
    std::string fields;
    for (const auto& e : errs->as_array()) {
      const json::object* eo = e.if_object();
      if (!eo) continue;
      std::string f = eo->contains("field") && eo->at("field").is_string() ? std::string(eo->at("field").as_string()) : "";
      std::string m = eo->contains("message") && eo->at("message").is_string() ? std::string(eo->at("message").as_string()) : "";
      fields += (fields.empty() ? "" : "; ") + (f.empty() ? m : f + ": " + m);
    }
    if (!fields.empty()) out += " (" + fields + ")";
  }
  return out.empty() ? raw.substr(0, 500) : out;
}
}  // namespace

SendResult classify(int status, const std::string& retry_after_header, const std::string& body, int64_t now_ms) {
  SendResult r;
  r.status = status;
  if (status >= 200 && status < 300) return r;
  std::error_code ec;
  json::value parsed = body.empty() ? json::value() : json::parse(body, ec);
  if (ec) parsed = nullptr;
  r.message = status == 0 ? "no answer (timeout or connection reset)" : problem_text(parsed, body);
  r.retry_after_ms = delivery::parse_retry_after(retry_after_header, now_ms);
  if (!r.retry_after_ms && parsed.is_object()) {  // Omnisend's hint lives in the body
    if (auto* ra = parsed.as_object().if_contains("retryAfter"); ra && ra->is_number())
      r.retry_after_ms = static_cast<int64_t>(
          std::clamp(ra->to_number<double>() * 1000, 0.0, static_cast<double>(delivery::kMaxRetryAfterMs)));
  }
  bool transient = status == 0 || status == 408 || status == 429 || status >= 500 || status == 401 ||
                   status == 403 || status == 410;
  r.kind = transient ? SendResult::Kind::transient : SendResult::Kind::permanent;
  return r;
}

}  // namespace weft::connectors::omnisend
