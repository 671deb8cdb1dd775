#include "engine/delivery/worker.h"

#include <boost/json.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <stdexcept>

#include "engine/pipeline/fields.h"
#include "engine/util/thread_name.h"
#include "engine/util/time.h"
#include "engine/workspace/json_limits.h"

namespace weft::delivery {

namespace json = boost::json;

namespace {
// Drops one occurrence of `v`, if there is one. (The busy lists can be emptied under a
// sender that still holds a job: when the worker gives up after failing to record answers,
// it clears them while senders sleep in the rate limiter; erasing end() is undefined.)
void erase_one(std::vector<int64_t>& list, int64_t v) {
  auto it = std::find(list.begin(), list.end(), v);
  if (it != list.end()) list.erase(it);
}
}  // namespace

Worker::Worker(WorkerConfig config, Factory factory, store::Store& store, std::mutex& store_mu,
               const workspace::Secrets& secrets, std::unique_ptr<store::Store> reader)
    : config_(std::move(config)),
      factory_(std::move(factory)),
      store_(store),
      store_mu_(store_mu),
      reader_(std::move(reader)),
      secrets_(secrets),
      limiter_(shared_limiter(config_.tenant + "/" + config_.connection, config_.rate_requests, config_.rate_per_ms)) {
  model_dest_ = factory_();
  if (config_.concurrency < 1) config_.concurrency = 1;
}

Worker::~Worker() { stop(); }

void Worker::start() {
  for (int i = 0; i < config_.concurrency; ++i) senders_.emplace_back(&Worker::send_loop, this, factory_());
  dispatcher_ = std::thread(&Worker::dispatch_loop, this);
}

void Worker::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !dispatcher_.joinable()) return;
    stopping_ = true;
  }
  work_cv_.notify_all();
  done_cv_.notify_all();
  for (auto& t : senders_)
    if (t.joinable()) t.join();
  if (dispatcher_.joinable()) dispatcher_.join();
}

void Worker::wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    woken_ = true;
  }
  done_cv_.notify_all();
}

std::vector<int64_t> Worker::in_flight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return busy_ops_;
}

std::string Worker::fatal() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fatal_;
}

bool Worker::drained() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!fatal_.empty()) throw std::runtime_error(fatal_);
    if (!busy_ops_.empty()) return false;
  }
  std::lock_guard<std::mutex> lock(store_mu_);
  return !store_.next_due(config_.tenant, config_.connection).has_value();
}

const RetryPolicy& Worker::policy(const std::string& flow) const {
  auto it = config_.retry.find(flow);
  return it == config_.retry.end() ? default_policy_ : it->second;
}

void Worker::dispatch_loop() {
  util::name_thread("weft-deliver");
  // Enough queued for every sender to fill a batch.
  const size_t window = static_cast<size_t>(config_.concurrency) * 200;
  while (true) {
    std::vector<Job> done;
    size_t want = 0;
    std::vector<int64_t> busy_ops, busy_entities;
    {
      std::unique_lock<std::mutex> lock(mu_);
      done.swap(answered_);
      bool stopping = stopping_;
      if (stopping && done.empty() && busy_ops_.empty()) return;
      if (!stopping && queue_.size() < window) want = window - queue_.size();
      busy_ops = busy_ops_;
      busy_entities = busy_entities_;
    }
    if (!done.empty()) {
      try {
        record(done);
        record_failures_ = 0;
      } catch (const std::exception& e) {
        // The store refused (busy past its timeout, disk full): the answers are kept and
        // recorded again; the operations stay claimed meanwhile, so nothing is sent twice.
        // After ten failures in a row the worker gives up: the run ends with the error, and
        // the operations, still in the outbox, are sent again by the next one.
        std::string why = secrets_.redact(e.what());
        std::fprintf(stderr, "weft: recording %zu answers from %s failed: %s\n", done.size(),
                     config_.connection.c_str(), why.c_str());
        std::unique_lock<std::mutex> lock(mu_);
        if (++record_failures_ >= 10) {
          fatal_ = "connection " + config_.connection + ": answers cannot be recorded: " + why;
          stopping_ = true;
          busy_ops_.clear();
          busy_entities_.clear();
          queue_.clear();
          work_cv_.notify_all();
          return;
        }
        for (auto& j : done) answered_.push_back(std::move(j));
        done_cv_.wait_for(lock, std::chrono::milliseconds(500));
        continue;
      }
    }

    size_t taken = 0;
    if (want > 0) {
      // Read with a connection of its own, without the store lock (it sees the last commit).
      std::vector<store::Operation> ops;
      int64_t now = util::now_ms();
      {
        std::unique_lock<std::mutex> lock(store_mu_, std::defer_lock);
        if (!reader_) lock.lock();
        store::Store& db = reader_ ? *reader_ : store_;
        // Operations already claimed are left out, and every operation of their entities:
        // another process on the same database (weft replay) may have replaced the one in
        // flight, and its replacement must still wait for the answer.
        ops = db.due(config_.tenant, config_.connection, now, want, busy_ops, busy_entities);
        auto next = db.next_due(config_.tenant, config_.connection);
        next_retry_ms_ = next && *next > now ? *next : 0;
      }
      if (!ops.empty()) {
        // Claimed under the store lock, after checking they still exist there: a batch that
        // committed after the read may have replaced some, and the pipeline's next batch
        // must see these as in flight before it plans.
        std::lock_guard<std::mutex> lock(store_mu_);
        std::vector<int64_t> ids;
        for (const auto& op : ops) ids.push_back(op.id);
        std::vector<int64_t> live = store_.existing_ops(ids);
        std::sort(live.begin(), live.end());
        std::vector<Job> jobs;
        for (auto& op : ops) {
          if (!std::binary_search(live.begin(), live.end(), op.id)) continue;
          Job j;
          j.remote_id = store_.entity(op.entity_id).remote_id;
          j.op = std::move(op);
          jobs.push_back(std::move(j));
        }
        std::lock_guard<std::mutex> l2(mu_);
        if (!stopping_) {  // once stopping, nothing new is claimed: it stays in the outbox
          for (auto& j : jobs) {
            busy_ops_.push_back(j.op.id);
            if (j.op.entity_id != 0) busy_entities_.push_back(j.op.entity_id);
            queue_.push_back(std::move(j));
            ++taken;
          }
        }
        if (taken) work_cv_.notify_all();
      }
    }
    if (!done.empty() || taken) continue;

    // Nothing to record or take: sleep until an answer, a wake-up, or the next retry is due.
    std::unique_lock<std::mutex> lock(mu_);
    int64_t wait_ms = 50;
    if (int64_t next = next_retry_ms_.load(); next > 0) wait_ms = std::clamp<int64_t>(next - util::now_ms(), 1, 50);
    done_cv_.wait_for(lock, std::chrono::milliseconds(wait_ms),
                      [&] { return woken_ || !answered_.empty() || (stopping_ && busy_ops_.empty()); });
    woken_ = false;
  }
}

void Worker::send_loop(std::unique_ptr<Destination> dest) {
  util::name_thread("weft-send");
  while (true) {
    Job job;
    std::vector<Job> batch;  // more jobs of the same kind, sent with `job` in one batch
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping
      if (stopping_) {
        // Not sent: it stays in the outbox for the next run.
        while (!queue_.empty()) {
          release(queue_.front());
          queue_.pop_front();
        }
        done_cv_.notify_all();
        return;
      }
      job = std::move(queue_.front());
      queue_.pop_front();
      // A backlog goes in batches where the API has them (a batch costs a few requests and
      // some latency, so a lone operation goes on its own).
      size_t max = dest->max_batch(job.op.kind);
      if (max > 1 && queue_.size() >= kMinBatch - 1) {
        for (auto it = queue_.begin(); it != queue_.end() && batch.size() + 1 < max;) {
          if (it->op.kind == job.op.kind) {
            batch.push_back(std::move(*it));
            it = queue_.erase(it);
          } else {
            ++it;
          }
        }
      }
    }
    bool lone = batch.empty();
    std::vector<Job> jobs;  // the lone job, or the batch's, in order
    if (lone) jobs.push_back(std::move(job));
    else {
      jobs.reserve(batch.size() + 1);
      jobs.push_back(std::move(job));
      for (auto& j : batch) jobs.push_back(std::move(j));
    }
    size_t lookups = 0;
    // Every request a lookup may make is counted, so a first load stays under the limit.
    for (const auto& j : jobs) lookups += j.op.guard.empty() ? 0 : static_cast<size_t>(dest->lookup_requests(j.op));
    // The connection's rate limit, in short sleeps so a stop is not held up.
    int tokens = (lone ? 1 : dest->batch_requests()) + static_cast<int>(lookups);
    bool stopped = false;
    while (tokens > 0 && !stopped) {
      int64_t wait = limiter_->acquire(util::now_ms());
      if (wait == 0) {
        --tokens;
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        stopped = stopping_;
      }
      if (!stopped) std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(wait, 100)));
    }
    if (stopped) {
      // Not sent: the operations stay in the outbox for the next run.
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& j : jobs) release(j);
      done_cv_.notify_all();
      continue;
    }
    // First writes of destination-owned fields: what the destination holds first. A job
    // whose lookup fails is answered with that failure (retried later), not sent.
    std::vector<Answer> failures(jobs.size());   // lookups and connector faults
    std::vector<Answer*> answer_of(jobs.size());  // each job's answer, in `got` or `failures`
    std::vector<size_t> sending;
    // A lookup answered 429 holds the connection (its limit is the connection's): the jobs
    // not sent yet go back to the outbox as they were, without spending an attempt, and
    // come again once the pause is over.
    std::vector<bool> held(jobs.size(), false);
    bool paused = false;
    // A lookup that got no answer at all (a timeout, a refused or reset connection) fails the
    // batch's other lookups with it, as a batch request that timed out would: asking again,
    // one lookup after another, would hold this connection for a timeout per job. The jobs
    // that need no lookup are still sent.
    std::optional<SendResult> unreachable;
    for (size_t i = 0; i < jobs.size(); ++i) {
      answer_of[i] = &failures[i];
      if (paused) {
        held[i] = true;
        continue;
      }
      if (unreachable && !jobs[i].op.guard.empty()) {
        failures[i].result = *unreachable;
        continue;
      }
      if (!jobs[i].op.guard.empty()) {
        try {
          if (!guard_first_write(*dest, jobs[i], &failures[i].result)) {
            const SendResult& f = failures[i].result;
            if (int64_t pause = connection_pause_ms(f)) {
              limiter_->pause_until(util::now_ms() + pause);
              paused = true;
            } else if (f.status == 0 && f.kind == SendResult::Kind::transient) {
              unreachable = SendResult{SendResult::Kind::transient, 0, std::nullopt,
                                       "not sent: an earlier lookup in its batch got no answer (" + f.message + ")"};
            }
            continue;
          }
        } catch (const std::exception& e) {
          failures[i].result = {SendResult::Kind::transient, 0, std::nullopt,
                                std::string("looking the record up before its first write: ") + e.what()};
          continue;
        }
      }
      sending.push_back(i);
    }
    if (paused) {
      for (size_t i : sending) held[i] = true;
      sending.clear();
    }
    // Answers stay where the connector made them: a json::value moved by assignment into
    // another keeps that one's storage and copies (batch answers live in an arena).
    std::vector<Answer> got;
    try {
      if (lone && !sending.empty()) {
        got.push_back(dest->send(jobs[0].op, jobs[0].remote_id));
      } else if (!sending.empty()) {
        std::vector<const store::Operation*> ops;
        for (size_t i : sending) ops.push_back(&jobs[i].op);
        got = dest->send_batch(ops);
        if (got.size() != ops.size())
          throw std::runtime_error(std::to_string(got.size()) + " answers for " + std::to_string(ops.size()) +
                                   " operations");
      }
      for (size_t k = 0; k < sending.size(); ++k) answer_of[sending[k]] = &got[k];
    } catch (const std::exception& e) {
      // A connector fault (an answer it could not read): retried like a transient error.
      SendResult failed{SendResult::Kind::transient, 0, std::nullopt, std::string("connector error: ") + e.what()};
      for (size_t i : sending) failures[i].result = failed;
    }
    // What the destination says it holds, flattened here rather than under the store lock.
    // The flattened values are copies that keep the storage they were parsed into: here
    // one arena for the whole batch, freed when its last job has been recorded.
    json::storage_ptr arena = json::make_shared_resource<json::monotonic_resource>();
    auto take_answer = [&](Job& j, Answer& a) {
      j.answer.result = std::move(a.result);
      j.answer.remote_id = std::move(a.remote_id);
      const Model* model = dest->model_for(j.op.kind);
      if (!model || !model->merge || j.op.entity_id == 0 || j.answer.result.kind != SendResult::Kind::ok) return;
      std::error_code ec;
      if (a.record.is_object()) {
        j.answered = pipeline::flatten(a.record.as_object(), model->atomic);
      } else if (!a.record_json.empty()) {
        json::value parsed = json::parse(a.record_json, ec, arena, workspace::json_parse_options(8));
        if (!ec && parsed.is_object()) j.answered = pipeline::flatten(parsed.as_object(), model->atomic);
      }
      // What was sent: the operation's own list, or else its body (the changes plus what
      // the destination finds the record by).
      json::value sent =
          json::parse(j.op.fields_json.empty() ? j.op.body : j.op.fields_json, ec, arena, workspace::json_parse_options(8));
      if (!ec && sent.is_object()) {
        if (j.op.fields_json.empty()) {
          j.sent = pipeline::flatten(sent.as_object(), model->atomic);
        } else {
          for (const auto& kv : sent.as_object()) j.sent.emplace(std::string(kv.key()), kv.value());
        }
      }
    };
    // A write answered 429 holds the whole connection too, not only these operations.
    int64_t pause = 0;
    for (size_t k : sending) pause = std::max(pause, connection_pause_ms(answer_of[k]->result));
    if (pause > 0) limiter_->pause_until(util::now_ms() + pause);
    for (size_t i = 0; i < jobs.size(); ++i)
      if (!held[i]) take_answer(jobs[i], *answer_of[i]);
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = 0; i < jobs.size(); ++i) {
        if (held[i]) {
          release(jobs[i]);
          woken_ = true;
        } else {
          answered_.push_back(std::move(jobs[i]));
        }
      }
    }
    done_cv_.notify_all();
  }
}

// Before the first write of destination-owned fields (the operation's guard): asks the
// destination what the record holds, and leaves out of the body each guarded field it
// holds a value for ("written only when empty there"). False, with *failed, when the
// destination could not say.
bool Worker::guard_first_write(Destination& dest, Job& j, SendResult* failed) {
  std::string held_json;
  if (!dest.held_record(j.op, &held_json, failed)) {
    failed->message = "looking the record up before its first write: " + failed->message;
    return false;
  }
  if (held_json.empty()) return true;  // the destination has no such record: all is written
  const Model* model = dest.model_for(j.op.kind);
  if (!model) return true;
  std::error_code ec;
  json::value held = json::parse(held_json, ec, {}, workspace::json_parse_options(8));
  json::value body = json::parse(j.op.body, ec, {}, workspace::json_parse_options(8));
  json::value guard = json::parse(j.op.guard, ec);
  if (!held.is_object() || !body.is_object() || !guard.is_array()) return true;
  pipeline::Flat there = pipeline::flatten(held.as_object(), model->atomic);
  pipeline::Flat fields = pipeline::flatten(body.as_object(), model->atomic);
  bool kept = false;
  j.flagged.clear();
  for (const auto& p : guard.as_array()) {
    // "path": destination-owned, not written over any value; {"flag": "path"}: flagged, not
    // written over another value, which is a conflict.
    const json::value* name = p.is_object() ? p.as_object().if_contains("flag") : &p;
    if (!name || !name->is_string()) continue;
    std::string path(name->as_string());
    auto it = there.find(path);
    if (it == there.end() || it->second.is_null()) continue;
    auto mine = fields.find(path);
    if (mine == fields.end()) continue;
    if (p.is_object()) {
      if (mine->second == it->second) continue;
      j.flagged.push_back({path, {mine->second, it->second}});
    }
    fields.erase(mine);
    kept = true;
  }
  if (kept) j.op.body = json::serialize(pipeline::unflatten(fields));
  return true;
}

void Worker::park(const store::Operation& op, const std::string& kind, const std::string& error,
                  const std::string& reason, int attempts) {
  store::Parked p;
  p.kind = kind;
  p.tenant = op.tenant;
  p.flow = op.flow;
  p.stage = "deliver";
  p.record_key = op.record_key;
  p.correlation_id = op.correlation_id;
  p.script_version = op.script_version;
  p.error = error;
  p.reason = reason;
  p.detail = json::serialize(json::object{{"operation", op.kind}, {"body", op.body}});
  p.inbox_seq = op.inbox_seq;  // the store copies the source record from the inbox
  p.version = op.version;
  p.attempts = attempts;
  store_.park(p, op.id);
}

void Worker::record(std::vector<Job>& done) {
  using Kind = SendResult::Kind;
  std::vector<size_t> recreated_ops;  // jobs whose destination record was made anew (committed)
  {
    std::lock_guard<std::mutex> lock(store_mu_);
    int64_t n_delivered = 0, n_retried = 0, n_dead_lettered = 0, n_rejected = 0, n_conflicts = 0;  // once committed
    std::vector<const char*> outcomes(done.size(), "");
    std::vector<store::AuditEvent> trail;  // written together at the end, in this transaction
    trail.reserve(done.size());
    store_.begin();
    try {
      for (size_t ji = 0; ji < done.size(); ++ji) {
        Job& j = done[ji];
        const store::Operation& op = j.op;
        const SendResult& res = j.answer.result;
        int64_t now = util::now_ms();
        store::AuditEvent ev{op.correlation_id, op.tenant, op.flow, op.record_key, "", "", now};
        std::string message = secrets_.redact(res.message);
        if (res.kind == Kind::ok) {
          store_.delivered(op.id);
          const Model* model = model_dest_->model_for(op.kind);
          if (model && model->merge && op.entity_id != 0) {  // a record with a shadow (not an event)
            // Another id than the one the destination had for the record: made anew there
            // (deleted, then this write created it with only the fields it carried).
            bool recreated = !j.remote_id.empty() && !j.answer.remote_id.empty() && j.answer.remote_id != j.remote_id;
            store::ShadowState sh = store_.shadow(op.entity_id);
            json::object shadow = recreated ? json::object() : pipeline::decode_shadow(sh.fields_json);
            if (recreated) recreated_ops.push_back(ji);
            pipeline::record_delivery(shadow, j.sent, j.answered, now, op.script_version);
            store_.set_shadow(op.entity_id, pipeline::encode_shadow(shadow));
            if (!j.answer.remote_id.empty() && j.answer.remote_id != j.remote_id)
              store_.set_remote_id(op.entity_id, j.answer.remote_id);
          }
          ev.stage = "delivered";
          ev.detail = op.kind + " " + std::to_string(res.status) +
                      (j.answer.remote_id.empty() ? "" : " destination id " + j.answer.remote_id);
          for (auto& [path, values] : j.flagged) {  // as the merge records a flagged conflict
            store::Conflict c;
            c.tenant = op.tenant;
            c.flow = op.flow;
            c.kind = "field";
            c.record_key = op.record_key;
            c.entity_id = op.entity_id;
            c.field = path;
            c.detail = json::serialize(
                json::object{{"source", values.first}, {"destination", values.second}, {"last_synced", nullptr}});
            c.correlation_id = op.correlation_id;
            store_.add_conflict(c);
            ev.detail += "; " + path + " not written: the destination holds another value (conflict " +
                         std::to_string(c.id) + ")";
            ++n_conflicts;
          }
          ++n_delivered;
          outcomes[ji] = "delivered";
        } else if (res.kind == Kind::transient) {
          const RetryPolicy& p = policy(op.flow);
          int attempts = op.attempts + 1;
          int64_t first = op.first_attempt_ms ? op.first_attempt_ms : now;
          int64_t next = now + backoff_ms(p, attempts, res.retry_after_ms, rng_);
          std::string error = (res.status ? std::to_string(res.status) + " " : "") + message;
          if (may_retry(p, attempts, first, next)) {
            store_.reschedule(op.id, attempts, first, next, error);
            ev.stage = "retry";
            ev.detail = "attempt " + std::to_string(attempts) + ": " + error + "; next at " + util::iso8601_ms(next);
            ++n_retried;
            outcomes[ji] = "retried";
          } else {
            park(op, "dead_letter", res.status ? "http " + std::to_string(res.status) : "no answer", message,
                 attempts);
            ev.stage = "dead_letter";
            ev.detail = "after " + std::to_string(attempts) + " attempts: " + error;
            ++n_dead_lettered;
            outcomes[ji] = "dead_lettered";
          }
        } else {
          park(op, "rejection", "http " + std::to_string(res.status), message, op.attempts + 1);
          ev.stage = "rejected";
          ev.detail = "the destination refused it: " + std::to_string(res.status) + " " + message;
          ++n_rejected;
          outcomes[ji] = "rejected";
        }
        trail.push_back(std::move(ev));
      }
      store_.audit(trail);
      store_.commit();
      counts_.delivered += n_delivered;
      counts_.conflicts += n_conflicts;
      counts_.retried += n_retried;
      counts_.dead_lettered += n_dead_lettered;
      counts_.rejected += n_rejected;
      if (config_.on_answer) {
        int64_t now = util::now_ms();
        for (size_t ji = 0; ji < done.size(); ++ji) config_.on_answer(done[ji].op, outcomes[ji], now);
      }
    } catch (...) {
      store_.rollback();
      throw;
    }
  }
  // Outside the store lock: the caller takes it to queue the record again.
  if (config_.on_recreated)
    for (size_t ji : recreated_ops) config_.on_recreated(done[ji].op);
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& j : done) release(j);
}

void Worker::release(const Job& j) {
  erase_one(busy_ops_, j.op.id);
  if (j.op.entity_id != 0) erase_one(busy_entities_, j.op.entity_id);
}

}  // namespace weft::delivery
