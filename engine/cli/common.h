#pragma once
// Helpers shared by the subcommands that run one flow (dry-run, map).
#include <boost/json.hpp>
#include <memory>
#include <string>
#include <vector>

#include "engine/script/sandbox.h"
#include "engine/workspace/tenant.h"

namespace weft::cli {

struct Loaded {
  std::shared_ptr<const workspace::TenantVersion> version;
  std::unique_ptr<script::Sandbox> box;
  script::CallContext context;  // the flow's context with --context on top
};

// Loads the tenant, checks the flow exists, compiles a sandbox. Prints problems to stderr
// and returns kConfigError on any; kOk otherwise.
int load_flow(const std::string& workspace, const std::string& tenant, const std::string& flow,
              const std::string& context_json, Loaded* out);

// Reads a file, or stdin for "-". Prints the error and returns false on failure.
bool read_input(const std::string& path, std::string* out);

struct InputRecord {
  boost::json::value value;
  std::string error;  // "line 3: invalid JSON: ..." when it could not be parsed
};
// One JSON document, a JSON array of records, or NDJSON (one record per line).
std::vector<InputRecord> split_records(const std::string& text);

std::string pretty_json(const boost::json::value& v);

void print_problems(const std::vector<workspace::Problem>& problems);

}  // namespace weft::cli
