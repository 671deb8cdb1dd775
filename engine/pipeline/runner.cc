#include "engine/pipeline/runner.h"

#include <boost/json.hpp>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "connectors/commercetools/notifications.h"
#include "connectors/registry.h"
#include "engine/util/ids.h"
#include "engine/util/time.h"

namespace weft::pipeline {

namespace json = boost::json;

namespace {
const json::object& connection_config(const workspace::TenantVersion& t, const std::string& name) {
  return t.config.at("connections").as_object().at(name).as_object();
}
// Where an inbox record came from, for the audit trail.
std::string origin(const store::InboxRecord& rec) {
  std::string how = rec.message_id.rfind("pull:", 0) == 0     ? "pulled"
                    : rec.message_id.rfind("replay:", 0) == 0 ? "replayed"
                                                              : "received";
  return how + " from " + rec.connection + " at " + util::iso8601_ms(rec.received_ms);
}

}  // namespace

Runner::Runner(std::shared_ptr<const workspace::TenantVersion> tenant, store::Store& store, std::mutex& store_mu,
               workspace::Secrets& secrets, std::vector<std::string> flows,
               std::function<std::unique_ptr<store::Store>()> open_reader)
    : tenant_(std::move(tenant)),
      store_(store),
      store_mu_(store_mu),
      secrets_(secrets),
      flows_(std::move(flows)),
      open_reader_(open_reader) {
  if (flows_.empty())
    for (const auto& [name, f] : tenant_->flows)
      if (f.enabled) flows_.push_back(name);
  pipeline_ = std::make_unique<Pipeline>(tenant_, store_);
  // Sources fail here too, before anything runs, if they cannot be used (an unset secret).
  for (const auto& name : flows_) {
    const workspace::Flow* f = tenant_->flow(name);
    if (!f) continue;
    const json::object& c = connection_config(*tenant_, f->source_connection);
    if (auto* sys = c.if_contains("system"); sys && *sys == "commercetools")
      connectors::make_commercetools(f->source_connection, c, secrets_);
  }

  // One worker per destination connection, with each flow's retry policy.
  std::map<std::string, delivery::WorkerConfig> configs;
  std::map<std::string, std::string> entity_of;
  for (const auto& [name, f] : tenant_->flows) {
    if (!f.enabled) continue;
    auto& wc = configs[f.destination_connection];
    wc.tenant = tenant_->tenant;
    wc.connection = f.destination_connection;
    const json::object& flow_cfg = tenant_->config.at("flows").as_object().at(name).as_object();
    auto* retry = flow_cfg.if_contains("retry");
    wc.retry[name] = delivery::retry_policy_from(retry && retry->is_object() ? &retry->as_object() : nullptr);
    entity_of[f.destination_connection] = f.destination_entity;
  }
  for (auto& [conn, wc] : configs) {
    const json::object& c = connection_config(*tenant_, conn);
    wc.concurrency = connectors::connection_concurrency(c);
    auto [requests, per_ms] = connectors::connection_rate_limit(c);
    wc.rate_requests = requests;
    wc.rate_per_ms = per_ms;
    std::string entity = entity_of[conn];
    auto* sec = &secrets_;
    json::object cfg = c;
    // Fails here, before anything runs, if the connection cannot be used for every flow's
    // entity (one worker sends them all).
    for (const auto& [name, f] : tenant_->flows)
      if (f.enabled && f.destination_connection == conn) connectors::make_destination(conn, cfg, f.destination_entity, *sec);
    auto factory = [conn, cfg, entity, sec] { return connectors::make_destination(conn, cfg, entity, *sec); };
    workers_[conn] = std::make_unique<delivery::Worker>(wc, factory, store_, store_mu_, secrets_,
                                                        open_reader ? open_reader() : nullptr);
  }
}

Runner::~Runner() {
  {
    std::lock_guard<std::mutex> lock(map_mu_);
    map_stop_ = true;
  }
  map_cv_.notify_all();
  if (mapper_.joinable()) mapper_.join();
  stop_delivery();
}

void Runner::start_delivery() {
  for (auto& [_, w] : workers_) w->start();
}

void Runner::stop_delivery() {
  for (auto& [_, w] : workers_) w->stop();
}

void Runner::pull(const std::string& flow_name, const std::atomic<bool>& stop, int page_size) {
  const workspace::Flow* flow = tenant_->flow(flow_name);
  if (!flow) throw std::runtime_error("no flow " + flow_name);
  if (flow->source_entity != "customer")
    throw connectors::ConfigError("flow " + flow_name + ": weft can pull only commercetools customers yet, not " +
                                  flow->source_entity);
  auto source = connectors::make_commercetools(flow->source_connection,
                                               connection_config(*tenant_, flow->source_connection), secrets_);
  std::string cursor;
  {
    std::lock_guard<std::mutex> lock(store_mu_);
    cursor = store_.cursor(tenant_->tenant, flow_name).value_or("");
  }
  int failures = 0;
  while (!stop) {
    connectors::commercetools::Page page;
    connectors::commercetools::Error err;
    if (!source->customers_since(cursor, page_size, &page, &err)) {
      if (!err.transient || ++failures > 8)
        throw std::runtime_error("pulling " + flow_name + " from " + flow->source_connection + ": " +
                                 secrets_.redact(err.message));
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(250 << failures, 10000)));
      continue;
    }
    failures = 0;
    // The page's records and the cursor after them are durable together.
    {
      std::lock_guard<std::mutex> lock(store_mu_);
      store_.begin();
      try {
        int64_t added = 0;
        for (size_t i = 0; i < page.records.size(); ++i) {
          store::InboxRecord r;
          r.tenant = tenant_->tenant;
          r.connection = flow->source_connection;
          r.entity = flow->source_entity;
          r.flow = flow_name;
          r.message_id = "pull:" + flow_name + ":" + page.versions[i];
          r.correlation_id = util::new_correlation_id();
          r.payload = std::move(page.records[i]);
          // The pipeline's audit entry says where it came from (one row per stage is the
          // costliest write of the path; "received" is folded into the next).
          if (store_.inbox_add(r)) ++added;
        }
        if (page.cursor != cursor) store_.set_cursor(tenant_->tenant, flow_name, page.cursor);
        store_.commit();
        counts_.pulled += added;
        inbox_writes_++;
      } catch (...) {
        store_.rollback();
        throw;
      }
    }
    cursor = page.cursor;
    if (!page.more) break;
    // Keep the inbox from running far ahead of the pipeline: bounded disk, not memory.
    while (!stop) {
      int64_t backlog;
      {
        std::lock_guard<std::mutex> lock(store_mu_);
        backlog = store_.inbox_backlog(tenant_->tenant);
      }
      if (backlog < 20000) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

std::vector<store::InboxRecord> Runner::read_inbox(store::Store* reader, int64_t after, size_t limit) {
  if (reader) return reader->inbox_next(limit, tenant_->tenant, after);
  std::lock_guard<std::mutex> lock(store_mu_);
  return store_.inbox_next(limit, tenant_->tenant, after);
}

void Runner::map_loop() {
  try {
    std::unique_ptr<store::Store> reader = open_reader_ ? open_reader_() : nullptr;
    int64_t after = 0;  // inbox records up to here are prepared or committed
    while (true) {
      {
        std::unique_lock<std::mutex> lock(map_mu_);
        map_cv_.wait(lock, [&] { return map_stop_ || prepared_.size() < kAhead; });
        if (map_stop_) return;
      }
      int64_t writes = inbox_writes_.load();
      std::vector<store::InboxRecord> in = read_inbox(reader.get(), after, batch_size_);
      if (in.empty()) {
        std::unique_lock<std::mutex> lock(map_mu_);
        map_idle_ = true;
        idle_seen_writes_ = writes;
        map_cv_.notify_all();
        map_cv_.wait_for(lock, std::chrono::milliseconds(5), [&] { return map_stop_; });
        continue;
      }
      after = in.back().seq;
      std::vector<PreparedRecord> out;
      out.reserve(in.size());
      for (auto& rec : in) {
        PreparedRecord pr;
        pr.rec = std::move(rec);
        resolve(pr);
        Options opts;
        if (pr.stop.empty())
          for (const workspace::Flow* flow : pipeline_->flows_for(pr.rec))
            pr.flows.push_back(pipeline_->prepare(*flow, pr.rec, opts));
        out.push_back(std::move(pr));
      }
      {
        std::lock_guard<std::mutex> lock(map_mu_);
        prepared_.push_back(std::move(out));
        map_idle_ = false;
      }
      map_cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(map_mu_);
    map_error_ = std::current_exception();
    map_cv_.notify_all();
  }
}

void Runner::resolve(PreparedRecord& pr) {
  store::InboxRecord& rec = pr.rec;
  if (rec.message_id.rfind("pull:", 0) == 0) return;
  const json::object& conns = tenant_->config.at("connections").as_object();
  auto* conn = conns.if_contains(rec.connection);
  if (!conn || !conn->is_object()) {
    pr.stop = "reject";
    pr.stop_reason = "no connection " + rec.connection + " in tenant.json";
    return;
  }
  auto* system = conn->as_object().if_contains("system");
  if (!system || *system != "commercetools") return;  // other sources: records as received
  using connectors::commercetools::Notification;
  Notification n = connectors::commercetools::parse_notification(rec.payload);
  switch (n.kind) {
    case Notification::Kind::resource:
      if (n.what != "resource") rec.payload = std::move(n.payload);
      return;
    case Notification::Kind::deleted:
      pr.stop = "skip";
      pr.stop_reason = n.type_id + " " + n.id + " was deleted at the source (" + n.what + ")";
      return;
    case Notification::Kind::invalid:
      pr.stop = "reject";
      pr.stop_reason = "not a commercetools record or notification: " + n.reason;
      return;
    case Notification::Kind::fetch:
      break;
  }
  if (n.type_id != "customer") {
    pr.stop = "reject";
    pr.stop_reason = n.what + " for " + n.type_id + " " + n.id + ": weft can fetch only customers yet";
    return;
  }
  auto& source = sources_[rec.connection];
  std::string text;
  connectors::commercetools::Error err;
  bool ok = false;
  try {
    if (!source) source = connectors::make_commercetools(rec.connection, conn->as_object(), secrets_);
    for (int attempt = 0; attempt < 3 && !ok; ++attempt) {
      ok = source->customer(n.id, &text, &err);
      if (!ok && (!err.transient || err.status == 404)) break;
      if (!ok) std::this_thread::sleep_for(std::chrono::milliseconds(200 << attempt));
    }
  } catch (const std::exception& e) {
    err.message = e.what();
  }
  if (ok) {
    rec.payload = std::move(text);
  } else if (err.status == 404) {
    pr.stop = "skip";
    pr.stop_reason = "customer " + n.id + " is gone at the source (" + n.what + ", fetch answered 404)";
  } else {
    // The source did not answer: the record stays in the inbox for the next run.
    pr.stop = "defer";
    pr.stop_reason = "fetching customer " + n.id + " for " + n.what + " failed: " + secrets_.redact(err.message) +
                     "; it stays in the inbox for the next run";
  }
}

size_t Runner::process_batch(size_t batch) {
  if (!mapper_.joinable()) {
    batch_size_ = batch;
    mapper_ = std::thread(&Runner::map_loop, this);
  }
  // The next prepared batch; none when the mapping thread has found the inbox empty since the
  // last record was added to it.
  std::vector<PreparedRecord> ready;
  {
    std::unique_lock<std::mutex> lock(map_mu_);
    map_cv_.wait_for(lock, std::chrono::milliseconds(20), [&] {
      return !prepared_.empty() || map_error_ || (map_idle_ && idle_seen_writes_ == inbox_writes_.load());
    });
    if (map_error_) std::rethrow_exception(map_error_);
    if (prepared_.empty()) return (map_idle_ && idle_seen_writes_ == inbox_writes_.load()) ? 0 : 1;
    ready = std::move(prepared_.front());
    prepared_.pop_front();
  }
  map_cv_.notify_all();

  {
    std::lock_guard<std::mutex> lock(store_mu_);
    Options opts;
    for (auto& [_, w] : workers_) {
      auto f = w->in_flight();
      opts.in_flight.insert(opts.in_flight.end(), f.begin(), f.end());
    }
    // Counted here and added once the batch has committed.
    int64_t processed = 0, mapped = 0, skipped = 0, stale = 0, rejected = 0, planned = 0, unchanged = 0,
            conflicts = 0, deferred = 0;
    store_.begin();
    try {
      for (auto& pr : ready) {
        const store::InboxRecord& rec = pr.rec;
        opts.replay = rec.message_id.rfind("replay:", 0) == 0;  // see weft replay
        if (pr.stop == "defer") {
          // Not done: the record stays in the inbox and is taken again by the next run.
          ++deferred;
          store_.audit({rec.correlation_id, rec.tenant, rec.flow, "", "deferred", pr.stop_reason + " [" + origin(rec) + "]", 0});
          continue;
        }
        if (pr.stop == "skip") {
          ++skipped;
          store_.audit({rec.correlation_id, rec.tenant, rec.flow, "", "skipped", pr.stop_reason + " [" + origin(rec) + "]", 0});
        } else if (pr.stop == "reject") {
          store::Parked p;
          p.kind = "rejection";
          p.tenant = rec.tenant;
          p.flow = rec.flow;
          p.stage = "receive";
          p.record_key = rec.message_id;
          p.correlation_id = rec.correlation_id;
          p.script_version = tenant_->code.version;
          p.error = "source";
          p.reason = pr.stop_reason;
          p.detail = json::serialize(json::object{{"connection", rec.connection}, {"entity", rec.entity}});
          p.source = rec.payload;
          store_.park(p);
          ++rejected;
          store_.audit({rec.correlation_id, rec.tenant, rec.flow, "", "rejected", "receive: " + pr.stop_reason, 0});
        } else if (pr.flows.empty()) {
          ++skipped;
          store_.audit({rec.correlation_id, rec.tenant, rec.flow, "", "skipped",
                        "no enabled flow takes " + (rec.entity.empty() ? std::string("records") : rec.entity) +
                            " from " + rec.connection + " [" + origin(rec) + "]",
                        0});
        }
        for (Prepared& p : pr.flows) {
          RecordResult r = pipeline_->commit(p, opts);
          using S = RecordResult::Status;
          std::string detail = r.reason;
          switch (r.status) {
            case S::planned:
              ++mapped;
              ++planned;
              detail = "operation " + std::to_string(r.op.id) + " (" + r.op.kind + "), " + r.identity +
                       (r.superseded ? ", replacing waiting operation " + std::to_string(r.superseded) : "");
              break;
            case S::unchanged: ++mapped; ++unchanged; break;
            case S::stale: ++stale; break;
            case S::skipped: ++skipped; break;
            case S::rejected:
              ++rejected;
              detail = r.parked.stage + ": " + r.parked.reason;
              break;
            case S::conflict: ++mapped; ++conflicts; break;
          }
          if (!r.conflicts.empty() && r.status != S::conflict) ++conflicts;
          store_.audit({rec.correlation_id, rec.tenant, p.flow->name, r.key, status_name(r.status),
                        detail + " [" + origin(rec) + ", script " + r.script_version + "]", 0});
        }
        store_.inbox_done(rec.seq);
        ++processed;
      }
      store_.commit();
    } catch (...) {
      store_.rollback();
      throw;
    }
    counts_.processed += processed;
    counts_.mapped += mapped;
    counts_.skipped += skipped;
    counts_.stale += stale;
    counts_.rejected += rejected;
    counts_.planned += planned;
    counts_.unchanged += unchanged;
    counts_.conflicts += conflicts;
    counts_.deferred += deferred;
  }
  for (auto& [_, w] : workers_) w->wake();
  return ready.size();
}

bool Runner::delivery_drained() {
  for (auto& [_, w] : workers_)
    if (!w->drained()) return false;
  return true;
}

int64_t Runner::next_retry_ms() const {
  int64_t best = 0;
  for (const auto& [_, w] : workers_) {
    int64_t t = w->next_retry_ms();
    if (t > 0 && (best == 0 || t < best)) best = t;
  }
  return best;
}

int64_t Runner::sum(std::atomic<int64_t> delivery::DeliveryCounts::*field) const {
  int64_t n = 0;
  for (const auto& [_, w] : workers_) n += (w->counts().*field).load();
  return n;
}

}  // namespace weft::pipeline
