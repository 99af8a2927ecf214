#!/bin/bash
# make demo: the embedded stack end to end on the sample data.
#   streamml broker (librdkafka mock cluster) + redis-server on free loopback
#   ports in a temporary directory, the transactions worker, the sample events
#   built from credit_data.csv, then a readable sample of predictions with
#   reason codes and a summary. Everything is stopped on exit, even on error.
set -euo pipefail
BUILD=${BUILD:-build}
EVENTS=${EVENTS:-models/demo_events.jsonl}
PY=/usr/bin/python3
SM="$BUILD/streamml"

tmp=$(mktemp -d /tmp/streamml-demo-XXXXXX)
pids=()
cleanup() {
    for ((i=${#pids[@]}-1; i>=0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
        wait "${pids[i]}" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

[ -f "$EVENTS" ] || { echo "demo: $EVENTS missing (make models)"; exit 1; }
n_events=$(wc -l < "$EVENTS")

echo "== starting the embedded stack in $tmp"
"$SM" broker --bootstrap-file "$tmp/bootstrap" >"$tmp/broker.log" 2>&1 &
pids+=($!)
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no \
    >"$tmp/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/bootstrap" ] && redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
bs=$(cat "$tmp/bootstrap")
echo "   kafka (mock cluster): $bs    redis: 127.0.0.1:$rport"

echo "== starting streamml-transactions"
"$BUILD/streamml-transactions" -b "$bs" -X redis.port="$rport" --log-level info \
    >"$tmp/worker.log" 2>&1 &
wpid=$!
pids+=($wpid)

echo "== producing $n_events events from $EVENTS (+1 garbage record, +1 invalid event)"
start=$(date +%s.%N)
"$SM" produce -b "$bs" -i "$EVENTS" --log-level warn
echo 'not avro at all' | "$SM" produce -b "$bs" --raw --log-level warn
echo '{"event_id":"bad-1","user_id":"u-x","event_time":1700000000000,"amount":-250}' |
    "$SM" produce -b "$bs" --log-level warn

echo "== waiting for $n_events predictions"
"$SM" consume -b "$bs" -t predictions.transactions -f -n "$n_events" --log-level error \
    >"$tmp/predictions.jsonl" 2>/dev/null
end=$(date +%s.%N)
"$SM" consume -b "$bs" -t transactions.dlq -f -e --log-level error >"$tmp/dlq.jsonl" 2>/dev/null

kill -TERM "$wpid"; wait "$wpid" || true
$PY - "$tmp/predictions.jsonl" "$tmp/dlq.jsonl" "$start" "$end" <<'PYEOF'
import json, sys, collections
preds = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
dlq = [json.loads(l) for l in open(sys.argv[2]) if l.startswith("{")]
secs = float(sys.argv[4]) - float(sys.argv[3])
print("\n== a sample of predictions (predictions.transactions)")
print(f"{'event':<10} {'user':<8} {'P(bad)':>7} {'score':>5} {'decision':<8} reasons")
shown = collections.Counter()
for p in preds:
    d = p["decision"]
    if shown[d] >= 4:
        continue
    shown[d] += 1
    print(f"{p['event_id']:<10} {p['user_id']:<8} {p['probability']:7.3f} {p['score']:5d} "
          f"{d:<8} {', '.join(p['reasons'])}")
dec = collections.Counter(p["decision"] for p in preds)
lat = sorted(p["latency_us"] for p in preds)
print("\n== dead letters (transactions.dlq)")
for r in dlq:
    print(f"   {r['src_topic']}[{r['src_partition']}]@{r['src_offset']}: {r['reason']}")
print("\n== summary")
print(f"   {len(preds)} predictions in {secs:.2f} s end to end ({len(preds)/secs:,.0f} events/s, "
      "including producing them)")
print("   decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(dec.items())))
print(f"   in-worker latency p50 {lat[len(lat)//2]} us, p99 {lat[int(len(lat)*0.99)]} us")
print(f"   dead-lettered: {len(dlq)}; degraded: {sum(p['degraded'] for p in preds)}")
PYEOF
echo "   worker: $(grep -o 'summary: .*' "$tmp/worker.log" | head -1 | cut -c1-200)"
# Clickstream worker (issue 6): self-contained, its own broker and Redis.
BUILD="$BUILD" tools/demo_clickstream.sh
echo "== stopping"
