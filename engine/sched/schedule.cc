// Schedules: interval and cron parsing, fire times, and what is due.
//
// Why the cron parser is written here: Debian 12 packages no maintained C or C++ cron
// expression library (`apt-cache search cron` finds Go, Perl, PHP, Python and Ruby ones
// only), and the grammar is small.
//
// Why time zones are read here from the TZif files of the system's tzdata
// (/usr/share/zoneinfo, or $TZDIR): Howard Hinnant's <date/tz.h> needs the compiled
// libdate-tz (Debian builds it with USE_OS_TZDB=1, so it reads the same files), which weft
// does not link; std::chrono's time zones need GCC 14. A zone is a sorted list of
// transitions plus the POSIX TZ rule in the file's footer for times after the last one
// (RFC 8536); that is all a schedule needs from it: the UTC offset at an instant.
#include "engine/sched/schedule.h"

#include <boost/json.hpp>
#include <date/date.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <sstream>
#include <vector>

namespace weft::sched {

namespace json = boost::json;

namespace {
constexpr int64_t kDay = 86400;

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
}  // namespace

// ---------------------------------------------------------------------------------------
// Time zones

namespace {

// A POSIX TZ rule ("CET-1CEST,M3.5.0,M10.5.0/3"): offsets are seconds east of UTC.
struct PosixRule {
  int32_t std_off = 0;
  bool has_dst = false;
  int32_t dst_off = 0;
  struct When {
    char kind = 'M';  // 'M' month.week.day, 'J' Julian 1..365 without Feb 29, 'N' zero-based 0..365
    int month = 0, week = 0, wday = 0, day = 0;
    int32_t time = 7200;  // local seconds after midnight (may be negative or past 24 h)
  } start, end;
};

struct RuleParser {
  const std::string& s;
  size_t i = 0;
  bool name() {
    if (i < s.size() && s[i] == '<') {
      size_t close = s.find('>', i);
      if (close == std::string::npos) return false;
      i = close + 1;
      return true;
    }
    size_t b = i;
    while (i < s.size() && std::isalpha(static_cast<unsigned char>(s[i]))) ++i;
    return i - b >= 3;
  }
  bool number(int* out) {
    size_t b = i;
    int v = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])) && i - b < 4) v = v * 10 + (s[i++] - '0');
    *out = v;
    return i > b;
  }
  // [+-]hh[:mm[:ss]] in seconds
  bool hms(int32_t* out) {
    int sign = 1;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) sign = s[i++] == '-' ? -1 : 1;
    int h = 0, m = 0, sec = 0;
    if (!number(&h)) return false;
    if (i < s.size() && s[i] == ':') {
      ++i;
      if (!number(&m)) return false;
      if (i < s.size() && s[i] == ':') {
        ++i;
        if (!number(&sec)) return false;
      }
    }
    *out = sign * (h * 3600 + m * 60 + sec);
    return true;
  }
  bool when(PosixRule::When* w) {
    if (i < s.size() && s[i] == 'M') {
      ++i;
      w->kind = 'M';
      if (!number(&w->month) || i >= s.size() || s[i++] != '.') return false;
      if (!number(&w->week) || i >= s.size() || s[i++] != '.') return false;
      if (!number(&w->wday)) return false;
      if (w->month < 1 || w->month > 12 || w->week < 1 || w->week > 5 || w->wday > 6) return false;
    } else if (i < s.size() && s[i] == 'J') {
      ++i;
      w->kind = 'J';
      if (!number(&w->day) || w->day < 1 || w->day > 365) return false;
    } else {
      w->kind = 'N';
      if (!number(&w->day) || w->day > 365) return false;
    }
    w->time = 7200;
    if (i < s.size() && s[i] == '/') {
      ++i;
      if (!hms(&w->time)) return false;
    }
    return true;
  }
};

std::optional<PosixRule> parse_posix_tz(const std::string& s) {
  PosixRule r;
  RuleParser p{s};
  int32_t off = 0;
  if (!p.name() || !p.hms(&off)) return std::nullopt;
  r.std_off = -off;  // POSIX offsets are west of UTC
  if (p.i == s.size()) return r;
  if (!p.name()) return std::nullopt;
  r.has_dst = true;
  r.dst_off = r.std_off + 3600;
  if (p.i < s.size() && s[p.i] != ',') {
    if (!p.hms(&off)) return std::nullopt;
    r.dst_off = -off;
  }
  if (p.i == s.size()) return std::nullopt;  // zic always writes the rules
  if (s[p.i++] != ',' || !p.when(&r.start) || p.i >= s.size() || s[p.i++] != ',' || !p.when(&r.end) ||
      p.i != s.size())
    return std::nullopt;
  return r;
}

// The local midnight (as seconds of a UTC-like local clock) of a rule's day in `year`.
int64_t rule_day(const PosixRule::When& w, int year) {
  using namespace date;
  sys_days d;
  if (w.kind == 'M') {
    auto ym = date::year{year} / date::month{static_cast<unsigned>(w.month)};
    if (w.week == 5)
      d = sys_days{ym / weekday_last{weekday{static_cast<unsigned>(w.wday)}}};
    else
      d = sys_days{ym / weekday_indexed{weekday{static_cast<unsigned>(w.wday)}, static_cast<unsigned>(w.week)}};
  } else if (w.kind == 'J') {
    d = sys_days{date::year{year} / January / 1} + days{w.day - 1};
    if (date::year{year}.is_leap() && w.day >= 60) d += days{1};  // Feb 29 is never counted
  } else {
    d = sys_days{date::year{year} / January / 1} + days{w.day};
  }
  return static_cast<int64_t>(d.time_since_epoch().count()) * kDay;
}

int32_t posix_offset_at(const PosixRule& r, int64_t t) {
  if (!r.has_dst) return r.std_off;
  int64_t local_days = floor_div(t + r.std_off, kDay);
  int year = static_cast<int>(date::year_month_day{date::sys_days{date::days{local_days}}}.year());
  int64_t start = rule_day(r.start, year) + r.start.time - r.std_off;
  int64_t end = rule_day(r.end, year) + r.end.time - r.dst_off;
  bool dst = start < end ? (t >= start && t < end) : !(t >= end && t < start);
  return dst ? r.dst_off : r.std_off;
}

}  // namespace

class Zone {
 public:
  std::string name;
  std::vector<int64_t> transitions;  // UTC seconds, ascending
  std::vector<int32_t> offset_after;  // the offset from each transition on
  int32_t initial = 0;               // before the first transition
  std::optional<PosixRule> footer;   // after the last one

  int32_t offset_at(int64_t t) const {
    if (transitions.empty() || t >= transitions.back()) {
      if (footer) return posix_offset_at(*footer, t);
      return transitions.empty() ? initial : offset_after.back();
    }
    auto it = std::upper_bound(transitions.begin(), transitions.end(), t);
    if (it == transitions.begin()) return initial;
    return offset_after[static_cast<size_t>(it - transitions.begin()) - 1];
  }
};

namespace {

uint64_t be(const unsigned char* p, int n) {
  uint64_t v = 0;
  for (int k = 0; k < n; ++k) v = (v << 8) | p[k];
  return v;
}

// Reads a TZif file (RFC 8536); empty string on success, else why not.
std::string read_tzif(const std::string& bytes, Zone* z) {
  const auto* d = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t n = bytes.size();
  if (n < 44 || bytes.compare(0, 4, "TZif") != 0) return "not a TZif file";
  auto counts = [&](size_t at, uint64_t c[6]) {
    for (int k = 0; k < 6; ++k) c[k] = be(d + at + 20 + 4 * k, 4);
  };
  uint64_t c[6];  // isutcnt isstdcnt leapcnt timecnt typecnt charcnt
  counts(0, c);
  size_t v1 = c[3] * 4 + c[3] + c[4] * 6 + c[5] + c[2] * 8 + c[1] + c[0];
  size_t at = 44;
  int tsize = 4;
  if (bytes[4] >= '2') {  // use the 64-bit block that follows the 32-bit one
    at = 44 + v1;
    if (n < at + 44 || bytes.compare(at, 4, "TZif") != 0) return "truncated TZif file";
    counts(at, c);
    at += 44;
    tsize = 8;
  }
  uint64_t timecnt = c[3], typecnt = c[4];
  size_t need = timecnt * tsize + timecnt + typecnt * 6;
  if (typecnt == 0 || n < at + need) return "truncated TZif file";
  const unsigned char* times = d + at;
  const unsigned char* idx = times + timecnt * tsize;
  const unsigned char* types = idx + timecnt;
  auto type_off = [&](size_t k) { return static_cast<int32_t>(static_cast<uint32_t>(be(types + 6 * k, 4))); };
  z->initial = type_off(0);
  for (uint64_t k = 0; k < timecnt; ++k) {
    uint64_t raw = be(times + k * tsize, tsize);
    int64_t t = tsize == 8 ? static_cast<int64_t>(raw) : static_cast<int64_t>(static_cast<int32_t>(raw));
    if (idx[k] >= typecnt) return "bad TZif type index";
    z->transitions.push_back(t);
    z->offset_after.push_back(type_off(idx[k]));
  }
  if (tsize == 8) {
    size_t footer_at = at + need + c[5] + c[2] * 12 + c[1] + c[0];
    if (footer_at < n && bytes[footer_at] == '\n') {
      size_t end = bytes.find('\n', footer_at + 1);
      std::string tz = bytes.substr(footer_at + 1, end == std::string::npos ? std::string::npos : end - footer_at - 1);
      if (!tz.empty()) {
        z->footer = parse_posix_tz(tz);
        if (!z->footer) return "unreadable TZ rule '" + tz + "'";
      }
    }
  }
  return "";
}

bool valid_zone_name(const std::string& n) {
  if (n.empty() || n.size() > 200 || n.front() == '/' || n.back() == '/') return false;
  for (char ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '/' && ch != '_' && ch != '-' && ch != '+') return false;
  std::stringstream parts(n);
  for (std::string part; std::getline(parts, part, '/');)
    if (part.empty() || part == "." || part == "..") return false;
  return true;
}

// Loads (once per process) the zone called `name`; null with *error if there is none.
std::shared_ptr<const Zone> load_zone(const std::string& name, std::string* error) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const Zone>> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache.find(name); it != cache.end()) return it->second;
  const char* env = std::getenv("TZDIR");
  std::string dir = env && *env ? env : "/usr/share/zoneinfo";
  if (!valid_zone_name(name)) {
    *error = "unknown time zone '" + name + "' (an IANA name such as Europe/Stockholm is expected)";
    return nullptr;
  }
  std::error_code ec;
  std::ifstream in;
  if (std::filesystem::is_regular_file(dir + "/" + name, ec)) in.open(dir + "/" + name, std::ios::binary);
  if (!in.is_open()) {
    std::ifstream probe(dir + "/UTC", std::ios::binary);
    *error = "unknown time zone '" + name + "'" +
             (probe ? std::string(" (no such zone in ") + dir + ")"
                    : std::string(" (no time zone data in ") + dir + ": is the tzdata package installed?)");
    return nullptr;
  }
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto z = std::make_shared<Zone>();
  z->name = name;
  if (std::string why = read_tzif(bytes, z.get()); !why.empty()) {
    *error = "unknown time zone '" + name + "' (" + dir + "/" + name + ": " + why + ")";
    return nullptr;
  }
  cache[name] = z;
  return z;
}

int32_t offset_at(const Schedule& s, int64_t t) { return s.zone ? s.zone->offset_at(t) : 0; }

}  // namespace

// ---------------------------------------------------------------------------------------
// Parsing

namespace {

struct FieldSpec {
  const char* name;
  int lo, hi;
};
constexpr FieldSpec kFields[5] = {
    {"minute", 0, 59}, {"hour", 0, 23}, {"day-of-month", 1, 31}, {"month", 1, 12}, {"day-of-week", 0, 7}};
const char* const kMonthNames[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};
const char* const kDayNames[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

// One field into a set of values lo..hi; "" on success, else the message.
std::string parse_field(const std::string& text, int f, std::vector<bool>* set) {
  const FieldSpec& spec = kFields[f];
  std::string where = "cron field " + std::to_string(f + 1) + " (" + spec.name + "): ";
  set->assign(static_cast<size_t>(spec.hi + 1), false);
  auto value = [&](const std::string& v, int* out) -> std::string {
    if (v.empty()) return where + "a value is missing in '" + text + "'";
    if (std::all_of(v.begin(), v.end(), [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); })) {
      if (v.size() > 4) return where + v + " is out of range " + std::to_string(spec.lo) + "-" + std::to_string(spec.hi);
      *out = std::stoi(v);
      if (*out < spec.lo || *out > spec.hi)
        return where + v + " is out of range " + std::to_string(spec.lo) + "-" + std::to_string(spec.hi);
      return "";
    }
    std::string l = lower(v);
    if (f == 3)
      for (int k = 0; k < 12; ++k)
        if (l == kMonthNames[k]) return *out = k + 1, "";
    if (f == 4)
      for (int k = 0; k < 7; ++k)
        if (l == kDayNames[k]) return *out = k, "";
    if (f == 3) return where + "'" + v + "' is not a month (1-12 or JAN-DEC)";
    if (f == 4) return where + "'" + v + "' is not a weekday (0-7 or SUN-SAT)";
    return where + "'" + v + "' is not a number";
  };
  if (text.empty()) return where + "empty";
  for (size_t start = 0; start <= text.size();) {
    size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    start = comma == std::string::npos ? text.size() + 1 : comma + 1;
    if (item.empty()) return where + "empty list item in '" + text + "'";
    std::string range = item, step_text;
    int step = 1;
    if (size_t slash = item.find('/'); slash != std::string::npos) {
      range = item.substr(0, slash);
      step_text = item.substr(slash + 1);
      if (step_text.empty() ||
          !std::all_of(step_text.begin(), step_text.end(), [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); }))
        return where + "step '" + step_text + "' in '" + item + "' is not a positive number";
      step = step_text.size() > 4 ? 0 : std::stoi(step_text);
      if (step < 1 || step > spec.hi)
        return where + "step " + step_text + " in '" + item + "' is out of range 1-" + std::to_string(spec.hi);
    }
    int lo = spec.lo, hi = spec.hi;
    if (range == "*") {
      if (f == 4) hi = 6;  // 7 is Sunday again
    } else if (size_t dash = range.find('-'); dash != std::string::npos) {
      if (auto e = value(range.substr(0, dash), &lo); !e.empty()) return e;
      if (auto e = value(range.substr(dash + 1), &hi); !e.empty()) return e;
      if (lo > hi) return where + "range '" + range + "' goes backwards";
    } else {
      if (auto e = value(range, &lo); !e.empty()) return e;
      hi = step_text.empty() ? lo : (f == 4 ? 6 : spec.hi);  // "5/15" is "5-59/15"
    }
    for (int v = lo; v <= hi; v += step) (*set)[static_cast<size_t>(v)] = true;
  }
  if (f == 4 && (*set)[7]) (*set)[0] = true;
  return "";
}

bool day_matches(const Schedule& s, int64_t day) {
  date::sys_days sd{date::days{day}};
  date::year_month_day ymd{sd};
  if (!s.months[static_cast<unsigned>(ymd.month())]) return false;
  bool dom = s.days_of_month[static_cast<unsigned>(ymd.day())];
  bool dow = s.days_of_week[date::weekday{sd}.c_encoding()];
  return s.dom_star || s.dow_star ? dom && dow : dom || dow;
}

std::string parse_cron(std::string expr, Schedule* s) {
  s->text = "cron " + expr;
  size_t b = expr.find_first_not_of(" \t"), e = expr.find_last_not_of(" \t");
  expr = b == std::string::npos ? "" : expr.substr(b, e - b + 1);
  if (expr.empty()) return "cron: empty expression (five fields are expected: minute hour day-of-month month day-of-week)";
  if (expr[0] == '@') {
    static const std::map<std::string, std::string> macros{
        {"@hourly", "0 * * * *"}, {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
        {"@weekly", "0 0 * * 0"}, {"@monthly", "0 0 1 * *"}, {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}};
    auto it = macros.find(lower(expr));
    if (it == macros.end())
      return "cron: unknown macro '" + expr + "' (@hourly, @daily, @weekly, @monthly and @yearly are known)";
    expr = it->second;
  }
  std::vector<std::string> fields;
  std::stringstream in(expr);
  for (std::string f; in >> f;) fields.push_back(f);
  if (fields.size() != 5)
    return "cron: expected 5 fields (minute hour day-of-month month day-of-week), got " + std::to_string(fields.size()) +
           " in '" + expr + "'";
  std::vector<bool> set;
  for (int f = 0; f < 5; ++f) {
    if (auto err = parse_field(fields[static_cast<size_t>(f)], f, &set); !err.empty()) return err;
    for (size_t v = 0; v < set.size(); ++v) {
      if (!set[v]) continue;
      switch (f) {
        case 0: s->minutes.set(v); break;
        case 1: s->hours.set(v); break;
        case 2: s->days_of_month.set(v); break;
        case 3: s->months.set(v); break;
        case 4: if (v < 7) s->days_of_week.set(v); break;
      }
    }
  }
  s->dom_star = fields[2][0] == '*';
  s->dow_star = fields[4][0] == '*';
  // A day must exist that matches: "0 0 30 2 *" would never fire. Weekdays and leap years
  // repeat every 400 years, so one cycle is enough to tell.
  int64_t first = date::sys_days{date::year{2000} / 1 / 1}.time_since_epoch().count();
  bool any = false;
  for (int64_t d = first; d < first + 146097 && !any; ++d) any = day_matches(*s, d);
  if (!any)
    return "cron: '" + expr + "' never fires: no date has that day-of-month in " +
           (s->months.count() == 1 ? "that month" : "those months") +
           (s->dow_star ? "" : " on those weekdays");
  return "";
}

std::string parse_every(const json::value& v, Schedule* s) {
  const char* hint = " (a positive whole number followed by s, m, h or d: \"30s\", \"5m\", \"1h\", \"1d\")";
  if (!v.is_string()) return "every: expected a string" + std::string(hint) + ", got " + json::serialize(v);
  std::string t(v.as_string());
  s->text = "every " + t;
  size_t digits = 0;
  while (digits < t.size() && std::isdigit(static_cast<unsigned char>(t[digits]))) ++digits;
  static const std::map<std::string, int64_t> units{{"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
  auto unit = units.find(t.substr(digits));
  if (digits == 0 || unit == units.end()) return "every: '" + t + "' is not an interval" + hint;
  if (digits > 9) return "every: '" + t + "' is too long (at most 3650d)";
  int64_t n = std::stoll(t.substr(0, digits));
  if (n == 0) return "every: '" + t + "' must be at least 1s";
  s->every_ms = n * unit->second;
  if (s->every_ms > 3650LL * 86400000) return "every: '" + t + "' is too long (at most 3650d)";
  return "";
}

}  // namespace

std::optional<Schedule> parse_schedule(const json::value& spec, std::string* error) {
  auto fail = [&](std::string e) -> std::optional<Schedule> {
    if (error) *error = std::move(e);
    return std::nullopt;
  };
  const json::object* o = spec.if_object();
  if (!o)
    return fail("schedule: expected an object, {\"every\": \"5m\"} or {\"cron\": \"*/5 * * * *\"}, got " +
                json::serialize(spec));
  for (const auto& kv : *o)
    if (kv.key() != "every" && kv.key() != "cron" && kv.key() != "timezone")
      return fail("schedule: unknown key '" + std::string(kv.key()) + "' (every, cron and timezone are known)");
  const json::value* every = o->if_contains("every");
  const json::value* cron = o->if_contains("cron");
  const json::value* tz = o->if_contains("timezone");
  if (every && cron) return fail("schedule: has both every and cron; give one");
  if (!every && !cron) return fail("schedule: needs every (\"5m\") or cron (\"*/5 * * * *\")");
  Schedule s;
  if (every) {
    if (tz) return fail("schedule: timezone applies to cron only, not to every");
    s.kind = Schedule::Kind::every;
    if (auto e = parse_every(*every, &s); !e.empty()) return fail(e);
    return s;
  }
  s.kind = Schedule::Kind::cron;
  if (!cron->is_string()) return fail("cron: expected a string such as \"*/5 * * * *\", got " + json::serialize(*cron));
  if (auto e = parse_cron(std::string(cron->as_string()), &s); !e.empty()) return fail(e);
  if (tz) {
    if (!tz->is_string()) return fail("timezone: expected a string such as \"Europe/Stockholm\", got " + json::serialize(*tz));
    s.timezone = std::string(tz->as_string());
    if (s.timezone != "UTC") {
      std::string e;
      s.zone = load_zone(s.timezone, &e);
      if (!s.zone) return fail("timezone: " + e);
    }
    s.text += " (" + s.timezone + ")";
  }
  return s;
}

// ---------------------------------------------------------------------------------------
// Fire times

namespace {

// The UTC instants (seconds) at which local wall-clock time `local` (seconds of a UTC-like
// local clock) fires, ascending: one; the end of the gap when it does not exist; the first,
// or both for a job that fires every hour, when it exists twice.
void resolve(const Schedule& s, int64_t local, std::vector<int64_t>* out) {
  if (!s.zone) return out->push_back(local);
  int32_t before = offset_at(s, local - kDay), after = offset_at(s, local + kDay);
  std::vector<int64_t> valid;
  for (int32_t o : {before, after})
    if (offset_at(s, local - o) == o && std::find(valid.begin(), valid.end(), local - o) == valid.end())
      valid.push_back(local - o);
  std::sort(valid.begin(), valid.end());
  if (valid.empty() && before == after) valid.push_back(local - offset_at(s, local - before));  // two changes in two days
  if (valid.empty()) {
    // A gap: the first instant whose offset is the later one ends it.
    int64_t lo = local - std::max(before, after), hi = local - std::min(before, after);
    int32_t want = offset_at(s, hi);
    while (hi - lo > 1) {
      int64_t mid = lo + (hi - lo) / 2;
      (offset_at(s, mid) == want ? hi : lo) = mid;
    }
    return out->push_back(hi);
  }
  if (valid.size() > 1 && !s.hours.all()) valid.pop_back();
  out->insert(out->end(), valid.begin(), valid.end());
}

// Every fire instant (UTC seconds) of local day `day` (days since 1970-01-01), ascending.
std::vector<int64_t> day_instants(const Schedule& s, int64_t day) {
  std::vector<int64_t> out;
  if (!day_matches(s, day)) return out;
  for (int h = 0; h < 24; ++h) {
    if (!s.hours[static_cast<size_t>(h)]) continue;
    for (int m = 0; m < 60; ++m)
      if (s.minutes[static_cast<size_t>(m)]) resolve(s, day * kDay + h * 3600 + m * 60, &out);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

constexpr int64_t kSearchDays = 366 * 30;  // past any gap a valid expression can have

}  // namespace

int64_t next_after(const Schedule& s, int64_t after_ms) {
  if (s.kind == Schedule::Kind::every) return after_ms > INT64_MAX - s.every_ms ? INT64_MAX : after_ms + s.every_ms;
  int64_t after_s = floor_div(after_ms, 1000);  // a fire instant > after_s * 1000 is > after_ms unless equal
  int64_t first_day = floor_div(after_s + offset_at(s, after_s), kDay) - 1;
  std::optional<int64_t> best;
  for (int64_t d = first_day; d < first_day + kSearchDays; ++d) {
    for (int64_t t : day_instants(s, d))
      if (t * 1000 > after_ms && (!best || t < *best)) best = t;
    // A day's instants can interleave with the next one's only around an offset change at
    // midnight: look at one more day before answering.
    if (best) {
      for (int64_t t : day_instants(s, d + 1))
        if (t * 1000 > after_ms && t < *best) best = t;
      return *best * 1000;
    }
  }
  return best ? *best * 1000 : INT64_MAX;
}

std::optional<int64_t> latest_at_or_before(const Schedule& s, int64_t at_ms, int64_t floor_ms) {
  if (s.kind == Schedule::Kind::every) {
    if (at_ms < floor_ms + s.every_ms) return std::nullopt;
    return floor_ms + (at_ms - floor_ms) / s.every_ms * s.every_ms;
  }
  int64_t at_s = floor_div(at_ms, 1000);
  int64_t last_day = floor_div(at_s + offset_at(s, at_s), kDay) + 1;
  int64_t floor_s = floor_div(floor_ms, 1000);
  int64_t floor_day = floor_div(floor_s + offset_at(s, floor_s), kDay) - 1;
  std::optional<int64_t> best;
  for (int64_t d = last_day; d >= floor_day && d > last_day - kSearchDays; --d) {
    for (int64_t t : day_instants(s, d))
      if (t * 1000 <= at_ms && t * 1000 > floor_ms && (!best || t > *best)) best = t;
    if (best) {
      for (int64_t t : day_instants(s, d - 1))
        if (t * 1000 <= at_ms && t * 1000 > floor_ms && t > *best) best = t;
      break;
    }
  }
  if (best) return *best * 1000;
  return std::nullopt;
}

Due due(const Schedule& s, int64_t last_ms, int64_t now_ms) {
  if (last_ms > now_ms) return {false, next_after(s, last_ms), 0};  // the clock went back
  if (last_ms == 0) {
    if (s.kind == Schedule::Kind::every) return {true, next_after(s, now_ms), now_ms};
    return {false, next_after(s, now_ms), 0};
  }
  int64_t next = next_after(s, last_ms);
  if (next > now_ms) return {false, next, 0};
  // Missed or due: one run for the latest slot, then the first slot after now.
  int64_t slot = latest_at_or_before(s, now_ms, last_ms).value_or(next);
  return {true, next_after(s, slot), slot};
}

int64_t anchor(const Schedule& s, int64_t stored_last_ms, int64_t now_ms) {
  if (stored_last_ms != 0 || s.kind == Schedule::Kind::every) return stored_last_ms;
  return now_ms;
}

}  // namespace weft::sched
