// Schedules: parsing (with the messages a consultant sees), cron fire times against
// hand-computed answers, daylight-saving changes in Europe/Stockholm, and what is due at start.
#include <catch2/catch.hpp>

#include <boost/json.hpp>
#include <date/date.h>

#include "engine/sched/schedule.h"
#include "engine/util/time.h"

using namespace weft::sched;
namespace json = boost::json;

namespace {
// Epoch ms of a UTC time.
int64_t utc(int y, unsigned mo, unsigned d, int h = 0, int mi = 0, int s = 0) {
  using namespace std::chrono;
  auto day = date::sys_days{date::year{y} / date::month{mo} / date::day{d}};
  return duration_cast<milliseconds>(day.time_since_epoch()).count() + ((h * 60 + mi) * 60 + s) * 1000LL;
}
std::string iso(int64_t ms) { return weft::util::iso8601_ms(ms); }

Schedule parse(const std::string& spec_json) {
  std::string error;
  auto s = parse_schedule(json::parse(spec_json), &error);
  INFO(spec_json << ": " << error);
  REQUIRE(s);
  return *s;
}
Schedule cron(const std::string& expr, const std::string& tz = "") {
  json::object o{{"cron", expr}};
  if (!tz.empty()) o["timezone"] = tz;
  return parse(json::serialize(o));
}
// The error parse_schedule gives for a spec (fails the test if it parses).
std::string error_of(const std::string& spec_json) {
  std::string error;
  auto s = parse_schedule(json::parse(spec_json), &error);
  INFO(spec_json);
  CHECK_FALSE(s);
  CHECK(!error.empty());
  return error;
}
std::string cron_error(const std::string& expr) { return error_of(json::serialize(json::object{{"cron", expr}})); }

// The next fire time after a UTC time, as ISO text.
std::string next(const Schedule& s, int64_t after) { return iso(next_after(s, after)); }
}  // namespace

TEST_CASE("schedule: parses intervals, cron, macros and time zones", "[schedule]") {
  auto e = parse(R"({"every": "30s"})");
  CHECK(e.kind == Schedule::Kind::every);
  CHECK(e.every_ms == 30000);
  CHECK(parse(R"({"every": "5m"})").every_ms == 300000);
  CHECK(parse(R"({"every": "1h"})").every_ms == 3600000);
  CHECK(parse(R"({"every": "1d"})").every_ms == 86400000);
  CHECK(parse(R"({"every": "1s"})").every_ms == 1000);
  CHECK(e.text == "every 30s");

  auto c = cron("*/15 9-17 * JAN,jul mon-FRI", "Europe/Stockholm");
  CHECK(c.kind == Schedule::Kind::cron);
  CHECK(c.minutes.count() == 4);
  CHECK(c.minutes[0]);
  CHECK(c.minutes[45]);
  CHECK(c.hours.count() == 9);
  CHECK(c.months.count() == 2);
  CHECK(c.months[1]);
  CHECK(c.months[7]);
  CHECK(c.days_of_week.count() == 5);
  CHECK_FALSE(c.days_of_week[0]);
  CHECK(c.timezone == "Europe/Stockholm");
  CHECK(c.text == "cron */15 9-17 * JAN,jul mon-FRI (Europe/Stockholm)");

  CHECK(cron("0 0 * * 7").days_of_week == cron("0 0 * * 0").days_of_week);  // 7 is Sunday too
  CHECK(cron("0 0 * * 5-7").days_of_week.count() == 3);
  CHECK(cron("5/20 * * * *").minutes.count() == 3);  // 5, 25, 45
  CHECK(cron("1-30/5 * * * *").minutes.count() == 6);  // 1, 6, 11, 16, 21, 26
  CHECK(cron("  0   0 * * *  ").minutes.count() == 1);  // any spacing
  CHECK(cron("0 0 * * *", "UTC").zone == nullptr);
  CHECK(cron("0 0 * * *").timezone == "UTC");

  // The macros are the expressions they stand for.
  auto same = [](const std::string& a, const std::string& b) {
    auto x = cron(a), y = cron(b);
    return x.minutes == y.minutes && x.hours == y.hours && x.days_of_month == y.days_of_month &&
           x.months == y.months && x.days_of_week == y.days_of_week;
  };
  CHECK(same("@hourly", "0 * * * *"));
  CHECK(same("@daily", "0 0 * * *"));
  CHECK(same("@weekly", "0 0 * * 0"));
  CHECK(same("@monthly", "0 0 1 * *"));
  CHECK(same("@yearly", "0 0 1 1 *"));
}

TEST_CASE("schedule: parse errors say what is wrong and where", "[schedule]") {
  // Each cron field.
  CHECK(cron_error("60 * * * *") == "cron field 1 (minute): 60 is out of range 0-59");
  CHECK(cron_error("* 25 * * *") == "cron field 2 (hour): 25 is out of range 0-23");
  CHECK(cron_error("0 0 0 * *") == "cron field 3 (day-of-month): 0 is out of range 1-31");
  CHECK(cron_error("0 0 32 * *") == "cron field 3 (day-of-month): 32 is out of range 1-31");
  CHECK(cron_error("0 0 * 13 *") == "cron field 4 (month): 13 is out of range 1-12");
  CHECK(cron_error("0 0 * FOO *") == "cron field 4 (month): 'FOO' is not a month (1-12 or JAN-DEC)");
  CHECK(cron_error("0 0 * * 8") == "cron field 5 (day-of-week): 8 is out of range 0-7");
  CHECK(cron_error("0 0 * * MOON") == "cron field 5 (day-of-week): 'MOON' is not a weekday (0-7 or SUN-SAT)");
  CHECK(cron_error("0 0 * * JAN") == "cron field 5 (day-of-week): 'JAN' is not a weekday (0-7 or SUN-SAT)");
  CHECK(cron_error("x * * * *") == "cron field 1 (minute): 'x' is not a number");
  CHECK(cron_error("30-10 * * * *") == "cron field 1 (minute): range '30-10' goes backwards");
  CHECK(cron_error("*/0 * * * *") == "cron field 1 (minute): step 0 in '*/0' is out of range 1-59");
  CHECK(cron_error("0 */x * * *") == "cron field 2 (hour): step 'x' in '*/x' is not a positive number");
  CHECK(cron_error("1,,2 * * * *") == "cron field 1 (minute): empty list item in '1,,2'");
  CHECK(cron_error("0 1- * * *") == "cron field 2 (hour): a value is missing in '1-'");
  CHECK(cron_error("0 0 1-40 * *") == "cron field 3 (day-of-month): 40 is out of range 1-31");

  // Garbage, empty, the wrong number of fields.
  CHECK(cron_error("") ==
        "cron: empty expression (five fields are expected: minute hour day-of-month month day-of-week)");
  CHECK(cron_error("   ").find("empty expression") != std::string::npos);
  CHECK(cron_error("every day at noon") ==
        "cron: expected 5 fields (minute hour day-of-month month day-of-week), got 4 in 'every day at noon'");
  CHECK(cron_error("0 0 * * * *") ==
        "cron: expected 5 fields (minute hour day-of-month month day-of-week), got 6 in '0 0 * * * *'");
  CHECK(cron_error("*/5 * * *").find("got 4") != std::string::npos);
  CHECK(cron_error("@reboot").find("unknown macro '@reboot'") != std::string::npos);
  CHECK(cron_error("0 0 30 2 *") == "cron: '0 0 30 2 *' never fires: no date has that day-of-month in that month");
  CHECK(cron_error("0 0 31 4,6 *").find("never fires") != std::string::npos);
  CHECK(error_of(R"({"cron": 5})") == "cron: expected a string such as \"*/5 * * * *\", got 5");

  // Intervals.
  CHECK(error_of(R"({"every": "0s"})") == "every: '0s' must be at least 1s");
  std::string bad = error_of(R"({"every": "5x"})");
  CHECK(bad.find("every: '5x' is not an interval") == 0);
  CHECK(bad.find("\"30s\"") != std::string::npos);
  CHECK(error_of(R"({"every": ""})").find("is not an interval") != std::string::npos);
  CHECK(error_of(R"({"every": "-5m"})").find("is not an interval") != std::string::npos);
  CHECK(error_of(R"({"every": "1.5h"})").find("is not an interval") != std::string::npos);
  CHECK(error_of(R"({"every": "5 m"})").find("is not an interval") != std::string::npos);
  CHECK(error_of(R"({"every": "m"})").find("is not an interval") != std::string::npos);
  CHECK(error_of(R"({"every": 300})").find("every: expected a string") == 0);
  CHECK(error_of(R"({"every": "99999999999d"})").find("too long") != std::string::npos);

  // The object itself.
  CHECK(error_of(R"("*/5 * * * *")").find("schedule: expected an object") == 0);
  CHECK(error_of(R"({})") == "schedule: needs every (\"5m\") or cron (\"*/5 * * * *\")");
  CHECK(error_of(R"({"every": "5m", "cron": "* * * * *"})") == "schedule: has both every and cron; give one");
  CHECK(error_of(R"({"cron": "* * * * *", "timzone": "UTC"})") ==
        "schedule: unknown key 'timzone' (every, cron and timezone are known)");
  CHECK(error_of(R"({"every": "5m", "timezone": "Europe/Stockholm"})") ==
        "schedule: timezone applies to cron only, not to every");

  // Time zones: an unknown one is named.
  CHECK(error_of(R"({"cron": "* * * * *", "timezone": "Europe/Stokholm"})") ==
        "timezone: unknown time zone 'Europe/Stokholm' (no such zone in /usr/share/zoneinfo)");
  CHECK(error_of(R"({"cron": "* * * * *", "timezone": "../../etc/passwd"})").find("'../../etc/passwd'") !=
        std::string::npos);
  CHECK(error_of(R"({"cron": "* * * * *", "timezone": "Europe"})").find("'Europe'") != std::string::npos);
  CHECK(error_of(R"({"cron": "* * * * *", "timezone": 1})").find("timezone: expected a string") == 0);
}

TEST_CASE("schedule: next_after for cron expressions (UTC)", "[schedule]") {
  // Steps.
  CHECK(next(cron("*/15 * * * *"), utc(2026, 1, 1, 10, 7)) == "2026-01-01T10:15:00.000Z");
  CHECK(next(cron("*/15 * * * *"), utc(2026, 1, 1, 10, 15)) == "2026-01-01T10:30:00.000Z");  // strictly after
  CHECK(next(cron("*/15 * * * *"), utc(2026, 1, 1, 10, 14, 59) + 999) == "2026-01-01T10:15:00.000Z");
  CHECK(next(cron("*/15 * * * *"), utc(2026, 12, 31, 23, 50)) == "2027-01-01T00:00:00.000Z");
  CHECK(next(cron("5/20 * * * *"), utc(2026, 1, 1, 10, 45)) == "2026-01-01T11:05:00.000Z");
  CHECK(next(cron("0 1-23/5 * * *"), utc(2026, 1, 1, 21, 0)) == "2026-01-02T01:00:00.000Z");
  CHECK(next(cron("* * * * *"), utc(2026, 1, 1, 10, 0, 30)) == "2026-01-01T10:01:00.000Z");

  // Month ends: the 31st skips the months without one; the 1st after a month's last day.
  CHECK(next(cron("0 0 1 * *"), utc(2026, 1, 31, 12)) == "2026-02-01T00:00:00.000Z");
  CHECK(next(cron("0 0 31 * *"), utc(2026, 4, 1)) == "2026-05-31T00:00:00.000Z");
  CHECK(next(cron("0 0 31 * *"), utc(2026, 1, 31)) == "2026-03-31T00:00:00.000Z");
  CHECK(next(cron("59 23 31 12 *"), utc(2026, 12, 31, 23, 59)) == "2027-12-31T23:59:00.000Z");
  CHECK(next(cron("@monthly"), utc(2026, 12, 31, 23, 59, 59)) == "2027-01-01T00:00:00.000Z");

  // Leap years: Feb 29 fires every four years.
  CHECK(next(cron("0 0 29 2 *"), utc(2026, 3, 1)) == "2028-02-29T00:00:00.000Z");
  CHECK(next(cron("0 0 29 2 *"), utc(2028, 2, 29)) == "2032-02-29T00:00:00.000Z");
  CHECK(next(cron("0 0 29 2 *"), utc(2096, 3, 1)) == "2104-02-29T00:00:00.000Z");  // 2100 is no leap year

  // Weekdays (2026-11-22 is a Sunday), 7 is Sunday, names, ranges across a weekend.
  CHECK(next(cron("0 12 * * MON"), utc(2026, 11, 22, 18)) == "2026-11-23T12:00:00.000Z");
  CHECK(next(cron("0 0 * * 7"), utc(2026, 11, 21, 6)) == "2026-11-22T00:00:00.000Z");
  CHECK(next(cron("0 9-17 * * MON-FRI"), utc(2026, 11, 20, 17)) == "2026-11-23T09:00:00.000Z");
  CHECK(next(cron("@weekly"), utc(2026, 11, 18)) == "2026-11-22T00:00:00.000Z");
  CHECK(next(cron("0 0 1 jul *"), utc(2026, 7, 1)) == "2027-07-01T00:00:00.000Z");

  // Vixie's rule: both day fields restricted -> either matches. 2026-01-02 is a Friday.
  CHECK(next(cron("0 0 13 * FRI"), utc(2026, 1, 1)) == "2026-01-02T00:00:00.000Z");
  CHECK(next(cron("0 0 13 * FRI"), utc(2026, 1, 12)) == "2026-01-13T00:00:00.000Z");  // a Tuesday, the 13th
  CHECK(next(cron("0 0 1-7 * MON"), utc(2026, 6, 7)) == "2026-06-08T00:00:00.000Z");  // not "first Monday"
  // ...and when one starts with '*', both must match: */13 is the 1st, 14th, 27th.
  CHECK(next(cron("0 0 */13 * FRI"), utc(2026, 1, 1)) == "2026-02-27T00:00:00.000Z");
  CHECK(next(cron("0 0 13 * *"), utc(2026, 1, 1)) == "2026-01-13T00:00:00.000Z");
}

TEST_CASE("schedule: daylight saving in Europe/Stockholm", "[schedule]") {
  // 2026-03-29 01:00Z: 02:00 CET becomes 03:00 CEST (02:00-02:59 do not exist).
  // 2026-10-25 01:00Z: 03:00 CEST becomes 02:00 CET (02:00-02:59 happen twice).
  auto daily = cron("30 2 * * *", "Europe/Stockholm");
  CHECK(next(daily, utc(2026, 3, 27, 12)) == "2026-03-28T01:30:00.000Z");  // 02:30 CET
  // The skipped 02:30 fires when the gap ends, at 03:00 CEST, then 02:30 CEST the next day.
  CHECK(next(daily, utc(2026, 3, 28, 12)) == "2026-03-29T01:00:00.000Z");
  CHECK(next(daily, utc(2026, 3, 29, 1)) == "2026-03-30T00:30:00.000Z");
  // The doubled 02:30 fires once, the first time (CEST), then 02:30 CET the next day.
  CHECK(next(daily, utc(2026, 10, 24, 12)) == "2026-10-25T00:30:00.000Z");
  CHECK(next(daily, utc(2026, 10, 25, 0, 30)) == "2026-10-26T01:30:00.000Z");

  // A job at 03:00 on the spring day is not doubled by the gap's end.
  auto three = cron("0 3 * * *", "Europe/Stockholm");
  CHECK(next(three, utc(2026, 3, 28, 12)) == "2026-03-29T01:00:00.000Z");
  CHECK(next(three, utc(2026, 3, 29, 1)) == "2026-03-30T01:00:00.000Z");
  auto two_and_three = cron("*/30 2-3 * * *", "Europe/Stockholm");  // all of 02:xx skipped
  CHECK(next(two_and_three, utc(2026, 3, 28, 12)) == "2026-03-29T01:00:00.000Z");
  CHECK(next(two_and_three, utc(2026, 3, 29, 1)) == "2026-03-29T01:30:00.000Z");

  // A job every half hour follows elapsed time: spring skips the missing hour...
  auto half = cron("*/30 * * * *", "Europe/Stockholm");
  CHECK(next(half, utc(2026, 3, 29, 0, 30)) == "2026-03-29T01:00:00.000Z");  // 01:30 CET -> 03:00 CEST
  // ...and autumn fires in both 02:xx hours.
  CHECK(next(half, utc(2026, 10, 25, 0, 0)) == "2026-10-25T00:30:00.000Z");   // 02:30 CEST
  CHECK(next(half, utc(2026, 10, 25, 0, 30)) == "2026-10-25T01:00:00.000Z");  // 02:00 CET
  CHECK(next(half, utc(2026, 10, 25, 1, 0)) == "2026-10-25T01:30:00.000Z");   // 02:30 CET
  CHECK(next(half, utc(2026, 10, 25, 1, 30)) == "2026-10-25T02:00:00.000Z");  // 03:00 CET

  // Wall-clock time: 09:00 is 08:00Z in winter and 07:00Z in summer, also far past the
  // transitions the zone file lists (its rule takes over), and in the southern hemisphere.
  auto nine = cron("0 9 * * *", "Europe/Stockholm");
  CHECK(next(nine, utc(2026, 1, 10)) == "2026-01-10T08:00:00.000Z");
  CHECK(next(nine, utc(2026, 7, 10)) == "2026-07-10T07:00:00.000Z");
  CHECK(next(nine, utc(2040, 7, 10)) == "2040-07-10T07:00:00.000Z");
  CHECK(next(nine, utc(2040, 12, 10)) == "2040-12-10T08:00:00.000Z");
  CHECK(next(cron("0 12 1 1 *", "Australia/Sydney"), utc(2044, 6, 1)) == "2045-01-01T01:00:00.000Z");
  CHECK(next(cron("0 12 1 7 *", "Australia/Sydney"), utc(2044, 6, 1)) == "2044-07-01T02:00:00.000Z");
  CHECK(next(cron("0 0 * * *", "Etc/UTC"), utc(2026, 3, 29, 1)) == "2026-03-30T00:00:00.000Z");
}

TEST_CASE("schedule: due at start and at each check", "[schedule]") {
  const int64_t now = utc(2026, 11, 22, 10, 52, 30);
  const int64_t five = 5 * 60000;

  SECTION("interval") {
    auto s = parse(R"({"every": "5m"})");
    auto never = due(s, 0, now);  // never ran: at once
    CHECK(never.run_now);
    CHECK(never.slot_ms == now);
    CHECK(never.next_ms == now + five);

    auto recent = due(s, now - 2 * 60000, now);  // ran 2 minutes ago
    CHECK_FALSE(recent.run_now);
    CHECK(recent.next_ms == now + 3 * 60000);

    auto on_time = due(s, now - five, now);  // exactly due
    CHECK(on_time.run_now);
    CHECK(on_time.slot_ms == now);
    CHECK(on_time.next_ms == now + five);

    // Down for 10 slots and a bit: one run now, for the latest slot; the next is in the future.
    int64_t last = now - 10 * five - 1000;
    auto missed = due(s, last, now);
    CHECK(missed.run_now);
    CHECK(missed.slot_ms == last + 10 * five);
    CHECK(missed.next_ms == last + 11 * five);
    CHECK(missed.next_ms > now);
    CHECK_FALSE(due(s, missed.slot_ms, now).run_now);  // and not again

    auto back = due(s, now + 60000, now);  // the clock went back
    CHECK_FALSE(back.run_now);
    CHECK(back.next_ms == now + 60000 + five);
  }

  SECTION("cron") {
    auto s = cron("*/5 * * * *");
    auto never = due(s, 0, now);  // never ran: waits for its first slot
    CHECK_FALSE(never.run_now);
    CHECK(iso(never.next_ms) == "2026-11-22T10:55:00.000Z");

    // Taken up at `now` by the scheduler: the first slot after it fires (and only once),
    // though the store has no run.
    int64_t from = anchor(s, 0, now);
    CHECK_FALSE(due(s, from, now).run_now);
    auto first = due(s, from, utc(2026, 11, 22, 10, 55, 0) + 300);
    CHECK(first.run_now);
    CHECK(iso(first.slot_ms) == "2026-11-22T10:55:00.000Z");
    CHECK_FALSE(due(s, first.slot_ms, utc(2026, 11, 22, 10, 56)).run_now);
    CHECK(anchor(s, utc(2026, 11, 22, 10, 0), now) == utc(2026, 11, 22, 10, 0));  // a stored run counts
    CHECK(anchor(parse(R"({"every": "5m"})"), 0, now) == 0);  // an interval job runs at once

    auto recent = due(s, utc(2026, 11, 22, 10, 50), now);  // the 10:50 run happened
    CHECK_FALSE(recent.run_now);
    CHECK(iso(recent.next_ms) == "2026-11-22T10:55:00.000Z");

    // Last ran at 10:00: the 10 slots 10:05..10:50 were missed. One run, for 10:50.
    auto missed = due(s, utc(2026, 11, 22, 10, 0), now);
    CHECK(missed.run_now);
    CHECK(iso(missed.slot_ms) == "2026-11-22T10:50:00.000Z");
    CHECK(iso(missed.next_ms) == "2026-11-22T10:55:00.000Z");
    CHECK(missed.next_ms > now);
    CHECK_FALSE(due(s, missed.slot_ms, now).run_now);

    // A nightly job down for a week runs once, for last night.
    auto nightly = cron("0 3 * * *", "Europe/Stockholm");
    auto week = due(nightly, utc(2026, 11, 14, 2), now);
    CHECK(week.run_now);
    CHECK(iso(week.slot_ms) == "2026-11-22T02:00:00.000Z");
    CHECK(iso(week.next_ms) == "2026-11-23T02:00:00.000Z");

    // A minute job down for a year: still one run, and quickly.
    auto minutely = cron("* * * * *");
    auto year = due(minutely, utc(2025, 11, 22), now);
    CHECK(year.run_now);
    CHECK(iso(year.slot_ms) == "2026-11-22T10:52:00.000Z");
    CHECK(iso(year.next_ms) == "2026-11-22T10:53:00.000Z");

    auto back = due(s, utc(2026, 11, 22, 11, 0), now);  // the clock went back
    CHECK_FALSE(back.run_now);
    CHECK(iso(back.next_ms) == "2026-11-22T11:05:00.000Z");
  }
}
