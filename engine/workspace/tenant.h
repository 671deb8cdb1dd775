#pragma once
// A tenant as loaded from the workspace: its validated tenant.json, the snapshot of every
// script it runs (flow modules and lib/), its fixture cases, and a content-hash version id.
// A TenantVersion is immutable: reload builds a new one and swaps it in (see registry.h).
#include <boost/json.hpp>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/script/sandbox.h"

namespace weft::workspace {

namespace fs = std::filesystem;

// One problem found while loading: "file:line: message" or "file: $.json.path: message".
struct Problem {
  std::string file;     // path as given to the user (relative to the workspace where possible)
  int line = 0;         // 0 when the problem is not about a line
  std::string path;     // JSON path for config problems
  std::string message;
  std::string str() const;
};

// The ctx keys weft sets itself (tenant, flow, correlation_id, now): a context naming one
// would be overwritten without a word, so it is refused. "" if `key` is free, else why not.
std::string reserved_ctx_key(std::string_view key);

struct Flow {
  std::string name;
  std::string script;                 // file name, relative to the tenant folder
  std::string source_connection, source_entity;
  std::string destination_connection, destination_entity;
  std::string source_system;          // "commercetools" (from the source connection)
  std::string destination_system;     // "omnisend" (from the destination connection)
  boost::json::object context;        // merged into ctx
  bool enabled = true;                // false: only weft map / dry-run / test run it
  // "first_write": "lookup" (default): before weft first writes a destination-owned field
  // of a record, the destination is asked what it holds, and a value there is kept;
  // "send": it is written (a destination known to start empty, to save the lookups).
  bool lookup_first_write = true;
};

struct FixtureCase {
  std::string file;                   // relative path, e.g. "acme/tests/messy-email.json"
  std::string name;
  std::string flow;
  boost::json::object context;
  std::string now;
  boost::json::value input;
  enum class Expect { output, reject, skip } expect = Expect::output;
  boost::json::value expected;        // Expect::output
  std::string reject_substring;       // Expect::reject
};

struct TenantVersion {
  std::string tenant;
  fs::path dir;                        // <workspace>/<tenant>
  std::string version;                 // content hash of config, scripts, lib and fixtures
  boost::json::object config;          // tenant.json as written (secrets unresolved)
  std::map<std::string, Flow> flows;
  script::TenantCode code;             // what sandboxes are built from
  std::vector<FixtureCase> fixtures;

  const Flow* flow(const std::string& name) const;
  // The JSON Schema for a flow's destination payload, e.g. "destinations/omnisend.contact.schema.json".
  std::string destination_schema(const Flow& f) const;
  // What decides a flow's payloads: its module, every lib module it can require, and its
  // context, as a content hash ("" for no such flow). Changes with the mapping only, not
  // with another flow's script, a fixture or a setting.
  std::string mapping_id(const std::string& flow) const;
};

// Tenants in a workspace: its subfolders that contain a tenant.json, sorted.
std::vector<std::string> list_tenants(const fs::path& workspace);

// True if `dir` is a workspace (has tenant folders or lib/), false if it is a tenant folder.
bool is_tenant_dir(const fs::path& dir);

// Loads and validates one tenant. Returns nullptr and fills *problems when tenant.json is
// invalid, a script file is missing, or a fixture is malformed. Scripts are not compiled
// here (see compile_check); this only reads and validates files.
std::shared_ptr<const TenantVersion> load_tenant(const fs::path& workspace, const std::string& tenant,
                                                 std::vector<Problem>* problems);

// Compiles every flow in a fresh sandbox; returns problems (file:line) if any.
std::vector<Problem> compile_check(const TenantVersion& t);

// The error text of a failed Sandbox::create ("file:line: message", one per line) as
// Problems, so callers that already tried to build a sandbox need not compile again.
std::vector<Problem> problems_from_error(const std::string& error, const fs::path& tenant_dir);

// Parses a Lua error line "file.lua:12: message" into a Problem.
Problem problem_from_lua(const std::string& line, const fs::path& tenant_dir);

}  // namespace weft::workspace
