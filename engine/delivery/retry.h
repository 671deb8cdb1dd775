#pragma once
// Retry policy for outbound operations: exponential backoff with full jitter, never
// earlier than the destination asked (Retry-After / body hints), and a dead letter once
// attempts or age are exhausted. Configured per flow in tenant.json ("retry").
#include <boost/json/object.hpp>
#include <cstdint>
#include <optional>
#include <random>
#include <string>

namespace weft::delivery {

struct RetryPolicy {
  int max_attempts = 10;
  int64_t base_ms = 500;
  int64_t max_ms = 300000;        // cap of one delay
  int64_t max_age_ms = 86400000;  // from the first attempt; then the operation is dead-lettered
};

// The flow's "retry" object from tenant.json (already checked by load_tenant, which refuses a
// duration parse_duration_ms refuses); missing fields keep their defaults. Durations:
// "500ms", "30s", "5m", "24h", "2d".
RetryPolicy retry_policy_from(const boost::json::object* retry);

// The longest duration a setting may give (100 years): none needs more, and a timestamp
// this far from now is still far from overflowing.
constexpr int64_t kMaxDurationMs = int64_t{36500} * 86400000;
// "24h" -> 86400000; nullopt if malformed or longer than kMaxDurationMs (so a number of
// digits that overflows is refused, never read as something else).
std::optional<int64_t> parse_duration_ms(const std::string& text);

// Delay before the next attempt after `failed_attempts` failures (1 after the first):
// uniform in [0, min(max_ms, base_ms * 2^(failed_attempts-1))] ("full jitter", so retries
// of many operations spread out), but at least `retry_after_ms` when the destination gave one.
int64_t backoff_ms(const RetryPolicy& p, int failed_attempts, std::optional<int64_t> retry_after_ms,
                   std::mt19937_64& rng);

// Whether an operation that has failed `failed_attempts` times, first tried at
// `first_attempt_ms`, may be tried again at `next_attempt_ms`; false: dead letter.
bool may_retry(const RetryPolicy& p, int failed_attempts, int64_t first_attempt_ms, int64_t next_attempt_ms);

}  // namespace weft::delivery
