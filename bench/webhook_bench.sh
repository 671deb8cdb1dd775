#!/usr/bin/env bash
# The webhook benchmark: single-record commercetools webhook POSTs to `weft serve`, each
# answered 202 only once durable (committed to the spool, see engine/serve/spool.h), while
# the pipeline maps and delivers them to the fake Omnisend on the same 2 cores.
#   1. latency at a fixed rate: wrk -t2 -c24 with a per-connection delay tuned to ~2,000
#      requests/s (wrk has no rate option; bench/wrk/webhook_rate.lua adds a delay), for
#      SECONDS (default 15); then the pipeline drains
#   2. throughput: wrk -t2 -c32 for SECONDS, as fast as it can
# Every request carries its own message id, customer id, email and phone, so each is a new
# record. Prints wrk's reports, weft's own ack-time histogram (as bucket bounds) for the
# fixed-rate run, what reached the fake Omnisend, and weft's peak RSS.
# Usage: webhook_bench.sh [SECONDS]   (run by `./dev bench-webhooks`)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${WEFT_BUILD_DIR:-$ROOT/build}
SECONDS_RUN=${1:-15}
command -v wrk >/dev/null || { echo "webhook_bench: wrk is not installed (apt-get install wrk)" >&2; exit 2; }
work=$(mktemp -d /tmp/weft-hookbench.XXXXXX)
serve_pid=""
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  exec 9>&- 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cp -r "$ROOT/scripts" "$work/ws"
exec 9> >("$BUILD/weft-fakes" > "$work/fakes.json" 2> "$work/fakes.err")
for _ in $(seq 100); do [ -s "$work/fakes.json" ] && break; sleep 0.1; done
secrets=$(python3 "$ROOT/bench/point_at_fakes.py" "$work/fakes.json" "$work/ws/acme/tenant.json")
# A bearer token instead of the HMAC (wrk's Lua cannot sign), and no scheduled pull.
python3 - "$work/ws/acme/tenant.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t["connections"]["ct"]["webhook"] = {"bearer_token": "${ACME_CT_WEBHOOK_TOKEN}"}
t["flows"]["customers"].pop("pull", None)
json.dump(t, open(sys.argv[1], "w"), indent=2)
PY
python3 - "$ROOT/scripts/acme/samples/customers.ndjson" > "$work/template.json" <<'PY'
import json, sys
c = json.loads(open(sys.argv[1]).readline())
c["id"] = "CUSTID"; c["email"] = "CUSTID@example.com"
for a in c.get("addresses", []): a["phone"] = "PHONE"
print(json.dumps({"notificationType": "Message", "projectKey": "acme-shop", "id": "MSGID", "version": 1,
                  "sequenceNumber": 1, "resource": {"typeId": "customer", "id": "CUSTID"}, "resourceVersion": 1,
                  "type": "CustomerCreated", "customer": c, "createdAt": "2026-01-01T00:00:00.000Z",
                  "lastModifiedAt": "2026-01-01T00:00:00.000Z"}))
PY
# shellcheck disable=SC2163,SC2086
export $secrets
export ACME_CT_WEBHOOK_TOKEN=bench-token WEFT_ADMIN_TOKEN=bench-admin
"$BUILD/weft" serve --workspace "$work/ws" --listen 127.0.0.1:0 --port-file "$work/port" --no-watch \
  --max-backlog 1000000 2> "$work/serve.log" &
serve_pid=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
url="http://127.0.0.1:$(cat "$work/port")/webhooks/acme/ct"
hdr=(-H 'Content-Type: application/json' -H 'Authorization: Bearer bench-token')
metric() { curl -s -H 'Authorization: Bearer bench-admin' "http://127.0.0.1:$(cat "$work/port")/metrics" |
           awk -v m="$1" 'index($0, m) == 1 { s += $NF } END { print s + 0 }'; }

drain() {  # waits until nothing waits in the spool, the inbox or the outbox (or 10 minutes)
  for _ in $(seq 1200); do
    local processed received waiting
    received=$(metric weft_records_received_total)
    processed=$(metric 'weft_records_total{tenant="acme"')
    waiting=$(metric weft_outbox_backlog)
    [ "$processed" -ge "$received" ] && [ "$waiting" = 0 ] && break
    sleep 0.5
  done
}
ack_buckets() {  # the ack time histogram (body read to 202) as "le count" lines
  curl -s -H 'Authorization: Bearer bench-admin' "http://127.0.0.1:$(cat "$work/port")/metrics" |
    sed -n 's/^weft_webhook_ack_seconds_bucket{[^}]*le="\([^"]*\)"} \(.*\)$/\1 \2/p'
}
ack_quantiles() {  # weft's own view of the last run: the histogram's growth since $1, as bucket bounds
  ack_buckets > "$work/ack.now"
  python3 - "$1" "$work/ack.now" <<'PY'
import sys
def read(path):
    try:
        return {le: float(n) for le, n in (l.split() for l in open(path) if l.strip())}
    except FileNotFoundError:
        return {}
before, now = read(sys.argv[1]), read(sys.argv[2])
buckets = sorted((float("inf") if le == "+Inf" else float(le), n - before.get(le, 0)) for le, n in now.items())
total = buckets[-1][1] if buckets else 0
def bound(q):
    return next((f"<= {le * 1000:g} ms" for le, n in buckets if n >= q * total), "?")
print(f"weft ack time (body read to 202, from its histogram): p50 {bound(0.5)}, p90 {bound(0.9)}, "
      f"p99 {bound(0.99)}, p99.9 {bound(0.999)} ({int(total)} requests)" if total else "weft ack time: no histogram")
PY
}
echo "== latency at ~2,000 requests/s: wrk -t2 -c24, 9 ms between a connection's requests"
WEFT_BENCH_PREFIX=r WEFT_BENCH_PHONE_SERIES=73 WEFT_BENCH_DELAY_MS=9 wrk -t2 -c24 -d"${SECONDS_RUN}s" --latency \
  -s "$ROOT/bench/wrk/webhook_rate.lua" "${hdr[@]}" "$url" -- "$work/template.json"
ack_quantiles /dev/null
drain
echo
ack_buckets > "$work/ack.before"
echo "== throughput: wrk -t2 -c32 -d${SECONDS_RUN}s (size of one body: $(wc -c < "$work/template.json") bytes)"
WEFT_BENCH_PREFIX=t WEFT_BENCH_PHONE_SERIES=70 wrk -t2 -c32 -d"${SECONDS_RUN}s" --latency \
  -s "$ROOT/bench/wrk/webhook.lua" "${hdr[@]}" "$url" -- "$work/template.json"
ack_quantiles "$work/ack.before"
echo
start=$(date +%s)
drain
received=$(metric weft_records_received_total)
delivered=$(metric 'weft_deliveries_total{tenant="acme",flow="customers",outcome="delivered"}')
echo "received $received records; delivered to the fake Omnisend: $delivered (the backlog took $(( $(date +%s) - start )) s to drain)"
conflicts=$(metric 'weft_records_total{tenant="acme",flow="customers",status="conflict"}')
echo "conflicts: $conflicts"
echo "weft peak RSS: $(awk '/VmHWM/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$serve_pid/status")"
