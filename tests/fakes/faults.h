#pragma once
// Fault injection shared by the fake APIs: each request draws once from a seeded generator
// and may be delayed, reset, timed out, rate limited or failed, as the test configured.
#include <httplib.h>

#include <functional>
#include <mutex>
#include <random>
#include <string>

namespace weft::fakes {

struct Faults {
  double server_error = 0;     // share of requests answered 500/502/503
  double rate_limited = 0;     // share answered 429 (with a retry hint, see retry_after_s)
  double timeout = 0;          // share that sleep `timeout_ms` before answering 504
  double reset = 0;            // share whose connection is closed without a whole answer
  int retry_after_s = 1;
  bool retry_after_header = false;  // also send a Retry-After header
  int timeout_ms = 2000;
  int latency_ms = 0;          // added to every request
  unsigned seed = 42;          // faults are drawn from this seed: runs are repeatable
};

// Builds the error body of one API for a status (each system has its own error shape).
using ErrorBody = std::function<std::string(int status, const std::string& detail, int retry_after_s)>;

// What apply() did to one request, for fakes that check how clients react (e.g. whether a
// client waited as long as a 429 told it to).
struct FaultOutcome {
  int status = 0;         // the status it answered (0: none, or the connection was reset)
  bool reset = false;     // the connection was broken on purpose
  int retry_after_s = 0;  // for a 429: the retry hint it gave
};

class FaultInjector {
 public:
  void set(const Faults& f);
  void set_down(bool down);
  // Applies the configured faults to a request; true if it answered (or broke) it already.
  // `outcome`, when given, says what it did.
  bool apply(httplib::Response& res, const ErrorBody& error_body, FaultOutcome* outcome = nullptr);
  // True for a request the injector broke on purpose (logged with status 0).
  static bool was_reset(const httplib::Response& res) { return res.has_header("X-Fake-Reset"); }

 private:
  std::mutex mu_;
  Faults faults_;
  std::mt19937 rng_{42};
  bool down_ = false;
};

}  // namespace weft::fakes
