#pragma once
// Steps 1-6 of DESIGN.md's "path of one record" for one inbox record and one flow: order,
// map, check, identify, merge, plan. Every write goes to the store inside the caller's
// transaction, so a batch is all or nothing; dry-run runs the same code and rolls back.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/delivery/destination.h"
#include "engine/pipeline/fields.h"
#include "engine/script/sandbox.h"
#include "engine/store/store.h"
#include "engine/workspace/schema.h"
#include "engine/workspace/tenant.h"

namespace weft::pipeline {

struct RecordResult {
  enum class Status { planned, unchanged, stale, skipped, rejected, conflict };
  Status status = Status::unchanged;
  std::string flow, key, correlation_id, script_version;
  store::Version version;
  std::string identity;                  // how the destination record was resolved
  int64_t entity_id = 0;
  bool new_entity = false;               // identify created it: no shadow, no operations yet
  std::vector<FieldDecision> decisions;  // the merge, per field
  std::string payload;                   // what the script mapped
  store::Operation op;                   // Status::planned
  int64_t superseded = 0;                // a waiting operation this one replaced
  store::Parked parked;                  // Status::rejected
  std::vector<store::Conflict> conflicts;
  std::string reason;                    // stale / skipped / conflict, in words
  std::vector<script::Note> notes;       // with Options::collect_notes
};
const char* status_name(RecordResult::Status s);

struct Options {
  bool replay = false;          // an equal version is processed again (replays of parked records)
  bool collect_notes = false;   // dry-run
  std::vector<int64_t> in_flight;  // outbox operations being sent now (not superseded)
  int64_t now_ms = 0;           // 0: the clock
  // The script's ctx fields instead of the flow's (dry-run with --context: the plan is
  // made from the payload it shows).
  const boost::json::object* context = nullptr;
};

// A record after the steps that need only the sandbox (key, version, map, schema check,
// flatten): prepared on a mapping thread, committed on the store's (see Runner).
struct Prepared {
  const workspace::Flow* flow = nullptr;
  store::InboxRecord rec;
  int64_t now_ms = 0;
  bool keyed = false;
  script::KeyVersion kv;
  script::Outcome out;
  boost::json::value mapped;
  std::string schema;
  std::vector<workspace::SchemaIssue> issues;
  const delivery::Model* model = nullptr;
  Flat flat;
};

class Pipeline {
 public:
  // Throws std::runtime_error if a flow's script does not compile (the caller loaded a
  // checked version, so this is not expected).
  Pipeline(std::shared_ptr<const workspace::TenantVersion> tenant, store::Store& store);
  ~Pipeline();

  // prepare + commit.
  RecordResult process(const workspace::Flow& flow, const store::InboxRecord& rec, const Options& opts);
  // Steps that touch only the sandbox; never the store. Not thread-safe (one sandbox).
  Prepared prepare(const workspace::Flow& flow, const store::InboxRecord& rec, const Options& opts);
  // Steps 1 and 3-6 against the store, in the caller's transaction. Of the sandbox it reads
  // only the flow specs, fixed when the sandbox was built, so it may run on one thread while
  // prepare runs on another (Runner prepares the next batch while committing this one).
  RecordResult commit(Prepared& p, const Options& opts);

  // The flows of this tenant that take the record: enabled (or named by the record), of its
  // source connection and entity.
  std::vector<const workspace::Flow*> flows_for(const store::InboxRecord& rec) const;

  const workspace::TenantVersion& tenant() const { return *tenant_; }
  // The flow's M.owners with the destination's aliases resolved to field paths.
  std::map<std::string, std::string> owners_of(const workspace::Flow& flow, const delivery::Model& model) const;

 private:
  bool identify(const workspace::Flow& flow, const delivery::Model& model, const Flat& flat,
                const store::InboxRecord& rec, bool keyed, RecordResult& r);

  std::shared_ptr<const workspace::TenantVersion> tenant_;
  store::Store& store_;
  std::unique_ptr<script::Sandbox> sandbox_;
  std::map<std::string, std::map<std::string, std::string>> owners_;  // per flow, built by commit
};

}  // namespace weft::pipeline
