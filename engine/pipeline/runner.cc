#include "engine/pipeline/runner.h"

#include <boost/json.hpp>
#include <array>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include <spdlog/spdlog.h>

#include "connectors/commercetools/notifications.h"
#include "connectors/registry.h"
#include "engine/util/ids.h"
#include "engine/util/thread_name.h"
#include "engine/util/time.h"

namespace weft::pipeline {

namespace json = boost::json;

namespace {
const json::object& connection_config(const workspace::TenantVersion& t, const std::string& name) {
  return t.config.at("connections").as_object().at(name).as_object();
}
// Where an inbox record came from, for the audit trail.
std::string origin(const store::InboxRecord& rec) {
  std::string how = rec.message_id.rfind("pull:", 0) == 0        ? "pulled"
                    : rec.message_id.rfind("replay:", 0) == 0    ? "replayed"
                    : rec.message_id.rfind("backfill:", 0) == 0  ? "backfilled"
                    : rec.message_id.rfind("reconcile:", 0) == 0 ? "re-queued by reconciliation"
                                                                 : "received";
  return how + " from " + rec.connection + " at " + util::iso8601_ms(rec.received_ms);
}

}  // namespace

Runner::Runner(std::shared_ptr<const workspace::TenantVersion> tenant, store::Store& store, std::mutex& store_mu,
               workspace::Secrets& secrets, std::vector<std::string> flows,
               std::function<std::unique_ptr<store::Store>()> open_reader, util::Metrics* metrics)
    : tenant_(std::move(tenant)),
      store_(store),
      store_mu_(store_mu),
      secrets_(secrets),
      flows_(std::move(flows)),
      metrics_(metrics),
      open_reader_(open_reader) {
  if (flows_.empty())
    for (const auto& [name, f] : tenant_->flows)
      if (f.enabled) flows_.push_back(name);
  pipeline_ = std::make_unique<Pipeline>(tenant_, store_);
  if (const char* ms = std::getenv("WEFT_DEFERRED_RETRY_MS"); ms && std::atoll(ms) > 0) retry_deferred_ms_ = std::atoll(ms);
  // Fails here, before anything runs, if a connection cannot be used (an unset secret).
  check_connections(*tenant_, flows_, secrets_);

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
    if (metrics_) {
      util::Metrics* m = metrics_;
      std::string tenant = tenant_->tenant;
      wc.on_answer = [m, tenant](const store::Operation& op, const char* outcome, int64_t now) {
        m->add("weft_deliveries_total", {{"tenant", tenant}, {"flow", op.flow}, {"outcome", outcome}}, 1,
               "Answers from destinations by outcome: delivered, retried, dead_lettered, rejected");
        if (std::string_view(outcome) == "delivered" && op.created_ms > 0)
          m->observe("weft_delivery_latency_seconds", {{"tenant", tenant}, {"flow", op.flow}},
                     static_cast<double>(now - op.created_ms) / 1000.0,
                     "From planning an operation to its delivery being recorded");
      };
    }
    wc.on_recreated = [this](const store::Operation& op) { requeue_recreated(op); };
    std::string entity = entity_of[conn];
    auto* sec = &secrets_;
    json::object cfg = c;
    auto factory = [conn, cfg, entity, sec] { return connectors::make_destination(conn, cfg, entity, *sec); };
    workers_[conn] = std::make_unique<delivery::Worker>(wc, factory, store_, store_mu_, secrets_,
                                                        open_reader ? open_reader() : nullptr);
  }
}

void Runner::check_connections(const workspace::TenantVersion& tenant, const std::vector<std::string>& flows,
                               workspace::Secrets& secrets) {
  for (const auto& [name, f] : tenant.flows) {
    bool runs = flows.empty() ? f.enabled : std::find(flows.begin(), flows.end(), name) != flows.end();
    if (!runs) continue;
    const json::object& c = connection_config(tenant, f.source_connection);
    if (auto* sys = c.if_contains("system"); sys && *sys == "commercetools")
      connectors::make_commercetools(f.source_connection, c, secrets);
  }
  // Every enabled flow's destination, for its entity: one worker per connection sends them all.
  for (const auto& [name, f] : tenant.flows)
    if (f.enabled)
      connectors::make_destination(f.destination_connection, connection_config(tenant, f.destination_connection),
                                   f.destination_entity, secrets);
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
  PullSpec spec;
  spec.cursor_key = flow_name;
  spec.id_prefix = "pull:" + flow_name + ":";
  spec.page_size = page_size;
  pull_flow(*tenant_, flow_name, store_, store_mu_, secrets_, spec, stop, [this](int64_t added) {
    counts_.pulled += added;
    inbox_writes_++;
  });
}

bool pullable(const workspace::TenantVersion& tenant, const std::string& flow_name, std::string* why) {
  const workspace::Flow* flow = tenant.flow(flow_name);
  if (!flow) {
    *why = "no such flow";
    return false;
  }
  if (flow->source_entity != "customer") {
    *why = "weft can pull only commercetools customers yet, not " + flow->source_entity;
    return false;
  }
  return true;
}

int64_t pull_flow(const workspace::TenantVersion& tenant, const std::string& flow_name, store::Store& store,
                  std::mutex& store_mu, workspace::Secrets& secrets, const PullSpec& spec,
                  const std::atomic<bool>& stop, const std::function<void(int64_t)>& on_page) {
  const workspace::Flow* flow = tenant.flow(flow_name);
  if (!flow) throw std::runtime_error("no flow " + flow_name);
  if (flow->source_entity != "customer")
    throw connectors::ConfigError("flow " + flow_name + ": weft can pull only commercetools customers yet, not " +
                                  flow->source_entity);
  auto source = connectors::make_commercetools(flow->source_connection,
                                               connection_config(tenant, flow->source_connection), secrets);
  std::string cursor;
  {
    std::lock_guard<std::mutex> lock(store_mu);
    cursor = store.cursor(tenant.tenant, spec.cursor_key).value_or(spec.start_cursor);
  }
  int failures = 0;
  int64_t total = 0;
  while (!stop) {
    connectors::commercetools::Page page;
    connectors::commercetools::Error err;
    if (!source->customers_since(cursor, spec.page_size, &page, &err)) {
      if (!err.transient || ++failures > 8)
        throw std::runtime_error("pulling " + flow_name + " from " + flow->source_connection + ": " +
                                 secrets.redact(err.message));
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(250 << failures, 10000)));
      continue;
    }
    failures = 0;
    // The page's records and the cursor after them are durable together.
    int64_t added = 0;
    {
      std::lock_guard<std::mutex> lock(store_mu);
      store.begin();
      try {
        for (size_t i = 0; i < page.records.size(); ++i) {
          store::InboxRecord r;
          r.tenant = tenant.tenant;
          r.connection = flow->source_connection;
          r.entity = flow->source_entity;
          r.flow = flow_name;
          r.message_id = spec.id_prefix + page.versions[i];
          r.correlation_id = util::new_correlation_id();
          r.payload = std::move(page.records[i]);
          // The pipeline's audit entry says where it came from (one row per stage is the
          // costliest write of the path; "received" is folded into the next).
          if (store.inbox_add(r)) ++added;
        }
        if (page.cursor != cursor) store.set_cursor(tenant.tenant, spec.cursor_key, page.cursor);
        store.commit();
      } catch (...) {
        store.rollback();
        throw;
      }
    }
    total += added;
    if (on_page) on_page(added);
    cursor = page.cursor;
    if (!page.more) break;
    if (spec.pause_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(spec.pause_ms));
    // Keep the inbox from running far ahead of the pipeline: bounded disk, not memory.
    while (!stop) {
      int64_t backlog;
      {
        std::lock_guard<std::mutex> lock(store_mu);
        backlog = store.inbox_backlog(tenant.tenant);
      }
      if (backlog < spec.max_backlog) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  return total;
}

void open_notification(const workspace::TenantVersion& v, store::InboxRecord& r) {
  // A record that came by webhook is kept as received: a commercetools notification. An
  // inbox record with a flow is taken as the record itself, so the notification is opened
  // here (one that does not carry the resource goes without a flow, for the pipeline to
  // fetch it, as a webhook's record would).
  if (r.flow.empty()) return;
  auto* conns = v.config.if_contains("connections");
  auto* conn = conns && conns->is_object() ? conns->as_object().if_contains(r.connection) : nullptr;
  auto* system = conn && conn->is_object() ? conn->as_object().if_contains("system") : nullptr;
  if (!system || *system != "commercetools") return;
  using connectors::commercetools::Notification;
  Notification note = connectors::commercetools::parse_notification(r.payload);
  if (note.kind == Notification::Kind::resource && note.what != "resource") r.payload = std::move(note.payload);
  else if (note.kind == Notification::Kind::fetch) r.flow.clear();
}

int64_t requeue_parked(store::Store& s, const workspace::TenantVersion& v, const std::vector<store::Parked>& items,
                       const std::string& via, std::vector<std::string>* skipped) {
  int64_t n = 0;
  const std::string& tenant = v.tenant;
  for (const auto& p : items) {
    if (p.replayed_ms) continue;
    store::InboxRecord r;
    r.tenant = tenant;
    if (p.flow.empty()) {  // refused on arrival, before any flow took it: as received
      json::value d = json::parse(p.detail);
      r.connection = json::value_to<std::string>(d.at("connection"));
      r.entity = json::value_to<std::string>(d.at("entity"));
    } else if (const workspace::Flow* f = v.flow(p.flow)) {
      r.connection = f->source_connection;
      r.entity = f->source_entity;
      r.flow = p.flow;
    } else {
      if (skipped) skipped->push_back("parked record " + std::to_string(p.id) + " is for flow " + p.flow +
                                      ", which no longer exists; left as it is");
      continue;
    }
    r.message_id = util::replay_id(p.id, util::now_ms(), p.record_key);
    r.received_ms = p.received_ms;  // 0 (not known): now
    r.correlation_id = p.correlation_id;
    r.payload = p.source;
    if (!s.mark_replayed(p.id)) continue;  // replayed since it was read
    open_notification(v, r);
    if (!s.inbox_add(r)) {
      if (skipped) skipped->push_back("parked record " + std::to_string(p.id) + ": message id " + r.message_id +
                                      " is in the inbox already");
      continue;
    }
    s.audit({p.correlation_id, tenant, p.flow, p.record_key, "replay",
             "replaying " + p.kind + " " + std::to_string(p.id) + " with script " + v.version + " (" + via + ")", 0});
    ++n;
  }
  return n;
}

std::vector<store::InboxRecord> Runner::read_inbox(store::Store* reader, int64_t after, size_t limit) {
  if (reader) return reader->inbox_next(limit, tenant_->tenant, after);
  std::lock_guard<std::mutex> lock(store_mu_);
  return store_.inbox_next(limit, tenant_->tenant, after);
}

void Runner::map_loop() {
  util::name_thread("weft-map");
  try {
    std::unique_ptr<store::Store> reader = open_reader_ ? open_reader_() : nullptr;
    int64_t after = 0;  // inbox records up to here are prepared or committed
    bool gathered = false;
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
        // Records deferred (their source did not answer) are still in the inbox, behind
        // `after`: once nothing is prepared or being committed, and a while has passed, read
        // the inbox from its start again so they are tried again (weft serve runs for days).
        if (deferred_since_ms_ && util::now_ms() - deferred_since_ms_ >= retry_deferred_ms_ && prepared_.empty() &&
            !committing_) {
          deferred_since_ms_ = 0;
          after = 0;
          continue;
        }
        map_idle_ = true;
        idle_seen_writes_ = writes;
        map_cv_.notify_all();
        map_cv_.wait_for(lock, std::chrono::milliseconds(5), [&] { return map_stop_; });
        continue;
      }
      if (int ms = gather_ms_.load(); ms > 0 && in.size() < batch_size_ && !gathered) {
        // Short: wait for more, then read again from the same place.
        gathered = true;
        std::unique_lock<std::mutex> lock(map_mu_);
        map_cv_.wait_for(lock, std::chrono::milliseconds(ms), [&] { return map_stop_; });
        continue;
      }
      gathered = false;
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
  if (!rec.flow.empty()) return;  // pulled (backfilled, re-queued): the record itself
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
    committing_ = true;
  }
  map_cv_.notify_all();
  struct Committed {  // however the commit ends
    Runner& r;
    ~Committed() {
      std::lock_guard<std::mutex> lock(r.map_mu_);
      r.committing_ = false;
    }
  } committed{*this};

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
    std::map<std::pair<std::string, std::string>, int64_t> by_flow;   // (flow, status) -> records
    std::map<std::array<std::string, 3>, int64_t> rejections;        // (flow, stage, error) -> records
    // The batch's audit rows and done marks are written together at its end (fewer
    // statements), in the same transaction: all or nothing, as before.
    std::vector<store::AuditEvent> trail;
    std::vector<int64_t> done;
    trail.reserve(ready.size());
    done.reserve(ready.size());
    store_.begin();
    try {
      for (auto& pr : ready) {
        const store::InboxRecord& rec = pr.rec;
        // Replays of parked records, backfills and reconciliation go through again even at
        // the version already applied (see weft replay, engine/serve/jobs.cc).
        opts.replay = util::is_rerun_id(rec.message_id);
        if (pr.stop == "defer") {
          // Not done: the record stays in the inbox and is taken again by the next run.
          ++deferred;
          ++by_flow[{rec.flow, "deferred"}];
          trail.push_back({rec.correlation_id, rec.tenant, rec.flow, "", "deferred", pr.stop_reason + " [" + origin(rec) + "]", 0});
          continue;
        }
        if (pr.stop == "skip") {
          ++skipped;
          ++by_flow[{rec.flow, "skipped"}];
          trail.push_back({rec.correlation_id, rec.tenant, rec.flow, "", "skipped", pr.stop_reason + " [" + origin(rec) + "]", 0});
        } else if (pr.stop == "reject") {
          store::Parked p;
          p.kind = "rejection";
          p.tenant = rec.tenant;
          p.flow = rec.flow;
          p.stage = "receive";
          p.record_key = std::string(util::replayed_key(rec.message_id));  // (a replay's: the first message's)
          p.received_ms = rec.received_ms;
          p.correlation_id = rec.correlation_id;
          p.script_version = tenant_->code.version;
          p.error = "source";
          p.reason = pr.stop_reason;
          p.detail = json::serialize(json::object{{"connection", rec.connection}, {"entity", rec.entity}});
          p.source = rec.payload;
          store_.park(p);
          ++rejected;
          ++rejections[{rec.flow, "receive", "source"}];
          trail.push_back({rec.correlation_id, rec.tenant, rec.flow, "", "rejected", "receive: " + pr.stop_reason, 0});
        } else if (pr.flows.empty()) {
          ++skipped;
          ++by_flow[{rec.flow, "skipped"}];
          trail.push_back({rec.correlation_id, rec.tenant, rec.flow, "", "skipped",
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
              ++rejections[{p.flow->name, r.parked.stage, r.parked.error}];
              detail = r.parked.stage + ": " + r.parked.reason;
              break;
            case S::conflict: ++mapped; ++conflicts; break;
          }
          if (!r.conflicts.empty() && r.status != S::conflict) ++conflicts;
          ++by_flow[{p.flow->name, status_name(r.status)}];
          trail.push_back({rec.correlation_id, rec.tenant, p.flow->name, r.key, status_name(r.status),
                           detail + " [" + origin(rec) + ", script " + r.script_version + "]", 0});
        }
        done.push_back(rec.seq);
        ++processed;
      }
      store_.audit(trail);
      store_.inbox_done(done);
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
    if (deferred > 0) {
      std::lock_guard<std::mutex> lock(map_mu_);
      if (!deferred_since_ms_) deferred_since_ms_ = util::now_ms();
    }
    if (metrics_) {
      const std::string& t = tenant_->tenant;
      for (const auto& [k, n] : by_flow)
        metrics_->add("weft_records_total", {{"tenant", t}, {"flow", k.first}, {"status", k.second}},
                      static_cast<double>(n),
                      "Records through the pipeline by result: planned, unchanged, stale, skipped, rejected, conflict");
      for (const auto& [k, n] : rejections)
        metrics_->add("weft_rejections_total", {{"tenant", t}, {"flow", k[0]}, {"stage", k[1]}, {"error", k[2]}},
                      static_cast<double>(n),
                      "Rejected records by stage and error (script errors and limit hits are stage map)");
    }
  }
  for (auto& [_, w] : workers_) w->wake();
  return ready.size();
}

void Runner::requeue_recreated(const store::Operation& op) {
  int64_t now = util::now_ms();
  {
    std::lock_guard<std::mutex> lock(recreated_mu_);
    int64_t& last = recreated_at_[op.flow + '\0' + op.record_key];
    if (last && now - last < 600000) return;
    last = now;
    if (recreated_at_.size() > 100000) recreated_at_.clear();  // bounded
  }
  try {
    std::lock_guard<std::mutex> lock(store_mu_);
    std::optional<store::InboxRecord> rec = store_.applied_record(tenant_->tenant, op.flow, op.record_key);
    store_.begin();
    try {
      if (rec) {
        store::InboxRecord r = *rec;
        r.seq = 0;
        r.flow = op.flow;
        r.message_id = util::replay_id(0, now, util::replayed_key(rec->message_id));
        open_notification(*tenant_, r);
        store_.inbox_add(r);
      }
      store_.audit({op.correlation_id, tenant_->tenant, op.flow, op.record_key, "recreated",
                    rec ? "the destination made the record anew (it was deleted there): what weft knew of it is "
                          "forgotten, and the record goes through again, whole"
                        : "the destination made the record anew (it was deleted there): what weft knew of it is "
                          "forgotten; its source record is no longer in the inbox, so its next change sends it whole",
                    0});
      store_.commit();
    } catch (...) {
      store_.rollback();
      throw;
    }
  } catch (const std::exception& e) {
    spdlog::warn("tenant {}: flow {}: queueing record {} again after it was made anew at the destination: {}",
                 tenant_->tenant, op.flow, op.record_key, e.what());
    return;
  }
  notify_inbox();
}

void Runner::notify_inbox() {
  inbox_writes_++;
  map_cv_.notify_all();
}

bool Runner::delivery_drained() {
  for (auto& [_, w] : workers_)
    if (!w->drained()) return false;
  return true;
}

std::string Runner::delivery_failure() const {
  for (const auto& [_, w] : workers_)
    if (std::string why = w->fatal(); !why.empty()) return why;
  return "";
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
