#pragma once
// Internal to engine/script: the state shared by the Lua glue files (sandbox.cc,
// lua_json.cc, lua_pattern.cc, lua_norm.cc). Nothing outside engine/script includes this.
#include <pthread.h>
#include <time.h>
#include <lua.hpp>

#include <boost/json.hpp>
#include <simdjson.h>
#include <atomic>
#include <chrono>
#include <mutex>
#include <cstring>
#include <string>
#include <vector>

#include "engine/script/sandbox.h"
#include "engine/script/small_pool.h"

namespace weft::script {

using Clock = std::chrono::steady_clock;

// An object key being written: sorted by its first 8 bytes as a big-endian number first,
// so most comparisons are one integer compare.
struct SortKey {
  uint64_t prefix;
  const char* p;
  std::size_t n;
  int slot;  // stack index of the key string; its value is at slot + 1
  static uint64_t prefix_of(const char* s, std::size_t n) {
    unsigned char b[8] = {};
    std::memcpy(b, s, n < 8 ? n : 8);
    uint64_t v = 0;
    for (unsigned char c : b) v = (v << 8) | c;
    return v;
  }
  bool operator<(const SortKey& o) const {
    if (prefix != o.prefix) return prefix < o.prefix;
    int c = std::memcmp(p, o.p, n < o.n ? n : o.n);
    return c != 0 ? c < 0 : n < o.n;
  }
};

struct Sandbox::Impl {
  lua_State* L = nullptr;
  TenantCode code;

  // Memory: the allocator counts every byte of the state; past `heap_limit` it refuses.
  SmallPool pool;                // must outlive L: declared before it is closed (see ~Sandbox)
  std::size_t heap_used = 0;
  std::size_t heap_limit = 0;
  bool memory_hit = false;       // set by the allocator, cleared per call
  bool enforce = false;          // the cap applies while script code runs, not to host setup

  // CPU: the limit counts the CPU time of the thread running the call, not wall time (on a
  // busy machine a mapping that is waiting for a core must not be cut off). While a call
  // runs, `deadline` is the earliest wall time at which the limit could be reached; the
  // watchdog thread, once it has passed, reads the thread's CPU clock and either moves the
  // deadline on or installs a count hook (see watchdog.cc), and the hook raises the error
  // in the VM thread.
  Clock::time_point deadline{};
  clockid_t cpu_clock{};                   // the calling thread's CPU-time clock
  int64_t cpu_start_ns = 0;                // its reading when the call began
  bool armed = false;
  std::atomic<int64_t> watch_deadline{0};  // deadline in steady-clock ns; 0 = no call running
  std::mutex hook_mu;                      // serializes lua_sethook between the two threads
  bool hooked = false;                     // guarded by hook_mu
  bool cpu_hit = false;          // sticky for the call: a script's pcall cannot clear it
  Location limit_where;          // where the limit hit

  // Record views made in call N carry generation N; the call's end bumps it.
  uint64_t generation = 1;

  // Per call: what reject()/skip() asked for (flags, so a script's pcall cannot swallow them).
  bool rejected = false;
  bool skipped = false;
  std::string reject_reason;
  boost::json::object reject_fields;
  Location reject_where;
  Location error_where;          // where the last error happened (set by the message handler)
  std::vector<Note>* notes = nullptr;
  std::string* payload = nullptr; // where the call writes its JSON result
  std::string output_error;       // why the result could not become JSON
  bool returned_nil = false;
  int pattern_depth = 0;          // nesting of pattern functions (gsub callbacks can recurse)
  std::vector<SortKey> key_stack;  // scratch of the JSON writer
  simdjson::dom::parser parser;    // parses each record; its views point into this parser's document

  // For log lines.
  std::string current_flow;
  std::string correlation_id;

  // Registry references.
  int view_mt = LUA_NOREF;       // metatable of record views
  int array_mt = LUA_NOREF;      // marker metatable of json.array tables
  int base_env = LUA_NOREF;      // read-only globals every module's environment inherits
  int loaded = LUA_NOREF;        // require() cache: module name -> value
  int traceback = LUA_NOREF;     // message handler that records the script location
  std::map<std::string, int> map_fns;  // flow -> its map function
  std::map<std::string, int> key_fns;      // flow -> M.key, when defined
  std::map<std::string, int> version_fns;  // flow -> M.version, when defined
  std::map<std::string, FlowSpec> specs;
  int ctx_ref = LUA_NOREF;       // last ctx table, reused while the context is the same
  std::string ctx_key;           // serialized context of ctx_ref
};

// The Impl behind a state (the allocator's userdata; cheap to fetch).
inline Sandbox::Impl* impl_of(lua_State* L) {
  void* ud = nullptr;
  lua_getallocf(L, &ud);
  return static_cast<Sandbox::Impl*>(ud);
}

// watchdog.cc: one thread for the process that hooks sandboxes whose call overran.
void watch(Sandbox::Impl* I);
void unwatch(Sandbox::Impl* I);
// Installs the every-instruction hook (called by the watchdog with I->hook_mu held).
void hook_now(Sandbox::Impl* I);

// Raises the CPU-limit error if the deadline passed (used by C functions the hook cannot
// interrupt, such as pattern matching). Does not return when the limit is hit.
void check_deadline(lua_State* L);
// CPU time of `clock` in ns (a thread's clock from pthread_getcpuclockid).
int64_t cpu_now_ns(clockid_t clock);
// Whether the call has used up its CPU limit. Past the wall deadline it reads the thread's
// CPU clock; if time is left, the deadline moves to when it could run out (and false).
bool cpu_limit_reached(Sandbox::Impl* I);
// Marks the limit as hit, keeps the hook firing on every instruction, raises the error.
[[noreturn]] void raise_cpu_limit(lua_State* L);

// lua_json.cc
void open_json(lua_State* L, Sandbox::Impl* I);   // leaves the `json` table on the stack
void push_view(lua_State* L, simdjson::dom::element e);  // read-only record view
// True and *out set if idx is a record view (raises if the view is dead), false otherwise.
bool to_view(lua_State* L, int idx, simdjson::dom::element* out);
bool is_view(lua_State* L, int idx);
void push_value(lua_State* L, const boost::json::value& v);  // deep copy into plain Lua values
void push_value(lua_State* L, simdjson::dom::element e);
std::string to_json_text(simdjson::dom::element e);         // compact, object keys sorted
// Lua value -> compact JSON (object keys sorted). On failure returns false and sets *err to
// "path: problem" (e.g. "identifiers[2].id: string is not valid UTF-8").
bool write_json(lua_State* L, int idx, std::string& out, std::string* err);
extern char json_null_key;  // address used as the json.null light userdata
int lua_pairs(lua_State* L);   // pairs/ipairs that also walk record views
int lua_ipairs(lua_State* L);
// If the table at idx is a read-only proxy (make_readonly), pushes the table behind it and
// returns true; otherwise pushes nothing and returns false.
bool readonly_target(lua_State* L, int idx);
// Replaces the table on top of the stack with a read-only proxy of it.
void make_readonly(lua_State* L);
// Reads t[key] for a table or a view; pushes the value (nil if absent).
void get_field(lua_State* L, int idx, const char* key, std::size_t len);

// Text safe to print and to embed in JSON (invalid UTF-8 and control characters escaped).
std::string printable(std::string_view s);

// lua_pattern.cc: string.find/match/gmatch/gsub with a step budget tied to the deadline.
void register_bounded_patterns(lua_State* L, int string_table_idx);

// lua_norm.cc
void open_norm(lua_State* L);  // leaves the `norm` table on the stack

}  // namespace weft::script
