// weft check, weft test (with --watch) and weft dry-run.
#include "engine/cli/commands.h"

#include <sys/inotify.h>
#include <poll.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "connectors/registry.h"
#include "engine/cli/common.h"
#include "engine/pipeline/pipeline.h"
#include "engine/script/sandbox.h"
#include "engine/store/store.h"
#include "engine/workspace/secrets.h"
#include "engine/workspace/fixtures.h"
#include "engine/workspace/json_limits.h"
#include "engine/workspace/registry.h"
#include "engine/workspace/schema.h"

namespace weft::cli {
namespace json = boost::json;
namespace ws = weft::workspace;
namespace fs = std::filesystem;

void print_problems(const std::vector<ws::Problem>& problems) {
  for (const auto& p : problems) std::fprintf(stderr, "error: %s\n", p.str().c_str());
}

// ---- check ---------------------------------------------------------------------------

int run_check(const CheckOptions& o) {
  // Canonical first, so "acme/" and "." name the folder itself (their parent_path would not).
  std::error_code ec;
  fs::path workspace = fs::weakly_canonical(o.workspace, ec);
  if (ec || !fs::is_directory(workspace)) {
    std::fprintf(stderr, "error: %s: not a folder\n", o.workspace.c_str());
    return kConfigError;
  }
  std::vector<std::string> tenants;
  if (ws::is_tenant_dir(workspace)) {  // a tenant folder: check that tenant only, as test does
    tenants.push_back(workspace.filename().string());
    workspace = workspace.parent_path();
  } else {
    tenants = ws::list_tenants(workspace);
  }
  if (tenants.empty()) {
    std::fprintf(stderr, "error: %s: no tenant folders (a folder with a tenant.json) found\n", workspace.c_str());
    return kConfigError;
  }
  size_t bad = 0;
  for (const auto& t : tenants) {
    std::vector<ws::Problem> problems;
    auto v = ws::build_version(workspace, t, false, &problems);
    if (v) {
      std::printf("ok    %s  (%zu flows, version %s)\n", t.c_str(), v->flows.size(), v->version.c_str());
    } else {
      ++bad;
      std::printf("FAIL  %s\n", t.c_str());
      print_problems(problems);
    }
  }
  std::printf("%zu tenants checked, %zu with errors\n", tenants.size(), bad);
  return bad ? kConfigError : kOk;
}

// ---- test ----------------------------------------------------------------------------

namespace {

struct TestTarget {
  fs::path workspace;
  std::string tenant;
};

std::vector<TestTarget> resolve_targets(const std::vector<std::string>& dirs, bool* ok) {
  std::vector<TestTarget> out;
  for (const auto& d : dirs) {
    std::error_code ec;
    fs::path p = fs::weakly_canonical(d, ec);
    if (ec || !fs::is_directory(p)) {
      std::fprintf(stderr, "error: %s: not a folder\n", d.c_str());
      *ok = false;
      continue;
    }
    if (ws::is_tenant_dir(p)) {
      out.push_back({p.parent_path(), p.filename().string()});
      continue;
    }
    auto tenants = ws::list_tenants(p);
    if (tenants.empty()) {
      std::fprintf(stderr, "error: %s: no tenant folders (a folder with a tenant.json) found\n", d.c_str());
      *ok = false;
    }
    for (const auto& t : tenants) out.push_back({p, t});
  }
  return out;
}

struct Tally {
  size_t passed = 0, failed = 0, broken = 0;  // broken: tenants that could not load
};

// Runs the cases of one tenant; `only` limits them to some fixture files (watch mode).
void test_tenant(const TestTarget& target, const std::string& flow, const std::set<std::string>* only,
                 Tally& tally) {
  std::vector<ws::Problem> problems;
  auto t = ws::load_tenant(target.workspace, target.tenant, &problems);
  std::unique_ptr<script::Sandbox> box;
  if (t) {
    std::string err;
    box = script::Sandbox::create(t->code, &err);
    if (!box) problems = ws::problems_from_error(err, t->dir);
  }
  if (!box) {
    std::printf("ERROR %s: cannot run its cases\n", target.tenant.c_str());
    for (const auto& p : problems) std::printf("      %s\n", p.str().c_str());
    ++tally.broken;
    return;
  }
  for (const auto& r : ws::run_fixtures(*t, *box, flow)) {
    if (only && !only->count(r.c->file)) continue;
    if (r.passed) {
      ++tally.passed;
      std::printf("PASS  %s  %s\n", r.c->file.c_str(), r.c->name.c_str());
    } else {
      ++tally.failed;
      std::printf("FAIL  %s  %s\n", r.c->file.c_str(), r.c->name.c_str());
      std::istringstream lines(r.detail);
      std::string line;
      while (std::getline(lines, line)) std::printf("        %s\n", line.c_str());
    }
  }
}

int run_once(const std::vector<TestTarget>& targets, const std::string& flow, Tally& tally) {
  for (const auto& target : targets) test_tenant(target, flow, nullptr, tally);
  std::printf("%zu passed, %zu failed\n", tally.passed, tally.failed);
  std::fflush(stdout);
  if (tally.broken) return kConfigError;
  return tally.failed ? kRejected : kOk;
}

// Adds an inotify watch on `dir` and its subfolders; remembers which folder each watch is.
void watch_tree(int fd, const fs::path& dir, std::map<int, fs::path>& wds) {
  const uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM;
  int wd = inotify_add_watch(fd, dir.c_str(), mask);
  if (wd >= 0) wds[wd] = dir;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory() && e.path().filename() != ".git") watch_tree(fd, e.path(), wds);
}

int watch_loop(const std::vector<TestTarget>& targets, const std::string& flow) {
  int fd = inotify_init1(IN_CLOEXEC);
  if (fd < 0) {
    std::perror("inotify_init1");
    return kConfigError;
  }
  std::map<int, fs::path> wds;
  std::set<fs::path> roots;
  for (const auto& t : targets) roots.insert(t.workspace);
  for (const auto& r : roots) watch_tree(fd, r, wds);
  std::printf("watching %zu folders for changes (Ctrl-C to stop)\n", wds.size());
  std::fflush(stdout);
  alignas(inotify_event) char buf[16384];
  for (;;) {
    std::set<fs::path> changed;
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, -1) < 0) continue;
    // Collect a burst of events (editors write several files at once), then rerun once.
    do {
      ssize_t n = read(fd, buf, sizeof buf);
      for (ssize_t i = 0; i < n;) {
        auto* ev = reinterpret_cast<inotify_event*>(buf + i);
        if (ev->len && wds.count(ev->wd)) {
          fs::path p = wds[ev->wd] / ev->name;
          if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) && fs::is_directory(p)) {
            // Files written into a new folder before its watch existed count as changed.
            watch_tree(fd, p, wds);
            std::error_code ec;
            for (const auto& e : fs::recursive_directory_iterator(p, ec)) changed.insert(e.path());
          }
          changed.insert(p);
        }
        i += sizeof(inotify_event) + ev->len;
      }
    } while (poll(&pfd, 1, 150) > 0);
    for (auto it = changed.begin(); it != changed.end();) {  // only scripts and JSON matter
      std::string ext = it->extension().string();
      it = (ext == ".lua" || ext == ".json") ? std::next(it) : changed.erase(it);
    }
    if (changed.empty()) continue;
    // Affected cases: a fixture -> that case; a flow script or tenant.json -> the tenant's
    // cases; a lib module -> every tenant of that workspace.
    Tally tally;
    std::printf("\n-- change: %s%s\n", changed.begin()->filename().c_str(),
                changed.size() > 1 ? " and more" : "");
    for (const auto& target : targets) {
      fs::path tdir = target.workspace / target.tenant;
      bool all = false;
      std::set<std::string> only;
      for (const auto& p : changed) {
        auto rel = p.lexically_relative(target.workspace);
        auto first = rel.begin() == rel.end() ? std::string() : rel.begin()->string();
        if (first == "lib") all = true;
        else if (first == target.tenant) {
          auto inner = p.lexically_relative(tdir);
          if (inner.begin() != inner.end() && inner.begin()->string() == "tests" && p.extension() == ".json")
            only.insert(target.tenant + "/tests/" + p.filename().string());
          else
            all = true;
        }
      }
      if (all) test_tenant(target, flow, nullptr, tally);
      else if (!only.empty()) test_tenant(target, flow, &only, tally);
    }
    std::printf("%zu passed, %zu failed\n", tally.passed, tally.failed);
    std::fflush(stdout);
  }
}

}  // namespace

int run_test(const TestOptions& o) {
  bool ok = true;
  auto targets = resolve_targets(o.dirs.empty() ? std::vector<std::string>{"."} : o.dirs, &ok);
  if (!ok) return kConfigError;
  if (!o.flow.empty()) {
    // A misspelt --flow would otherwise run nothing and report "0 passed, 0 failed". Tenants
    // that cannot load are reported when run; only decide when every tenant loaded.
    bool found = false, unknown = false;
    std::set<std::string> names;
    for (const auto& target : targets) {
      std::vector<ws::Problem> problems;
      auto t = ws::load_tenant(target.workspace, target.tenant, &problems);
      if (!t) unknown = true;
      else if (t->flow(o.flow)) found = true;
      else for (const auto& kv : t->flows) names.insert(kv.first);
    }
    if (!found && !unknown) {
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
      std::fprintf(stderr, "error: --flow: no flow named '%s' in the selected tenants (flows: %s)\n", o.flow.c_str(),
                   list.c_str());
      return kConfigError;
    }
  }
  Tally tally;
  int rc = run_once(targets, o.flow, tally);
  if (!o.watch) return rc;
  return watch_loop(targets, o.flow);
}

// ---- dry-run -------------------------------------------------------------------------

namespace {

json::object note_json(const script::Note& n) {
  json::object o{{"fn", n.fn}, {"input", n.input}};
  if (n.reason.empty()) o["output"] = n.output;
  else o["refused"] = n.reason;
  return o;
}

}  // namespace

// What steps 4-6 would do with a mapped record: the identity decision, the merge per field
// and the exact requests, against the store's current state (read-only: rolled back).
// Without a database, the records of one run go in one transaction (a later record sees
// the identities an earlier one made). Against a database (--db, or the admin API on the
// live one), each record is planned in a transaction of its own, rolled back at once and
// after the mapping: planning needs SQLite's write lock, and a weft serve writing to the
// same database must not wait for a whole dry-run, only for one record's plan.
class Planner {
 public:
  Planner(std::shared_ptr<const ws::TenantVersion> version, const std::string& db)
      : version_(std::move(version)), per_record_(!db.empty()) {
    try {
      if (!db.empty() && !fs::exists(db)) {
        error_ = "--db " + db + ": no such database";
        return;
      }
      store_ = db.empty() ? store::open_sqlite(":memory:") : store::open_sqlite_as_is(db);
      pipeline_ = std::make_unique<pipeline::Pipeline>(version_, *store_);
      if (!per_record_) store_->begin();
    } catch (const std::exception& e) {
      error_ = e.what();
    }
  }
  ~Planner() {
    try {
      if (pipeline_ && !per_record_) store_->rollback();
    } catch (const std::exception&) {
    }
  }
  const std::string& error() const { return error_; }

  json::object plan(const ws::Flow& flow, std::string_view record, const std::string& correlation_id, size_t n,
                    const json::object& context) {
    json::object out;
    if (!pipeline_) {
      out["error"] = error_;
      return out;
    }
    store::InboxRecord rec;
    rec.tenant = version_->tenant;
    rec.connection = flow.source_connection;
    rec.flow = flow.name;
    rec.message_id = "dry-run:" + std::to_string(n);
    rec.correlation_id = correlation_id;
    rec.payload = std::string(record);
    pipeline::Options opts;
    opts.context = &context;
    pipeline::Prepared prepared = pipeline_->prepare(flow, rec, opts);
    struct Scope {  // the record's own transaction (per_record_), however the plan ends
      Planner& p;
      explicit Scope(Planner& planner) : p(planner) {
        if (p.per_record_) p.store_->begin();
      }
      ~Scope() {
        try {
          if (p.per_record_) p.store_->rollback();
        } catch (const std::exception&) {  // nothing was written; the connection goes with the run
        }
      }
    };
    // A store that stays busy (a weft serve holding its write lock past the busy timeout)
    // fails this record's plan, not the whole dry-run.
    std::optional<Scope> scope;
    pipeline::RecordResult r;
    try {
      scope.emplace(*this);
      r = pipeline_->commit(prepared, {});
    } catch (const std::exception& e) {
      out["error"] = "planning against the store: " + secrets_.redact(e.what());
      return out;
    }
    out["status"] = pipeline::status_name(r.status);
    if (!r.reason.empty()) out["reason"] = r.reason;
    if (!r.identity.empty()) out["identity"] = r.identity;
    json::array fields;
    for (const auto& d : r.decisions) {
      json::object f{{"path", d.path}, {"owner", d.owner}, {"action", pipeline::action_name(d.action)},
                     {"why", d.why}, {"value", d.next}};
      if (!d.held.is_null()) f["destination_holds"] = d.held;
      fields.push_back(std::move(f));
    }
    if (!fields.empty()) out["fields"] = std::move(fields);
    if (r.status == pipeline::RecordResult::Status::planned && !r.op.guard.empty()) {
      // Sent only if the destination holds nothing there (a flagged field, {"flag": path}: or
      // the same value; another is a conflict): looked up before the first write.
      std::error_code ec;
      json::value guard = json::parse(r.op.guard, ec);
      if (!ec) out["first_write_lookup"] = guard;
    }
    if (r.status == pipeline::RecordResult::Status::planned) {
      json::array requests;
      try {
        const json::object& conn =
            version_->config.at("connections").as_object().at(flow.destination_connection).as_object();
        auto dest = connectors::make_destination(flow.destination_connection, conn, flow.destination_entity,
                                                 secrets_, true);
        delivery::Request q = dest->request(r.op, store_->entity(r.entity_id).remote_id, true);
        json::object headers;
        for (const auto& [k, v] : q.headers) headers[k] = secrets_.redact(v);
        json::value body = json::parse(q.body, {}, ws::json_parse_options(8));
        requests.push_back(json::object{{"method", q.method}, {"url", q.url}, {"headers", headers}, {"body", body}});
      } catch (const std::exception& e) {
        requests.push_back(json::object{{"error", secrets_.redact(e.what())}});
      }
      out["requests"] = std::move(requests);
    }
    return out;
  }

 private:
  std::shared_ptr<const ws::TenantVersion> version_;
  bool per_record_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<pipeline::Pipeline> pipeline_;
  ws::Secrets secrets_;
  std::string error_;
};

json::object dry_run_record(const ws::TenantVersion& version, script::Sandbox& box, const script::CallContext& context,
                            Planner& planner, const std::string& flow_name, std::string_view record, size_t n,
                            bool* rejected) {
  const ws::Flow& flow = *version.flow(flow_name);
  std::string schema_name = version.destination_schema(flow);
  const ws::Schema* schema = ws::Schema::find(schema_name);
  *rejected = false;
  json::object out{{"record", n}, {"tenant", version.tenant}, {"flow", flow_name},
                   {"script_version", version.version}};
  script::CallContext ctx = context;
  ctx.correlation_id = "dry-run:" + std::to_string(n);
  // As text, like weft map: the same parser, limits and invalid_json reasons.
  script::Outcome res = box.map(flow_name, record, ctx, {true});
  json::array notes;
  for (const auto& note : res.notes) notes.push_back(note_json(note));
  json::value payload;
  std::error_code ec;
  if (res.kind == script::Outcome::Kind::ok) payload = json::parse(res.payload, ec, {}, ws::json_parse_options());
  if (res.kind == script::Outcome::Kind::ok && ec) {
    // The sandbox's output could not be read back: an engine fault, shown as one.
    *rejected = true;
    out["status"] = "rejected";
    out["error"] = "output";
    out["reason"] = "the payload could not be read back as JSON (" + ec.message() + ")";
  } else if (res.kind == script::Outcome::Kind::ok) {
    json::object validation{{"schema", schema ? json::value(schema_name) : json::value(nullptr)}};
    json::array errors;
    std::vector<ws::SchemaIssue> issues;
    if (schema) issues = schema->validate(payload);
    for (const auto& issue : issues) errors.push_back(json::object{{"path", issue.path}, {"message", issue.message}});
    validation["valid"] = errors.empty();
    validation["errors"] = std::move(errors);
    if (!schema) validation["note"] = "no schema for " + flow.destination_system + " " + flow.destination_entity;
    if (issues.empty()) {
      out["status"] = "ok";
    } else {
      *rejected = true;
      out["status"] = "rejected";
      out["error"] = "schema";
      out["reason"] = "payload does not match " + schema_name + ": " + issues[0].path + ": " + issues[0].message +
                      (issues.size() > 1 ? " (and " + std::to_string(issues.size() - 1) + " more)" : "");
    }
    out["payload"] = std::move(payload);
    out["validation"] = std::move(validation);
    if (issues.empty()) out["plan"] = planner.plan(flow, record, ctx.correlation_id, n, ctx.fields);
  } else if (res.kind == script::Outcome::Kind::skipped) {
    out["status"] = "skipped";
  } else {
    *rejected = true;
    out["status"] = "rejected";
    out["error"] = res.error;
    out["reason"] = res.reason;
    if (!res.where.file.empty()) out["where"] = res.where.str();
    if (!res.fields.empty()) out["fields"] = res.fields;
  }
  out["notes"] = std::move(notes);
  return out;
}

int run_dry_run(const DryRunOptions& o) {
  Loaded l;
  if (int rc = load_flow(o.workspace, o.tenant, o.flow, o.context, &l); rc != kOk) return rc;
  Planner planner(l.version, o.db);
  if (!planner.error().empty()) {
    std::fprintf(stderr, "error: %s\n", planner.error().c_str());
    return kConfigError;
  }
  std::string text;
  if (!read_input(o.input, &text)) return kConfigError;
  std::vector<std::string_view> records = split_records(text);
  bool pretty = o.pretty || isatty(STDOUT_FILENO);
  size_t rejected = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    bool bad = false;
    json::object out = dry_run_record(*l.version, *l.box, l.context, planner, o.flow, records[i], i + 1, &bad);
    if (bad) ++rejected;
    std::string s = pretty ? pretty_json(out) : json::serialize(out);  // fields in the order above
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fputc('\n', stdout);
  }
  std::fprintf(stderr, "%zu records: %zu ok, %zu rejected (script version %s)\n", records.size(),
               records.size() - rejected, rejected, l.version->version.c_str());
  return rejected ? kRejected : kOk;
}

json::array dry_run_json(std::shared_ptr<const ws::TenantVersion> version, const std::string& flow,
                         const json::object& context, std::string_view text, const std::string& db,
                         std::string* error) {
  const ws::Flow* f = version->flow(flow);
  if (!f) {
    *error = "tenant " + version->tenant + " has no flow '" + flow + "'";
    return {};
  }
  std::string err;
  auto box = script::Sandbox::create(version->code, &err);
  if (!box) {
    *error = err;
    return {};
  }
  script::CallContext ctx;
  ctx.fields = f->context;
  for (const auto& kv : context) ctx.fields[kv.key()] = kv.value();
  Planner planner(version, db);
  if (!planner.error().empty()) {
    *error = planner.error();
    return {};
  }
  json::array out;
  std::vector<std::string_view> records = split_records(text);
  for (size_t i = 0; i < records.size(); ++i) {
    bool bad = false;
    out.push_back(dry_run_record(*version, *box, ctx, planner, flow, records[i], i + 1, &bad));
  }
  return out;
}

}  // namespace weft::cli
