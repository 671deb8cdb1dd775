#pragma once
// When scheduled jobs (delta pulls, backfills, reconciliation) run: a flow's `schedule` from
// tenant.json, either an interval or a cron expression in a time zone.
//
//   {"every": "30s"}  {"every": "5m"}  {"every": "1h"}  {"every": "1d"}
//   {"cron": "*/5 * * * *"}  {"cron": "30 2 * * MON-FRI", "timezone": "Europe/Stockholm"}
//   {"cron": "@daily"}   (@hourly @daily/@midnight @weekly @monthly @yearly/@annually)
//
// Interval: a positive whole number of s, m, h or d (a day is 24 h); it fires `every` after
// the last run, and at once when the job never ran.
//
// Cron: the five standard fields (minute hour day-of-month month day-of-week) with *, lists,
// ranges, steps (*/15, 1-30/5, 5/15 = 5-59/15), month and weekday names (JAN, MON), 0 and 7
// both Sunday, and Vixie cron's rule for the two day fields: when both are restricted (neither
// starts with '*'), a day matching either fires. Times are wall-clock times in `timezone`
// (an IANA name, default UTC), and across daylight-saving changes:
//   - a local time that does not exist (the hour skipped in spring) fires at the end of the
//     gap, the first valid instant (02:30 -> 03:00 on the day clocks go forward);
//   - a local time that exists twice (the hour repeated in autumn) fires once, at its first
//     occurrence, unless the hour field is '*' (every hour): such a job follows elapsed time
//     and fires in both hours, as Vixie cron does for wildcard jobs.
// Resolution is a minute: fire times are whole minutes of local time.
#include <boost/json/value.hpp>
#include <bitset>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace weft::sched {

class Zone;  // a time zone read from the system's tzdata (schedule.cc)

struct Schedule {
  enum class Kind { every, cron };
  Kind kind = Kind::every;
  std::string text;  // as written, for logs and the admin API: "every 5m", "cron */5 * * * * (Europe/Stockholm)"

  // every
  int64_t every_ms = 0;

  // cron: the set each field allows
  std::bitset<60> minutes;
  std::bitset<24> hours;
  std::bitset<32> days_of_month;  // 1..31
  std::bitset<13> months;         // 1..12
  std::bitset<7> days_of_week;    // 0..6, Sunday = 0
  bool dom_star = true, dow_star = true;  // the field started with '*' (Vixie's day rule)
  std::string timezone = "UTC";
  std::shared_ptr<const Zone> zone;  // null: UTC
};

// Parses a schedule object. On error returns nullopt and sets *error (if given) to what is
// wrong and where, e.g. "cron field 2 (hour): 25 is out of range 0-23".
std::optional<Schedule> parse_schedule(const boost::json::value& spec, std::string* error);

// The first fire time strictly after `after_ms` (epoch ms). For an interval, after_ms is the
// last run: it returns after_ms + every. INT64_MAX if the schedule never fires again
// (parse_schedule refuses expressions that never fire, such as "0 0 30 2 *").
int64_t next_after(const Schedule&, int64_t after_ms);

// The latest cron fire time at or before `at_ms`, and after `floor_ms`; nullopt if none.
std::optional<int64_t> latest_at_or_before(const Schedule&, int64_t at_ms, int64_t floor_ms);

// At start (or any check): given the last run's scheduled time (0: never ran) and now,
// whether a run is due and the next time to wake. A schedule missed during downtime runs ONCE
// (not once per missed slot). When run_now, `slot_ms` is the scheduled time the run stands for
// (the latest slot at or before now, or now for a job that never ran): store it as the next
// call's last_scheduled_ms, so the cadence stays anchored and does not drift with wake-up
// latency. A cron job that never ran waits for its first slot; an interval job runs at once.
// A last run in the future (the clock went back) is not run again before its next slot.
struct Due {
  bool run_now;
  int64_t next_ms;
  int64_t slot_ms = 0;
};
Due due(const Schedule&, int64_t last_scheduled_ms, int64_t now_ms);

// The last scheduled time to count from, given the one the store has (0: never ran) and
// now: the stored one, or for a cron job that never ran, now (the moment the scheduler took
// the job up), so that its first slot after that fires. (An interval job that never ran
// keeps 0: due() runs it at once.) Without this a cron job that never ran would wait for
// its "first slot" at every check, for ever.
int64_t anchor(const Schedule&, int64_t stored_last_ms, int64_t now_ms);

}  // namespace weft::sched
