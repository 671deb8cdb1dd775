#include "engine/delivery/rate_limiter.h"

#include <map>

namespace weft::delivery {

int64_t RateLimiter::acquire(int64_t now_ms) {
  if (int64_t paused = paused_until_->load(std::memory_order_relaxed); paused > now_ms) return paused - now_ms;
  if (requests_ <= 0) return 0;
  std::lock_guard<std::mutex> lock(mu_);
  while (!sent_.empty() && sent_.front() <= now_ms - per_ms_) sent_.pop_front();
  if (static_cast<int>(sent_.size()) < requests_) {
    sent_.push_back(now_ms);
    return 0;
  }
  return sent_.front() + per_ms_ - now_ms;
}

void RateLimiter::pause_until(int64_t until_ms) {
  int64_t held = paused_until_->load(std::memory_order_relaxed);
  while (held < until_ms && !paused_until_->compare_exchange_weak(held, until_ms, std::memory_order_relaxed)) {
  }
}

std::shared_ptr<RateLimiter> shared_limiter(const std::string& key, int requests, int64_t per_ms) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<RateLimiter>> limiters;
  static std::map<std::string, std::shared_ptr<std::atomic<int64_t>>> pauses;  // one per connection, kept
  std::lock_guard<std::mutex> lock(mu);
  std::string k = key + '\0' + std::to_string(requests) + '/' + std::to_string(per_ms);
  if (auto held = limiters[k].lock()) return held;
  for (auto it = limiters.begin(); it != limiters.end();) it = it->second.expired() ? limiters.erase(it) : std::next(it);
  auto made = std::make_shared<RateLimiter>(requests, per_ms);
  auto& pause = pauses[key];
  if (!pause) pause = made->paused_until_;
  made->paused_until_ = pause;
  limiters[k] = made;
  return made;
}

}  // namespace weft::delivery
