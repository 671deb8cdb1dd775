#pragma once
// Correlation ids weft makes when a record arrives without one: 32 lowercase hex digits, the
// W3C trace-id form, so they can be passed on as `traceparent`. The first 12 digits are the
// time in milliseconds and the other 20 random: ids made later sort later, so the audit
// trail's index on them grows at its end instead of at random places (random inserts
// dirtied a page of the index per record).
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <string_view>

#include "engine/util/time.h"

namespace weft::util {

inline std::string new_correlation_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[33];
  uint64_t r = rng();
  std::snprintf(buf, sizeof buf, "%012llx%04llx%016llx", static_cast<unsigned long long>(now_ms()) & 0xffffffffffffULL,
                static_cast<unsigned long long>(r >> 48), static_cast<unsigned long long>(rng()));
  return buf;
}

// The message-id prefixes of weft's own inbox records: pulled, backfilled, re-queued by
// reconciliation, replayed. Webhooks may not use them (own_id_prefix), and records with the
// last three go through the pipeline again at a version already applied (is_rerun_id).
inline constexpr std::string_view kOwnIdPrefixes[] = {"pull:", "backfill:", "reconcile:", "replay:"};

// The prefix of kOwnIdPrefixes that `id` starts with; empty if none.
inline std::string_view own_id_prefix(std::string_view id) {
  for (std::string_view p : kOwnIdPrefixes)
    if (id.substr(0, p.size()) == p) return p;
  return {};
}

inline bool is_rerun_id(std::string_view id) {
  std::string_view p = own_id_prefix(id);
  return !p.empty() && p != "pull:";
}

// A replay's message id: "replay:<parked id>:<ms>:<key>", where key is the replayed record's
// key (for a record without M.key, the message id it first came with).
inline std::string replay_id(int64_t parked_id, int64_t now_ms, std::string_view key) {
  return "replay:" + std::to_string(parked_id) + ":" + std::to_string(now_ms) + ":" + std::string(key);
}

// The key a replay's message id carries (replay_id), else the id itself (other ids, and
// replays from before ids carried their key).
inline std::string_view replayed_key(std::string_view id) {
  if (id.substr(0, 7) != "replay:") return id;
  size_t a = id.find(':', 7);
  size_t b = a == std::string_view::npos ? a : id.find(':', a + 1);
  return b == std::string_view::npos || b + 1 == id.size() ? id : id.substr(b + 1);
}

}  // namespace weft::util
