#!/usr/bin/env bash
# `./dev up`'s weft serve demo: the example workspace (a copy) against LOCAL FAKE
# commercetools and Omnisend (build/weft-fakes on 127.0.0.1), so it needs no credentials
# and no network. It starts `weft serve`, lets the scheduled pull bring the sample
# customers over, posts one signed webhook and prints its trace. On a terminal it then keeps
# serving until Ctrl-C; otherwise it stops weft (SIGTERM) and exits.
# Usage: serve_demo.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: serve_demo.sh BUILD_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WEFT="$BUILD/weft"
demo=$(mktemp -d /tmp/weft-demo.XXXXXX)
serve_pid=""
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  exec 9>&- 2>/dev/null || true
  rm -rf "$demo"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp -r "$ROOT/scripts" "$demo/ws"
# The fakes stop when their stdin (fd 9) closes.
exec 9> >("$BUILD/weft-fakes" --customers-file "$ROOT/scripts/acme/samples/customers.ndjson" \
            > "$demo/fakes.json" 2> "$demo/fakes.err")
for _ in $(seq 100); do [ -s "$demo/fakes.json" ] && break; sleep 0.1; done
secrets=$(python3 "$ROOT/bench/point_at_fakes.py" "$demo/fakes.json" "$demo/ws/acme/tenant.json")
echo "fakes: $(cat "$demo/fakes.json")"
# shellcheck disable=SC2163,SC2086  # NAME=value pairs
export $secrets
export ACME_CT_WEBHOOK_SECRET=demo-webhook-secret WEFT_ADMIN_TOKEN=demo-admin-token

"$WEFT" serve --workspace "$demo/ws" --listen "127.0.0.1:${WEFT_PORT:-0}" --port-file "$demo/port" &
serve_pid=$!
for _ in $(seq 100); do [ -s "$demo/port" ] && break; sleep 0.1; done
[ -s "$demo/port" ] || { echo "serve_demo: weft serve did not start" >&2; exit 1; }
url="http://127.0.0.1:$(cat "$demo/port")"
auth="Authorization: Bearer $WEFT_ADMIN_TOKEN"

# The flow pulls every 5 minutes; the first pull runs at start and brings the samples over.
echo
echo "== the scheduled pull (GET /api/tenants/acme, its last job run)"
for _ in $(seq 100); do
  runs=$(curl -s -H "$auth" "$url/api/tenants/acme")
  echo "$runs" | grep -q '"job":"pull","trigger":"[a-z]*","status":"ok"' && break
  sleep 0.2
done
echo "$runs" | python3 -c 'import json,sys; t=json.load(sys.stdin); f=[f for f in t["flows"] if f["flow"]=="customers"][0]; print(json.dumps(f["job_runs"][:1], indent=2))'

echo
echo "== a signed commercetools webhook: POST $url/webhooks/acme/ct"
python3 - "$ROOT/scripts/acme/samples/customers.ndjson" > "$demo/message.json" <<'PY'
import json, sys
c = json.loads(open(sys.argv[1]).readline())
c["id"] = "demo-webhook-customer"
c["email"] = "webhook.demo@example.com"
c["version"] = 1
for a in c.get("addresses", []):
    a["phone"] = "070-765 43 21"  # a number no sample customer has (a shared one is an identity conflict)
print(json.dumps({"notificationType": "Message", "projectKey": "acme-shop", "id": "demo-message-1",
                  "version": 1, "sequenceNumber": 1, "resource": {"typeId": "customer", "id": c["id"]},
                  "resourceVersion": 1, "type": "CustomerCreated", "customer": c,
                  "createdAt": "2026-01-01T00:00:00.000Z", "lastModifiedAt": "2026-01-01T00:00:00.000Z"}))
PY
sig=$(python3 -c 'import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), open(sys.argv[2],"rb").read(), hashlib.sha256).hexdigest())' \
      "$ACME_CT_WEBHOOK_SECRET" "$demo/message.json")
cid="demo-$(date +%s)"
code=$(curl -s -o "$demo/answer.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
       -H "X-Weft-Signature: $sig" -H "X-Correlation-ID: $cid" --data-binary @"$demo/message.json" "$url/webhooks/acme/ct")
echo "$code $(cat "$demo/answer.json")"
[ "$code" = 202 ] || { echo "serve_demo: the webhook was not accepted" >&2; exit 1; }

echo
echo "== its trace: GET $url/api/trace/$cid"
for _ in $(seq 100); do
  trace=$(curl -s -H "$auth" "$url/api/trace/$cid")
  echo "$trace" | grep -q '"stage":"\(delivered\|conflict\|rejected\|dead_letter\)"' && break
  sleep 0.2
done
echo "$trace" | python3 -m json.tool
echo "$trace" | grep -q '"stage":"delivered"' || { echo "serve_demo: the record did not reach the fake Omnisend" >&2; exit 1; }

cat <<EOF

weft serve is running on $url against the LOCAL FAKE APIs above. Try:
  curl -H '$auth' $url/api/tenants/acme
  curl -H '$auth' $url/metrics
  edit $demo/ws/acme/customers.lua and watch the log: it is reloaded (or refused) as you save
EOF
if [ -t 0 ]; then
  echo "Ctrl-C stops it."
  wait "$serve_pid" || true
  serve_pid=""
else
  echo "(not a terminal: stopping weft now)"
  kill -TERM "$serve_pid"
  wait "$serve_pid" || { echo "serve_demo: weft serve did not stop cleanly" >&2; exit 1; }
  serve_pid=""
fi
