#include "engine/workspace/tenant.h"

#include "engine/sched/schedule.h"

#include <openssl/evp.h>
#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "connectors/registry.h"
#include "engine/delivery/retry.h"
#include "engine/http/client.h"
#include "engine/workspace/json_limits.h"
#include "engine/workspace/schema.h"
#include "engine/workspace/secrets.h"

namespace weft::workspace {
namespace json = boost::json;

std::string Problem::str() const {
  std::string s = file;
  if (line > 0) s += ":" + std::to_string(line);
  s += ": ";
  if (!path.empty()) s += path + ": ";
  return s + message;
}

std::string reserved_ctx_key(std::string_view key) {
  for (std::string_view k : {"tenant", "flow", "correlation_id", "now"})
    if (key == k)
      return "ctx." + std::string(key) + " is set by weft" +
             (key == "now" ? std::string(" (the time of the run; a fixture's \"now\" fixes it)") : std::string()) +
             ": give the context value another name";
  return "";
}

const Flow* TenantVersion::flow(const std::string& name) const {
  auto it = flows.find(name);
  return it == flows.end() ? nullptr : &it->second;
}

std::string TenantVersion::destination_schema(const Flow& f) const {
  return "destinations/" + f.destination_system + "." + f.destination_entity + ".schema.json";
}

namespace {

bool read_file(const fs::path& p, std::string* out) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

std::string sha256_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned i = 0; i < n; ++i) {
    s += hex[md[i] >> 4];
    s += hex[md[i] & 15];
  }
  return s;
}

// Line of the n-th byte, for parse errors.
int line_of(const std::string& text, size_t offset) {
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + std::min(offset, text.size()), '\n'));
}

// Parses a JSON file strictly; on error adds a Problem with the line. `extra_levels` is how
// deep the file wraps a record (a fixture's input sits one level down).
// The first key that appears twice in one object of `e`: its object's JSON path in *path
// and the key in *key. Boost.JSON keeps the last of equal keys, so a flow block copied and
// not renamed would vanish without a word; simdjson's DOM keeps both.
bool find_duplicate_key(simdjson::dom::element e, std::string* path, std::string* key) {
  if (e.type() == simdjson::dom::element_type::OBJECT) {
    std::set<std::string_view> seen;
    simdjson::dom::object object = e.get_object().value_unsafe();  // a copy: the result is a temporary
    for (auto field : object) {
      if (!seen.insert(field.key).second) {
        *key = std::string(field.key);
        return true;
      }
      size_t at = path->size();
      *path += "." + std::string(field.key);
      if (find_duplicate_key(field.value, path, key)) return true;
      path->resize(at);
    }
  } else if (e.type() == simdjson::dom::element_type::ARRAY) {
    size_t i = 0;
    simdjson::dom::array array = e.get_array().value_unsafe();
    for (auto item : array) {
      size_t at = path->size();
      *path += "[" + std::to_string(i++) + "]";
      if (find_duplicate_key(item, path, key)) return true;
      path->resize(at);
    }
  }
  return false;
}

bool parse_json_file(const fs::path& p, const std::string& shown, json::value* out, std::string* text,
                     std::vector<Problem>* problems, int extra_levels = 0) {
  if (!read_file(p, text)) {
    problems->push_back({shown, 0, "", "cannot read the file"});
    return false;
  }
  json::stream_parser parser({}, json_parse_options(extra_levels));
  std::error_code ec;
  size_t used = parser.write_some(text->data(), text->size(), ec);
  if (!ec) parser.finish(ec);
  if (ec) {
    problems->push_back({shown, line_of(*text, used), "", "invalid JSON: " + ec.message()});
    return false;
  }
  *out = parser.release();
  simdjson::dom::parser dom;
  simdjson::dom::element root;
  std::string path = "$", key;
  if (dom.parse(*text).get(root) == simdjson::SUCCESS && find_duplicate_key(root, &path, &key)) {
    problems->push_back({shown, 0, path, "duplicate key \"" + key + "\": only the last would count"});
    return false;
  }
  return true;
}

// Connection fields that hold secrets: the schema requires a ${ENV_VAR} reference there.
bool is_secret_path(const std::string& path) {
  static const std::regex re(R"(^\$\.connections\.[^.]+\.(client_secret|api_key|webhook\.hmac_secret|webhook\.bearer_token)$)");
  return std::regex_match(path, re);
}

// What the schema cannot say about a connection. URLs are read as the HTTP client reads
// them (its pattern takes "https:///" and query strings, which the client refuses); one
// that is a ${ENV_VAR} is read when the connection is used, and refused then.
void check_connection(const std::string& name, const json::object& c, const std::string& shown,
                      std::vector<Problem>* problems) {
  std::string base = "$.connections." + name;
  for (const char* key : {"api_url", "auth_url"}) {
    auto* v = c.if_contains(key);
    if (!v || !v->is_string() || is_secret_ref(std::string(v->as_string()))) continue;
    if (!http::Url::parse(std::string(v->as_string())))
      problems->push_back({shown, 0, base + "." + key,
                           "is not a URL weft can call: http:// or https://, a host (and port), then a path if "
                           "any; no query, fragment or spaces"});
  }
  // A webhook that could authenticate nothing answers every request 401, and the sender
  // gives up on them; one with two ways would check one and ignore the other.
  auto* hook = c.if_contains("webhook");
  if (!hook || !hook->is_object()) return;
  const json::object& w = hook->as_object();
  std::string system = c.at("system").is_string() ? std::string(c.at("system").as_string()) : "";
  if (!connectors::takes_webhooks(system))
    problems->push_back({shown, 0, base + ".webhook",
                         "weft takes webhooks from commercetools connections only, not " + system});
  bool hmac = w.contains("hmac_secret"), bearer = w.contains("bearer_token");
  auto* open_v = w.if_contains("unauthenticated");
  bool open = open_v && open_v->is_bool() && open_v->as_bool();
  if (hmac && bearer)
    problems->push_back({shown, 0, base + ".webhook",
                         "has both hmac_secret and bearer_token: give one (only hmac_secret would be checked)"});
  else if (open && (hmac || bearer))
    problems->push_back({shown, 0, base + ".webhook.unauthenticated",
                         std::string("is true beside ") + (hmac ? "hmac_secret" : "bearer_token") +
                             ": give one (webhooks would still be authenticated)"});
  else if (!hmac && !bearer && !open)
    problems->push_back({shown, 0, base + ".webhook",
                         "needs hmac_secret or bearer_token (or \"unauthenticated\": true, for local tests only): "
                         "without one every webhook is refused (401)"});
  if (w.contains("signature_header") && !hmac)
    problems->push_back({shown, 0, base + ".webhook.signature_header", "applies to hmac_secret only"});
}

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// What sync and serve can do with a flow's ends, so check refuses what they would refuse
// at run time (connectors/registry.h says what weft takes and delivers). An entity or a
// system weft does not work with yet (in that role) is for a disabled flow only: map,
// dry-run and test run it (a product feed being written before its connector exists),
// sync and serve never do.
void check_flow_ends(const Flow& f, const std::string& base, bool source_known, bool destination_known,
                     const std::string& shown, std::vector<Problem>* problems) {
  const char* disabled_only = "; a flow with it must be \"enabled\": false (for map, dry-run and test only)";
  if (destination_known) {
    auto known = connectors::destination_entities(f.destination_system);
    if (!known.empty() && !connectors::destination_model(f.destination_system, f.destination_entity) && f.enabled)
      problems->push_back({shown, 0, base + ".destination.entity",
                           f.destination_system + " has no entity \"" + f.destination_entity + "\" (known: " +
                               joined(known) + ")" + disabled_only});
    else if (known.empty() && f.enabled)
      problems->push_back({shown, 0, base + ".destination.connection",
                           "weft cannot deliver to " + f.destination_system + " yet" + disabled_only});
  }
  if (source_known) {
    auto known = connectors::source_entities(f.source_system);
    if (!known.empty() && connectors::source_support(f.source_system, f.source_entity) == connectors::SourceSupport::none &&
        f.enabled)
      problems->push_back({shown, 0, base + ".source.entity",
                           f.source_system + " has no entity \"" + f.source_entity + "\" weft can take (known: " +
                               joined(known) + ")" + disabled_only});
    else if (known.empty() && f.enabled)
      problems->push_back({shown, 0, base + ".source.connection",
                           "weft cannot take records from " + f.source_system + " yet" + disabled_only});
  }
}

// What needs a source weft can pull: a flow whose records come only by webhook has nothing
// to pull, back-fill or reconcile, and without a webhook on its connection it would never
// receive a record. Reconciliation also needs a destination it can look records up in.
void check_flow_jobs(const Flow& f, const json::object& fo, const json::object* source_conn, const std::string& base,
                     const std::string& shown, std::vector<Problem>* problems) {
  if (fo.contains("reconcile") && !f.destination_system.empty() &&
      connectors::destination_model(f.destination_system, f.destination_entity) &&
      !connectors::can_reconcile(f.destination_system, f.destination_entity))
    problems->push_back({shown, 0, base + ".reconcile",
                         "reconciliation compares with Omnisend contacts only yet, not " + f.destination_system + " " +
                             f.destination_entity});
  if (connectors::source_support(f.source_system, f.source_entity) != connectors::SourceSupport::webhooks) return;
  std::string why = f.source_system + " " + f.source_entity + " records come by webhook only: weft cannot pull them";
  for (const char* job : {"pull", "reconcile", "backfill"})
    if (fo.contains(job)) problems->push_back({shown, 0, base + "." + job, why});
  if (auto* r = fo.if_contains("refresh_on_change"); r && r->is_bool() && r->as_bool())
    problems->push_back({shown, 0, base + ".refresh_on_change", why + " (a refresh is a backfill)"});
  if (f.enabled && source_conn && !source_conn->contains("webhook"))
    problems->push_back({shown, 0, base + ".source.connection",
                         why + ", and connection " + f.source_connection +
                             " takes no webhooks (it has no \"webhook\"): the flow would never receive a record"});
}

// "\"project\" is required for commercetools connections", for the schema's per-system
// required settings (valijson says only "Missing required property 'project'."); "" otherwise.
std::string connection_requirement(const json::value& doc, const SchemaIssue& i) {
  static const std::regex path_re(R"(^\$\.connections\.([^.]+)$)");
  static const std::regex message_re(R"(^Missing required property '([^']+)'\.?$)");
  std::smatch p, m;
  if (!std::regex_match(i.path, p, path_re) || !std::regex_match(i.message, m, message_re)) return "";
  const json::value* system = nullptr;
  if (auto* conns = doc.is_object() ? doc.as_object().if_contains("connections") : nullptr; conns && conns->is_object())
    if (auto* c = conns->as_object().if_contains(p[1].str()); c && c->is_object()) system = c->as_object().if_contains("system");
  if (!system || !system->is_string() || m[1] == "system") return "";
  return "\"" + m[1].str() + "\" is required for " + std::string(system->as_string()) + " connections";
}

// Numbers the schema cannot bound or relate: a duration's digits (its pattern takes any
// number of them; one that overflowed would fall back to the default unseen), and a backoff
// that would start above its own cap. Read with the parser the run uses.
void check_flow_numbers(const json::object& fo, const std::string& base, const std::string& shown,
                        std::vector<Problem>* problems) {
  auto duration = [&](const json::value* block, const char* key, const std::string& path) {
    auto* v = block && block->is_object() ? block->as_object().if_contains(key) : nullptr;
    if (!v || !v->is_string() || delivery::parse_duration_ms(std::string(v->as_string()))) return;
    problems->push_back({shown, 0, path, "\"" + std::string(v->as_string()) + "\" is not a duration weft can use: " +
                                             "a whole number of ms, s, m, h or d, at most " +
                                             std::to_string(delivery::kMaxDurationMs / 86400000) + "d"});
  };
  const json::value* retry = fo.if_contains("retry");
  duration(retry, "max_age", base + ".retry.max_age");
  duration(fo.if_contains("reconcile"), "window", base + ".reconcile.window");
  if (retry && retry->is_object()) {
    delivery::RetryPolicy p = delivery::retry_policy_from(&retry->as_object());
    if (p.base_ms > p.max_ms)
      problems->push_back({shown, 0, base + ".retry.base_ms",
                           std::to_string(p.base_ms) + " is more than max_ms (" + std::to_string(p.max_ms) +
                               (retry->as_object().contains("max_ms") ? "" : ", the default") +
                               "): the backoff would start above its own cap"});
  }
}

// valijson's "Expected number less than or equal to 1000.000000" as "must be at most 1000";
// "" for other messages.
std::string bound_message(const std::string& message) {
  static const std::regex re(R"(^Expected number (less|greater) than or equal to (-?[0-9]+)(?:\.([0-9]*[1-9])?0*)?$)");
  std::smatch m;
  if (!std::regex_match(message, m, re)) return "";
  return std::string("must be ") + (m[1] == "less" ? "at most " : "at least ") + m[2].str() +
         (m[3].matched ? "." + m[3].str() : "");
}

void add_schema_issues(const Schema& schema, const json::value& doc, const std::string& shown,
                       std::vector<Problem>* problems) {
  for (const auto& i : schema.validate(doc)) {
    // The pattern says what is expected, but not why: say it (never echo the value).
    if (is_secret_path(i.path) && i.message.rfind("does not match the pattern", 0) == 0)
      problems->push_back({shown, 0, i.path, "must be a ${ENV_VAR} reference, not the secret itself"});
    else if (std::string why = connection_requirement(doc, i); !why.empty())
      problems->push_back({shown, 0, i.path, why});
    else if (std::string bound = bound_message(i.message); !bound.empty())
      problems->push_back({shown, 0, i.path, bound});
    else
      problems->push_back({shown, 0, i.path, i.message});
  }
}

// lib/ modules: "lib/util/text.lua" is module "util.text".
void load_lib(const fs::path& workspace, script::TenantCode& code, std::string& hash_input,
              std::vector<Problem>* problems) {
  fs::path lib = workspace / "lib";
  if (!fs::is_directory(lib)) return;
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(lib))
    if (e.is_regular_file() && e.path().extension() == ".lua") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::string rel = fs::relative(f, lib).generic_string();
    std::string name = rel.substr(0, rel.size() - 4);
    std::replace(name.begin(), name.end(), '/', '.');
    script::Source src{"lib/" + rel, ""};
    if (!read_file(f, &src.code)) {
      problems->push_back({"lib/" + rel, 0, "", "cannot read the file"});
      continue;
    }
    hash_input += "lib/" + rel + '\0' + src.code + '\0';
    code.lib[name] = std::move(src);
  }
}

void load_fixtures(const fs::path& dir, const std::string& tenant, TenantVersion& t,
                   std::string& hash_input, std::vector<Problem>* problems) {
  fs::path tests = dir / "tests";
  if (!fs::is_directory(tests)) return;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(tests))
    if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  const Schema& schema = Schema::get("test-case.schema.json");
  for (const auto& f : files) {
    std::string shown = tenant + "/tests/" + f.filename().string();
    json::value doc;
    std::string text;
    if (!parse_json_file(f, shown, &doc, &text, problems, 1)) continue;
    hash_input += shown + '\0' + text + '\0';
    size_t before = problems->size();
    // Numbers as records have them: Boost.JSON reads an integer past 64 bits as a rounded
    // double, so a fixture would pass with a record that map refuses as invalid JSON.
    {
      simdjson::dom::parser numbers;
      auto err = numbers.parse(text).error();
      if (err == simdjson::NUMBER_ERROR)
        problems->push_back({shown, 0, "$",
                             std::string("a number is out of range (") + script::kNumberRangeRule +
                                 "): weft refuses such a record as invalid JSON"});
    }
    add_schema_issues(schema, doc, shown, problems);
    if (problems->size() != before) continue;
    const auto& o = doc.get_object();
    FixtureCase c;
    c.file = shown;
    c.name = std::string(o.at("name").get_string());
    c.flow = std::string(o.at("flow").get_string());
    if (!t.flows.count(c.flow)) {
      problems->push_back({shown, 0, "$.flow", "no flow named '" + c.flow + "' in " + tenant + "/tenant.json"});
      continue;
    }
    if (auto* ctx = o.if_contains("context")) {
      c.context = ctx->get_object();
      for (const auto& kv : c.context)
        if (std::string why = reserved_ctx_key(kv.key()); !why.empty())
          problems->push_back({shown, 0, "$.context." + std::string(kv.key()), why});
    }
    if (auto* now = o.if_contains("now")) c.now = std::string(now->get_string());
    c.input = o.at("input");
    if (auto* e = o.if_contains("expect")) {
      c.expect = FixtureCase::Expect::output;
      c.expected = *e;
    } else if (auto* r = o.if_contains("expect_reject")) {
      c.expect = FixtureCase::Expect::reject;
      c.reject_substring = std::string(r->get_string());
    } else {
      c.expect = FixtureCase::Expect::skip;
    }
    t.fixtures.push_back(std::move(c));
  }
}

}  // namespace

std::vector<std::string> list_tenants(const fs::path& workspace) {
  std::vector<std::string> out;
  std::error_code ec;
  // A folder that cannot be read (another user's, lost+found) is not a tenant, not an error.
  for (const auto& e : fs::directory_iterator(workspace, ec)) {
    std::error_code dir_ec, file_ec;
    if (e.is_directory(dir_ec) && fs::exists(e.path() / "tenant.json", file_ec)) out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool is_tenant_dir(const fs::path& dir) { return fs::exists(dir / "tenant.json"); }

std::shared_ptr<const TenantVersion> load_tenant(const fs::path& workspace, const std::string& tenant,
                                                 std::vector<Problem>* problems) {
  size_t before = problems->size();
  auto t = std::make_shared<TenantVersion>();
  t->tenant = tenant;
  t->dir = workspace / tenant;
  std::string shown = tenant + "/tenant.json";
  json::value doc;
  std::string text;
  if (!parse_json_file(t->dir / "tenant.json", shown, &doc, &text, problems)) return nullptr;
  add_schema_issues(Schema::get("tenant.schema.json"), doc, shown, problems);
  if (problems->size() != before) return nullptr;
  std::string hash_input = std::string("tenant.json") + '\0' + text + '\0';

  const auto& o = doc.get_object();
  t->config = o;
  if (o.at("tenant").get_string() != tenant)
    problems->push_back({shown, 0, "$.tenant", "is \"" + std::string(o.at("tenant").get_string()) +
                                                   "\" but the folder is \"" + tenant + "\""});
  t->code.tenant = tenant;
  if (auto* lim = o.if_contains("limits")) {
    if (auto* c = lim->as_object().if_contains("cpu_ms")) t->code.limits.cpu_ms = static_cast<int>(c->to_number<int64_t>());
    if (auto* m = lim->as_object().if_contains("memory_mb")) t->code.limits.memory_mb = static_cast<int>(m->to_number<int64_t>());
  }
  const auto& conns = o.at("connections").get_object();
  for (const auto& [name, c] : conns) check_connection(std::string(name), c.get_object(), shown, problems);
  for (const auto& [name, fv] : o.at("flows").get_object()) {
    const auto& fo = fv.get_object();
    Flow f;
    f.name = std::string(name);
    f.script = std::string(fo.at("script").get_string());
    const auto& src = fo.at("source").get_object();
    const auto& dst = fo.at("destination").get_object();
    f.source_connection = std::string(src.at("connection").get_string());
    f.source_entity = std::string(src.at("entity").get_string());
    f.destination_connection = std::string(dst.at("connection").get_string());
    f.destination_entity = std::string(dst.at("entity").get_string());
    std::string base = "$.flows." + f.name;
    if (auto* s = conns.if_contains(f.source_connection))
      f.source_system = std::string(s->at("system").get_string());
    else
      problems->push_back({shown, 0, base + ".source.connection", "no connection named '" + f.source_connection + "'"});
    if (auto* d = conns.if_contains(f.destination_connection))
      f.destination_system = std::string(d->at("system").get_string());
    else
      problems->push_back({shown, 0, base + ".destination.connection", "no connection named '" + f.destination_connection + "'"});
    if (auto* c = fo.if_contains("context")) {
      f.context = c->get_object();
      for (const auto& kv : f.context)
        if (std::string why = reserved_ctx_key(kv.key()); !why.empty())
          problems->push_back({shown, 0, base + ".context." + std::string(kv.key()), why});
    }
    if (auto* e = fo.if_contains("enabled")) f.enabled = e->as_bool();
    check_flow_ends(f, base, !f.source_system.empty(), !f.destination_system.empty(), shown, problems);
    auto* source_conn = conns.if_contains(f.source_connection);
    check_flow_jobs(f, fo, source_conn ? &source_conn->as_object() : nullptr, base, shown, problems);
    check_flow_numbers(fo, base, shown, problems);
    if (auto* w = fo.if_contains("first_write")) f.lookup_first_write = w->as_string() != "send";
    // Schedules are checked here so weft check (and a reload) refuses a bad cron expression,
    // and a block that would never run: `pull` is only a schedule (any job can be started
    // through the admin API without one); `reconcile` may be only a window, for the runs
    // started there.
    for (const char* job : {"pull", "reconcile"}) {
      auto* spec = fo.if_contains(job);
      if (!spec || !spec->is_object()) continue;
      json::object only;
      for (const char* k : {"every", "cron", "timezone"})
        if (auto* x = spec->as_object().if_contains(k)) only[k] = *x;
      if (only.empty() && std::string_view(job) == "pull") {
        problems->push_back({shown, 0, base + ".pull",
                             "needs every (\"5m\") or cron (\"*/5 * * * *\"): without one weft serve never pulls"});
        continue;
      }
      if (only.empty() && !spec->as_object().contains("window")) {
        problems->push_back({shown, 0, base + ".reconcile",
                             "sets nothing: every (\"1d\") or cron (\"0 3 * * *\") schedules it; without them weft "
                             "serve never reconciles (a window alone is for runs started through the admin API)"});
        continue;
      }
      if (only.empty()) continue;
      std::string why;
      if (!sched::parse_schedule(only, &why)) problems->push_back({shown, 0, base + "." + job, why});
    }
    // Canonical paths follow symlinks: neither "..", nor an absolute path, nor a link may
    // lead a tenant to read a file outside its own folder.
    std::error_code ec;
    fs::path real = fs::canonical(t->dir / f.script, ec);
    if (ec) {
      problems->push_back({shown, 0, base + ".script", "cannot read " + tenant + "/" + f.script});
      continue;
    }
    fs::path inside = real.lexically_relative(fs::canonical(t->dir, ec));
    if (ec || inside.empty() || *inside.begin() == "..") {
      problems->push_back({shown, 0, base + ".script", "must stay inside the tenant folder"});
      continue;
    }
    script::Source s{f.script, ""};
    if (!read_file(real, &s.code)) {
      problems->push_back({shown, 0, base + ".script", "cannot read " + tenant + "/" + f.script});
      continue;
    }
    s.name = tenant + "/" + f.script;  // how errors name the file
    hash_input += f.script + '\0' + s.code + '\0';
    t->code.flows[f.name] = std::move(s);
    t->flows[f.name] = std::move(f);
  }
  load_lib(workspace, t->code, hash_input, problems);
  load_fixtures(t->dir, tenant, *t, hash_input, problems);
  if (problems->size() != before) return nullptr;
  t->version = sha256_hex(hash_input).substr(0, 12);
  t->code.version = t->version;
  return t;
}

Problem problem_from_lua(const std::string& line, const fs::path&) {
  static const std::regex re(R"(^([^:\s]+\.lua):(\d+): (.*)$)");
  std::smatch m;
  int n = 0;
  if (std::regex_match(line, m, re)) {
    const std::string digits = m[2];
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec == std::errc() && end == digits.data() + digits.size()) return {m[1], n, "", m[3]};
  }
  return {"?", 0, "", line};
}

std::vector<Problem> problems_from_error(const std::string& error, const fs::path& tenant_dir) {
  std::vector<Problem> out;
  std::istringstream lines(error);
  std::string line;
  while (std::getline(lines, line))
    if (!line.empty()) out.push_back(problem_from_lua(line, tenant_dir));
  if (out.empty()) out.push_back({"?", 0, "", "the sandbox could not be built (no reason given)"});
  return out;
}

std::vector<Problem> compile_check(const TenantVersion& t) {
  std::string err;
  if (script::Sandbox::create(t.code, &err)) return {};
  return problems_from_error(err, t.dir);
}

std::string TenantVersion::mapping_id(const std::string& name) const {
  const Flow* f = flow(name);
  auto it = code.flows.find(name);
  if (!f || it == code.flows.end()) return "";
  std::string s;
  for (const auto& [mod, src] : code.lib) s += mod + '\0' + src.code + '\0';
  s += it->second.code + '\0' + boost::json::serialize(f->context);
  return sha256_hex(s).substr(0, 16);
}

}  // namespace weft::workspace
