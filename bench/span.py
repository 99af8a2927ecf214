#!/usr/bin/python3
"""Throughput and CPU per event over the span a worker was busy (bench/limits.sh).

  span.py sample OUT PID...   every 10 ms until SIGTERM: wall time and the
                              user+sys clock ticks of each PID -> OUT
  span.py report N META SAMPLES
                              META: `streamml consume --meta` of the N
                              predictions. The span runs from the first
                              prediction's Kafka timestamp to the last's
                              (set by the worker's producer), so the time
                              taken to start and join the group is left out,
                              and so is the measuring consumer's own start.
                              Prints: events/s, then per PID the CPU us/event
                              over the span (ticks sampled just before it
                              began and just after it ended).

Why sampled: a worker's CPU at the first prediction cannot be read after
the fact, and a consumer started to catch the first prediction starts late.
"""
import json
import os
import signal
import sys
import time

TCK = os.sysconf("SC_CLK_TCK")


def ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)


def sample(out, pids):
    run = [True]
    signal.signal(signal.SIGTERM, lambda *_: run.__setitem__(0, False))
    with open(out, "w") as f:
        while run[0]:
            t = [ticks(p) for p in pids]
            f.write(f"{time.time():.4f} " + " ".join("-" if v is None else str(v) for v in t) + "\n")
            f.flush()
            time.sleep(0.01)


def report(n, meta, samples):
    ts = [json.loads(line)["timestamp"] for line in open(meta) if line.strip()]
    if len(ts) < n:
        sys.exit(f"span.py: {meta} holds {len(ts)} predictions, expected {n}")
    t0, t1 = min(ts) / 1000, max(ts) / 1000
    rows = [line.split() for line in open(samples)]
    rows = [(float(r[0]), r[1:]) for r in rows]
    before = [r for r in rows if r[0] <= t0] or rows[:1]
    after = [r for r in rows if r[0] >= t1] or rows[-1:]
    a, b = before[-1][1], after[0][1]
    span = max(t1 - t0, 1e-3)
    cpu = []
    for x, y in zip(a, b):
        cpu.append("nan" if "-" in (x, y) else f"{(int(y) - int(x)) / TCK / n * 1e6:.2f}")
    print(round(n / span), *cpu)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "sample":
        sample(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) == 5 and sys.argv[1] == "report":
        report(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
