#pragma once
// A fake Omnisend API (v3) for tests, on 127.0.0.1 with an ephemeral port. It behaves like
// the real one as described in shared/reference/apis.md (auth, contacts created or updated
// by identifier, events deduplicated by eventID + eventTime, problem-JSON errors, 429 with
// a body hint), keeps what it received so tests can assert on it, and takes fault
// injection from the test (error rates, latency, connection resets, Retry-After).
//
// Contacts are indexed by identifier ("email:a@x.se" -> contactID), so a write costs
// O(log n) and the fake holds 100,000+ contacts. An update is a partial update, as in the
// real API: top-level fields are replaced, except `customProperties` (merged key by key)
// and `identifiers` (merged by type + id; an identifier sent without `channels` keeps the
// stored consent, one with channels replaces only the channels it names).
//
// For tests of the sync engine it also checks how it is used: the commercetoolsVersion
// each write carried (order_violations: an older version written after a newer one), and
// whether a client waited as long as a 429 told it to (retry_after_violations).
//
// Batches (POST /v3/batches, up to 100 POST/PUT items on contacts or events) are processed
// when created, each item exactly as its own request would be (validation, conflicts,
// merge, write history), and kept per item; the first GET of a batch (GET
// /v3/batches/{id} or .../items) still sees it "inProgress", later ones "finished".
// Faults apply to the batch request as a whole; a 429 on it asks each of its items to wait.
#include <boost/json.hpp>
#include <cstdint>
#include <functional>
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
  size_t contact_count() const;
  // Removes a contact (as if deleted in Omnisend's UI); false if there is none.
  bool delete_contact_by_email(const std::string& email);
  // Changes a contact as a user of Omnisend's UI would (e.g. the customer unsubscribed):
  // `change` edits the stored contact in place (its contactID cannot change). False if no
  // contact has that email, or if the change would give it an identifier that another
  // contact has (then nothing changes).
  bool update_contact(const std::string& email, const std::function<void(boost::json::object&)>& change);

  std::vector<OmnisendRequest> requests() const;
  size_t request_count() const;

  // The customProperties.commercetoolsVersion of every successful write (POST or PATCH) to
  // the contact that has this email, in the order they arrived; empty if there is none.
  std::vector<int64_t> written_versions(const std::string& email) const;
  // Writes whose commercetoolsVersion was lower than one already written to the same
  // contact (an equal one is a harmless resend).
  int64_t order_violations() const;
  // Requests that came before the wait a 429 asked for was over (retry_after_s, minus
  // 20 ms of tolerance), counted per key: the email identifier in the body (a contact) or
  // the event's contact.email, else method + path. A batch has the keys of its items (as if
  // each had been sent to its endpoint alone) and counts once if any of them came early.
  int64_t retry_after_violations() const;
  // Requests of any kind that came while a 429's wait was running (the real limit is the
  // brand's, shared by every request). A client with several requests in flight can only
  // hold back those it sends after reading the 429: assert 0 with one sender.
  int64_t brand_wait_violations() const;
  // Batches created by POST /v3/batches (answered 201).
  size_t batch_count() const;

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace weft::fakes
