#pragma once
// A sliding-window rate limit per destination connection (Omnisend: 400 requests per
// minute per brand, sliding). Thread-safe; memory is one timestamp per allowed request in
// the window, so bounded by `requests`.
#include <cstdint>
#include <deque>
#include <mutex>

namespace weft::delivery {

class RateLimiter {
 public:
  // `requests` per `per_ms` milliseconds; requests <= 0 means unlimited.
  RateLimiter(int requests, int64_t per_ms) : requests_(requests), per_ms_(per_ms) {}
  // 0 if a request may go now (and counts it); otherwise how many ms until one may.
  int64_t acquire(int64_t now_ms);

 private:
  std::mutex mu_;
  int requests_;
  int64_t per_ms_;
  std::deque<int64_t> sent_;  // times of the requests inside the window, oldest first
};

}  // namespace weft::delivery
