"""A tiny random Llama-family model and its prefill computed independently in float64 numpy.

  tiny_model.py make DIR --arch {llama,qwen2} [--seq-len L] [--break KIND]
      writes DIR/config.json, weights (llama: bf16 in two shards with an index; qwen2: f32,
      one file, q/k/v biases, tied embeddings), DIR/tokens.npy, and the reference outputs
      DIR/ref_logits.npy and DIR/ref_kv.npz (post-RoPE keys and values of every layer).
  tiny_model.py compare DIR REPORT.json KV_DIR [--tol-logits T] [--tol-kv T]
      asserts the C++ report's last-token logits and KV cache shards match the reference.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 256, 512, 2, 4, 2, 64, 300


def bf16_round(x):
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return u


def bf16_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, (dtype, arr) in tensors.items():
        data = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_safetensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        lo, hi = e["data_offsets"]
        raw = b[8 + n + lo:8 + n + hi]
        if e["dtype"] == "BF16":
            arr = bf16_to_f32(np.frombuffer(raw, dtype=np.uint16))
        elif e["dtype"] == "F16":
            arr = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.float32)
        out[name] = arr.reshape(e["shape"])
    return out


def rope_inv_freq(cfg):
    d = cfg["head_dim"]
    inv = 1.0 / cfg["rope_theta"] ** (np.arange(0, d, 2, dtype=np.float64) / d)
    s = cfg.get("rope_scaling")
    if s and s.get("rope_type") == "llama3":
        old, lo, hi, factor = s["original_max_position_embeddings"], s["low_freq_factor"], s["high_freq_factor"], s["factor"]
        wavelen = 2 * np.pi / inv
        smooth = (old / wavelen - lo) / (hi - lo)
        scaled = np.where(wavelen > old / lo, inv / factor, inv)
        mid = (wavelen <= old / lo) & (wavelen >= old / hi)
        inv = np.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    return inv


def rope(x, inv):  # x [L, H, D]
    L, _, D = x.shape
    ang = np.arange(L, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., : D // 2], x[..., D // 2:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def forward(cfg, W, tokens):
    L, H, HKV, D = len(tokens), cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    x = W["model.embed_tokens.weight"][tokens].astype(np.float64)
    inv = rope_inv_freq(cfg)
    causal = np.tril(np.ones((L, L), dtype=bool))
    kv = {}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, W[p + "input_layernorm.weight"], cfg["rms_norm_eps"])
        proj = lambda n: h @ W[p + f"self_attn.{n}_proj.weight"].T + W.get(p + f"self_attn.{n}_proj.bias", 0.0)
        q = rope(proj("q").reshape(L, H, D), inv)
        k = rope(proj("k").reshape(L, HKV, D), inv)
        v = proj("v").reshape(L, HKV, D)
        kv[f"k{i}"], kv[f"v{i}"] = k, v
        out = np.empty((L, H, D))
        for hq in range(H):
            g = hq // (H // HKV)
            s = q[:, hq] @ k[:, g].T / np.sqrt(D)
            s = np.where(causal, s, -np.inf)
            pmat = np.exp(s - s.max(-1, keepdims=True))
            out[:, hq] = (pmat / pmat.sum(-1, keepdims=True)) @ v[:, g]
        x = x + out.reshape(L, H * D) @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"], cfg["rms_norm_eps"])
        gate, up = h @ W[p + "mlp.gate_proj.weight"].T, h @ W[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ W[p + "mlp.down_proj.weight"].T
    last = rms(x[-1], W["model.norm.weight"], cfg["rms_norm_eps"])
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    return last @ head.T, kv


def make(args):
    global HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, HEAD_DIM, VOCAB
    HIDDEN, INTER, LAYERS = args.hidden or HIDDEN, args.inter or INTER, args.layers or LAYERS
    HEADS, KV_HEADS = args.heads or HEADS, args.kv_heads or KV_HEADS
    HEAD_DIM = HIDDEN // HEADS
    rng = np.random.default_rng(1 if args.arch == "llama" else 2)
    os.makedirs(args.dir, exist_ok=True)
    llama = args.arch == "llama"
    cfg = {"architectures": ["LlamaForCausalLM" if llama else "Qwen2ForCausalLM"], "hidden_size": HIDDEN,
           "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
           "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "rms_norm_eps": 1e-5, "vocab_size": VOCAB,
           "rope_theta": 10000.0 if llama else 1000000.0, "tie_word_embeddings": not llama}
    if llama:
        cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 256}
    shapes = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,)}
    if llama:
        shapes["lm_head.weight"] = (VOCAB, HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (HIDDEN,), p + "post_attention_layernorm.weight": (HIDDEN,),
                       p + "self_attn.q_proj.weight": (HEADS * HEAD_DIM, HIDDEN),
                       p + "self_attn.k_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
                       p + "self_attn.v_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
                       p + "self_attn.o_proj.weight": (HIDDEN, HEADS * HEAD_DIM),
                       p + "mlp.gate_proj.weight": (INTER, HIDDEN), p + "mlp.up_proj.weight": (INTER, HIDDEN),
                       p + "mlp.down_proj.weight": (HIDDEN, INTER)})
        if not llama:
            for n, dim in (("q", HEADS), ("k", KV_HEADS), ("v", KV_HEADS)):
                shapes[p + f"self_attn.{n}_proj.bias"] = (dim * HEAD_DIM,)
    W, stored = {}, {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith("bias"):
            w = 0.1 * rng.standard_normal(shape)
        elif name == "model.embed_tokens.weight":
            w = rng.standard_normal(shape)
        else:
            w = rng.standard_normal(shape) / np.sqrt(shape[1])
        w = w.astype(np.float32)
        if args.brk == "bad_shape" and name == "model.layers.1.mlp.up_proj.weight":
            w = w[:, : HIDDEN // 2].copy()
        if args.brk == "missing_tensor" and name == "model.layers.0.self_attn.v_proj.weight":
            continue
        if llama:
            bits = bf16_round(w)
            stored[name] = ("BF16", bits)
            W[name] = bf16_to_f32(bits).astype(np.float64)
        else:
            stored[name] = ("F32", w)
            W[name] = w.astype(np.float64)
    if args.brk == "bad_arch":
        cfg["architectures"] = ["GPT2LMHeadModel"]
    on_disk = dict(cfg)
    if args.rope_parameters:  # as transformers 5 writes it: theta and scaling in one object
        on_disk["rope_parameters"] = {"rope_theta": on_disk.pop("rope_theta"), **(on_disk.pop("rope_scaling", None) or {})}
    json.dump(on_disk, open(os.path.join(args.dir, "config.json"), "w"), indent=1)
    if llama:
        names = sorted(stored)
        halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
                  "model-00002-of-00002.safetensors": names[len(names) // 2:]}
        for file, members in halves.items():
            write_safetensors(os.path.join(args.dir, file), {n: stored[n] for n in members})
        index = {"metadata": {}, "weight_map": {n: f for f, ms in halves.items() for n in ms}}
        json.dump(index, open(os.path.join(args.dir, "model.safetensors.index.json"), "w"))
    else:
        write_safetensors(os.path.join(args.dir, "model.safetensors"), stored)
    tokens = rng.integers(0, VOCAB, size=args.seq_len).astype(np.int32)
    if args.brk == "bad_token":
        tokens[7] = VOCAB + 5
    np.save(os.path.join(args.dir, "tokens.npy"), tokens)
    embeddings = W["model.embed_tokens.weight"][tokens % VOCAB].astype(np.float32)  # what a vision encoder would hand over
    write_safetensors(os.path.join(args.dir, "embeddings.safetensors"), {"embeddings": ("F32", embeddings)})
    if args.brk or args.no_reference:
        return
    logits, kv = forward(cfg, W, tokens)
    np.save(os.path.join(args.dir, "ref_logits.npy"), logits)
    np.savez(os.path.join(args.dir, "ref_kv.npz"), **kv)


def compare(args):
    report = json.load(open(args.report))
    ref = np.load(os.path.join(args.dir, "ref_logits.npy"))
    got = np.array(report["last_logits"], dtype=np.float64)
    err = np.abs(got - ref).max() / max(1.0, np.abs(ref).max())
    print(f"logits: max abs err / max(1, |ref|) {err:.2e} (tol {args.tol_logits}), |ref| max {np.abs(ref).max():.2f}")
    ok = err <= args.tol_logits and got.shape == ref.shape
    index = json.load(open(os.path.join(args.kv_dir, "index.json")))
    kv = np.load(os.path.join(args.dir, "ref_kv.npz"))
    shards = {}
    for r in index["ranges"]:
        shards.setdefault(r["file"], read_safetensors(os.path.join(args.kv_dir, r["file"])))
    worst = 0.0
    covered = np.zeros(index["seq_len"], dtype=int)
    for i in range(index["num_layers"]):
        for kind, key in (("k", "key"), ("v", "value")):
            full = kv[f"{kind}{i}"]
            for r in index["ranges"]:
                rows = shards[r["file"]][f"layers.{i}.{key}"][r["row"]:r["row"] + r["length"]]
                want = full[r["start"]:r["start"] + r["length"]]
                worst = max(worst, float(np.abs(rows - want).max()) / max(1.0, float(np.abs(full).max())))
                if i == 0 and kind == "k":
                    covered[r["start"]:r["start"] + r["length"]] += 1
    print(f"kv cache: max abs err / max(1, |ref|) per tensor {worst:.2e} (tol {args.tol_kv}); "
          f"every token exactly once: {bool((covered == 1).all())}")
    ok = ok and worst <= args.tol_kv and (covered == 1).all()
    sys.exit(0 if ok else 1)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--arch", choices=["llama", "qwen2"], required=True)
    m.add_argument("--seq-len", type=int, default=512)
    m.add_argument("--hidden", type=int)  # sizes for benchmarks; defaults: the tiny test model
    m.add_argument("--inter", type=int)
    m.add_argument("--layers", type=int)
    m.add_argument("--heads", type=int)
    m.add_argument("--kv-heads", type=int)
    m.add_argument("--no-reference", action="store_true")
    m.add_argument("--rope-parameters", action="store_true", help="config.json in the transformers 5 form")
    m.add_argument("--break", dest="brk", default="", choices=["", "bad_shape", "missing_tensor", "bad_arch", "bad_token"])
    c = sub.add_parser("compare")
    c.add_argument("dir")
    c.add_argument("report")
    c.add_argument("kv_dir")
    # fp32 prefill vs float64: ~1e-7 relative per op, a few hundred ops deep, on O(1-10) values: 1e-4 leaves 50x margin over the 2e-6 seen.
    c.add_argument("--tol-logits", type=float, default=1e-4)
    c.add_argument("--tol-kv", type=float, default=1e-4)
    args = ap.parse_args()
    make(args) if args.cmd == "make" else compare(args)


if __name__ == "__main__":
    main()
