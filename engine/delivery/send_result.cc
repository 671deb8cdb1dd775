#include "engine/delivery/send_result.h"

#include <algorithm>
#include <charconv>
#include <ctime>

namespace weft::delivery {

std::optional<int64_t> parse_retry_after(const std::string& header, int64_t now_ms) {
  if (header.empty()) return std::nullopt;
  int64_t secs = 0;
  auto [end, ec] = std::from_chars(header.data(), header.data() + header.size(), secs);
  if (ec == std::errc() && end == header.data() + header.size()) {
    if (secs < 0) return std::nullopt;
    return secs > kMaxRetryAfterMs / 1000 ? kMaxRetryAfterMs : secs * 1000;
  }
  std::tm tm{};  // HTTP-date: "Wed, 21 Oct 2015 07:28:00 GMT"
  const char* rest = strptime(header.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (rest == nullptr || *rest != '\0') return std::nullopt;
  int64_t at_ms = static_cast<int64_t>(timegm(&tm)) * 1000;
  return at_ms > now_ms ? std::min(at_ms - now_ms, kMaxRetryAfterMs) : 0;
}

int64_t connection_pause_ms(const SendResult& r) {
  if (r.status != 429) return 0;
  constexpr int64_t kMaxPauseMs = 15 * 60000;
  // Omnisend sends no Retry-After header and only sometimes a hint: its window slides over a
  // minute, so without one the connection waits 10 s rather than spend an attempt a second.
  return std::clamp<int64_t>(r.retry_after_ms.value_or(10000), 0, kMaxPauseMs);
}

}  // namespace weft::delivery
