#!/bin/bash
# make bench-images: figures, never pass/fail. Per-stage ms/image of the
# images pipeline (demo model, median of 21), then one streamml-images
# process end to end on the embedded broker: N preloaded image events (the
# ten samples, repeated), images/s between the first and the last prediction produced
# with and without CAM overlay PNGs (from the predictions' produce
# timestamps); then the worker's images/s (CAM grid
# only, defaults) against the ONNX runtime's own images/s for the model
# (forward passes of 8 on one thread), and, with OLD_BUILD set (a build
# directory of the code before, e.g. main's), the old worker's too,
# alternated REPS times in this one run: medians, ratios, the load, and the
# CPU ms per image of each of the worker's threads (the forward thread, the
# decode thread, librdkafka's), which do not depend on the load.
# RATIO_ONLY=1 skips the stage and end-to-end tables.
set -euo pipefail
BUILD=${BUILD:-build}
N=${N:-400}
OLD_BUILD=${OLD_BUILD:-}
REPS=${REPS:-3}
SM="$BUILD/streamml"
MODEL=models/images/fundus_cnn.onnx
SAMPLES=models/images/samples
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh" bench-images # $tmp, pids, $PY

echo "$(date -u +%Y-%m-%d), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
if [ -z "${RATIO_ONLY:-}" ]; then
    echo
    echo "| stage (demo model, 112x112 input) | median ms/image | min | max |"
    echo "|---|---:|---:|---:|"
    "$BUILD/bench/bench_images" "$MODEL" "$SAMPLES"
fi

$PY - "$N" "$SAMPLES" > "$tmp/events.jsonl" <<'PYEOF'
import json, os, sys
n, d = int(sys.argv[1]), sys.argv[2]
files = sorted(f for f in os.listdir(d) if f.endswith((".png", ".jpg")))
for i in range(n):
    print(json.dumps({"image_id": f"b{i}", "patient_id": f"p{i % 50}",
                      "uri": files[i % len(files)], "event_time": 1767225600000 + i}))
PYEOF

# One worker over N preloaded events: images/s between the first prediction produced and
# the N-th (excludes the group's initial rebalance). $1: CAM PNG dir or "";
# $2: images.decode_thread. Sets rate, graded, passes, cpu.
run_worker() {
    local cam=$1 dt=$2 bs wpid bpid t0 t1
    mkdir -p "$tmp/cam"
    "$SM" broker --topics images:4,predictions.images:4,images.dlq:1 \
        --bootstrap-file "$tmp/bs" >"$tmp/broker.log" 2>&1 &
    bpid=$!; pids+=($bpid)
    for _ in $(seq 100); do [ -s "$tmp/bs" ] && break; sleep 0.1; done
    bs=$(cat "$tmp/bs")
    "$SM" produce -b "$bs" -t images --schema image_event -i "$tmp/events.jsonl" --log-level error 2>/dev/null
    "${WBUILD:-$BUILD}/streamml-images" -b "$bs" -X images.root="$SAMPLES" -X images.cam_dir="$cam" ${EXTRA:-} \
        -X images.decode_thread="$dt" --log-level info 2>"$tmp/worker.log" &
    wpid=$!; pids+=($wpid)
    "$SM" consume -b "$bs" -t predictions.images -f -n "$N" --meta --log-level error \
        >"$tmp/preds.jsonl" 2>/dev/null
    cpu=$(awk '{print ($14+$15)/100}' /proc/$wpid/stat)
    # CPU ms per image of each thread kind: the worker's own (forward
    # passes, Avro, produce), img-decode (load, checks, resize), rdk:*
    threads=$($PY - "$wpid" "$N" <<'PYEOF'
import os, sys
pid, n = sys.argv[1], int(sys.argv[2])
hz = os.sysconf("SC_CLK_TCK")
kinds = {"main": 0.0, "decode": 0.0, "kafka": 0.0}
for t in os.listdir(f"/proc/{pid}/task"):
    try:
        st = open(f"/proc/{pid}/task/{t}/stat").read()
    except OSError:
        continue
    comm = st[st.index("(") + 1:st.rindex(")")]
    f = st[st.rindex(")") + 2:].split()
    ms = (int(f[11]) + int(f[12])) * 1000.0 / hz
    k = "decode" if comm == "img-decode" else "kafka" if comm.startswith("rdk:") else "main"
    kinds[k] += ms
print(" ".join(f"{kinds[k] / n:.2f}" for k in ("main", "decode", "kafka")))
PYEOF
)
    kill "$wpid" "$bpid"; wait "$wpid" "$bpid" 2>/dev/null || true
    rm -f "$tmp/bs"
    graded=$(grep -o '[0-9]* graded' "$tmp/worker.log" | cut -d' ' -f1)
    passes=$(grep -o '([0-9.]* images each)' "$tmp/worker.log" | tr -d '()' | cut -d' ' -f1)
    # the predictions' own produce timestamps: the images graded after the
    # first produce over the time to the last one (neither the consumer's
    # start nor the group's first rebalance counts)
    rate=$($PY -c "
import json, sys
ts = [json.loads(l)['timestamp'] for l in open(sys.argv[1])]
t0, t1 = min(ts), max(ts)
print(round(sum(t > t0 for t in ts) / max(t1 - t0, 1) * 1000))" "$tmp/preds.jsonl")
}
median() { $PY -c "import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

# RATIO_ONLY=1: only the rounds against the runtime below
[ -n "${RATIO_ONLY:-}" ] || echo
[ -n "${RATIO_ONLY:-}" ] || echo "| end to end, $N preloaded events, one worker | images/s | graded | images per pass | worker CPU s (incl. start-up) |"
[ -n "${RATIO_ONLY:-}" ] || echo "|---|---:|---:|---:|---:|"
[ -n "${RATIO_ONLY:-}" ] || for cam in "$tmp/cam" ""; do
    run_worker "$cam" 1
    echo "| $([ -n "$cam" ] && echo "with CAM overlay PNGs" || echo "CAM grid only, no PNGs") | $rate | $graded | $passes | $cpu |"
done

echo
echo "worker vs the ONNX runtime alone ($REPS rounds alternated, load $(cut -d' ' -f1 /proc/loadavg) at start, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-unset} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-unset})"
echo "input mix: the ten samples in turn (5 PNG + 5 JPEG, 224x224, grades 0-4 twice: 60% referable, each with its CAM grid; no overlay PNGs)"
echo "CPU ms per image (incl. start-up): forward thread (passes, Avro, produce) / decode thread (load, checks, resize) / librdkafka (an old build's unnamed decode thread counts as the forward thread)"
rt=(); wn=(); wo=()
for r in $(seq "$REPS"); do
    rt+=("$("$BUILD/bench/bench_images" "$MODEL" "$SAMPLES" --forward-only)")
    run_worker "" 1; wn+=("$rate"); pn=$passes; tn=$threads
    line="  round $r: runtime ${rt[-1]} images/s, worker ${wn[-1]} ($($PY -c "print(f'{${wn[-1]}/${rt[-1]}:.2f}')") of the runtime; $pn per pass; CPU ms/image ${tn// / \/ })"
    if [ -n "$OLD_BUILD" ]; then
        WBUILD=$OLD_BUILD run_worker "" 1; wo+=("$rate")
        line="$line, old worker ${wo[-1]} ($($PY -c "print(f'{${wo[-1]}/${rt[-1]}:.2f}')"); $passes per pass; CPU ms/image ${threads// / \/ })"
    fi
    echo "$line, load $(cut -d' ' -f1 /proc/loadavg)"
done
mrt=$(median "${rt[@]}"); mn=$(median "${wn[@]}")
echo
echo "| median of $REPS | images/s | / runtime |"
echo "|---|---:|---:|"
echo "| ONNX runtime alone (forward passes of 8, one thread) | $mrt | 1.00 |"
echo "| worker (defaults: images.take=8, the next take decoded during this one's passes) | $mn | $($PY -c "print(f'{$mn/$mrt:.2f}')") |"
if [ -n "$OLD_BUILD" ]; then
    mo=$(median "${wo[@]}")
    echo "| old worker ($OLD_BUILD) | $mo | $($PY -c "print(f'{$mo/$mrt:.2f}')") |"
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
