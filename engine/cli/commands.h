#pragma once
// The weft subcommands. Each returns the process exit code:
// 0 ok, 1 records rejected / tests failed, 2 usage, configuration or script compile error.
#include <boost/json.hpp>
#include <cstddef>
#include <memory>
#include <string_view>
#include <cstdint>
#include <string>
#include <vector>

namespace weft::workspace {
struct TenantVersion;
}

namespace weft::cli {

constexpr int kOk = 0;
constexpr int kRejected = 1;
constexpr int kConfigError = 2;

struct CheckOptions {
  std::string workspace = ".";
};
int run_check(const CheckOptions& o);

struct TestOptions {
  std::vector<std::string> dirs;  // workspaces or tenant folders; default "."
  std::string flow;               // only this flow's cases
  bool watch = false;
};
int run_test(const TestOptions& o);

struct DryRunOptions {
  std::string workspace = ".";
  std::string tenant;
  std::string flow;
  std::string input = "-";
  std::string context;            // JSON object merged over the flow's context
  bool pretty = false;            // indent the output (default when stdout is a terminal)
  std::string db;                 // plan against this store (read-only); empty: an empty store
};
int run_dry_run(const DryRunOptions& o);
// The dry-run of `text` (records as --input takes them) with a loaded version, as JSON: one
// object per record, the same as `weft dry-run` prints (the admin API's dry-run). Planned
// against `db` read-only ("" = an empty store). Empty with *error when it cannot run.
boost::json::array dry_run_json(std::shared_ptr<const workspace::TenantVersion> version, const std::string& flow,
                                const boost::json::object& context, std::string_view text, const std::string& db,
                                std::string* error);

struct MapOptions {
  std::string workspace = ".";
  std::string tenant;
  std::string flow;
  std::string input = "-";
  std::string output = "-";
  std::string rejects;            // empty: rejects are only counted
  std::string context;
  int workers = 1;
  int batch_bytes = 256 << 10;    // input bytes per unit of work (256 KiB measured best: cache-sized)
  size_t max_line_bytes = size_t{64} << 20;  // longer lines are rejected as line_too_long
};
int run_map(const MapOptions& o);

// The database a workspace uses unless --db says otherwise: <workspace>/.weft/weft.db.
std::string default_db(const std::string& workspace);

struct SyncOptions {
  std::string workspace = ".";
  std::string tenant;
  std::string flow;               // empty: every enabled flow
  std::string db;                 // empty: default_db(workspace)
};
int run_sync(const SyncOptions& o);

struct ServeOptions {
  std::string workspace = ".";
  std::string db;                          // empty: default_db(workspace)
  std::string listen = "127.0.0.1:8080";
  std::string log_format = "text";         // text | json
  std::string admin_token_env = "WEFT_ADMIN_TOKEN";
  size_t max_backlog = 100000;             // per tenant; webhooks answer 503 above it
  size_t max_body_bytes = 5 << 20;         // per webhook request (a connection may set its own)
  bool no_watch = false;
  std::string port_file;                   // write the port here once listening (tests, --listen :0)
};
int run_serve(const ServeOptions& o);

struct ReplayOptions {
  std::string workspace = ".";
  std::string tenant;
  std::string flow;
  std::string db;
  std::string kind = "all";       // dead_letter, rejection or all
  std::vector<int64_t> ids;       // empty: every one not yet replayed
  bool list = false;              // print them (NDJSON) instead of replaying
};
int run_replay(const ReplayOptions& o);

struct StatusOptions {
  std::string workspace = ".";
  std::string db;
  std::string tenant;
  bool conflicts = false;         // list the open conflicts too
  bool pretty = false;
};
int run_status(const StatusOptions& o);

}  // namespace weft::cli
