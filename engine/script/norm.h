#pragma once
// Normalization functions behind the Lua `norm` library. Pure C++, no Lua: each takes the
// raw value and returns either the normalized value or the reason it was refused. They
// never guess: input that is not clearly valid is refused with a reason a consultant can act on.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace weft::norm {

struct Result {
  std::optional<std::string> value;  // set on success
  std::string reason;                // set on failure, e.g. "not an email address: missing '@'"
  bool ok() const { return value.has_value(); }
  static Result good(std::string v) { return {std::move(v), {}}; }
  static Result bad(std::string why) { return {std::nullopt, std::move(why)}; }
};

// Surrounding whitespace removed (ASCII whitespace and U+00A0). Never fails on a string.
// Loads what the functions below load on first use (libphonenumber's metadata, the
// iso-codes tables, ICU's case data), once per process, so that the first record a script
// maps does not spend its CPU budget on it. Sandbox::create calls it.
void warm_up();

std::string trim(std::string_view in);
// Unicode lowercase (ICU full case mapping, root locale), as JavaScript's toLowerCase does.
// Fails only on invalid UTF-8.
Result lower(std::string_view in);

// Trims surrounding whitespace, lowercases (Unicode), validates the shape (one '@', non-empty local
// part, domain with a dot, no spaces or control characters, length limits of RFC 5321).
Result email(std::string_view in);

// Any human-written phone number to E.164 ("+46701234567") via libphonenumber.
// default_region is an ISO 3166 alpha-2 code used when the number has no "+country" prefix;
// may be empty (then only international numbers parse). Refuses numbers libphonenumber
// does not consider valid for their region.
Result phone(std::string_view in, std::string_view default_region);

// Calendar date "YYYY-MM-DD". Accepts a date-only string or any timestamp datetime() accepts
// (the date is taken in UTC). Refuses impossible dates (2023-02-30).
Result date(std::string_view in);

// Timestamp to ISO 8601 UTC: "YYYY-MM-DDTHH:MM:SSZ", or "YYYY-MM-DDTHH:MM:SS.mmmZ" when the
// milliseconds are non-zero. Accepts ISO 8601 with 'T' or ' ', optional fractional seconds
// (any number of digits, truncated to milliseconds), and 'Z', "+hh:mm", "+hhmm" or "+hh"
// offsets (commercetools "2024-01-01T00:00:00.000Z", Salesforce
// "2013-05-20T20:49:32.000+0000"); a date-only string means midnight UTC; an all-digit
// string of 12-14 digits is epoch milliseconds. No offset at all is refused (ambiguous).
Result datetime(std::string_view in);
// Epoch milliseconds (the form several APIs use for numbers) to the same output format.
Result datetime_ms(int64_t epoch_ms);

// Country name ("Sweden", "sweden"), alpha-3 ("SWE"), numeric ("752") or alpha-2 ("se")
// to ISO 3166-1 alpha-2 ("SE"). Data from Debian's iso-codes (iso_3166-1.json),
// loaded once. Also accepts the common and official names iso-codes lists.
Result country(std::string_view in);

// Minor units to a decimal amount: money(1999, 2) == 19.99, money(500, 0) == 500.
// fraction_digits must be 0..8.
std::optional<double> money(int64_t cent_amount, int fraction_digits, std::string* reason);

}  // namespace weft::norm
