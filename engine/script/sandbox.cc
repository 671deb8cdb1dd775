// The tenant sandbox: state creation, the safe environment, limits, require, and the call
// into a flow's map function. See sandbox.h for the contract and lua_glue.h for the state.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <ctime>

#include "engine/script/lua_glue.h"
#include "engine/script/norm.h"
#include "engine/util/time.h"

namespace weft::script {
namespace json = boost::json;

namespace {

constexpr const char* kRejectTag = "weft.reject";  // error values raised by reject()/skip()

// ---- limits --------------------------------------------------------------------------

// Records the innermost script frame so the error names the file and line.
Location script_location(lua_State* L, int from_level) {
  lua_Debug ar;
  for (int level = from_level; lua_getstack(L, level, &ar); ++level) {
    if (!lua_getinfo(L, "Sl", &ar)) break;
    if (ar.source && ar.source[0] == '@' && ar.currentline > 0)
      return {std::string(ar.source + 1), ar.currentline};
  }
  return {};
}

// Bytes a block really takes: the pool rounds small blocks up to their size class.
size_t charged(size_t n) {
  return n <= SmallPool::kMaxSmall ? (n + SmallPool::kGranule - 1) / SmallPool::kGranule * SmallPool::kGranule : n;
}

void* capped_alloc(void* ud, void* ptr, size_t osize, size_t nsize) {
  auto* I = static_cast<Sandbox::Impl*>(ud);
  size_t old_charge = ptr ? charged(osize) : 0;
  if (nsize == 0) {
    I->heap_used -= old_charge;
    return I->pool.realloc(ptr, osize, 0);
  }
  size_t new_charge = charged(nsize);
  if (new_charge > old_charge && I->enforce && I->heap_used + (new_charge - old_charge) > I->heap_limit) {
    if (!I->memory_hit) {
      I->memory_hit = true;
      // The VM has saved its position before any allocation that can raise an error, so
      // the stack can be read here to name the script line that asked for the memory.
      I->limit_where = script_location(I->L, 0);
    }
    return nullptr;
  }
  void* p = I->pool.realloc(ptr, osize, nsize);
  if (p == nullptr) return nullptr;
  I->heap_used = I->heap_used - old_charge + new_charge;
  return p;
}

// Installed by the watchdog only after a call overran (a permanent count hook would put
// the interpreter in its slower hook mode for every instruction: ~10% of `weft map`).
void count_hook(lua_State* L, lua_Debug*) {
  Sandbox::Impl* I = impl_of(L);
  if (!I->armed) return;
  if (I->cpu_hit || cpu_limit_reached(I)) raise_cpu_limit(L);
  // Hooked although CPU time is left (the watchdog's reading and this one differ): back to
  // full speed, watched again from the new deadline.
  std::lock_guard<std::mutex> lock(I->hook_mu);
  if (I->hooked) {
    lua_sethook(L, nullptr, 0, 0);
    I->hooked = false;
  }
  I->watch_deadline.store(I->deadline.time_since_epoch().count(), std::memory_order_release);
}

// ---- the environment -----------------------------------------------------------------

// Copies the named fields of the table at `from` into a new table on the stack.
void copy_fields(lua_State* L, int from, std::initializer_list<const char*> names) {
  lua_newtable(L);
  for (const char* n : names) {
    lua_getfield(L, from, n);
    lua_setfield(L, -2, n);
  }
}

int l_setmetatable(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);  // only plain tables: never host objects or strings
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

int l_reject(lua_State* L) {
  Sandbox::Impl* I = impl_of(L);
  I->rejected = true;
  I->reject_reason = lua_isstring(L, 1) ? lua_tostring(L, 1) : "rejected by script";
  I->reject_fields.clear();
  if (!lua_isnoneornil(L, 2)) {
    std::string out, err;
    if (write_json(L, 2, out, &err)) {
      std::error_code ec;
      json::value v = json::parse(out, ec);
      if (!ec && v.is_object()) I->reject_fields = std::move(v.get_object());
      else if (!ec) I->reject_fields = {{"fields", std::move(v)}};
    } else {
      I->reject_fields = {{"unwritable_fields", printable(err)}};
    }
  }
  I->reject_where = script_location(L, 1);
  lua_pushstring(L, kRejectTag);
  return lua_error(L);
}

int l_skip(lua_State* L) {
  impl_of(L)->skipped = true;
  lua_pushstring(L, kRejectTag);
  return lua_error(L);
}

int l_log(lua_State* L) {
  Sandbox::Impl* I = impl_of(L);
  auto level = static_cast<spdlog::level::level_enum>(lua_tointeger(L, lua_upvalueindex(1)));
  if (!spdlog::should_log(level)) return 0;
  std::string msg;
  if (lua_isstring(L, 1)) msg = lua_tostring(L, 1);
  else if (simdjson::dom::element e; to_view(L, 1, &e)) msg = to_json_text(e);
  else msg = luaL_typename(L, 1);
  std::string fields;
  if (!lua_isnoneornil(L, 2)) {
    std::string err;
    if (!write_json(L, 2, fields, &err)) fields = "(unloggable: " + printable(err) + ")";
  }
  Location at = script_location(L, 1);
  spdlog::log(level, "tenant={} flow={} cid={} {} {}{}{}", I->code.tenant, I->current_flow,
              I->correlation_id.empty() ? "-" : I->correlation_id, at.str(), printable(msg),
              fields.empty() ? "" : " ", fields);
  return 0;
}

// A compile error as "file:line: message" (LuaJIT's bytecode refusal names no file).
std::string compile_error(const Source& src, std::string err) {
  if (err.find("wrong mode") != std::string::npos)
    err = "precompiled bytecode is not accepted; load the Lua source";
  if (err.rfind(src.name + ":", 0) != 0) err = src.name + ":1: " + err;
  return err;
}

// Compiles `src` as text (never bytecode) with `env` (stack index) as its globals.
bool load_chunk(lua_State* L, const Source& src, int env, std::string* err) {
  std::string chunkname = "@" + src.name;
  if (luaL_loadbufferx(L, src.code.data(), src.code.size(), chunkname.c_str(), "t") != 0) {
    *err = lua_tostring(L, -1);
    lua_pop(L, 1);
    *err = compile_error(src, *err);
    return false;
  }
  luaJIT_setmode(L, -1, LUAJIT_MODE_ALLFUNC | LUAJIT_MODE_OFF);  // the hook must see every loop
  lua_pushvalue(L, env);
  lua_setfenv(L, -2);
  return true;
}

// A fresh global table for one module: its own globals, falling back to the safe base.
void push_module_env(lua_State* L, Sandbox::Impl* I) {
  lua_newtable(L);
  lua_newtable(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, I->base_env);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, "environment");
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_setfield(L, -2, "_G");
}

// Message handler for every pcall into scripts: remembers where the error happened.
// A string error starts with "file:line: " when Lua or error() added the place; if that file
// is one of the tenant's scripts, it is where the error happened (also for errors re-raised
// from C, e.g. by require, whose own frame is no longer on the stack).
bool location_from_message(Sandbox::Impl* I, std::string_view msg, Location* out) {
  size_t colon = msg.find(':');
  if (colon == std::string_view::npos || colon < 5 || msg.substr(colon - 4, 4) != ".lua") return false;
  size_t end = colon + 1;
  while (end < msg.size() && msg[end] >= '0' && msg[end] <= '9') ++end;
  if (end == colon + 1 || end + 1 >= msg.size() || msg[end] != ':' || msg[end + 1] != ' ') return false;
  std::string file(msg.substr(0, colon));
  bool known = false;
  for (const auto& kv : I->code.flows) known = known || kv.second.name == file;
  for (const auto& kv : I->code.lib) known = known || kv.second.name == file;
  if (!known) return false;
  int line = 0;
  auto [stop, ec] = std::from_chars(msg.data() + colon + 1, msg.data() + end, line);
  if (ec != std::errc() || stop != msg.data() + end) return false;  // out of range: not a line number
  *out = {file, line};
  return true;
}

// Every script call is protected, so a panic is a weft bug: say so before LuaJIT exits.
int l_panic(lua_State* L) {
  const char* msg = lua_tostring(L, -1);
  std::fprintf(stderr, "weft: unprotected Lua error (a bug in weft, please report): %s\n", msg ? msg : "?");
  return 0;
}

int l_traceback(lua_State* L) {
  Sandbox::Impl* I = impl_of(L);
  size_t n = 0;
  const char* msg = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : nullptr;
  if (!msg || !location_from_message(I, std::string_view(msg, n), &I->error_where))
    I->error_where = script_location(L, 1);
  return 1;
}

// Runs the function below `nargs` arguments under the limits; on error leaves the message.
int protected_call(Sandbox::Impl* I, int nargs, int nresults) {
  lua_State* L = I->L;
  int base = lua_gettop(L) - nargs;
  lua_rawgeti(L, LUA_REGISTRYINDEX, I->traceback);
  lua_insert(L, base);
  I->cpu_hit = false;
  I->memory_hit = false;
  I->error_where = {};
  I->limit_where = {};
  I->pattern_depth = 0;
  I->deadline = Clock::now() + std::chrono::milliseconds(I->code.limits.cpu_ms);
  I->cpu_clock = CLOCK_THREAD_CPUTIME_ID;
  (void)pthread_getcpuclockid(pthread_self(), &I->cpu_clock);  // a clock the watchdog can read too
  I->cpu_start_ns = cpu_now_ns(I->cpu_clock);
  I->armed = true;
  I->enforce = true;
  I->watch_deadline.store(I->deadline.time_since_epoch().count(), std::memory_order_release);
  int rc = lua_pcall(L, nargs, nresults, base);
  {
    std::lock_guard<std::mutex> lock(I->hook_mu);
    I->watch_deadline.store(0, std::memory_order_relaxed);
    if (I->hooked) {
      lua_sethook(L, nullptr, 0, 0);
      I->hooked = false;
    }
  }
  I->armed = false;
  I->enforce = false;
  lua_remove(L, base);
  if (I->memory_hit) lua_gc(L, LUA_GCCOLLECT, 0);  // LuaJIT does not collect on its own here
  return rc;
}

int l_require(lua_State* L) {
  Sandbox::Impl* I = impl_of(L);
  std::string name = luaL_checkstring(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, I->loaded);
  lua_getfield(L, -1, name.c_str());
  if (!lua_isnil(L, -1)) {
    if (lua_islightuserdata(L, -1))
      return luaL_error(L, "require '%s': circular require", name.c_str());
    return 1;
  }
  lua_pop(L, 1);
  auto it = I->code.lib.find(name);
  if (it == I->code.lib.end())
    return luaL_error(L, "module '%s' not found in the workspace's lib/ folder", name.c_str());
  lua_pushlightuserdata(L, I);  // "loading" marker for cycle detection
  lua_setfield(L, -2, name.c_str());
  push_module_env(L, I);
  std::string err;
  if (!load_chunk(L, it->second, lua_gettop(L), &err)) {
    lua_pushnil(L);
    lua_setfield(L, 2, name.c_str());  // not "loading" any more: the next require retries
    lua_pushstring(L, err.c_str());
    return lua_error(L);
  }
  // A failed load must not leave the "loading" marker behind (the next require would report
  // a circular require instead of the real error): catch, clear, re-raise.
  lua_rawgeti(L, LUA_REGISTRYINDEX, I->traceback);
  lua_insert(L, -2);
  if (lua_pcall(L, 0, 1, -2) != 0) {
    lua_pushnil(L);
    lua_setfield(L, 2, name.c_str());  // index 2: the `loaded` table
    return lua_error(L);               // its message still starts with the module's file:line
  }
  lua_remove(L, -2);  // the message handler
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, name.c_str());
  return 1;
}

// Builds the read-only base environment and stores it in the registry.
void build_base_env(lua_State* L, Sandbox::Impl* I) {
  luaL_openlibs(L);
  int G = LUA_GLOBALSINDEX;
  lua_newtable(L);
  int env = lua_gettop(L);
  for (const char* n : {"assert", "error", "next", "pcall", "select", "tonumber", "tostring",
                        "type", "unpack", "xpcall", "getmetatable", "_VERSION"}) {
    lua_getfield(L, G, n);
    lua_setfield(L, env, n);
  }
  lua_getfield(L, G, "pairs");
  lua_pushcclosure(L, lua_pairs, 1);
  lua_setfield(L, env, "pairs");
  lua_getfield(L, G, "ipairs");
  lua_pushcclosure(L, lua_ipairs, 1);
  lua_setfield(L, env, "ipairs");
  lua_getfield(L, G, "setmetatable");
  lua_pushcclosure(L, l_setmetatable, 1);
  lua_setfield(L, env, "setmetatable");

  // string: no dump; bounded pattern functions. Also becomes the strings' method table.
  lua_getfield(L, G, "string");
  int str = lua_gettop(L);
  copy_fields(L, str, {"byte", "char", "format", "len", "lower", "rep", "reverse", "sub", "upper"});
  register_bounded_patterns(L, -1);
  make_readonly(L);
  lua_pushvalue(L, -1);
  lua_setfield(L, env, "string");
  // The shared string metatable: point it at the safe proxy and lock it.
  lua_pushliteral(L, "");
  lua_getmetatable(L, -1);
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, "string");
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 4);

  lua_getfield(L, G, "table");
  copy_fields(L, lua_gettop(L), {"concat", "insert", "maxn", "remove", "sort"});
  make_readonly(L);
  lua_setfield(L, env, "table");
  lua_pop(L, 1);

  lua_getfield(L, G, "math");
  copy_fields(L, lua_gettop(L),
              {"abs", "ceil", "floor", "fmod", "huge", "max", "min", "modf", "pi", "pow", "sqrt",
               "exp", "log", "log10", "random", "sin", "cos", "tan", "asin", "acos", "atan",
               "atan2", "deg", "rad", "frexp", "ldexp", "sinh", "cosh", "tanh"});
  make_readonly(L);
  lua_setfield(L, env, "math");
  lua_pop(L, 1);

  lua_getfield(L, G, "os");
  copy_fields(L, lua_gettop(L), {"time", "date", "clock", "difftime"});
  make_readonly(L);
  lua_setfield(L, env, "os");
  lua_pop(L, 1);

  lua_getfield(L, G, "coroutine");
  copy_fields(L, lua_gettop(L), {"create", "resume", "running", "status", "wrap", "yield"});
  make_readonly(L);
  lua_setfield(L, env, "coroutine");
  lua_pop(L, 1);

  lua_getfield(L, G, "bit");
  copy_fields(L, lua_gettop(L),
              {"band", "bor", "bxor", "bnot", "lshift", "rshift", "arshift", "rol", "ror", "tobit",
               "tohex", "bswap"});
  make_readonly(L);
  lua_setfield(L, env, "bit");
  lua_pop(L, 1);

  open_json(L, I);
  make_readonly(L);
  lua_setfield(L, env, "json");
  open_norm(L);
  make_readonly(L);
  lua_setfield(L, env, "norm");

  lua_newtable(L);
  const std::pair<const char*, spdlog::level::level_enum> levels[] = {
      {"debug", spdlog::level::debug}, {"info", spdlog::level::info},
      {"warn", spdlog::level::warn}, {"error", spdlog::level::err}};
  for (auto [name, level] : levels) {
    lua_pushinteger(L, level);
    lua_pushcclosure(L, l_log, 1);
    lua_setfield(L, -2, name);
  }
  make_readonly(L);
  lua_setfield(L, env, "log");

  lua_pushcfunction(L, l_reject);  lua_setfield(L, env, "reject");
  lua_pushcfunction(L, l_skip);    lua_setfield(L, env, "skip");
  lua_pushcfunction(L, l_require); lua_setfield(L, env, "require");

  make_readonly(L);
  I->base_env = luaL_ref(L, LUA_REGISTRYINDEX);

  lua_newtable(L);
  I->loaded = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushcfunction(L, l_traceback);
  I->traceback = luaL_ref(L, LUA_REGISTRYINDEX);

  // The real globals table holds the unsafe originals: empty it so nothing can lead back.
  lua_pushnil(L);
  while (lua_next(L, G) != 0) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, G);
  }
  // package.loaded still referenced the unsafe libraries through the registry.
  lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, "_LOADED");
  lua_gc(L, LUA_GCCOLLECT, 0);
}

}  // namespace

// Text safe to print and to put in JSON: invalid UTF-8 bytes become "\xNN", and control
// characters are escaped, so a script cannot forge log lines or break an NDJSON file.
std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = p[i];
    char buf[8];
    if (c >= 0x80) {
      size_t len = 1;
      while (i + len < s.size() && len < 4 && (p[i + len] & 0xC0) == 0x80) ++len;
      if (valid_utf8(s.substr(i, len))) {
        out.append(s.substr(i, len));
        i += len;
        continue;
      }
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else if (c < 0x20 || c == 0x7F) {
      if (c == '\n') out += "\\n";
      else if (c == '\t') out += "\\t";
      else if (c == '\r') out += "\\r";
      else {
        std::snprintf(buf, sizeof buf, "\\x%02X", c);
        out += buf;
      }
    } else {
      out.push_back(static_cast<char>(c));
    }
    ++i;
  }
  return out;
}

namespace {
// The message of an error value (strings, or anything tostring can print).
std::string error_message(lua_State* L, int idx) {
  if (lua_isstring(L, idx)) return lua_tostring(L, idx);
  if (lua_isnil(L, idx)) return "error (nil)";
  return std::string("error (a ") + luaL_typename(L, idx) + " value)";
}

// Lua messages start with "file:line: "; the location is reported separately.
std::string strip_location(std::string msg, const Location& where) {
  if (!where.file.empty()) {
    std::string prefix = where.file + ":" + std::to_string(where.line) + ": ";
    if (msg.rfind(prefix, 0) == 0) return msg.substr(prefix.size());
  }
  return msg;
}


}  // namespace

namespace {
int l_readonly_newindex(lua_State* L) {
  return luaL_error(L, "attempt to modify a read-only table (field '%s')",
                    lua_isstring(L, 2) ? lua_tostring(L, 2) : "?");
}
}  // namespace

// An empty proxy reading from the table: scripts can use `string.upper` but cannot change
// what another script (or lib module) sees. Locked, so setmetatable cannot swap it.
void make_readonly(lua_State* L) {
  lua_newtable(L);                 // proxy
  lua_newtable(L);                 // its metatable
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_readonly_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushliteral(L, "read-only");
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
  lua_remove(L, -2);
}

bool readonly_target(lua_State* L, int idx) {
  if (idx < 0) idx = lua_gettop(L) + idx + 1;
  if (!lua_getmetatable(L, idx)) return false;
  lua_pushliteral(L, "__newindex");
  lua_rawget(L, -2);
  bool yes = lua_tocfunction(L, -1) == l_readonly_newindex;
  lua_pop(L, 1);
  if (!yes) {
    lua_pop(L, 1);
    return false;
  }
  lua_pushliteral(L, "__index");
  lua_rawget(L, -2);
  lua_remove(L, -2);
  return true;
}

namespace {
// Reads M.key, M.version, M.match and M.owners of the module table on top of the stack.
// Returns what is wrong with them ("" if nothing).
std::string read_spec(lua_State* L, Sandbox::Impl* P, const std::string& flow) {
  FlowSpec spec;
  lua_getfield(L, -1, "key");
  if (lua_isfunction(L, -1)) {
    spec.has_key = true;
    P->key_fns[flow] = luaL_ref(L, LUA_REGISTRYINDEX);
  } else {
    bool bad = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (bad) return "M.key must be a function (M.key = function(rec) return rec.id end)";
  }
  lua_getfield(L, -1, "version");
  if (lua_isfunction(L, -1)) {
    spec.has_version = true;
    P->version_fns[flow] = luaL_ref(L, LUA_REGISTRYINDEX);
  } else {
    bool bad = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (bad) return "M.version must be a function returning the record's version";
  }
  lua_getfield(L, -1, "match");
  if (lua_istable(L, -1)) {
    for (int i = 1;; ++i) {
      lua_rawgeti(L, -1, i);
      if (lua_isnil(L, -1)) { lua_pop(L, 1); break; }
      if (lua_type(L, -1) != LUA_TSTRING) { lua_pop(L, 2); return "M.match must be a list of identity key names"; }
      spec.match.emplace_back(lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  } else if (!lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return "M.match must be a list of identity key names, e.g. { \"externalId\", \"email\" }";
  }
  lua_pop(L, 1);
  lua_getfield(L, -1, "owners");
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 3);
        return "M.owners must map field names to \"source\", \"destination\", \"latest\" or \"flag\"";
      }
      std::string field = lua_tostring(L, -2), policy = lua_tostring(L, -1);
      if (policy != "source" && policy != "destination" && policy != "latest" && policy != "flag") {
        lua_pop(L, 3);
        return "M.owners[\"" + field + "\"] is \"" + policy +
               "\": use \"source\", \"destination\", \"latest\" or \"flag\"";
      }
      spec.owners[field] = policy;
      lua_pop(L, 1);
    }
  } else if (!lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return "M.owners must be a table of field -> policy";
  }
  lua_pop(L, 1);
  P->specs[flow] = std::move(spec);
  return "";
}

// Runs inside the protected call: M -> a table without a metatable holding M.map, M.key,
// M.version, M.match and M.owners (read as Lua reads them, metamethods included).
int l_module_fields(lua_State* L) {
  lua_createtable(L, 0, 5);
  for (const char* k : {"map", "key", "version", "match", "owners"}) {
    lua_getfield(L, 1, k);
    lua_setfield(L, -2, k);
  }
  return 1;
}

// Runs inside the protected call: key(rec) then version(rec); leaves key, v1, v2.
int l_key_and_version(lua_State* L) {
  // stack: key_fn, version_fn (or nil), rec
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 3);
  lua_call(L, 1, 1);
  if (lua_isnil(L, 2)) {
    lua_pushnil(L);
    lua_pushnil(L);
  } else {
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_call(L, 1, 2);
  }
  return 3;
}
}  // namespace

void raise_cpu_limit(lua_State* L) {
  Sandbox::Impl* I = impl_of(L);
  if (!I->cpu_hit) {
    I->cpu_hit = true;
    I->limit_where = script_location(L, 0);
  }
  // Fire on every instruction from now on, so a pcall in the script cannot resume work.
  {
    std::lock_guard<std::mutex> lock(I->hook_mu);
    hook_now(I);
  }
  luaL_error(L, "cpu limit exceeded (%d ms)", I->code.limits.cpu_ms);
  std::abort();  // unreachable: luaL_error does not return
}

void hook_now(Sandbox::Impl* I) {
  if (I->hooked) return;
  lua_sethook(I->L, count_hook, LUA_MASKCOUNT, 1);
  I->hooked = true;
}

void check_deadline(lua_State* L) {
  Sandbox::Impl* I = impl_of(L);
  if (I->armed && (I->cpu_hit || cpu_limit_reached(I))) raise_cpu_limit(L);
}

int64_t cpu_now_ns(clockid_t clock) {
  timespec ts{};
  if (clock_gettime(clock, &ts) != 0) return INT64_MAX;  // unreadable: count the limit as reached
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

bool cpu_limit_reached(Sandbox::Impl* I) {
  Clock::time_point now = Clock::now();
  if (now < I->deadline) return false;  // CPU time never runs faster than the wall clock
  int64_t left = int64_t{I->code.limits.cpu_ms} * 1000000 - (cpu_now_ns(I->cpu_clock) - I->cpu_start_ns);
  if (left <= 0) return true;
  I->deadline = now + std::chrono::nanoseconds(left);
  return false;
}

std::string Outcome::describe(const std::string& tenant, const std::string& flow) const {
  std::string s = "tenant " + tenant + ", flow " + flow;
  if (!where.file.empty()) s += ", " + where.str();
  return s + ": " + reason;
}

Sandbox::Sandbox(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Sandbox::~Sandbox() {
  if (impl_ && impl_->L) {
    unwatch(impl_.get());
    lua_close(impl_->L);
  }
}

std::unique_ptr<Sandbox> Sandbox::create(const TenantCode& code, std::string* error) {
  norm::warm_up();  // outside any call's CPU budget
  auto I = std::make_unique<Impl>();
  I->code = code;
  I->heap_limit = static_cast<size_t>(code.limits.memory_mb) * 1024 * 1024;
  I->pool.set_slab_budget(I->heap_limit);
  // Records nest at most 64 deep, like every JSON weft reads; deeper input is refused.
  if (I->parser.allocate(64 * 1024, 64)) {  // grows on demand for larger records
    *error = "cannot allocate the JSON parser";
    return nullptr;
  }
  lua_State* L = lua_newstate(capped_alloc, I.get());
  if (L == nullptr) {
    *error = "cannot create a Lua state (memory_mb too small?)";
    return nullptr;
  }
  I->L = L;
  lua_atpanic(L, l_panic);
  std::unique_ptr<Sandbox> box(new Sandbox(std::move(I)));
  Impl* P = box->impl_.get();
  watch(P);
  luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);  // hooks do not fire in traces
  build_base_env(L, P);

  std::string errors;
  // Lib modules run only when required, but a syntax error in one should fail check/reload.
  for (const auto& [name, src] : code.lib) {
    std::string chunkname = "@" + src.name;
    if (luaL_loadbufferx(L, src.code.data(), src.code.size(), chunkname.c_str(), "t") != 0)
      errors += compile_error(src, lua_tostring(L, -1)) + "\n";
    lua_pop(L, 1);
  }
  for (const auto& [flow, src] : code.flows) {
    push_module_env(L, P);
    std::string err;
    if (!load_chunk(L, src, lua_gettop(L), &err)) {
      errors += err + "\n";
      lua_pop(L, 1);
      continue;
    }
    lua_remove(L, -2);
    P->current_flow = flow;
    // A failed protected call: its error (file:line where known) goes to `errors`.
    const std::string& file = src.name;  // (a lambda may not capture a structured binding before C++20)
    auto failed = [&] {
      std::string msg = error_message(L, -1);
      Location at = (P->cpu_hit || P->memory_hit) ? P->limit_where : P->error_where;
      if (at.file.empty()) at = {file, 1};
      if (P->memory_hit) msg = "memory limit exceeded (" + std::to_string(code.limits.memory_mb) + " MB)";
      errors += at.str() + ": " + strip_location(msg, at) + "\n";
      lua_pop(L, 1);
    };
    if (protected_call(P, 0, 1) != 0) {
      failed();
      continue;
    }
    if (!lua_istable(L, -1)) {
      errors += src.name + ":1: the module must return a table with a map function (got " +
                luaL_typename(L, -1) + ")\n";
      lua_pop(L, 1);
      continue;
    }
    // The module's fields are read inside a protected call, under the CPU limit: the table
    // may have a metatable whose __index raises an error or never returns. The copy they
    // are read into has none.
    lua_pushcfunction(L, l_module_fields);
    lua_insert(L, -2);
    if (protected_call(P, 1, 1) != 0) {
      failed();
      continue;
    }
    lua_getfield(L, -1, "map");
    if (!lua_isfunction(L, -1)) {
      errors += src.name + ":1: the module's table has no map function (M.map = function(rec, ctx) ... end)\n";
      lua_pop(L, 2);
      continue;
    }
    P->map_fns[flow] = luaL_ref(L, LUA_REGISTRYINDEX);
    std::string spec_error = read_spec(L, P, flow);
    if (!spec_error.empty()) errors += src.name + ":1: " + spec_error + "\n";
    lua_pop(L, 1);
  }
  P->current_flow.clear();
  if (!errors.empty()) {
    errors.pop_back();
    *error = errors;
    return nullptr;
  }
  return box;
}

bool Sandbox::has_flow(const std::string& flow) const { return impl_->map_fns.count(flow) > 0; }

const FlowSpec* Sandbox::flow_spec(const std::string& flow) const {
  auto it = impl_->specs.find(flow);
  return it == impl_->specs.end() ? nullptr : &it->second;
}

KeyVersion Sandbox::key_version(const std::string& flow, std::string_view record_json, const CallContext& ctx) {
  Impl* I = impl_.get();
  lua_State* L = I->L;
  KeyVersion kv;
  auto key_fn = I->key_fns.find(flow);
  if (!I->map_fns.count(flow)) {
    kv.error = "no flow named '" + flow + "'";
    return kv;
  }
  if (key_fn == I->key_fns.end()) {
    kv.error = "flow '" + flow + "' has no key function (M.key = function(rec) return rec.id end)";
    return kv;
  }
  simdjson::dom::element record;
  if (auto err = I->parser.parse(record_json.data(), record_json.size()).get(record)) {
    kv.error = std::string("invalid JSON: ") + simdjson::error_message(err);
    return kv;
  }
  I->rejected = I->skipped = false;
  I->current_flow = flow;
  I->correlation_id = ctx.correlation_id;
  int top = lua_gettop(L);
  lua_pushcfunction(L, l_key_and_version);
  lua_rawgeti(L, LUA_REGISTRYINDEX, key_fn->second);
  auto vf = I->version_fns.find(flow);
  if (vf == I->version_fns.end()) lua_pushnil(L);
  else lua_rawgeti(L, LUA_REGISTRYINDEX, vf->second);
  auto type = record.type();
  if (type == simdjson::dom::element_type::OBJECT || type == simdjson::dom::element_type::ARRAY) push_view(L, record);
  else push_value(L, record);
  int rc = protected_call(I, 3, 3);
  if (I->cpu_hit || I->memory_hit || rc != 0 || I->rejected || I->skipped) {
    kv.error = I->cpu_hit      ? "cpu limit exceeded (" + std::to_string(I->code.limits.cpu_ms) + " ms)"
               : I->memory_hit ? "memory limit exceeded (" + std::to_string(I->code.limits.memory_mb) + " MB)"
               : rc != 0       ? printable(strip_location(error_message(L, -1), I->error_where))
                               : "reject() and skip() belong in map, not in key or version";
    kv.where = (I->cpu_hit || I->memory_hit) ? I->limit_where : I->error_where;
  } else if (lua_type(L, -3) != LUA_TSTRING && lua_type(L, -3) != LUA_TNUMBER) {
    kv.error = std::string("M.key returned a ") + luaL_typename(L, -3) + ", not a string or number";
  } else {
    kv.ok = true;
    if (lua_type(L, -3) == LUA_TSTRING) {
      kv.key = lua_tostring(L, -3);
    } else {
      // A number key becomes its exact text: Lua's own "%.14g" would give 100000000000001
      // and 100000000000002 the same key "1e+14".
      double k = lua_tonumber(L, -3);
      char buf[32];
      if (!std::isfinite(k)) {
        kv.ok = false;
        kv.error = "M.key returned " + std::string(std::isnan(k) ? "nan" : "an infinite number");
      } else if (k == std::floor(k) && std::fabs(k) <= 9007199254740992.0 && !(k == 0 && std::signbit(k))) {
        std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(k));
        kv.key = buf;
      } else {
        // The shortest text that reads back as the same number (0.1 stays "0.1", as Lua had it).
        auto [end, ec] = std::to_chars(buf, buf + sizeof buf, k);
        kv.key.assign(buf, ec == std::errc() ? end : buf);
      }
    }
    for (int i : {-2, -1}) {
      if (lua_type(L, i) == LUA_TNUMBER) {
        // Versions are compared as whole numbers: a fraction would be cut off (1.25 and
        // 1.75 equal, so the newer one dropped as stale), so it is refused instead.
        double v = lua_tonumber(L, i);
        if (!(v == std::floor(v) && std::fabs(v) <= 9007199254740992.0)) {
          char buf[32];
          auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
          kv.ok = false;
          kv.error = "M.version returned " + std::string(buf, ec == std::errc() ? end : buf) +
                     ": a number version must be a whole number up to 2^53 (return text instead, "
                     "e.g. lastModifiedAt)";
        } else {
          kv.version_number = static_cast<int64_t>(v);
        }
      } else if (lua_type(L, i) == LUA_TSTRING) {
        kv.version_text = lua_tostring(L, i);
      }
    }
    if (!kv.ok) kv.where = {};
  }
  lua_settop(L, top);
  ++I->generation;
  I->correlation_id.clear();
  return kv;
}
const std::string& Sandbox::tenant() const { return impl_->code.tenant; }
std::size_t Sandbox::heap_bytes() const { return impl_->heap_used; }

namespace {
// Runs inside the protected call: map(rec, ctx), then the result written as JSON into
// I->payload. Arguments: the map function, the record, ctx.
int l_map_and_write(lua_State* L) {
  Sandbox::Impl* I = impl_of(L);
  lua_call(L, 2, 1);
  if (I->rejected || I->skipped) return 0;
  if (lua_isnil(L, -1)) {
    I->returned_nil = true;
    return 0;
  }
  if (!lua_istable(L, -1) && !is_view(L, -1)) {
    I->output_error = std::string("map must return a table (or the record) or nil, not a ") + luaL_typename(L, -1);
    return 0;
  }
  std::string err;
  if (!write_json(L, -1, *I->payload, &err)) I->output_error = "result cannot become JSON: " + err;
  return 0;
}
}  // namespace

namespace {
// Pushes the ctx table: read-only at the top level. It is built once and reused while the
// caller says the context is unchanged, unless it holds nested objects or arrays: those are
// plain tables (so #, ipairs and table.concat work on them), fresh for every call so that a
// script changing one cannot affect the next record.
void push_ctx(Sandbox::Impl* I, const std::string& flow, const CallContext& ctx) {
  lua_State* L = I->L;
  bool nested = std::any_of(ctx.fields.begin(), ctx.fields.end(), [](const auto& kv) {
    return kv.value().is_object() || kv.value().is_array();
  });
  std::string key = ctx.reuse_id && !nested ? flow + '\x1f' + std::to_string(ctx.reuse_id) : std::string();
  if (!key.empty() && I->ctx_ref != LUA_NOREF && key == I->ctx_key) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, I->ctx_ref);
    return;
  }
  lua_createtable(L, 0, static_cast<int>(ctx.fields.size()) + 5);
  for (const auto& kv : ctx.fields) {
    if (kv.value().is_null()) continue;
    lua_pushlstring(L, kv.key().data(), kv.key().size());
    push_value(L, kv.value());
    lua_rawset(L, -3);
  }
  auto set = [&](const char* k, const std::string& v) {
    lua_pushlstring(L, v.data(), v.size());
    lua_setfield(L, -2, k);
  };
  set("tenant", I->code.tenant);
  set("flow", flow);
  if (!ctx.correlation_id.empty()) set("correlation_id", ctx.correlation_id);
  set("now", ctx.now.empty() ? util::now_iso() : ctx.now);
  make_readonly(L);
  if (I->ctx_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, I->ctx_ref);
  lua_pushvalue(L, -1);
  I->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  I->ctx_key = std::move(key);
}
}  // namespace

Outcome Sandbox::map(const std::string& flow, const json::value& record, const CallContext& ctx,
                     const CallOptions& opts) {
  return map(flow, json::serialize(record), ctx, opts);
}

Outcome Sandbox::map(const std::string& flow, std::string_view record_json, const CallContext& ctx,
                     const CallOptions& opts) {
  Impl* I = impl_.get();
  lua_State* L = I->L;
  Outcome out;
  out.script_version = I->code.version;
  auto fn = I->map_fns.find(flow);
  if (fn == I->map_fns.end()) {
    out.kind = Outcome::Kind::rejected;
    out.error = "no_flow";
    out.reason = "no flow named '" + flow + "'";
    return out;
  }
  simdjson::dom::element record;
  if (auto err = I->parser.parse(record_json.data(), record_json.size()).get(record)) {
    out.kind = Outcome::Kind::rejected;
    out.error = "invalid_json";
    out.reason = std::string("invalid JSON: ") + simdjson::error_message(err);
    if (err == simdjson::NUMBER_ERROR)
      out.reason += std::string(" (") + kNumberRangeRule + ")";
    else if (err == simdjson::DEPTH_ERROR)
      out.reason = "invalid JSON: nested deeper than 64 levels";
    return out;
  }
  I->rejected = I->skipped = false;
  I->current_flow = flow;
  I->correlation_id = ctx.correlation_id;
  I->notes = opts.collect_notes ? &out.notes : nullptr;

  int top = lua_gettop(L);
  // The map call and the JSON writing both run under the limits (the writer walks what the
  // script built, which a script can make huge): see l_map_and_write.
  lua_pushcfunction(L, l_map_and_write);
  lua_rawgeti(L, LUA_REGISTRYINDEX, fn->second);
  auto type = record.type();
  if (type == simdjson::dom::element_type::OBJECT || type == simdjson::dom::element_type::ARRAY)
    push_view(L, record);
  else
    push_value(L, record);  // a bare string or number arrives as itself
  push_ctx(I, flow, ctx);
  std::string& target = opts.append_to ? *opts.append_to : out.payload;
  const size_t target_start = target.size();
  I->payload = &target;
  I->output_error.clear();
  I->returned_nil = false;
  int rc = protected_call(I, 3, 0);
  I->payload = nullptr;

  const std::string& flow_file = I->code.flows.at(flow).name;
  if (I->cpu_hit) {
    out.kind = Outcome::Kind::rejected;
    out.error = "cpu_limit";
    out.reason = "cpu limit exceeded (" + std::to_string(I->code.limits.cpu_ms) + " ms)";
    out.where = I->limit_where;
  } else if (I->memory_hit) {
    out.kind = Outcome::Kind::rejected;
    out.error = "memory_limit";
    out.reason = "memory limit exceeded (" + std::to_string(I->code.limits.memory_mb) + " MB)";
    out.where = I->limit_where;
  } else if (I->rejected) {
    out.kind = Outcome::Kind::rejected;
    out.error = "reject";
    out.reason = printable(I->reject_reason);
    out.fields = std::move(I->reject_fields);
    out.where = I->reject_where;
  } else if (I->skipped) {
    out.kind = Outcome::Kind::skipped;
  } else if (rc != 0) {
    out.kind = Outcome::Kind::rejected;
    out.error = "runtime";
    out.where = I->error_where;
    out.reason = printable(strip_location(error_message(L, -1), out.where));
  } else if (!I->output_error.empty()) {
    out.kind = Outcome::Kind::rejected;
    out.error = "output";
    out.reason = printable(I->output_error);
  } else if (I->returned_nil) {
    out.kind = Outcome::Kind::skipped;
  }
  if (out.kind != Outcome::Kind::ok) target.resize(target_start);  // nothing partial stays
  // No script frame was left (a tail call into a C function): name the flow's file.
  if (out.kind == Outcome::Kind::rejected && out.where.file.empty()) out.where = {flow_file, 0};
  lua_settop(L, top);
  ++I->generation;  // views handed to this call are dead from here on
  I->notes = nullptr;
  I->correlation_id.clear();
  return out;
}

}  // namespace weft::script
