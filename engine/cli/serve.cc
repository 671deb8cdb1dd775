// weft serve: the long-running engine (webhooks, scheduler, live reload, admin API).
#include <fcntl.h>
#include <boost/json.hpp>
#include <signal.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <thread>

#include "engine/cli/commands.h"
#include "engine/serve/engine.h"
#include "engine/serve/server.h"
#include "engine/util/thread_name.h"
#include "engine/util/time.h"

namespace weft::cli {

namespace fs = std::filesystem;

namespace {

// A JSON string literal (quotes included) of `s`.
std::string json_quote(std::string_view s) { return boost::json::serialize(boost::json::string(s)); }

// One JSON object per line: at, level, msg, and the tenant, flow and correlation id that the
// engine's messages name ("tenant acme: flow customers: ... [correlation 0123...]").
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::string_view text(msg.payload.data(), msg.payload.size());
    int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()).count();
    std::string line = "{\"at\":\"" + util::iso8601_ms(ms) + "\",\"level\":\"" +
                       std::string(spdlog::level::to_string_view(msg.level).data(),
                                   spdlog::level::to_string_view(msg.level).size()) +
                       "\"";
    static const std::regex tenant_re(R"(^tenant ([A-Za-z0-9_-]+):)"), flow_re(R"(flow ([A-Za-z0-9_-]+):)"),
        cid_re(R"(\[correlation ([A-Za-z0-9._:-]+)\])");
    std::string s(text);
    std::smatch m;
    if (std::regex_search(s, m, tenant_re)) line += ",\"tenant\":" + json_quote(m[1].str());
    if (std::regex_search(s, m, flow_re)) line += ",\"flow\":" + json_quote(m[1].str());
    // The correlation id is the last "[correlation ...]": text quoted earlier in a message
    // (a name from a request, a script's log text) cannot stand in for it.
    std::string cid;
    for (auto it = std::sregex_iterator(s.begin(), s.end(), cid_re); it != std::sregex_iterator(); ++it)
      cid = (*it)[1].str();
    if (!cid.empty()) line += ",\"correlationId\":" + json_quote(cid);
    line += ",\"msg\":" + json_quote(text) + "}\n";
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

// The admin token: from the environment, or made and kept in <workspace>/.weft/admin-token
// (mode 0600) so a local run works without setting anything.
bool admin_token(const ServeOptions& o, std::string* token, std::string* where) {
  if (const char* t = std::getenv(o.admin_token_env.c_str()); t && *t) {
    *token = t;
    *where = "from $" + o.admin_token_env;
    return true;
  }
  fs::path file = fs::path(o.workspace) / ".weft" / "admin-token";
  std::error_code ec;
  fs::create_directories(file.parent_path(), ec);
  std::ifstream in(file);
  if (in && std::getline(in, *token) && token->size() >= 16) {
    *where = "$" + o.admin_token_env + " is unset: read from " + file.string();
    return true;
  }
  std::random_device rd;
  char buf[65];
  for (int i = 0; i < 32; ++i) std::snprintf(buf + 2 * i, 3, "%02x", static_cast<unsigned>(rd() & 0xff));
  *token = buf;
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return false;
  std::string line = *token + "\n";
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(fd);
  *where = "$" + o.admin_token_env + " is unset: made one and wrote it to " + file.string();
  return ok;
}

}  // namespace

int run_serve(const ServeOptions& o) {
  if (o.log_format == "json") spdlog::set_formatter(std::make_unique<JsonFormatter>());
  std::string host = "127.0.0.1";
  int port = 8080;
  {
    auto colon = o.listen.rfind(':');
    if (colon == std::string::npos) {
      std::fprintf(stderr, "error: --listen %s: expected HOST:PORT, e.g. 127.0.0.1:8080\n", o.listen.c_str());
      return kConfigError;
    }
    host = o.listen.substr(0, colon);
    try {
      port = std::stoi(o.listen.substr(colon + 1));
    } catch (const std::exception&) {
      port = -1;
    }
    if (port < 0 || port > 65535) {
      std::fprintf(stderr, "error: --listen %s: the port must be 0-65535\n", o.listen.c_str());
      return kConfigError;
    }
  }
  if (o.db == ":memory:") {
    std::fprintf(stderr, "error: --db must be a file: weft serve's threads each open it\n");
    return kConfigError;
  }
  if (!fs::is_directory(o.workspace)) {
    std::fprintf(stderr, "error: --workspace %s: no such folder\n", o.workspace.c_str());
    return kConfigError;
  }
  std::string token, token_where;
  if (!admin_token(o, &token, &token_where)) {
    std::fprintf(stderr, "error: cannot write the admin token file under %s/.weft\n", o.workspace.c_str());
    return kConfigError;
  }

  // Signals go to one thread (sigwait), not to whichever thread runs.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  serve::Options eo;
  eo.workspace = o.workspace;
  eo.db = o.db;
  eo.max_backlog = o.max_backlog;
  eo.limits.max_body_bytes = o.max_body_bytes;
  eo.watch = !o.no_watch;
  serve::Engine engine(eo);
  std::string error;
  if (!engine.start(&error)) {
    std::fprintf(stderr, "error: %s\n", error.c_str());
    return kConfigError;
  }
  serve::Server server(engine, token);
  if (!server.listen(host, port, &error)) {
    std::fprintf(stderr, "error: --listen: %s\n", error.c_str());
    engine.stop();
    return kConfigError;
  }
  spdlog::info("weft {} serving workspace {} on http://{}:{} (database {})", WEFT_VERSION, o.workspace, host,
               server.port(), engine.db_path());
  spdlog::info("admin API token: {}", token_where);
  for (const auto& t : engine.tenant_names()) {
    auto v = engine.active(t);
    if (!v) continue;
    for (const auto& [name, c] : v->config.at("connections").as_object()) {
      if (!c.is_object()) continue;
      auto* url = c.as_object().if_contains("api_url");
      if (url && url->is_string() &&
          (url->as_string().starts_with("http://127.0.0.1") || url->as_string().starts_with("http://localhost")))
        spdlog::warn("tenant {}: connection {} points at {} (a local fake or sandbox, not the real API)", t, name,
                     std::string(url->as_string()));
    }
  }
  if (o.port_file.size()) {
    std::ofstream pf(o.port_file);
    pf << server.port() << "\n";
  }
  std::thread http([&] {
    util::name_thread("weft-http");
    server.run();
  });

  int sig = 0;
  while (true) {
    sigwait(&set, &sig);
    if (sig == SIGHUP) {
      spdlog::info("SIGHUP: reloading every tenant");
      engine.reload("", "signal");
      continue;
    }
    break;
  }
  spdlog::info("{}: stopping: no new requests; finishing the work in hand", sig == SIGINT ? "SIGINT" : "SIGTERM");
  int64_t t0 = util::now_ms();
  server.stop();
  http.join();
  engine.stop();
  spdlog::info("stopped in {} ms; what was received is stored and resumes at the next start", util::now_ms() - t0);
  return kOk;
}

}  // namespace weft::cli
