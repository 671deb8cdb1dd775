#pragma once
// One tenant at work: pulls from its sources into the inbox, runs the pipeline over the
// inbox in batches (one transaction per batch), and delivers through one outbox worker per
// destination connection. `weft sync` runs it to completion; `weft serve` will keep it running.
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <thread>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "connectors/commercetools/client.h"
#include "engine/delivery/worker.h"
#include "engine/pipeline/pipeline.h"
#include "engine/store/store.h"
#include "engine/util/metrics.h"
#include "engine/workspace/secrets.h"
#include "engine/workspace/tenant.h"

namespace weft::pipeline {

struct RunCounts {
  std::atomic<int64_t> pulled{0}, processed{0}, mapped{0}, skipped{0}, stale{0}, rejected{0}, planned{0},
      unchanged{0}, conflicts{0}, deferred{0};
};

// Whether `weft sync` can pull the flow's source (commercetools customers, so far); *why
// says why not (a webhook-only flow, such as orders, is fed by weft serve).
bool pullable(const workspace::TenantVersion& tenant, const std::string& flow_name, std::string* why);

// How a pull reads a flow's source into the inbox.
struct PullSpec {
  std::string cursor_key;      // the cursors row: the flow's name (delta pulls), "<flow>#backfill", ...
  std::string id_prefix;       // message ids are prefix + "lastModifiedAt|id:version"
  std::string start_cursor;    // when no cursor is stored ("" = from the beginning)
  int page_size = 500;
  int64_t max_backlog = 20000; // waits while the tenant's inbox holds more (bounded disk)
  int pause_ms = 0;            // between pages (throttling a backfill)
};
// Pulls one flow's source from its cursor to the end, each page durable in the inbox
// together with the cursor after it; `on_page(added)` after each page. Returns the records
// added. Throws std::runtime_error when the source fails for good (after retries), and
// connectors::ConfigError when the flow's source cannot be pulled.
int64_t pull_flow(const workspace::TenantVersion& tenant, const std::string& flow, store::Store& store,
                  std::mutex& store_mu, workspace::Secrets& secrets, const PullSpec& spec,
                  const std::atomic<bool>& stop, const std::function<void(int64_t)>& on_page);

// Puts parked records (dead letters, rejections) back into the inbox as replays, so they go
// through the tenant's current script version; marks them replayed and audits it, in the
// caller's transaction. Records already replayed, or of a flow that no longer exists (named
// in *skipped), are left as they are. `via` says who asked ("weft replay", "admin API").
int64_t requeue_parked(store::Store& store, const workspace::TenantVersion& version,
                       const std::vector<store::Parked>& items, const std::string& via,
                       std::vector<std::string>* skipped = nullptr);

// For a record going back into the inbox with a flow (a replay): a commercetools
// notification it was received as is replaced by the resource it carries, or, when it does
// not carry it, the flow is cleared so the pipeline fetches it.
void open_notification(const workspace::TenantVersion& version, store::InboxRecord& r);

class Runner {
 public:
  // `flows`: the flows to run (empty: every enabled flow). Throws connectors::ConfigError
  // (a connection that cannot be used) or std::runtime_error (a script that does not build).
  // `open_reader`, if given, opens another connection to the store's database for each
  // delivery worker (see delivery::Worker).
  Runner(std::shared_ptr<const workspace::TenantVersion> tenant, store::Store& store, std::mutex& store_mu,
         workspace::Secrets& secrets, std::vector<std::string> flows,
         std::function<std::unique_ptr<store::Store>()> open_reader = {}, util::Metrics* metrics = nullptr);
  ~Runner();
  // What the constructor checks first: that each connection of `flows` (empty: every enabled
  // flow) can be used (a secret unset or empty). Throws connectors::ConfigError; touches
  // nothing, so a command can check before it opens the database.
  static void check_connections(const workspace::TenantVersion& tenant, const std::vector<std::string>& flows,
                                workspace::Secrets& secrets);

  void start_delivery();
  void stop_delivery();
  // Pulls one flow's delta from its cursor to the end (pages of `page_size`), each page
  // durable in the inbox together with the cursor after it. Throws std::runtime_error when the
  // source fails for good (after retries); what was pulled until then stays.
  void pull(const std::string& flow, const std::atomic<bool>& stop, int page_size = 500);
  // Commits the batch prepared by the last call (one transaction) while the mapping thread
  // prepares the next `batch` inbox records. Returns how many records it committed or took;
  // 0 means the inbox is empty and nothing is being prepared.
  size_t process_batch(size_t batch = 500);
  bool delivery_drained();
  // Why a delivery worker gave up (answers it could not record, ten times in a row), or "":
  // its connection delivers nothing more until the runner is rebuilt.
  std::string delivery_failure() const;
  // Records were added to the inbox by someone else (a webhook): the mapping thread looks now
  // instead of at its next poll, and process_batch does not report an empty inbox too early.
  void notify_inbox();
  const workspace::TenantVersion& version() const { return *tenant_; }
  int64_t next_retry_ms() const;
  // A batch that would be short waits up to `ms` for more records before it is mapped (weft
  // serve, where webhooks trickle in: each batch transaction rewrites whole pages of a
  // dozen tables and indexes, so batches of a few records cost tens of KB of writes each).
  // 0 (the default): no wait.
  void set_gather(int ms) { gather_ms_ = ms; }

  const std::vector<std::string>& flows() const { return flows_; }
  const RunCounts& counts() const { return counts_; }
  // Sums over the workers.
  int64_t delivered() const { return sum(&delivery::DeliveryCounts::delivered); }
  int64_t retried() const { return sum(&delivery::DeliveryCounts::retried); }
  int64_t dead_lettered() const { return sum(&delivery::DeliveryCounts::dead_lettered); }
  int64_t api_rejected() const { return sum(&delivery::DeliveryCounts::rejected); }
  int64_t delivery_conflicts() const { return sum(&delivery::DeliveryCounts::conflicts); }

 private:
  int64_t sum(std::atomic<int64_t> delivery::DeliveryCounts::*field) const;

  std::shared_ptr<const workspace::TenantVersion> tenant_;
  store::Store& store_;
  std::mutex& store_mu_;
  workspace::Secrets& secrets_;
  std::vector<std::string> flows_;
  std::unique_ptr<Pipeline> pipeline_;
  // A record whose destination record was made anew (deleted there) goes through again,
  // whole: at most once per key every 10 minutes (a destination that answered a new id at
  // every write would otherwise loop).
  void requeue_recreated(const store::Operation& op);
  std::mutex recreated_mu_;
  std::map<std::string, int64_t> recreated_at_;  // flow + key -> when it was queued again
  std::map<std::string, std::unique_ptr<delivery::Worker>> workers_;  // by destination connection
  RunCounts counts_;
  util::Metrics* metrics_ = nullptr;

  // The mapping thread: prepares one batch at a time (the sandbox is single-threaded).
  struct PreparedRecord {
    store::InboxRecord rec;
    std::vector<Prepared> flows;
    std::string stop;         // "skip", "reject" or "defer" (stays in the inbox): see resolve
    std::string stop_reason;
  };
  void map_loop();
  std::vector<store::InboxRecord> read_inbox(store::Store* reader, int64_t after, size_t limit);
  // Turns a received notification into the record it is about (fetching it when the
  // notification does not carry it); pulled records pass through.
  void resolve(PreparedRecord& pr);
  std::map<std::string, std::unique_ptr<connectors::commercetools::Source>> sources_;  // mapping thread only
  // The mapping thread reads the inbox on a connection of its own (when open_reader is
  // given) and prepares batches up to kAhead ahead of the commits.
  static constexpr size_t kAhead = 3;
  std::function<std::unique_ptr<store::Store>()> open_reader_;
  size_t batch_size_ = 500;
  std::thread mapper_;
  std::mutex map_mu_;
  std::condition_variable map_cv_;
  std::deque<std::vector<PreparedRecord>> prepared_;
  bool map_stop_ = false;
  bool map_idle_ = false;         // the last read found nothing new...
  int64_t idle_seen_writes_ = 0;  // ...and started after this many inbox writes
  std::atomic<int64_t> inbox_writes_{0};  // commits that added inbox records (pulls)
  std::exception_ptr map_error_;
  // Deferred records are read again this long after the first of them (while idle): 30 s,
  // or $WEFT_DEFERRED_RETRY_MS.
  int64_t retry_deferred_ms_ = 30000;
  std::atomic<int> gather_ms_{0};
  int64_t deferred_since_ms_ = 0;  // map_mu_
  bool committing_ = false;        // map_mu_: process_batch holds a batch taken from prepared_
};

}  // namespace weft::pipeline
