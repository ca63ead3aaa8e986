"""The torch half of the end-to-end benchmark (issue 22 item 3), and the merge.

Reads the JSON files of sparse_e2e_benchmark (one per length), then, per (L, causal), times
cuDNN SDPA dense (flash SDPA where cuDNN refuses, with a note) and, per point, FlexAttention
with a BlockMask built from the very KV block lists the estimator chose (the raw int32 CSR the
C++ side wrote: row offsets [H * nb + 1], ascending KV block ids per (head, query block)).
Causal: the diagonal block is a partial block (Flex applies the causal mask_mod there), the
others full blocks. Timing data content does not matter for either (random bf16), the masks
do. Writes one JSON whose points carry L, causal, workload, estimated_density, estimate_ms,
sparse_ms, cudnn_dense_ms, flex_ms and speedup_vs_cudnn = cudnn_dense_ms / (estimate_ms +
sparse_ms), and prints a table. A point that fails (OOM, a backend that refuses) records
the error and the run goes on.

Usage: python3 sparse_e2e_torch.py --inputs a.json b.json --out sparse_e2e.json [--keep-masks]
"""
import argparse
import inspect
import json
import os
import time

import torch
import torch.nn.functional as F

from torch_attention_anchors import bench  # same folder: event-timed median after warm-up

B = 128


def timing_for(L):
    """(warm-up, timed runs): like the C++ side, fewer at lengths where dense takes seconds."""
    if L >= 524288:
        return 1, 1
    if L >= 131072:
        return 1, 3
    return 2, 5


def inputs(L, H, Hkv, D):
    q = torch.randn(1, H, L, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, Hkv, L, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, Hkv, L, D, device="cuda", dtype=torch.bfloat16)
    return q, k, v


def cudnn_dense(q, k, v, causal, warm, runs):
    """cuDNN SDPA on K/V expanded to H heads; flash SDPA if cuDNN refuses. (ms, backend, note)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    group = q.shape[1] // k.shape[1]
    ke, ve = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    errors = []
    try:
        for name, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            try:
                with sdpa_kernel([be]):
                    ms = bench(lambda: F.scaled_dot_product_attention(q, ke, ve, is_causal=causal), runs, warm)
                return ms, name, "; ".join(errors) or None
            except Exception as ex:  # noqa: BLE001
                errors.append(f"{name}: {str(ex)[:200]}")
                torch.cuda.empty_cache()
        return None, None, "; ".join(errors)
    finally:
        del ke, ve
        torch.cuda.empty_cache()


def load_csr(mask):
    import numpy as np

    offsets = torch.from_numpy(np.fromfile(mask["offsets"], dtype=np.int32)).cuda().long()
    blocks = torch.from_numpy(np.fromfile(mask["blocks"], dtype=np.int32)).cuda()
    return offsets, blocks


def kv_lists(offsets, blocks, row_of, selected, rows, nkv):
    """Flex's (kv_num_blocks [rows], kv_indices [rows, nkv]) of the selected CSR entries."""
    sel = selected.to(torch.int64)
    num = torch.zeros(rows, dtype=torch.int64, device=blocks.device).index_add_(0, row_of, sel)
    inclusive = torch.cumsum(sel, 0)
    starts = offsets[:-1]
    base = torch.where(starts > 0, inclusive[(starts - 1).clamp(min=0)], torch.zeros_like(starts))
    slot = inclusive - 1 - base[row_of]
    idx = torch.zeros(rows, nkv, dtype=torch.int32, device=blocks.device)
    keep = selected.nonzero().squeeze(1)
    idx[row_of[keep], slot[keep]] = blocks[keep]
    return num.to(torch.int32), idx


def flex_block_mask(mask, causal):
    from torch.nn.attention.flex_attention import BlockMask

    H, nq, nkv = mask["heads"], mask["num_q_blocks"], mask["num_kv_blocks"]
    offsets, blocks = load_csr(mask)
    rows = H * nq
    row_of = torch.repeat_interleave(torch.arange(rows, device="cuda"), offsets[1:] - offsets[:-1])
    diagonal = blocks.long() == row_of % nq  # one rank: query block q is absolute block q
    partial = diagonal if causal else torch.zeros_like(diagonal)
    num, idx = kv_lists(offsets, blocks, row_of, partial, rows, nkv)
    fnum, fidx = kv_lists(offsets, blocks, row_of, ~partial, rows, nkv)
    del row_of, diagonal, partial, blocks, offsets
    shape4 = (1, H, nq, nkv)
    kwargs = {}
    if "compute_q_blocks" in inspect.signature(BlockMask.from_kv_blocks).parameters:
        kwargs["compute_q_blocks"] = False  # forward only: skip the transposed lists

    def causal_mod(b, h, qi, ki):
        return qi >= ki

    return BlockMask.from_kv_blocks(num.view(1, H, nq), idx.view(shape4), fnum.view(1, H, nq), fidx.view(shape4),
                                    BLOCK_SIZE=B, mask_mod=causal_mod if causal else None, **kwargs)


def flex_point(flex, q, k, v, point, warm, runs):
    bm = flex_block_mask(point["mask"], point["causal"])
    try:
        return bench(lambda: flex(q, k, v, block_mask=bm, enable_gqa=True), runs, warm)
    finally:
        del bm
        torch.cuda.empty_cache()


def speedups(p):
    c = p.get("cudnn_dense_ms")
    if c:
        p["speedup_vs_cudnn"] = c / (p["estimate_ms"] + p["sparse_ms"])
        p["speedup_vs_cudnn_device_estimate"] = c / (p["estimate_device_ms"] + p["sparse_ms"])
        if p.get("flex_ms"):
            p["flex_speedup_vs_cudnn"] = c / p["flex_ms"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", nargs="+", required=True)
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "sparse_e2e.json"))
    ap.add_argument("--keep-masks", action="store_true")
    ap.add_argument("--no-flex", action="store_true")
    args = ap.parse_args()
    runs_in = []
    for path in args.inputs:
        try:
            with open(path) as f:
                runs_in.append(json.load(f))
        except Exception as ex:  # noqa: BLE001
            print(f"skip {path}: {ex}", flush=True)
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "cuda_runs": [{k: r.get(k) for k in ("device", "date", "git_commit", "command", "shape", "estimate_ms_is")}
                         for r in runs_in],
           "estimate_ms_is": runs_in[0].get("estimate_ms_is") if runs_in else None,
           "speedup_vs_cudnn_is": "cudnn_dense_ms / (estimate_ms + sparse_ms), estimate_ms the host call",
           "dense": [], "points": []}
    points = [p for r in runs_in for p in r.get("points", [])]
    dense = [d for r in runs_in for d in r.get("dense", [])]
    shape = runs_in[0]["shape"] if runs_in else {"hq": 32, "hkv": 8, "head_dim": 128}
    H, Hkv, D = shape["hq"], shape["hkv"], shape["head_dim"]
    flex = None
    if not args.no_flex:
        try:
            from torch.nn.attention.flex_attention import flex_attention

            flex = torch.compile(flex_attention, dynamic=False)
        except Exception as ex:  # noqa: BLE001
            res["flex_error"] = str(ex)[:300]
    for L in sorted({p["L"] for p in points} | {d["L"] for d in dense}):
        warm, runs = timing_for(L)
        try:
            q, k, v = inputs(L, H, Hkv, D)
        except Exception as ex:  # noqa: BLE001
            res["dense"].append({"L": L, "error": f"inputs: {str(ex)[:200]}"})
            continue
        for causal in sorted({p["causal"] for p in points if p["L"] == L} | {d["causal"] for d in dense if d["L"] == L}):
            ms, backend, note = cudnn_dense(q, k, v, causal, warm, runs)
            entry = {"L": L, "causal": causal, "cudnn_dense_ms": ms, "sdpa_backend": backend, "timed_runs": runs}
            if note:
                entry["note"] = note
            own = [d for d in dense if d["L"] == L and d["causal"] == causal]
            if own:
                entry["dense_ms"] = own[0]["dense_ms"] or None
            res["dense"].append(entry)
            print(json.dumps(entry), flush=True)
            for p in [p for p in points if p["L"] == L and p["causal"] == causal]:
                p["cudnn_dense_ms"] = ms
                p["sdpa_backend"] = backend
                if flex is not None and "mask" in p:
                    try:
                        p["flex_ms"] = flex_point(flex, q, k, v, p, warm, runs)
                    except Exception as ex:  # noqa: BLE001
                        p["flex_ms"] = None
                        p["flex_error"] = str(ex)[:300]
                        torch.cuda.empty_cache()
                speedups(p)
                if "mask" in p and not args.keep_masks:
                    for f in (p["mask"]["offsets"], p["mask"]["blocks"]):
                        if os.path.exists(f):
                            os.remove(f)
                res["points"].append(p)
                with open(args.out, "w") as f:
                    json.dump(res, f, indent=1)
                print(json.dumps({k: p.get(k) for k in ("name", "estimated_density", "estimate_ms", "sparse_ms",
                                                        "cudnn_dense_ms", "flex_ms", "speedup_vs_cudnn")}), flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print_table(res)
    print("wrote", args.out)


def fmt(x, spec):
    return format(x, spec) if isinstance(x, (int, float)) else "-".rjust(int(spec.split(".")[0]))


def print_table(res):
    print(f"{'L':>8} {'causal':>6} {'workload':>8} {'conc':>5} {'tau':>8} {'density':>7} {'est_ms':>8} {'est_dev':>8} "
          f"{'est_hmsk':>8} {'sparse':>8} {'ours_dn':>8} {'cudnn':>8} {'flex':>8} {'x_cudnn':>7}")
    for p in res["points"]:
        print(f"{p['L']:>8} {str(p['causal']):>6} {p['workload']:>8} {p['concentration']:>5.3g} {p['tau']:>8.6f} "
              f"{p['estimated_density']:>7.3f} {fmt(p['estimate_ms'], '8.2f')} {fmt(p['estimate_device_ms'], '8.2f')} "
              f"{fmt(p.get('estimate_host_mask_ms'), '8.2f')} "
              f"{fmt(p['sparse_ms'], '8.2f')} {fmt(p.get('dense_ms'), '8.2f')} {fmt(p.get('cudnn_dense_ms'), '8.2f')} "
              f"{fmt(p.get('flex_ms'), '8.2f')} {fmt(p.get('speedup_vs_cudnn'), '7.2f')}")


if __name__ == "__main__":
    main()
