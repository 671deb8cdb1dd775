#pragma once
// The weft subcommands. Each returns the process exit code:
// 0 ok, 1 records rejected / tests failed, 2 usage, configuration or script compile error.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

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
