#include "tests/fakes/faults.h"

#include <chrono>
#include <thread>

namespace weft::fakes {

void FaultInjector::set(const Faults& f) {
  std::lock_guard<std::mutex> lock(mu_);
  faults_ = f;
  rng_.seed(f.seed);
}

void FaultInjector::set_down(bool down) {
  std::lock_guard<std::mutex> lock(mu_);
  down_ = down;
}

bool FaultInjector::apply(httplib::Response& res, const ErrorBody& error_body, FaultOutcome* outcome) {
  FaultOutcome ignored;
  FaultOutcome& out = outcome ? *outcome : ignored;
  out = {};
  Faults f;
  double draw;
  bool down;
  {
    std::lock_guard<std::mutex> lock(mu_);
    f = faults_;
    draw = std::uniform_real_distribution<double>(0, 1)(rng_);
    down = down_;
  }
  auto fail = [&](int status, const std::string& detail, int retry_after = 0) {
    res.status = status;
    res.set_content(error_body(status, detail, retry_after), "application/json");
    out.status = status;
    out.retry_after_s = retry_after;
  };
  if (f.latency_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(f.latency_ms));
  if (down) {
    fail(503, "the service is down");
    return true;
  }
  double edge = f.reset;
  if (draw < edge) {
    // Headers go out, then the connection is closed: the client sees a broken answer.
    res.set_header("X-Fake-Reset", "1");
    out.reset = true;
    res.set_content_provider(64, "application/json", [](size_t, size_t, httplib::DataSink&) { return false; });
    return true;
  }
  if (draw < (edge += f.timeout)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(f.timeout_ms));
    fail(504, "upstream timed out");
    return true;
  }
  if (draw < (edge += f.rate_limited)) {
    fail(429, "rate limit exceeded", f.retry_after_s);
    if (f.retry_after_header) res.set_header("Retry-After", std::to_string(f.retry_after_s));
    return true;
  }
  if (draw < (edge += f.server_error)) {
    static const int codes[] = {500, 502, 503};
    fail(codes[static_cast<int>(draw * 1000) % 3], "try again later");
    return true;
  }
  return false;
}

}  // namespace weft::fakes
