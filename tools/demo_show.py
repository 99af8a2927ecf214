#!/usr/bin/python3
"""Readable tables for the demos (tools/demo.sh, tools/demo_images.sh).

  demo_show.py transactions PREDICTIONS.jsonl DLQ.jsonl START END
  demo_show.py images PREDICTIONS.jsonl EVENTS.jsonl
  demo_show.py alerts ALERTS.jsonl

Input files are what `streamml consume` / `streamml alerts --json` print.
"""
import collections
import json
import re
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.startswith("{")]


def transactions(pred_path, dlq_path, start, end):
    preds, dlq = load(pred_path), load(dlq_path)
    secs = float(end) - float(start)
    print("\n== a sample of credit-risk predictions (predictions.transactions)")
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
    print("\n== transactions summary")
    print(f"   {len(preds)} predictions in {secs:.2f} s end to end "
          f"({len(preds) / secs:,.0f} events/s, including producing them)")
    print("   decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(dec.items())))
    if lat:
        print(f"   in-worker latency p50 {lat[len(lat) // 2]} us, "
              f"p99 {lat[int(len(lat) * 0.99)]} us")
    print(f"   dead-lettered: {len(dlq)}; degraded: {sum(p['degraded'] for p in preds)}")


def images(pred_path, events_path):
    preds = load(pred_path)
    uri = {e["image_id"]: e["uri"] for e in load(events_path)}
    print("\n== graded images (predictions.images); true grade from the synthetic file name")
    print(f"{'image':<12} {'file':<18} {'true':>4} {'status':<10} {'grade':>5} {'E[grade]':>8} "
          f"{'P(>=2)':>7} {'refer':<5} {'agree':>5} CAM overlay / reason")
    ok = agree = 0
    for p in sorted(preds, key=lambda p: p["image_id"]):
        m = re.search(r"_g(\d)\.", uri[p["image_id"]])
        true = m.group(1) if m else "-"
        if p["status"] == "ok":
            ok += 1
            agree += true == str(p["grade"])
            print(f"{p['image_id']:<12} {uri[p['image_id']]:<18} {true:>4} {'ok':<10} "
                  f"{p['grade']:>5} {p['expected_grade']:8.2f} {p['referable_probability']:7.3f} "
                  f"{'yes' if p['referable'] else 'no':<5} {p.get('agreement', 1.0):5.2f} "
                  f"{p['cam_path'].split('/')[-1] or '-'}")
        else:
            # The detail already starts with the reason ("forbidden: ..."): once.
            why = p["detail"] if p["detail"].startswith(p["reason"] + ":") \
                else f"{p['reason']}: {p['detail']}"
            print(f"{p['image_id']:<12} {uri[p['image_id']][:18]:<18} {true:>4} "
                  f"{'ungradable':<10} {'':>5} {'':>8} {'':>7} {'':<5} {'':>5} {why[:70]}")
    lat = sorted(p["latency_us"] for p in preds)
    print(f"\n== {len(preds)} image predictions: {ok} graded ({agree} match the true grade), "
          f"{len(preds) - ok} ungradable; in-worker latency p50 "
          f"{lat[len(lat) // 2] / 1000:.1f} ms" if lat else "\n== no image predictions")


def alerts(path, show=16):
    rows = load(path)
    kinds = collections.Counter(f"{a.get('status_from')}->{a.get('status_to')}" for a in rows)
    print(f"\n== alerts on the monitoring topic: {len(rows)} transitions ("
          + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + f"); the first {show}:")
    for a in rows[:int(show)]:
        feat = f" {a['feature']}" if a.get("feature") else ""
        print(f"   {a.get('severity', '?'):<8} {a.get('worker', '?'):<12} "
              f"{a.get('alert_type', '?')}{feat}: observed {a.get('observed', float('nan')):.3f} "
              f"vs threshold {a.get('threshold', float('nan')):.3f} "
              f"({a.get('status_from', '?')} -> {a.get('status_to', '?')})")


if __name__ == "__main__":
    cmds = {"transactions": transactions, "images": images, "alerts": alerts}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
