#!/usr/bin/python3
"""Independent numpy reference of round-robin (RRAttention) mask estimation.

Written from the algorithm's description (docs/rrattention.md), not from the C++: whole
matrices in float32, np.exp, the causal rule per token position, selection over every block
then ANDed with causal visibility. round_robin_mask_estimator_test.cc writes Q and K, runs this
script and compares masks (exactly) and block masses (within rounding).

With --heavy 1, the rr+heavy variant: each block's key farthest (squared distance, float64)
from its stride's mean joins every sampled query's softmax as one more key, unpooled, with its
logit less log(stride), for the queries whose block comes after it (causal) or all (not).

Input: raw float32 files, q [seq_len, hq, head_dim] and k [seq_len, hkv, head_dim], every query
block present. Output, one line each:
  mass <head> <q_block> <A[0]> ... <A[num_blocks-1]>   estimated mass per KV block
  mask <head> <q_block> <kv block ids ascending>
  margin <x>   the smallest relative distance of any selection decision from flipping
               (prefix sum vs threshold, and the mass gap at the cut), over rows not dense
"""
import argparse

import numpy as np


def block_masses(q, k, a):
    """A[h, I, J]: softmax mass of KV block J summed over the sampled queries of query block I."""
    seq_len, hq, d = q.shape
    hkv = k.shape[1]
    s, b = a.stride, a.block
    strides, blocks, r = seq_len // s, seq_len // b, b // s
    pooled = k.reshape(strides, s, hkv, d).sum(axis=1, dtype=np.float32)
    masses = np.zeros((hq, blocks, blocks), np.float32)
    heavy = heavy_keys(k, pooled, a) if a.heavy else None
    for h in range(hq):
        g = h // (hq // hkv)
        pos = np.arange(strides) * s + h % s  # round robin: head h samples offset h mod S
        z = (q[pos, h, :] @ pooled[:, g, :].T) * np.float32(a.scale / s)
        if a.causal:
            first_key = np.arange(strides) * s
            z = np.where(first_key[None, :] <= pos[:, None], z, np.float32(-np.inf))
        if heavy is not None:
            zh = (q[pos, h, :] @ heavy[:, g, :].T) * np.float32(a.scale) - np.float32(np.log(s))
            if a.causal:  # the heavy keys of whole blocks before the query's own
                zh = np.where(np.arange(blocks)[None, :] < (pos // b)[:, None], zh, np.float32(-np.inf))
            z = np.concatenate([z, zh], axis=1)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        masses[h] = p[:, :strides].reshape(blocks, r, blocks, r).sum(axis=(1, 3))
        if heavy is not None:
            masses[h] += p[:, strides:].reshape(blocks, r, blocks).sum(axis=1)
    return masses


def heavy_keys(k, pooled, a):
    """[blocks, hkv, d]: per block and KV head, the key farthest from its stride's mean."""
    seq_len, hkv, d = k.shape
    mean = np.repeat(pooled.astype(np.float64) / a.stride, a.stride, axis=0)  # per key
    dev = ((k.astype(np.float64) - mean) ** 2).sum(axis=2)  # [seq_len, hkv]
    blocks = seq_len // a.block
    first = dev.reshape(blocks, a.block, hkv).argmax(axis=1)  # argmax: the first on ties
    rows = np.arange(blocks)[:, None] * a.block + first
    return k[rows, np.arange(hkv)[None, :], :]


def select(row, q_block, a):
    """Returns (kv block ids, decision margin) of one row of block masses."""
    blocks = len(row)
    visible = q_block + 1 if a.causal else blocks
    if a.keep_recent and q_block == blocks - 1:
        return list(range(visible)), np.inf
    order = sorted(range(blocks), key=lambda j: (-row[j], j))
    mass = row.astype(np.float64)[order]
    before = np.concatenate([[0.0], np.cumsum(mass)[:-1]])
    total = mass.sum()
    threshold = a.tau * total
    keep = before < threshold
    chosen = {order[i] for i in range(blocks) if keep[i] and order[i] < visible}
    if a.keep_sink:
        chosen.add(0)
    chosen.add(q_block)
    margin = np.min(np.abs(before - threshold)) / total
    cut = int(keep.sum())
    if 0 < cut < blocks:
        margin = min(margin, (mass[cut - 1] - mass[cut]) / total)
    return sorted(chosen), margin


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--q", required=True)
    ap.add_argument("--k", required=True)
    ap.add_argument("--out", required=True)
    for name in ("seq_len", "hq", "hkv", "head_dim", "block", "stride"):
        ap.add_argument("--" + name, type=int, required=True)
    ap.add_argument("--tau", type=float, required=True)
    ap.add_argument("--scale", type=float, required=True)
    for name in ("causal", "keep_sink", "keep_recent"):
        ap.add_argument("--" + name, type=int, choices=(0, 1), required=True)
    ap.add_argument("--heavy", type=int, choices=(0, 1), default=0)
    a = ap.parse_args()

    q = np.fromfile(a.q, np.float32).reshape(a.seq_len, a.hq, a.head_dim)
    k = np.fromfile(a.k, np.float32).reshape(a.seq_len, a.hkv, a.head_dim)
    masses = block_masses(q, k, a)
    lines, margin = [], np.inf
    for h in range(a.hq):
        for q_block in range(masses.shape[1]):
            ids, m = select(masses[h, q_block], q_block, a)
            margin = min(margin, m)
            values = " ".join(repr(float(x)) for x in masses[h, q_block])
            lines.append(f"mass {h} {q_block} {values}")
            lines.append(f"mask {h} {q_block} " + " ".join(map(str, ids)))
    lines.append(f"margin {margin!r}")
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
