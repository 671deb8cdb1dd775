#!/usr/bin/env bash
# End-to-end sync benchmark: N customers from the fake commercetools to the fake Omnisend,
# durable (every record through the inbox, the pipeline and the outbox in SQLite), rate limits off.
#
#   bench/sync_bench.sh [N]       N customers (default 100000); `./dev bench-sync [N]` builds first.
#   FIRST_WRITE=send bench/sync_bench.sh   the customers flow without its first-write lookups
#                                 (the example tenant asks Omnisend first: consent is owned there)
#
# 1. generates N customers with ../shared/bench/gen_customers.py (the mapping benchmark's corpus)
# 2. starts build/weft-fakes seeded with them (both fakes on 127.0.0.1, ephemeral ports)
# 3. runs `weft sync` for the example tenant (scripts/acme, its real customers.lua) pointed at the
#    fakes, into a fresh database, under /usr/bin/time
# 4. checks every customer is accounted for (delivered, or a conflict / rejection the summary
#    counts; the fake's contact count must equal delivered) and prints records/s and peak RSS;
#    then a second, 5x smaller run, to show that memory does not grow with the backlog.
#
# The fakes run on the same 2 cores as weft, so quote the numbers as measured together.
# Exit status: 0 when every customer arrived, 1 otherwise, 2 on usage errors.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-100000}
WEFT=${WEFT_BIN:-build/weft}
FAKES=${FAKES_BIN:-build/weft-fakes}
SHARED=../shared/bench
OUT=bench/out

die() { echo "sync_bench: $*" >&2; exit 2; }
case $N in ''|*[!0-9]*|0) die "N must be a positive whole number, got '$N'" ;; esac
[ -x "$WEFT" ] || die "no weft binary at $WEFT (./dev build)"
[ -x "$FAKES" ] || die "no weft-fakes binary at $FAKES (./dev build)"
[ -x /usr/bin/time ] || die "needs GNU time (/usr/bin/time, Debian package time)"
[ -f "$SHARED/gen_customers.py" ] || die "missing $SHARED/gen_customers.py"
mkdir -p "$OUT"

run() {  # run N: one sync of N customers; prints "records/s rss_mib seconds"
  local n=$1 work in fakes_pid fakes_json ws
  in=$OUT/sync_customers_$n.ndjson
  [ -s "$in" ] || python3 "$SHARED/gen_customers.py" "$n" > "$in"
  work=$(mktemp -d /tmp/weft-sync-bench.XXXXXX)
  fakes_json=$work/fakes.json
  # stdin from a pipe that stays open: the fakes stop when this script ends, whatever happens.
  exec 9> >("$FAKES" --customers-file "$in" --report "$work/report.json" > "$fakes_json" 2> "$work/fakes.err")
  fakes_pid=$!
  for _ in $(seq 300); do [ -s "$fakes_json" ] && break; sleep 0.1; done
  [ -s "$fakes_json" ] || { cat "$work/fakes.err" >&2; die "the fakes did not start"; }
  ws=$work/ws
  cp -r scripts "$ws"
  rm -rf "$ws/.weft"
  local secrets
  secrets=$(python3 bench/point_at_fakes.py "$fakes_json" "$ws/acme/tenant.json")
  if [ -n "${FIRST_WRITE:-}" ]; then  # the customers flow's first_write (lookup | send)
    python3 - "$ws/acme/tenant.json" "$FIRST_WRITE" <<'PY'
import json, sys
path, mode = sys.argv[1], sys.argv[2]
t = json.load(open(path))
t["flows"]["customers"]["first_write"] = mode
json.dump(t, open(path, "w"), indent=2)
PY
  fi
  local rc=0
  # shellcheck disable=SC2086  # secrets is NAME=value pairs, split on purpose
  env $secrets /usr/bin/time -f "%e %M" -o "$work/time" "$WEFT" sync --workspace "$ws" --tenant acme \
    > "$work/summary.json" 2> "$work/sync.err" || rc=$?
  exec 9>&-   # EOF on the fakes' stdin: they write the report and stop
  wait "$fakes_pid" 2>/dev/null || true
  for _ in $(seq 100); do [ -s "$work/report.json" ] && break; sleep 0.1; done
  if [ "$rc" -ne 0 ]; then cat "$work/sync.err" >&2; echo "sync_bench: weft sync exited $rc" >&2; return 1; fi
  python3 - "$n" "$work" <<'EOF'
import json, sys
n, work = int(sys.argv[1]), sys.argv[2]
secs, rss_kb = open(work + "/time").read().split()
summary = json.load(open(work + "/summary.json"))
report = json.load(open(work + "/report.json"))
# Every customer is accounted for: delivered, or held back for a reason the summary names
# (the generated corpus has a few shared phone numbers: identity conflicts, by design).
accounted = summary["delivered"] + summary["conflicts"] + summary["rejected"] + summary["skipped"]
ok = accounted == n and report["contacts"] == summary["delivered"]
print(f"{n / float(secs):.0f} {int(rss_kb) / 1024:.1f} {float(secs):.2f} {'ok' if ok else 'MISSING'} "
      f"delivered={summary['delivered']} conflicts={summary['conflicts']} rejected={summary['rejected']} "
      f"contacts={report['contacts']} requests={report['requests']}")
EOF
  rm -rf "$work"
}

echo "weft sync, $N customers, fake commercetools -> fake Omnisend (rate limits off), durable in SQLite"
big=$(run "$N") || exit 1
small=$(run $((N / 5 > 0 ? N / 5 : 1))) || exit 1
read -r rate rss secs status rest <<< "$big"
read -r rate5 rss5 secs5 status5 rest5 <<< "$small"
printf '  %-28s %8s records/s  %6.2f s  peak RSS %6s MiB  %s  (%s)\n' "$N customers" "$rate" "$secs" "$rss" "$status" "$rest"
printf '  %-28s %8s records/s  %6.2f s  peak RSS %6s MiB  %s\n' "$((N / 5)) customers (memory check)" "$rate5" "$secs5" "$rss5" "$status5"
[ "$status" = ok ] && [ "$status5" = ok ]
