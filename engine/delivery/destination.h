#pragma once
// What a destination connector provides to the pipeline and the delivery workers:
//   - a Model of its payloads (how fields flatten for the merge, where the match keys are,
//     what every request must carry to find its record), used by plan and dry-run, no I/O;
//   - the exact HTTP request for an operation (dry-run prints it, secrets redacted);
//   - send: one request, its answer classified (ok / transient / permanent).
#include <boost/json/value.hpp>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/delivery/send_result.h"
#include "engine/store/store.h"

namespace weft::delivery {

struct Model {
  std::string kind;                  // the operation kind planned ("contact.upsert", "event.send")
  bool merge = true;                 // false: append-only (events): always sent whole, no identity
  std::vector<std::string> atomic;   // flatten does not descend into these (fields.h patterns)
  std::map<std::string, std::string> aliases;      // owner names -> paths ("consent.email" -> ...)
  std::map<std::string, std::string> match_paths;  // identity key -> path ("email" -> "identifiers[email].id")
  // Paths a request carries even when unchanged, so the destination finds the record: the
  // first one present is sent.
  std::vector<std::string> identify_by;
};

struct Request {
  std::string method, url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

struct Answer {
  SendResult result;
  std::string remote_id;     // the destination's id for the record, when it says
  std::string record_json;   // the record as the destination now holds it, when it says...
  boost::json::value record; // ...or already parsed (batches), then record_json is empty
};

class Destination {
 public:
  virtual ~Destination() = default;
  // The payload model of an operation kind this destination sends (one connection may
  // carry several: Omnisend contacts and events); nullptr for a kind it does not know.
  virtual const Model* model_for(const std::string& kind) const = 0;
  // The request `send` would make. With `redact`, credentials are shown as "***".
  virtual Request request(const store::Operation& op, const std::string& remote_id, bool redact) const = 0;
  virtual Answer send(const store::Operation& op, const std::string& remote_id) = 0;
  // How many operations of this kind one send_batch may carry; 1: the API has no batches.
  virtual size_t max_batch(const std::string& kind) const {
    (void)kind;
    return 1;
  }
  // What the destination holds for an operation's record, as JSON text ("": none), asked
  // before an operation with a guard (store::Operation::guard) is sent. Returns false with
  // *error (classified like a send) when the destination could not say. One that cannot
  // look records up answers "" (the guarded fields are then written).
  virtual bool held_record(const store::Operation& op, std::string* record_json, SendResult* error) {
    (void)op;
    (void)error;
    record_json->clear();
    return true;
  }
  // The most requests held_record can make for the operation (counted against the rate limit).
  virtual int lookup_requests(const store::Operation& op) const {
    (void)op;
    return 1;
  }
  // HTTP requests one send_batch costs against the rate limit (create, poll, results).
  virtual int batch_requests() const { return 1; }
  // Several operations of one kind in one exchange; one Answer per operation, in order.
  virtual std::vector<Answer> send_batch(const std::vector<const store::Operation*>& ops) {
    std::vector<Answer> out;
    for (const auto* op : ops) out.push_back(send(*op, ""));
    return out;
  }
};

}  // namespace weft::delivery
