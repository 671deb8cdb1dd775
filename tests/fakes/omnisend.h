#pragma once
// A fake Omnisend API (v3) for tests, on 127.0.0.1 with an ephemeral port. It behaves like
// the real one as described in shared/reference/apis.md (auth, contacts created or updated
// by identifier, events deduplicated by eventID + eventTime, problem-JSON errors, 429 with
// a body hint), keeps what it received so tests can assert on it, and takes fault
// injection from the test (error rates, latency, connection resets, Retry-After).
#include <boost/json.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/fakes/faults.h"

namespace weft::fakes {

using OmnisendFaults = Faults;

// One request as the fake saw it.
struct OmnisendRequest {
  std::string method, path, body, api_key;
  int status = 0;  // what the fake answered (0: the connection was reset)
};

class FakeOmnisend {
 public:
  // Starts listening on 127.0.0.1 on a free port; `api_key` is the one it accepts.
  explicit FakeOmnisend(std::string api_key = "test-key");
  ~FakeOmnisend();
  FakeOmnisend(const FakeOmnisend&) = delete;
  FakeOmnisend& operator=(const FakeOmnisend&) = delete;

  int port() const;
  std::string base_url() const;  // "http://127.0.0.1:PORT/v3"

  void set_faults(const OmnisendFaults& f);
  // Every request after this one is rejected with 503 until healed (a destination that is down).
  void set_down(bool down);

  // What the fake holds now.
  std::vector<boost::json::object> contacts() const;
  std::optional<boost::json::object> contact_by_email(const std::string& email) const;
  std::vector<boost::json::object> events() const;
  // Removes a contact (as if deleted in Omnisend's UI); false if there is none.
  bool delete_contact_by_email(const std::string& email);
  std::vector<OmnisendRequest> requests() const;

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace weft::fakes
