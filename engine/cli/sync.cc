// weft sync, replay and status: the durable pipeline from the command line.
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>

#include "connectors/registry.h"
#include "engine/cli/commands.h"
#include "engine/cli/common.h"
#include "engine/pipeline/runner.h"
#include "engine/store/db_lock.h"
#include "engine/store/store.h"
#include "engine/util/thread_name.h"
#include "engine/util/time.h"
#include "engine/workspace/registry.h"
#include "engine/workspace/secrets.h"

namespace weft::cli {

namespace json = boost::json;
namespace fs = std::filesystem;
namespace ws = weft::workspace;

std::string default_db(const std::string& workspace) { return (fs::path(workspace) / ".weft" / "weft.db").string(); }

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

// Whether `path` can be the database: a file, and one that exists unless it may be created.
// Prints why not.
bool db_path_ok(const std::string& path, bool create) {
  if (path == ":memory:" || path.empty()) {
    std::fprintf(stderr, "error: --db must be a file: the pipeline's threads each open it\n");
    return false;
  }
  std::error_code ec;
  if (!create && !fs::exists(path, ec)) {
    std::fprintf(stderr, "error: --db %s: no such database (nothing has run against it yet)\n", path.c_str());
    return false;
  }
  return true;
}

// Opens the store, creating its folder. Prints the error and returns nullptr on failure.
std::unique_ptr<store::Store> open_store(const std::string& path, bool create, bool prune = true) {
  try {
    if (!db_path_ok(path, create)) return nullptr;
    fs::path parent = fs::path(path).parent_path();
    if (!parent.empty()) fs::create_directories(parent);
    auto store = store::open_sqlite(path, store::kWriterCacheKiB);
    if (!prune) return store;
    // Done inbox records older than a week go (they are kept so late duplicates are
    // recognized), in chunks so nothing else waits long for the lock.
    int64_t cutoff = util::now_ms() - int64_t{7} * 86400000;
    for (int chunk = 0; chunk < 200; ++chunk) {
      store->begin();
      int64_t n = store->prune(cutoff, 5000);
      store->commit();
      if (n < 5000) break;
    }
    return store;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return nullptr;
  }
}

// Whether the connections the run needs can be used (secrets set), checked before the
// database is opened, so a run refused for a missing secret changes nothing. Prints why not.
bool connections_ok(const ws::TenantVersion& version, const std::vector<std::string>& flows) {
  ws::Secrets secrets;
  try {
    pipeline::Runner::check_connections(version, flows, secrets);
    return true;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: tenant %s: %s\n", version.tenant.c_str(), secrets.redact(e.what()).c_str());
    return false;
  }
}

// The database at `path` as it is, for commands that only read (store::open_sqlite_as_is).
// Prints the error and returns nullptr on failure.
std::unique_ptr<store::Store> open_as_is(const std::string& path) {
  try {
    if (!db_path_ok(path, false)) return nullptr;
    return store::open_sqlite_as_is(path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return nullptr;
  }
}

// The database's engine lock (store/db_lock.h), taken before anything is written to it.
// Prints the error (with `hint` when weft serve holds it) and returns nullptr when another
// engine holds it.
std::unique_ptr<store::DbLock> lock_db(const std::string& path, const char* command, const char* hint = "") {
  std::string error;
  try {
    fs::path parent = fs::path(path).parent_path();
    if (!parent.empty()) fs::create_directories(parent);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return nullptr;
  }
  auto lock = store::DbLock::take(path, command, &error);
  // The hint is about weft serve: not shown when another sync or replay holds the lock.
  if (!lock) std::fprintf(stderr, "error: %s%s\n", error.c_str(), error.find("(weft serve,") != std::string::npos ? hint : "");
  return lock;
}

// The tenant's runner over the database at `path` (its threads open their own connections
// to it). Prints the error, secrets redacted, and returns nullptr when a connection or a
// script cannot be used.
std::unique_ptr<pipeline::Runner> make_runner(std::shared_ptr<const ws::TenantVersion> version, store::Store& store,
                                              std::mutex& store_mu, ws::Secrets& secrets,
                                              std::vector<std::string> flows, const std::string& path) {
  try {
    return std::make_unique<pipeline::Runner>(version, store, store_mu, secrets, std::move(flows),
                                              [path] { return store::open_sqlite(path); });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: tenant %s: %s\n", version->tenant.c_str(), secrets.redact(e.what()).c_str());
    return nullptr;
  }
}

// Loads the tenant as a reload would: validated, compiled, fixtures passing.
std::shared_ptr<const ws::TenantVersion> load_checked(const std::string& workspace, const std::string& tenant) {
  std::vector<ws::Problem> problems;
  auto v = ws::build_version(workspace, tenant, true, &problems);
  if (!v) {
    print_problems(problems);
    std::fprintf(stderr, "error: tenant %s was not started: fix the problems above (weft check, weft test)\n",
                 tenant.c_str());
  }
  return v;
}

struct Progress {
  bool tty = isatty(STDERR_FILENO);
  int64_t last_ms = 0;
  void show(const pipeline::Runner& r, bool force = false) {
    if (!tty) return;
    int64_t now = util::now_ms();
    if (!force && now - last_ms < 200) return;
    last_ms = now;
    const auto& c = r.counts();
    std::string wait;
    if (int64_t next = r.next_retry_ms(); next > now) wait = "  next retry in " + std::to_string((next - now) / 1000) + "s";
    std::fprintf(stderr, "\r\033[Kpulled %lld  processed %lld  planned %lld  delivered %lld  retried %lld  dead %lld%s",
                 static_cast<long long>(c.pulled.load()), static_cast<long long>(c.processed.load()),
                 static_cast<long long>(c.planned.load()), static_cast<long long>(r.delivered()),
                 static_cast<long long>(r.retried()), static_cast<long long>(r.dead_lettered()), wait.c_str());
  }
  void done() {
    if (tty) std::fprintf(stderr, "\r\033[K");
  }
};

// Checkpoints the database's log from a connection of its own while a run lasts, once a
// second: a page changed by several batches in that time is copied into the database once
// (measured on 100,000 customers: 23% fewer bytes written than at every 100 ms, and a
// quarter of the reads).
class Checkpointer {
 public:
  explicit Checkpointer(const std::string& path) {
    thread_ = std::thread([this, path] {
      util::name_thread("weft-ckpt");
      try {
        auto db = store::open_sqlite(path);
        std::unique_lock<std::mutex> lock(mu_);
        while (!cv_.wait_for(lock, std::chrono::milliseconds(1000), [&] { return stop_; })) db->checkpoint();
      } catch (const std::exception&) {
        // Only an optimization: the writer checkpoints by itself too.
      }
    });
  }
  ~Checkpointer() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// Inbox records per pipeline transaction.
constexpr size_t kBatch = 200;  // larger batches measured no faster, and cost memory (three are prepared ahead)

// Processes the inbox and delivers until everything is delivered, parked, or `g_stop`;
// `pulling` says whether more may still arrive.
void drive(pipeline::Runner& runner, const std::atomic<bool>& pulling, Progress& progress) {
  while (!g_stop) {
    size_t n = runner.process_batch(kBatch);
    progress.show(runner);
    if (n > 0) continue;
    if (!pulling && runner.delivery_drained()) {
      // Drained may race with a batch just planned: check the inbox once more.
      if (runner.process_batch(kBatch) == 0) break;
      continue;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void print_summary(const pipeline::Runner& r, int64_t elapsed_ms, bool pulled) {
  const auto& c = r.counts();
  json::object o;
  if (pulled) o["pulled"] = c.pulled.load();
  o["processed"] = c.processed.load();
  o["mapped"] = c.mapped.load();
  o["skipped"] = c.skipped.load();
  o["stale"] = c.stale.load();
  o["rejected"] = c.rejected.load() + r.api_rejected();
  o["planned"] = c.planned.load();
  o["unchanged"] = c.unchanged.load();
  o["delivered"] = r.delivered();
  o["retried"] = r.retried();
  o["dead_lettered"] = r.dead_lettered();
  o["conflicts"] = c.conflicts.load() + r.delivery_conflicts();
  o["deferred"] = c.deferred.load();
  o["seconds"] = static_cast<double>(elapsed_ms) / 1000.0;
  std::string s = json::serialize(o);
  std::printf("%s\n", s.c_str());
}

int finish(pipeline::Runner& runner, Progress& progress, int64_t start, bool pulled, const std::string& failure,
           const ws::Secrets& secrets) {
  runner.stop_delivery();
  progress.done();
  print_summary(runner, util::now_ms() - start, pulled);
  if (!failure.empty()) {
    std::fprintf(stderr, "error: %s\n", secrets.redact(failure).c_str());
    return kConfigError;
  }
  if (g_stop) {
    std::fprintf(stderr, "stopped: what was received is stored; run again to resume\n");
    return kRejected;
  }
  bool parked = runner.counts().rejected.load() + runner.api_rejected() + runner.dead_lettered() > 0;
  if (parked) std::fprintf(stderr, "some records were rejected or dead-lettered: see weft status, weft replay --list\n");
  if (runner.counts().deferred.load() > 0)
    std::fprintf(stderr, "some records wait in the inbox (their source did not answer): run again later\n");
  return parked || runner.counts().deferred.load() > 0 ? kRejected : kOk;
}

}  // namespace

int run_sync(const SyncOptions& o) {
  auto version = load_checked(o.workspace, o.tenant);
  if (!version) return kConfigError;
  std::vector<std::string> flows;
  if (!o.flow.empty()) {
    const ws::Flow* f = version->flow(o.flow);
    if (!f) {
      std::fprintf(stderr, "error: --flow: tenant %s has no flow named '%s'\n", o.tenant.c_str(), o.flow.c_str());
      return kConfigError;
    }
    if (!f->enabled) {
      std::fprintf(stderr, "error: --flow: flow '%s' is disabled in tenant.json (\"enabled\": false)\n", o.flow.c_str());
      return kConfigError;
    }
    flows.push_back(o.flow);
  }
  std::string db = o.db.empty() ? default_db(o.workspace) : o.db;
  if (!db_path_ok(db, true) || !connections_ok(*version, flows)) return kConfigError;
  auto lock = lock_db(db, "weft sync");
  if (!lock) return kConfigError;
  auto store = open_store(db, true);
  if (!store) return kConfigError;
  std::mutex store_mu;
  ws::Secrets secrets;
  auto runner = make_runner(version, *store, store_mu, secrets, flows, db);
  if (!runner) return kConfigError;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  int64_t start = util::now_ms();
  Progress progress;
  runner->start_delivery();

  Checkpointer checkpointer(o.db.empty() ? default_db(o.workspace) : o.db);
  std::atomic<bool> pulling{true};
  std::string pull_failure, failure;  // one per thread; read after the join
  std::thread puller([&] {
    util::name_thread("weft-pull");
    try {
      for (const auto& f : runner->flows()) {
        // Without --flow, a flow weft cannot pull (fed by webhooks) is passed over, and the
        // rest are pulled; its records already in the inbox are processed all the same.
        std::string why;
        if (o.flow.empty() && !pipeline::pullable(*version, f, &why)) {
          std::fprintf(stderr, "note: flow %s is not pulled (%s)\n", f.c_str(), why.c_str());
          continue;
        }
        runner->pull(f, g_stop);
      }
    } catch (const std::exception& e) {
      pull_failure = e.what();
    }
    pulling = false;
  });
  try {
    drive(*runner, pulling, progress);
  } catch (const std::exception& e) {
    g_stop = true;
    failure = e.what();
  }
  puller.join();
  if (failure.empty()) failure = pull_failure;
  return finish(*runner, progress, start, true, failure, secrets);
}

int run_replay(const ReplayOptions& o) {
  std::string db = o.db.empty() ? default_db(o.workspace) : o.db;
  std::unique_ptr<store::DbLock> lock;
  std::shared_ptr<const ws::TenantVersion> version;
  if (!o.list) {
    if (!db_path_ok(db, false)) return kConfigError;  // no lock file made beside nothing
    version = load_checked(o.workspace, o.tenant);
    if (!version || !connections_ok(*version, {})) return kConfigError;
    lock = lock_db(db, "weft replay",
                   "; while weft serve runs, replay through its admin API (POST /api/tenants/{t}/replay)");
    if (!lock) return kConfigError;
  }
  auto store = o.list ? open_as_is(db) : open_store(db, false);
  if (!store) return kConfigError;
  std::string kind = o.kind == "all" ? "" : o.kind;
  std::vector<store::Parked> items;  // the --id ones
  for (int64_t id : o.ids) {
    auto p = store->parked_by_id(id);
    if (!p || p->tenant != o.tenant) {
      std::fprintf(stderr, "error: --id %lld: no parked record with that id for tenant %s\n",
                   static_cast<long long>(id), o.tenant.c_str());
      return kConfigError;
    }
    items.push_back(std::move(*p));
  }
  // The --id ones, or every one waiting, a page at a time (each with its source record).
  auto each_page = [&](const std::function<void(const std::vector<store::Parked>&)>& fn) {
    if (!o.ids.empty()) return fn(items);
    for (int64_t after = 0;;) {
      std::vector<store::Parked> page = store->parked(o.tenant, o.flow, kind, false, 1000, after);
      if (page.empty()) return;
      after = page.back().id;
      fn(page);
    }
  };
  if (o.list) {
    each_page([](const std::vector<store::Parked>& page) {
      for (const auto& p : page) {
        json::object j{{"id", p.id},          {"kind", p.kind},       {"flow", p.flow},
                       {"stage", p.stage},    {"key", p.record_key},  {"error", p.error},
                       {"reason", p.reason},  {"where", p.location},  {"correlation_id", p.correlation_id},
                       {"script_version", p.script_version},          {"attempts", p.attempts},
                       {"at", util::iso8601_ms(p.created_ms)},        {"replayed", p.replayed_ms != 0}};
        std::string s = json::serialize(j);
        std::printf("%s\n", s.c_str());
      }
    });
    return kOk;
  }
  std::mutex store_mu;
  ws::Secrets secrets;
  auto runner = make_runner(version, *store, store_mu, secrets, {}, db);
  if (!runner) return kConfigError;
  // Back into the inbox, marked as replays, so they take the same path through the current
  // script version; the parked rows stay, marked replayed, for the record. A transaction a
  // page.
  each_page([&](const std::vector<store::Parked>& page) {
    std::lock_guard<std::mutex> lock(store_mu);
    store->begin();
    std::vector<std::string> skipped;
    try {
      pipeline::requeue_parked(*store, *version, page, "weft replay", &skipped);
      store->commit();
    } catch (...) {
      store->rollback();
      throw;
    }
    for (const auto& w : skipped) std::fprintf(stderr, "warning: %s\n", w.c_str());
  });
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  int64_t start = util::now_ms();
  Progress progress;
  runner->start_delivery();
  std::atomic<bool> pulling{false};
  std::string failure;
  try {
    drive(*runner, pulling, progress);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  return finish(*runner, progress, start, false, failure, secrets);
}

int run_status(const StatusOptions& o) {
  std::string db = o.db.empty() ? default_db(o.workspace) : o.db;
  auto store = open_as_is(db);
  if (!store) return kConfigError;
  json::array flows;
  for (const auto& s : store->status()) {
    if (!o.tenant.empty() && s.tenant != o.tenant) continue;
    json::object f{{"tenant", s.tenant},
                   {"flow", s.flow},
                   {"cursor", s.cursor},
                   {"outbox", s.outbox},
                   {"oldest_waiting", s.outbox_oldest_ms ? json::value(util::iso8601_ms(s.outbox_oldest_ms))
                                                         : json::value(nullptr)},
                   {"dead_letters", s.dead_letters},
                   {"rejections", s.rejections},
                   {"conflicts", s.conflicts}};
    flows.push_back(std::move(f));
  }
  json::object out{{"database", db}, {"inbox_backlog", store->inbox_backlog(o.tenant)}, {"flows", std::move(flows)}};
  if (o.conflicts) {
    json::array list;
    for (const auto& c : store->conflicts(o.tenant, false, 1000)) {
      json::value detail = json::parse(c.detail);
      list.push_back(json::object{{"id", c.id},
                                  {"tenant", c.tenant},
                                  {"flow", c.flow},
                                  {"kind", c.kind},
                                  {"key", c.record_key},
                                  {"field", c.field},
                                  {"detail", detail},
                                  {"correlation_id", c.correlation_id},
                                  {"at", util::iso8601_ms(c.created_ms)}});
    }
    out["conflicts"] = std::move(list);
  }
  std::string s = (o.pretty || isatty(STDOUT_FILENO)) ? pretty_json(out) : json::serialize(out);
  std::printf("%s\n", s.c_str());
  return kOk;
}

}  // namespace weft::cli
