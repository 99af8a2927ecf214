#!/bin/bash
# make demo: the embedded stack end to end on the sample data.
#   One `streamml broker` (librdkafka mock cluster) and one redis-server on
#   free loopback ports in a temporary directory; every worker (transactions
#   with monitoring and /metrics, images; then clickstream, by
#   tools/demo_clickstream.sh on the same broker and Redis); the sample data
#   streamed: credit events built from credit_data.csv, then a segment whose
#   income and amount drift (so monitoring raises alerts on `monitoring`),
#   then normal traffic again (so they resolve), and graded image references;
#   then readable predictions, dead letters, alerts and a /metrics excerpt.
#   Everything is stopped on exit, even on error.
set -euo pipefail
BUILD=${BUILD:-build}
EVENTS=${EVENTS:-models/demo_events.jsonl}
SAMPLES=${SAMPLES:-models/images/samples}
PY=/usr/bin/python3
SM="$BUILD/streamml"
SHOW="$PY tools/demo_show.py"

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
[ -f "$SAMPLES/events.jsonl" ] || { echo "demo: $SAMPLES/events.jsonl missing"; exit 1; }

# Traffic, in event-time order as a live stream arrives (the baseline was
# profiled on features computed in that order): the sample events, a drifted
# copy (income x0.4, amount x3: shifted applicants), then the first 3,000
# sample events again under new ids.
$PY - "$EVENTS" "$tmp" <<'PYEOF'
import json, sys
rows = sorted((json.loads(l) for l in open(sys.argv[1])), key=lambda r: (r["event_time"], r["event_id"]))
t_end = rows[-1]["event_time"]
with open(sys.argv[2] + "/sample.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
with open(sys.argv[2] + "/drift.jsonl", "w") as d, open(sys.argv[2] + "/again.jsonl", "w") as a:
    for i, r in enumerate(rows[:3000]):
        x = dict(r, event_id="d" + r["event_id"], event_time=t_end + 1000 * (i + 1))
        if x.get("income") is not None: x["income"] = round(x["income"] * 0.4, 1)
        if x.get("amount") is not None: x["amount"] = round(x["amount"] * 3, 1)
        d.write(json.dumps(x) + "\n")
        y = dict(r, event_id="n" + r["event_id"], event_time=t_end + 1000 * (3001 + i))
        a.write(json.dumps(y) + "\n")
PYEOF
n_txn=$(( $(wc -l < "$EVENTS") + 6000 ))

echo "== starting the embedded stack in $tmp"
"$SM" broker --bootstrap-file "$tmp/bootstrap" --topics \
    transactions:8,predictions.transactions:8,transactions.dlq:2,images:2,predictions.images:2,images.dlq:1,clickstream:2,predictions.clickstream:2,clickstream.dlq:1,clickstream.outcomes:2,monitoring:1,labels:2 \
    >"$tmp/broker.log" 2>&1 &
pids+=($!)
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no \
    >"$tmp/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/bootstrap" ] && redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
bs=$(cat "$tmp/bootstrap")
mport=$(free_port)
echo "   kafka (mock cluster): $bs    redis: 127.0.0.1:$rport"

# The mock cluster does not answer a waiting fetch when data arrives (a real
# broker does): a short fetch.wait.max.ms keeps the demo's latency honest.
echo "== starting streamml-transactions (monitoring on, /metrics on :$mport) and streamml-images"
"$BUILD/streamml-transactions" -b "$bs" -X redis.port="$rport" -X fetch.wait.max.ms=5 \
    -X monitor.baseline=models/credit_gbdt.baseline.json -X monitor.window.events=1000 \
    -X monitor.window.slices=4 -X metrics.port="$mport" --log-level info \
    >"$tmp/worker.log" 2>&1 &
wpid=$!
pids+=($wpid)
mkdir -p "$tmp/root" "$tmp/cam"
cp "$SAMPLES"/*.png "$SAMPLES"/*.jpg "$tmp/root/"
head -c 3000 "$SAMPLES/fundus_05_g0.jpg" > "$tmp/root/cut_off.jpg"
cp "$SAMPLES/events.jsonl" "$tmp/images.jsonl"
cat >>"$tmp/images.jsonl" <<'JSON'
{"image_id":"img-missing","patient_id":"p-90","uri":"not_here.png","event_time":1767225700000}
{"image_id":"img-escape","patient_id":"p-91","uri":"../../etc/passwd","event_time":1767225701000}
{"image_id":"img-cut","patient_id":"p-92","uri":"cut_off.jpg","event_time":1767225702000}
JSON
n_img=$(wc -l < "$tmp/images.jsonl")
"$BUILD/streamml-images" -b "$bs" -X images.root="$tmp/root" -X images.cam_dir="$tmp/cam" \
    -X fetch.wait.max.ms=5 --log-level info >"$tmp/images.log" 2>&1 &
ipid=$!
pids+=($ipid)

echo "== producing $n_txn credit events (sample, drifted segment, normal again; +1 garbage, +1 invalid)"
start=$(date +%s.%N)
"$SM" produce -b "$bs" -i "$tmp/sample.jsonl" --log-level warn
"$SM" produce -b "$bs" -i "$tmp/drift.jsonl" --log-level warn
"$SM" produce -b "$bs" -i "$tmp/again.jsonl" --log-level warn
echo 'not avro at all' | "$SM" produce -b "$bs" --raw --log-level warn
echo '{"event_id":"bad-1","user_id":"u-x","event_time":1700000000000,"amount":-250}' |
    "$SM" produce -b "$bs" --log-level warn
echo "== producing $n_img image references (+1 undecodable record)"
"$SM" produce -b "$bs" -t images --schema image_event -i "$tmp/images.jsonl" --log-level warn
echo 'not avro' | "$SM" produce -b "$bs" -t images --raw --log-level warn

echo "== waiting for $n_txn + $n_img predictions"
"$SM" consume -b "$bs" -t predictions.transactions -f -n "$n_txn" --log-level error \
    >"$tmp/predictions.jsonl" 2>/dev/null
end=$(date +%s.%N)
"$SM" consume -b "$bs" -t predictions.images -f -n "$n_img" --log-level error \
    >"$tmp/images_pred.jsonl" 2>/dev/null
"$SM" consume -b "$bs" -t transactions.dlq -f -e --log-level error >"$tmp/dlq.jsonl" 2>/dev/null
$PY -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$mport/metrics', timeout=5).read().decode())" \
    >"$tmp/metrics.txt" 2>/dev/null || echo "(metrics endpoint did not answer)" >"$tmp/metrics.txt"
kill -TERM "$wpid" "$ipid"; wait "$wpid" || true; wait "$ipid" || true
"$SM" alerts -b "$bs" -f -e --json --log-level error >"$tmp/alerts.jsonl" 2>/dev/null || true

$SHOW transactions "$tmp/predictions.jsonl" "$tmp/dlq.jsonl" "$start" "$end"
echo "   worker: $(grep -o 'summary: .*' "$tmp/worker.log" | head -1 | cut -c1-200)"
$SHOW images "$tmp/images_pred.jsonl" "$tmp/images.jsonl"
$SHOW alerts "$tmp/alerts.jsonl"
echo
echo "== /metrics of the transactions worker (excerpt)"
grep -E '^streamml_(events|predictions|dead_letters|degraded)_total|^streamml_monitor_status|^streamml_build_info' \
    "$tmp/metrics.txt" | head -12 | sed 's/^/   /'

echo
# The clickstream worker on the same broker and Redis (session recommendations).
BUILD="$BUILD" BOOTSTRAP="$bs" REDIS_PORT="$rport" tools/demo_clickstream.sh
echo "== stopping"
