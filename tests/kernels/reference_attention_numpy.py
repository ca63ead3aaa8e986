#!/usr/bin/env python3
"""Independent float64 attention for ReferenceAttention's test (block_sparse_attention_test).

Reads the problem written by the test (whitespace-separated):
  lq lk hq hkv head_dim block_size causal scale
  q_pos[lq] k_pos[lk] mask_row_offsets[hq*lq/B + 1] mask_kv_blocks[...]
  q[lq, hq, D] k[hkv, lk, D] v[hkv, lk, D]
and prints O [lq, hq, D] then LSE [lq, hq], one value per line. Unlike the C++ reference it
builds a dense [lq, lk] visibility matrix per head and never tiles anything.
"""
import sys

import numpy as np


def main(path):
    words = open(path).read().split()
    lq, lk, hq, hkv, d, b, causal = (int(w) for w in words[:7])
    scale = float(words[7])
    pos = 8

    def take(n, dtype):
        nonlocal pos
        out = np.array(words[pos:pos + n], dtype=dtype)
        pos += n
        return out

    q_pos = take(lq, np.int64)
    k_pos = take(lk, np.int64)
    rows = hq * (lq // b)
    offsets = take(rows + 1, np.int64)
    blocks = take(offsets[-1], np.int64)
    q = take(lq * hq * d, np.float64).reshape(lq, hq, d)
    k = take(hkv * lk * d, np.float64).reshape(hkv, lk, d)
    v = take(hkv * lk * d, np.float64).reshape(hkv, lk, d)

    o = np.zeros((lq, hq, d))
    lse = np.full((lq, hq), -np.inf)
    for h in range(hq):
        g = h // (hq // hkv)
        visible = np.zeros((lq, lk), dtype=bool)
        for qb in range(lq // b):
            r = h * (lq // b) + qb
            for kb in blocks[offsets[r]:offsets[r + 1]]:
                visible[qb * b:(qb + 1) * b, kb * b:(kb + 1) * b] = True
        if causal:
            visible &= k_pos[None, :] <= q_pos[:, None]
        logits = np.where(visible, scale * q[:, h, :] @ k[g].T, -np.inf)
        for i in range(lq):
            if not visible[i].any():
                continue
            m = logits[i].max()
            w = np.exp(logits[i] - m)
            lse[i, h] = m + np.log(w.sum())
            o[i, h] = (w / w.sum()) @ v[g]
    for x in o.ravel():
        print(repr(float(x)))
    for x in lse.ravel():
        print(repr(float(x)))


if __name__ == "__main__":
    main(sys.argv[1])
