// JSON <-> Lua: record views (read-only, lazily read), the `json` library, and the
// serializer that turns what `map` returns into JSON text.
//
// Rules (README "The Lua API" documents them for script writers):
//  - JSON null and absent fields read as nil; integers beyond 2^53 read as strings.
//  - Output: keys 1..n -> array, string keys -> object, empty -> {} unless json.array().
//  - Whole numbers within 2^53 are written as integers; NaN/inf and invalid UTF-8 refused.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <new>
#include <type_traits>

#include "engine/script/lua_glue.h"

namespace weft::script {
namespace json = boost::json;

char json_null_key = 0;

namespace {
void write_sorted(const boost::json::value& v, std::string& out);
void write_sorted(simdjson::dom::element e, std::string& out);

constexpr double kMaxExactInt = 9007199254740992.0;  // 2^53
constexpr int kMaxDepth = 64;

using simdjson::dom::element;
using simdjson::dom::element_type;

// A record view: a simdjson DOM element (the record's parsed tape) plus the call generation
// it belongs to. Trivially copyable, so it lives directly in the userdata.
struct View {
  element e;
  uint64_t generation;
  // Arrays: where the last rec.items[i] lookup ended, so reading them in order costs O(1)
  // per element (simdjson's array::at walks from the start).
  size_t hint_index;  // index of hint_it, 0-based; SIZE_MAX when unset
  simdjson::dom::array::iterator hint_it;
};
static_assert(std::is_trivially_copyable_v<View>);

// Integers beyond 2^53 cannot be Lua numbers exactly: they arrive as their exact digits.
template <class Int>
void push_integer(lua_State* L, Int i) {
  if (static_cast<double>(i) > -kMaxExactInt && static_cast<double>(i) < kMaxExactInt) {
    lua_pushnumber(L, static_cast<double>(i));
  } else {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, i);
    lua_pushlstring(L, buf, r.ptr - buf);
  }
}

// Pushes a JSON scalar, or a view for containers.
void push_node(lua_State* L, element e) {
  switch (e.type()) {
    case element_type::NULL_VALUE: lua_pushnil(L); return;
    case element_type::BOOL: lua_pushboolean(L, e.get_bool().value_unsafe()); return;
    case element_type::DOUBLE: lua_pushnumber(L, e.get_double().value_unsafe()); return;
    case element_type::INT64: push_integer(L, e.get_int64().value_unsafe()); return;
    case element_type::UINT64: push_integer(L, e.get_uint64().value_unsafe()); return;
    case element_type::STRING: {
      std::string_view sv = e.get_string().value_unsafe();
      lua_pushlstring(L, sv.data(), sv.size());
      return;
    }
    case element_type::ARRAY:
    case element_type::OBJECT: push_view(L, e); return;
  }
}

View* check_view(lua_State* L, int idx) {
  auto* vw = static_cast<View*>(lua_touserdata(L, idx));
  if (vw == nullptr) luaL_error(L, "expected a record view");
  if (vw->generation != impl_of(L)->generation)
    luaL_error(L, "record used after its map call returned (keep values, not the record)");
  return vw;
}

int view_index(lua_State* L) {
  element e = check_view(L, 1)->e;
  if (e.type() == element_type::OBJECT) {
    if (lua_type(L, 2) != LUA_TSTRING) { lua_pushnil(L); return 1; }  // rec[1] on an object
    size_t n;
    const char* k = lua_tolstring(L, 2, &n);
    element child;
    if (e.get_object().value_unsafe().at_key(std::string_view(k, n)).get(child)) lua_pushnil(L);
    else push_node(L, child);
    return 1;
  }
  if (lua_type(L, 2) != LUA_TNUMBER) { lua_pushnil(L); return 1; }
  double d = lua_tonumber(L, 2);
  auto a = e.get_array().value_unsafe();
  size_t size = a.size();
  if (!(d >= 1 && d == std::floor(d) && d <= static_cast<double>(size))) {
    lua_pushnil(L);
    return 1;
  }
  View* vw = static_cast<View*>(lua_touserdata(L, 1));
  size_t want = static_cast<size_t>(d) - 1;
  size_t at = 0;
  auto it = a.begin();
  if (vw->hint_index != SIZE_MAX && vw->hint_index <= want) {
    at = vw->hint_index;
    it = vw->hint_it;
  }
  for (; at < want; ++at) ++it;
  vw->hint_index = want;
  vw->hint_it = it;
  push_node(L, *it);
  return 1;
}

int view_newindex(lua_State* L) {
  check_view(L, 1);
  return luaL_error(L, "records are read-only: copy values into your own table (json.copy)");
}

int view_len(lua_State* L) {
  element e = check_view(L, 1)->e;
  lua_pushinteger(L, e.type() == element_type::ARRAY ? static_cast<lua_Integer>(e.get_array().value_unsafe().size()) : 0);
  return 1;
}

int view_tostring(lua_State* L) {
  std::string s = to_json_text(check_view(L, 1)->e);
  lua_pushlstring(L, s.data(), s.size());
  return 1;
}

// Iteration state of pairs/ipairs over a view (upvalue 2 of the iterator closure).
struct Walk {
  bool is_object;
  bool ipairs_mode;  // ipairs: arrays only, stops at the first null
  size_t index;      // 1-based position of the next element
  simdjson::dom::object::iterator oit, oend;
  simdjson::dom::array::iterator ait, aend;
};
static_assert(std::is_trivially_copyable_v<Walk>);

// Iterator closure over a view: upvalue 1 = view (checked for liveness), 2 = Walk.
// pairs walks every non-null field or element; ipairs walks array elements 1..n and
// stops at the first null, as ipairs does on a table with a nil.
int view_next(lua_State* L) {
  check_view(L, lua_upvalueindex(1));
  auto* w = static_cast<Walk*>(lua_touserdata(L, lua_upvalueindex(2)));
  if (w->is_object) {
    if (w->ipairs_mode) return 0;
    for (; w->oit != w->oend; ++w->oit) {
      element v = w->oit.value();
      if (v.type() == element_type::NULL_VALUE) continue;
      std::string_view k = w->oit.key();
      ++w->oit;
      lua_pushlstring(L, k.data(), k.size());
      push_node(L, v);
      return 2;
    }
    return 0;
  }
  for (; w->ait != w->aend; ++w->ait, ++w->index) {
    element v = *w->ait;
    if (v.type() == element_type::NULL_VALUE) {
      if (w->ipairs_mode) return 0;
      continue;
    }
    ++w->ait;
    lua_pushnumber(L, static_cast<double>(w->index++));
    push_node(L, v);
    return 2;
  }
  return 0;
}

// ---- Lua -> JSON ---------------------------------------------------------------------

// Bytes that need attention when writing a JSON string: control characters, '"', '\\'
// (escaped) and bytes >= 0x80 (validated as UTF-8).
struct SpecialBytes {
  bool table[256];
  constexpr SpecialBytes() : table() {
    for (int c = 0; c < 256; ++c) table[c] = c < 0x20 || c == '"' || c == '\\' || c >= 0x80;
  }
};
constexpr SpecialBytes kSpecial;

// Length of the valid UTF-8 sequence at p[0..n), or 0 if it is not valid.
size_t utf8_seq(const unsigned char* p, size_t n) {
  unsigned char c = p[0];
  size_t len;
  uint32_t cp;
  if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
  else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
  else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
  else return 0;
  if (len > n) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((p[k] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (p[k] & 0x3F);
  }
  // overlong forms, surrogates, beyond U+10FFFF
  if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
      (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
    return 0;
  return len;
}

// Index of the first byte of p[0..n) that is not plain (control, '"', '\\' or >= 0x80), or n.
// Eight bytes at a time: the lowest flagged byte of each word is exact.
inline size_t scan_plain(const unsigned char* p, size_t n) {
  size_t i = 0;
  constexpr uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
  for (; i + 8 <= n; i += 8) {
    uint64_t x;
    std::memcpy(&x, p + i, 8);
    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
    // (v - ones) & ~v flags zero bytes (here: '"' and '\\'); (x - 0x20..) & ~x flags
    // bytes below 0x20; x itself flags bytes >= 0x80. Borrows only ever flag bytes above
    // a real match, so the lowest flag is exact.
    uint64_t mask = (((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b) | x) & highs;
    if (mask) return i + (__builtin_ctzll(mask) >> 3);
  }
  for (; i < n; ++i)
    if (kSpecial.table[p[i]]) return i;
  return n;
}

// Appends s as a JSON string; false (nothing usable appended) if s is not valid UTF-8.
bool append_string(std::string& out, const char* s, size_t n) {
  const auto* p = reinterpret_cast<const unsigned char*>(s);
  size_t i = scan_plain(p, n);
  if (i == n) {  // the common case: nothing to escape or validate
    size_t at = out.size();
    out.resize(at + n + 2);
    char* d = out.data() + at;
    d[0] = '"';
    std::memcpy(d + 1, s, n);
    d[n + 1] = '"';
    return true;
  }
  out.push_back('"');
  size_t start = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c >= 0x80) {
      size_t len = utf8_seq(p + i, n - i);
      if (len == 0) return false;
      i += len;
    } else {
      out.append(s + start, i - start);
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default: {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        }
      }
      start = ++i;
    }
    i += scan_plain(p + i, n - i);
  }
  out.append(s + start, n - start);
  out.push_back('"');
  return true;
}

// For text a parser has already validated as UTF-8 (record views, Boost.JSON values).
void append_escaped(std::string& out, const char* s, size_t n) { append_string(out, s, n); }

bool append_number(std::string& out, double d) {
  if (!std::isfinite(d)) return false;
  char buf[32];
  if (d == std::floor(d) && std::fabs(d) < kMaxExactInt) {
    auto r = std::to_chars(buf, buf + sizeof buf, static_cast<long long>(d));
    out.append(buf, r.ptr - buf);
  } else if (d == std::floor(d) && std::fabs(d) >= 9223372036854775808.0) {
    // A whole number beyond 64 bits: the shortest form may be plain digits
    // (18446744073709551616), which weft's readers refuse as an integer too large; the
    // exponent form reads back as the same double.
    auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
    out.append(buf, r.ptr - buf);
  } else {
    auto r = std::to_chars(buf, buf + sizeof buf, d);  // shortest round-trip form
    out.append(buf, r.ptr - buf);
  }
  return true;
}

struct Writer {
  lua_State* L;
  std::string& out;
  // Path of the value being written, kept as segments and turned into text only on error.
  struct Seg { const char* key; size_t len; size_t index; };
  std::vector<Seg> path;
  std::string err;
  int array_mt;
  // Keys of the objects being written, as a stack shared by the nesting levels (one
  // buffer per sandbox instead of one allocation per table).
  std::vector<SortKey>& keys;
  size_t max_bytes;       // output cap: the tenant's memory limit
  unsigned values = 0;    // written so far, to check the deadline now and then
  // Key/value pairs kept on the Lua stack while writing (fast path); past this many the
  // writer looks values up by key instead, so a huge table cannot overflow the C stack.
  static constexpr int kStackPairs = 1500;
  int stack_pairs = 0;

  bool fail(const std::string& what) {
    std::string p;
    for (const Seg& s : path) {
      if (s.key) { if (!p.empty()) p += '.'; p.append(s.key, s.len); }
      else p += "[" + std::to_string(s.index) + "]";
    }
    err = (p.empty() ? std::string("(result)") : p) + ": " + what;
    return false;
  }

  bool value(int idx, int depth) {
    // Writing runs in C, where the CPU hook cannot fire: check the deadline here, and cap the
    // size (a table that shares subtables, t = {t, t}, doubles with each level).
    if ((++values & 0x3FF) == 0) check_deadline(L);
    if (out.size() > max_bytes) return fail("output larger than the tenant's memory limit");
    switch (lua_type(L, idx)) {
      case LUA_TNIL: out += "null"; return true;
      case LUA_TBOOLEAN: out += lua_toboolean(L, idx) ? "true" : "false"; return true;
      case LUA_TNUMBER:
        if (!append_number(out, lua_tonumber(L, idx))) return fail("number is NaN or infinite");
        return true;
      case LUA_TSTRING: {
        size_t n;
        const char* s = lua_tolstring(L, idx, &n);
        if (!append_string(out, s, n)) return fail("string is not valid UTF-8");
        return true;
      }
      case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == &json_null_key) { out += "null"; return true; }
        return fail("unsupported value (light userdata)");
      case LUA_TUSERDATA:
        if (is_view(L, idx)) {
          // Checked here so the message names the path rather than raising.
          auto* vw = static_cast<View*>(lua_touserdata(L, idx));
          if (vw->generation != impl_of(L)->generation)
            return fail("record used after its map call returned (keep values, not the record)");
          write_sorted(vw->e, out);
          return true;
        }
        return fail("unsupported value (userdata)");
      case LUA_TTABLE:
        if (depth >= kMaxDepth) return fail("nested deeper than 64 levels (a cycle?)");
        if (readonly_target(L, idx)) {  // a read-only proxy (ctx, a library): write what it shows
          bool ok = table(lua_gettop(L), depth + 1);
          lua_pop(L, 1);
          return ok;
        }
        return table(idx, depth + 1);
      default:
        return fail(std::string("cannot be JSON: ") + lua_typename(L, lua_type(L, idx)));
    }
  }

  bool marked_array(int idx) {
    if (!lua_getmetatable(L, idx)) return false;
    lua_rawgeti(L, LUA_REGISTRYINDEX, array_mt);
    bool yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return yes;
  }

  bool table(int idx, int depth) {
    if (idx < 0) idx = lua_gettop(L) + idx + 1;
    luaL_checkstack(L, 8, "json nesting");
    // One pass to classify: count keys, remember string keys for sorting.
    size_t count = 0, n_string = 0;
    double max_int = 0;
    bool non_key = false;
    const size_t first_key = keys.size();
    const int top = lua_gettop(L);
    const int first_pairs = stack_pairs;
    // Drops this level's keys however we leave. C++ only: no Lua calls in a destructor,
    // which may run while LuaJIT unwinds an error. The stack is reset by `done` below, or
    // by the protected call when an error unwinds.
    struct Unwind {
      std::vector<SortKey>& k;
      size_t n;
      ~Unwind() { k.resize(n); }
    } unwind{keys, first_key};
    auto done = [&](bool ok) {
      lua_settop(L, top);
      stack_pairs = first_pairs;
      return ok;
    };
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
      ++count;
      int kt = lua_type(L, -2);
      if (kt == LUA_TSTRING) {
        size_t n;
        const char* k = lua_tolstring(L, -2, &n);  // the table keeps the key string alive
        if (stack_pairs < kStackPairs && lua_checkstack(L, 4)) {
          // Leave the key and its value on the stack (written from there once the keys are
          // sorted) and push a copy of the key for lua_next to continue from.
          keys.push_back({SortKey::prefix_of(k, n), k, n, lua_gettop(L) - 1});
          lua_pushvalue(L, -2);
          ++stack_pairs;
        } else {
          keys.push_back({SortKey::prefix_of(k, n), k, n, 0});  // 0: look the value up later
          lua_pop(L, 1);
        }
        ++n_string;
        continue;
      }
      lua_pop(L, 1);
      if (kt == LUA_TNUMBER) {
        double d = lua_tonumber(L, -1);
        if (d >= 1 && d == std::floor(d)) max_int = std::max(max_int, d);
        else non_key = true;
      } else {
        non_key = true;
      }
    }
    if (non_key) return done(fail("table has a key that is neither a string nor 1..n"));
    if (n_string > 0 && n_string < count) return done(fail("table mixes string keys and array items"));
    if (n_string == 0 && (count > 0 || marked_array(idx))) {
      if (max_int != static_cast<double>(count))
        return done(fail("array has holes (nil items); use json.null for a null item"));
      out.push_back('[');
      path.push_back({nullptr, 0, 0});
      for (size_t i = 1; i <= count; ++i) {
        if (i > 1) out.push_back(',');
        path.back().index = i;
        lua_rawgeti(L, idx, static_cast<int>(i));
        bool ok = value(-1, depth);
        lua_pop(L, 1);
        if (!ok) return done(false);
      }
      path.pop_back();
      out.push_back(']');
      return done(true);
    }
    std::sort(keys.begin() + first_key, keys.end());
    const size_t last_key = keys.size();
    out.push_back('{');
    for (size_t ki = first_key; ki < last_key; ++ki) {
      SortKey key = keys[ki];  // by value: nested tables may grow the buffer
      const char* k = key.p;
      size_t n = key.n;
      if (ki != first_key) out.push_back(',');
      if (!append_string(out, k, n)) return done(fail("key is not valid UTF-8"));
      out.push_back(':');
      path.push_back({k, n, 0});
      bool ok;
      if (key.slot > 0) {
        ok = value(key.slot + 1, depth);  // the value sits above its key
      } else {
        lua_pushlstring(L, k, n);
        lua_rawget(L, idx);
        ok = value(-1, depth);
        lua_pop(L, 1);
      }
      if (!ok) return done(false);
      path.pop_back();
    }
    out.push_back('}');
    return done(true);
  }
};

// ---- the json library ----------------------------------------------------------------

int l_encode(lua_State* L) {
  luaL_checkany(L, 1);
  std::string out, err;
  if (!write_json(L, 1, out, &err)) return luaL_error(L, "json.encode: %s", err.c_str());
  lua_pushlstring(L, out.data(), out.size());
  return 1;
}

int l_decode(lua_State* L) {
  size_t n;
  const char* s = luaL_checklstring(L, 1, &n);
  // The parse happens outside the Lua heap: refuse what could not fit in it anyway
  // (a decoded value takes several times its text).
  Sandbox::Impl* I = impl_of(L);
  size_t room = I->heap_limit > I->heap_used ? I->heap_limit - I->heap_used : 0;
  if (n > room / 4) {
    lua_pushnil(L);
    lua_pushliteral(L, "JSON text too large for the tenant's memory limit");
    return 2;
  }
  // Numbers as records have them: simdjson refuses an integer past 64 bits and a number
  // past a double's range (1e400), where Boost.JSON would give a rounded double or inf.
  {
    // Outside the Lua heap, and simdjson keeps ~14 bytes per byte of the largest text it
    // parsed: the parser is kept per thread for small texts only.
    thread_local simdjson::dom::parser numbers;
    auto err = numbers.parse(s, n).error();
    if (numbers.capacity() > (size_t{1} << 20)) numbers = simdjson::dom::parser();
    if (err == simdjson::NUMBER_ERROR) {
      lua_pushnil(L);
      lua_pushfstring(L, "invalid JSON: a number out of range (%s)", kNumberRangeRule);
      return 2;
    }
  }
  json::value v;
  try {
    json::parse_options opt;
    opt.max_depth = kMaxDepth;
    std::error_code ec;
    v = json::parse(json::string_view(s, n), ec, {}, opt);
    if (ec) {
      lua_pushnil(L);
      lua_pushfstring(L, "invalid JSON: %s", ec.message().c_str());
      return 2;
    }
  } catch (const std::exception& e) {
    return luaL_error(L, "json.decode: %s", e.what());
  }
  push_value(L, v);
  return 1;
}

int l_array(lua_State* L) {
  if (lua_isnoneornil(L, 1)) lua_newtable(L);
  else luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (lua_getmetatable(L, 1)) {  // never replace a metatable: that would unlock read-only tables
    lua_rawgeti(L, LUA_REGISTRYINDEX, impl_of(L)->array_mt);
    if (!lua_rawequal(L, -1, -2)) return luaL_error(L, "json.array: the table already has a metatable");
    lua_pop(L, 2);
    return 1;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, impl_of(L)->array_mt);
  lua_setmetatable(L, 1);
  return 1;
}

int l_has(lua_State* L) {
  size_t n;
  const char* k = luaL_checklstring(L, 2, &n);
  element e;
  if (to_view(L, 1, &e)) {
    element child;
    lua_pushboolean(L, e.type() == element_type::OBJECT &&
                           !e.get_object().value_unsafe().at_key(std::string_view(k, n)).get(child));
    return 1;
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  int t = readonly_target(L, 1) ? lua_gettop(L) : 1;
  lua_pushvalue(L, 2);
  lua_rawget(L, t);
  lua_pushboolean(L, !lua_isnil(L, -1));
  return 1;
}

int l_copy(lua_State* L) {
  element e;
  if (to_view(L, 1, &e)) {
    push_value(L, e);
    return 1;
  }
  lua_settop(L, 1);  // plain values copy as themselves
  return 1;
}

}  // namespace

// ---- shared entry points -------------------------------------------------------------

void push_view(lua_State* L, element e) {
  auto* vw = static_cast<View*>(lua_newuserdata(L, sizeof(View)));
  Sandbox::Impl* I = impl_of(L);
  new (vw) View{e, I->generation, SIZE_MAX, {}};
  lua_rawgeti(L, LUA_REGISTRYINDEX, I->view_mt);
  lua_setmetatable(L, -2);
}

bool is_view(lua_State* L, int idx) {
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return false;
  lua_rawgeti(L, LUA_REGISTRYINDEX, impl_of(L)->view_mt);
  bool yes = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return yes;
}

bool to_view(lua_State* L, int idx, element* out) {
  if (!is_view(L, idx)) return false;
  *out = check_view(L, idx)->e;
  return true;
}

void push_value(lua_State* L, const json::value& v) {
  luaL_checkstack(L, 4, "json nesting");
  switch (v.kind()) {
    case json::kind::object: {
      const auto& o = v.get_object();
      lua_createtable(L, 0, static_cast<int>(o.size()));
      for (const auto& kv : o) {
        if (kv.value().is_null()) continue;  // null fields read as nil, as on views
        lua_pushlstring(L, kv.key().data(), kv.key().size());
        push_value(L, kv.value());
        lua_rawset(L, -3);
      }
      return;
    }
    case json::kind::array: {
      const auto& a = v.get_array();
      lua_createtable(L, static_cast<int>(a.size()), 0);
      int i = 0;
      for (const auto& e : a) {
        if (e.is_null()) lua_pushlightuserdata(L, &json_null_key);  // keep positions
        else push_value(L, e);
        lua_rawseti(L, -2, ++i);
      }
      lua_rawgeti(L, LUA_REGISTRYINDEX, impl_of(L)->array_mt);  // [] stays [] on the way out
      lua_setmetatable(L, -2);
      return;
    }
    case json::kind::null: lua_pushnil(L); return;
    case json::kind::bool_: lua_pushboolean(L, v.get_bool()); return;
    case json::kind::double_: lua_pushnumber(L, v.get_double()); return;
    case json::kind::int64: push_integer(L, v.get_int64()); return;
    case json::kind::uint64: push_integer(L, v.get_uint64()); return;
    case json::kind::string: lua_pushlstring(L, v.get_string().data(), v.get_string().size()); return;
  }
}

void push_value(lua_State* L, element e) {
  luaL_checkstack(L, 4, "json nesting");
  if (e.type() == element_type::OBJECT) {
    auto o = e.get_object().value_unsafe();
    lua_createtable(L, 0, static_cast<int>(o.size()));
    for (auto kv : o) {
      if (kv.value.type() == element_type::NULL_VALUE) continue;  // null reads as nil
      lua_pushlstring(L, kv.key.data(), kv.key.size());
      push_value(L, kv.value);
      lua_rawset(L, -3);
    }
  } else if (e.type() == element_type::ARRAY) {
    auto a = e.get_array().value_unsafe();
    lua_createtable(L, static_cast<int>(a.size()), 0);
    int i = 0;
    for (element x : a) {
      if (x.type() == element_type::NULL_VALUE) lua_pushlightuserdata(L, &json_null_key);
      else push_value(L, x);
      lua_rawseti(L, -2, ++i);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, impl_of(L)->array_mt);
    lua_setmetatable(L, -2);
  } else {
    push_node(L, e);
  }
}

bool write_json(lua_State* L, int idx, std::string& out, std::string* err) {
  if (idx < 0) idx = lua_gettop(L) + idx + 1;
  Sandbox::Impl* I = impl_of(L);
  Writer w{L, out, {}, {}, I->array_mt, I->key_stack, out.size() + I->heap_limit};
  if (w.value(idx, 0)) return true;
  if (err) *err = w.err;
  return false;
}

void get_field(lua_State* L, int idx, const char* key, std::size_t len) {
  if (idx < 0) idx = lua_gettop(L) + idx + 1;
  if (lua_istable(L, idx)) {
    bool proxy = readonly_target(L, idx);
    lua_pushlstring(L, key, len);
    lua_rawget(L, proxy ? -2 : idx);
    if (proxy) lua_remove(L, -2);
    return;
  }
  element e, child;
  if (to_view(L, idx, &e) && e.type() == element_type::OBJECT &&
      !e.get_object().value_unsafe().at_key(std::string_view(key, len)).get(child)) {
    push_node(L, child);
    return;
  }
  lua_pushnil(L);
}

namespace {
// Iterator over a read-only proxy: upvalue 1 = the table behind it, 2 = ipairs position,
// 3 = true for ipairs. Nested tables come out as they are stored (proxies themselves).
int proxy_next(lua_State* L) {
  if (lua_toboolean(L, lua_upvalueindex(3))) {
    lua_Integer i = lua_tointeger(L, lua_upvalueindex(2)) + 1;
    lua_rawgeti(L, lua_upvalueindex(1), static_cast<int>(i));
    if (lua_isnil(L, -1)) return 0;
    lua_pushinteger(L, i);
    lua_replace(L, lua_upvalueindex(2));
    lua_pushinteger(L, i);
    lua_insert(L, -2);
    return 2;
  }
  lua_settop(L, 2);
  if (lua_next(L, lua_upvalueindex(1)) == 0) return 0;
  return 2;
}

int pairs_impl(lua_State* L, bool ipairs_mode) {
  element e;
  if (to_view(L, 1, &e)) {  // raises if dead
    lua_pushvalue(L, 1);
    auto* w = static_cast<Walk*>(lua_newuserdata(L, sizeof(Walk)));
    new (w) Walk{};
    w->ipairs_mode = ipairs_mode;
    w->index = 1;
    w->is_object = e.type() == element_type::OBJECT;
    if (w->is_object) {
      auto o = e.get_object().value_unsafe();
      w->oit = o.begin();
      w->oend = o.end();
    } else {
      auto a = e.get_array().value_unsafe();
      w->ait = a.begin();
      w->aend = a.end();
    }
    lua_pushcclosure(L, view_next, 2);
    return 1;
  }
  // A read-only proxy (ctx, libraries) is walked through the table behind it, by an
  // iterator that keeps that table to itself (handing it out would make it writable).
  if (lua_istable(L, 1) && readonly_target(L, 1)) {
    lua_pushinteger(L, 0);  // ipairs position
    lua_pushboolean(L, ipairs_mode);
    lua_pushcclosure(L, proxy_next, 3);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
  }
  // Plain tables: the original pairs/ipairs (upvalue 1).
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}
}  // namespace

int lua_pairs(lua_State* L) { return pairs_impl(L, false); }
int lua_ipairs(lua_State* L) { return pairs_impl(L, true); }

void open_json(lua_State* L, Sandbox::Impl* I) {
  // The view metatable: locked, so scripts cannot reach or replace it.
  lua_newtable(L);
  lua_pushcfunction(L, view_index);    lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, view_newindex); lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, view_len);      lua_setfield(L, -2, "__len");
  lua_pushcfunction(L, view_tostring); lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "record");        lua_setfield(L, -2, "__metatable");
  I->view_mt = luaL_ref(L, LUA_REGISTRYINDEX);

  lua_newtable(L);
  lua_pushliteral(L, "json.array");    lua_setfield(L, -2, "__metatable");
  I->array_mt = luaL_ref(L, LUA_REGISTRYINDEX);

  lua_newtable(L);
  lua_pushcfunction(L, l_encode); lua_setfield(L, -2, "encode");
  lua_pushcfunction(L, l_decode); lua_setfield(L, -2, "decode");
  lua_pushcfunction(L, l_array);  lua_setfield(L, -2, "array");
  lua_pushcfunction(L, l_has);    lua_setfield(L, -2, "has");
  lua_pushcfunction(L, l_copy);   lua_setfield(L, -2, "copy");
  lua_pushlightuserdata(L, &json_null_key); lua_setfield(L, -2, "null");
}

// ---- Lua-free helpers ----------------------------------------------------------------

namespace {
void write_sorted(const json::value& v, std::string& out) {
  switch (v.kind()) {
    case json::kind::object: {
      const auto& o = v.get_object();
      std::vector<const json::key_value_pair*> kv;
      kv.reserve(o.size());
      for (const auto& p : o) kv.push_back(&p);
      std::sort(kv.begin(), kv.end(), [](auto* a, auto* b) { return a->key() < b->key(); });
      out.push_back('{');
      for (size_t i = 0; i < kv.size(); ++i) {
        if (i) out.push_back(',');
        append_escaped(out, kv[i]->key().data(), kv[i]->key().size());
        out.push_back(':');
        write_sorted(kv[i]->value(), out);
      }
      out.push_back('}');
      return;
    }
    case json::kind::array: {
      out.push_back('[');
      bool first = true;
      for (const auto& e : v.get_array()) {
        if (!first) out.push_back(',');
        first = false;
        write_sorted(e, out);
      }
      out.push_back(']');
      return;
    }
    case json::kind::string:
      append_escaped(out, v.get_string().data(), v.get_string().size());
      return;
    case json::kind::double_:
      if (!append_number(out, v.get_double())) out += "null";  // cannot happen: parsed JSON is finite
      return;
    case json::kind::int64:
    case json::kind::uint64: {
      char buf[24];
      auto r = v.is_int64() ? std::to_chars(buf, buf + sizeof buf, v.get_int64())
                            : std::to_chars(buf, buf + sizeof buf, v.get_uint64());
      out.append(buf, r.ptr - buf);
      return;
    }
    default:
      out += json::serialize(v);
  }
}
void write_sorted(element e, std::string& out) {
  switch (e.type()) {
    case element_type::OBJECT: {
      auto o = e.get_object().value_unsafe();
      std::vector<simdjson::dom::key_value_pair> kv(o.begin(), o.end());
      std::stable_sort(kv.begin(), kv.end(), [](const auto& a, const auto& b) { return a.key < b.key; });
      out.push_back('{');
      for (size_t i = 0; i < kv.size(); ++i) {
        if (i) out.push_back(',');
        append_escaped(out, kv[i].key.data(), kv[i].key.size());
        out.push_back(':');
        write_sorted(kv[i].value, out);
      }
      out.push_back('}');
      return;
    }
    case element_type::ARRAY: {
      out.push_back('[');
      bool first = true;
      simdjson::dom::array a = e.get_array().value_unsafe();  // a named copy: range-for over a temporary result would dangle
      for (element x : a) {
        if (!first) out.push_back(',');
        first = false;
        write_sorted(x, out);
      }
      out.push_back(']');
      return;
    }
    case element_type::STRING: {
      std::string_view sv = e.get_string().value_unsafe();
      append_escaped(out, sv.data(), sv.size());
      return;
    }
    case element_type::DOUBLE:
      if (!append_number(out, e.get_double().value_unsafe())) out += "null";
      return;
    case element_type::INT64:
    case element_type::UINT64: {
      char buf[24];
      auto r = e.type() == element_type::INT64 ? std::to_chars(buf, buf + sizeof buf, e.get_int64().value_unsafe())
                                                : std::to_chars(buf, buf + sizeof buf, e.get_uint64().value_unsafe());
      out.append(buf, r.ptr - buf);
      return;
    }
    case element_type::BOOL: out += e.get_bool().value_unsafe() ? "true" : "false"; return;
    case element_type::NULL_VALUE: out += "null"; return;
  }
}

}  // namespace

std::string to_json_text(const json::value& v) {
  std::string out;
  write_sorted(v, out);
  return out;
}

std::string to_json_text(element e) {
  std::string out;
  write_sorted(e, out);
  return out;
}

bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    if (p[i] < 0x80) { ++i; continue; }
    size_t len = utf8_seq(p + i, n - i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

}  // namespace weft::script
