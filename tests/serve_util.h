#pragma once
// weft serve in tests: the real binary on 127.0.0.1 (an ephemeral port), a workspace with the
// acme customers mapping pointed at the fake commercetools and fake Omnisend, and an HTTP
// client for its webhooks and admin API.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <httplib.h>
#include <string>
#include <thread>
#include <vector>

#include "engine/http/webhook.h"
#include "tests/fakes/commercetools.h"
#include "tests/fakes/omnisend.h"
#include "tests/test_util.h"

extern char** environ;

namespace weft::testing {

namespace json = boost::json;

inline const char* kServeOmniKey = "om-key-Serve-81x";
inline const char* kServeCtSecret = "ct-secret-Serve-27";
inline const char* kServeHookSecret = "hook-secret-Serve-55";
inline const char* kServeAdminToken = "admin-token-Serve-0123456789";

inline std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A commercetools CustomerCreated message carrying customer `c` (message id `msg_id`).
inline json::object customer_created(const json::object& c, const std::string& msg_id, int64_t seq = 1) {
  return json::object{{"notificationType", "Message"},
                      {"projectKey", "acme-shop"},
                      {"id", msg_id},
                      {"version", 1},
                      {"sequenceNumber", seq},
                      {"resource", json::object{{"typeId", "customer"}, {"id", c.at("id")}}},
                      {"resourceVersion", c.at("version")},
                      {"type", "CustomerCreated"},
                      {"customer", c},
                      {"createdAt", "2026-11-22T10:00:00.000Z"},
                      {"lastModifiedAt", "2026-11-22T10:00:00.000Z"}};
}

// The acme customer number i (email c<i>@x.se), at `version`.
inline json::object serve_customer(int i, int64_t version = 1) {
  json::object c = fakes::sample_customer(i);
  c["firstName"] = "Anna";
  c["lastName"] = "Svensson";
  c["version"] = version;
  return c;
}

struct ServeWorld {
  fakes::FakeCommercetools ct{"acme-shop", "client-id", kServeCtSecret};
  fakes::FakeOmnisend om{kServeOmniKey};
  TempDir dir;
  std::string ws;
  pid_t pid = 0;
  int port = 0;
  std::string log_path;

  // `flow_extra`: JSON members added to the flow (schedules, backfill settings);
  // `webhook`: the ct connection's webhook object.
  explicit ServeWorld(const std::string& flow_extra = "",
                      const std::string& webhook = R"({ "hmac_secret": "${SERVE_T_HOOK_SECRET}" })",
                      const std::string& script = "") {
    ws = dir.path().string();
    setenv("SERVE_T_CT_SECRET", kServeCtSecret, 1);
    setenv("SERVE_T_OMNI_KEY", kServeOmniKey, 1);
    setenv("SERVE_T_HOOK_SECRET", kServeHookSecret, 1);
    setenv("SERVE_T_ADMIN", kServeAdminToken, 1);
    for (const auto& e : std::filesystem::directory_iterator(std::string(WEFT_SOURCE_DIR) + "/scripts/lib"))
      dir.write("lib/" + e.path().filename().string(), slurp(e.path().string()));
    dir.write("acme/customers.lua",
              script.empty() ? slurp(std::string(WEFT_SOURCE_DIR) + "/scripts/acme/customers.lua") : script);
    write_tenant(flow_extra, webhook);
    log_path = ws + "/serve.log";
  }
  ~ServeWorld() { kill_hard(); }

  void write_tenant(const std::string& flow_extra, const std::string& webhook) {
    dir.write("acme/tenant.json", R"({
  "tenant": "acme",
  "limits": { "cpu_ms": 2000 },
  "connections": {
    "ct": { "system": "commercetools", "project": "acme-shop", "auth_url": ")" +
                                      ct.url() + R"(", "api_url": ")" + ct.url() +
                                      R"(", "client_id": "client-id", "client_secret": "${SERVE_T_CT_SECRET}",
            "webhook": )" + webhook + R"( },
    "omnisend": { "system": "omnisend", "api_url": ")" + om.base_url() +
                                      R"(", "api_key": "${SERVE_T_OMNI_KEY}", "timeout_ms": 1000, "rate_limit": "off" }
  },
  "flows": {
    "customers": {
      "source": { "connection": "ct", "entity": "customer" },
      "destination": { "connection": "omnisend", "entity": "contact" },
      "script": "customers.lua",
      "context": { "region": "SE", "default_locale": "en-US" },
      "retry": { "max_attempts": 8, "base_ms": 20, "max_ms": 200 })" +
                                      (flow_extra.empty() ? "" : ",\n      " + flow_extra) + R"(
    }
  }
})");
  }

  std::string db() const { return ws + "/.weft/weft.db"; }

  // Starts weft serve and waits until it listens. `extra`: more arguments.
  void start(const std::vector<std::string>& extra = {}) {
    std::string port_file = ws + "/port";
    std::filesystem::remove(port_file);
    port = 0;
    std::vector<std::string> args = {WEFT_BINARY, "serve", "--workspace", ws, "--listen", "127.0.0.1:0",
                                     "--port-file", port_file, "--admin-token-env", "SERVE_T_ADMIN"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn(&pid, WEFT_BINARY, &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    for (int i = 0; i < 1500 && port <= 0; ++i) {  // up to 30 s (a loaded CI machine)
      std::ifstream in(port_file);
      if (in >> port && port > 0) break;
      port = 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (port <= 0) throw std::runtime_error("weft serve did not start: " + slurp(log_path));
    // Then until its tenants' pipelines run (a test of a tenant that never gets there goes
    // on after 10 s and finds out).
    wait_for([&] {
      auto r = client().Get("/readyz", {{"Authorization", std::string("Bearer ") + kServeAdminToken}});
      return r && r->status == 200;
    }, 10000);
  }
  // SIGTERM and wait; returns the exit code (-1 if it had to be killed after `limit_ms`).
  int stop(int limit_ms = 20000) {
    if (pid <= 0) return -1;
    kill(pid, SIGTERM);
    int status = 0;
    for (int waited = 0; waited < limit_ms; waited += 20) {
      if (waitpid(pid, &status, WNOHANG) == pid) {
        pid = 0;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill_hard();
    return -1;
  }
  void kill_hard() {
    if (pid <= 0) return;
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    pid = 0;
  }
  void signal(int sig) const { kill(pid, sig); }

  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_connection_timeout(5, 0);
    c.set_read_timeout(10, 0);
    c.set_tcp_nodelay(true);
    return c;
  }
  // POST a webhook body signed with the tenant's secret (unless `headers` says otherwise).
  httplib::Result post_webhook(const std::string& body, httplib::Headers headers = {},
                               const std::string& path = "/webhooks/acme/ct",
                               const std::string& content_type = "application/json") const {
    if (!headers.count("X-Weft-Signature")) headers.emplace("X-Weft-Signature", http::hmac_sha256_hex(kServeHookSecret, body));
    auto c = client();
    return c.Post(path.c_str(), headers, body, content_type.c_str());
  }
  httplib::Result admin_get(const std::string& path, bool token = true) const {
    auto c = client();
    httplib::Headers h;
    if (token) h.emplace("Authorization", std::string("Bearer ") + kServeAdminToken);
    return c.Get(path.c_str(), h);
  }
  httplib::Result admin_post(const std::string& path, const std::string& body = "{}", bool token = true) const {
    auto c = client();
    httplib::Headers h;
    if (token) h.emplace("Authorization", std::string("Bearer ") + kServeAdminToken);
    return c.Post(path.c_str(), h, body, "application/json");
  }
  json::value admin_json(const std::string& path) const {
    auto r = admin_get(path);
    if (!r) throw std::runtime_error("GET " + path + ": no answer");
    return json::parse(r->body);
  }
  // A counter from /metrics (summed over series whose labels contain `labels`).
  double metric(const std::string& name, const std::string& labels = "") const {
    auto r = admin_get("/metrics");
    if (!r) return -1;
    double sum = 0;
    std::istringstream in(r->body);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(name, 0) != 0) continue;
      if (line.size() > name.size() && line[name.size()] != '{' && line[name.size()] != ' ') continue;
      if (!labels.empty() && line.find(labels) == std::string::npos) continue;
      sum += std::stod(line.substr(line.rfind(' ') + 1));
    }
    return sum;
  }
  // Waits until the contacts of customers `ids` (serve_customer: c<i>@x.se) are all at the
  // fake Omnisend. Waits for the records themselves, not a count: a request a crash cut off
  // after its commit but before its 202 is delivered too, so a count can be reached early.
  template <class Ids>
  bool wait_for_contacts(const Ids& ids, int limit_ms) const {
    return wait_for([&] {
      for (int i : ids)
        if (!om.contact_by_email("c" + std::to_string(i) + "@x.se")) return false;
      return true;
    }, limit_ms);
  }
  // Waits until `pred` holds (checked every 50 ms); false after `limit_ms`.
  static bool wait_for(const std::function<bool()>& pred, int limit_ms = 20000) {
    for (int waited = 0; waited < limit_ms; waited += 50) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return pred();
  }
};

}  // namespace weft::testing
