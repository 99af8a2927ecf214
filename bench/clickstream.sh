#!/bin/bash
# Clickstream worker: stage costs in process (bench_clickstream, exact and
# IVF) and one worker end to end on the embedded stack (broker + Redis)
# with the 100,000-item, hidden-128 model (make models-clickstream-bench-trained),
# once with clickstream.search=exact and once with IVF (the default). Events/s
# from the first to the N-th recommendation consumed, one run (the machine
# is shared). Figures, never pass/fail. Prints markdown.
# Environment: PROBE (ivf_probe, default 64), STAGES=0 / QUALITY=0 skip the in-process and
# click-eval parts, ONLY=ivf skips the exact end-to-end run. SOURCES=name:quota,... runs the
# workers with those candidate sources (clickstream.sources) and a catalogue of the 100,000
# items (500 categories, 10 regions, 16-value embeddings) plus 1,000 new items listed an hour
# before the clicks; 5% of the clicks are then cart events; with STAGES=1 bench_sources first
# prints the CPU time per click of those sources against the first release's, in process.
# OLD=DIR (a build directory of another version, holding its streamml-clickstream) runs that
# worker and this one alternately, PAIRS times (default 2), on the same topic: ratios from one run.
# Each row gives the worker's own CPU time per recommendation (user + system, Kafka and Redis
# clients included; its CPU until its first recommendation -- start-up and the first
# micro-batch -- left out, like the rate's first to N-th) and redis-server's, which a loaded
# machine inflates less than the wall clock. N must be large enough for the worker to be
# still running when its first recommendation is read (20,000: yes).
# WRAP="perf record -g -o FILE --" runs this build's worker under that command (profiling).
set -euo pipefail
BUILD=${BUILD:-build}
N=${N:-20000}
SESSIONS=${SESSIONS:-2000}
PY=/usr/bin/python3
SM="$BUILD/streamml"
MODEL=${MODEL:-"$BUILD/clickstream-bench-trained/gru4rec.onnx"}
HELDOUT="$BUILD/clickstream-bench-trained/sessions_heldout.jsonl"
tmp=$(mktemp -d /tmp/streamml-benchclick-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

[ -s "$MODEL" ] || make -s models-clickstream-bench-trained BUILD="$BUILD" >/dev/null 2>&1
if [ "${STAGES:-1}" = 1 ]; then
    echo "### Clickstream: stages in process"
    echo
    "$BUILD/bench/bench_clickstream" "$MODEL" 1024 "${PROBE:-32}"
    echo
    echo "### Clickstream: IVF quality against speed (held-out sessions of the trained model)"
    echo
    "$BUILD/bench/bench_ivf_recall" "$MODEL" "$HELDOUT" 0 8,16,32,64
    echo
fi

# N clicks over SESSIONS interleaved sessions, Zipf-ish items of the 100k catalog
$PY - "$N" "$SESSIONS" "${SOURCES:-}" > "$tmp/clicks.jsonl" <<'PYEOF'
import json, sys
import numpy as np
n, s, sources = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(1)
items = np.minimum(rng.zipf(1.2, n) - 1, 99999)
cart = rng.random(n) < (0.05 if sources else 0.0)
t = 1_767_225_600_000
for i in range(n):
    t += 100
    print(json.dumps({"event_id": f"c{i}", "session_id": f"s{(i * 7919) % s}", "user_id": None,
                      "item_id": int(items[i]), "event_type": "cart" if cart[i] else "view",
                      "event_time": t}))
PYEOF
catalog_args=()
if [ -n "${SOURCES:-}" ]; then
    $PY - > "$tmp/catalog.jsonl" <<'PYEOF'
import json
import numpy as np
rng = np.random.default_rng(2)
t = 1_767_225_600_000
for i in range(101000):
    print(json.dumps({"id": i, "category": f"c{i % 500}", "region": f"r{i % 10}",
                      "price": 10.0, "created": t - (3600000 if i >= 100000 else 86400000 * 365),
                      "embedding": [round(float(x), 3) for x in rng.normal(size=16)]},
                     separators=(",", ":")))
PYEOF
    catalog_args=(-X clickstream.sources="$SOURCES" -X clickstream.catalog="$tmp/catalog.jsonl"
                  -X clickstream.catalog_max_items=101000)
    if [ "${STAGES:-1}" = 1 ]; then
        echo "### Clickstream: candidate sources in process (CPU us per click, bench_sources)"
        echo
        "$BUILD/bench/bench_sources" "$MODEL" "$tmp/catalog.jsonl" "$SOURCES" 4000 2>/dev/null
        echo
    fi
fi

extra_topics=""
for p in $(seq "${PAIRS:-2}"); do extra_topics+=",predictions.ivf$p:8,predictions.ivf-old$p:8"; done
"$SM" broker --topics clickstream:8,predictions.exact:8,predictions.ivf:8,clickstream.dlq:1,heldout:3$extra_topics \
    --bootstrap-file "$tmp/bs" >"$tmp/broker.log" 2>&1 &
pids+=($!)
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/bs" ] && redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
bs=$(cat "$tmp/bs")
"$SM" produce -b "$bs" -t clickstream --schema click_event -i "$tmp/clicks.jsonl" --log-level error 2>/dev/null
# One worker run on the preloaded topic under its own group: recs/s from the
# first to the N-th prediction, the in-worker latency, the worker's summary.
redis_cpu() { redis-cli -p "$rport" info cpu | $PY -c '
import sys
d = dict(l.strip().split(":", 1) for l in sys.stdin if ":" in l)
print(float(d["used_cpu_user"]) + float(d["used_cpu_sys"]))'; }
run_worker() { # name, extra -X args... (WBUILD: the build whose worker runs)
    local name=$1; shift
    local wb=${WBUILD:-$BUILD} r0
    r0=$(redis_cpu)
    ${WRAP_NOW:-} /usr/bin/time -f "%U %S" -o "$tmp/cpu-$name" \
    "$wb/streamml-clickstream" -b "$bs" -X redis.port="$rport" -X clickstream.model="$MODEL" \
        -X kafka.group.id="bench-$name" -X output.topic="predictions.$name" \
        -X worker.max_messages="$N" ${catalog_args[@]+"${catalog_args[@]}"} "$@" \
        --log-level info 2>"$tmp/worker-$name.log" &
    local wpid=$!; pids+=($wpid)
    "$SM" consume -b "$bs" -t "predictions.$name" -f -n 1 --log-level error >/dev/null 2>&1
    local t0 t1 c0
    # the worker's CPU seconds until its first recommendation (start-up: the model, the IVF
    # index, the catalogue), left out of its CPU per recommendation
    c0=$($PY - "$wpid" <<'PYEOF'
import os, sys
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
def kids(pid):
    try:
        return [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []
p, todo, tot = int(sys.argv[1]), [int(sys.argv[1])], 0.0
while todo:  # /usr/bin/time (and a WRAP) and the worker under them
    q = todo.pop()
    if q != p:
        try:
            tot += cpu(q)
        except OSError:
            pass
    todo += kids(q)
print(tot)
PYEOF
)
    t0=$(date +%s.%N)
    "$SM" consume -b "$bs" -t "predictions.$name" -f -n "$N" --log-level error >"$tmp/preds-$name.jsonl" 2>/dev/null
    t1=$(date +%s.%N)
    wait "$wpid" || true
    rate=$($PY -c "print(round($N/($t1-$t0)))")
    cpu=$($PY -c "u, s = open('$tmp/cpu-$name').read().split()[-2:]; print(round((float(u) + float(s) - $c0) * 1e6 / $N))")
    rcpu=$($PY -c "print(round(($(redis_cpu) - $r0) * 1e6 / $N, 1))")
    lat=$($PY - "$tmp/preds-$name.jsonl" <<'PYEOF'
import json, sys
import numpy as np
l = np.array([json.loads(x)["latency_us"] for x in open(sys.argv[1]) if x.startswith("{")])
print(f"{np.median(l)/1000:.1f} ms median, {np.percentile(l, 99)/1000:.1f} ms p99")
PYEOF
)
    echo "| $name | $rate | $lat | $cpu | $rcpu | $(cut -d' ' -f1 /proc/loadavg) |"
}

echo "### Clickstream: one worker end to end"
echo
echo "$N clicks, $SESSIONS sessions, 100,000 items, hidden 128 (make models-clickstream-bench-trained),"
echo "worker.batch_size 1000, one BLAS"
echo "thread, Redis state + co-visitation + trending; each run its own group, output topic and"
echo "Redis key prefix on the same preloaded topic; clickstream.score_batch 1024 (the default)."
echo "exact: clickstream.search=exact; ivf: the default search (ivf_lists 0 = 316, ivf_probe ${PROBE:-64}):"
echo
echo "| search | recommendations/s (first to N-th) | in-worker latency (decode to produce) | worker CPU us/rec | redis-server CPU us/rec | load after |"
echo "|---|---:|---|---:|---:|---:|"
[ "${ONLY:-}" = ivf ] || run_worker exact -X redis.prefix=exact: -X clickstream.search=exact
ivf_args=(-X clickstream.search=ivf -X clickstream.ivf_probe="${PROBE:-64}")
names=($([ "${ONLY:-}" = ivf ] || echo exact))
if [ -n "${OLD:-}" ]; then
    for p in $(seq "${PAIRS:-2}"); do
        WRAP_NOW=${WRAP:-} run_worker "ivf$p" -X redis.prefix="ivf$p:" "${ivf_args[@]}"
        WBUILD=$OLD run_worker "ivf-old$p" -X redis.prefix="ivf-old$p:" "${ivf_args[@]}"
        names+=("ivf$p" "ivf-old$p")
    done
else
    WRAP_NOW=${WRAP:-} run_worker ivf -X redis.prefix=ivf: "${ivf_args[@]}"
    names+=(ivf)
fi
echo
for name in "${names[@]}"; do
    grep -o 'summary: .*\|counts: .*\|catalogue: .*' "$tmp/worker-$name.log" | sed 's/"}$//; s/^/    '"$name"': /'
    grep -o 'IVF search: [^"]*' "$tmp/worker-$name.log" | sed 's/^/    /' || true
done

if [ "${QUALITY:-1}" = 1 ]; then
    # The trained model's held-out sessions replayed by click-eval: Recall@20 / MRR@20 of the
    # GRU exact and through IVF at several probes, against popularity.
    $PY - "$HELDOUT" > "$tmp/heldout.jsonl" <<'PYEOF'
import json, sys
t, i = 1_767_225_600_000, 0
for s, line in enumerate(open(sys.argv[1])):
    for it in json.loads(line):
        t += 100
        i += 1
        print(json.dumps({"event_id": f"h{i}", "session_id": f"h{s}", "user_id": None,
                          "item_id": it, "event_type": "view", "event_time": t}))
PYEOF
    "$SM" produce -b "$bs" -t heldout --schema click_event -i "$tmp/heldout.jsonl" --log-level error 2>/dev/null
    echo
    echo "### Clickstream: quality through IVF (click-eval, held-out sessions of the trained model)"
    echo
    echo "| probe | IVF / exact top-20 overlap | GRU exact Recall@20 / MRR@20 | GRU IVF Recall@20 / MRR@20 | popularity Recall@20 / MRR@20 |"
    echo "|---:|---:|---|---|---|"
    for p in 16 32 64; do
        "$SM" click-eval -b "$bs" -t heldout -m "$MODEL" --search ivf -X clickstream.ivf_probe=$p \
            --log-level warn 2>/dev/null | $PY -c '
import json, sys
r = json.loads(sys.stdin.readline())
f = lambda o: "%.3f / %.3f" % (o["recall"], o["mrr"])
print("| %d | %.3f | %s | %s | %s |" % (r["ivf"]["probe"], r["ivf"]["overlap"], f(r["gru"]), f(r["gru_ivf"]), f(r["popularity"])))'
    done
fi
