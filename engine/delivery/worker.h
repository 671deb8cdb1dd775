#pragma once
// The outbox worker of one destination connection: takes due operations (per destination
// record only the oldest, so a newer version never overtakes an older retry), sends them
// from `concurrency` threads under the connection's rate limit, and records each answer:
// ok -> shadow state updated and the operation done; transient -> retried with backoff and
// full jitter, never before the destination's Retry-After; permanent -> a rejection with
// the API's message; attempts or age exhausted -> a dead letter. Answers are committed in
// batches. Workers share nothing but the store, so one slow or failing connection never
// holds up another's.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/delivery/destination.h"
#include "engine/pipeline/fields.h"
#include "engine/delivery/rate_limiter.h"
#include "engine/delivery/retry.h"
#include "engine/store/store.h"
#include "engine/workspace/secrets.h"

namespace weft::delivery {

struct WorkerConfig {
  std::string tenant, connection;
  int concurrency = 4;
  int rate_requests = 0;     // <= 0: no limit
  int64_t rate_per_ms = 60000;
  std::map<std::string, RetryPolicy> retry;  // per flow; flows not listed use the defaults
  // Called for each answer once it is committed: outcome is "delivered", "retried",
  // "dead_lettered" or "rejected" (metrics: counts per flow, delivery latency).
  std::function<void(const store::Operation& op, const char* outcome, int64_t now_ms)> on_answer;
  // Called once committed for an operation whose destination record was made anew (the
  // destination answered another id than the one it had: the record was deleted there).
  // What weft knew of it is forgotten but for this answer; the caller sends the record
  // again, whole.
  std::function<void(const store::Operation& op)> on_recreated;
};

struct DeliveryCounts {
  std::atomic<int64_t> delivered{0}, retried{0}, dead_lettered{0}, rejected{0};
  std::atomic<int64_t> conflicts{0};  // flagged fields a first write found set otherwise
};

class Worker {
 public:
  using Factory = std::function<std::unique_ptr<Destination>()>;
  // `store_mu` guards `store` (shared with the pipeline). `reader`, if given, is a second
  // connection to the same database that only this worker uses, to find due operations
  // without waiting for the pipeline's transaction. `secrets` redacts stored errors.
  Worker(WorkerConfig config, Factory factory, store::Store& store, std::mutex& store_mu,
         const workspace::Secrets& secrets, std::unique_ptr<store::Store> reader = nullptr);
  ~Worker();

  void start();
  // Stops taking operations; the ones being sent finish and their answers are recorded.
  void stop();
  // Wakes the worker after operations were planned.
  void wake();
  // True when nothing of this connection is in the outbox or being sent. Takes the store lock.
  // Throws std::runtime_error once the worker has given up (see fatal()).
  bool drained();
  // Why the worker stopped on its own (its answers could not be recorded); "" while it runs.
  std::string fatal() const;
  // Outbox operation ids being sent now (the pipeline must not supersede them). Call with
  // the store lock held, so the answer stays true while the caller plans.
  std::vector<int64_t> in_flight() const;

  const DeliveryCounts& counts() const { return counts_; }
  // The earliest time a waiting operation is due (0: none), for progress lines.
  int64_t next_retry_ms() const { return next_retry_ms_.load(); }

 private:
  struct Job {
    store::Operation op;
    std::string remote_id;
    Answer answer;
    // The record as the destination answered it, flattened by the sender (outside the store
    // lock).
    pipeline::Flat answered;
    pipeline::Flat sent;      // the fields the operation wrote
    // Flagged fields the first-write lookup found holding another value at the destination:
    // left out of the body, recorded as conflicts once the operation is delivered.
    std::vector<std::pair<std::string, std::pair<boost::json::value, boost::json::value>>> flagged;  // path, {source, held}
  };
  static constexpr size_t kMinBatch = 4;  // fewer waiting operations go one by one
  void dispatch_loop();
  void send_loop(std::unique_ptr<Destination> dest);
  void record(std::vector<Job>& done);
  bool guard_first_write(Destination& dest, Job& j, SendResult* failed);
  // Unclaims a job's operation and entity (under mu_): the dispatcher may take them again.
  void release(const Job& j);
  // A rejection or dead letter for an operation (which leaves the outbox). Store lock held.
  void park(const store::Operation& op, const std::string& kind, const std::string& error, const std::string& reason,
            int attempts);
  const RetryPolicy& policy(const std::string& flow) const;

  WorkerConfig config_;
  Factory factory_;
  store::Store& store_;
  std::mutex& store_mu_;
  std::unique_ptr<store::Store> reader_;
  const workspace::Secrets& secrets_;
  std::shared_ptr<RateLimiter> limiter_;  // shared with jobs calling the same connection
  std::unique_ptr<Destination> model_dest_;  // for its model
  RetryPolicy default_policy_;
  std::mt19937_64 rng_{std::random_device{}()};

  mutable std::mutex mu_;
  std::condition_variable work_cv_;   // senders wait for jobs
  std::condition_variable done_cv_;   // the dispatcher waits for answers or wake()
  std::deque<Job> queue_;
  std::vector<Job> answered_;
  std::vector<int64_t> busy_ops_, busy_entities_;  // in flight (entities: 0 left out)
  bool stopping_ = false, woken_ = false;
  int record_failures_ = 0;  // dispatcher thread only
  std::string fatal_;
  std::atomic<int64_t> next_retry_ms_{0};
  DeliveryCounts counts_;
  std::thread dispatcher_;
  std::vector<std::thread> senders_;
};

}  // namespace weft::delivery
