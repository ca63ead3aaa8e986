#!/usr/bin/python3
"""Independent numpy reference of round-robin (RRAttention) mask estimation.

Written from the algorithm's description (docs/rrattention.md), not from the C++: whole
matrices in float32, np.exp, the causal rule per token position, selection over every block
then ANDed with causal visibility. round_robin_mask_estimator_test.cc writes Q and K, runs this
script and compares masks (exactly) and block masses (within rounding).

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
    for h in range(hq):
        pos = np.arange(strides) * s + h % s  # round robin: head h samples offset h mod S
        z = (q[pos, h, :] @ pooled[:, h // (hq // hkv), :].T) * np.float32(a.scale / s)
        if a.causal:
            first_key = np.arange(strides) * s
            z = np.where(first_key[None, :] <= pos[:, None], z, np.float32(-np.inf))
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        masses[h] = p.reshape(blocks, r, blocks, r).sum(axis=(1, 3))
    return masses


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
