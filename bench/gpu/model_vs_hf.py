"""Whole-model prefill on one GPU: `prefill model --device cuda` against Hugging Face
transformers on the same model and tokens (issue 24 item 4), in one device call.

1. transformers builds a random Llama-3.1-8B-shaped model (hidden 4096, 32/8 heads, head_dim
   128, intermediate 14336, vocab 128256, llama3 RoPE, --layers layers, seeded) and writes it
   with save_pretrained into a scratch folder (/dev/shm when it has room);
2. seeded random token ids, one .npy (int32) per length;
3. transformers (sdpa, bf16, use_cache=True, logits_to_keep=1) prefills each length: one
   warm-up run, which is also the reference (last-token logits, K/V of the first and last
   layer), then the median of --runs timed runs;
4. ours: `prefill model --device cuda --mode M --layout contiguous --kv-out DIR --kv-dtype bf16`
   twice per (length, mode), the second run reported (the first warms the page cache and the
   GPU); its report gives prefill_seconds, phase_seconds and density, its KV cache (safetensors
   shards + index.json, read here without torch) is compared with transformers' cache; then
   `prefill run` over two identical requests in one process, the second one's prefill_seconds
   reported as warm_s (transformers is timed warm: CUDA modules loaded, cuBLAS heuristics and
   the caching allocator primed);
5. the bf16 GEMM rate of this GPU (cuBLAS through torch.matmul, the projection shapes of the
   model) is the MFU denominator; FLOPs count the linear layers (plus lm_head for one token)
   and causal attention, 4 * L^2 * H * D / 2 per layer, times the estimated density for sparse.

Errors are relative to the largest magnitude: max |ours - hf| / max |hf|. A point that fails
records its error and the run goes on; the exit status is non-zero only if no point succeeded.
The JSON is rewritten after every step, so a call cut short still leaves what it measured.

Usage (the bundle environment set up, see model_vs_hf_device_run.sh):
  python3 bench/gpu/model_vs_hf.py --prefill bench/gpu/device_bundle/bin/prefill \
      [--lengths 32768 131072] [--modes dense sparse] [--layers 4] [--tau 0.5 | --target-density 0.5]
The parts without torch (safetensors reader, KV cache assembly, FLOP counts) import without it.
"""
import argparse
import datetime
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

SHAPE = {  # Llama-3.1-8B, all but the layer count
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 14336,
    "vocab_size": 128256,
    "rms_norm_eps": 1e-5,
}
ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
GEMM_SHAPES = ((8192, 4096, 14336), (8192, 14336, 4096))  # (M, K, N): up/gate and down projections
SAFETENSORS_DTYPES = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32}


# ---------------------------------------------------------------- pure parts (no torch)


def read_safetensors_header(path):
    """(header without __metadata__, byte offset where the data starts)."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header, 8 + size


def safetensors_tensor(path, name, header, data_start):
    """One tensor of a safetensors file as a read-only memory map in its stored dtype."""
    entry = header[name]
    dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
    if dtype is None:
        raise ValueError(f"{path}: {name}: dtype {entry['dtype']} is not one of {sorted(SAFETENSORS_DTYPES)}")
    begin, end = entry["data_offsets"]
    shape = tuple(entry["shape"])
    if end - begin != int(np.prod(shape)) * np.dtype(dtype).itemsize:
        raise ValueError(f"{path}: {name}: {end - begin} bytes for shape {shape} {entry['dtype']}")
    return np.memmap(path, dtype=dtype, mode="r", offset=data_start + begin, shape=shape)


def to_float32(array, stored_dtype):
    """float32 copy of stored values; bf16 comes as uint16 (the upper half of a float32)."""
    if stored_dtype == "BF16":
        return (np.asarray(array, dtype=np.uint32) << 16).view(np.float32)
    return np.asarray(array, dtype=np.float32)


def read_kv_layer(kv_dir, layer, which):
    """Layer `layer`'s keys or values ("key"/"value") of a --kv-out folder: float32 [L, kv_heads,
    head_dim] in token order, assembled from the shards' rows as index.json maps them."""
    with open(os.path.join(kv_dir, "index.json")) as f:
        index = json.load(f)
    length = index["seq_len"]
    out = np.empty((length, index["kv_heads"], index["head_dim"]), dtype=np.float32)
    covered = 0
    name = f"layers.{layer}.{which}"
    headers = {}
    for r in index["ranges"]:
        path = os.path.join(kv_dir, r["file"])
        if path not in headers:
            headers[path] = read_safetensors_header(path)
        header, data_start = headers[path]
        rows = safetensors_tensor(path, name, header, data_start)[r["row"]:r["row"] + r["length"]]
        out[r["start"]:r["start"] + r["length"]] = to_float32(rows, header[name]["dtype"])
        covered += r["length"]
    if covered != length:
        raise ValueError(f"{kv_dir}/index.json: ranges cover {covered} of {length} tokens")
    return out


def rel_err(ours, ref):
    """max |ours - ref| / max |ref|."""
    ours, ref = np.asarray(ours, dtype=np.float32), np.asarray(ref, dtype=np.float32)
    if ours.shape != ref.shape:
        raise ValueError(f"shapes differ: ours {ours.shape}, reference {ref.shape}")
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def linear_params_per_layer(shape):
    """Weights of q, k, v, o, gate, up and down in one layer."""
    h, d = shape["hidden_size"], shape["head_dim"]
    q = h * shape["num_attention_heads"] * d
    kv = 2 * h * shape["num_key_value_heads"] * d
    return 2 * q + kv + 3 * h * shape["intermediate_size"]


def prefill_flops(shape, layers, length, density=1.0):
    """(linear, attention) FLOPs of one prefill: the projections of every token, lm_head of the
    last one; causal attention 4 * L^2 * H * D / 2 per layer, times the attended density."""
    linear = 2 * length * linear_params_per_layer(shape) * layers + 2 * shape["hidden_size"] * shape["vocab_size"]
    attention = 4 * length * length * shape["num_attention_heads"] * shape["head_dim"] * 0.5 * layers * density
    return linear, attention


def model_params(shape, layers):
    """All weights: embedding, lm_head (untied), the layers' projections and norms, final norm."""
    h = shape["hidden_size"]
    return 2 * shape["vocab_size"] * h + layers * (linear_params_per_layer(shape) + 2 * h) + h


def mfu(shape, layers, length, seconds, density, peak_tflops):
    """Model FLOPs (linear + attention) per second over the measured GEMM rate."""
    if not seconds or not peak_tflops:
        return None
    return sum(prefill_flops(shape, layers, length, density)) / seconds / (peak_tflops * 1e12)


def kv_bytes(shape, layers, length):
    """bf16 K and V of every layer."""
    return 2 * layers * length * shape["num_key_value_heads"] * shape["head_dim"] * 2


def pick_scratch(need_bytes, override):
    """--scratch, else /dev/shm when it has need_bytes free, else the temp folder."""
    if override:
        os.makedirs(override, exist_ok=True)
        return tempfile.mkdtemp(prefix="model_vs_hf_", dir=override)
    base = tempfile.gettempdir()
    if os.path.isdir("/dev/shm") and shutil.disk_usage("/dev/shm").free >= need_bytes:
        base = "/dev/shm"
    return tempfile.mkdtemp(prefix="model_vs_hf_", dir=base)


def add_legacy_rope_keys(model_dir):
    """transformers 5 writes RoPE as `rope_parameters` only; copy it to the top-level
    `rope_theta` / `rope_scaling` of older configs (transformers reads those the same way).
    Returns what was added, or None when the config already had them."""
    path = os.path.join(model_dir, "config.json")
    with open(path) as f:
        config = json.load(f)
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict) or ("rope_theta" in config and "rope_scaling" in config):
        return None
    added = {"rope_theta": rope["rope_theta"], "rope_scaling": {k: v for k, v in rope.items() if k != "rope_theta"}}
    config.update({k: v for k, v in added.items() if k not in config})
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    return added


def write_json(result, path):
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)


class Deadline:
    """Seconds left of the call's budget."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return self.end - time.monotonic()


# ---------------------------------------------------------------- ours: prefill model


class RunError(RuntimeError):
    pass


def prefill_env():
    """This environment, with PREFILL_LD_LIBRARY_PATH (the bundle's libraries, set by the driver)
    as LD_LIBRARY_PATH, so that torch in this process never loads the bundle's copies."""
    env = dict(os.environ)
    if "PREFILL_LD_LIBRARY_PATH" in env:
        env["LD_LIBRARY_PATH"] = env["PREFILL_LD_LIBRARY_PATH"]
    return env


def run_prefill(args, model_dir, tokens_path, mode, tau, json_path, kv_dir, log_path, timeout):
    """One `prefill model` process: (report, wall seconds). Raises RunError on failure."""
    cmd = [args.prefill, "model", "--model", model_dir, "--tokens", tokens_path, "--device", "cuda",
           "--mode", mode, "--layout", "contiguous", "--json", json_path]
    if kv_dir:
        cmd += ["--kv-out", kv_dir, "--kv-dtype", "bf16"]
    if mode == "sparse":
        cmd += ["--tau", str(tau)]
    if os.path.exists(json_path):
        os.remove(json_path)
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        this_run = log.tell()
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, env=prefill_env()).returncode
        except subprocess.TimeoutExpired:
            raise RunError(f"prefill model --mode {mode}: killed after {timeout:.0f} s") from None
        except OSError as ex:
            raise RunError(f"{args.prefill}: cannot run: {ex}") from None
        wall = time.perf_counter() - t0
    if rc != 0 or not os.path.exists(json_path):
        with open(log_path) as log:
            log.seek(this_run)
            tail = " | ".join(line.strip() for line in log.readlines()[-3:] if line.strip())
        raise RunError(f"prefill model --mode {mode}: exit {rc}: {tail}")
    with open(json_path) as f:
        report = json.load(f)
    with open(json_path, "w") as f:  # the copy kept with the logs, less the whole vocabulary's logits
        json.dump({k: v for k, v in report.items() if k != "last_logits"}, f, indent=1)
    return report, wall


def run_warm(args, model_dir, tokens_path, mode, tau, work, log_path, timeout):
    """`prefill run` over two identical requests in one process: the second one's record, the
    time a batch or a service sees once the process is warm (transformers is timed warm too)."""
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    manifest = os.path.join(work, "manifest.jsonl")
    with open(manifest, "w") as f:
        for rid in ("cold", "warm"):
            request = {"id": rid, "tokens": tokens_path, "mode": mode}
            if mode == "sparse":
                request["tau"] = tau
            f.write(json.dumps(request) + "\n")
    cmd = [args.prefill, "run", "--manifest", manifest, "--model", model_dir, "--out", os.path.join(work, "out"),
           "--device", "cuda", "--layout", "contiguous", "--kv-dtype", "bf16", "--progress", "off",
           "--min-tokens-per-rank", "1"]
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, env=prefill_env()).returncode
        except subprocess.TimeoutExpired:
            raise RunError(f"prefill run --mode {mode}: killed after {timeout:.0f} s") from None
    record_path = os.path.join(work, "out", "records", "warm.json")
    if rc != 0 or not os.path.exists(record_path):
        raise RunError(f"prefill run --mode {mode}: exit {rc}, no record of the warm request")
    with open(record_path) as f:
        record = json.load(f)
    shutil.rmtree(os.path.join(work, "out", "kv"), ignore_errors=True)
    if record.get("status") != "ok":
        raise RunError(f"prefill run --mode {mode}: warm request {record.get('status')}: {record.get('error')}")
    return record


def load_seconds(report, wall):
    """(load seconds, where they come from): the report's own figure when it has one, else the
    process wall time less prefill and the KV cache write."""
    if "load_seconds" in report:
        return report["load_seconds"], "report load_seconds"
    kv_write = sum(h.get("seconds", 0.0) for h in report.get("kv_handoff", []))
    return (wall - report["prefill_seconds"] - kv_write,
            "wall_s - prefill_seconds - kv_handoff seconds (the report has no load_seconds): "
            "process start-up, CUDA/MPI init, weight load and upload, report writing")


def choose_tau(args, model_dir, tokens_path, work, deadline):
    """Bisection over tau (one sparse run each, no KV output) for --target-density at the
    smallest length; returns (tau whose density came closest, the runs)."""
    lo, hi, tau = 0.0, 1.0, args.tau
    runs = []
    for step in range(args.tau_search_steps):
        if deadline.left() < args.reserve_s + 30:
            break
        try:
            report, _ = run_prefill(args, model_dir, tokens_path, "sparse", tau, os.path.join(work, "tau_search.json"),
                                    None, os.path.join(work, "tau_search.log"), min(args.ours_timeout, deadline.left()))
        except RunError as ex:
            runs.append({"tau": tau, "error": str(ex)})
            break
        density = report["density"]
        runs.append({"tau": tau, "density": density})
        print(f"tau search {step + 1}/{args.tau_search_steps}: tau {tau:.4f} -> density {density:.3f}", flush=True)
        if density > args.target_density:
            hi = tau
        else:
            lo = tau
        tau = (lo + hi) / 2
    measured = [r for r in runs if "density" in r]
    if not measured:
        return args.tau, runs
    return min(measured, key=lambda r: abs(r["density"] - args.target_density))["tau"], runs


# ---------------------------------------------------------------- torch / transformers side


def measure_gemm_tflops(runs):
    """Median TFLOP/s of bf16 torch.matmul per shape of GEMM_SHAPES (CUDA events, after warm-up)."""
    import torch

    rates = {}
    for m, k, n in GEMM_SHAPES:
        a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
        c = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        for _ in range(5):
            torch.matmul(a, b, out=c)
        seconds = []
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.matmul(a, b, out=c)
            end.record()
            end.synchronize()
            seconds.append(start.elapsed_time(end) / 1e3)
        rates[f"{m}x{k}x{n}"] = 2 * m * n * k / statistics.median(seconds) / 1e12
        del a, b, c
    torch.cuda.empty_cache()
    return rates


def llama_config(layers, max_len):
    """LlamaConfig of the shape; RoPE as `rope_parameters` where this transformers has it."""
    from transformers import LlamaConfig

    if "rope_parameters" in inspect.signature(LlamaConfig).parameters:
        rope = {"rope_parameters": dict(ROPE)}
    else:
        rope = {"rope_theta": ROPE["rope_theta"], "rope_scaling": {k: v for k, v in ROPE.items() if k != "rope_theta"}}
    return LlamaConfig(num_hidden_layers=layers, max_position_embeddings=max(131072, max_len),
                       tie_word_embeddings=False, attention_bias=False, mlp_bias=False, hidden_act="silu",
                       bos_token_id=128000, eos_token_id=128001, **SHAPE, **rope)


def build_model(config, seed, model_dir):
    """Seeded random init on the GPU, bf16, save_pretrained (safetensors) into model_dir."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    model = model.to(torch.bfloat16).cpu()
    save_kwargs = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:  # gone in transformers 5
        save_kwargs["safe_serialization"] = True
    model.save_pretrained(model_dir, **save_kwargs)
    del model
    torch.cuda.empty_cache()


def load_hf_model(model_dir):
    """from_pretrained in bf16 with sdpa attention, on the GPU."""
    import torch
    import transformers
    from packaging.version import Version

    dtype_kwarg = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    model = transformers.LlamaForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa",
                                                          **{dtype_kwarg: torch.bfloat16})
    return model.cuda().eval()


def logits_kwargs(model):
    """Ask for the last token's logits only, under the name this transformers uses (none: all)."""
    params = inspect.signature(model.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return {name: 1}
    return {}


def cache_layer(cache, layer):
    """(keys, values) [batch, kv_heads, L, head_dim] of one layer of a transformers cache."""
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys, cache.layers[layer].values
    if hasattr(cache, "key_cache"):
        return cache.key_cache[layer], cache.value_cache[layer]
    return cache[layer]


def hf_reference(outputs, layers):
    """Last-token logits and the first and last layer's K/V as float32 numpy ([L, kv_heads, D])."""
    ref = {"logits": outputs.logits[0, -1].float().cpu().numpy()}
    for layer in sorted({0, layers - 1}):
        keys, values = cache_layer(outputs.past_key_values, layer)
        ref[(layer, "key")] = keys[0].transpose(0, 1).float().cpu().numpy()
        ref[(layer, "value")] = values[0].transpose(0, 1).float().cpu().numpy()
    return ref


def run_hf(model_dir, tokens, lengths, layers, runs, deadline, reserve_s):
    """Per length: {"hf_s", "hf_runs_s", "reference"} or {"error"}; and the load seconds."""
    import torch

    t0 = time.perf_counter()
    model = load_hf_model(model_dir)
    torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    kwargs = logits_kwargs(model)
    results = {}
    for length in lengths:
        if deadline.left() < reserve_s + 60:
            results[length] = {"error": "skipped: out of the time budget"}
            continue
        ids = torch.from_numpy(tokens[:length].astype(np.int64)).cuda()[None]
        outputs = None
        try:
            with torch.inference_mode():
                outputs = model(input_ids=ids, use_cache=True, **kwargs)  # warm-up and reference
                reference = hf_reference(outputs, layers)
                outputs = None
                torch.cuda.empty_cache()
                seconds = []
                for _ in range(runs):
                    torch.cuda.synchronize()
                    start = time.perf_counter()
                    outputs = model(input_ids=ids, use_cache=True, **kwargs)
                    torch.cuda.synchronize()
                    seconds.append(time.perf_counter() - start)
                    outputs = None
                    torch.cuda.empty_cache()
            results[length] = {"hf_s": statistics.median(seconds), "hf_runs_s": seconds, "reference": reference}
            print(f"transformers L={length}: {statistics.median(seconds):.3f} s (median of {runs})", flush=True)
        except Exception as ex:  # noqa: BLE001 -- OOM or anything else: recorded, the run goes on
            results[length] = {"error": f"{type(ex).__name__}: {str(ex)[:300]}"}
            print(f"transformers L={length}: {results[length]['error']}", flush=True)
        finally:
            del outputs, ids
            torch.cuda.empty_cache()
    hf_rope = getattr(model.config, "rope_parameters", None) or {
        "rope_theta": getattr(model.config, "rope_theta", None), "rope_scaling": getattr(model.config, "rope_scaling", None)}
    del model
    torch.cuda.empty_cache()
    return results, load_s, hf_rope


# ---------------------------------------------------------------- one point


def kv_errors(kv_dir, reference, layers):
    """k/v_rel_err_layer0 and k/v_rel_err_last of our KV cache against transformers'."""
    errors = {}
    for layer, suffix in ((0, "layer0"), (layers - 1, "last")):
        for which, letter in (("key", "k"), ("value", "v")):
            errors[f"{letter}_rel_err_{suffix}"] = rel_err(read_kv_layer(kv_dir, layer, which), reference[(layer, which)])
    return errors


def measure_point(args, ctx, length, mode, tau):
    """One (L, mode): our two runs, the comparison with transformers, the figures."""
    point = {"L": length, "mode": mode, "tau": tau if mode == "sparse" else None}
    hf = ctx["hf"].get(length, {"error": "transformers did not run"})
    tag = f"L{length}_{mode}"
    kv_dir = os.path.join(ctx["scratch"], f"kv_{tag}")
    try:
        for attempt in (1, 2):
            if ctx["deadline"].left() < args.reserve_s + 20:
                raise RunError("skipped: out of the time budget")
            timeout = min(args.ours_timeout, ctx["deadline"].left() - args.reserve_s)
            report, wall = run_prefill(args, ctx["model_dir"], ctx["tokens_path"][length], mode, tau,
                                       os.path.join(args.work_dir, f"ours_{tag}_run{attempt}.json"), kv_dir,
                                       os.path.join(args.work_dir, f"ours_{tag}.log"), timeout)
            point[f"ours_run{attempt}_prefill_s"] = report["prefill_seconds"]
    except RunError as ex:
        point["error"] = str(ex)
        shutil.rmtree(kv_dir, ignore_errors=True)
        return point

    try:
        if ctx["deadline"].left() < args.reserve_s + 20:
            raise RunError("skipped: out of the time budget")
        warm = run_warm(args, ctx["model_dir"], ctx["tokens_path"][length], mode, tau,
                        os.path.join(ctx["scratch"], f"warm_{tag}"), os.path.join(args.work_dir, f"ours_{tag}.log"),
                        min(args.ours_timeout, ctx["deadline"].left() - args.reserve_s))
        point["ours_warm_s"] = warm["prefill_seconds"]
        point["ours_warm_phase_seconds"] = warm.get("phase_seconds")
        point["ours_warm_op_seconds"] = warm.get("op_seconds")
        if "hf_s" in hf:
            point["speedup_warm_vs_hf"] = hf["hf_s"] / warm["prefill_seconds"]
    except RunError as ex:
        point["warm_error"] = str(ex)

    density = report.get("density", 1.0) if mode == "sparse" else 1.0
    point["load_s"], point["load_s_source"] = load_seconds(report, wall)
    point.update({
        "estimated_density": density,
        "layer_density": report.get("layer_density"),
        "ours_s": report["prefill_seconds"],
        "ours_tokens_per_s": length / report["prefill_seconds"],
        "ours_wall_s": wall,
        "ours_phase_seconds": report.get("phase_seconds"),
        "ours_load_phase_seconds": report.get("load_phase_seconds"),
        "ours_op_seconds": report.get("op_seconds"),
        "ours_layer_gemm_seconds": report.get("layer_gemm_seconds"),
        "ours_kv_write_s": sum(h.get("seconds", 0.0) for h in report.get("kv_handoff", [])),
        "mfu": mfu(SHAPE, args.layers, length, report["prefill_seconds"], density, ctx["gemm_tflops"]),
        "hf_s": hf.get("hf_s"),
        "hf_tokens_per_s": length / hf["hf_s"] if "hf_s" in hf else None,
        "hf_mfu": mfu(SHAPE, args.layers, length, hf.get("hf_s"), 1.0, ctx["gemm_tflops"]),
        "speedup_vs_hf": hf["hf_s"] / report["prefill_seconds"] if "hf_s" in hf else None,
    })
    if "reference" in hf:
        ours_logits = np.asarray(report["last_logits"], dtype=np.float32)
        ref = hf["reference"]
        try:
            point["logits_rel_err"] = rel_err(ours_logits, ref["logits"])
            point["top1_agree"] = bool(np.argmax(ours_logits) == np.argmax(ref["logits"]))
            point.update(kv_errors(kv_dir, ref, args.layers))
        except (OSError, ValueError, KeyError) as ex:
            point["compare_error"] = f"{type(ex).__name__}: {ex}"
    else:
        point["hf_error"] = hf.get("error")
    shutil.rmtree(kv_dir, ignore_errors=True)
    return point


def print_table(points):
    def f(v, spec):  # a number, or "-" as wide
        return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-".rjust(int(spec[0]))

    print("==== model_vs_hf ====")
    print(f"{'L':>7} {'mode':>6} {'tau':>6} {'dens':>5} {'ours_s':>7} {'warm_s':>7} {'hf_s':>7} {'speedup':>7} "
          f"{'warm_x':>6} {'mfu':>5} "
          f"{'hf_mfu':>6} {'load_s':>6} {'wall_s':>6} {'logit_err':>9} {'top1':>4} {'k0_err':>7} {'v0_err':>7} "
          f"{'kN_err':>7} {'vN_err':>7}")
    for p in points:
        if "ours_s" not in p:
            print(f"{p['L']:>7} {p['mode']:>6}  error: {p.get('error')}")
            continue
        top1 = {True: "yes", False: "NO"}.get(p.get("top1_agree"), "-")
        print(f"{p['L']:>7} {p['mode']:>6} {f(p['tau'], '6.3f')} {f(p['estimated_density'], '5.3f')} "
              f"{f(p['ours_s'], '7.3f')} {f(p.get('ours_warm_s'), '7.3f')} {f(p['hf_s'], '7.3f')} "
              f"{f(p['speedup_vs_hf'], '7.2f')} {f(p.get('speedup_warm_vs_hf'), '6.2f')} {f(p['mfu'], '5.2f')} "
              f"{f(p['hf_mfu'], '6.2f')} {f(p['load_s'], '6.2f')} {f(p['ours_wall_s'], '6.2f')} "
              f"{f(p.get('logits_rel_err'), '9.2e')} {top1:>4} {f(p.get('k_rel_err_layer0'), '7.1e')} "
              f"{f(p.get('v_rel_err_layer0'), '7.1e')} {f(p.get('k_rel_err_last'), '7.1e')} "
              f"{f(p.get('v_rel_err_last'), '7.1e')}")
        if p.get("hf_error") or p.get("compare_error"):
            print(f"{'':>15}{p.get('hf_error') or p.get('compare_error')}")
        if p.get("warm_error"):
            print(f"{'':>15}warm: {p['warm_error']}")
        ops = p.get("ours_warm_op_seconds") or p.get("ours_op_seconds")
        if ops:  # where the (warm, else cold) prefill's device time went, ms over all layers
            print(f"{'':>15}ops ms: " + " ".join(f"{k}={v * 1e3:.1f}" for k, v in sorted(ops.items())))
        phases = p.get("ours_warm_phase_seconds") or p.get("ours_phase_seconds")
        if phases:
            print(f"{'':>15}phases ms: " + " ".join(f"{k}={v * 1e3:.1f}" for k, v in sorted(phases.items())))


# ---------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prefill", default="bench/gpu/device_bundle/bin/prefill", help="our prefill binary")
    p.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072], help="prompt lengths (tokens)")
    p.add_argument("--modes", nargs="+", default=["dense", "sparse"], choices=["dense", "sparse"], help="our modes")
    p.add_argument("--layers", type=int, default=4, help="decoder layers of the random model (>= 1)")
    p.add_argument("--runs", type=int, default=3, help="timed transformers runs per length (median), after one warm-up")
    p.add_argument("--tau", type=float, default=0.5,
                   help="sparse mode's tau (attention mass kept); the start of the search with --target-density")
    p.add_argument("--target-density", type=float, default=None,
                   help="pick tau by bisection at the smallest length so the estimated density comes near this")
    p.add_argument("--tau-search-steps", type=int, default=3, help="sparse runs the tau bisection may take")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights (torch) and the tokens (numpy)")
    p.add_argument("--gemm-runs", type=int, default=20, help="timed matmuls per GEMM shape")
    p.add_argument("--legacy-rope-keys", action=argparse.BooleanOptionalAction, default=True,
                   help="copy transformers 5's rope_parameters to top-level rope_theta/rope_scaling in config.json "
                        "(our loader reads those); recorded in the JSON")
    p.add_argument("--scratch", default=None, help="folder for the model, tokens and KV caches (default: /dev/shm "
                                                   "when it has room, else the temp folder); removed at the end")
    p.add_argument("--keep-scratch", action="store_true", help="leave the model and tokens in the scratch folder "
                   "(to profile a run after this script)")
    p.add_argument("--work-dir", default=None, help="logs and our runs' JSON reports (default: a folder beside --out)")
    p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "model_vs_hf.json"), help="result JSON")
    p.add_argument("--budget-s", type=float, default=540, help="seconds this script may take; later steps are skipped")
    p.add_argument("--reserve-s", type=float, default=15, help="seconds kept back at the end of the budget")
    p.add_argument("--ours-timeout", type=float, default=150, help="seconds one prefill process may take")
    p.add_argument("--git-commit", default="unknown", help="commit of the binaries, recorded in the JSON")
    args = p.parse_args(argv)
    if args.layers < 1:
        p.error("--layers must be >= 1")
    if args.work_dir is None:
        args.work_dir = os.path.join(os.path.dirname(os.path.abspath(args.out)), "model_vs_hf_work")
    return args


def environment():
    import torch
    import transformers

    return {
        "device": torch.cuda.get_device_name(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
    }


def write_tokens(scratch, lengths, vocab, seed):
    """One int32 .npy per length, all prefixes of one seeded sequence; (tokens, paths)."""
    tokens = np.random.default_rng(seed).integers(0, vocab, size=max(lengths), dtype=np.int32)
    paths = {}
    for length in lengths:
        paths[length] = os.path.join(scratch, f"tokens_{length}.npy")
        np.save(paths[length], tokens[:length])
    return tokens, paths


def main(argv=None):
    args = parse_args(argv)
    deadline = Deadline(args.budget_s)
    env = environment()
    os.makedirs(args.work_dir, exist_ok=True)
    lengths = sorted(set(args.lengths))
    # bf16 weights, a KV cache and its replacement being written, 2 GiB to spare
    need = 2 * model_params(SHAPE, args.layers) + 2 * kv_bytes(SHAPE, args.layers, max(lengths)) + (2 << 30)
    scratch = pick_scratch(need, args.scratch)
    model_dir = os.path.join(scratch, "model")
    result = {"benchmark": "model_vs_hf", "issue": 24, "commit": args.git_commit, "command": " ".join(sys.argv),
              **env, "scratch": scratch,
              "model": {"layers": args.layers, **SHAPE, "rope": ROPE, "params": model_params(SHAPE, args.layers),
                        "seed": args.seed, "dtype": "bf16", "written_by": "transformers save_pretrained"},
              "points": []}
    print(f"{result['device']}, torch {result['torch']}, transformers {result['transformers']}, scratch {scratch}",
          flush=True)
    try:
        result["gemm_tflops_by_shape"] = measure_gemm_tflops(args.gemm_runs)
        result["gemm_tflops"] = max(result["gemm_tflops_by_shape"].values())
        print(f"bf16 GEMM: {result['gemm_tflops_by_shape']} TFLOP/s", flush=True)
        write_json(result, args.out)

        t0 = time.perf_counter()
        build_model(llama_config(args.layers, max(lengths)), args.seed, model_dir)
        result["model"]["build_and_save_s"] = time.perf_counter() - t0
        result["model"]["bytes"] = sum(os.path.getsize(os.path.join(model_dir, f)) for f in os.listdir(model_dir))
        result["model"]["legacy_rope_keys_added"] = add_legacy_rope_keys(model_dir) if args.legacy_rope_keys else None
        with open(os.path.join(model_dir, "config.json")) as f:
            result["model"]["config_json"] = json.load(f)
        print(f"model: {result['model']['bytes'] / 1e9:.2f} GB in {result['model']['build_and_save_s']:.1f} s "
              f"(legacy RoPE keys added: {result['model']['legacy_rope_keys_added'] is not None})", flush=True)
        tokens, tokens_path = write_tokens(scratch, lengths, SHAPE["vocab_size"], args.seed)
        write_json(result, args.out)

        try:
            hf, result["hf_load_s"], hf_rope = run_hf(model_dir, tokens, lengths, args.layers, args.runs, deadline,
                                                      args.reserve_s)
            result["hf_rope"] = json.loads(json.dumps(hf_rope, default=str))
        except Exception as ex:  # noqa: BLE001 -- no transformers side: our points still run
            hf = {length: {"error": f"transformers: {type(ex).__name__}: {str(ex)[:300]}"} for length in lengths}
            print(hf[lengths[0]]["error"], flush=True)
        result["hf"] = {str(k): {n: v for n, v in r.items() if n != "reference"} for k, r in hf.items()}
        write_json(result, args.out)

        tau = args.tau
        if "sparse" in args.modes and args.target_density is not None:
            tau, result["tau_search"] = choose_tau(args, model_dir, tokens_path[lengths[0]], args.work_dir, deadline)
            result["tau_search_target_density"] = args.target_density
        ctx = {"hf": hf, "scratch": scratch, "model_dir": model_dir, "tokens_path": tokens_path,
               "gemm_tflops": result["gemm_tflops"], "deadline": deadline}
        for length in lengths:
            for mode in args.modes:
                point = measure_point(args, ctx, length, mode, tau)
                result["points"].append(point)
                write_json(result, args.out)
                print(f"ours L={length} {mode}: " + (f"{point['ours_s']:.3f} s" if "ours_s" in point
                                                     else point["error"]), flush=True)
    except Exception as ex:  # noqa: BLE001 -- a setup step failed: keep what was measured
        result["error"] = f"{type(ex).__name__}: {str(ex)[:500]}"
        print(f"error: {result['error']}", flush=True)
    finally:
        if not args.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    write_json(result, args.out)
    print_table(result["points"])
    print(f"bf16 GEMM {result.get('gemm_tflops', 0):.0f} TFLOP/s; transformers load "
          f"{result['hf_load_s']:.1f} s; " if "hf_load_s" in result else "", f"JSON: {args.out}", sep="")
    return 0 if any("ours_s" in p for p in result["points"]) else 1


if __name__ == "__main__":
    sys.exit(main())
