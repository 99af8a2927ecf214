#!/bin/bash
# The images worker end to end on the embedded stack, self-contained (run it
# alone, or from tools/demo.sh): `streamml broker` (librdkafka mock cluster)
# on a free port in a temporary directory, streamml-images grading the sample
# fundus images of models/images/samples with a model set (the demo CNN,
# weight 0.7, and a second member at 128 px, models/images/fundus_cnn_b.onnx,
# weight 0.3: probabilities averaged, the members' agreement shown), plus
# three bad references (a missing file, a ".." escape, a truncated copy) and
# two photographs too poor to grade (models/images/samples/lowq: blurred and
# dark, refused by the worker's quality checks), then a table of the results
# with the CAM overlays' paths. Everything is stopped on exit, even on error.
#   KEEP=1 tools/demo_images.sh   keeps the temporary directory (CAM PNGs)
set -euo pipefail
BUILD=${BUILD:-build}
SAMPLES=${SAMPLES:-models/images/samples}
PY=/usr/bin/python3
SM="$BUILD/streamml"

tmp=$(mktemp -d /tmp/streamml-demo-images-XXXXXX)
pids=()
cleanup() {
    for ((i=${#pids[@]}-1; i>=0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
        wait "${pids[i]}" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ]; then echo "   kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT INT TERM

[ -f "$SAMPLES/events.jsonl" ] || { echo "demo_images: $SAMPLES/events.jsonl missing"; exit 1; }
[ -x "$BUILD/streamml-images" ] || { echo "demo_images: $BUILD/streamml-images missing (make)"; exit 1; }

echo "== images: starting the embedded broker in $tmp"
"$SM" broker --bootstrap-file "$tmp/bootstrap" --topics images:2,predictions.images:2,images.dlq:1 \
    >"$tmp/broker.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/bootstrap" ] && break; sleep 0.1; done
bs=$(cat "$tmp/bootstrap")
mkdir -p "$tmp/root" "$tmp/cam"
cp "$SAMPLES"/*.png "$SAMPLES"/*.jpg "$tmp/root/"
cp -r "$SAMPLES/lowq" "$tmp/root/"
head -c 3000 "$SAMPLES/fundus_05_g0.jpg" > "$tmp/root/cut_off.jpg"
cp "$SAMPLES/events.jsonl" "$tmp/events.jsonl"
cat >>"$tmp/events.jsonl" <<'JSON'
{"image_id":"img-missing","patient_id":"p-90","uri":"not_here.png","event_time":1767225700000}
{"image_id":"img-escape","patient_id":"p-91","uri":"../../etc/passwd","event_time":1767225701000}
{"image_id":"img-cut","patient_id":"p-92","uri":"cut_off.jpg","event_time":1767225702000}
{"image_id":"img-blurred","patient_id":"p-93","uri":"lowq/blurred.png","event_time":1767225703000}
{"image_id":"img-dark","patient_id":"p-94","uri":"lowq/dark.png","event_time":1767225704000}
JSON
n=$(wc -l < "$tmp/events.jsonl")

MODELS=models/images/fundus_cnn.onnx:0.7,models/images/fundus_cnn_b.onnx:0.3
echo "== starting streamml-images (model set $MODELS, CAM from fundus_cnn.onnx, batches of up to 8)"
"$BUILD/streamml-images" -b "$bs" -X images.root="$tmp/root" -X images.cam_dir="$tmp/cam" \
    -X images.models="$MODELS" -X images.cam_model=fundus_cnn.onnx \
    -X images.referable_threshold=0.9892 --log-level info >"$tmp/worker.log" 2>&1 &
wpid=$!
pids+=($wpid)

echo "== producing $n image events (+1 undecodable record)"
"$SM" produce -b "$bs" -t images --schema image_event -i "$tmp/events.jsonl" --log-level warn
echo 'not avro' | "$SM" produce -b "$bs" -t images --raw --log-level warn
"$SM" consume -b "$bs" -t predictions.images -f -n "$n" --log-level error \
    >"$tmp/predictions.jsonl" 2>/dev/null
kill -TERM "$wpid"; wait "$wpid" || true

$PY tools/demo_show.py images "$tmp/predictions.jsonl" "$tmp/events.jsonl"
echo "   worker: $(grep -o 'summary: [^"]*' "$tmp/worker.log" | head -1)"

# Image quality (issue 21): the limits of models/images/quality.json (from
# training images, `streamml quality`) refuse a blurred and a dark copy of a
# sample, and pass the sample itself.
echo "== image quality: a sample, and its blurred and dark copies, against models/images/quality.json"
"$SM" quality --limits models/images/quality.json "$SAMPLES/fundus_01_g1.png" \
    "$SAMPLES/lowq/blurred.png" "$SAMPLES/lowq/dark.png" | sed 's/^/   /' || true

# The same set offline, each member's own grade shown (streamml ensemble).
echo "== the model set offline: members' own grades last"
"$SM" ensemble --models "$MODELS" "$SAMPLES"/fundus_0[5-9]_*.jpg | sed 's/^/   /' || true

# A model set of different kinds: the demo CNN (weight 2) with the CAM test net
# (32 px, ImageNet normalisation; not trained on fundus images, so it shows
# the mechanics: its own geometry, the weighted mean, the agreement).
echo "== ensemble: fundus_cnn.onnx:2 + tests/fixtures/images/cam_net.onnx (members' own grades last)"
"$SM" ensemble --models models/images/fundus_cnn.onnx:2,tests/fixtures/images/cam_net.onnx \
    "$SAMPLES"/fundus_0[0-4]_*.png | sed 's/^/   /' || true
