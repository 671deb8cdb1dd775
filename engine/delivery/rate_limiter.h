#pragma once
// A sliding-window rate limit per destination connection (Omnisend: 400 requests per
// minute per brand, sliding). Thread-safe; memory is one timestamp per allowed request in
// the window, so bounded by `requests`.
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>

namespace weft::delivery {

class RateLimiter {
 public:
  // `requests` per `per_ms` milliseconds; requests <= 0 means unlimited.
  RateLimiter(int requests, int64_t per_ms) : requests_(requests), per_ms_(per_ms) {}
  // 0 if a request may go now (and counts it); otherwise how many ms until one may.
  int64_t acquire(int64_t now_ms);
  // Holds every request until `until_ms`, also with no limit set: the API answered 429, and
  // its limit is the connection's (Omnisend: per brand), so any request before then would
  // only be refused too and spend an attempt. A shorter pause never cuts a longer one.
  void pause_until(int64_t until_ms);

 private:
  friend std::shared_ptr<RateLimiter> shared_limiter(const std::string&, int, int64_t);
  // The pause's end. shared_limiter gives every limiter of one connection the same one, kept
  // for the process's life, so a pause outlives a limiter rebuilt meanwhile (a reload that
  // changed the limit, a runner restarted after a failure).
  std::shared_ptr<std::atomic<int64_t>> paused_until_ = std::make_shared<std::atomic<int64_t>>(0);
  std::mutex mu_;
  int requests_;
  int64_t per_ms_;
  std::deque<int64_t> sent_;  // times of the requests inside the window, oldest first
};

// The limiter of one destination connection (`key`: tenant/connection), shared by whoever
// calls it while it is in use: the delivery worker and jobs that call the same API (a
// reconciliation's lookups), so that together they stay within the connection's limit. A
// change of the limit (a reload) gives a new limiter.
std::shared_ptr<RateLimiter> shared_limiter(const std::string& key, int requests, int64_t per_ms);

}  // namespace weft::delivery
