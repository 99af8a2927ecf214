#!/bin/bash
# The clickstream worker end to end on the embedded stack, self-contained (run
# it alone, or from tools/demo.sh): `streamml broker` and redis-server on free
# ports in a temporary directory, streamml-clickstream answering the clicks of
# 30 held-out synthetic sessions (models/clickstream/sessions_heldout.jsonl),
# one session that starts with unknown item ids, and one undecodable record;
# then a few recommendations and how often the session's next click was among
# the 10 items shown. The sessions' users are in an experiment of two arms
# (control: MMR lambda_diversity 0.5, epsilon 0.05; explore: 0.8, 0.2 and the
# second-stage ranker models/clickstream/ranker.onnx, sticky per user); after the recommendations each session acts on some shown items
# (views, carts, purchases with a price), the worker joins those outcomes to
# the recommendations that led to them (clickstream.outcomes), and `streamml
# abtest --outcome-records` prints CTR, add-to-cart rate, conversion and
# revenue per user per arm. Everything is stopped on exit, even on error.
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
        --topics clickstream:2,predictions.clickstream:2,clickstream.dlq:1,clickstream.outcomes:2 >"$tmp/broker.log" 2>&1 &
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
            print(json.dumps({"event_id": f"s{s}-{j}", "session_id": f"s{s}", "user_id": f"u{s}",
                              "item_id": items[j], "event_type": "view", "event_time": t}))
PYEOF
n=$(wc -l < "$tmp/clicks.jsonl")
echo "== starting streamml-clickstream (models/clickstream/gru4rec.onnx; experiment demo-arms: control 50%, explore 50% with the ranker)"
"$BUILD/streamml-clickstream" -b "$bs" -X redis.port="$rport" --log-level info \
    -X experiment.id=demo-arms -X experiment.variants=control:-:0.5,explore:-:0.5 \
    -X clickstream.arms=explore:epsilon=0.2:lambda_diversity=0.8:ranker=models/clickstream/ranker.onnx \
    -X clickstream.outcomes_topic=clickstream.outcomes -X worker.idle_exit_ms=0 \
    >"$tmp/worker.log" 2>&1 &
wpid=$!
pids+=($wpid)
echo "== producing $n clicks (+1 undecodable record)"
"$SM" produce -b "$bs" -t clickstream --schema click_event -i "$tmp/clicks.jsonl" --log-level warn
echo 'not avro' | "$SM" produce -b "$bs" -t clickstream --raw --log-level warn
"$SM" consume -b "$bs" -t predictions.clickstream -f -n "$n" --log-level error \
    >"$tmp/predictions.jsonl" 2>/dev/null

# What the users then do: per session, views of some shown items, a cart and
# sometimes a purchase (price from the item id), within the outcome horizon.
$PY - "$tmp/predictions.jsonl" > "$tmp/actions.jsonl" <<'PYEOF'
import json, random, sys
random.seed(20)
preds = {p["event_id"]: p for p in (json.loads(l) for l in open(sys.argv[1]) if l.startswith("{"))}
last = {}
for eid, p in preds.items():
    s, j = eid.split("-")
    if s != "s30" and (s not in last or int(j) > int(last[s].split("-")[1])):
        last[s] = eid
t = 1_767_226_000_000
for s, eid in sorted(last.items()):
    items = [i["item_id"] for i in preds[eid]["items"]]
    acts = []
    for k, it in enumerate(items):
        if random.random() < 0.35 / (1 + k / 3):
            acts.append((it, "view", 0.0))
            if random.random() < 0.5:
                acts.append((it, "cart", 0.0))
                if random.random() < 0.6:
                    acts.append((it, "purchase", round(5 + (it % 50) * 1.5, 2)))
    for n, (it, ty, price) in enumerate(acts):
        t += 300
        print(json.dumps({"event_id": f"{s}-a{n}", "session_id": s, "user_id": f"u{s[1:]}",
                          "item_id": it, "event_type": ty, "event_time": t, "price": price}))
PYEOF
na=$(wc -l < "$tmp/actions.jsonl")
echo "== producing $na follow-up events (views, carts, purchases of shown items)"
"$SM" produce -b "$bs" -t clickstream --schema click_event -i "$tmp/actions.jsonl" --log-level warn
"$SM" consume -b "$bs" -t predictions.clickstream -f -n $((n + na)) --log-level error >/dev/null 2>&1
sleep 1
kill -TERM "$wpid"; wait "$wpid" || true
"$SM" consume -b "$bs" -t clickstream.outcomes -f -e --log-level error >"$tmp/outcomes.jsonl" 2>/dev/null

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
echo "   worker: $(grep -o 'outcomes: [0-9][^"]*' "$tmp/worker.log" | head -1)"
echo "   worker: $(grep -o 'ranker models[^"]*clicks re-ranked[^"]*' "$tmp/worker.log" | head -1)"
echo
echo "== streamml abtest --outcome-records (the outcome records of clickstream.outcomes)"
"$SM" abtest --outcome-records "$tmp/outcomes.jsonl" --control control
