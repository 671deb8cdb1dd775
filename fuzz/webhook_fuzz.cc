// libFuzzer target: parse_webhook (engine/http/webhook.h) on arbitrary bytes, plus the
// signature checks on the same bytes. See README "Fuzzing".
//
// Input: the request body. A first byte below 0x08 is not part of the body: it picks the
// Content-Type and the limits (so seeds can be plain JSON files).
// Checks, besides ASan/UBSan: a refusal has a known code and status and a message; an
// accepted body is valid JSON (Boost.JSON agrees), gives 1..max_messages messages, each with
// a non-empty id and entity, and a payload that parses as a JSON object equal to the
// corresponding message of the body and that connectors/commercetools/notifications.cc
// reads as a notification (not "invalid"). A valid body within the limits is never
// refused as malformed.
#include <boost/json.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "connectors/commercetools/notifications.h"
#include "engine/http/webhook.h"

namespace wh = weft::http;
namespace bj = boost::json;

namespace {

[[noreturn]] void die(const char* what, std::string_view body, const std::string& detail = "") {
  std::fprintf(stderr, "webhook_fuzz: %s\n  detail: %s\n  body (%zu bytes): %.*s\n", what, detail.c_str(), body.size(),
               static_cast<int>(std::min<size_t>(body.size(), 2000)), body.data());
  std::abort();
}

int depth_of(const bj::value& v) {
  int d = 0;
  if (v.is_object())
    for (auto& kv : v.get_object()) d = std::max(d, depth_of(kv.value()));
  else if (v.is_array())
    for (auto& e : v.get_array()) d = std::max(d, depth_of(e));
  else
    return 0;
  return d + 1;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const char* kTypes[] = {"application/json", "application/json; charset=utf-8", "text/plain",
                                 "APPLICATION/JSON ;CHARSET=\"UTF-8\"", "application/json; charset=latin1",
                                 "", "application/json;", "application/jsonp"};
  std::string_view content_type = "application/json";
  wh::WebhookLimits limits;
  std::string_view body(reinterpret_cast<const char*>(data), size);
  if (size > 0 && data[0] < 0x08) {
    content_type = kTypes[data[0]];
    if (data[0] & 1) {  // small limits, to reach the size, depth and count refusals
      limits.max_body_bytes = 512;
      limits.max_depth = 4;
      limits.max_messages = 3;
    }
    body.remove_prefix(1);
  }

  std::vector<wh::WebhookMessage> out;
  wh::WebhookError err;
  bool ok = wh::parse_webhook("commercetools", content_type, body, limits, &out, &err);

  // The reference: Boost.JSON with no depth limit of its own that we could reach first.
  bj::parse_options opt;
  opt.max_depth = 100000;
  bj::error_code ec;
  bj::value ref = bj::parse(body, ec, {}, opt);

  if (!ok) {
    static const std::set<std::string> kCodes = {"unsupported_media_type", "payload_too_large", "invalid_utf8",
                                                 "too_deep", "malformed_json", "not_a_notification",
                                                 "too_many_messages"};
    if (!kCodes.count(err.code)) die("unknown error code", body, err.code);
    if (err.message.empty()) die("empty error message", body, err.code);
    int want = err.code == "unsupported_media_type" ? 415 : err.code == "payload_too_large" ? 413 : 400;
    if (err.status != want) die("wrong status", body, err.code + " " + std::to_string(err.status));
    if (!out.empty()) die("refused but messages were added", body);
    if (err.code == "malformed_json" && !ec && depth_of(ref) <= limits.max_depth)
      die("valid JSON refused as malformed", body, err.message);
    if (err.code == "too_deep" && !ec && depth_of(ref) <= limits.max_depth)
      die("too_deep for JSON within the depth limit", body, err.message);
  } else {
    if (ec) die("accepted a body Boost.JSON refuses", body, ec.message());
    if (depth_of(ref) > limits.max_depth) die("accepted a body deeper than the limit", body);
    if (body.size() > limits.max_body_bytes) die("accepted an oversize body", body);
    std::vector<const bj::value*> msgs;
    if (ref.is_object()) msgs.push_back(&ref);
    else if (ref.is_array())
      for (auto& e : ref.get_array()) msgs.push_back(&e);
    else
      die("accepted a scalar", body);
    if (msgs.size() != out.size()) die("message count differs from the body", body);
    if (out.empty() || out.size() > limits.max_messages) die("message count out of range", body);
    for (size_t i = 0; i < out.size(); ++i) {
      const wh::WebhookMessage& m = out[i];
      if (m.message_id.empty() || m.entity.empty()) die("empty message id or entity", body);
      bj::value p = bj::parse(m.payload, ec, {}, opt);
      if (ec || !p.is_object()) die("payload is not a JSON object", body, m.payload);
      if (p != *msgs[i]) die("payload differs from the message in the body", body, m.payload);
      auto n = weft::connectors::commercetools::parse_notification(m.payload);
      if (n.kind == weft::connectors::commercetools::Notification::Kind::invalid)
        die("the pipeline's notification parser refuses an accepted message", body, n.reason);
      if (n.type_id != m.entity) die("entity differs from the pipeline's typeId", body, m.entity + " vs " + n.type_id);
    }
  }

  // The signature checks take any header text without crashing, and never accept it for a
  // secret the input cannot know.
  if (wh::verify_hmac_sha256("fuzz-secret", "body", body)) die("forged HMAC accepted", body);
  if (wh::verify_bearer("fuzz-token-0123456789", body)) die("forged bearer accepted", body);
  return 0;
}
