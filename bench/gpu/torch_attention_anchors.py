"""Torch anchors on the shapes of attention_gpu_benchmark: SDPA (cuDNN and flash backends),
dense, causal and not; FlexAttention with block masks built from the same KV block lists
(the same KeepHash as the C++ benchmark, diagonal always kept). bf16, batch 1, H=32, Hkv=8
(K/V expanded to H for SDPA), D=128, blocks of 128. Median of event-timed runs after warm-up.
TFLOP/s counts 4*L^2*H*D (half for causal) times the measured density, like the C++ side.

Self-contained (the device machine has no ../shared): python3 torch_attention_anchors.py
--out anchors.json [--lengths 32768 131072] [--densities 1 0.5 0.25].
"""
import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

M32 = 0xFFFFFFFF


def keep_hash(h, q, kv, seed):
    """uint32 KeepHash of attention_gpu_benchmark.cu on int64 tensors (broadcasting)."""
    x = (h * 1000003 + q * 7919 + kv * 104729 + seed) & M32
    x ^= x >> 16
    x = (x * 0x45D9F3B) & M32
    x ^= x >> 16
    x = (x * 0x45D9F3B) & M32
    x ^= x >> 16
    return x


def block_lists(H, nb, causal, density, seed=12345, device="cuda"):
    """Boolean [1, H, nb, nb] of kept blocks: hash below density * 2^32, or the diagonal."""
    h = torch.arange(H, device=device, dtype=torch.int64).view(H, 1, 1)
    q = torch.arange(nb, device=device, dtype=torch.int64).view(1, nb, 1)
    kv = torch.arange(nb, device=device, dtype=torch.int64).view(1, 1, nb)
    threshold = int(density * 4294967296.0)
    keep = keep_hash(h, q, kv, seed) < threshold
    keep |= q == kv
    if causal:
        keep &= kv <= q
    return keep.unsqueeze(0)


def bench(fn, iters, warm):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    ts.sort()
    return ts[len(ts) // 2]


def flex_point(flex, q, k, v, keep, causal, B):
    from torch.nn.attention.flex_attention import BlockMask

    nb = keep.shape[-1]
    diag = torch.eye(nb, device=keep.device, dtype=torch.bool).view(1, 1, nb, nb)
    if causal:
        partial = keep & diag  # the diagonal block needs the causal mask_mod
        full = keep & ~diag
    else:
        partial = torch.zeros_like(keep)
        full = keep

    def lists(m):
        num = m.sum(-1).to(torch.int32)
        idx = torch.argsort(m.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
        return num, idx

    num, idx = lists(partial)
    fnum, fidx = lists(full)

    def causal_mod(b, h, qi, ki):
        return qi >= ki

    bm = BlockMask.from_kv_blocks(num, idx, fnum, fidx, BLOCK_SIZE=B, mask_mod=causal_mod if causal else None)
    return lambda: flex(q, k, v, block_mask=bm, enable_gqa=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "torch_anchors.json"))
    ap.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072])
    ap.add_argument("--densities", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    H, Hkv, D, B = args.heads, args.kv_heads, args.head_dim, 128
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "points": []}
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for L in args.lengths:
        runs = args.runs if L <= 32768 else max(3, args.runs // 2)
        q = torch.randn(1, H, L, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, Hkv, L, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, Hkv, L, D, device="cuda", dtype=torch.bfloat16)
        for causal in (False, True):
            full_flops = 4.0 * L * L * H * D * (0.5 if causal else 1.0)
            ke = k.repeat_interleave(H // Hkv, dim=1)
            ve = v.repeat_interleave(H // Hkv, dim=1)
            for name, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
                try:
                    with sdpa_kernel([be]):
                        ms = bench(lambda: F.scaled_dot_product_attention(q, ke, ve, is_causal=causal), runs, 2)
                    res["points"].append({"impl": f"sdpa_{name}", "L": L, "causal": causal, "density": 1.0,
                                          "ms": round(ms, 3), "tflops": round(full_flops / ms / 1e9, 1)})
                except Exception as ex:  # noqa: BLE001
                    res["points"].append({"impl": f"sdpa_{name}", "L": L, "causal": causal, "error": str(ex)[:300]})
                print(json.dumps(res["points"][-1]), flush=True)
            del ke, ve
            try:
                from torch.nn.attention.flex_attention import flex_attention

                flex = torch.compile(flex_attention)
                for density in args.densities:
                    keep = block_lists(H, L // B, causal, density)
                    measured = keep.sum().item() / (H * ((L // B) * (L // B + 1) // 2 if causal else (L // B) ** 2))
                    fn = flex_point(flex, q, k, v, keep, causal, B)
                    ms = bench(fn, runs, 2)
                    res["points"].append({"impl": "flex", "L": L, "causal": causal, "density": density,
                                          "measured_density": round(measured, 4), "ms": round(ms, 3),
                                          "tflops_on_computed": round(full_flops * measured / ms / 1e9, 1)})
                    print(json.dumps(res["points"][-1]), flush=True)
                    del keep
            except Exception as ex:  # noqa: BLE001
                res["points"].append({"impl": "flex", "L": L, "causal": causal, "error": str(ex)[:300]})
                print(json.dumps(res["points"][-1]), flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
