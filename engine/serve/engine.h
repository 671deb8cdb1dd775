#pragma once
// weft serve's engine: every tenant of a workspace running at once over one store.
//
//   webhook -> ingest() -> inbox (group commit; the HTTP answer waits for it)
//   per tenant: a driver thread runs the tenant's pipeline::Runner over the inbox and its
//               delivery workers; a reload builds a new Runner between batches
//   scheduler:  per flow, pull / backfill / reconcile jobs (engine/serve/jobs.cc)
//   watcher:    inotify on the workspace -> reload of the tenant whose files changed
//
// One SQLite connection writes (guarded by store_mu); the mapping threads, delivery workers
// and the admin API read on connections of their own.
#include <atomic>
#include <boost/json.hpp>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/http/webhook.h"
#include "engine/pipeline/runner.h"
#include "engine/store/db_lock.h"
#include "engine/store/store.h"
#include "engine/util/metrics.h"
#include "engine/workspace/registry.h"
#include "engine/workspace/secrets.h"

namespace weft::serve {

struct Options {
  std::string workspace = ".";
  std::string db;                    // default: <workspace>/.weft/weft.db
  size_t max_backlog = 100000;       // per tenant: webhooks answer 503 above it
  http::WebhookLimits limits;
  size_t batch = 50;                 // inbox records per pipeline transaction (short: webhooks wait for the lock)
  bool watch = true;                 // inotify on the workspace
  int watch_settle_ms = 300;         // a burst of file events becomes one reload
};

// A webhook request as the engine needs it.
struct WebhookCall {
  std::string tenant, connection;
  std::string content_type, authorization;
  std::function<std::string(const std::string&)> header;  // any request header by name ("" if absent)
  std::string body;
  std::string correlation_id;
  // Before the body is read: only what the headers can decide (tenant, connection, bearer
  // token, the declared Content-Length against the limit). An answer of 100 means "read it,
  // up to max_body_bytes".
  bool headers_only = false;
  std::optional<size_t> content_length;
};

struct WebhookAnswer {
  int status = 202;
  std::string code, message;         // errors
  std::vector<std::string> accepted, duplicates;  // message ids
  int retry_after_s = 0;             // 503
  size_t max_body_bytes = 0;         // headers_only, 100: the connection's body limit
};

struct JobRequest {
  std::string tenant, flow, job;     // job: pull, backfill, reconcile
  std::string trigger = "api";
};

class Scheduler;

// Lowers the calling thread's scheduling priority (nice 10) and so that of the threads it
// starts: pipeline and job threads yield to the webhook and admin threads on busy cores.
void lower_priority();

class Engine {
 public:
  explicit Engine(Options o);
  ~Engine();

  // Opens the store, loads every tenant (a tenant that does not load is reported and left
  // stopped; the others run), starts the drivers, the scheduler and the watcher.
  // False (and *error) when the store cannot be opened.
  bool start(std::string* error);
  // Graceful stop: no more webhooks, jobs stop at a page boundary (their cursors are
  // durable), the batch being committed finishes, operations being sent are answered and
  // recorded. What is left waits in the inbox / outbox for the next start.
  void stop();

  // Durable in the inbox before it returns 202.
  WebhookAnswer webhook(const WebhookCall& call);

  // Reloads one tenant ("" = every tenant folder; new folders start, removed ones stop).
  boost::json::object reload(const std::string& tenant, const std::string& trigger);

  // Starts a job now; false with *error if the flow is unknown, the job is unknown, or a run
  // of it is already going.
  bool start_job(const JobRequest& r, std::string* error, int64_t* run_id = nullptr);

  // Admin API views (JSON).
  boost::json::array tenants_json();
  std::optional<boost::json::object> tenant_json(const std::string& tenant);
  bool ready(std::string* why);

  // Replays parked records through the tenant's current script (ids empty: every parked
  // record of `kind`, "" = both). Returns how many went back into the inbox.
  int64_t replay(const std::string& tenant, const std::vector<int64_t>& ids, const std::string& kind,
                 std::string* error);

  // Resolves an open conflict by choosing a side. For a field conflict the destination's
  // value becomes the last synced one; choosing "source" then sends the source record again
  // (its field now counts as changed at the source only, so it is written). An identity
  // conflict only records the choice: the data has to change at one side (see README).
  // False with *error when there is no such open conflict.
  bool resolve_conflict(const std::string& tenant, int64_t id, const std::string& side, const std::string& request_id,
                        std::string* error);

  // Runs `f` on the writer connection under its lock (admin API writes, jobs).
  template <class F>
  auto with_store(F&& f) {
    std::lock_guard<std::mutex> lock(store_mu_);
    return f(*store_);
  }
  // A connection of the caller's own for reads (admin API); opened per call.
  std::unique_ptr<store::Store> reader() const;

  util::Metrics& metrics() { return metrics_; }
  workspace::Secrets& secrets() { return secrets_; }
  workspace::Registry& registry() { return registry_; }
  const Options& options() const { return opts_; }
  std::string db_path() const { return db_; }
  // The active version of a tenant (nullptr: not loaded).
  std::shared_ptr<const workspace::TenantVersion> active(const std::string& tenant) const;
  std::vector<std::string> tenant_names() const;
  // The writer connection and its lock, for jobs that write page by page (pull_flow).
  store::Store& store() { return *store_; }
  std::mutex& store_mutex() { return store_mu_; }
  // Tells the tenant's driver that the inbox has new records (jobs call it after a page).
  void notify(const std::string& tenant);
  // Inbox records of the tenant not yet processed (cached, refreshed by the ingest thread).
  int64_t backlog(const std::string& tenant);

 private:
  struct Tenant;
  struct Pending;
  struct Lane;
  struct MovingLane;
  void commit_batch(Lane& lane, std::vector<Pending*>& batch);
  void move_loop();
  void driver_loop(Tenant* t);
  void watch_loop();
  // Builds a runner for `v`; nullptr and *error if a connection or script cannot be used.
  std::shared_ptr<pipeline::Runner> make_runner(std::shared_ptr<const workspace::TenantVersion> v, std::string* error);
  void start_tenant(const std::string& name, std::shared_ptr<const workspace::TenantVersion> v);
  void stop_tenant(const std::string& name);
  boost::json::object reload_locked(const std::string& tenant, const std::string& trigger);
  boost::json::object reload_one(const std::string& tenant, const std::string& trigger);
  // A tenant stays alive while a caller holds it, even if its folder is removed meanwhile.
  std::shared_ptr<Tenant> find(const std::string& tenant) const;

  Options opts_;
  std::string db_;
  workspace::Registry registry_;
  workspace::Secrets secrets_;
  util::Metrics metrics_;
  std::unique_ptr<store::DbLock> db_lock_;  // one engine per database (store/db_lock.h)
  std::unique_ptr<store::Store> store_;  // the writer
  std::mutex store_mu_;

  mutable std::mutex tenants_mu_;
  std::map<std::string, std::shared_ptr<Tenant>> tenants_;
  std::mutex reload_mu_;

  // Webhook group commit, in lanes: each lane is a spool file of its own with its own
  // commit leader, so a webhook that arrives while one lane waits for its fsync commits in
  // an idle lane at once instead of queueing behind it (fsyncs of different files overlap).
  struct Lane {
    std::unique_ptr<class Spool> spool;
    std::unique_ptr<store::Store> reader;  // finds duplicates already in the inbox (the lane's leader)
    std::deque<Pending*> queue;
    bool committing = false;               // a webhook thread is committing this lane's batch
    bool moving = false;                   // the mover is reading or deleting in its spool
  };
  static constexpr size_t kLanes = 4;
  static constexpr int kMoveGatherMs = 50;     // see move_loop
  static constexpr size_t kPruneChunk = 2000;  // done inbox rows deleted per transaction (move_loop)
  static constexpr int kBatchGatherMs = 50;    // see pipeline::Runner::set_gather
  std::mutex ingest_mu_;
  std::condition_variable ingest_cv_;
  std::vector<Lane> lanes_;
  bool ingest_stop_ = false;
  int ingest_active_ = 0;     // webhooks between enqueue and answer
  std::thread mover_;
  std::condition_variable move_cv_;
  bool move_stop_ = false;
  std::atomic<int64_t> spooled_{0};
  std::mutex backlog_mu_;
  std::map<std::string, int64_t> backlog_;            // inbox records not yet processed, per tenant
  std::map<std::string, int64_t> spooled_by_tenant_;  // webhook records still in the spool
  int64_t backlog_refreshed_ms_ = 0;

  std::unique_ptr<Scheduler> scheduler_;
  std::atomic<bool> accepting_{false};
  std::atomic<bool> stopping_{false};
  std::thread watcher_;
  int watch_fd_ = -1;
  int watch_wake_[2] = {-1, -1};
  std::thread checkpointer_;
  std::mutex cp_mu_;
  std::condition_variable cp_cv_;
};

}  // namespace weft::serve
