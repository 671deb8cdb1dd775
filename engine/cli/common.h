#pragma once
// Helpers shared by the subcommands that run one flow (dry-run, map).
#include <boost/json.hpp>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/script/sandbox.h"
#include "engine/workspace/tenant.h"

namespace weft::cli {

struct Loaded {
  std::shared_ptr<const workspace::TenantVersion> version;
  std::unique_ptr<script::Sandbox> box;
  script::CallContext context;  // the flow's context with --context on top
};

// --tenant as typed: trailing slashes are dropped (shell completion gives "acme/", which
// would otherwise be compared with the tenant.json's "acme"). Returns why the name cannot be
// a tenant folder of the workspace (empty, ".", or with "/" or ".." in it, which would
// reach outside it), or "" when it can.
std::string normalize_tenant(std::string* tenant);

// Loads the tenant, checks the flow exists, compiles a sandbox. Prints problems to stderr
// and returns kConfigError on any; kOk otherwise.
int load_flow(const std::string& workspace, const std::string& tenant, const std::string& flow,
              const std::string& context_json, Loaded* out);

// Reads a file, or stdin for "-". Prints the error and returns false on failure.
bool read_input(const std::string& path, std::string* out);

// Cuts dry-run input into record texts (views into `text`): one JSON document is one
// record, a top-level array gives its elements, anything else is NDJSON (one record per
// non-blank line). Records are not parsed here: Sandbox::map parses each text as `weft map`
// does, so a bad record is rejected with the same invalid_json reason.
std::vector<std::string_view> split_records(std::string_view text);

std::string pretty_json(const boost::json::value& v);

void print_problems(const std::vector<workspace::Problem>& problems);

}  // namespace weft::cli
