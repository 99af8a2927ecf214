#!/usr/bin/python3
"""The Python peer of streamml-transactions, for timing only (make bench).

A transactions worker written the way a competent user writes one with
Debian's python3-confluent-kafka, python3-avro, python3-redis and
python3-xgboost: batched consume, Avro decode, per-user state read and
written pipelined in Redis (HMGET, then EVALSHA of the same offset-checking
script as the C worker), the txn-v1 features with their 1 h / 24 h / 30 d
bucketed windows, vectorised xgboost inplace_predict on the same model file,
the scorecard vectorised with numpy, Avro encode, produce, then commit.

It is NOT a second implementation of the features for production: the one
implementation is common/streams/features.c. It does the same work so that its CPU
and throughput can be compared; its outputs are not checked against the C
worker's (late events, for one, are handled more simply here).

usage: peer_transactions.py BOOTSTRAP REDIS_PORT MODEL.json SCORECARD.json N
Runs until SIGTERM, like the worker (the harness samples its CPU from /proc
while it runs); after N input events it prints seconds and CPU seconds.
"""
import hashlib
import io
import json
import math
import resource
import signal
import struct
import sys
import time
from datetime import datetime, timedelta, timezone

import avro.io
import avro.schema
import numpy as np
import redis
import xgboost as xgb
from confluent_kafka import Consumer, Producer

BATCH = 1000
IN_TOPIC, OUT_TOPIC, DLQ_TOPIC = "transactions", "predictions.transactions", "transactions.dlq"
EVENT_ID, PRED_ID = 1, 2
TTL_MS = 3024000 * 1000
EPOCH, MS = datetime(1970, 1, 1, tzinfo=timezone.utc), timedelta(milliseconds=1)
NAMES = ["debt_to_income", "loan_to_income", "monthly_payment_ratio", "expense_ratio",
         "loan_to_value", "credit_utilization", "available_credit", "payment_history_score",
         "delinquency_rate", "avg_account_age", "credit_history_length", "recent_inquiries_ratio",
         "new_accounts_ratio", "has_bankruptcy", "has_collections", "high_utilization",
         "has_records", "seniority_years", "age", "term_months", "income", "expenses", "assets",
         "debt", "amount", "price", "home_code", "marital_code", "job_code", "txn_count_1h",
         "txn_sum_1h", "txn_count_24h", "txn_sum_24h", "txn_count_30d", "txn_sum_30d",
         "secs_since_prev", "amount_zscore"]
HOME = {"rent": 1, "owner": 2, "parents": 3, "priv": 4, "ignore": 5, "other": 6}
MARITAL = {"single": 1, "married": 2, "widow": 3, "separated": 4, "divorced": 5}
JOB = {"fixed": 1, "freelance": 2, "partime": 3, "others": 4}
RINGS = ((300_000, 12), (3_600_000, 24), (86_400_000, 30))  # 5 min, 1 h, 1 day buckets
PUT_SCRIPT = """local cur = redis.call('HMGET', KEYS[1], 'p', 'o')
local p, o = tonumber(ARGV[2]), tonumber(ARGV[3])
if cur[1] and cur[2] and tonumber(cur[1]) == p and tonumber(cur[2]) >= o then
  return 0
end
redis.call('HSET', KEYS[1], 's', ARGV[1], 'p', ARGV[2], 'o', ARGV[3])
local ttl = tonumber(ARGV[4])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
local a = tonumber(redis.call('GET', KEYS[2]))
if not a or o > a then redis.call('SET', KEYS[2], ARGV[3]) end
return 1
"""


def col(evs, name):
    return np.array([np.nan if e.get(name) is None else e[name] for e in evs], dtype=np.float64)


def ratio(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        r = a / b
    r[b == 0] = np.nan
    return r


def static_features(evs, X):
    """Columns 0..28 for the whole batch at once (numpy)."""
    c = {n: col(evs, n) for n in ("amount", "income", "expenses", "assets", "debt", "price",
                                  "term_months", "seniority_years", "age", "credit_limit",
                                  "credit_used", "payments_on_time", "payments_late",
                                  "inquiries_6m", "accounts_open", "accounts_opened_12m",
                                  "bankruptcies", "collections", "oldest_account_months",
                                  "avg_account_age_months")}
    paid = c["payments_on_time"] + c["payments_late"]
    util = ratio(c["credit_used"], c["credit_limit"])
    with np.errstate(invalid="ignore"):
        X[:, 0] = ratio(c["debt"], c["income"])
        X[:, 1] = ratio(c["amount"], c["income"])
        X[:, 2] = ratio(ratio(c["amount"], c["term_months"]), c["income"])
        X[:, 3] = ratio(c["expenses"], c["income"])
        X[:, 4] = ratio(c["amount"], c["price"])
        X[:, 5] = util
        X[:, 6] = c["credit_limit"] - c["credit_used"]
        X[:, 7] = ratio(c["payments_on_time"], paid)
        X[:, 8] = ratio(c["payments_late"], paid)
        X[:, 9] = c["avg_account_age_months"]
        X[:, 10] = c["oldest_account_months"]
        X[:, 11] = c["inquiries_6m"] / (c["accounts_open"] + 1)
        X[:, 12] = ratio(c["accounts_opened_12m"], c["accounts_open"])
        X[:, 13] = np.where(np.isnan(c["bankruptcies"]), np.nan, c["bankruptcies"] > 0)
        X[:, 14] = np.where(np.isnan(c["collections"]), np.nan, c["collections"] > 0)
        X[:, 15] = np.where(np.isnan(util), np.nan, util > 0.7)
    X[:, 16] = [np.nan if e.get("past_records") is None else float(e["past_records"]) for e in evs]
    for j, n in enumerate(("seniority_years", "age", "term_months", "income", "expenses",
                           "assets", "debt", "amount", "price")):
        X[:, 17 + j] = c[n]
    for j, (n, codes) in enumerate((("home", HOME), ("marital", MARITAL), ("job", JOB))):
        X[:, 26 + j] = [np.nan if not e.get(n) else codes.get(e[n].lower(), 0) for e in evs]


def new_state():
    return {"last": 0, "n": 0, "mean": 0.0, "m2": 0.0, "rings": [{}, {}, {}]}


def window_step(st, ev, x):
    """Columns 29..36 from the state before ev, then ev applied to st."""
    t, amt = ev["t_ms"], ev.get("amount")
    a = 0.0 if amt is None else amt
    for k, (width, n) in enumerate(RINGS):
        b, ring = t // width, st["rings"][k]
        cnt, tot = 1, a
        for bid, (bc, bs) in ring.items():
            if b - n < bid <= b:
                cnt += bc
                tot += bs
        x[29 + 2 * k], x[30 + 2 * k] = cnt, tot
    x[35] = np.nan if st["last"] == 0 else max(0, t - st["last"]) / 1000.0
    if amt is None or st["n"] < 2:
        x[36] = np.nan
    else:
        sd = math.sqrt(st["m2"] / (st["n"] - 1))
        x[36] = np.nan if sd == 0 else (amt - st["mean"]) / sd
    newest = max(t, st["last"])
    for k, (width, n) in enumerate(RINGS):
        b, top, ring = t // width, newest // width, st["rings"][k]
        if b > top - n:
            c = ring.get(b, (0, 0.0))
            ring[b] = (c[0] + 1, c[1] + a)
        for bid in [bid for bid in ring if bid <= top - n]:
            del ring[bid]
    st["last"] = newest
    if amt is not None:
        st["n"] += 1
        d = amt - st["mean"]
        st["mean"] += d / st["n"]
        st["m2"] += d * (amt - st["mean"])


def load_state(blob):
    s = json.loads(blob)
    s["rings"] = [{int(k): tuple(v) for k, v in r.items()} for r in s["rings"]]
    return s


class Scorecard:
    """Points per bin, vectorised over the batch (searchsorted per feature)."""

    def __init__(self, path, names):
        c = json.load(open(path))
        self.factor = c["pdo"] / math.log(2)
        self.offset = c["score0"] - self.factor * math.log(c["odds0"])
        self.lo, self.hi, self.base = c["min_score"], c["max_score"], c["base_points"]
        self.feats = []
        for f in c["features"]:
            up = np.array([math.inf if b["upper"] is None else b["upper"] for b in f["bins"]])
            pts = np.array([b["points"] for b in f["bins"]] + [f["missing_points"]])
            self.feats.append((f["name"], names.index(f["name"]), up, pts))

    def score(self, X):
        n = len(X)
        lost = np.empty((n, len(self.feats)))
        points = np.full(n, self.base)
        for j, (_, i, up, pts) in enumerate(self.feats):
            x = X[:, i].astype(np.float64)
            b = np.searchsorted(up, x, side="right")
            b[np.isnan(x)] = len(up)
            p = pts[b]
            points += p
            lost[:, j] = pts.max() - p
        prob = 1.0 / (1.0 + np.exp((points - self.offset) / self.factor))
        score = np.clip(np.rint(points), self.lo, self.hi).astype(int)
        worst = np.argsort(-lost, axis=1)[:, :4]
        return score, prob, worst, lost


class Peer:
    def __init__(self, bootstrap, redis_port, model, card, limit):
        self.limit = limit
        ev_schema = avro.schema.parse(open("schemas/transaction_event.avsc").read())
        pr_schema = avro.schema.parse(open("schemas/transaction_prediction.avsc").read())
        self.reader = avro.io.DatumReader(ev_schema)
        self.writer = avro.io.DatumWriter(pr_schema)
        self.cons = Consumer({"bootstrap.servers": bootstrap, "group.id": "peer-transactions",
                              "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.cons.subscribe([IN_TOPIC])
        self.prod = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.r = redis.Redis(port=redis_port)
        self.sha = self.r.script_load(PUT_SCRIPT)
        self.booster = xgb.Booster(model_file=model)
        names = self.booster.feature_names or NAMES
        self.gcols = [NAMES.index(n) for n in names]
        self.card = Scorecard(card, NAMES)

    def decode(self, msgs):
        evs, good = [], []
        for m in msgs:
            v = m.value()
            if m.error() or not v or len(v) < 5 or v[0] != 0 or \
                    struct.unpack(">I", v[1:5])[0] != EVENT_ID:
                self.prod.produce(DLQ_TOPIC, v)
                continue
            try:
                ev = self.reader.read(avro.io.BinaryDecoder(io.BytesIO(v[5:])))
            except Exception:  # noqa: BLE001 - anything undecodable is dead-lettered
                self.prod.produce(DLQ_TOPIC, v)
                continue
            if not ev["event_id"] or not ev["user_id"] or any(
                    isinstance(x, float) and math.isinf(x) for x in ev.values()):
                self.prod.produce(DLQ_TOPIC, v)
                continue
            # python3-avro gives timestamp-millis as an aware datetime.
            ev["t_ms"] = (ev["event_time"] - EPOCH) // MS
            evs.append(ev)
            good.append(m)
        return evs, good

    def batch(self, msgs):
        t_in = time.time()
        evs, msgs = self.decode(msgs)
        if not evs:
            return 0
        users = list(dict.fromkeys(e["user_id"] for e in evs))
        keys = [f"peer:u:{{{u}}}" for u in users]
        pipe = self.r.pipeline(transaction=False)
        for k in keys:
            pipe.hmget(k, "s", "p", "o")
        states = {}
        for u, (blob, _, _) in zip(users, pipe.execute()):
            states[u] = load_state(blob) if blob else new_state()
        X = np.empty((len(evs), len(NAMES)), dtype=np.float32)
        static_features(evs, X)
        last = {}
        for i, (e, m) in enumerate(zip(evs, msgs)):
            window_step(states[e["user_id"]], e, X[i])
            last[e["user_id"]] = m
        pipe = self.r.pipeline(transaction=False)
        for u, k in zip(users, keys):
            m = last[u]
            pipe.evalsha(self.sha, 2, k, f"peer:applied:{{{m.partition()}}}",
                         json.dumps(states[u]), m.partition(), m.offset(), TTL_MS)
        pipe.execute()
        prob = self.booster.inplace_predict(X[:, self.gcols], missing=np.nan)
        score, sprob, worst, lost = self.card.score(X)
        for i, (e, m) in enumerate(zip(evs, msgs)):
            p = float(prob[i])
            d = "decline" if p >= 0.6 else "review" if p >= 0.3 else "approve"
            reasons = [] if d == "approve" else \
                [self.card.feats[j][0] for j in worst[i] if lost[i, j] > 0]
            rec = {"event_id": e["event_id"], "user_id": e["user_id"],
                   "event_time": e["event_time"], "model_name": "credit-risk",
                   "model_version": "1", "feature_version": "txn-v1", "probability": p,
                   "score": int(score[i]), "score_probability": float(sprob[i]),
                   "decision": d, "reasons": reasons,
                   "feature_hash": hashlib.blake2b(X[i].tobytes(), digest_size=8).hexdigest(),
                   "degraded": False, "redelivered": False,
                   "latency_us": int((time.time() - t_in) * 1e6), "src_topic": m.topic(),
                   "src_partition": m.partition(), "src_offset": m.offset(),
                   "experiment_id": "", "variant": ""}
            out = io.BytesIO()
            out.write(b"\0" + struct.pack(">I", PRED_ID))
            self.writer.write(rec, avro.io.BinaryEncoder(out))
            self.prod.produce(OUT_TOPIC, out.getvalue(), key=e["user_id"])
        self.prod.poll(0)
        return len(evs)

    def run(self):
        seen, t0, run = 0, None, [True]
        signal.signal(signal.SIGTERM, lambda *_: run.__setitem__(0, False))
        while run[0]:
            msgs = self.cons.consume(num_messages=BATCH, timeout=0.1)
            if not msgs:
                continue
            t0 = t0 or time.time()
            self.batch(msgs)
            # At least once: offsets are committed only once the batch's
            # predictions are delivered.
            self.prod.flush()
            self.cons.commit(asynchronous=True)
            if seen < self.limit <= seen + len(msgs):
                ru = resource.getrusage(resource.RUSAGE_SELF)
                print(f"peer: {self.limit} events in {time.time() - t0:.2f} s, "
                      f"CPU {ru.ru_utime + ru.ru_stime:.2f} s since start", flush=True)
            seen += len(msgs)
        self.cons.close()


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    Peer(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])).run()


if __name__ == "__main__":
    main()
