#pragma once
// Field-level view of destination payloads, for the three-way merge (DESIGN.md step 5).
//
// A payload is flattened into paths: object members join with '.', and an array whose
// elements are all objects with a string "type" is keyed by it, so Omnisend's identifiers
// become "identifiers[email].id" and "identifiers[email].channels.email". Other arrays,
// and paths the destination model declares atomic, are single values. Owners (M.owners)
// name a path or a prefix of one; the longest match decides.
#include <boost/json.hpp>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace weft::pipeline {

using Flat = std::map<std::string, boost::json::value>;

// `atomic`: path patterns not descended into; '*' matches one segment
// ("identifiers[*].channels.*").
Flat flatten(const boost::json::object& payload, const std::vector<std::string>& atomic);
// The inverse for a subset of paths: keyed arrays come back as arrays of objects with "type".
boost::json::object unflatten(const Flat& fields);
bool path_matches(const std::string& pattern, const std::string& path);

// The owner of a path: the longest owners entry that is the path or a prefix of it at a
// segment boundary; "source" when none.
std::string owner_of(const std::map<std::string, std::string>& owners, const std::string& path);

// One field's decision, shown by dry-run and kept with conflicts.
struct FieldDecision {
  std::string path, owner;
  enum class Action { send, unchanged, keep_destination, conflict } action = Action::send;
  boost::json::value next, sent, held;  // held/sent: null when unknown
  std::string why;
};
const char* action_name(FieldDecision::Action a);

struct MergeResult {
  Flat changes;                          // what to send
  std::vector<FieldDecision> decisions;  // one per field of the mapped payload
  bool has_conflict() const;
};

// Three-way merge of the mapped payload against the shadow state ({"path": field}, see
// ShadowField) under the owners; `record_ms` is the source record's modification time
// (for "latest").
MergeResult merge(const Flat& next, const boost::json::object& shadow, const std::map<std::string, std::string>& owners,
                  int64_t record_ms);

// One field of the shadow state, decoded. Stored compactly: {"v": x} when what was sent and
// what is held are the same, else {"s": sent, "h": held} (each left out when unknown), with
// "t" (when held took its value, epoch ms) and "b" (the script version, or "destination");
// the long form {"sent", "held", "at", "by"} is read too.
struct ShadowField {
  const boost::json::value* sent = nullptr;  // nullptr: never sent
  const boost::json::value* held = nullptr;  // nullptr: not known
  int64_t at = 0;
  std::string by;
};
ShadowField shadow_field(const boost::json::object& shadow, const std::string& path);

// After a confirmed write: the sent fields become sent + held; what the destination answered
// with (its whole record, flattened; may be empty) updates held where it differs.
void record_delivery(boost::json::object& shadow, const Flat& sent, const Flat& answered, int64_t at_ms,
                     const std::string& script_version);

// The shadow state as the store keeps it. Most fields of a record were written together,
// by one script version at one time, so the common "t" and "b" are written once:
// {"~": 2, "t": at, "b": by, "f": {"path": field without them}}. That shrinks the row
// (1.4 -> 0.87 KiB for an Omnisend contact), which is rewritten at every delivery.
// decode_shadow reads that and the older form (the fields at the top level), and gives the
// fields whole; text that is not a JSON object is a std::runtime_error.
std::string encode_shadow(const boost::json::object& shadow);
boost::json::object decode_shadow(std::string_view text);

// ISO 8601 ("2024-01-01T00:00:00.000Z", offsets allowed) to epoch ms; -1 if not a timestamp.
int64_t parse_time_ms(const std::string& text);

}  // namespace weft::pipeline
