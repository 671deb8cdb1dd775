#pragma once
// How a destination answered one request, as each connector classifies it (the delivery
// workers act on the kind: done, retry with backoff, or reject with the API's message).
#include <cstdint>
#include <optional>
#include <string>

namespace weft::delivery {

struct SendResult {
  enum class Kind { ok, transient, permanent };
  Kind kind = Kind::ok;
  int status = 0;                        // HTTP status; 0 when no answer came (timeout, reset)
  std::optional<int64_t> retry_after_ms; // the destination's own hint, header or body
  std::string message;                   // the API's error, for rejections and logs
};

// The longest wait a destination's hint is taken for (ten years): a longer one is this one,
// so `now + wait` never overflows; the retry policy's max_age dead-letters it.
constexpr int64_t kMaxRetryAfterMs = int64_t{10} * 365 * 86400000;

// How long a whole connection holds its requests after this answer (RateLimiter::pause_until):
// for a 429, the wait it asks for (10 s without a hint), at most 15 minutes (the operation
// itself still waits its full hint); 0 for any other answer.
int64_t connection_pause_ms(const SendResult& r);

// A Retry-After header value (delay-seconds or an HTTP-date) as milliseconds from now_ms,
// at most kMaxRetryAfterMs.
std::optional<int64_t> parse_retry_after(const std::string& header, int64_t now_ms);

}  // namespace weft::delivery
