#include "engine/delivery/rate_limiter.h"

#include <map>

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

std::shared_ptr<RateLimiter> shared_limiter(const std::string& key, int requests, int64_t per_ms) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<RateLimiter>> limiters;
  std::lock_guard<std::mutex> lock(mu);
  std::string k = key + '\0' + std::to_string(requests) + '/' + std::to_string(per_ms);
  if (auto held = limiters[k].lock()) return held;
  for (auto it = limiters.begin(); it != limiters.end();) it = it->second.expired() ? limiters.erase(it) : std::next(it);
  auto made = std::make_shared<RateLimiter>(requests, per_ms);
  limiters[k] = made;
  return made;
}

}  // namespace weft::delivery
