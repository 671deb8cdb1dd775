#pragma once
// Incoming webhooks (DESIGN.md "source webhook (push)"): checking and splitting a request
// body into the messages the inbox stores, and authenticating the request (HMAC-SHA256 of
// the body, or a bearer token). Thread-safe; nothing here touches the store or the network.
//
// What parse_webhook checks, in this order (the first failure decides the answer):
//   1. Content-Type is application/json (parameters allowed; a charset other than
//      utf-8 is refused)                                          415 unsupported_media_type
//   2. the body is at most max_body_bytes                            413 payload_too_large
//   3. the body is valid UTF-8 (the error names the byte offset)     400 invalid_utf8
//   4. nesting is at most max_depth (brackets counted outside strings, before anything
//      recursive runs, so a 100,000-deep body costs one linear scan)  400 too_deep
//   5. the body is one JSON text (RFC 8259; the error names byte, line and column)
//                                                                    400 malformed_json
//   6. it is one message (an object) or a batch (a non-empty array of at most
//      max_messages objects), each a commercetools subscription message or change
//      notification                       400 not_a_notification / 400 too_many_messages
// All or nothing: one bad message refuses the whole request ("message 3: missing
// resource.typeId"; messages of a batch are counted from 1).
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace weft::http {

struct WebhookLimits {
  size_t max_body_bytes = 5 << 20;
  int max_depth = 64;          // the batch array counts as one level
  size_t max_messages = 1000;  // per request
};

struct WebhookMessage {
  // Idempotency key within tenant + connection, the same on every re-delivery:
  //   Message:                           its "id"
  //   ResourceCreated/Updated/Deleted:   "<notificationType>:<typeId>:<resource id>:<version>"
  //                                      (or ":<modifiedAt>" when there is no version)
  std::string message_id;
  std::string entity;   // resource.typeId: "customer", "order", ...
  std::string payload;  // this message's JSON text, whitespace removed, otherwise as sent
                        // (numbers and escapes keep their spelling)
};

struct WebhookError {
  int status = 400;
  // unsupported_system, unsupported_media_type (415), payload_too_large (413), invalid_utf8,
  // too_deep, malformed_json, not_a_notification, too_many_messages
  std::string code;
  std::string message;  // for the response body and the log; never contains body text
};

// Checks and splits a webhook request body. `system` is the connection's system (only
// "commercetools" is supported: anything else is 400 unsupported_system); `content_type`
// the request's Content-Type header. On success appends one WebhookMessage per message to
// *out (in body order) and returns true; on failure leaves *out as it was, fills *err and
// returns false. Throws only std::bad_alloc.
bool parse_webhook(std::string_view system, std::string_view content_type, std::string_view body,
                   const WebhookLimits& limits, std::vector<WebhookMessage>* out, WebhookError* err);

// parse_webhook's first checks, which need no body: the system, the content type, and
// `body_bytes` (the declared length, before the body is read) against the limit.
bool check_webhook_headers(std::string_view system, std::string_view content_type, size_t body_bytes,
                           const WebhookLimits& limits, WebhookError* err);

// HMAC-SHA256 of the raw body with `secret`, against `signature` as sent in the header: hex
// (either case) or base64 (standard or URL-safe alphabet, padding optional), optionally
// prefixed "sha256=" and surrounded by spaces. Constant-time comparison. An empty secret
// never verifies.
bool verify_hmac_sha256(std::string_view secret, std::string_view body, std::string_view signature);

// `authorization_header` is "Bearer <token>" (scheme case-insensitive) with the expected
// token. Constant-time: the comparison does not stop early on content, and a length
// mismatch costs the same as a full comparison. An empty expected token never verifies.
bool verify_bearer(std::string_view expected_token, std::string_view authorization_header);

// Lowercase hex HMAC-SHA256 of `body` with `secret` (tests, clients, the fakes).
std::string hmac_sha256_hex(std::string_view secret, std::string_view body);

}  // namespace weft::http
