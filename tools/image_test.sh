#!/bin/bash
# The image builds and runs for real (issue 22). Run by .ci/run after `make test`, and by
# `make image-test`; `make image` runs it with --build-only.
#
#   tools/image_test.sh [--build-only]
#
# 1. A container engine: used if one answers, else started with the shared script
#    (../shared/tools/container-engine.sh: dockerd + debian:12 base images made offline).
# 2. `docker build -t $IMAGE .` (IMAGE, default streamml:0.1.0).
# 3. On the host: the embedded broker (`streamml broker`) and a real redis-server on free
#    ports. From the image, with --network host: the transactions, clickstream and images
#    workers (images: the sample images mounted read-only as images.root). Checked: every
#    input gets a prediction, the container runs as uid 10001 (non-root), SIGTERM
#    (`docker stop`) drains and exits 0, a configuration error exits 2.
# 4. The compose profile "embedded" (broker, Redis and the transactions worker as
#    containers) brought up with docker-compose, checked the same way, taken down.
# Everything started here is stopped on exit; the engine is left running for later runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
IMAGE=${IMAGE:-streamml:0.1.0}
# ../shared/tools beside the clone (CI); from a git worktree, beside the main checkout.
ENGINE=${ENGINE_SCRIPT:-../shared/tools/container-engine.sh}
if [ ! -x "$ENGINE" ] && common=$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null); then
    [ -x "$(dirname "$common")/../shared/tools/container-engine.sh" ] &&
        ENGINE="$(dirname "$common")/../shared/tools/container-engine.sh"
fi
PY=/usr/bin/python3
SM="$BUILD/streamml"

say() { echo "image-test: $*"; }
die() { echo "image-test: FAIL: $*" >&2; exit 1; }

if ! docker info >/dev/null 2>&1; then
    [ -x "$ENGINE" ] || die "no container engine answers and $ENGINE is missing"
    say "starting the container engine ($ENGINE)"
    "$ENGINE"
fi
say "building $IMAGE"
start=$(date +%s)
docker build -q -t "$IMAGE" . >/dev/null
say "built in $(( $(date +%s) - start )) s: $(docker image inspect -f '{{.Size}}' "$IMAGE") bytes"
[ "${1:-}" = "--build-only" ] && exit 0

[ -x "$SM" ] || die "$SM missing (make all)"
tmp=$(mktemp -d /tmp/streamml-image-XXXXXX)
pids=()
names=()
composed=0
cleanup() {
    [ "$composed" = 1 ] && "${dc[@]}" down -v >/dev/null 2>&1
    for n in "${names[@]}"; do docker rm -f "$n" >/dev/null 2>&1 || true; done
    for ((i=${#pids[@]}-1; i>=0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
        wait "${pids[i]}" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Non-root, and a bad configuration is exit 2 from the image as on the host.
uid=$(docker run --rm "$IMAGE" id -u)
[ "$uid" = 10001 ] || die "the image runs as uid $uid, not 10001"
rc=0; docker run --rm "$IMAGE" streamml-transactions -X redis.port=99999 >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || die "a configuration error exited $rc from the image, not 2"
say "uid 10001; configuration error: exit 2"

"$SM" broker --bootstrap-file "$tmp/bs" --topics \
    transactions:2,predictions.transactions:2,transactions.dlq:1,clickstream:2,predictions.clickstream:2,clickstream.dlq:1,images:2,predictions.images:2,images.dlq:1,monitoring:1 \
    >"$tmp/broker.log" 2>&1 &
pids+=($!)
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no \
    >"$tmp/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/bs" ] && redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
bs=$(cat "$tmp/bs")
say "host broker $bs, redis 127.0.0.1:$rport"

# One worker from the image: start it, feed it, count its predictions, SIGTERM it.
run_worker() { # name program topic n extra-docker-args... -- extra-worker-args...
    local name=$1 prog=$2 topic=$3 n=$4; shift 4
    local dargs=() wargs=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do dargs+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    wargs=("$@")
    local cname="streamml-it-$name-$$"
    names+=("$cname")
    docker run -d --name "$cname" --network host "${dargs[@]}" "$IMAGE" \
        "$prog" -b "$bs" -X redis.port="$rport" -X fetch.wait.max.ms=5 "${wargs[@]}" >/dev/null
    local got
    got=$(timeout 120 "$SM" consume -b "$bs" -t "$topic" -f -n "$n" --log-level error 2>/dev/null |
          grep -c . || true)
    [ "$got" = "$n" ] || { docker logs "$cname" 2>&1 | tail -20; die "$name: $got of $n predictions"; }
    local cuid
    cuid=$(docker exec "$cname" id -u)
    [ "$cuid" = 10001 ] || die "$name runs as uid $cuid"
    docker stop --time 30 "$cname" >/dev/null
    local code
    code=$(docker wait "$cname")
    [ "$code" = 0 ] || { docker logs "$cname" 2>&1 | tail -20; die "$name exited $code after SIGTERM"; }
    # (captured first: grep -q closing the pipe early would fail it under pipefail)
    local logs
    logs=$(docker logs "$cname" 2>&1)
    grep -q "summary" <<<"$logs" || { tail -5 <<<"$logs"; die "$name logged no summary on SIGTERM"; }
    say "$name: $n predictions, uid 10001, SIGTERM drained, exit 0"
}

head -n 300 models/demo_events.jsonl >"$tmp/txn.jsonl"
"$SM" produce -b "$bs" -i "$tmp/txn.jsonl" --log-level warn >/dev/null
run_worker transactions streamml-transactions predictions.transactions 300

$PY - models/clickstream/sessions_heldout.jsonl >"$tmp/clicks.jsonl" <<'PYEOF'
import json, sys
sessions = [json.loads(l) for l in open(sys.argv[1])][:20]
t = 1_767_225_600_000
for s, items in enumerate(sessions):
    for j, item in enumerate(items):
        t += 500
        print(json.dumps({"event_id": f"s{s}-{j}", "session_id": f"s{s}", "user_id": None,
                          "item_id": item, "event_type": "view", "event_time": t}))
PYEOF
nclicks=$(wc -l <"$tmp/clicks.jsonl")
"$SM" produce -b "$bs" -t clickstream --schema click_event -i "$tmp/clicks.jsonl" --log-level warn >/dev/null
run_worker clickstream streamml-clickstream predictions.clickstream "$nclicks"

nimg=$(wc -l <models/images/samples/events.jsonl)
"$SM" produce -b "$bs" -t images --schema image_event -i models/images/samples/events.jsonl \
    --log-level warn >/dev/null
run_worker images streamml-images predictions.images "$nimg" \
    -v "$PWD/models/images/samples:/data/images:ro" -- -X images.root=/data/images
graded=$("$SM" consume -b "$bs" -t predictions.images -f -e --log-level error 2>/dev/null |
    $PY -c 'import json,sys; print(sum(json.loads(l).get("status") == "ok" for l in sys.stdin))')
[ "$graded" -gt 0 ] || die "images: no image graded (status ok)"
say "images: $graded of $nimg graded"

# The compose profile "embedded": broker and Redis as containers too (Redis built from the
# same Debian base by deploy/redis.Dockerfile), the transactions worker reading the broker's
# address from the shared volume.
if command -v docker-compose >/dev/null; then
    docker build -q -t streamml-redis:0.1.0 -f deploy/redis.Dockerfile . >/dev/null
    proj=smimage$$
    dc=(docker-compose -p "$proj" --env-file .env.example -f docker-compose.yml --profile embedded)
    composed=1
    STREAMML_IMAGE=$IMAGE "${dc[@]}" up -d --no-build embedded-broker embedded-redis \
        embedded-transactions >"$tmp/compose.log" 2>&1 || { cat "$tmp/compose.log"; die "compose up"; }
    bs2=$(docker exec "${proj}_embedded-broker_1" cat /run/streamml/bootstrap)
    "$SM" produce -b "$bs2" -i "$tmp/txn.jsonl" --log-level warn >/dev/null 2>&1
    got=$(timeout 120 "$SM" consume -b "$bs2" -t predictions.transactions -f -n 300 \
          --log-level error 2>/dev/null | grep -c . || true)
    [ "$got" = 300 ] || die "compose embedded: $got of 300 predictions"
    docker stop --time 30 "${proj}_embedded-transactions_1" >/dev/null
    code=$(docker wait "${proj}_embedded-transactions_1")
    [ "$code" = 0 ] || die "compose embedded: the worker exited $code after SIGTERM"
    "${dc[@]}" down -v >/dev/null 2>&1
    composed=0
    say "compose profile embedded: 300 predictions, SIGTERM exit 0"
fi
say "ok: transactions, clickstream and images workers from $IMAGE"
