#pragma once
// Omnisend as a destination (v3 API, X-API-KEY): contacts created or updated by identifier
// and events, each answer classified by errors.h for the delivery workers.
#include <boost/json/value.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/delivery/send_result.h"
#include "engine/http/client.h"

namespace weft::connectors::omnisend {

struct Settings {
  std::string api_url = "https://api.omnisend.com/v3";
  std::string api_key;  // resolved secret, never logged
  int timeout_ms = 10000;
};

// The identifier Omnisend finds a contact by, of a contact as JSON text: its email, else
// its phone, as (type, id); ("", "") when it has neither (or the text is not a contact).
std::pair<std::string, std::string> lookup_identifier(std::string_view contact_json);
// Every identifier Omnisend finds a contact by, in that order: the email's, then the phone's.
std::vector<std::pair<std::string, std::string>> lookup_identifiers(std::string_view contact_json);
// A contact as JSON with nothing but its identifiers of `type` ("" if it is not a contact).
std::string only_identifier(std::string_view contact_json, const std::string& type);

class Destination {
 public:
  explicit Destination(const Settings& s);
  // POST /contacts: Omnisend creates or updates by identifier. On success *contact_id is
  // the contactID Omnisend keeps for it (for identity links).
  // *answer (if given) receives the contact as Omnisend now holds it.
  delivery::SendResult upsert_contact(const std::string& contact_json, int64_t now_ms, std::string* contact_id,
                                      std::string* answer = nullptr);
  // POST /events: deduplicated by Omnisend when the event has both eventID and eventTime.
  delivery::SendResult send_event(const std::string& event_json, int64_t now_ms);

  // One contact's result in a batch.
  struct BatchResult {
    delivery::SendResult result;
    std::string contact_id;          // on success: the contactID...
    boost::json::value answer;       // ...and the contact as Omnisend holds it
  };
  // POST /batches with up to 100 contacts, then polls GET /batches/{id} until it has finished
  // and reads GET /batches/{id}/items. Results are matched to the contacts by their first
  // identifier; a batch that fails, or does not finish within `wait_ms`, fails every contact
  // the same way (transient: they are sent again, which an upsert makes harmless, unless the
  // unfinished batch still runs after a newer change was sent: hence a long wait).
  // *refused is set when Omnisend refused the batch request itself as invalid (a 4xx):
  // then no contact was looked at, and the caller may send them one by one.
  std::vector<BatchResult> upsert_contacts(const std::vector<std::string_view>& contacts_json, int64_t wait_ms = 600000,
                                           bool* refused = nullptr);

  // GET /contacts?email=.. (or phone=..): the contact Omnisend holds for this identifier
  // (for reconciliation). Returns true and fills *contact (the contact JSON object text) when
  // found; true with *contact empty when Omnisend has none; false with *error on failure,
  // classified like the other calls (transient for 429/5xx/timeouts and 401/403/410, with
  // Omnisend's retry hint; a `type` other than "email"/"phone" is permanent, sent nowhere).
  bool find_contact(const std::string& type, const std::string& id, std::string* contact,
                    delivery::SendResult* error);

 private:
  Settings settings_;
  http::Client client_;
};

}  // namespace weft::connectors::omnisend
