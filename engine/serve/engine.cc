#include "engine/serve/engine.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <regex>
#include <set>

#include "connectors/commercetools/notifications.h"
#include "connectors/registry.h"
#include "engine/pipeline/fields.h"
#include "engine/serve/jobs.h"
#include "engine/serve/spool.h"
#include "engine/util/thread_name.h"
#include "engine/util/time.h"

namespace weft::serve {

namespace json = boost::json;
namespace fs = std::filesystem;
namespace ws = weft::workspace;

struct Engine::Tenant {
  std::string name;
  std::mutex mu;  // guards everything below
  std::condition_variable cv;
  std::shared_ptr<const ws::TenantVersion> version;  // running (nullptr: not running)
  int64_t loaded_ms = 0;
  std::shared_ptr<pipeline::Runner> runner;
  std::shared_ptr<pipeline::Runner> next;            // a reload waiting to be swapped in
  std::shared_ptr<const ws::TenantVersion> next_version;
  std::string state = "starting";                    // running, stopped (why: last_error)
  std::string last_error;                            // the pipeline's last failure
  json::object last_reload;                          // the last reload's report
  std::shared_ptr<const ws::TenantVersion> retry;    // its pipeline could not be built at start
  bool stop = false, woken = false;
  std::thread driver;
};

struct Engine::Pending {
  std::vector<store::InboxRecord> records;
  std::vector<bool> added;
  bool done = false;
  std::string error;
};

namespace {
json::array problems_json(const std::vector<ws::Problem>& problems) {
  json::array a;
  for (const auto& p : problems) {
    json::object o{{"file", p.file}, {"message", p.message}};
    if (p.line) o["line"] = p.line;
    if (!p.path.empty()) o["path"] = p.path;
    a.push_back(std::move(o));
  }
  return a;
}
const json::object* connection_of(const ws::TenantVersion& v, const std::string& name) {
  auto* conns = v.config.if_contains("connections");
  if (!conns || !conns->is_object()) return nullptr;
  auto* c = conns->as_object().if_contains(name);
  return c && c->is_object() ? &c->as_object() : nullptr;
}
std::string str_of(const json::object& o, const char* key) {
  auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}
}  // namespace

// Nice 10: when the cores are busy, acknowledging webhooks gets most of the CPU and the
// pipeline works through the backlog with the rest (README, the webhook benchmark). Safe
// since script limits count CPU time, not time spent waiting for a core.
void lower_priority() { (void)!setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 10); }

Engine::Engine(Options o) : opts_(std::move(o)), registry_(opts_.workspace) {
  db_ = opts_.db.empty() ? (fs::path(opts_.workspace) / ".weft" / "weft.db").string() : opts_.db;
}

Engine::~Engine() { stop(); }

std::unique_ptr<store::Store> Engine::reader() const { return store::open_sqlite(db_); }

bool Engine::start(std::string* error) {
  try {
    fs::path parent = fs::path(db_).parent_path();
    if (!parent.empty()) fs::create_directories(parent);
    db_lock_ = store::DbLock::take(db_, "weft serve", error);
    if (!db_lock_) return false;
    store_ = store::open_sqlite(db_, store::kWriterCacheKiB);
    // Lane 0's spool keeps the name it had before there were lanes.
    lanes_.resize(kLanes);
    int64_t spooled = 0;
    for (size_t i = 0; i < kLanes; ++i) {
      lanes_[i].spool = std::make_unique<Spool>(db_ + "-spool" + (i ? "-" + std::to_string(i) : ""));
      spooled += lanes_[i].spool->size();
    }
    spooled_ = spooled;
  } catch (const std::exception& e) {
    *error = e.what();
    return false;
  }
  try {
    for (auto& lane : lanes_) lane.reader = store::open_sqlite(db_);
  } catch (const std::exception& e) {
    *error = e.what();
    return false;
  }
  mover_ = std::thread(&Engine::move_loop, this);
  // The log is checkpointed from a connection of its own, so neither the webhook commits
  // nor the pipeline pay for it inside their transactions (shared/reference/http.md: the
  // checkpoints make the latency tail).
  // A failed checkpoint (a full disk) is tried again at the next tick: the spools
  // checkpoint nowhere else, so a checkpointer that gave up would let their logs grow
  // until a restart.
  checkpointer_ = std::thread([this] {
    util::name_thread("weft-ckpt");
    std::unique_ptr<store::Store> db;
    // Per target (the store, each spool): its last error, logged once until it works again.
    std::vector<std::string> failing(lanes_.size() + 1);
    auto attempt = [&](size_t target, const std::function<void()>& fn) {
      std::string what = target == 0 ? "the store" : "webhook spool " + std::to_string(target - 1);
      try {
        fn();
        if (!failing[target].empty()) spdlog::info("checkpoints: {}: working again", what);
        failing[target].clear();
      } catch (const std::exception& e) {
        if (failing[target] != e.what())
          spdlog::warn("checkpoints: {}: {} (tried again every 200 ms)", what, e.what());
        failing[target] = e.what();
      }
    };
    std::unique_lock<std::mutex> lock(cp_mu_);
    while (!cp_cv_.wait_for(lock, std::chrono::milliseconds(200), [&] { return stopping_.load(); })) {
      attempt(0, [&] {
        if (!db) db = store::open_sqlite(db_);
        db->checkpoint();
      });
      for (size_t i = 0; i < lanes_.size(); ++i) attempt(i + 1, [&] { lanes_[i].spool->checkpoint(); });
    }
  });
  scheduler_ = std::make_unique<Scheduler>(*this);
  reload("", "start");
  scheduler_->start();
  if (opts_.watch) {
    watch_fd_ = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (watch_fd_ < 0 || pipe(watch_wake_) != 0) {
      spdlog::warn("workspace watch unavailable ({}); reload with SIGHUP or POST /api/reload", std::strerror(errno));
    } else {
      watcher_ = std::thread(&Engine::watch_loop, this);
    }
  }
  accepting_ = true;
  return true;
}

void Engine::stop() {
  if (stopping_.exchange(true)) return;
  accepting_ = false;
  if (scheduler_) scheduler_->stop();  // jobs stop at a page boundary; their cursors are durable
  if (watcher_.joinable()) {
    char c = 1;
    (void)!write(watch_wake_[1], &c, 1);
    watcher_.join();
  }
  if (watch_fd_ >= 0) close(watch_fd_);
  for (int fd : watch_wake_)
    if (fd >= 0) close(fd);
  // No new webhooks; those already taken are committed and answered by their own threads.
  {
    std::lock_guard<std::mutex> lock(ingest_mu_);
    ingest_stop_ = true;
  }
  {
    std::unique_lock<std::mutex> lock(ingest_mu_);
    ingest_cv_.wait(lock, [&] { return ingest_active_ == 0; });
  }
  // The spool is emptied into the inbox (what is left would move at the next start).
  {
    std::lock_guard<std::mutex> lock(ingest_mu_);
    move_stop_ = true;
  }
  move_cv_.notify_all();
  if (mover_.joinable()) mover_.join();
  std::vector<std::string> names;
  {
    std::lock_guard<std::mutex> lock(tenants_mu_);
    for (const auto& [n, _] : tenants_) names.push_back(n);
  }
  for (const auto& n : names) stop_tenant(n);
  cp_cv_.notify_all();
  if (checkpointer_.joinable()) checkpointer_.join();
  if (store_) {
    std::lock_guard<std::mutex> lock(store_mu_);
    try {
      store_->checkpoint();
    } catch (const std::exception&) {
    }
  }
}

std::shared_ptr<Engine::Tenant> Engine::find(const std::string& tenant) const {
  std::lock_guard<std::mutex> lock(tenants_mu_);
  auto it = tenants_.find(tenant);
  return it == tenants_.end() ? nullptr : it->second;
}

std::shared_ptr<const ws::TenantVersion> Engine::active(const std::string& tenant) const {
  std::shared_ptr<Tenant> t = find(tenant);
  if (!t) return nullptr;
  std::lock_guard<std::mutex> lock(t->mu);
  return t->next_version ? t->next_version : t->version;
}

std::vector<std::string> Engine::tenant_names() const {
  std::lock_guard<std::mutex> lock(tenants_mu_);
  std::vector<std::string> out;
  for (const auto& [n, _] : tenants_) out.push_back(n);
  return out;
}

void Engine::notify(const std::string& tenant) {
  std::shared_ptr<Tenant> t = find(tenant);
  if (!t) return;
  std::lock_guard<std::mutex> lock(t->mu);
  if (t->runner) t->runner->notify_inbox();
  t->woken = true;
  t->cv.notify_all();
}

std::shared_ptr<pipeline::Runner> Engine::make_runner(std::shared_ptr<const ws::TenantVersion> v, std::string* error) {
  try {
    std::string path = db_;
    auto r = std::make_shared<pipeline::Runner>(v, *store_, store_mu_, secrets_, std::vector<std::string>{},
                                                [path] { return store::open_sqlite(path); }, &metrics_);
    r->set_gather(kBatchGatherMs);
    return r;
  } catch (const std::exception& e) {
    *error = secrets_.redact(e.what());
    return nullptr;
  }
}

// ---- tenants: start, stop, reload ----

void Engine::start_tenant(const std::string& name, std::shared_ptr<const ws::TenantVersion> v) {
  auto t = std::make_shared<Tenant>();
  t->name = name;
  Tenant* raw = t.get();  // the driver thread is joined before the tenant goes
  {
    std::lock_guard<std::mutex> lock(tenants_mu_);
    tenants_[name] = std::move(t);
  }
  if (v) {
    std::string error;
    auto runner = make_runner(v, &error);
    std::lock_guard<std::mutex> lock(raw->mu);
    if (runner) {
      raw->next = runner;
      raw->next_version = v;
    } else {
      // Tried again by the driver, with backoff (a transient failure at start, such as no
      // file descriptors left, must not keep the tenant down until someone reloads).
      raw->state = "stopped";
      raw->last_error = error;
      raw->retry = v;
      spdlog::error("tenant {}: not started: {}; retrying", name, error);
    }
  } else {
    raw->state = "stopped";
  }
  raw->driver = std::thread(&Engine::driver_loop, this, raw);
}

void Engine::stop_tenant(const std::string& name) {
  std::shared_ptr<Tenant> t = find(name);
  if (!t) return;
  {
    std::lock_guard<std::mutex> lock(t->mu);
    t->stop = true;
  }
  t->cv.notify_all();
  if (t->driver.joinable()) t->driver.join();
}

json::object Engine::reload(const std::string& tenant, const std::string& trigger) {
  std::lock_guard<std::mutex> lock(reload_mu_);
  try {
    return reload_locked(tenant, trigger);
  } catch (const std::exception& e) {
    // An unreadable folder and the like: refused, never fatal (the watcher and SIGHUP call this).
    std::string why = secrets_.redact(e.what());
    spdlog::error("reload ({}) failed: {}", trigger, why);
    return json::object{{"result", "refused"}, {"error", why}};
  }
}

json::object Engine::reload_locked(const std::string& tenant, const std::string& trigger) {
  if (!tenant.empty()) {
    static const std::regex name_re("^[a-z0-9][a-z0-9_-]{0,62}$");  // as schemas/tenant.schema.json
    if (!std::regex_match(tenant, name_re))
      return json::object{{"result", "refused"}, {"error", "'" + tenant + "' is not a tenant name"}};
    return reload_one(tenant, trigger);
  }
  // Every tenant folder: new ones start, removed ones stop, the others reload.
  std::set<std::string> present;
  for (const auto& n : ws::list_tenants(opts_.workspace)) present.insert(n);
  json::object out;
  std::vector<std::string> gone;
  {
    std::lock_guard<std::mutex> l(tenants_mu_);
    for (const auto& [n, _] : tenants_)
      if (!present.count(n)) gone.push_back(n);
  }
  for (const auto& n : gone) {
    spdlog::info("tenant {}: folder removed; stopping it (its records stay in the store)", n);
    stop_tenant(n);
    {
      std::lock_guard<std::mutex> l(tenants_mu_);
      tenants_.erase(n);  // callers holding it keep it alive; its driver has stopped
    }
    if (scheduler_) scheduler_->tenant_changed(n);
    out[n] = json::object{{"result", "removed"}};
  }
  for (const auto& n : present) out[n] = reload_one(n, trigger);
  return out;
}

json::object Engine::reload_one(const std::string& name, const std::string& trigger) {
  int64_t started = util::now_ms();
  std::vector<ws::Problem> problems;
  std::error_code exists_ec;
  if (!fs::exists(fs::path(opts_.workspace) / name / "tenant.json", exists_ec)) {
    return json::object{{"result", "refused"}, {"error", "no tenant folder " + name + " in the workspace"}};
  }
  auto v = ws::build_version(opts_.workspace, name, true, &problems);
  std::shared_ptr<Tenant> t = find(name);
  json::object report{{"tenant", name}, {"trigger", trigger}, {"at", util::iso8601_ms(started)}};
  auto refuse = [&](json::object why) {
    report["result"] = "refused";
    for (auto& [k, val] : why) report[k] = val;
    metrics_.add("weft_reloads_total", {{"tenant", name}, {"result", "refused"}}, 1,
                 "Tenant reloads by result (refused: the last good version keeps running)");
    std::string first = report.contains("problems") && !report["problems"].as_array().empty()
                            ? std::string(report["problems"].as_array()[0].as_object()["message"].as_string())
                            : str_of(report, "error");
    spdlog::error("tenant {}: reload refused ({}): {}", name, trigger, first);
    if (report.contains("problems"))
      for (const auto& p : problems) spdlog::error("tenant {}:   {}", name, p.str());
    if (t) {
      std::lock_guard<std::mutex> lock(t->mu);
      t->last_reload = report;
    }
    return report;
  };
  if (!v) {
    if (!t) {
      start_tenant(name, nullptr);
      t = find(name);  // so the refusal shows in the admin API for a tenant broken from the start
    }
    return refuse(json::object{{"problems", problems_json(problems)}});
  }
  if (!t) {
    start_tenant(name, v);
    t = find(name);
    report["version"] = v->version;
    bool started;
    {
      std::lock_guard<std::mutex> lock(t->mu);
      started = t->next != nullptr;
      report["result"] = started ? "loaded" : "refused";
      if (!started) report["error"] = t->last_error;
      t->last_reload = report;
    }
    metrics_.add("weft_reloads_total", {{"tenant", name}, {"result", started ? "ok" : "refused"}}, 1);
    if (!started) return report;
    spdlog::info("tenant {}: version {} loaded ({} flows)", name, v->version, v->flows.size());
    if (scheduler_) scheduler_->version_changed(name, nullptr, v);
    return report;
  }
  std::shared_ptr<const ws::TenantVersion> before;
  {
    std::lock_guard<std::mutex> lock(t->mu);
    before = t->next_version ? t->next_version : t->version;
  }
  report["version"] = v->version;
  if (before && before->version == v->version) {
    // Recorded too: after a refused reload, the file put back as it was is a good reload
    // (the tenant must stop reporting the refusal).
    report["result"] = "unchanged";
    std::lock_guard<std::mutex> lock(t->mu);
    t->last_reload = report;
    return report;
  }
  std::string error;
  auto runner = make_runner(v, &error);
  if (!runner) return refuse(json::object{{"error", error}});
  {
    std::lock_guard<std::mutex> lock(t->mu);
    t->next = runner;
    t->next_version = v;
    report["result"] = "loaded";
    if (before) report["previous"] = before->version;
    t->last_reload = report;
  }
  t->cv.notify_all();
  metrics_.add("weft_reloads_total", {{"tenant", name}, {"result", "ok"}}, 1);
  spdlog::info("tenant {}: version {} loaded ({}), replacing {}", name, v->version, trigger,
               before ? before->version : std::string("nothing"));
  if (scheduler_) scheduler_->version_changed(name, before, v);
  return report;
}

// The tenant's pipeline: batches while the inbox has records; swaps in a reloaded version
// between batches (batches the old version prepared but did not commit are dropped, and
// their records, still in the inbox, are mapped again by the new one).
void Engine::driver_loop(Tenant* t) {
  util::name_thread("weft-drive");
  // Pipeline work yields to acknowledging webhooks when the cores are busy: the mapping and
  // delivery threads this one starts inherit the lower priority (Linux: nice is per thread).
  lower_priority();
  std::shared_ptr<pipeline::Runner> runner;
  int failures = 0;
  // A runner that could not be rebuilt after a failure (no file descriptors, no memory) is
  // tried again with the same backoff, until it starts or a reload brings another version.
  std::shared_ptr<const ws::TenantVersion> rebuild;
  {
    std::lock_guard<std::mutex> lock(t->mu);
    rebuild = std::move(t->retry);  // a start that failed is tried again like a rebuild
  }
  auto try_rebuild = [&](std::unique_lock<std::mutex>& lock) {
    lock.unlock();
    std::string error;
    auto again = make_runner(rebuild, &error);
    lock.lock();
    if (t->next) {  // a reload came meanwhile: it wins
      rebuild = nullptr;
    } else if (again) {
      t->next = again;
      t->next_version = rebuild;
      rebuild = nullptr;
    } else {
      t->last_error = "the pipeline could not be restarted: " + secrets_.redact(error);
      spdlog::error("tenant {}: {}; retrying", t->name, t->last_error);
    }
  };
  while (true) {
    {
      std::unique_lock<std::mutex> lock(t->mu);
      if (t->stop) break;
      if (t->next) {
        auto next = std::move(t->next);
        auto version = t->next_version;  // stays visible (active()) until the swap is done
        t->next = nullptr;
        auto old = std::move(runner);
        t->runner = nullptr;
        lock.unlock();
        if (old) old->stop_delivery();
        old.reset();  // joins its mapping thread
        next->start_delivery();
        runner = next;
        rebuild = nullptr;
        lock.lock();
        t->runner = runner;
        t->version = version;
        if (!t->next) t->next_version = nullptr;  // (a newer reload may have come meanwhile)
        t->loaded_ms = util::now_ms();
        t->state = "running";
        t->last_error.clear();
        failures = 0;
      }
    }
    if (!runner) {
      std::unique_lock<std::mutex> lock(t->mu);
      int wait_ms = rebuild ? std::min(30000, 500 << std::min(++failures, 6)) : 200;
      t->cv.wait_for(lock, std::chrono::milliseconds(wait_ms), [&] { return t->stop || t->next != nullptr; });
      if (rebuild && !t->stop && !t->next) try_rebuild(lock);
      continue;
    }
    size_t n = 0;
    try {
      n = runner->process_batch(opts_.batch);
      // A delivery worker that gave up (its answers could not be recorded) delivers nothing
      // more: the runner starts over like after a failed batch; its operations are still in
      // the outbox.
      if (std::string why = runner->delivery_failure(); !why.empty()) throw std::runtime_error(why);
      failures = 0;
    } catch (const std::exception& e) {
      // A store failure (disk full, ...) or a mapping thread that died: nothing of the batch
      // was committed. Start over with a fresh runner of the same version after a pause.
      std::string why = secrets_.redact(e.what());
      spdlog::error("tenant {}: pipeline failed: {}; retrying", t->name, why);
      std::shared_ptr<const ws::TenantVersion> version;
      {
        std::lock_guard<std::mutex> lock(t->mu);
        t->last_error = why;
        version = t->version;
      }
      runner->stop_delivery();
      runner.reset();
      std::unique_lock<std::mutex> lock(t->mu);
      t->runner = nullptr;
      int wait_ms = std::min(30000, 500 << std::min(++failures, 6));
      t->cv.wait_for(lock, std::chrono::milliseconds(wait_ms), [&] { return t->stop || t->next != nullptr; });
      if (!t->stop && !t->next && version) {
        rebuild = version;
        try_rebuild(lock);
      }
      continue;
    }
    if (n == 0) {
      std::unique_lock<std::mutex> lock(t->mu);
      t->cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return t->stop || t->woken || t->next; });
      t->woken = false;
    }
  }
  if (runner) runner->stop_delivery();
  runner.reset();
  std::lock_guard<std::mutex> lock(t->mu);
  t->runner = nullptr;
  t->state = "stopped";
}

// ---- webhooks ----

int64_t Engine::backlog(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(backlog_mu_);
  auto it = backlog_.find(tenant);
  auto sp = spooled_by_tenant_.find(tenant);
  return (it == backlog_.end() ? 0 : it->second) + (sp == spooled_by_tenant_.end() ? 0 : sp->second);
}

WebhookAnswer Engine::webhook(const WebhookCall& call) {
  WebhookAnswer a;
  auto fail = [&](int status, const char* code, std::string message, int retry_after = 0) {
    a.status = status;
    a.code = code;
    a.message = std::move(message);
    a.retry_after_s = retry_after;
    return a;
  };
  if (!accepting_) return fail(503, "shutting_down", "weft is stopping; send again shortly", 5);
  std::shared_ptr<Tenant> t = find(call.tenant);
  if (!t) return fail(404, "unknown_tenant", "no tenant '" + call.tenant + "' in this workspace");
  // The newest loaded version decides (a reload that rotates a secret applies at once), and
  // the same one is used for everything about this request.
  std::shared_ptr<const ws::TenantVersion> v;
  {
    std::lock_guard<std::mutex> lock(t->mu);
    v = t->next_version ? t->next_version : t->version;
  }
  if (!v) return fail(503, "tenant_not_running", "tenant " + call.tenant + " is not running (see GET /api/tenants/" +
                                                     call.tenant + "); send again later", 30);
  const json::object* conn = connection_of(*v, call.connection);
  if (!conn) return fail(404, "unknown_connection", "tenant " + call.tenant + " has no connection '" + call.connection + "'");
  auto* hook = conn->if_contains("webhook");
  if (!hook || !hook->is_object())
    return fail(404, "unknown_connection", "connection " + call.connection + " of tenant " + call.tenant +
                                               " takes no webhooks (no \"webhook\" in its tenant.json)");
  const json::object& w = hook->as_object();
  // Authentication before the body is looked at. 401 never says which part failed.
  std::string hmac_ref = str_of(w, "hmac_secret"), bearer_ref = str_of(w, "bearer_token");
  if (!hmac_ref.empty() || !bearer_ref.empty()) {
    // An empty secret is not configured either: with it no request could ever be
    // authenticated, and the sender would drop them as refused (401) instead of retrying.
    std::string missing;
    bool empty = false;
    std::optional<std::string> secret = secrets_.resolve(hmac_ref.empty() ? bearer_ref : hmac_ref, &missing, &empty);
    if (!secret) {
      spdlog::error("tenant {}: webhook secret of connection {} is {} (environment variable {})", call.tenant,
                    call.connection, empty ? "empty" : "unset", missing);
      return fail(503, "not_configured", "this webhook's secret is not configured on the server; send again later", 60);
    }
    std::string header_name = str_of(w, "signature_header");
    if (header_name.empty()) header_name = "X-Weft-Signature";
    bool ok = !hmac_ref.empty() ? (call.headers_only ||  // the signature needs the body
                                   http::verify_hmac_sha256(*secret, call.body, call.header ? call.header(header_name) : ""))
                                : http::verify_bearer(*secret, call.authorization);
    if (!ok) return fail(401, "unauthorized", "the request could not be authenticated");
  } else if (auto* open = w.if_contains("unauthenticated"); !(open && open->is_bool() && open->as_bool())) {
    return fail(401, "unauthorized", "the request could not be authenticated");
  }
  http::WebhookLimits limits = opts_.limits;
  if (auto* m = w.if_contains("max_body_bytes"); m && m->is_int64()) limits.max_body_bytes = m->as_int64();
  if (call.headers_only) {
    http::WebhookError err;
    if (!http::check_webhook_headers(str_of(*conn, "system"), call.content_type, call.content_length.value_or(0),
                                     limits, &err))
      return fail(err.status, err.code.c_str(), err.message);
    a.max_body_bytes = limits.max_body_bytes;
    return fail(100, "", "");
  }
  std::vector<http::WebhookMessage> msgs;
  http::WebhookError err;
  if (!http::parse_webhook(str_of(*conn, "system"), call.content_type, call.body, limits, &msgs, &err)) {
    a.status = err.status;
    a.code = err.code;
    a.message = err.message;
    return a;
  }
  if (backlog(call.tenant) >= static_cast<int64_t>(opts_.max_backlog))
    return fail(503, "over_capacity",
                "tenant " + call.tenant + " has " + std::to_string(backlog(call.tenant)) +
                    " records waiting to be processed; send again shortly",
                5);
  Pending p;
  int64_t now = util::now_ms();
  p.records.reserve(msgs.size());
  for (auto& m : msgs) {
    store::InboxRecord r;
    r.tenant = call.tenant;
    r.connection = call.connection;
    r.message_id = std::move(m.message_id);
    r.entity = std::move(m.entity);
    r.correlation_id = call.correlation_id;
    r.payload = std::move(m.payload);
    r.received_ms = now;
    p.records.push_back(std::move(r));
  }
  {
    std::unique_lock<std::mutex> lock(ingest_mu_);
    if (ingest_stop_) return fail(503, "shutting_down", "weft is stopping; send again shortly", 5);
    // The first idle lane (so a resend soon after finds its first copy in the same spool),
    // else the one with the shortest queue.
    Lane* lane = nullptr;
    for (auto& l : lanes_)
      if (!l.committing && !l.moving && l.queue.empty()) {
        lane = &l;
        break;
      }
    if (!lane)
      for (auto& l : lanes_)
        if (!lane || l.queue.size() + l.moving < lane->queue.size() + lane->moving) lane = &l;
    lane->queue.push_back(&p);
    ++ingest_active_;
    while (!p.done) {
      if (lane->committing) {
        ingest_cv_.wait(lock);
        continue;
      }
      lane->committing = true;  // this thread leads the lane's next commit
      std::vector<Pending*> batch;
      size_t records = 0;
      while (!lane->queue.empty() && records < 2000) {
        records += lane->queue.front()->records.size();
        batch.push_back(lane->queue.front());
        lane->queue.pop_front();
      }
      lock.unlock();
      commit_batch(*lane, batch);
      lock.lock();
      for (Pending* q : batch) q->done = true;
      lane->committing = false;
      ingest_cv_.notify_all();
    }
    if (--ingest_active_ == 0) ingest_cv_.notify_all();
  }
  if (!p.error.empty()) return fail(503, "store_unavailable", "the records could not be stored; send again", 5);
  for (size_t i = 0; i < p.records.size(); ++i)
    (p.added[i] ? a.accepted : a.duplicates).push_back(p.records[i].message_id);
  if (!a.duplicates.empty())
    metrics_.add("weft_webhook_duplicates_total", {{"tenant", call.tenant}, {"connection", call.connection}},
                 static_cast<double>(a.duplicates.size()), "Webhook messages already in the inbox (ignored)");
  if (!a.accepted.empty()) notify(call.tenant);
  return a;
}

// Group commit, led by the webhook threads themselves: the first one to find no commit in
// progress in its lane takes every request waiting there (its own included) into one spool
// transaction; the others wait for it and may lead the lane's next. A burst costs one log
// write, each answer still waits for its own commit, and no other thread sits between a
// request and its commit.
void Engine::commit_batch(Lane& lane, std::vector<Pending*>& batch) {
  std::string error;
  int64_t added = 0;
  try {
    std::vector<store::InboxRecord> fresh;
    std::vector<std::pair<Pending*, size_t>> where;
    for (Pending* p : batch) {
      p->added.assign(p->records.size(), false);
      for (size_t i = 0; i < p->records.size(); ++i) {
        const auto& r = p->records[i];
        if (lane.reader->inbox_has(r.tenant, r.connection, r.message_id)) continue;  // a re-delivery
        fresh.push_back(r);
        where.emplace_back(p, i);
      }
    }
    std::vector<bool> ok;
    if (!fresh.empty()) lane.spool->add(fresh, &ok);
    std::map<std::string, int64_t> per_tenant;
    for (size_t k = 0; k < where.size(); ++k)
      if (ok[k]) {
        where[k].first->added[where[k].second] = true;
        ++added;
        ++per_tenant[fresh[k].tenant];
      }
    std::lock_guard<std::mutex> lock(backlog_mu_);
    for (const auto& [t, n] : per_tenant) spooled_by_tenant_[t] += n;
  } catch (const std::exception& e) {
    error = e.what();
    spdlog::error("webhooks: storing {} requests failed: {}", batch.size(), error);
  }
  for (Pending* p : batch) p->error = error;
  if (added) {
    spooled_ += added;
    move_cv_.notify_all();
  }
}

// While the mover reads or deletes in a lane's spool (holding its lock), new webhooks go
// to the other lanes.
struct Engine::MovingLane {
  Engine& e;
  Lane& lane;
  MovingLane(Engine& en, Lane& l) : e(en), lane(l) {
    std::lock_guard<std::mutex> lock(e.ingest_mu_);
    lane.moving = true;
  }
  ~MovingLane() {
    std::lock_guard<std::mutex> lock(e.ingest_mu_);
    lane.moving = false;
  }
};

// Carries spooled webhook records into the inbox, in large batches (one transaction each),
// then drops them from the spool.
void Engine::move_loop() {
  util::name_thread("weft-mover");
  int failures = 0;
  int64_t next_prune_ms = 0;
  auto last_move = std::chrono::steady_clock::now();
  while (true) {
    {
      std::unique_lock<std::mutex> lock(ingest_mu_);
      move_cv_.wait_for(lock, std::chrono::milliseconds(50), [&] { return move_stop_ || spooled_.load() > 0; });
      // Records spooled since the last move gather for up to kMoveGatherMs (unless a full
      // move's worth is there): each synced inbox transaction rewrites whole pages of the
      // inbox and its indexes, so a move per webhook wrote ~50 KB a record and its fsyncs
      // stalled the webhooks' own.
      move_cv_.wait_until(lock, last_move + std::chrono::milliseconds(kMoveGatherMs),
                          [&] { return move_stop_ || spooled_.load() >= 500; });
    }
    last_move = std::chrono::steady_clock::now();
    // The backlog bound is checked against a count refreshed a few times a second.
    int64_t now = util::now_ms();
    if (now - backlog_refreshed_ms_ >= 250) {
      backlog_refreshed_ms_ = now;
      std::map<std::string, int64_t> counts;
      try {
        std::lock_guard<std::mutex> lock(store_mu_);
        for (const auto& n : tenant_names()) counts[n] = store_->inbox_backlog(n);
      } catch (const std::exception&) {
      }
      std::lock_guard<std::mutex> lock(backlog_mu_);
      backlog_ = std::move(counts);
    }
    // Done inbox records older than a week go (kept that long so late duplicates of a
    // message are still recognized): once an hour, in chunks of kPruneChunk rows, a few
    // chunks a pass so the moves are not held up; while chunks come back full, the next pass
    // goes on, so any steady rate of webhooks is pruned as fast as it arrives.
    if (now >= next_prune_ms) {
      bool more = false;
      try {
        for (int chunk = 0; chunk < 5; ++chunk) {
          int64_t n;
          {
            std::lock_guard<std::mutex> lock(store_mu_);
            store_->begin();
            try {
              n = store_->prune(now - int64_t{7} * 86400000, kPruneChunk);
              store_->commit();
            } catch (...) {
              store_->rollback();
              throw;
            }
          }
          more = n == static_cast<int64_t>(kPruneChunk);
          if (!more) break;
        }
      } catch (const std::exception& e) {
        spdlog::warn("pruning the inbox: {}", e.what());
      }
      next_prune_ms = more ? now : now + 3600000;
    }
    // Up to 500 from each lane (each take holds the lane's spool lock: short, so webhooks do
    // not wait); lane_end[i] is where lane i's records end in recs.
    std::vector<store::InboxRecord> recs;
    std::vector<size_t> lane_end(lanes_.size(), 0);
    try {
      for (size_t i = 0; i < lanes_.size(); ++i) {
        MovingLane m(*this, lanes_[i]);
        auto taken = lanes_[i].spool->take(500);
        for (auto& r : taken) recs.push_back(std::move(r));
        lane_end[i] = recs.size();
      }
    } catch (const std::exception& e) {
      spdlog::error("webhooks: reading the spool failed: {}", e.what());
    }
    bool stop;
    {
      std::lock_guard<std::mutex> lock(ingest_mu_);
      stop = move_stop_;
    }
    if (recs.empty()) {
      spooled_ = 0;
      if (stop) return;
      continue;
    }
    std::map<std::pair<std::string, std::string>, int64_t> added;  // (tenant, connection) -> new inbox records
    std::map<std::string, int64_t> moved;                           // tenant -> records out of the spool
    try {
      {
        std::lock_guard<std::mutex> lock(store_mu_);
        // Synced before the records leave the spool (which is synced): otherwise a power cut
        // could keep the spool's delete and lose the inbox's insert.
        store_->set_synced_commits(true);
        struct Normal {
          store::Store& s;
          ~Normal() {
            try {
              s.set_synced_commits(false);
            } catch (...) {
            }
          }
        } normal{*store_};
        store_->begin();
        try {
          for (auto& r : recs) {
            int64_t spool_seq = r.seq;
            r.seq = 0;
            if (store_->inbox_add(r)) ++added[{r.tenant, r.connection}];
            ++moved[r.tenant];
            r.seq = spool_seq;
          }
          store_->commit();
        } catch (...) {
          store_->rollback();
          throw;
        }
      }
      for (size_t i = 0, begin = 0; i < lanes_.size(); begin = lane_end[i++])
        if (lane_end[i] > begin) {
          MovingLane m(*this, lanes_[i]);
          lanes_[i].spool->done(recs[lane_end[i] - 1].seq);
        }
      spooled_ -= static_cast<int64_t>(recs.size());
      if (spooled_ < 0) spooled_ = 0;
      failures = 0;
    } catch (const std::exception& e) {
      // Still in the spool: tried again (the records are durable there).
      spdlog::error("webhooks: moving {} records into the inbox failed: {}; retrying", recs.size(), e.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(5000, 100 << std::min(++failures, 6))));
      if (stop && failures > 5) return;
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(backlog_mu_);
      for (const auto& [tc, n] : added) backlog_[tc.first] += n;  // until the next count
      for (const auto& [t, n] : moved) spooled_by_tenant_[t] = std::max<int64_t>(0, spooled_by_tenant_[t] - n);
    }
    for (const auto& [tc, n] : added)
      metrics_.add("weft_records_received_total", {{"tenant", tc.first}, {"connection", tc.second}},
                   static_cast<double>(n), "Records stored in the inbox (webhooks and pulls)");
    for (const auto& [t, _] : moved) notify(t);
  }
}

// ---- jobs, replay, views ----

bool Engine::start_job(const JobRequest& r, std::string* error, int64_t* run_id) {
  if (!scheduler_) {
    *error = "the engine is not running";
    return false;
  }
  return scheduler_->start_job(r, error, run_id);
}

int64_t Engine::replay(const std::string& tenant, const std::vector<int64_t>& ids, const std::string& kind,
                       std::string* error) {
  auto v = active(tenant);
  if (!v) {
    *error = "tenant " + tenant + " is not running";
    return 0;
  }
  int64_t n = 0;
  if (ids.empty()) {
    // Every one waiting, a page (and a transaction) at a time: the store lock is let go
    // between pages, so the pipelines and deliveries go on during a replay of thousands.
    for (int64_t after = 0;;) {
      bool more = false;
      with_store([&](store::Store& s) {
        std::vector<store::Parked> page = s.parked(tenant, "", kind, false, 500, after);
        if (page.empty()) return;
        after = page.back().id;
        more = true;
        s.begin();
        try {
          n += pipeline::requeue_parked(s, *v, page, "admin API");
          s.commit();
        } catch (...) {
          s.rollback();
          throw;
        }
      });
      if (!more) break;
    }
    notify(tenant);
    return n;
  }
  with_store([&](store::Store& s) {
    std::vector<store::Parked> items;
    for (int64_t id : ids)
      if (auto p = s.parked_by_id(id); p && p->tenant == tenant) items.push_back(std::move(*p));
    s.begin();
    try {
      n = pipeline::requeue_parked(s, *v, items, "admin API");
      s.commit();
    } catch (...) {
      s.rollback();
      throw;
    }
  });
  if (n == 0 && !ids.empty()) *error = "no parked record with those ids waits for a replay";
  notify(tenant);
  return n;
}

bool Engine::resolve_conflict(const std::string& tenant, int64_t id, const std::string& side,
                              const std::string& request_id, std::string* error) {
  auto v = active(tenant);
  std::optional<store::Conflict> found;
  std::optional<store::InboxRecord> source;
  {
    auto r = reader();
    for (auto& c : r->conflicts(tenant, false, 1000000))
      if (c.id == id) found = c;
    // The record goes through again as its newest version taken, not the one that raised
    // the conflict: a newer one would make that stale, and a correlation id may be shared
    // by several records (one webhook request's batch). Versions applied before the inbox
    // record was kept with them (schema 7) fall back to the correlation id.
    if (found && found->kind == "field" && side == "source") {
      source = r->applied_record(tenant, found->flow, found->record_key);
      if (!source) source = r->inbox_by_correlation(tenant, found->correlation_id);
    }
  }
  if (!found) {
    *error = "no open conflict " + std::to_string(id) + " for tenant " + tenant;
    return false;
  }
  if (found->kind == "field" && side == "source" && (!source || !v || !v->flow(found->flow))) {
    *error = "conflict " + std::to_string(id) + ": the source record is no longer in the inbox (or its flow is gone); "
             "resolve it for the destination, or change the record at the source";
    return false;
  }
  bool resolved = with_store([&](store::Store& s) {
    s.begin();
    try {
      // First, so a second request for the same conflict (a retry, two people) changes nothing.
      if (!s.resolve_conflict(id, side)) {
        s.rollback();
        return false;
      }
      std::string note;
      if (found->kind == "field" && found->entity_id) {
        json::value detail = json::parse(found->detail);
        auto side_value = [&](const char* k) {
          return detail.is_object() && detail.as_object().contains(k) ? detail.at(k) : json::value();
        };
        json::value dest = side_value("destination");
        json::object shadow = pipeline::decode_shadow(s.shadow(found->entity_id).fields_json);
        // For the source: the destination's value counts as synced, so the source's differs
        // and is written. For the destination: the source's value counts as sent and the
        // destination's as what it holds, so the same source value coming again (with a
        // change to another field) is a change at the destination only, and is not written
        // over it; a new value at the source is flagged again.
        pipeline::Flat synced{{found->field, side == "source" ? dest : side_value("source")}};
        pipeline::Flat held{{found->field, dest}};
        pipeline::record_delivery(shadow, synced, held, util::now_ms(), "conflict " + std::to_string(id));
        s.set_shadow(found->entity_id, pipeline::encode_shadow(shadow));
        note = side == "source" ? "; the destination's value counts as synced"
                                : "; the destination keeps its value (a new value at the source is flagged again)";
      }
      if (source) {
        store::InboxRecord r = *source;
        r.seq = 0;
        r.flow = found->flow;
        r.message_id = "replay:conflict:" + std::to_string(id) + ":" + std::to_string(util::now_ms());
        pipeline::open_notification(*v, r);
        s.inbox_add(r);
        note += "; the source record goes through again to write " + found->field;
      }
      s.audit({found->correlation_id, tenant, found->flow, found->record_key, "conflict_resolved",
               "conflict " + std::to_string(id) + " (" + found->kind + (found->field.empty() ? "" : " " + found->field) +
                   ") resolved for the " + side + note + " (admin API, request " + request_id + ")",
               0});
      s.commit();
      return true;
    } catch (...) {
      s.rollback();
      throw;
    }
  });
  if (!resolved) {
    *error = "conflict " + std::to_string(id) + " was already resolved";
    return false;
  }
  if (source) notify(tenant);
  return true;
}

bool Engine::ready(std::string* why) {
  try {
    auto r = reader();
    r->schema_version();
  } catch (const std::exception& e) {
    *why = std::string("store: ") + e.what();
    return false;
  }
  if (!accepting_) {
    *why = "not accepting requests (starting or stopping)";
    return false;
  }
  std::lock_guard<std::mutex> lock(tenants_mu_);
  for (const auto& [n, t] : tenants_) {
    std::lock_guard<std::mutex> l(t->mu);
    if (t->state == "starting") {  // its first pipeline is being made or started
      *why = "tenant " + n + ": starting";
      return false;
    }
    if (t->version && !t->runner && !t->next) {
      *why = "tenant " + n + ": pipeline not running: " + t->last_error;
      return false;
    }
  }
  return true;
}

json::array Engine::tenants_json() {
  json::array out;
  std::vector<std::string> names;
  {
    std::lock_guard<std::mutex> lock(tenants_mu_);
    for (const auto& [n, _] : tenants_) names.push_back(n);
  }
  for (const auto& n : names) {
    std::shared_ptr<Tenant> t = find(n);
    if (!t) continue;
    std::lock_guard<std::mutex> lock(t->mu);
    json::object o{{"tenant", n}, {"state", t->state}};
    if (t->version) o["script_version"] = t->version->version;
    if (t->loaded_ms) o["loaded_at"] = util::iso8601_ms(t->loaded_ms);
    if (t->last_reload.contains("result") && t->last_reload["result"] == "refused") o["last_reload"] = t->last_reload;
    out.push_back(std::move(o));
  }
  return out;
}

std::optional<json::object> Engine::tenant_json(const std::string& name) {
  std::shared_ptr<Tenant> t = find(name);
  if (!t) return std::nullopt;
  json::object o{{"tenant", name}};
  std::shared_ptr<const ws::TenantVersion> v;
  {
    std::lock_guard<std::mutex> lock(t->mu);
    o["state"] = t->state;
    v = t->version;
    if (v) o["script_version"] = v->version;
    if (t->loaded_ms) o["loaded_at"] = util::iso8601_ms(t->loaded_ms);
    if (!t->last_error.empty()) o["error"] = t->last_error;
    o["last_reload"] = t->last_reload;
  }
  auto r = reader();
  std::map<std::string, store::FlowStatus> status;
  for (auto& s : r->status())
    if (s.tenant == name) status[s.flow] = s;
  json::array flows;
  if (v) {
    for (const auto& [fname, f] : v->flows) {
      json::object fo{{"flow", fname},
                      {"enabled", f.enabled},
                      {"script", f.script},
                      {"source", f.source_connection + "/" + f.source_entity},
                      {"destination", f.destination_connection + "/" + f.destination_entity}};
      auto st = status.find(fname);
      if (st != status.end()) {
        fo["cursor"] = st->second.cursor;
        fo["outbox"] = st->second.outbox;
        fo["oldest_waiting"] = st->second.outbox_oldest_ms ? json::value(util::iso8601_ms(st->second.outbox_oldest_ms))
                                                           : json::value(nullptr);
        fo["dead_letters"] = st->second.dead_letters;
        fo["rejections"] = st->second.rejections;
        fo["conflicts"] = st->second.conflicts;
      }
      if (scheduler_) fo["jobs"] = scheduler_->flow_json(name, fname);
      json::array runs;
      for (const auto& run : r->job_runs(name, fname, "", 10)) runs.push_back(job_run_json(run));
      fo["job_runs"] = std::move(runs);
      flows.push_back(std::move(fo));
    }
  }
  o["flows"] = std::move(flows);
  o["inbox_backlog"] = r->inbox_backlog(name);
  return o;
}

// ---- the workspace watch ----

namespace {
void add_watches(int fd, const fs::path& dir, std::map<int, fs::path>& wds, bool root = false) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  std::string leaf = dir.filename().string();
  if (!root && !leaf.empty() && leaf[0] == '.') return;  // .weft (the database), .git, editor folders
  int wd = inotify_add_watch(fd, dir.c_str(),
                             IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_DELETE_SELF);
  if (wd >= 0) wds[wd] = dir;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory(ec)) add_watches(fd, e.path(), wds);
}
}  // namespace

void Engine::watch_loop() {
  util::name_thread("weft-watch");
  std::map<int, fs::path> wds;
  // "." and "ws/" alike: no trailing "." or "/" (the root itself is never taken for hidden)
  fs::path root = fs::absolute(opts_.workspace).lexically_normal();
  if (root.has_parent_path() && root.filename().empty()) root = root.parent_path();
  add_watches(watch_fd_, root, wds, true);
  std::set<std::string> dirty;  // tenant names; "*" = every tenant (lib/ or a folder came or went)
  int64_t last_event = 0;
  alignas(inotify_event) char buf[16384];
  while (true) {
    pollfd fds[2] = {{watch_fd_, POLLIN, 0}, {watch_wake_[0], POLLIN, 0}};
    int timeout = dirty.empty() ? -1 : opts_.watch_settle_ms;
    int rc = poll(fds, 2, timeout);
    if (rc < 0 && errno != EINTR) return;
    if (fds[1].revents) return;
    if (rc > 0 && fds[0].revents) {
      ssize_t len;
      while ((len = read(watch_fd_, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < len;) {
          auto* ev = reinterpret_cast<inotify_event*>(buf + i);
          i += sizeof(inotify_event) + ev->len;
          auto it = wds.find(ev->wd);
          if (it == wds.end()) continue;
          fs::path p = it->second;
          if (ev->len) p /= ev->name;
          std::string name = ev->len ? std::string(ev->name) : std::string();
          if (!name.empty() && (name[0] == '.' || name.back() == '~')) continue;  // hidden and editor backups
          if ((ev->mask & IN_ISDIR) && (ev->mask & (IN_CREATE | IN_MOVED_TO))) add_watches(watch_fd_, p, wds);
          if (ev->mask & IN_IGNORED) wds.erase(ev->wd);
          fs::path rel = p.lexically_relative(root);
          std::string top = rel.empty() ? "" : rel.begin()->string();
          if (top.empty() || top == "." || top[0] == '.') continue;
          bool folder_change = rel.begin() != rel.end() && std::next(rel.begin()) == rel.end();
          if (top == "lib" || folder_change) dirty.insert("*");
          else dirty.insert(top);
          last_event = util::now_ms();
        }
      }
    }
    if (!dirty.empty() && util::now_ms() - last_event >= opts_.watch_settle_ms) {
      std::set<std::string> changed;
      changed.swap(dirty);
      if (changed.count("*")) {
        reload("", "watch");
      } else {
        for (const auto& n : changed) reload(n, "watch");
      }
    }
  }
}

}  // namespace weft::serve
