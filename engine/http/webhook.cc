#include "engine/http/webhook.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <simdjson.h>

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/stream_parser.hpp>
#include <boost/json/value.hpp>
#include <algorithm>
#include <charconv>
#include <cstring>
#include <memory>

#include "engine/util/ids.h"

namespace weft::http {

namespace {

namespace json = boost::json;

constexpr size_t kMaxIdBytes = 256;              // message id, typeId, resource id, modifiedAt
constexpr int kMaxDepthCap = 1024;               // limits.max_depth above this counts as this

json::parse_options parse_options() {
  json::parse_options opt;
  opt.max_depth = kMaxDepthCap + 1;  // never reached: scan() has checked the depth already
  return opt;
}

bool fail(WebhookError* err, int status, const char* code, std::string message) {
  if (err) {
    err->status = status;
    err->code = code;
    err->message = std::move(message);
  }
  return false;
}

bool ieq(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// application/json, optionally with parameters; a charset, when given, must be UTF-8.
bool json_content_type(std::string_view ct) {
  size_t semi = ct.find(';');
  if (!ieq(trim(ct.substr(0, semi)), "application/json")) return false;
  while (semi != std::string_view::npos) {
    ct.remove_prefix(semi + 1);
    semi = ct.find(';');
    std::string_view param = ct.substr(0, semi);
    size_t eq = param.find('=');
    if (eq == std::string_view::npos) continue;  // tolerate "application/json;"
    if (!ieq(trim(param.substr(0, eq)), "charset")) continue;
    std::string_view value = trim(param.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
    if (!ieq(value, "utf-8") && !ieq(value, "utf8")) return false;
  }
  return true;
}

// Offset of the first byte that is not part of a well-formed UTF-8 sequence (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF), or npos.
size_t utf8_error_offset(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) { ++i; continue; }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) { len = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) { len = 3; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) { len = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) { len = 4; hi = 0x8F; }
    else return i;
    if (i + 1 >= n || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if (i + k >= n || (p[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return std::string_view::npos;
}

// One linear pass over the bytes: the nesting depth (brackets outside strings), and, when
// the body is an array, where its elements start and end (meaningful once the body is
// known to be valid JSON). Nothing here recurses, whatever the input.
struct Scan {
  size_t too_deep_at = std::string_view::npos;
  bool top_array = false;
  std::vector<std::pair<size_t, size_t>> elements;  // [begin, end) of each top-level element
};

void scan(std::string_view s, int max_depth, size_t max_elements, Scan* out) {
  const char* p = s.data();
  size_t n = s.size();
  size_t i = 0;
  while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r')) ++i;
  out->top_array = i < n && p[i] == '[';
  int depth = 0;
  size_t start = 0;
  for (; i < n; ++i) {
    char c = p[i];
    switch (c) {
      case '"':
        // Skip the string: up to the next unescaped quote.
        for (++i; i < n; ++i) {
          if (p[i] == '\\') ++i;
          else if (p[i] == '"') break;
        }
        break;
      case '[':
      case '{':
        if (++depth > max_depth) {
          out->too_deep_at = i;
          return;
        }
        if (depth == 1) start = i + 1;
        break;
      case ']':
      case '}':
        if (depth == 1 && out->top_array && out->elements.size() <= max_elements)
          out->elements.emplace_back(start, i);
        --depth;
        break;
      case ',':
        if (depth == 1 && out->top_array && out->elements.size() <= max_elements) {
          out->elements.emplace_back(start, i);
          start = i + 1;
        }
        break;
      default:
        break;
    }
  }
}

// "invalid JSON at byte 17 (line 2, column 5): syntax error"
std::string syntax_error(std::string_view body, size_t at, const boost::system::error_code& ec) {
  at = std::min(at, body.size());
  size_t line = 1, col = 1;
  for (size_t i = 0; i < at; ++i) {
    if (body[i] == '\n') { ++line; col = 1; }
    else ++col;
  }
  return "invalid JSON at byte " + std::to_string(at) + " (line " + std::to_string(line) + ", column " +
         std::to_string(col) + "): " + ec.message();
}

void append_integer(std::string& out, const json::value& v) {
  char buf[24];
  std::to_chars_result r;
  if (v.is_int64()) r = std::to_chars(buf, buf + sizeof buf, v.get_int64());
  else r = std::to_chars(buf, buf + sizeof buf, v.get_uint64());
  out.append(buf, r.ptr);
}

bool is_integer(const json::value* v) { return v->is_int64() || v->is_uint64(); }

// A required non-empty string field of at most kMaxIdBytes; "" (and *why set) otherwise.
std::string_view id_field(const json::value* v, const char* name, std::string* why) {
  if (!v) {
    *why = std::string("missing ") + name;
    return {};
  }
  if (!v->is_string() || v->get_string().empty()) {
    *why = std::string(name) + " must be a non-empty string";
    return {};
  }
  std::string_view s = v->get_string();
  if (s.size() > kMaxIdBytes) {
    *why = std::string(name) + " is longer than " + std::to_string(kMaxIdBytes) + " bytes";
    return {};
  }
  return s;
}

// Checks one message (the shapes of shared/reference/apis.md, as
// connectors/commercetools/notifications.cc reads them later, with the same parser, so a
// repeated key means here what it means there) and fills its id and entity. Returns ""
// when it is fine, else what is wrong.
std::string check_message(const json::value& v, WebhookMessage* m) {
  const json::object* o = v.if_object();
  if (!o) return "not a JSON object";
  std::string why;
  const json::value* nt = o->if_contains("notificationType");
  if (!nt) return "missing notificationType (not a commercetools subscription message)";
  if (!nt->is_string()) return "notificationType must be a string";
  std::string_view ntype = nt->get_string();
  bool message = ntype == "Message";
  if (!message && ntype != "ResourceCreated" && ntype != "ResourceUpdated" && ntype != "ResourceDeleted")
    return "unknown notificationType (expected Message, ResourceCreated, ResourceUpdated or ResourceDeleted)";

  const json::value* resv = o->if_contains("resource");
  if (!resv) return "missing resource";
  const json::object* res = resv->if_object();
  if (!res) return "resource must be an object";
  std::string_view type_id = id_field(res->if_contains("typeId"), "resource.typeId", &why);
  if (type_id.empty()) return why;
  std::string_view res_id = id_field(res->if_contains("id"), "resource.id", &why);
  if (res_id.empty()) return why;

  if (message) {
    std::string_view msg_id = id_field(o->if_contains("id"), "id", &why);
    if (msg_id.empty()) return why;
    if (std::string_view own = util::own_id_prefix(msg_id); !own.empty())
      return "id must not start with \"" + std::string(own) + "\" (reserved for weft's own records)";
    if (id_field(o->if_contains("type"), "type", &why).empty()) return why;
    const json::value* seq = o->if_contains("sequenceNumber");
    if (!seq) return "missing sequenceNumber";
    if (!is_integer(seq)) return "sequenceNumber must be an integer";
    const json::value* rv = o->if_contains("resourceVersion");
    if (!rv) return "missing resourceVersion";
    if (!is_integer(rv)) return "resourceVersion must be an integer";
    m->message_id.assign(msg_id);
  } else {
    const json::value* version = o->if_contains("version");
    const json::value* modified_at = o->if_contains("modifiedAt");
    if (version && !is_integer(version)) return "version must be an integer";
    std::string_view modified;
    if (modified_at && (modified = id_field(modified_at, "modifiedAt", &why)).empty()) return why;
    if (!version && !modified_at) return "missing version and modifiedAt (one is needed to tell re-deliveries apart)";
    m->message_id.reserve(ntype.size() + type_id.size() + res_id.size() + 24);
    m->message_id.assign(ntype).append(1, ':').append(type_id).append(1, ':').append(res_id).append(1, ':');
    if (version) append_integer(m->message_id, *version);
    else m->message_id.append(modified);
  }
  m->entity.assign(type_id);
  return {};
}

// The JSON text in [begin, end) of body without whitespace outside strings.
bool minify_into(std::string_view body, size_t begin, size_t end, std::string* out) {
  out->resize(end - begin + simdjson::SIMDJSON_PADDING);
  size_t len = 0;
  if (simdjson::minify(body.data() + begin, end - begin, out->data(), len)) return false;
  out->resize(len);
  return true;
}

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int b64val(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

// Decodes a 32-byte digest given as 64 hex digits or as base64; false for anything else.
bool decode_digest(std::string_view s, unsigned char out[32]) {
  if (s.size() == 64) {
    bool ok = true;
    for (size_t i = 0; i < 32 && ok; ++i) {
      int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
      ok = hi >= 0 && lo >= 0;
      out[i] = static_cast<unsigned char>((hi << 4) | lo);
    }
    if (ok) return true;
  }
  while (!s.empty() && s.back() == '=') s.remove_suffix(1);
  if (s.size() != 43) return false;  // 32 bytes = 42 2/3 base64 digits
  uint32_t acc = 0;
  int bits = 0;
  size_t n = 0;
  for (char c : s) {
    int v = b64val(c);
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = static_cast<unsigned char>(acc >> bits);
    }
  }
  return n == 32 && (acc & ((1u << bits) - 1)) == 0;  // unused low bits must be zero
}

bool hmac_sha256(std::string_view secret, std::string_view body, unsigned char mac[32]) {
  unsigned int len = 32;
  static const unsigned char kEmpty = 0;
  const void* key = secret.empty() ? static_cast<const void*>(&kEmpty) : static_cast<const void*>(secret.data());
  const unsigned char* data = body.empty() ? &kEmpty : reinterpret_cast<const unsigned char*>(body.data());
  return HMAC(EVP_sha256(), key, static_cast<int>(secret.size()), data, body.size(), mac, &len) != nullptr &&
         len == 32;
}

}  // namespace

bool check_webhook_headers(std::string_view system, std::string_view content_type, size_t body_bytes,
                           const WebhookLimits& limits, WebhookError* err) {
  if (system != "commercetools")
    return fail(err, 400, "unsupported_system", "webhooks are supported for commercetools connections only");
  if (!json_content_type(content_type))
    return fail(err, 415, "unsupported_media_type", "Content-Type must be application/json (UTF-8)");
  if (body_bytes > limits.max_body_bytes)
    return fail(err, 413, "payload_too_large",
                "body is " + std::to_string(body_bytes) + " bytes, more than the limit of " +
                    std::to_string(limits.max_body_bytes));
  return true;
}

bool parse_webhook(std::string_view system, std::string_view content_type, std::string_view body,
                   const WebhookLimits& limits, std::vector<WebhookMessage>* out, WebhookError* err) {
  if (!check_webhook_headers(system, content_type, body.size(), limits, err)) return false;
  if (!simdjson::validate_utf8(body.data(), body.size())) {
    size_t at = utf8_error_offset(body);
    return fail(err, 400, "invalid_utf8",
                at == std::string_view::npos ? std::string("body is not valid UTF-8")
                                             : "body is not valid UTF-8 at byte " + std::to_string(at));
  }
  Scan sc;
  int max_depth = std::min(limits.max_depth, kMaxDepthCap);
  scan(body, max_depth, limits.max_messages, &sc);
  if (sc.too_deep_at != std::string_view::npos)
    return fail(err, 400, "too_deep",
                "JSON nesting deeper than " + std::to_string(max_depth) + " at byte " +
                    std::to_string(sc.too_deep_at));

  // Boost.JSON, the parser connectors/commercetools/notifications.cc reads the messages
  // with later (simdjson 3.0 refuses integers beyond 64 bits, which are valid JSON). One
  // parser per thread (it keeps its small state stack); the document lives in a
  // monotonic arena that starts on this stack frame, so a small message costs no heap
  // allocation for its tree and the whole tree is freed at once.
  thread_local json::stream_parser parser(json::storage_ptr(), parse_options());
  unsigned char arena_buf[8192];
  json::monotonic_resource arena(arena_buf, sizeof arena_buf);
  parser.reset(&arena);
  boost::system::error_code ec;
  size_t consumed = 0;
  json::value root(&arena);  // same storage as what release() gives: moved, not copied
  try {
    consumed = parser.write(body.data(), body.size(), ec);
    if (!ec) {
      consumed = body.size();
      parser.finish(ec);
    }
    if (!ec) root = parser.release();
    parser.reset();  // drop its pointer to this frame's arena (also after an error)
  } catch (...) {    // std::bad_alloc: the same, then let the caller answer 500
    parser.reset();
    throw;
  }
  if (ec) return fail(err, 400, "malformed_json", syntax_error(body, consumed, ec));

  std::vector<WebhookMessage> msgs;
  if (root.is_object()) {
    WebhookMessage m;
    std::string why = check_message(root, &m);
    if (!why.empty()) return fail(err, 400, "not_a_notification", std::move(why));
    if (!minify_into(body, 0, body.size(), &m.payload))
      return fail(err, 400, "malformed_json", "invalid JSON");
    out->push_back(std::move(m));
    return true;
  }
  if (!root.is_array())
    return fail(err, 400, "not_a_notification",
                "body must be a JSON object (one message) or an array of them (a batch)");
  const json::array& arr = root.get_array();
  size_t count = arr.size();
  if (count == 0) return fail(err, 400, "not_a_notification", "the batch is empty");
  if (count > limits.max_messages)
    return fail(err, 400, "too_many_messages",
                "the batch has " + std::to_string(count) + " messages, more than the limit of " +
                    std::to_string(limits.max_messages));
  if (sc.elements.size() != count)  // cannot happen for valid JSON; refuse rather than guess
    return fail(err, 400, "malformed_json", "invalid JSON (array elements could not be located)");
  msgs.resize(count);
  size_t i = 0;
  for (const json::value& e : arr) {
    std::string why = check_message(e, &msgs[i]);
    if (!why.empty())
      return fail(err, 400, "not_a_notification", "message " + std::to_string(i + 1) + ": " + why);
    if (!minify_into(body, sc.elements[i].first, sc.elements[i].second, &msgs[i].payload))
      return fail(err, 400, "malformed_json", "invalid JSON");
    ++i;
  }
  out->reserve(out->size() + msgs.size());
  for (auto& m : msgs) out->push_back(std::move(m));
  return true;
}

std::string hmac_sha256_hex(std::string_view secret, std::string_view body) {
  unsigned char mac[32];
  if (!hmac_sha256(secret, body, mac)) return {};
  static const char kHex[] = "0123456789abcdef";
  std::string s(64, '0');
  for (int i = 0; i < 32; ++i) {
    s[2 * i] = kHex[mac[i] >> 4];
    s[2 * i + 1] = kHex[mac[i] & 15];
  }
  return s;
}

bool verify_hmac_sha256(std::string_view secret, std::string_view body, std::string_view signature) {
  if (secret.empty()) return false;
  signature = trim(signature);
  if (signature.size() >= 7 && ieq(signature.substr(0, 7), "sha256=")) signature = trim(signature.substr(7));
  unsigned char given[32], expected[32];
  if (!decode_digest(signature, given)) return false;
  if (!hmac_sha256(secret, body, expected)) return false;
  return CRYPTO_memcmp(given, expected, 32) == 0;
}

bool verify_bearer(std::string_view expected_token, std::string_view authorization_header) {
  if (expected_token.empty()) return false;
  std::string_view h = trim(authorization_header);
  if (h.size() < 7 || !ieq(h.substr(0, 6), "bearer") || (h[6] != ' ' && h[6] != '\t')) return false;
  std::string_view token = trim(h.substr(7));
  // Always compare expected.size() bytes: against the token when the lengths match, else
  // against the expected token itself (same cost), and then refuse.
  bool same_length = token.size() == expected_token.size();
  const char* given = same_length ? token.data() : expected_token.data();
  int diff = CRYPTO_memcmp(expected_token.data(), given, expected_token.size());
  return same_length & (diff == 0);
}

}  // namespace weft::http
