#pragma once
// The webhook spool: where a webhook's records are durable before its 202 is sent.
//
// Webhooks must be acknowledged in milliseconds, but the store's one writer is busy with
// the pipeline's batch transactions (each holds SQLite's write lock for several ms). So
// webhooks commit to a small SQLite database of their own (<db>-spool, WAL, group commit;
// the engine keeps one per commit lane), and a mover thread carries spooled records into
// the inbox in large batches. The move is
// idempotent: a record is deleted from the spool only after the inbox transaction that took
// it committed, and the inbox ignores a message id it already has, so a crash between the
// two repeats nothing.
//
// With a server database (PostgreSQL) the spool would not be needed: webhooks would insert
// into the inbox directly. It is an engine detail, not part of the Store interface.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/store/store.h"

namespace weft::serve {

class Spool {
 public:
  // Opens (creating) the spool at `path`. Throws store::StoreError.
  explicit Spool(const std::string& path);
  ~Spool();
  // Adds records in one transaction (durable on return). added[i] is false for a message id
  // already waiting in the spool.
  void add(std::vector<store::InboxRecord>& records, std::vector<bool>* added);
  // The oldest waiting records, at most `limit`.
  std::vector<store::InboxRecord> take(size_t limit);
  // Forgets records up to `seq` (the spool's own ids, in InboxRecord::seq from take()).
  void done(int64_t seq);
  int64_t size();
  // Copies the spool's log back into its file (passive: never waits for the writer). Called
  // from one thread (the engine's checkpointer); the spool itself never checkpoints.
  void checkpoint();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::serve
