#!/usr/bin/python3
"""Seeds of the codec_rec differential fuzz target (tests/fuzz/fuzz_rec.c):
Avro bodies of records of REC_DIFF_SCHEMA (tests/fuzz/rec_diff.h), written
by hand so that every branch, block form and edge value is covered.
usage: tests/fuzz/make_rec_corpus.py  (writes tests/fuzz/corpus/rec/seed_*)"""
import hashlib
import os
import struct


def varint(v):
    u = (v << 1) ^ (v >> 63)
    u &= (1 << 64) - 1
    out = b''
    while u > 0x7f:
        out += bytes([(u & 0x7f) | 0x80])
        u >>= 7
    return out + bytes([u])


def s(t):
    b = t.encode('utf-8') if isinstance(t, str) else t
    return varint(len(b)) + b


def record(key='acct-1', ts=1700000000000, amount=12.5, ratio=0.25, count=3, flag=True,
           tags=('x', 'y'), blob=b'\x00\x01', kind=1, attrs=(('a', 5), ('b', None)),
           region='north', small=None, digest=b'abcd', big=-(1 << 62), neg_blocks=False):
    b = s(key) + varint(ts)
    b += varint(0) if amount is None else varint(1) + struct.pack('<d', amount)
    b += struct.pack('<f', ratio) + varint(count)
    b += varint(1) if flag is None else varint(0) + bytes([1 if flag else 0])
    items = b''.join(s(t) for t in tags)
    if tags and neg_blocks:
        b += varint(-len(tags)) + varint(len(items)) + items + varint(0)
    else:
        b += (varint(len(tags)) + items if tags else b'') + varint(0)
    b += s(blob) + varint(kind)
    entries = b''.join(s(k) + (varint(0) if v is None else varint(1) + varint(v)) for k, v in attrs)
    b += (varint(len(attrs)) + entries if attrs else b'') + varint(0)
    b += varint(0) if region is None else varint(1) + s(region)
    b += varint(0) if small is None else varint(1) + varint(small)
    b += digest
    b += varint(1) if big is None else varint(0) + varint(big)
    return b


seeds = [
    record(),
    record(amount=None, flag=None, region=None, small=-7, big=None, tags=(), attrs=()),
    record(amount=float('nan'), ratio=float('-inf'), count=-(1 << 31), small=(1 << 31) - 1,
           big=(1 << 63) - 1, ts=-(1 << 63), neg_blocks=True),
    record(key='é', region='ünïcode', tags=('', 'zz' * 40), kind=2, amount=-0.0),
    record(key='', flag=False, kind=0, blob=b''),
]
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus', 'rec')
os.makedirs(out, exist_ok=True)
for i, b in enumerate(seeds):
    with open(os.path.join(out, 'seed_%d_%s' % (i, hashlib.sha1(b).hexdigest()[:8])), 'wb') as f:
        f.write(b)
print('%d seeds in %s' % (len(seeds), out))
