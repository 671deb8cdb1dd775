#include "engine/serve/jobs.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "connectors/omnisend/client.h"
#include "connectors/registry.h"
#include "engine/delivery/rate_limiter.h"
#include "engine/delivery/retry.h"
#include "engine/delivery/send_result.h"
#include "engine/pipeline/fields.h"
#include "engine/pipeline/pipeline.h"
#include "engine/util/ids.h"
#include "engine/util/thread_name.h"
#include "engine/util/time.h"
#include "engine/workspace/json_limits.h"

namespace weft::serve {

namespace json = boost::json;
namespace ws = weft::workspace;

namespace {

const char* const kJobs[] = {"pull", "backfill", "reconcile"};

std::string key_of(const std::string& tenant, const std::string& flow, const std::string& job) {
  return tenant + "/" + flow + "/" + job;
}

const json::object* flow_config(const ws::TenantVersion& v, const std::string& flow) {
  auto* flows = v.config.if_contains("flows");
  if (!flows || !flows->is_object()) return nullptr;
  auto* f = flows->as_object().if_contains(flow);
  return f && f->is_object() ? &f->as_object() : nullptr;
}

// The flow's schedule for a job ("pull" and "reconcile" can be scheduled), or nullopt.
std::optional<sched::Schedule> schedule_of(const ws::TenantVersion& v, const std::string& flow, const std::string& job,
                                           std::string* error) {
  const json::object* f = flow_config(v, flow);
  if (!f) return std::nullopt;
  auto* spec = f->if_contains(job);
  if (!spec || !spec->is_object()) return std::nullopt;
  json::object only;  // the schedule's keys (a job's other settings stay out)
  for (const char* k : {"every", "cron", "timezone"})
    if (auto* x = spec->as_object().if_contains(k)) only[k] = *x;
  if (only.empty()) return std::nullopt;
  return sched::parse_schedule(only, error);
}

int64_t int_setting(const ws::TenantVersion& v, const std::string& flow, const char* job, const char* key,
                    int64_t fallback) {
  const json::object* f = flow_config(v, flow);
  if (!f) return fallback;
  auto* j = f->if_contains(job);
  if (!j || !j->is_object()) return fallback;
  auto* x = j->as_object().if_contains(key);
  return x && x->is_int64() ? x->as_int64() : fallback;
}

}  // namespace

json::object job_run_json(const store::JobRun& r) {
  json::object o{{"id", r.id},
                 {"flow", r.flow},
                 {"job", r.job},
                 {"trigger", r.trigger},
                 {"status", r.status},
                 {"started_at", util::iso8601_ms(r.started_ms)}};
  if (r.scheduled_ms) o["scheduled_for"] = util::iso8601_ms(r.scheduled_ms);
  if (r.ended_ms) o["ended_at"] = util::iso8601_ms(r.ended_ms);
  std::error_code ec;
  json::value counts = json::parse(r.counts_json, ec);
  o["counts"] = ec ? json::value(json::object()) : counts;
  if (!r.error.empty()) o["error"] = r.error;
  return o;
}

void Scheduler::start() {
  // Runs cut short by a crash (or a stop) are closed; a backfill among them resumes.
  std::vector<std::tuple<std::string, std::string>> resume;
  for (const auto& t : engine_.tenant_names()) {
    auto v = engine_.active(t);
    if (!v) continue;
    engine_.with_store([&](store::Store& s) {
      for (const auto& [fname, f] : v->flows) {
        if (!f.enabled) continue;
        auto runs = s.job_runs(t, fname, "backfill", 1);
        if (!runs.empty() && (runs[0].status == "running" || runs[0].status == "stopped")) resume.emplace_back(t, fname);
        for (const char* job : kJobs) {
          auto last = s.job_runs(t, fname, job, 1);
          if (!last.empty() && last[0].status == "running") s.job_end(last[0].id, "stopped", last[0].counts_json, "weft stopped during the run");
        }
      }
    });
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    started_ = true;
    for (const auto& [t, f] : resume) {
      std::string error;
      if (launch(t, f, "backfill", "resume", 0, &error, nullptr))
        spdlog::info("tenant {}: flow {}: resuming the backfill from its checkpoint", t, f);
    }
    // Mappings changed while weft was down.
    for (const auto& t : engine_.tenant_names())
      if (auto v = engine_.active(t)) check_mappings(*v, "start");
  }
  thread_ = std::thread(&Scheduler::loop, this);
}

void Scheduler::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    for (auto& [_, r] : runs_) r->stop = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [_, r] : runs_)
    if (r->thread.joinable()) r->thread.join();
  runs_.clear();
}

void Scheduler::tenant_changed(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = schedule_errors_.begin(); it != schedule_errors_.end();)
    it = it->first.rfind(tenant + "/", 0) == 0 ? schedule_errors_.erase(it) : std::next(it);
  if (!engine_.active(tenant))
    for (auto& [k, r] : runs_)
      if (r->tenant == tenant) r->stop = true;
  cv_.notify_all();
}

void Scheduler::version_changed(const std::string& tenant, std::shared_ptr<const ws::TenantVersion> before,
                                std::shared_ptr<const ws::TenantVersion> after) {
  tenant_changed(tenant);
  if (!after) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (!started_ || stopping_) return;  // start() checks every tenant's mappings
  check_mappings(*after, before ? "reload" : "start");
}

// Each flow's mapping id is kept in the store (a "<flow>#mapping" cursor) once the flow runs
// with it, so that a mapping changed while weft was down (a deploy by restart) is noticed
// at start like one changed by a live reload. Called with mu_ held.
void Scheduler::check_mappings(const ws::TenantVersion& v, const std::string& trigger) {
  for (const auto& [fname, f] : v.flows) {
    if (!f.enabled) continue;
    try {
      check_mapping(v, fname, trigger);
    } catch (const std::exception& e) {  // the store: the next start or reload checks again
      spdlog::error("tenant {}: flow {}: checking whether its mapping changed: {}", v.tenant, fname, e.what());
    }
  }
}

void Scheduler::check_mapping(const ws::TenantVersion& v, const std::string& fname, const std::string& trigger) {
  std::string id = v.mapping_id(fname), key = fname + "#mapping", known;
  engine_.with_store([&](store::Store& s) { known = s.cursor(v.tenant, key).value_or(""); });
  auto remember = [&] { engine_.with_store([&](store::Store& s) { s.set_cursor(v.tenant, key, id); }); };
  if (known == id) return;
  const json::object* cfg = flow_config(v, fname);
  auto* refresh = cfg ? cfg->if_contains("refresh_on_change") : nullptr;
  if (known.empty() || !refresh || !refresh->is_bool() || !refresh->as_bool()) {
    remember();  // the first run with a mapping, or no refresh asked for
    return;
  }
  std::string error;
  if (launch(v.tenant, fname, "backfill", trigger, 0, &error, nullptr)) {
    remember();  // the refresh is recorded as a run: a crash resumes it
    spdlog::info("tenant {}: flow {}: its mapping changed; refreshing every record (backfill)", v.tenant, fname);
  } else if (runs_.count(key_of(v.tenant, fname, "backfill"))) {
    // The running backfill took some records through the old mapping: a whole new one
    // follows it (and remembers the mapping then).
    refresh_after_.insert({v.tenant, fname});
    spdlog::info("tenant {}: flow {}: its mapping changed during a backfill; a refresh follows when it ends",
                 v.tenant, fname);
  } else {
    spdlog::warn("tenant {}: flow {}: its mapping changed, but no refresh started: {}", v.tenant, fname, error);
  }
}

bool Scheduler::start_job(const JobRequest& r, std::string* error, int64_t* run_id) {
  std::lock_guard<std::mutex> lock(mu_);
  return launch(r.tenant, r.flow, r.job, r.trigger, 0, error, run_id);
}

bool Scheduler::launch(const std::string& tenant, const std::string& flow, const std::string& job,
                       const std::string& trigger, int64_t slot_ms, std::string* error, int64_t* run_id) {
  if (stopping_ || !started_) {
    *error = "the scheduler is not running";
    return false;
  }
  if (job != "pull" && job != "backfill" && job != "reconcile") {
    *error = "no job '" + job + "': pull, backfill or reconcile";
    return false;
  }
  auto v = engine_.active(tenant);
  if (!v) {
    *error = "tenant " + tenant + " is not running";
    return false;
  }
  const ws::Flow* f = v->flow(flow);
  if (!f) {
    *error = "tenant " + tenant + " has no flow '" + flow + "'";
    return false;
  }
  if (!f->enabled) {
    *error = "flow " + flow + " is disabled";
    return false;
  }
  std::string key = key_of(tenant, flow, job);
  reap();
  if (runs_.count(key)) {
    *error = job + " of " + tenant + "/" + flow + " is already running (run " + std::to_string(runs_[key]->run_id) + ")";
    return false;
  }
  auto run = std::make_unique<Run>();
  run->tenant = tenant;
  run->flow = flow;
  run->job = job;
  store::JobRun jr;
  jr.tenant = tenant;
  jr.flow = flow;
  jr.job = job;
  jr.trigger = trigger;
  jr.scheduled_ms = slot_ms;
  try {
    engine_.with_store([&](store::Store& s) { s.job_start(jr); });
  } catch (const std::exception& e) {
    *error = std::string("recording the run: ") + e.what();
    return false;
  }
  run->run_id = jr.id;
  if (run_id) *run_id = jr.id;
  if (slot_ms) last_slot_[key] = slot_ms;
  Run* raw = run.get();
  runs_[key] = std::move(run);
  raw->thread = std::thread(&Scheduler::execute, this, raw, v, trigger);
  return true;
}

void Scheduler::reap() {
  for (auto it = runs_.begin(); it != runs_.end();) {
    if (it->second->done) {
      it->second->thread.join();
      it = runs_.erase(it);
    } else {
      ++it;
    }
  }
}

void Scheduler::loop() {
  util::name_thread("weft-sched");
  // A slot that fell before this moment was missed while weft was down: its one catch-up run
  // says so ("start"), however long ago the slot was (an interval's latest slot can be just
  // before now).
  const int64_t started = util::now_ms();
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    reap();
    // Refreshes that waited for a backfill to end.
    for (auto it = refresh_after_.begin(); it != refresh_after_.end();) {
      const auto& [t, fname] = *it;
      if (runs_.count(key_of(t, fname, "backfill"))) {
        ++it;
        continue;
      }
      std::string error;
      if (launch(t, fname, "backfill", "reload", 0, &error, nullptr)) {
        spdlog::info("tenant {}: flow {}: refreshing every record after its mapping changed (backfill)", t, fname);
        if (auto v = engine_.active(t))
          engine_.with_store([&](store::Store& s) { s.set_cursor(t, fname + "#mapping", v->mapping_id(fname)); });
      } else {
        spdlog::warn("tenant {}: flow {}: its mapping changed, but no refresh started: {}", t, fname, error);
      }
      it = refresh_after_.erase(it);
    }
    int64_t now = util::now_ms();
    int64_t wake = now + 1000;
    for (const auto& t : engine_.tenant_names()) {
      auto v = engine_.active(t);
      if (!v) continue;
      for (const auto& [fname, f] : v->flows) {
        if (!f.enabled) continue;
        for (const char* job : {"pull", "reconcile"}) {
          std::string key = key_of(t, fname, job), error;
          auto sch = schedule_of(*v, fname, job, &error);
          if (!sch) {
            if (!error.empty() && schedule_errors_[key] != error) {
              schedule_errors_[key] = error;
              spdlog::error("tenant {}: flow {}: {} schedule: {}", t, fname, job, error);
            }
            continue;
          }
          if (!last_slot_.count(key)) {
            // The last scheduled run, from the store (so a restart keeps the cadence).
            int64_t last = 0;
            try {
              engine_.with_store([&](store::Store& s) {
                for (const auto& r : s.job_runs(t, fname, job, 20))
                  if (r.scheduled_ms) {
                    last = r.scheduled_ms;
                    break;
                  }
              });
            } catch (const std::exception&) {
            }
            last_slot_[key] = sched::anchor(*sch, last, now);
          }
          sched::Due d = sched::due(*sch, last_slot_[key], now);
          if (d.run_now && !runs_.count(key)) {
            std::string why;
            bool missed = last_slot_[key] != 0 && d.slot_ms != 0 && d.slot_ms < started;
            if (launch(t, fname, job, missed ? "start" : "schedule", d.slot_ms ? d.slot_ms : now, &why, nullptr))
              last_slot_[key] = d.slot_ms ? d.slot_ms : now;
            d = sched::due(*sch, last_slot_[key], now);
          }
          if (d.next_ms > 0) wake = std::min(wake, d.next_ms);
        }
      }
    }
    cv_.wait_for(lock, std::chrono::milliseconds(std::max<int64_t>(20, std::min<int64_t>(1000, wake - now))));
  }
}

void Scheduler::execute(Run* run, std::shared_ptr<const ws::TenantVersion> v, std::string trigger) {
  util::name_thread("weft-job");
  lower_priority();
  json::object counts;
  std::string status = "ok", error;
  const std::string& t = run->tenant;
  const std::string& fname = run->flow;
  int64_t started = util::now_ms();
  spdlog::info("tenant {}: flow {}: {} started ({}, run {})", t, fname, run->job, trigger, run->run_id);
  try {
    const ws::Flow* flow = v->flow(fname);
    if (run->job == "pull" || run->job == "backfill") {
      pipeline::PullSpec spec;
      if (run->job == "pull") {
        spec.cursor_key = fname;
        spec.id_prefix = "pull:" + fname + ":";
      } else {
        spec.cursor_key = fname + "#backfill";
        spec.id_prefix = "backfill:" + std::to_string(run->run_id) + ":" + fname + ":";
        spec.page_size = static_cast<int>(int_setting(*v, fname, "backfill", "page_size", 200));
        spec.pause_ms = static_cast<int>(int_setting(*v, fname, "backfill", "pause_ms", 100));
        spec.max_backlog = int_setting(*v, fname, "backfill", "max_backlog", 2000);
        if (trigger != "resume")  // a new backfill reads from the beginning
          engine_.with_store([&](store::Store& s) { s.set_cursor(t, spec.cursor_key, ""); });
      }
      int64_t added = pipeline::pull_flow(*v, fname, engine_.store(), engine_.store_mutex(), engine_.secrets(), spec,
                                          run->stop, [&](int64_t n) {
                                            if (n > 0) {
                                              engine_.metrics().add("weft_records_received_total",
                                                                    {{"tenant", t}, {"connection", flow->source_connection}},
                                                                    static_cast<double>(n));
                                              engine_.notify(t);
                                            }
                                          });
      counts["pulled"] = added;
    } else {
      std::string incomplete;
      counts = reconcile(run, v, *flow, &incomplete);
      if (!incomplete.empty() && !run->stop) {  // compared only in part: not "ok"
        status = "failed";
        error = engine_.secrets().redact(incomplete);
      }
    }
    if (run->stop) status = "stopped";
  } catch (const std::exception& e) {
    status = "failed";
    error = engine_.secrets().redact(e.what());
  }
  try {
    engine_.with_store([&](store::Store& s) { s.job_end(run->run_id, status, json::serialize(counts), error); });
  } catch (const std::exception& e) {
    spdlog::error("tenant {}: flow {}: recording the end of run {}: {}", t, fname, run->run_id, e.what());
  }
  engine_.metrics().add("weft_job_runs_total", {{"tenant", t}, {"flow", fname}, {"job", run->job}, {"status", status}},
                        1, "Job runs (pull, backfill, reconcile) by how they ended");
  if (status == "failed")
    spdlog::error("tenant {}: flow {}: {} failed: {}", t, fname, run->job, error);
  else
    spdlog::info("tenant {}: flow {}: {} {} in {} ms: {}", t, fname, run->job, status, util::now_ms() - started,
                 json::serialize(counts));
  run->done = true;
  cv_.notify_all();
}

json::object Scheduler::reconcile(Run* run, std::shared_ptr<const ws::TenantVersion> version, const ws::Flow& flow,
                                  std::string* incomplete) {
  const ws::TenantVersion& v = *version;
  const json::object& conns = v.config.at("connections").as_object();
  const json::object& dest_cfg = conns.at(flow.destination_connection).as_object();
  if (!connectors::can_reconcile(flow.destination_system, flow.destination_entity))
    throw std::runtime_error("reconciliation compares with Omnisend contacts only yet, not " +
                             flow.destination_system + " " + flow.destination_entity);
  std::string window_text;
  if (const json::object* cfg = flow_config(v, flow.name))
    if (auto* r = cfg->if_contains("reconcile"); r && r->is_object())
      if (auto* w = r->as_object().if_contains("window"); w && w->is_string()) window_text = std::string(w->as_string());
  // As load_tenant read it (it refuses a window that does not parse).
  int64_t window = delivery::parse_duration_ms(window_text).value_or(int64_t{7} * 86400000);
  connectors::omnisend::Destination dest(
      connectors::omnisend_settings(flow.destination_connection, dest_cfg, engine_.secrets()));
  auto source = connectors::make_commercetools(flow.source_connection, conns.at(flow.source_connection).as_object(),
                                               engine_.secrets());
  // A sandbox of the running version maps each record to find its destination identifier.
  pipeline::Pipeline mapper(version, engine_.store());  // prepare only: never writes
  const delivery::Model* model = connectors::destination_model(flow.destination_system, flow.destination_entity);
  std::map<std::string, std::string> owners = mapper.owners_of(flow, *model);
  // Lookups count against the connection's rate limit, with its deliveries.
  auto [rate_requests, rate_per_ms] = connectors::connection_rate_limit(dest_cfg);
  auto limiter = delivery::shared_limiter(v.tenant + "/" + flow.destination_connection, rate_requests, rate_per_ms);
  int64_t checked = 0, missing = 0, different = 0, same = 0, unmapped = 0, errors = 0, pending = 0;
  std::string first_error;  // of the lookups that failed
  std::string cursor = util::iso8601_ms(util::now_ms() - window) + "|";
  while (!run->stop) {
    connectors::commercetools::Page page;
    connectors::commercetools::Error err;
    if (!source->customers_since(cursor, 200, &page, &err))
      throw std::runtime_error("reading " + flow.source_connection + ": " + engine_.secrets().redact(err.message));
    std::vector<store::InboxRecord> requeue;
    std::vector<std::pair<std::string, std::string>> gone;   // identifier of records missing at the destination
    std::vector<std::pair<std::pair<std::string, std::string>, pipeline::Flat>> seen;  // identifier, what it holds
    for (size_t i = 0; i < page.records.size() && !run->stop; ++i) {
      ++checked;
      store::InboxRecord rec;
      rec.tenant = v.tenant;
      rec.connection = flow.source_connection;
      rec.entity = flow.source_entity;
      rec.flow = flow.name;
      rec.message_id = "reconcile:" + std::to_string(run->run_id) + ":" + page.versions[i];
      rec.correlation_id = util::new_correlation_id();
      rec.payload = page.records[i];
      rec.received_ms = util::now_ms();
      pipeline::Prepared p = mapper.prepare(flow, rec, {});
      if (p.out.kind != script::Outcome::Kind::ok || !p.issues.empty()) {
        ++unmapped;  // the pipeline rejects or skips it anyway
        continue;
      }
      auto ident = connectors::omnisend::lookup_identifier(p.out.payload);
      if (ident.first.empty()) {
        ++unmapped;
        continue;
      }
      // A record with operations still waiting in the outbox (a first load under the rate
      // limit, retries) is not at the destination yet, or not as it will be: not compared.
      // A record whose identifier changed at the source while the destination still finds it
      // by the old one (an open identity conflict: Omnisend finds a contact by its email)
      // is looked up by the one the destination holds, not called missing and sent again
      // under the new one (which would make a second contact).
      bool waiting = false;
      std::string ident_path = "identifiers[" + ident.first + "].id", held_ident;
      engine_.with_store([&](store::Store& s) {
        auto e = s.find_identity(v.tenant, flow.destination_connection, ident.first, ident.second);
        waiting = e && !s.entity_ops(*e).empty();
        if (e && !waiting) {
          json::object sh = pipeline::decode_shadow(s.shadow(*e).fields_json);
          pipeline::ShadowField f = pipeline::shadow_field(sh, ident_path);
          if (f.held && f.held->is_string() && f.held->as_string() != ident.second)
            held_ident = std::string(f.held->as_string());
        }
      });
      if (waiting) {
        ++pending;
        continue;
      }
      std::string contact;
      delivery::SendResult res;
      bool found = false;
      // A 429 holds the connection's deliveries and the next lookup alike; this lookup is
      // asked again once the pause is over (a few times), not counted as an error.
      for (int tries = 0; tries < 5 && !run->stop; ++tries) {
        while (!run->stop) {
          int64_t wait = limiter->acquire(util::now_ms());
          if (wait == 0) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(wait, 200)));
        }
        if (run->stop) break;
        found = dest.find_contact(ident.first, held_ident.empty() ? ident.second : held_ident, &contact, &res);
        int64_t pause = found ? 0 : delivery::connection_pause_ms(res);
        if (pause == 0) break;
        limiter->pause_until(util::now_ms() + pause);
      }
      if (run->stop) break;
      if (!found) {
        ++errors;
        if (first_error.empty())
          first_error = (res.status ? std::to_string(res.status) + " " : "") + res.message;
        continue;
      }
      if (contact.empty()) {
        ++missing;
        gone.push_back(ident);
        requeue.push_back(std::move(rec));
        continue;
      }
      std::error_code ec;
      json::value held = json::parse(contact, ec, {}, workspace::json_parse_options(8));
      if (ec || !held.is_object()) {
        ++errors;
        if (first_error.empty()) first_error = "Omnisend answered a lookup with something other than a contact";
        continue;
      }
      pipeline::Flat there = pipeline::flatten(held.as_object(), model->atomic);
      bool differs = false;
      for (const auto& [path, value] : p.flat) {
        if (pipeline::owner_of(owners, path) == "destination") continue;
        if (!held_ident.empty() && path == ident_path) continue;  // the conflict's, not a loss
        auto it = there.find(path);
        if (it == there.end() || it->second != value) {
          differs = true;
          break;
        }
      }
      if (differs) {
        ++different;
        seen.emplace_back(ident, std::move(there));
        requeue.push_back(std::move(rec));
      } else {
        ++same;
      }
    }
    if (!requeue.empty()) {
      engine_.with_store([&](store::Store& s) {
        s.begin();
        try {
          const std::string& dc = flow.destination_connection;
          for (const auto& [type, id] : gone)
            if (auto e = s.find_identity(v.tenant, dc, type, id)) s.clear_shadow(*e);
          for (const auto& [ident, there] : seen) {
            auto e = s.find_identity(v.tenant, dc, ident.first, ident.second);
            if (!e) continue;
            // What the destination holds now, so the merge decides against it.
            json::object sh = pipeline::decode_shadow(s.shadow(*e).fields_json);
            pipeline::record_delivery(sh, {}, there, util::now_ms(), "destination");
            s.set_shadow(*e, pipeline::encode_shadow(sh));
          }
          for (auto& r : requeue) {
            s.inbox_add(r);
            s.audit({r.correlation_id, v.tenant, flow.name, "", "reconcile",
                     "re-queued by reconciliation run " + std::to_string(run->run_id) +
                         ": the destination record is missing or differs",
                     0});
          }
          s.commit();
        } catch (...) {
          s.rollback();
          throw;
        }
      });
      engine_.notify(v.tenant);
    }
    cursor = page.cursor;
    if (!page.more) break;
  }
  if (errors > 0)
    *incomplete = std::to_string(errors) + " of " + std::to_string(checked) + " records could not be looked up at " +
                  flow.destination_connection + " (the first: " + first_error + "); what they hold was not compared";
  return json::object{{"checked", checked}, {"missing", missing}, {"different", different},
                      {"same", same},       {"unmapped", unmapped}, {"errors", errors},
                      {"pending", pending}};
}

json::array Scheduler::flow_json(const std::string& tenant, const std::string& flow) {
  json::array out;
  auto v = engine_.active(tenant);
  std::lock_guard<std::mutex> lock(mu_);
  for (const char* job : kJobs) {
    json::object o{{"job", job}};
    std::string error;
    if (v) {
      auto sch = schedule_of(*v, flow, job, &error);
      if (sch) {
        o["schedule"] = sch->text;
        auto it = last_slot_.find(key_of(tenant, flow, job));
        int64_t last = it == last_slot_.end() ? 0 : it->second;
        sched::Due d = sched::due(*sch, last, util::now_ms());
        if (d.next_ms > 0 && d.next_ms < INT64_MAX) o["next_run"] = util::iso8601_ms(d.next_ms);
      } else if (!error.empty()) {
        o["schedule_error"] = error;
      }
    }
    auto r = runs_.find(key_of(tenant, flow, job));
    if (r != runs_.end() && !r->second->done) o["running"] = r->second->run_id;
    out.push_back(std::move(o));
  }
  return out;
}

}  // namespace weft::serve
