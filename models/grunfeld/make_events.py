#!/usr/bin/env python3
"""Grunfeld investment panel (Debian python3-statsmodels) -> JSON lines events.

One event per firm and year, in year order (the order a stream would carry
them), with the schema firm_year.avsc. label = 1 when the firm's investment
is higher the next year, 0 when not, absent for its last year.

  python3 models/grunfeld/make_events.py > build/grunfeld/events.jsonl
"""
import calendar
import json
import sys

import statsmodels.api as sm


def main():
    d = sm.datasets.grunfeld.load_pandas().data
    rows = sorted(d.itertuples(index=False), key=lambda r: (r.year, r.firm))
    nxt = {(r.firm, int(r.year)): r.invest for r in rows}
    out = sys.stdout
    for r in rows:
        year = int(r.year)
        ev = {"firm": r.firm,
              "year_start": calendar.timegm((year, 1, 1, 0, 0, 0)) * 1000,
              "invest": float(r.invest), "value": float(r.value), "capital": float(r.capital)}
        if (r.firm, year + 1) in nxt:
            ev["label"] = int(nxt[(r.firm, year + 1)] > r.invest)
        out.write(json.dumps(ev) + "\n")


if __name__ == "__main__":
    main()
