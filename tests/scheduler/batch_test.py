"""End-to-end tests of `prefill run` on the tiny random model (tests/runtime/tiny_model.py).

  batch_test.py SCENARIO PREFILL MPIRUN_ARGS... : SCENARIO is one of
    mixed    : a manifest of mixed lengths (one request with a bad token file) on 4 ranks;
               every ok result matches the float64 numpy forward of that prompt alone, the
               bad one is recorded as an error, the others run.
    resume   : mpirun is killed (SIGKILL) mid-way: its ranks (in process groups of their own)
               must end by themselves within seconds; then the rerun: exactly one result per
               request, all correct.
    sigterm  : SIGTERM to the ranks mid-way: exit 0, resumable; the rerun finishes the rest.
    invalid  : a manifest with bad lines is refused, every bad line listed, exit 2, nothing run.

  Environment: BATCH_RANKS (default 4); BATCH_DEVICE=cuda runs on GPUs (block 128, the bf16
  GEMM tolerance below); an empty MPIRUN_ARGS runs one rank as an MPI singleton (a machine
  without mpirun).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RANKS = int(os.environ.get("BATCH_RANKS", "4"))
DEVICE = os.environ.get("BATCH_DEVICE", "cpu")
BLOCK = "128" if DEVICE == "cuda" else "64"
# fp32 GEMMs on the CPU match float64 to 1e-4; the GPU rounds GEMM inputs to bf16 (2^-9
# relative each), a few 1e-3 after two layers: 3e-2 leaves room and still catches a wrong op.
TOL = 3e-2 if DEVICE == "cuda" else 1e-4
sys.path.insert(0, os.path.join(HERE, "..", "runtime"))
import tiny_model  # noqa: E402


def make_batch(work, lengths, bad=()):
    model = os.path.join(work, "model")
    subprocess.run([sys.executable, os.path.join(HERE, "..", "runtime", "tiny_model.py"), "make", model, "--arch", "llama",
                    "--seq-len", "64"], check=True)
    rng = np.random.default_rng(11)
    lines = []
    for i, n in enumerate(lengths):
        tokens = rng.integers(0, tiny_model.VOCAB, size=n).astype(np.int32)
        if i in bad:
            tokens[n // 2] = tiny_model.VOCAB + 1
        np.save(os.path.join(work, f"p{i}.npy"), tokens)
        lines.append(json.dumps({"id": f"p{i}", "tokens": f"p{i}.npy"}))
    with open(os.path.join(work, "jobs.jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return model


def run(prefill, mpirun, work, model, extra=(), background=False):
    launch = [*mpirun, "-np", str(RANKS)] if mpirun else []
    cmd = [*launch, prefill, "run", "--manifest", os.path.join(work, "jobs.jsonl"), "--model", model,
           "--out", os.path.join(work, "out"), "--block", BLOCK, "--min-tokens-per-rank", "128", "--mode", "dense",
           "--kv-dtype", "f32", "--progress", "log", "--device", DEVICE, *extra]
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240)


def weights(model):
    cfg = json.load(open(os.path.join(model, "config.json")))
    w = {}
    for f in os.listdir(model):
        if f.endswith(".safetensors"):
            w.update({k: v.astype(np.float64) for k, v in tiny_model.read_safetensors(os.path.join(model, f)).items()})
    return cfg, w


def check_results(work, model, n, bad=()):
    lines = open(os.path.join(work, "out", "results.jsonl")).read().splitlines()
    records = [json.loads(l) for l in lines]
    ids = [r["id"] for r in records]
    assert ids == [f"p{i}" for i in range(n)], f"one result per request, in manifest order: {ids}"
    cfg, w = weights(model)
    for i, r in enumerate(records):
        if i in bad:
            assert r["status"] == "error" and "outside the vocabulary" in r["error"], r
            continue
        assert r["status"] == "ok", r
        # Where each op's time went, as `prefill model` reports it (a batch's warm requests too).
        assert r["op_seconds"]["attention"] > 0 and r["op_seconds"]["qkv_proj"] > 0, r["op_seconds"]
        assert r["kv_host_prepare_seconds"] >= 0 and r["activations_prepare_seconds"] >= 0, r
        tokens = np.load(os.path.join(work, f"p{i}.npy"))
        logits, kv = tiny_model.forward(cfg, w, tokens)
        top = r["top_logits"][0]
        scale = max(1, abs(logits.max()))
        # The top id may differ only between logits that the tolerance cannot tell apart.
        assert logits.max() - logits[top["id"]] <= 2 * TOL * scale, (r["id"], top, int(np.argmax(logits)))
        assert abs(top["logit"] - logits.max()) <= TOL * scale, (top, logits.max())
        index = json.load(open(os.path.join(r["kv_cache"], "index.json")))
        assert index["seq_len"] == len(tokens)
        worst = 0.0
        for rng in index["ranges"]:
            shard = tiny_model.read_safetensors(os.path.join(r["kv_cache"], rng["file"]))
            for layer in range(index["num_layers"]):
                got = shard[f"layers.{layer}.key"][rng["row"]:rng["row"] + rng["length"]]
                worst = max(worst, float(np.abs(got - kv[f"k{layer}"][rng["start"]:rng["start"] + rng["length"]]).max()))
        assert worst <= TOL, (r["id"], worst)
    print(f"ok: {n} results, {len(bad)} recorded errors, all others equal the numpy forward")


def ranks_end_within(session, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if subprocess.run(["pgrep", "-s", str(session)], capture_output=True).returncode != 0:
            return True
        time.sleep(0.1)
    subprocess.run(["pkill", "-KILL", "-s", str(session)])
    return False


def main():
    scenario, prefill, mpirun = sys.argv[1], sys.argv[2], sys.argv[3:]
    work = tempfile.mkdtemp(prefix=f"batch_{scenario}_")
    try:
        if scenario == "mixed":
            lengths = [700, 64, 1500, 5, 300, 900, 130]
            model = make_batch(work, lengths, bad={4})
            p = run(prefill, mpirun, work, model)
            print(p.stdout + p.stderr)
            assert p.returncode == 0, p.returncode
            check_results(work, model, len(lengths), bad={4})
        elif scenario in ("resume", "sigterm"):
            lengths = [400 + 37 * i for i in range(24)]
            model = make_batch(work, lengths)
            p = run(prefill, mpirun, work, model, background=True)
            records = os.path.join(work, "out", "records")
            deadline = time.time() + 120
            while time.time() < deadline and (not os.path.isdir(records) or len(os.listdir(records)) < 3):
                time.sleep(0.05)
            assert os.path.isdir(records) and len(os.listdir(records)) >= 3, "no progress before the deadline"
            if scenario == "resume":
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
                assert ranks_end_within(p.pid, 15), "ranks outlived their killed mpirun"
            else:
                ranks = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
                for pid in ranks:
                    os.kill(int(pid), signal.SIGTERM)
                out, _ = p.communicate(timeout=60)
                print(out)
                assert p.returncode == 0, f"SIGTERM must end the job with exit 0, got {p.returncode}"
                assert "stopped by a signal" in out, "the job must say it stopped early"
            done = len(os.listdir(records))
            assert done < len(lengths), f"the job finished ({done} records) before it was interrupted: test too short"
            p = run(prefill, mpirun, work, model)
            print(p.stdout + p.stderr)
            assert p.returncode == 0, p.returncode
            check_results(work, model, len(lengths))
        elif scenario == "invalid":
            model = make_batch(work, [100, 100])
            with open(os.path.join(work, "jobs.jsonl"), "a") as f:
                f.write('{"id": "p0", "tokens": "p0.npy"}\nnot json\n{"id": "x", "tokens": "nope.npy"}\n')
            p = run(prefill, mpirun, work, model)
            out = p.stdout + p.stderr
            print(out)
            assert p.returncode == 2, p.returncode
            for want in ("3 bad line(s)", "line 3: duplicate id 'p0'", "line 4: not valid JSON", "line 5: input file"):
                assert want in out, want
            assert not os.path.exists(os.path.join(work, "out", "results.jsonl")), "nothing may run"
        else:
            raise SystemExit(f"unknown scenario {scenario}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
