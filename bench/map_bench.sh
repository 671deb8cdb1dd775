#!/usr/bin/env bash
# Mapping benchmark: weft against the Node.js reference mapping, on the same file, in the same run.
#
#   bench/map_bench.sh [N]        N customers (default 200000); `./dev bench [N]` builds first.
#
# 1. generates N commercetools customers (../shared/bench/gen_customers.py; reused for the same N)
# 2. maps them with node ../shared/bench/reference_map.js, then with
#    `weft map` (flow acme/customers_reference) on 1 and on 2 workers
# 3. checks that weft's output equals node's, line by line (bench/compare.py)
# 4. prints records/s, the ratios and the peak RSS of each run
# 5. memory check: weft on 1 worker over the file repeated 5 times; a streaming mapper's peak RSS
#    should not grow with the input.
#
# Environment: WEFT_BIN (default build/weft), BENCH_ROUNDS (default 5: each speed is the best
# of that many interleaved runs), BENCH_X5=0 skips step 5 (it needs ~5x the time and
# ~5x the input's disk space). Peak RSS needs GNU time (/usr/bin/time, Debian package `time`);
# without it only wall times are shown.
# Exit status: 0 when the outputs match, 1 when they differ or a run failed, 2 on usage errors.
set -euo pipefail
cd "$(dirname "$0")/.."   # the repo root: every path below is relative to it

N=${1:-200000}
WEFT=${WEFT_BIN:-build/weft}
SHARED=../shared/bench
OUT=bench/out
IN=$OUT/customers.ndjson
IN_X5=$OUT/customers_x5.ndjson

die() { echo "map_bench: $*" >&2; exit 2; }
case $N in ''|*[!0-9]*|0) die "N must be a positive whole number, got '$N'" ;; esac
[ -x "$WEFT" ] || die "no weft binary at $WEFT (build it with ./dev build, or set WEFT_BIN)"
[ -f "$SHARED/gen_customers.py" ] || die "missing $SHARED/gen_customers.py (shared/ must sit beside the repo)"
command -v node >/dev/null || die "node is not installed (needed for the reference mapping)"
command -v python3 >/dev/null || die "python3 is not installed"

mkdir -p "$OUT"

# --- measuring -----------------------------------------------------------------------------------
HAVE_TIME=0
if [ -x /usr/bin/time ]; then HAVE_TIME=1; else
  echo "map_bench: /usr/bin/time not found (Debian package 'time'): showing wall times only" >&2
fi
declare -A WALL RSS STATUS

# measure NAME COMMAND...: runs COMMAND, keeps its wall seconds, peak RSS (KiB) and exit status.
# Called once per round: the best (lowest) wall time and the highest RSS over the rounds are
# kept, and a failure in any round marks the run failed. Best-of-N because the machine is
# shared: other load only ever makes a run slower.
measure() {
  local name=$1; shift
  local rc=0 wall rss=""
  if [ "$HAVE_TIME" = 1 ]; then
    /usr/bin/time -f '%e %M' -o "$OUT/$name.time" "$@" || rc=$?
    # on failure GNU time writes "Command exited with non-zero status N" first: take the last line
    read -r wall rss < <(tail -n 1 "$OUT/$name.time")
  else
    local start end
    start=$(date +%s%N)
    "$@" || rc=$?
    end=$(date +%s%N)
    wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
  fi
  if [ -z "${WALL[$name]:-}" ] || awk -v a="$wall" -v b="${WALL[$name]}" 'BEGIN { exit !(a < b) }'; then
    WALL[$name]=$wall
  fi
  if [ -n "$rss" ] && { [ -z "${RSS[$name]:-}" ] || [ "$rss" -gt "${RSS[$name]}" ]; }; then RSS[$name]=$rss; fi
  if [ "$rc" != 0 ]; then
    STATUS[$name]=$rc
    echo "map_bench: $name exited with status $rc" >&2
  elif [ -z "${STATUS[$name]:-}" ]; then
    STATUS[$name]=0
  fi
}
ROUNDS=${BENCH_ROUNDS:-5}

# --- input ---------------------------------------------------------------------------------------
if [ -f "$IN" ] && [ "$(cat "$IN.n" 2>/dev/null)" = "$N" ]; then
  echo "== reusing $IN ($N customers)"
else
  echo "== generating $N customers -> $IN"
  rm -f "$IN.n" "$IN_X5"
  python3 "$SHARED/gen_customers.py" "$N" > "$IN.tmp"
  mv "$IN.tmp" "$IN"
  echo "$N" > "$IN.n"
fi

# --- runs ----------------------------------------------------------------------------------------
rm -f "$OUT"/node.ndjson "$OUT"/weft1.ndjson "$OUT"/weft2.ndjson "$OUT"/*.time  # no stale results
WEFT_MAP=("$WEFT" map --workspace scripts --tenant acme --flow customers_reference)
# Rounds interleave the three runs, so a burst of outside load hits all of them alike.
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round of $ROUNDS: node reference_map.js, weft map with 1 and with 2 workers"
  measure node node "$SHARED/reference_map.js" "$IN" > "$OUT/node.ndjson"
  measure weft1 "${WEFT_MAP[@]}" --input "$IN" --output "$OUT/weft1.ndjson" 2>"$OUT/weft1.log"
  measure weft2 "${WEFT_MAP[@]}" --input "$IN" --output "$OUT/weft2.ndjson" --workers 2 2>"$OUT/weft2.log"
done

if [ "${BENCH_X5:-1}" != 0 ]; then
  if [ ! -f "$IN_X5" ] || [ "$IN" -nt "$IN_X5" ]; then
    echo "== building $IN_X5 (the input 5 times)"
    cat "$IN" "$IN" "$IN" "$IN" "$IN" > "$IN_X5.tmp"
    mv "$IN_X5.tmp" "$IN_X5"
  fi
  echo "== weft map, 1 worker, 5x input (memory check; output discarded)"
  measure weft_x5 "${WEFT_MAP[@]}" --input "$IN_X5" --output /dev/null
fi

# --- equivalence ---------------------------------------------------------------------------------
SAME=1
for run in weft1 weft2; do
  echo "== compare node.ndjson $run.ndjson"
  python3 bench/compare.py "$OUT/node.ndjson" "$OUT/$run.ndjson" || SAME=0
done

# --- report --------------------------------------------------------------------------------------
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "n/a" }'; }
mib() { if [ -n "$1" ]; then awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; else echo "n/a"; fi; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'; }

declare -A RATE
for run in node weft1 weft2 weft_x5; do
  [ -n "${WALL[$run]:-}" ] || continue
  records=$N; [ "$run" = weft_x5 ] && records=$((N * 5))
  if [ "${STATUS[$run]}" = 0 ]; then RATE[$run]=$(rate "$records" "${WALL[$run]}"); else RATE[$run]=failed; fi
done

echo
echo "== results: $N customers, $(nproc) CPUs, node $(node --version)"
printf '%-28s %12s %9s %14s %7s\n' "run" "records/s" "wall s" "peak RSS MiB" "status"
row() { printf '%-28s %12s %9s %14s %7s\n' "$1" "$2" "$3" "$(mib "$4")" "$5"; }
row "node reference_map.js" "${RATE[node]}" "${WALL[node]}" "${RSS[node]}" "${STATUS[node]}"
row "weft map, 1 worker" "${RATE[weft1]}" "${WALL[weft1]}" "${RSS[weft1]}" "${STATUS[weft1]}"
row "weft map, 2 workers" "${RATE[weft2]}" "${WALL[weft2]}" "${RSS[weft2]}" "${STATUS[weft2]}"
if [ -n "${WALL[weft_x5]:-}" ]; then
  row "weft map, 1 worker, 5x input" "${RATE[weft_x5]}" "${WALL[weft_x5]}" "${RSS[weft_x5]}" \
    "${STATUS[weft_x5]}"
fi
echo
echo "weft 1 worker / node:      $(ratio "${RATE[weft1]}" "${RATE[node]}")"
echo "weft 2 workers / 1 worker: $(ratio "${RATE[weft2]}" "${RATE[weft1]}")"
if [ -n "${RSS[weft_x5]:-}" ] && [ -n "${RSS[weft1]:-}" ]; then
  echo "peak RSS, 5x input / 1x:   $(ratio "${RSS[weft_x5]}" "${RSS[weft1]}")  (about 1 when memory is bounded)"
fi

FAILED=0
for run in "${!STATUS[@]}"; do [ "${STATUS[$run]}" = 0 ] || FAILED=1; done
if [ "$SAME" = 1 ]; then
  echo "output: weft is reference-equivalent (every line equals node's)"
else
  echo "output: NOT reference-equivalent, see the differences above (the speeds do not count)"
fi
if [ "$SAME" = 1 ] && [ "$FAILED" = 0 ]; then exit 0; fi
exit 1
