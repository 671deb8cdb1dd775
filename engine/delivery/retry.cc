#include "engine/delivery/retry.h"

#include <boost/json.hpp>
#include <algorithm>
#include <charconv>

#include "engine/delivery/send_result.h"

namespace weft::delivery {

std::optional<int64_t> parse_duration_ms(const std::string& text) {
  int64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end == text.data() || n < 0) return std::nullopt;
  std::string unit(end, text.data() + text.size());
  int64_t scale = unit == "ms" ? 1 : unit == "s" ? 1000 : unit == "m" ? 60000 : unit == "h" ? 3600000
                : unit == "d" ? 86400000 : 0;
  if (scale == 0 || n > kMaxDurationMs / scale) return std::nullopt;
  return n * scale;
}

RetryPolicy retry_policy_from(const boost::json::object* retry) {
  RetryPolicy p;
  if (!retry) return p;
  if (auto* v = retry->if_contains("max_attempts")) p.max_attempts = static_cast<int>(v->to_number<int64_t>());
  if (auto* v = retry->if_contains("base_ms")) p.base_ms = v->to_number<int64_t>();
  if (auto* v = retry->if_contains("max_ms")) p.max_ms = v->to_number<int64_t>();
  if (auto* v = retry->if_contains("max_age"); v && v->is_string())
    if (auto ms = parse_duration_ms(std::string(v->as_string()))) p.max_age_ms = *ms;
  return p;
}

int64_t backoff_ms(const RetryPolicy& p, int failed_attempts, std::optional<int64_t> retry_after_ms,
                   std::mt19937_64& rng) {
  int shift = std::clamp(failed_attempts - 1, 0, 40);
  int64_t ceiling = p.base_ms;
  for (int i = 0; i < shift && ceiling < p.max_ms; ++i) ceiling *= 2;  // no overflow: stops at the cap
  ceiling = std::min(ceiling, p.max_ms);
  int64_t delay = std::uniform_int_distribution<int64_t>(0, std::max<int64_t>(ceiling, 0))(rng);
  if (retry_after_ms) delay = std::max(delay, std::clamp<int64_t>(*retry_after_ms, 0, kMaxRetryAfterMs));
  return delay;
}

bool may_retry(const RetryPolicy& p, int failed_attempts, int64_t first_attempt_ms, int64_t next_attempt_ms) {
  return failed_attempts < p.max_attempts && next_attempt_ms - first_attempt_ms <= p.max_age_ms;
}

}  // namespace weft::delivery
