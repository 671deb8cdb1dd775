#include "engine/delivery/rate_limiter.h"

namespace weft::delivery {

int64_t RateLimiter::acquire(int64_t now_ms) {
  if (requests_ <= 0) return 0;
  std::lock_guard<std::mutex> lock(mu_);
  while (!sent_.empty() && sent_.front() <= now_ms - per_ms_) sent_.pop_front();
  if (static_cast<int>(sent_.size()) < requests_) {
    sent_.push_back(now_ms);
    return 0;
  }
  return sent_.front() + per_ms_ - now_ms;
}

}  // namespace weft::delivery
