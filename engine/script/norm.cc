#include <mutex>
#include <algorithm>
#include "engine/script/norm.h"

#include <unicode/locid.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

#include <array>
#include <boost/json.hpp>
#include <chrono>
#include <climits>
#include <cstdio>
#include <date/date.h>
#include <exception>
#include <fstream>
#include <iterator>
#include <phonenumbers/phonenumberutil.h>
#include <unordered_map>

#ifndef WEFT_ISO_CODES_DIR
#define WEFT_ISO_CODES_DIR "/usr/share/iso-codes/json"
#endif

namespace weft::norm {
namespace {

// ---------------------------------------------------------------------------------------------
// Shared helpers

bool is_ascii_space(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

std::string ascii_upper(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return out;
}

// Calls f(code_point) for each code point; false if the bytes are not well-formed UTF-8
// (ICU's U8_NEXT rejects overlongs, surrogates and truncated sequences).
template <class F>
bool for_each_code_point(std::string_view s, F&& f) {
  if (s.size() > static_cast<size_t>(INT32_MAX)) return false;
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const auto n = static_cast<int32_t>(s.size());
  int32_t i = 0;
  while (i < n) {
    UChar32 c;
    U8_NEXT(p, i, n, c);
    if (c < 0) return false;
    f(c);
  }
  return true;
}

bool valid_utf8(std::string_view s) {
  return for_each_code_point(s, [](UChar32) {});
}

// Lowercase of text already known to be valid UTF-8.
std::string icu_lower(std::string_view s) {
  // ASCII text (most emails and enum values) lowercases byte by byte, the same result
  // without ICU's UTF-16 round trip.
  if (std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) {
    std::string out(s);
    for (char& c : out)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    return out;
  }
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
  u.toLower(icu::Locale::getRoot());
  std::string out;
  u.toUTF8String(out);
  return out;
}

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string code_point_name(UChar32 c) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "U+%04X", static_cast<unsigned>(c));
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Email

constexpr std::string_view kNotEmail = "not an email address: ";

Result bad_email(std::string_view why) { return Result::bad(std::string(kNotEmail) + std::string(why)); }

// RFC 5322 "atext" plus '.', for the ASCII characters of an unquoted local part.
bool is_local_ascii(char c) {
  static constexpr std::string_view kSpecials = "!#$%&'*+-/=?^_`{|}~.";
  return is_alpha(c) || is_digit(c) || kSpecials.find(c) != std::string_view::npos;
}

// Letters, digits and '-' are the only ASCII allowed in a host name label; non-ASCII (IDN) passes.
bool is_domain_char(char c) {
  return is_alpha(c) || is_digit(c) || c == '-' || static_cast<unsigned char>(c) >= 0x80;
}

std::optional<std::string> check_spaces_and_controls(std::string_view s) {
  std::optional<std::string> why;
  for_each_code_point(s, [&](UChar32 c) {
    if (why) return;
    if (u_isUWhiteSpace(c)) why = "contains a space";
    // Format characters (U+FEFF byte-order mark, zero-width space) are invisible, so treat them as controls.
    else if (u_iscntrl(c) || u_charType(c) == U_FORMAT_CHAR) why = "contains a control character (" + code_point_name(c) + ")";
  });
  return why;
}

std::optional<std::string> check_local_part(std::string_view local) {
  if (local.empty()) return "nothing before '@'";
  if (local.size() > 64) return "part before '@' is longer than 64 bytes";
  for (char c : local)
    if (static_cast<unsigned char>(c) < 0x80 && !is_local_ascii(c))
      return "invalid character " + quoted(std::string_view(&c, 1)) + " before '@'";
  if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string_view::npos)
    return "part before '@' starts or ends with '.' or has '..'";
  return std::nullopt;
}

std::optional<std::string> check_domain_label(std::string_view label) {
  if (label.empty()) return "domain has an empty label (leading, trailing or double '.')";
  if (label.front() == '-' || label.back() == '-') return "domain label " + quoted(label) + " starts or ends with '-'";
  for (char c : label)
    if (!is_domain_char(c)) return "invalid character " + quoted(std::string_view(&c, 1)) + " in domain";
  return std::nullopt;
}

std::optional<std::string> check_domain(std::string_view domain) {
  if (domain.empty()) return "nothing after '@'";
  if (domain.find('.') == std::string_view::npos) return "domain has no dot";
  size_t start = 0;
  while (true) {
    const size_t dot = domain.find('.', start);
    const auto label = domain.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (auto why = check_domain_label(label)) return why;
    if (dot == std::string_view::npos) return std::nullopt;
    start = dot + 1;
  }
}

// ---------------------------------------------------------------------------------------------
// Phone

using i18n::phonenumbers::PhoneNumber;
using i18n::phonenumbers::PhoneNumberUtil;

constexpr size_t kMaxPhoneInput = 250;  // libphonenumber's kMaxInputStringLength

std::string phone_parse_reason(PhoneNumberUtil::ErrorType e, const std::string& region) {
  switch (e) {
    case PhoneNumberUtil::INVALID_COUNTRY_CODE_ERROR:
      if (region == "ZZ") return "not a phone number: no '+country' prefix and no default region given";
      if (PhoneNumberUtil::GetInstance()->GetCountryCodeForRegion(region) == 0) return "unknown default region " + quoted(region);
      return "not a phone number: invalid country code";
    case PhoneNumberUtil::NOT_A_NUMBER: return "not a phone number";
    case PhoneNumberUtil::TOO_SHORT_AFTER_IDD: return "not a phone number: too short after the international prefix";
    case PhoneNumberUtil::TOO_SHORT_NSN: return "not a phone number: too short";
    case PhoneNumberUtil::TOO_LONG_NSN: return "not a phone number: too long";
    default: return "not a phone number";
  }
}

// ---------------------------------------------------------------------------------------------
// Timestamps

using Millis = std::chrono::milliseconds;
using TimePoint = date::sys_time<Millis>;

// Outputs are four-digit years, so that is the representable range.
const TimePoint kMinTime = date::sys_days{date::year{0} / 1 / 1};
const TimePoint kMaxTime = date::sys_days{date::year{9999} / 12 / 31} + std::chrono::hours{24} - Millis{1};

// Strict left-to-right scanner over a timestamp; every step says what it expected on failure.
struct Scanner {
  std::string_view s;
  size_t pos = 0;

  bool done() const { return pos >= s.size(); }
  char peek() const { return done() ? '\0' : s[pos]; }
  bool accept(char c) {
    if (peek() != c) return false;
    ++pos;
    return true;
  }
  // Exactly n digits as a number, or nullopt (position unchanged).
  std::optional<int> digits(size_t n) {
    if (pos + n > s.size()) return std::nullopt;
    int v = 0;
    for (size_t i = 0; i < n; ++i) {
      if (!is_digit(s[pos + i])) return std::nullopt;
      v = v * 10 + (s[pos + i] - '0');
    }
    pos += n;
    return v;
  }
};

// Either a parse result or the reason it failed (without the "not a timestamp: " prefix).
struct Parsed {
  TimePoint tp{};
  std::string error;
};

Parsed fail(std::string why) { return {TimePoint{}, std::move(why)}; }

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!is_digit(c)) return false;
  return true;
}

Parsed parse_epoch_ms_string(std::string_view s) {
  // 14 digits as milliseconds would be after the year 2286: such text is a compact
  // YYYYMMDDHHMMSS, which says no zone (and a timestamp without an offset is refused).
  if (s.size() == 14)
    return fail("14 digits reads as YYYYMMDDHHMMSS without an offset (refused: say the zone), not epoch milliseconds");
  if (s.size() < 12 || s.size() > 13)
    return fail(std::to_string(s.size()) + " digits is neither YYYY-MM-DD nor epoch milliseconds (12-13 digits)");
  int64_t ms = 0;
  for (char c : s) ms = ms * 10 + (c - '0');
  return {TimePoint{Millis{ms}}, {}};
}

std::optional<std::string> scan_date(Scanner& sc, date::sys_days* out) {
  auto y = sc.digits(4);
  if (!y || !sc.accept('-')) return "expected YYYY-MM-DD at the start";
  auto m = sc.digits(2);
  if (!m || !sc.accept('-')) return "expected YYYY-MM-DD at the start";
  auto d = sc.digits(2);
  if (!d) return "expected YYYY-MM-DD at the start";
  const date::year_month_day ymd{date::year{*y}, date::month{static_cast<unsigned>(*m)},
                                 date::day{static_cast<unsigned>(*d)}};
  if (!ymd.ok()) return std::string(sc.s.substr(0, 10)) + " does not exist";
  *out = date::sys_days{ymd};
  return std::nullopt;
}

// Fraction digits after '.', truncated to milliseconds.
std::optional<std::string> scan_fraction(Scanner& sc, Millis* out) {
  if (!sc.accept('.')) return std::nullopt;
  int ms = 0, n = 0;
  while (is_digit(sc.peek())) {
    if (n < 3) ms = ms * 10 + (sc.peek() - '0');
    ++n;
    ++sc.pos;
  }
  if (n == 0) return "expected digits after '.'";
  for (; n < 3; ++n) ms *= 10;
  *out = Millis{ms};
  return std::nullopt;
}

std::optional<std::string> scan_time(Scanner& sc, Millis* out) {
  auto h = sc.digits(2);
  if (!h || !sc.accept(':')) return "expected HH:MM:SS after the date";
  auto mi = sc.digits(2);
  if (!mi || !sc.accept(':')) return "expected HH:MM:SS after the date";
  auto se = sc.digits(2);
  if (!se) return "expected HH:MM:SS after the date";
  if (*h > 23) return "hour " + std::to_string(*h) + " out of range";
  if (*mi > 59) return "minute " + std::to_string(*mi) + " out of range";
  if (*se > 59) return "second " + std::to_string(*se) + " out of range";
  Millis frac{0};
  if (auto why = scan_fraction(sc, &frac)) return why;
  *out = std::chrono::hours{*h} + std::chrono::minutes{*mi} + std::chrono::seconds{*se} + frac;
  return std::nullopt;
}

// 'Z', "+hh:mm", "+hhmm" or "+hh" (or '-'); the offset is what local time is ahead of UTC.
std::optional<std::string> scan_offset(Scanner& sc, std::chrono::minutes* out) {
  if (sc.done()) return "no time zone offset (add 'Z' or '+hh:mm'; a local time is ambiguous)";
  if (sc.accept('Z')) {
    *out = std::chrono::minutes{0};
    return std::nullopt;
  }
  const size_t start = sc.pos;
  const char sign = sc.peek();
  if (sign != '+' && sign != '-') return "expected 'Z' or a '+hh:mm' offset, got " + quoted(sc.s.substr(sc.pos));
  ++sc.pos;
  auto hh = sc.digits(2);
  if (!hh) return "expected hh after the offset sign";
  int mm = 0;
  if (sc.accept(':')) {
    auto m = sc.digits(2);
    if (!m) return "expected mm after ':' in the offset";
    mm = *m;
  } else if (auto m = sc.digits(2)) {
    mm = *m;
  }
  if (*hh > 23 || mm > 59) return "offset " + std::string(sc.s.substr(start, sc.pos - start)) + " out of range";
  const std::chrono::minutes off{*hh * 60 + mm};
  *out = sign == '-' ? -off : off;
  return std::nullopt;
}

// The one parser behind date() and datetime(); input already trimmed.
Parsed parse_timestamp(std::string_view s) {
  if (s.empty()) return fail("empty");
  if (all_digits(s)) return parse_epoch_ms_string(s);
  Scanner sc{s};
  date::sys_days day;
  if (auto why = scan_date(sc, &day)) return fail(*why);
  if (sc.done()) return {TimePoint{day}, {}};  // date-only: midnight UTC
  if (!sc.accept('T') && !sc.accept(' ')) return fail("unexpected " + quoted(s.substr(sc.pos)) + " after the date");
  Millis tod{0};
  if (auto why = scan_time(sc, &tod)) return fail(*why);
  std::chrono::minutes offset{0};
  if (auto why = scan_offset(sc, &offset)) return fail(*why);
  if (!sc.done()) return fail("unexpected " + quoted(s.substr(sc.pos)) + " at the end");
  return {TimePoint{day} + tod - offset, {}};
}

std::string format_date(TimePoint tp) {
  const date::year_month_day ymd{date::floor<date::days>(tp)};
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u", static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                static_cast<unsigned>(ymd.day()));
  return buf;
}

std::string format_datetime(TimePoint tp) {
  const auto day = date::floor<date::days>(tp);
  const date::hh_mm_ss<Millis> t{tp - day};
  char buf[40];
  int n = std::snprintf(buf, sizeof buf, "%sT%02d:%02d:%02d", format_date(tp).c_str(), static_cast<int>(t.hours().count()),
                        static_cast<int>(t.minutes().count()), static_cast<int>(t.seconds().count()));
  if (t.subseconds().count() != 0)
    n += std::snprintf(buf + n, sizeof buf - n, ".%03d", static_cast<int>(t.subseconds().count()));
  std::snprintf(buf + n, sizeof buf - n, "Z");
  return buf;
}

bool in_range(TimePoint tp) { return tp >= kMinTime && tp <= kMaxTime; }

constexpr std::string_view kRangeError = "outside years 0000-9999 (UTC)";

// ---------------------------------------------------------------------------------------------
// Countries

struct CountryIndex {
  std::unordered_map<std::string, std::string> alpha2_by_key;  // lowercased key -> "SE"
  std::string error;                                           // set when the data could not be loaded
};

void index_country(CountryIndex& idx, const boost::json::object& c) {
  const auto* a2 = c.if_contains("alpha_2");
  if (!a2 || !a2->is_string()) return;
  const std::string alpha2(a2->get_string());
  for (const char* field : {"alpha_2", "alpha_3", "numeric", "name", "official_name", "common_name"}) {
    const auto* v = c.if_contains(field);
    if (!v || !v->is_string()) continue;
    const std::string_view key = v->get_string();
    if (valid_utf8(key)) idx.alpha2_by_key.emplace(icu_lower(key), alpha2);
  }
}

CountryIndex load_countries(const std::string& path) {
  CountryIndex idx;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    idx.error = "country data not found: " + path;
    return idx;
  }
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  boost::system::error_code ec;
  const boost::json::value doc = boost::json::parse(text, ec);
  const boost::json::array* list = nullptr;
  if (!ec && doc.is_object())
    if (const auto* v = doc.get_object().if_contains("3166-1"); v && v->is_array()) list = &v->get_array();
  if (!list) {
    idx.error = "country data unreadable (expected {\"3166-1\": [...]}): " + path;
    return idx;
  }
  for (const auto& c : *list)
    if (c.is_object()) index_country(idx, c.get_object());
  if (idx.alpha2_by_key.empty()) idx.error = "country data has no countries: " + path;
  return idx;
}

const CountryIndex& countries() {
  // Function-local static: loaded once, initialisation is thread-safe.
  static const CountryIndex idx = load_countries(std::string(WEFT_ISO_CODES_DIR) + "/iso_3166-1.json");
  return idx;
}

// Numeric codes are three digits; "68" (a number that lost its leading zero) means "068".
std::string pad_numeric(std::string s) {
  if (!s.empty() && s.size() < 3 && all_digits(s)) s.insert(0, 3 - s.size(), '0');
  return s;
}

Result internal_error(const char* fn, const std::exception* e) {
  return Result::bad(std::string("internal error in norm.") + fn + (e ? std::string(": ") + e->what() : ""));
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string trim(std::string_view in) {
  // U+00A0 (no-break space) is the two bytes C2 A0 in UTF-8.
  auto nbsp_at = [&](size_t i) { return in[i] == '\xC2' && in[i + 1] == '\xA0'; };
  size_t b = 0, e = in.size();
  while (b < e) {
    if (is_ascii_space(static_cast<unsigned char>(in[b]))) ++b;
    else if (b + 2 <= e && nbsp_at(b)) b += 2;
    else break;
  }
  while (e > b) {
    if (is_ascii_space(static_cast<unsigned char>(in[e - 1]))) --e;
    else if (e - b >= 2 && nbsp_at(e - 2)) e -= 2;
    else break;
  }
  return std::string(in.substr(b, e - b));
}

Result lower(std::string_view in) {
  try {
    if (!valid_utf8(in)) return Result::bad("invalid UTF-8");
    return Result::good(icu_lower(in));
  } catch (const std::exception& e) {
    return internal_error("lower", &e);
  } catch (...) {
    return internal_error("lower", nullptr);
  }
}

Result email(std::string_view in) {
  try {
    const std::string trimmed = trim(in);
    if (trimmed.empty()) return bad_email("empty");
    if (!valid_utf8(trimmed)) return bad_email("invalid UTF-8");
    const std::string s = icu_lower(trimmed);
    if (auto why = check_spaces_and_controls(s)) return bad_email(*why);
    const size_t at = s.find('@');
    if (at == std::string::npos) return bad_email("missing '@'");
    if (s.find('@', at + 1) != std::string::npos) return bad_email("more than one '@'");
    if (auto why = check_local_part(std::string_view(s).substr(0, at))) return bad_email(*why);
    if (auto why = check_domain(std::string_view(s).substr(at + 1))) return bad_email(*why);
    if (s.size() > 254) return bad_email("longer than 254 bytes");
    return Result::good(s);
  } catch (const std::exception& e) {
    return internal_error("email", &e);
  } catch (...) {
    return internal_error("email", nullptr);
  }
}

// A number written with nothing but digits, a leading '+' and the usual formatting
// (spaces, '-', '(', ')', '.') as just its digits and '+'. libphonenumber reads nothing else
// of such a number (no extension or letters can be in it), and its patterns cost a quarter
// less on the shorter text: 47,000 fewer instructions a number, measured with callgrind on
// the benchmark corpus, where phones are the mapping's largest cost. Anything else: nullopt,
// and the text is parsed as written.
namespace {
std::optional<std::string> plain_digits(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  size_t digits = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c >= '0' && c <= '9') {
      out += c;
      ++digits;
    } else if (c == '+' && i == 0) {
      out += c;
    } else if (c != ' ' && c != '-' && c != '(' && c != ')' && c != '.') {
      return std::nullopt;
    }
  }
  // libphonenumber takes two bare digits as a possible number but not two with formatting
  // between them ("1 2"): below three digits the text goes as written.
  if (digits < 3) return std::nullopt;
  return out;
}

constexpr size_t kPhoneMemo = 4096;

// `text` trimmed, checked and plain (above); `region` upper case, "ZZ" for none.
Result parse_phone(const std::string& text, const std::string& region) {
  const PhoneNumberUtil* util = PhoneNumberUtil::GetInstance();
  PhoneNumber num;
  if (auto err = util->Parse(text, region, &num); err != PhoneNumberUtil::NO_PARSING_ERROR)
    return Result::bad(phone_parse_reason(err, region));
  if (!util->IsValidNumber(num)) {
    std::string where;
    util->GetRegionCodeForCountryCode(num.country_code(), &where);
    return Result::bad("not a valid number for region " + where);
  }
  // E.164 has no room for an extension; dropping it silently would lose data.
  if (num.has_extension() && !num.extension().empty())
    return Result::bad("phone number has an extension (" + num.extension() + "), which E.164 cannot hold");
  std::string out;
  util->Format(num, PhoneNumberUtil::E164, &out);
  return Result::good(out);
}
}  // namespace

Result phone(std::string_view in, std::string_view default_region) {
  try {
    const std::string s = trim(in);
    if (s.empty()) return Result::bad("empty phone number");
    // libphonenumber's own input limit, checked first: its parser is super-linear in the
    // length, and a multi-kilobyte field would hold the tenant's CPU budget.
    if (s.size() > kMaxPhoneInput)
      return Result::bad("not a phone number: longer than " + std::to_string(kMaxPhoneInput) + " bytes");
    if (!valid_utf8(s)) return Result::bad("not a phone number: invalid UTF-8");
    const std::string plain = plain_digits(s).value_or(s);
    const std::string region = default_region.empty() ? "ZZ" : ascii_upper(trim(default_region));
    // The same number comes again and again (a customer's every update, every order of a
    // returning customer), and libphonenumber takes ~140,000 instructions for it: the last
    // few thousand answers are kept, per thread (each sandbox runs on one), by region and
    // text. The answer depends on nothing else (the metadata is compiled in).
    thread_local std::unordered_map<std::string, Result> memo;
    // A region is any text a script passes (rec.country may hold anything): only a short
    // one is kept, so the memo stays a few thousand short keys.
    if (region.size() > 8) return parse_phone(plain, region);
    // (The region's length first: it may hold any character, newlines included.)
    std::string key = std::to_string(region.size());
    key.append(1, ':').append(region).append(plain);
    if (auto it = memo.find(key); it != memo.end()) return it->second;
    Result r = parse_phone(plain, region);
    if (memo.size() >= kPhoneMemo) memo.clear();  // bounded: dropped whole, refilled by use
    memo.emplace(std::move(key), r);
    return r;
  } catch (const std::exception& e) {
    return internal_error("phone", &e);
  } catch (...) {
    return internal_error("phone", nullptr);
  }
}

Result date(std::string_view in) {
  try {
    const Parsed p = parse_timestamp(trim(in));
    if (!p.error.empty()) return Result::bad("not a date: " + p.error);
    if (!in_range(p.tp)) return Result::bad("not a date: " + std::string(kRangeError));
    return Result::good(format_date(p.tp));
  } catch (const std::exception& e) {
    return internal_error("date", &e);
  } catch (...) {
    return internal_error("date", nullptr);
  }
}

Result datetime(std::string_view in) {
  try {
    const Parsed p = parse_timestamp(trim(in));
    if (!p.error.empty()) return Result::bad("not a timestamp: " + p.error);
    if (!in_range(p.tp)) return Result::bad("not a timestamp: " + std::string(kRangeError));
    return Result::good(format_datetime(p.tp));
  } catch (const std::exception& e) {
    return internal_error("datetime", &e);
  } catch (...) {
    return internal_error("datetime", nullptr);
  }
}

Result datetime_ms(int64_t epoch_ms) {
  try {
    const TimePoint tp{Millis{epoch_ms}};
    if (!in_range(tp)) return Result::bad("not a timestamp: epoch milliseconds " + std::to_string(epoch_ms) + " " +
                                          std::string(kRangeError));
    return Result::good(format_datetime(tp));
  } catch (const std::exception& e) {
    return internal_error("datetime_ms", &e);
  } catch (...) {
    return internal_error("datetime_ms", nullptr);
  }
}

Result country(std::string_view in) {
  try {
    const CountryIndex& idx = countries();
    if (!idx.error.empty()) return Result::bad(idx.error);
    const std::string s = trim(in);
    if (s.empty()) return Result::bad("not a country: empty");
    if (!valid_utf8(s)) return Result::bad("not a country: invalid UTF-8");
    const auto it = idx.alpha2_by_key.find(pad_numeric(icu_lower(s)));
    if (it == idx.alpha2_by_key.end()) return Result::bad("not a known country: " + quoted(s));
    return Result::good(it->second);
  } catch (const std::exception& e) {
    return internal_error("country", &e);
  } catch (...) {
    return internal_error("country", nullptr);
  }
}

std::optional<double> money(int64_t cent_amount, int fraction_digits, std::string* reason) {
  static constexpr std::array<double, 9> kPow10{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8};
  if (fraction_digits < 0 || fraction_digits > 8) {
    if (reason) *reason = "fraction digits " + std::to_string(fraction_digits) + " out of range (0..8)";
    return std::nullopt;
  }
  // Dividing by an exact power of ten gives the double nearest the true decimal (19.99, not 19.990000000000002).
  return static_cast<double>(cent_amount) / kPow10[static_cast<size_t>(fraction_digits)];
}

void warm_up() {
  static std::once_flag once;
  std::call_once(once, [] {
    (void)phone("070-123 45 67", "SE");
    (void)country("Sweden");
    (void)lower("WARM");
    (void)email("warm@example.com");
    (void)datetime("2024-01-01T00:00:00.000Z");
  });
}

}  // namespace weft::norm
