// string.find / match / gmatch / gsub for the sandbox, with a step budget.
//
// Why our own copy: Lua's pattern matcher is a C function, and LuaJIT's count hook never
// runs inside C functions, so `string.rep("a", 3000):find(".-.-.-b")` backtracks for
// minutes and no deadline can stop it (measured, see shared/reference/luajit.md). This is
// Lua 5.1's matcher (lstrlib.c, MIT licence, Lua.org, PUC-Rio) with two additions: every
// 4096 steps it checks the call's deadline, and recursion is limited to 200 levels.
#include <cctype>
#include <cstring>

#include "engine/script/lua_glue.h"

namespace weft::script {
namespace {

constexpr int kMaxCaptures = 32;
constexpr int kCapUnfinished = -1;
constexpr int kCapPosition = -2;
constexpr char kEsc = '%';
constexpr int kMaxRecursion = 200;
const char* const kSpecials = "^$*+?.([%-";

struct MatchState {
  const char* src_init;
  const char* src_end;
  lua_State* L;
  int level;
  int depth;
  unsigned steps;
  struct {
    const char* init;
    ptrdiff_t len;
  } capture[kMaxCaptures];
};

// Pattern functions can nest through gsub's function and table replacements (a callback
// that calls gsub again); each level takes C stack for its buffer and match state, so the
// nesting is bounded. C++ only in the destructor: it may run while an error unwinds.
struct NestGuard {
  Sandbox::Impl* I;
  explicit NestGuard(lua_State* L) : I(impl_of(L)) {
    if (++I->pattern_depth > 32) {
      --I->pattern_depth;
      luaL_error(L, "string functions nested too deeply (a gsub callback calling gsub?)");
    }
  }
  ~NestGuard() { --I->pattern_depth; }
};

inline void step(MatchState* ms) {
  if ((++ms->steps & 0xFFF) == 0) check_deadline(ms->L);
}

int check_capture(MatchState* ms, int l) {
  l -= '1';
  if (l < 0 || l >= ms->level || ms->capture[l].len == kCapUnfinished)
    return luaL_error(ms->L, "invalid capture index");
  return l;
}

int capture_to_close(MatchState* ms) {
  int level = ms->level;
  for (level--; level >= 0; level--)
    if (ms->capture[level].len == kCapUnfinished) return level;
  return luaL_error(ms->L, "invalid pattern capture");
}

const char* class_end(MatchState* ms, const char* p) {
  switch (*p++) {
    case kEsc:
      if (*p == '\0') luaL_error(ms->L, "malformed pattern (ends with '%%')");
      return p + 1;
    case '[':
      if (*p == '^') p++;
      do {
        if (*p == '\0') luaL_error(ms->L, "malformed pattern (missing ']')");
        if (*(p++) == kEsc && *p != '\0') p++;
      } while (*p != ']');
      return p + 1;
    default:
      return p;
  }
}

int match_class(int c, int cl) {
  int res;
  switch (tolower(cl)) {
    case 'a': res = isalpha(c); break;
    case 'c': res = iscntrl(c); break;
    case 'd': res = isdigit(c); break;
    case 'l': res = islower(c); break;
    case 'p': res = ispunct(c); break;
    case 's': res = isspace(c); break;
    case 'u': res = isupper(c); break;
    case 'w': res = isalnum(c); break;
    case 'x': res = isxdigit(c); break;
    case 'z': res = (c == 0); break;
    default: return (cl == c);
  }
  if (isupper(cl)) res = !res;
  return res;
}

int match_bracket_class(int c, const char* p, const char* ec) {
  int sig = 1;
  if (*(p + 1) == '^') {
    sig = 0;
    p++;
  }
  while (++p < ec) {
    if (*p == kEsc) {
      p++;
      if (match_class(c, static_cast<unsigned char>(*p))) return sig;
    } else if (*(p + 1) == '-' && (p + 2 < ec)) {
      p += 2;
      if (static_cast<unsigned char>(*(p - 2)) <= c && c <= static_cast<unsigned char>(*p))
        return sig;
    } else if (static_cast<unsigned char>(*p) == c) {
      return sig;
    }
  }
  return !sig;
}

int single_match(int c, const char* p, const char* ep) {
  switch (*p) {
    case '.': return 1;
    case kEsc: return match_class(c, static_cast<unsigned char>(*(p + 1)));
    case '[': return match_bracket_class(c, p, ep - 1);
    default: return (static_cast<unsigned char>(*p) == c);
  }
}

const char* match(MatchState* ms, const char* s, const char* p);

const char* match_balance(MatchState* ms, const char* s, const char* p) {
  if (*p == 0 || *(p + 1) == 0) luaL_error(ms->L, "unbalanced pattern");
  if (*s != *p) return nullptr;
  int b = *p, e = *(p + 1), cont = 1;
  while (++s < ms->src_end) {
    step(ms);
    if (*s == e) {
      if (--cont == 0) return s + 1;
    } else if (*s == b) {
      cont++;
    }
  }
  return nullptr;
}

const char* max_expand(MatchState* ms, const char* s, const char* p, const char* ep) {
  ptrdiff_t i = 0;
  while ((s + i) < ms->src_end && single_match(static_cast<unsigned char>(*(s + i)), p, ep)) {
    step(ms);
    i++;
  }
  while (i >= 0) {  // try with the maximum repetitions, then fewer
    const char* res = match(ms, (s + i), ep + 1);
    if (res) return res;
    i--;
  }
  return nullptr;
}

const char* min_expand(MatchState* ms, const char* s, const char* p, const char* ep) {
  for (;;) {
    const char* res = match(ms, s, ep + 1);
    if (res != nullptr) return res;
    if (s < ms->src_end && single_match(static_cast<unsigned char>(*s), p, ep)) s++;
    else return nullptr;
  }
}

const char* start_capture(MatchState* ms, const char* s, const char* p, int what) {
  int level = ms->level;
  if (level >= kMaxCaptures) luaL_error(ms->L, "too many captures");
  ms->capture[level].init = s;
  ms->capture[level].len = what;
  ms->level = level + 1;
  const char* res = match(ms, s, p);
  if (res == nullptr) ms->level--;
  return res;
}

const char* end_capture(MatchState* ms, const char* s, const char* p) {
  int l = capture_to_close(ms);
  ms->capture[l].len = s - ms->capture[l].init;
  const char* res = match(ms, s, p);
  if (res == nullptr) ms->capture[l].len = kCapUnfinished;
  return res;
}

const char* match_capture(MatchState* ms, const char* s, int l) {
  l = check_capture(ms, l);
  size_t len = ms->capture[l].len;
  if (static_cast<size_t>(ms->src_end - s) >= len && memcmp(ms->capture[l].init, s, len) == 0)
    return s + len;
  return nullptr;
}

struct DepthGuard {
  MatchState* ms;
  explicit DepthGuard(MatchState* m) : ms(m) {
    if (++ms->depth > kMaxRecursion) luaL_error(ms->L, "pattern too complex (recursion limit)");
  }
  ~DepthGuard() { --ms->depth; }
};

const char* match(MatchState* ms, const char* s, const char* p) {
  DepthGuard guard(ms);
init:
  step(ms);
  switch (*p) {
    case '(':
      if (*(p + 1) == ')') return start_capture(ms, s, p + 2, kCapPosition);
      return start_capture(ms, s, p + 1, kCapUnfinished);
    case ')':
      return end_capture(ms, s, p + 1);
    case kEsc:
      switch (*(p + 1)) {
        case 'b':
          s = match_balance(ms, s, p + 2);
          if (s == nullptr) return nullptr;
          p += 4;
          goto init;
        case 'f': {
          p += 2;
          if (*p != '[') luaL_error(ms->L, "missing '[' after '%%f' in pattern");
          const char* ep = class_end(ms, p);
          char previous = (s == ms->src_init) ? '\0' : *(s - 1);
          if (match_bracket_class(static_cast<unsigned char>(previous), p, ep - 1) ||
              !match_bracket_class(static_cast<unsigned char>(*s), p, ep - 1))
            return nullptr;
          p = ep;
          goto init;
        }
        default:
          if (isdigit(static_cast<unsigned char>(*(p + 1)))) {
            s = match_capture(ms, s, static_cast<unsigned char>(*(p + 1)));
            if (s == nullptr) return nullptr;
            p += 2;
            goto init;
          }
          goto dflt;
      }
    case '\0':
      return s;
    case '$':
      if (*(p + 1) == '\0') return (s == ms->src_end) ? s : nullptr;
      goto dflt;
    default:
    dflt: {
      const char* ep = class_end(ms, p);
      int m = s < ms->src_end && single_match(static_cast<unsigned char>(*s), p, ep);
      switch (*ep) {
        case '?': {
          const char* res;
          if (m && ((res = match(ms, s + 1, ep + 1)) != nullptr)) return res;
          p = ep + 1;
          goto init;
        }
        case '*':
          return max_expand(ms, s, p, ep);
        case '+':
          return (m ? max_expand(ms, s + 1, p, ep) : nullptr);
        case '-':
          return min_expand(ms, s, p, ep);
        default:
          if (!m) return nullptr;
          s++;
          p = ep;
          goto init;
      }
    }
  }
}

const char* lmemfind(const char* s1, size_t l1, const char* s2, size_t l2) {
  if (l2 == 0) return s1;
  if (l2 > l1) return nullptr;
  const void* r = memmem(s1, l1, s2, l2);
  return static_cast<const char*>(r);
}

void push_onecapture(MatchState* ms, int i, const char* s, const char* e) {
  if (i >= ms->level) {
    if (i == 0) lua_pushlstring(ms->L, s, e - s);  // whole match
    else luaL_error(ms->L, "invalid capture index");
  } else {
    ptrdiff_t l = ms->capture[i].len;
    if (l == kCapUnfinished) luaL_error(ms->L, "unfinished capture");
    if (l == kCapPosition) lua_pushinteger(ms->L, ms->capture[i].init - ms->src_init + 1);
    else lua_pushlstring(ms->L, ms->capture[i].init, l);
  }
}

int push_captures(MatchState* ms, const char* s, const char* e) {
  int nlevels = (ms->level == 0 && s) ? 1 : ms->level;
  luaL_checkstack(ms->L, nlevels, "too many captures");
  for (int i = 0; i < nlevels; i++) push_onecapture(ms, i, s, e);
  return nlevels;
}

ptrdiff_t posrelat(ptrdiff_t pos, size_t len) {
  if (pos < 0) pos += static_cast<ptrdiff_t>(len) + 1;
  return (pos >= 0) ? pos : 0;
}

void init_state(MatchState* ms, lua_State* L, const char* s, size_t ls) {
  ms->L = L;
  ms->src_init = s;
  ms->src_end = s + ls;
  ms->depth = 0;
  ms->steps = 0;
}

int str_find_aux(lua_State* L, int find) {
  NestGuard nest(L);
  size_t l1, l2;
  const char* s = luaL_checklstring(L, 1, &l1);
  const char* p = luaL_checklstring(L, 2, &l2);
  ptrdiff_t init = posrelat(luaL_optinteger(L, 3, 1), l1) - 1;
  if (init < 0) init = 0;
  else if (static_cast<size_t>(init) > l1) init = static_cast<ptrdiff_t>(l1);
  if (find && (lua_toboolean(L, 4) || strpbrk(p, kSpecials) == nullptr)) {
    const char* s2 = lmemfind(s + init, l1 - init, p, l2);  // plain search
    if (s2) {
      lua_pushinteger(L, s2 - s + 1);
      lua_pushinteger(L, s2 - s + l2);
      return 2;
    }
  } else {
    MatchState ms;
    int anchor = (*p == '^') && (p++, 1);
    const char* s1 = s + init;
    init_state(&ms, L, s, l1);
    do {
      const char* res;
      ms.level = 0;
      ms.depth = 0;
      if ((res = match(&ms, s1, p)) != nullptr) {
        if (find) {
          lua_pushinteger(L, s1 - s + 1);
          lua_pushinteger(L, res - s);
          return push_captures(&ms, nullptr, nullptr) + 2;
        }
        return push_captures(&ms, s1, res);
      }
    } while (s1++ < ms.src_end && !anchor);
  }
  lua_pushnil(L);
  return 1;
}

int str_find(lua_State* L) { return str_find_aux(L, 1); }
int str_match(lua_State* L) { return str_find_aux(L, 0); }

int gmatch_aux(lua_State* L) {
  NestGuard nest(L);
  MatchState ms;
  size_t ls;
  const char* s = lua_tolstring(L, lua_upvalueindex(1), &ls);
  const char* p = lua_tostring(L, lua_upvalueindex(2));
  init_state(&ms, L, s, ls);
  for (const char* src = s + static_cast<size_t>(lua_tointeger(L, lua_upvalueindex(3)));
       src <= ms.src_end; src++) {
    ms.level = 0;
    ms.depth = 0;
    const char* e = match(&ms, src, p);
    if (e != nullptr) {
      lua_Integer newstart = e - s;
      if (e == src) newstart++;  // empty match: go at least one position
      lua_pushinteger(L, newstart);
      lua_replace(L, lua_upvalueindex(3));
      return push_captures(&ms, src, e);
    }
  }
  return 0;
}

int str_gmatch(lua_State* L) {
  luaL_checkstring(L, 1);
  luaL_checkstring(L, 2);
  lua_settop(L, 2);
  lua_pushinteger(L, 0);
  lua_pushcclosure(L, gmatch_aux, 3);
  return 1;
}

void add_s(MatchState* ms, luaL_Buffer* b, const char* s, const char* e) {
  size_t l;
  const char* news = lua_tolstring(ms->L, 3, &l);
  for (size_t i = 0; i < l; i++) {
    // Counted like matching: a long replacement times many matches is work the CPU limit
    // must see (it is checked every 4,096 steps).
    step(ms);
    if (news[i] != kEsc) {
      luaL_addchar(b, news[i]);
    } else {
      i++;
      if (!isdigit(static_cast<unsigned char>(news[i]))) {
        luaL_addchar(b, news[i]);
      } else if (news[i] == '0') {
        luaL_addlstring(b, s, e - s);
      } else {
        push_onecapture(ms, news[i] - '1', s, e);
        luaL_addvalue(b);
      }
    }
  }
}

void add_value(MatchState* ms, luaL_Buffer* b, const char* s, const char* e) {
  lua_State* L = ms->L;
  switch (lua_type(L, 3)) {
    case LUA_TNUMBER:
    case LUA_TSTRING:
      add_s(ms, b, s, e);
      return;
    case LUA_TFUNCTION: {
      lua_pushvalue(L, 3);
      int n = push_captures(ms, s, e);
      lua_call(L, n, 1);
      break;
    }
    case LUA_TTABLE:
      push_onecapture(ms, 0, s, e);
      lua_gettable(L, 3);
      break;
  }
  if (!lua_toboolean(L, -1)) {  // nil or false: keep the original text
    lua_pop(L, 1);
    lua_pushlstring(L, s, e - s);
  } else if (!lua_isstring(L, -1)) {
    luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
  }
  luaL_addvalue(b);
}

int str_gsub(lua_State* L) {
  NestGuard nest(L);
  size_t srcl;
  const char* src = luaL_checklstring(L, 1, &srcl);
  const char* p = luaL_checkstring(L, 2);
  int tr = lua_type(L, 3);
  int max_s = luaL_optint(L, 4, static_cast<int>(srcl) + 1);
  int anchor = (*p == '^') && (p++, 1);
  int n = 0;
  MatchState ms;
  luaL_Buffer b;
  luaL_argcheck(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE,
                3, "string/function/table expected");
  luaL_buffinit(L, &b);
  init_state(&ms, L, src, srcl);
  while (n < max_s) {
    ms.level = 0;
    ms.depth = 0;
    const char* e = match(&ms, src, p);
    if (e) {
      n++;
      add_value(&ms, &b, src, e);
    }
    if (e && e > src) src = e;
    else if (src < ms.src_end) luaL_addchar(&b, *src++);
    else break;
    if (anchor) break;
  }
  luaL_addlstring(&b, src, ms.src_end - src);
  luaL_pushresult(&b);
  lua_pushinteger(L, n);
  return 2;
}

}  // namespace

void register_bounded_patterns(lua_State* L, int idx) {
  if (idx < 0) idx = lua_gettop(L) + idx + 1;
  lua_pushcfunction(L, str_find);   lua_setfield(L, idx, "find");
  lua_pushcfunction(L, str_match);  lua_setfield(L, idx, "match");
  lua_pushcfunction(L, str_gmatch); lua_setfield(L, idx, "gmatch");
  lua_pushcfunction(L, str_gsub);   lua_setfield(L, idx, "gsub");
}

}  // namespace weft::script
