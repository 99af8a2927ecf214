#!/bin/bash
# The clickstream worker end to end on the embedded stack, self-contained (run
# it alone, or from tools/demo.sh): `streamml broker` and redis-server on free
# ports in a temporary directory, streamml-clickstream answering the clicks of
# 30 held-out synthetic sessions (models/clickstream/sessions_heldout.jsonl),
# one session that starts with unknown item ids, and one undecodable record;
# then a few recommendations and how often the session's next click was among
# the 10 items shown. Everything is stopped on exit, even on error.
set -euo pipefail
BUILD=${BUILD:-build}
PY=/usr/bin/python3
SM="$BUILD/streamml"
SESS=models/clickstream/sessions_heldout.jsonl

tmp=$(mktemp -d /tmp/streamml-demo-click-XXXXXX)
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

[ -x "$BUILD/streamml-clickstream" ] || { echo "demo_clickstream: $BUILD/streamml-clickstream missing (make)"; exit 1; }
if [ -n "${BOOTSTRAP:-}" ] && [ -n "${REDIS_PORT:-}" ]; then
    # Called by tools/demo.sh: its broker (with the clickstream topics) and Redis.
    bs=$BOOTSTRAP; rport=$REDIS_PORT
    echo "== clickstream: on the demo's stack (kafka $bs, redis 127.0.0.1:$rport)"
else
    echo "== clickstream: starting the embedded broker and Redis in $tmp"
    "$SM" broker --bootstrap-file "$tmp/bootstrap" \
        --topics clickstream:2,predictions.clickstream:2,clickstream.dlq:1 >"$tmp/broker.log" 2>&1 &
    pids+=($!)
    rport=$(free_port)
    redis-server --port "$rport" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do [ -s "$tmp/bootstrap" ] && redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    bs=$(cat "$tmp/bootstrap")
fi

$PY - "$SESS" > "$tmp/clicks.jsonl" <<'PYEOF'
import json, sys
sessions = [json.loads(l) for l in open(sys.argv[1])][:30]
sessions.append([900001, 900002, 17, 18])          # starts with unknown items
t = 1_767_225_600_000
for j in range(max(map(len, sessions))):            # interleaved, as a shop's stream is
    for s, items in enumerate(sessions):
        if j < len(items):
            t += 500
            print(json.dumps({"event_id": f"s{s}-{j}", "session_id": f"s{s}", "user_id": None,
                              "item_id": items[j], "event_type": "view", "event_time": t}))
PYEOF
n=$(wc -l < "$tmp/clicks.jsonl")
echo "== starting streamml-clickstream (models/clickstream/gru4rec.onnx, epsilon 0.05)"
"$BUILD/streamml-clickstream" -b "$bs" -X redis.port="$rport" --log-level info >"$tmp/worker.log" 2>&1 &
wpid=$!
pids+=($wpid)
echo "== producing $n clicks (+1 undecodable record)"
"$SM" produce -b "$bs" -t clickstream --schema click_event -i "$tmp/clicks.jsonl" --log-level warn
echo 'not avro' | "$SM" produce -b "$bs" -t clickstream --raw --log-level warn
"$SM" consume -b "$bs" -t predictions.clickstream -f -n "$n" --log-level error \
    >"$tmp/predictions.jsonl" 2>/dev/null
kill -TERM "$wpid"; wait "$wpid" || true

$PY - "$tmp/predictions.jsonl" "$tmp/clicks.jsonl" <<'PYEOF'
import json, sys
preds = {p["event_id"]: p for p in (json.loads(l) for l in open(sys.argv[1]) if l.startswith("{"))}
clicks = [json.loads(l) for l in open(sys.argv[2])]
nxt = {}
for c in clicks:
    s, j = c["event_id"][1:].split("-")
    nxt[(s, int(j))] = c["item_id"]
print("\n== some recommendations (first 5 of 10 shown: item/source)")
for eid in ["s0-0", "s0-1", "s0-2", "s30-0", "s30-1", "s30-2"]:
    p = preds[eid]
    shown = " ".join(f"{i['item_id']}/{i['source'][:3]}" for i in p["items"][:5])
    flags = ",".join(k for k in ("cold_start", "unknown_item", "degraded") if p[k]) or "-"
    print(f"   {eid:<7} clicked {next(c['item_id'] for c in clicks if c['event_id'] == eid):>6}  "
          f"[{flags}]  {shown}")
hits = total = 0
for (s, j), item in nxt.items():
    if (s, j + 1) in nxt and s != "30":
        total += 1
        hits += nxt[(s, j + 1)] in [i["item_id"] for i in preds[f"s{s}-{j}"]["items"]]
lat = sorted(p["latency_us"] for p in preds.values())
print(f"\n== {len(preds)} recommendations; the next click was among the 10 shown for "
      f"{hits} of {total} clicks ({100 * hits / max(total, 1):.0f}%; MMR and exploration "
      f"trade some of it for diversity); in-worker latency p50 {lat[len(lat)//2] / 1000:.1f} ms")
PYEOF
echo "   worker: $(grep -o 'summary: [^"]*' "$tmp/worker.log" | head -1)"
