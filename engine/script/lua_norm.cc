// The Lua `norm` library: thin bindings over engine/script/norm.h, plus enum and locale,
// which work on Lua tables. Every function returns the value, or nil and a reason; in a
// dry-run each change or refusal is recorded as a note.
#include <algorithm>
#include <cmath>

#include "engine/script/lua_glue.h"
#include "engine/script/norm.h"

namespace weft::script {
namespace {

constexpr double kMaxExactInt = 9007199254740992.0;  // 2^53: doubles hold every integer below it

// A number as text: whole numbers below 2^53 without ".0" or an exponent (1700000000,
// not 1.7e+09), others as Lua's tostring writes them. Does not change the value at idx.
std::string number_text(lua_State* L, int idx) {
  double d = lua_tonumber(L, idx);
  if (d == std::floor(d) && std::fabs(d) < kMaxExactInt) return std::to_string(static_cast<int64_t>(d));
  lua_pushvalue(L, idx);  // lua_tostring converts in place: convert a copy
  std::string text = lua_tostring(L, -1);
  lua_pop(L, 1);
  return text;
}

std::string arg_text(lua_State* L, int idx) {
  if (lua_type(L, idx) == LUA_TNUMBER) return number_text(L, idx);  // not lua_tostring: it would turn the value into text
  if (lua_isstring(L, idx)) return lua_tostring(L, idx);
  if (lua_isnoneornil(L, idx)) return "nil";
  return luaL_typename(L, idx);
}

void note(lua_State* L, const char* fn, int arg, const std::string& output, const std::string& reason) {
  Sandbox::Impl* I = impl_of(L);
  if (I->notes == nullptr) return;
  // Bounded: a script calling norm.* in a loop over a large text must not fill the memory
  // with notes (dry-run shows them; the first thousand are plenty, each cut to 1 KiB).
  constexpr size_t kMaxNotes = 1000, kMaxNoteText = 1024;
  if (I->notes->size() >= kMaxNotes) return;
  std::string input = arg_text(L, arg);
  if (reason.empty() && input == output) return;  // unchanged: nothing to say
  auto cut = [](std::string t) {
    if (t.size() > kMaxNoteText) {
      size_t n = kMaxNoteText;
      while (n > 0 && (static_cast<unsigned char>(t[n]) & 0xC0) == 0x80) --n;  // not inside a character
      t.resize(n);
      t += "...";
    }
    return t;
  };
  I->notes->push_back({fn, cut(std::move(input)), cut(output), cut(reason)});
}

int fail(lua_State* L, const char* fn, int arg, const std::string& reason) {
  note(L, fn, arg, "", reason);
  lua_pushnil(L);
  lua_pushlstring(L, reason.data(), reason.size());
  return 2;
}

int give(lua_State* L, const char* fn, int arg, const norm::Result& r) {
  if (!r.ok()) return fail(L, fn, arg, r.reason);
  note(L, fn, arg, *r.value, "");
  lua_pushlstring(L, r.value->data(), r.value->size());
  return 1;
}

// Most functions take one string; nil and non-strings are refused with a reason.
bool string_arg(lua_State* L, int idx, std::string_view* out) {
  if (lua_type(L, idx) != LUA_TSTRING) return false;
  size_t n;
  const char* s = lua_tolstring(L, idx, &n);
  *out = std::string_view(s, n);
  return true;
}

int missing(lua_State* L, const char* fn) {
  return fail(L, fn, 1, lua_isnoneornil(L, 1) ? "no value" : std::string("expected a string, got a ") + luaL_typename(L, 1));
}

template <norm::Result (*F)(std::string_view)>
int unary(lua_State* L, const char* fn) {
  std::string_view s;
  if (!string_arg(L, 1, &s)) return missing(L, fn);
  return give(L, fn, 1, F(s));
}

int l_trim(lua_State* L) {
  std::string_view s;
  if (!string_arg(L, 1, &s)) return missing(L, "trim");
  std::string t = norm::trim(s);
  note(L, "trim", 1, t, "");
  lua_pushlstring(L, t.data(), t.size());
  return 1;
}
int l_lower(lua_State* L) { return unary<norm::lower>(L, "lower"); }
int l_email(lua_State* L) { return unary<norm::email>(L, "email"); }
int l_date(lua_State* L) { return unary<norm::date>(L, "date"); }
int l_country(lua_State* L) { return unary<norm::country>(L, "country"); }

int l_phone(lua_State* L) {
  std::string_view s, region;
  if (lua_type(L, 1) == LUA_TNUMBER) lua_tostring(L, 1);  // a number typed as digits
  if (!string_arg(L, 1, &s)) return missing(L, "phone");
  if (!lua_isnoneornil(L, 2) && !string_arg(L, 2, &region))
    return fail(L, "phone", 1, "region must be a two-letter country code");
  return give(L, "phone", 1, norm::phone(s, region));
}

int l_datetime(lua_State* L) {
  if (lua_type(L, 1) == LUA_TNUMBER) {
    double d = lua_tonumber(L, 1);
    // A number is read as epoch milliseconds, but epoch seconds are numbers too and nothing in
    // the value says which it is: 1700000000 would land on 1970-01-20 instead of 2023. Below
    // 1e11 (1973-03-03 in milliseconds, the year 5138 in seconds) a number is refused, as
    // the string path refuses fewer than 12 digits. 0 falls under it: it usually stands for
    // "no date", not for 1970-01-01.
    if (std::fabs(d) < 1e11) {
      std::string text = number_text(L, 1);
      return fail(L, "datetime", 1,
                  d == 0 ? "not a timestamp: 0 usually stands for no date (numbers below 1e11 are refused)"
                         : "not a timestamp: " + text + " looks like epoch seconds; multiply by 1000 for epoch "
                           "milliseconds (numbers below 1e11 are refused)");
    }
    if (d != std::floor(d) || std::fabs(d) > 1e16) return fail(L, "datetime", 1, "epoch milliseconds must be a whole number");
    return give(L, "datetime", 1, norm::datetime_ms(static_cast<int64_t>(d)));
  }
  return unary<norm::datetime>(L, "datetime");
}

// A commercetools money object. A centPrecision one is centAmount / 10^fractionDigits
// (fractionDigits defaults to 2). A highPrecision one ({"type": "highPrecision",
// "centAmount": 1235, "preciseAmount": 123450, "fractionDigits": 4}) holds the amount in
// preciseAmount, counted in its own fractionDigits; its centAmount is that amount rounded to
// the currency's cents (12.35 of 12.345), and centAmount / 10^fractionDigits would be
// 0.1235. The object is at index 1; on success *amount and *digits are set (and
// *precise_used, when the amount is preciseAmount), else *why.
bool money_object(lua_State* L, double* amount, double* digits, bool* precise_used, std::string* why) {
  get_field(L, 1, "type", 4);
  get_field(L, 1, "preciseAmount", 13);
  get_field(L, 1, "centAmount", 10);
  get_field(L, 1, "fractionDigits", 14);
  const int type = -4, precise = -3, cents = -2, fraction = -1;
  size_t n = 0;
  const char* t = lua_type(L, type) == LUA_TSTRING ? lua_tolstring(L, type, &n) : nullptr;
  const bool high = !lua_isnil(L, precise) || (t != nullptr && std::string_view(t, n) == "highPrecision");
  if (high) {
    // preciseAmount counts units of 10^-fractionDigits, so without fractionDigits there is no
    // amount: it is not assumed to be 2, as it is for centAmount.
    if (lua_isnil(L, precise)) *why = "high-precision money object has no preciseAmount";
    else if (lua_type(L, precise) != LUA_TNUMBER)  // a record's integer beyond 2^53 arrives as its digits
      *why = std::string("money object's preciseAmount must be a whole number below 2^53, got a ") +
             luaL_typename(L, precise);
    else if (lua_isnil(L, fraction)) *why = "high-precision money object has no fractionDigits";
    *amount = lua_tonumber(L, precise);
  } else {
    if (lua_type(L, cents) != LUA_TNUMBER) *why = "money object has no numeric centAmount";
    *amount = lua_tonumber(L, cents);
  }
  if (why->empty() && !lua_isnil(L, fraction) && lua_type(L, fraction) != LUA_TNUMBER)
    *why = "money object's fractionDigits must be a number";
  *digits = lua_isnil(L, fraction) ? 2 : lua_tonumber(L, fraction);
  lua_pop(L, 4);
  if (why->empty() && high &&
      (!std::isfinite(*amount) || *amount != std::floor(*amount) || std::fabs(*amount) >= kMaxExactInt))
    *why = "money object's preciseAmount must be a whole number below 2^53";
  *precise_used = high;
  return why->empty();
}

int l_money(lua_State* L) {
  double cents, digits;
  bool precise = false;  // checked in money_object, to 2^53
  if (lua_istable(L, 1) || is_view(L, 1)) {  // a money object
    std::string why;
    if (!money_object(L, &cents, &digits, &precise, &why)) return fail(L, "money", 1, why);
  } else {
    if (lua_type(L, 1) != LUA_TNUMBER) return fail(L, "money", 1, lua_isnoneornil(L, 1) ? "no value" : "cent amount must be a number");
    cents = lua_tonumber(L, 1);
    digits = lua_isnoneornil(L, 2) ? 2 : luaL_checknumber(L, 2);
  }
  if (!precise && (!std::isfinite(cents) || cents != std::floor(cents) || std::fabs(cents) > 9.0e15))
    return fail(L, "money", 1, "cent amount must be a whole number below 2^53");
  if (!std::isfinite(digits) || digits != std::floor(digits) || digits < 0 || digits > 8)
    return fail(L, "money", 1, "fraction digits must be a whole number from 0 to 8");
  std::string reason;
  auto v = norm::money(static_cast<int64_t>(cents), static_cast<int>(digits), &reason);
  if (!v) return fail(L, "money", 1, reason);
  lua_pushnumber(L, *v);
  if (impl_of(L)->notes) {
    lua_pushvalue(L, -1);  // lua_tostring converts in place: print a copy
    note(L, "money", 1, lua_tostring(L, -1), "");
    lua_pop(L, 1);
  }
  return 1;
}

// Case-insensitive ASCII/Unicode comparison key.
std::string fold(std::string_view s) {
  auto r = norm::lower(norm::trim(s));
  return r.ok() ? *r.value : std::string(s);
}

// norm.enum(value, map, default): map is {from = to, ...} or a list of allowed values.
int l_enum(lua_State* L) {
  luaL_checktype(L, 2, LUA_TTABLE);
  if (readonly_target(L, 2)) lua_replace(L, 2);  // a map from ctx: read the table behind it
  bool has_default = lua_gettop(L) >= 3 && !lua_isnil(L, 3);
  // JSON booleans and numbers are looked up by their text (true as "true", 1 as "1"), so
  // that a flag or a numeric code maps like a string does, and falls to the default with a
  // note when unknown.
  if (lua_type(L, 1) == LUA_TBOOLEAN) {
    lua_pushstring(L, lua_toboolean(L, 1) ? "true" : "false");
    lua_replace(L, 1);
  } else if (lua_type(L, 1) == LUA_TNUMBER) {
    std::string text = number_text(L, 1);
    lua_pushlstring(L, text.data(), text.size());
    lua_replace(L, 1);
  }
  std::string_view v;
  if (!string_arg(L, 1, &v)) {
    if (has_default) { lua_pushvalue(L, 3); return 1; }
    return missing(L, "enum");
  }
  std::string want = fold(v);
  std::string known;
  bool is_list = (lua_objlen(L, 2) > 0);
  lua_pushnil(L);
  while (lua_next(L, 2) != 0) {
    int cand = is_list ? -1 : -2;  // lists compare the values, maps the keys
    if (lua_type(L, cand) == LUA_TSTRING) {
      size_t n;
      const char* c = lua_tolstring(L, cand, &n);
      if (fold(std::string_view(c, n)) == want) {
        lua_pushvalue(L, -1);  // the canonical spelling (lists) or the mapped value (maps)
        std::string out = lua_type(L, -1) == LUA_TNUMBER ? number_text(L, -1)
                          : lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
        note(L, "enum", 1, out, "");
        return 1;
      }
      if (known.size() < 200) known += (known.empty() ? "" : ", ") + std::string(c, n);
    }
    lua_pop(L, 1);
  }
  if (has_default) {
    note(L, "enum", 1, arg_text(L, 3), "");
    lua_pushvalue(L, 3);
    return 1;
  }
  return fail(L, "enum", 1, "unknown value '" + std::string(v) + "' (expected one of " + known + ")");
}

// BCP 47 tags are case-insensitive (de-AT is de-at), and SFCC writes them with '_'
// (de_AT): locale keys compare by this folding, ASCII lowercase with '_' as '-'.
char tag_char(char c) {
  if (c >= 'A' && c <= 'Z') return static_cast<char>(c - 'A' + 'a');
  return c == '_' ? '-' : c;
}

bool same_tag(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (tag_char(a[i]) != tag_char(b[i])) return false;
  return true;
}

// Whether key is a regional tag of the bare language lang ("en-US" and "en_gb" of "en").
bool of_language(std::string_view key, std::string_view lang) {
  return key.size() > lang.size() + 1 && tag_char(key[lang.size()]) == '-' && same_tag(key.substr(0, lang.size()), lang);
}

// Whether key a sorts before key b: by their folded text, then (keys that fold the same,
// en-US and en_us) by their bytes, so that which key is taken does not depend on the
// order a table happens to hold its keys in.
bool tag_before(std::string_view a, std::string_view b) {
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    auto x = static_cast<unsigned char>(tag_char(a[i])), y = static_cast<unsigned char>(tag_char(b[i]));
    if (x != y) return x < y;
  }
  if (a.size() != b.size()) return a.size() < b.size();
  return a < b;
}

// Calls f(key) for each string key of the table or record object at idx whose value is not
// nil (a record's null reads as nil). A record may hold any number of keys and this runs in
// C, where the CPU hook cannot stop it: it checks the deadline itself.
template <class F>
void for_each_key(lua_State* L, int idx, F&& f) {
  unsigned seen = 0;
  if (lua_istable(L, idx)) {
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
      if ((++seen & 0xFF) == 0) check_deadline(L);
      if (lua_type(L, -2) == LUA_TSTRING) {  // (lua_tolstring on a number key would break lua_next)
        size_t n;
        const char* k = lua_tolstring(L, -2, &n);
        f(std::string_view(k, n));
      }
      lua_pop(L, 1);
    }
    return;
  }
  simdjson::dom::element e;
  if (!to_view(L, idx, &e) || e.type() != simdjson::dom::element_type::OBJECT) return;
  auto object = e.get_object().value_unsafe();  // a copy: the result it comes from is a temporary
  for (auto field : object) {
    if ((++seen & 0xFF) == 0) check_deadline(L);
    if (!field.value.is_null()) f(field.key);
  }
}

// One locale norm.locale looks for.
struct LocaleTry {
  std::string tag;
  // A bare language the caller asked for (wanted or a fallback): without a key of its own,
  // its first regional key (keys sorted) does. A language taken from a regional tag does
  // not take a sibling region: de-AT falls back to de, never to de-DE.
  bool any_region;
};

// norm.locale(localized, wanted, fallbacks): wanted, its language, then each fallback and
// its language. Keys match folded (tag_char); a key other than `wanted` as written is noted.
int l_locale(lua_State* L) {
  if (!lua_istable(L, 1) && !is_view(L, 1)) {
    if (lua_isnoneornil(L, 1)) return fail(L, "locale", 1, "no value");
    return fail(L, "locale", 1, "expected a localized object, got a " + std::string(luaL_typename(L, 1)));
  }
  if (lua_istable(L, 1) && readonly_target(L, 1)) lua_replace(L, 1);
  if (lua_istable(L, 3) && readonly_target(L, 3)) lua_replace(L, 3);
  constexpr size_t kMaxTries = 32;  // a fallback chain is short; this bounds the work
  std::vector<LocaleTry> tries;
  auto add_one = [&](std::string tag, bool any_region) {
    if (tag.empty() || tries.size() >= kMaxTries) return;
    // Already asked for (folded), unless this one may also take a regional key and that one may not.
    for (const LocaleTry& t : tries)
      if (same_tag(t.tag, tag) && (t.any_region || !any_region)) return;
    tries.push_back({std::move(tag), any_region});
  };
  auto add = [&](const std::string& loc) {
    auto dash = loc.find_first_of("-_");
    add_one(loc, dash == std::string::npos);
    if (dash != std::string::npos) add_one(loc.substr(0, dash), false);
  };
  if (lua_isstring(L, 2)) add(lua_tostring(L, 2));
  if (lua_isstring(L, 3)) {
    add(lua_tostring(L, 3));
  } else if (lua_istable(L, 3)) {
    for (int i = 1; tries.size() < kMaxTries; ++i) {
      lua_rawgeti(L, 3, i);
      if (lua_isnil(L, -1)) { lua_pop(L, 1); break; }
      if (lua_isstring(L, -1)) add(lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  std::vector<std::string_view> tried;
  for (const LocaleTry& t : tries) {
    std::string used = t.tag;
    get_field(L, 1, used.data(), used.size());
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      // No key as asked for: one that differs only in case or '_' (en_us for en-US), else,
      // for a bare language the caller asked for, its first regional key.
      std::string same, regional;
      for_each_key(L, 1, [&](std::string_view k) {
        if (same_tag(k, t.tag)) {
          if (same.empty() || tag_before(k, same)) same = k;
        } else if (t.any_region && of_language(k, t.tag)) {
          if (regional.empty() || tag_before(k, regional)) regional = k;
        }
      });
      used = !same.empty() ? same : regional;
      if (used.empty()) {
        if (std::none_of(tried.begin(), tried.end(), [&](std::string_view x) { return same_tag(x, t.tag); }))
          tried.push_back(t.tag);
        continue;
      }
      get_field(L, 1, used.data(), used.size());
    }
    note(L, "locale", 2, used, "");  // a fallback or a looser match is worth a line in a dry-run
    lua_pushlstring(L, used.data(), used.size());
    return 2;
  }
  std::string list;
  for (std::string_view x : tried) list += (list.empty() ? "" : ", ") + std::string(x);
  return fail(L, "locale", 2, tries.empty() ? "no locale asked for" : "no value for " + list);
}

}  // namespace

void open_norm(lua_State* L) {
  static const luaL_Reg fns[] = {
      {"trim", l_trim},       {"lower", l_lower},     {"email", l_email},
      {"phone", l_phone},     {"date", l_date},       {"datetime", l_datetime},
      {"country", l_country}, {"money", l_money},     {"enum", l_enum},
      {"locale", l_locale},   {nullptr, nullptr}};
  lua_newtable(L);
  for (const luaL_Reg* f = fns; f->name; ++f) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
}

}  // namespace weft::script
