#pragma once
// The tenant's Lua sandbox: one lua_State holding a tenant's flow modules and lib modules,
// with per-call CPU and memory limits. Everything that crosses between C++ and Lua goes
// through this class; callers see only plain C++ and Boost.JSON types.
//
// A Sandbox is not thread-safe: use one per thread (weft map --workers N builds N).
#include <boost/json/value.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace weft::script {

// What a number in a record may be (simdjson's rule, which every reader of records follows):
// said wherever a number out of that range is refused.
inline constexpr const char* kNumberRangeRule =
    "integers must fit in 64 bits and other numbers in a double; send larger ids as strings";

struct Limits {
  int cpu_ms = 50;      // wall-clock budget of one call into the script
  int memory_mb = 32;   // cap on the whole Lua heap of the tenant's state
};

// One script source: `name` is what errors show ("customers.lua", "lib/omnisend.lua").
struct Source {
  std::string name;
  std::string code;
};

// Everything a sandbox is built from; a snapshot, so a reload sees one consistent version.
struct TenantCode {
  std::string tenant;
  Limits limits;
  std::map<std::string, Source> flows;  // flow name -> its module
  std::map<std::string, Source> lib;    // module name ("omnisend", "util.text") -> source
  std::string version;                  // content hash of this snapshot; stamped on results
};

// Where in the scripts something happened.
struct Location {
  std::string file;  // "customers.lua" or "lib/omnisend.lua"; empty when unknown
  int line = 0;
  // "file:line", or just "file" when the line is unknown (e.g. a tail call into C).
  std::string str() const {
    if (file.empty()) return "?";
    return line > 0 ? file + ":" + std::to_string(line) : file;
  }
};

// A norm.* call that changed or refused a value (collected for dry-run only).
struct Note {
  std::string fn;       // "email"
  std::string input;    // the raw value as text
  std::string output;   // normalized value as text; empty when refused
  std::string reason;   // why it was refused; empty when it succeeded
};

// The result of mapping one record.
struct Outcome {
  enum class Kind { ok, skipped, rejected };
  Kind kind = Kind::ok;
  std::string script_version; // the TenantCode::version that produced this outcome
  std::string payload;       // ok: the mapped JSON, compact, keys sorted
  // rejected:
  std::string error;         // "reject" (the script refused), "runtime", "cpu_limit",
                             // "memory_limit", "output" (the result cannot become JSON),
                             // "invalid_json" (the record), "no_flow"
  std::string reason;        // human-readable, without the location
  boost::json::object fields;  // reject(reason, fields) details
  Location where;
  std::vector<Note> notes;   // only when CallOptions::collect_notes
  bool ok() const { return kind == Kind::ok; }
  // "tenant acme, flow customers, customers.lua:12: cpu limit exceeded (50 ms)"
  std::string describe(const std::string& tenant, const std::string& flow) const;
};

// Per-call context given to the script as `ctx` (read-only in Lua).
struct CallContext {
  // Callers that map many records with one unchanged context set a non-zero id unique to
  // it: the sandbox then builds the Lua ctx table once instead of per record.
  std::uint64_t reuse_id = 0;
  boost::json::object fields;   // flow context + caller context (locale, store, ...)
  std::string correlation_id;
  std::string now;              // ISO 8601 UTC; empty = the current time
};

// What a flow module declares besides map (DESIGN.md "What a consultant writes"): read
// once when the sandbox is built.
struct FlowSpec {
  std::vector<std::string> match;             // M.match: identity keys, in order
  std::map<std::string, std::string> owners;  // M.owners: field -> source|destination|latest|flag
  bool has_key = false;                       // M.key(rec) exists
  bool has_version = false;                   // M.version(rec) exists
};

// The ordering key and version of one record (M.key / M.version).
struct KeyVersion {
  bool ok = false;
  std::string key;
  int64_t version_number = 0;  // M.version's first result when it is a number
  std::string version_text;    // its text result (e.g. lastModifiedAt), or the first if a string
  std::string error;           // when !ok: "no key function", the script error, a limit
  Location where;
};

struct CallOptions {
  bool collect_notes = false;
  // When set, an ok payload is appended here instead of to Outcome::payload (weft map
  // collects a batch's output this way, without a copy per record).
  std::string* append_to = nullptr;
};

class Sandbox {
 public:
  // Builds the state and runs every flow module's top level under the limits. On failure
  // returns nullptr and sets *error to "file:line: message" (one line per problem).
  static std::unique_ptr<Sandbox> create(const TenantCode& code, std::string* error);
  ~Sandbox();
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  bool has_flow(const std::string& flow) const;
  // nullptr for an unknown flow.
  const FlowSpec* flow_spec(const std::string& flow) const;
  // Runs M.key(rec) and M.version(rec) under the limits. A flow without M.key fails; without
  // M.version the version is 0 / "": the first record of a key is the only one taken (once
  // per key, for events; weft check refuses it for a destination that merges).
  KeyVersion key_version(const std::string& flow, std::string_view record_json, const CallContext& ctx);
  // Maps one record, given as JSON text, with the flow's `map(rec, ctx)`. Never throws; a
  // script failure is a rejected Outcome naming the script line, and the sandbox stays
  // usable. Text that is not valid JSON is rejected with error "invalid_json".
  Outcome map(const std::string& flow, std::string_view record_json, const CallContext& ctx,
              const CallOptions& opts = {});
  // The same for a record already parsed (fixtures, dry-run): serialized, then mapped.
  Outcome map(const std::string& flow, const boost::json::value& record, const CallContext& ctx,
              const CallOptions& opts = {});

  const std::string& tenant() const;
  std::size_t heap_bytes() const;  // current Lua heap, for tests and metrics

  struct Impl;
 private:
  explicit Sandbox(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Lua-free helpers shared with the CLI and tests.
std::string to_json_text(const boost::json::value& v);  // compact, object keys sorted
bool valid_utf8(std::string_view s);

}  // namespace weft::script
