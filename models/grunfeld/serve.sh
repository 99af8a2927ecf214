#!/bin/sh
# The "bring your own data" example served live (docs/features.md): a local
# broker (librdkafka's mock cluster) and redis-server on free ports, the
# events produced with the spec's own schema, the transactions worker
# serving grunfeld-v1 and the model train.py wrote, its predictions read
# back. Everything it starts is stopped by PID; its files are under a
# temporary directory, removed at the end.
#
#   models/grunfeld/serve.sh BUILD_DIR    (after models/grunfeld/train.py)
set -eu
B=${1:-build}
EX=$B/grunfeld
D=$(mktemp -d)
BROKER= REDIS= WORKER=
cleanup() {
    for p in $WORKER $BROKER $REDIS; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT INT TERM
"$B/streamml" broker --topics grunfeld:3,predictions.grunfeld:3,grunfeld.dlq:1 \
    --bootstrap-file "$D/bootstrap" > "$D/broker.log" 2>&1 &
BROKER=$!
PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save '' > "$D/redis.log" 2>&1 &
REDIS=$!
for _ in $(seq 100); do [ -s "$D/bootstrap" ] && break; sleep 0.1; done
HOSTS=$(cat "$D/bootstrap")
# 1. the events, framed with the spec's own schema, keyed by the entity
"$B/streamml" produce -b "$HOSTS" -t grunfeld --schema-file models/grunfeld/firm_year.avsc \
    --key firm -i "$EX/events.jsonl" --log-level error
# 2. the worker serving the spec and its model (no scorecard)
"$B/streamml-transactions" -b "$HOSTS" -X redis.port="$PORT" -X group.id=grunfeld \
    -X input.topic=grunfeld -X output.topic=predictions.grunfeld -X dlq.topic=grunfeld.dlq \
    -X features.spec=models/grunfeld/grunfeld-v1.yaml -X model.gbdt="$EX/grunfeld_gbdt.json" \
    -X model.scorecard= -X model.name=grunfeld --log-level warn > "$D/worker.log" 2>&1 &
WORKER=$!
# 3. its predictions: one per firm-year
N=$(wc -l < "$EX/events.jsonl")
for _ in $(seq 300); do
    GOT=$("$B/streamml" consume -b "$HOSTS" -t predictions.grunfeld -f -e --log-level error 2>/dev/null | wc -l)
    [ "$GOT" -ge "$N" ] && break
    sleep 0.2
done
"$B/streamml" consume -b "$HOSTS" -t predictions.grunfeld -f -e --log-level error 2>/dev/null > "$EX/predictions.jsonl"
kill "$WORKER"
wait "$WORKER" || true
WORKER=
echo "grunfeld served live: $(wc -l < "$EX/predictions.jsonl") of $N predictions in $EX/predictions.jsonl"
head -1 "$EX/predictions.jsonl"
[ "$(wc -l < "$EX/predictions.jsonl")" -eq "$N" ]
